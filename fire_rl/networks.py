"""Networks shared by the agents: the Nature-CNN Q-network (DQN) and the SimBa actor and critic (SAC), plus RSNorm.

Every network has two top-level children, ``encoder`` and ``head``, with ``forward = head(encoder(x))`` plus fixed
post-processing; the reset library selects layers by these roles (`fire_rl.resets.common.select_layers`). Activations
are `nn.ReLU` modules, so the dormant-ratio metric can hook them. Each network has ``init_weights()``, which re-applies
its paper's initialisation in place (drawing from torch's global RNG); `fire_rl.resets.common.fresh_draw` uses it.

Sources: Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature CNN);
Lee et al. 2024, "SimBa: Simplicity Bias for Scaling Up Parameters in Deep Reinforcement Learning", arXiv 2410.09754,
and its official JAX code, github.com/SonyResearch/simba @ 4e83770 (``scale_rl/networks``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "QNetwork",
    "RSNorm",
    "GaussianHead",
    "SimbaActor",
    "SimbaBlock",
    "SimbaCritic",
    "SimbaEncoder",
    "he_normal_",
]

LAYER_NORM_EPS = 1e-6  # Flax's nn.LayerNorm default, used by the SimBa reference
# Flax's he_normal draws from a normal truncated at ±2 standard deviations; dividing the target standard deviation by
# the truncated unit normal's standard deviation restores variance 2/fan_in (jax.nn.initializers.variance_scaling).
_TRUNC_NORMAL_STD = 0.87962566103423978
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_nonnegative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


@torch.no_grad()
def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a `(d_out, d_in)` Linear weight in place with Flax's He-normal draw and return it.

    Flax ``nn.initializers.he_normal()`` (what SimBa's residual blocks use) is ``variance_scaling(2.0, "fan_in",
    "truncated_normal")``: a normal truncated at ±2 of its own scale, rescaled so that the variance is exactly
    2 / fan_in. So the entries have standard deviation √(2/d_in) and lie within ±2·√(2/d_in)/0.8796. torch's
    `kaiming_normal_` has the same variance without truncation.

    Raises:
        ValueError: `weight` is not 2-D.
    """
    if weight.dim() != 2:
        raise ValueError(f"he_normal_ expects a 2-D Linear weight (d_out, d_in), got shape {tuple(weight.shape)}")
    fan_in = weight.shape[1]
    std = math.sqrt(2.0 / fan_in) / _TRUNC_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


# --------------------------------------------------------------------------------------------------------------------
# DQN: Nature CNN
# --------------------------------------------------------------------------------------------------------------------


class QNetwork(nn.Module):
    """Nature-CNN Q-network (Mnih et al. 2015, Methods, "Model architecture").

    encoder: Conv(C→32, 8, stride 4), ReLU, Conv(32→64, 4, s2), ReLU, Conv(64→64, 3, s1), ReLU, Flatten → (B, 3136)
    head: Linear(3136→512), ReLU, Linear(512→A) → (B, A)

    Args:
        n_actions: A, the number of discrete actions (≥ 1).
        in_channels: C, stacked frames (≥ 1; 4 in the Nature recipe).
        init: ``"pytorch"`` keeps torch's default layer init (as CleanRL's dqn_atari.py does); ``"xavier"`` draws
            Xavier-uniform weights and zero biases (official FIRE DQN).

    Input is `(B, C, 84, 84)` uint8 pixels; forward divides by 255 in float32. The module may be converted with
    ``.to(memory_format=torch.channels_last)``: forward then hands the convolutions a channels-last input (after the
    division, where the conversion is cheapest) and returns the same values.

    Raises:
        ValueError: `n_actions` or `in_channels` not a positive int, or an unknown `init`.
    """

    FEATURE_DIM = 3136  # 64 channels × 7 × 7 after the three convolutions on an 84×84 input

    def __init__(self, n_actions: int, in_channels: int = 4, init: str = "pytorch") -> None:
        _check_positive_int("n_actions", n_actions)
        _check_positive_int("in_channels", in_channels)
        if init not in ("pytorch", "xavier"):
            raise ValueError(f"init must be 'pytorch' or 'xavier', got {init!r}")
        super().__init__()
        self.n_actions = n_actions
        self.in_channels = in_channels
        self.init = init
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(self.FEATURE_DIM, 512), nn.ReLU(), nn.Linear(512, n_actions))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Re-draw every conv and linear layer in place with this network's `init` rule (torch's global RNG)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if self.init == "xavier":
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
                else:
                    module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values.

        Args:
            x: `(B, C, 84, 84)` pixel values in [0, 255], uint8 (any dtype is read as raw pixels).

        Returns:
            `(B, A)` float32 (the parameters' dtype).

        Raises:
            ValueError: `x` is not 4-D.
        """
        if x.dim() != 4:
            raise ValueError(f"QNetwork expects a (B, C, 84, 84) batch, got shape {tuple(x.shape)}")
        conv1 = self.encoder[0]
        # Change the layout while the pixels are still uint8 (a quarter of the bytes), then convert and scale in one
        # fresh float tensor: one pass fewer than `.to() / 255` followed by a layout copy, and the same values.
        if conv1.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = x.to(conv1.weight.dtype, copy=True).div_(255.0)
        return self.head(self.encoder(x))


@torch.no_grad()
def update_target_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """Target-network update in place: θ_target ← τ·θ + (1 − τ)·θ_target for every parameter (Polyak averaging).

    τ = 1 is DQN's periodic hard copy (Mnih et al. 2015), done as an exact copy; 0 < τ < 1 is SAC's soft update
    (Haarnoja et al. 2018; SimBa: τ = 0.005). One foreach kernel over all parameters, no host sync. Buffers are not
    touched (the networks here keep none; SAC's RSNorm lives outside them).

    Args:
        target, online: networks of the same architecture (parameters zipped in registration order).
        tau: in (0, 1].
    """
    targets, onlines = list(target.parameters()), list(online.parameters())
    if tau == 1.0:
        torch._foreach_copy_(targets, onlines)
    else:
        torch._foreach_lerp_(targets, onlines, tau)


# --------------------------------------------------------------------------------------------------------------------
# SAC + SimBa
# --------------------------------------------------------------------------------------------------------------------


class RSNorm(nn.Module):
    """Running-statistics observation normaliser of SimBa (Lee et al. 2024, Sec. 4.1).

    Keeps the running mean and (population) variance of every observation passed to `update`, combined batch by batch
    with the parallel algorithm of Chan et al. (the one in the SimBa reference and gymnasium's RunningMeanStd), in
    float64. Like those references, the statistics start at mean 0, variance 1 and count 1e-4: the prior weighs 1e-4
    of one observation, so after n observations the mean is off by a relative 1e-4/n and the variance by at most
    1e-4·(1 + mean²)/n, negligible after the first few steps.

    forward(obs) = (obs − mean) / √(var + eps) and never updates; call `update` on each new observation while acting
    and apply forward to the obs and next_obs of sampled batches (the buffer stores raw observations). The agent owns
    one instance shared by actor and critics; it is not part of either network, so resets never touch it. The
    statistics are buffers (``mean``, ``var``, ``count``) and go into `state_dict`.

    Args:
        shape: the observation shape, e.g. ``(obs_dim,)`` or an int.
        eps: added to the variance before the square root (1e-8 in the reference), > 0.

    Raises:
        ValueError: a shape with a non-positive or non-int entry, or eps ≤ 0.
    """

    def __init__(self, shape: int | Sequence[int], eps: float = 1e-8) -> None:
        shape_tuple = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else tuple(shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in shape_tuple):
            raise ValueError(f"shape must be a positive int or a sequence of positive ints, got {shape!r}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        super().__init__()
        self.shape = shape_tuple
        self.eps = float(eps)
        self.register_buffer("mean", torch.zeros(shape_tuple, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape_tuple, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, obs: torch.Tensor | object) -> None:
        """Fold a batch of observations into the running statistics.

        Args:
            obs: `(B, *shape)` or a single `shape` observation; a tensor or anything `torch.as_tensor` reads (numpy).

        Raises:
            ValueError: trailing dimensions that are not `shape`, or an empty batch.
        """
        x = torch.as_tensor(obs).to(device=self.mean.device, dtype=torch.float64)
        if tuple(x.shape) == self.shape:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != self.shape or x.shape[0] == 0:
            raise ValueError(
                f"obs must have shape (B, *{self.shape}) with B >= 1, or {self.shape}; got {tuple(x.shape)}"
            )
        n = x.shape[0]
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + n
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalise `(..., *shape)` observations; the result has obs's dtype if floating point, else float32."""
        dtype = obs.dtype if obs.is_floating_point() else torch.float32
        mean = self.mean.to(dtype)
        std = torch.sqrt(self.var + self.eps).to(dtype)
        return (obs.to(dtype) - mean) / std


class SimbaBlock(nn.Module):
    """SimBa residual feed-forward block: x + fc2(ReLU(fc1(LayerNorm(x)))), width h → 4h → h (Lee et al. 2024, Eq. 3).

    LayerNorm ε = 1e-6 with learned scale and shift (Flax default). `init_weights`: fc1 and fc2 He-normal
    (`he_normal_`, Flax's truncated form), biases zero, LayerNorm scale 1 and shift 0.

    Input and output `(B, h)`.

    Raises:
        ValueError: `hidden` or `expansion` not a positive int.
    """

    def __init__(self, hidden: int, expansion: int = 4) -> None:
        _check_positive_int("hidden", hidden)
        _check_positive_int("expansion", expansion)
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(hidden, expansion * hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(expansion * hidden, hidden)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """He-normal weights, zero biases, identity LayerNorm (torch's global RNG)."""
        for fc in (self.fc1, self.fc2):
            he_normal_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class SimbaEncoder(nn.Sequential):
    """SimBa trunk: Linear(d_in→h) then `num_blocks` `SimbaBlock`s then, optionally, a final LayerNorm.

    Children in order: ``0`` the input embedding (orthogonal init, gain 1, zero bias), ``1 … num_blocks`` the residual
    blocks, and ``num_blocks + 1`` the final LayerNorm (ε 1e-6) when `final_norm`. Input `(B, d_in)`, output `(B, h)`.
    Source: SimBa's ``SACEncoder`` (block_type "residual").

    Raises:
        ValueError: `in_dim` or `hidden` not a positive int, `num_blocks` a negative int.
    """

    def __init__(self, in_dim: int, hidden: int, num_blocks: int, final_norm: bool = True) -> None:
        _check_positive_int("in_dim", in_dim)
        _check_positive_int("hidden", hidden)
        _check_nonnegative_int("num_blocks", num_blocks)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        layers += [SimbaBlock(hidden) for _ in range(num_blocks)]
        if final_norm:
            layers.append(nn.LayerNorm(hidden, eps=LAYER_NORM_EPS))
        super().__init__(*layers)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Orthogonal (gain 1) input embedding, zero bias; blocks and LayerNorm as in their own init."""
        nn.init.orthogonal_(self[0].weight, gain=1.0)
        nn.init.zeros_(self[0].bias)
        for module in list(self)[1:]:
            if isinstance(module, SimbaBlock):
                module.init_weights()
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()


def _check_blocks(num_blocks: object, head_blocks: object) -> None:
    _check_nonnegative_int("num_blocks", num_blocks)
    _check_nonnegative_int("head_blocks", head_blocks)
    if head_blocks > num_blocks:
        raise ValueError(f"head_blocks must be in [0, num_blocks={num_blocks}], got {head_blocks}")


class GaussianHead(nn.Module):
    """The actor's output layers: two Linear(h → A), ``mean`` and ``log_std``, as the two Dense layers of SimBa's
    ``NormalTanhPolicy`` (``scale_rl/networks/policies.py``); forward returns their outputs concatenated,
    `(B, 2·A)` = [mean | raw log-std].

    Two layers, not one Linear(h → 2A): every per-layer operation treats them as the reference does, each on its own:
    the orthogonal init, FIRE (each orthogonalised with scale √(A/h); github.com/isaac7778/FIRE @ c37a0ac,
    rl/sac/scale_rl/agents/simba/projection.py maps every ``Dense`` kernel), DfI and the layer selection
    (``head.<i>.mean``, ``head.<i>.log_std``).
    """

    def __init__(self, hidden: int, act_dim: int) -> None:
        _check_positive_int("hidden", hidden)
        _check_positive_int("act_dim", act_dim)
        super().__init__()
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.mean(x), self.log_std(x)), dim=-1)


def _simba_trunk(
    in_dim: int, hidden: int, num_blocks: int, head_blocks: int, output: nn.Module
) -> tuple[SimbaEncoder, nn.Sequential]:
    """SimBa stack split into (encoder, head); the last `head_blocks` blocks and the final LayerNorm go to the head,
    followed by the `output` layer(s)."""
    encoder = SimbaEncoder(in_dim, hidden, num_blocks - head_blocks, final_norm=head_blocks == 0)
    head_layers: list[nn.Module] = [SimbaBlock(hidden) for _ in range(head_blocks)]
    if head_blocks > 0:
        head_layers.append(nn.LayerNorm(hidden, eps=LAYER_NORM_EPS))
    head_layers.append(output)
    return encoder, nn.Sequential(*head_layers)


@torch.no_grad()
def _init_simba_head(head: nn.Sequential) -> None:
    for module in list(head)[:-1]:
        if isinstance(module, SimbaBlock):
            module.init_weights()
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()
    # The reference's output Dense layers: orthogonal with gain 1, zero bias, each drawn on its own.
    for out in head[-1].modules():
        if isinstance(out, nn.Linear):
            nn.init.orthogonal_(out.weight, gain=1.0)
            nn.init.zeros_(out.bias)


class SimbaActor(nn.Module):
    """SimBa SAC actor: tanh-squashed diagonal Gaussian policy (Lee et al. 2024).

    encoder = `SimbaEncoder(obs_dim, hidden, num_blocks − head_blocks)` (with the final LayerNorm when head_blocks
    is 0); head = [the last `head_blocks` SimbaBlocks, final LayerNorm,] `GaussianHead`: two Linear(h → act_dim)
    layers ``mean`` and ``log_std`` (the reference's two Dense layers), each orthogonal with gain 1, zero bias. The raw
    log-std output x is mapped into [log_std_min, log_std_max] by min + ½(max − min)(tanh(x) + 1) (SimBa's
    ``NormalTanhPolicy``). Observations should already be normalised (`RSNorm`); actions live in (−1, 1).

    Args:
        obs_dim, act_dim: observation and action sizes.
        hidden: width h (128 in SimBa's SAC actor).
        num_blocks: residual blocks (1 in SimBa's SAC actor).
        log_std_min, log_std_max: the log-std range (−10, 2).
        head_blocks: 0 (default) or up to num_blocks; with 1 the last block and the final LayerNorm belong to the
            head (role ``"head"``), so head-only resets and plasticity injection can cover "last block + head".

    Raises:
        ValueError: non-positive sizes, negative block counts, head_blocks > num_blocks, log_std_min ≥ log_std_max.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: int = 128,
        num_blocks: int = 1,
        log_std_min: float = -10.0,
        log_std_max: float = 2.0,
        head_blocks: int = 0,
    ) -> None:
        _check_positive_int("obs_dim", obs_dim)
        _check_positive_int("act_dim", act_dim)
        _check_positive_int("hidden", hidden)
        _check_blocks(num_blocks, head_blocks)
        if not log_std_min < log_std_max:
            raise ValueError(
                f"need log_std_min < log_std_max, got log_std_min={log_std_min}, log_std_max={log_std_max}"
            )
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)
        self.encoder, self.head = _simba_trunk(obs_dim, hidden, num_blocks, head_blocks, GaussianHead(hidden, act_dim))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Re-draw every parameter in place with SimBa's init (torch's global RNG)."""
        self.encoder.init_weights()
        _init_simba_head(self.head)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-squash Gaussian parameters.

        Args:
            obs: `(B, obs_dim)` float, normalised.

        Returns:
            mean `(B, act_dim)` and log_std `(B, act_dim)` in [log_std_min, log_std_max], the parameters' dtype.
        """
        mean, raw_log_std = self.head(self.encoder(obs)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw_log_std) + 1.0)
        return mean, log_std

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised sample of a = tanh(u), u ~ N(mean, exp(log_std)²), with its log-density.

        log π(a|s) = Σᵢ [log N(uᵢ; meanᵢ, stdᵢ) − log(1 − tanh²uᵢ)], with the squash correction in the stable form
        log(1 − tanh²u) = 2(log 2 − u − softplus(−2u)) (Haarnoja et al. 2018, App. C; the tanh bijector of TFP).

        Args:
            obs: `(B, obs_dim)` float, normalised.
            generator: RNG for the noise, on obs's device; None uses torch's global RNG.

        Returns:
            action `(B, act_dim)` in [−1, 1] (±1 only where tanh saturates in floating point, |u| ≳ 9 in float32;
            gradients flow to the parameters), log_prob `(B,)` (finite even then), and the
            deterministic action tanh(mean) `(B, act_dim)` for evaluation.
        """
        mean, log_std = self(obs)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * noise
        log_prob_u = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(dim=-1)
        log_det = (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(dim=-1)
        return torch.tanh(u), log_prob_u - log_det, torch.tanh(mean)


class SimbaCritic(nn.Module):
    """SimBa SAC critic: Q(s, a) from concat(obs, action) (Lee et al. 2024).

    encoder = `SimbaEncoder(obs_dim + act_dim, hidden, num_blocks − head_blocks)`; head = [the last `head_blocks`
    SimbaBlocks, final LayerNorm,] Linear(h → 1), orthogonal gain 1, zero bias. One critic; clipped double Q uses two
    instances.

    Args:
        obs_dim, act_dim: observation and action sizes.
        hidden: width h (512 in SimBa's SAC critic).
        num_blocks: residual blocks (2 in SimBa's SAC critic).
        head_blocks: as in `SimbaActor`.

    Raises:
        ValueError: non-positive sizes, negative block counts, head_blocks > num_blocks.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int = 512, num_blocks: int = 2, head_blocks: int = 0
    ) -> None:
        _check_positive_int("obs_dim", obs_dim)
        _check_positive_int("act_dim", act_dim)
        _check_positive_int("hidden", hidden)
        _check_blocks(num_blocks, head_blocks)
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.encoder, self.head = _simba_trunk(obs_dim + act_dim, hidden, num_blocks, head_blocks, nn.Linear(hidden, 1))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Re-draw every parameter in place with SimBa's init (torch's global RNG)."""
        self.encoder.init_weights()
        _init_simba_head(self.head)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values.

        Args:
            obs: `(B, obs_dim)` float, normalised.
            action: `(B, act_dim)` float in [−1, 1].

        Returns:
            `(B,)` in the parameters' dtype.
        """
        return self.head(self.encoder(torch.cat((obs, action), dim=-1))).squeeze(-1)
