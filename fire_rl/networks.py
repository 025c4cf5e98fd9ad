"""Networks shared by the agents: the Nature-CNN Q-network (DQN), the SimBa actor and critic (SAC), and RSNorm.

Every network has two top-level children, ``encoder`` and ``head`` (the roles `fire_rl.resets.common.select_layers`
selects by), `nn.ReLU` modules as activations (so the dormant-ratio metric can hook them), and ``init_weights()``,
which re-applies its paper's initialisation in place from torch's global RNG (`fire_rl.resets.common.fresh_draw`).

Sources: Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature CNN); Lee et al. 2024,
"SimBa: Simplicity Bias for Scaling Up Parameters in Deep Reinforcement Learning", arXiv 2410.09754, and its official
JAX code, github.com/SonyResearch/simba @ 4e83770 (``scale_rl/networks``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fire_rl.validation import check_range

LAYER_NORM_EPS = 1e-6  # Flax's nn.LayerNorm default, used by the SimBa reference
# Flax's he_normal draws from a normal truncated at ±2 standard deviations; dividing the target standard deviation by
# the truncated unit normal's standard deviation restores variance 2/fan_in (jax.nn.initializers.variance_scaling).
_TRUNC_NORMAL_STD = 0.87962566103423978
_LOG_2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_sizes(minimum: int, **sizes: object) -> None:
    for name, value in sizes.items():
        check_range(name, value, minimum, integer=True)


@torch.no_grad()
def he_normal_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a `(d_out, d_in)` weight in place with Flax's ``he_normal()`` (SimBa's residual blocks):
    ``variance_scaling(2.0, "fan_in", "truncated_normal")``, a normal truncated at ±2 of its own scale and rescaled to
    variance exactly 2/d_in. Raises ValueError for a weight that is not 2-D."""
    if weight.dim() != 2:
        raise ValueError(f"he_normal_ expects a 2-D Linear weight (d_out, d_in), got shape {tuple(weight.shape)}")
    std = math.sqrt(2.0 / weight.shape[1]) / _TRUNC_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


class QNetwork(nn.Module):
    """Nature-CNN Q-network (Mnih et al. 2015, Methods, "Model architecture").

    encoder: Conv(C→32, 8, stride 4), ReLU, Conv(32→64, 4, s2), ReLU, Conv(64→64, 3, s1), ReLU, Flatten → (B, 3136)
    head: Linear(3136→512), ReLU, Linear(512→A) → (B, A)

    Input `(B, C, 84, 84)` uint8 pixels, divided by 255 in the parameters' dtype; output `(B, A)`. The module may be
    converted with ``.to(memory_format=torch.channels_last)``: same values.

    Args:
        n_actions: A ≥ 1. in_channels: C, stacked frames (4 in the Nature recipe).
        init: ``"pytorch"``, torch's default layer init (CleanRL's dqn_atari.py); ``"xavier"``: Xavier-uniform weights,
            zero biases (official FIRE DQN).

    Raises:
        ValueError: `n_actions` or `in_channels` not a positive int, an unknown `init`; forward: `x` not 4-D.
    """

    FEATURE_DIM = 3136  # 64 channels × 7 × 7 after the three convolutions on an 84×84 input

    def __init__(self, n_actions: int, in_channels: int = 4, init: str = "pytorch") -> None:
        _check_sizes(1, n_actions=n_actions, in_channels=in_channels)
        if init not in ("pytorch", "xavier"):
            raise ValueError(f"init must be 'pytorch' or 'xavier', got {init!r}")
        super().__init__()
        self.n_actions, self.in_channels, self.init = n_actions, in_channels, init
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
        """Re-draw every conv and linear layer in place with this network's `init` rule."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if self.init == "xavier":
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
                else:
                    module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
    """θ_target ← τ·θ + (1 − τ)·θ_target for every parameter (zipped in registration order), in place, in one foreach
    kernel without host sync: τ = 1 is DQN's periodic hard copy (Mnih et al. 2015), done as an exact copy; 0 < τ < 1
    SAC's soft update (SimBa: τ = 0.005). Buffers are not touched."""
    targets, onlines = list(target.parameters()), list(online.parameters())
    if tau == 1.0:
        torch._foreach_copy_(targets, onlines)
    else:
        torch._foreach_lerp_(targets, onlines, tau)


class RSNorm(nn.Module):
    """Running-statistics observation normaliser of SimBa (Lee et al. 2024, Sec. 4.1).

    `update` folds batches into the running mean and population variance (float64 buffers ``mean``, ``var``,
    ``count``) with Chan et al.'s parallel algorithm, starting, like the SimBa reference and gymnasium's RunningMeanStd,
    from mean 0, variance 1 and count 1e-4. forward(obs) = (obs − mean) / √(var + eps) and never updates. The agent owns
    one instance outside the networks, so resets never touch it; the buffer stores raw observations.

    Args:
        shape: the observation shape, e.g. ``(obs_dim,)`` or an int.
        eps: > 0, added to the variance (1e-8 in the reference).

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
        """Fold `(B, *shape)` observations (or one of `shape`; anything `torch.as_tensor` reads) into the statistics.

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
        return (obs.to(dtype) - self.mean.to(dtype)) / torch.sqrt(self.var + self.eps).to(dtype)


class SimbaBlock(nn.Module):
    """SimBa residual block x + fc2(ReLU(fc1(LayerNorm(x)))), width h → 4h → h, `(B, h)` in and out (Lee et al. 2024,
    Eq. 3). LayerNorm ε = 1e-6 with learned scale and shift; init: fc1, fc2 `he_normal_`, zero biases, identity
    LayerNorm. Raises ValueError for a non-positive `hidden` or `expansion`."""

    def __init__(self, hidden: int, expansion: int = 4) -> None:
        _check_sizes(1, hidden=hidden, expansion=expansion)
        super().__init__()
        self.norm = nn.LayerNorm(hidden, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(hidden, expansion * hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(expansion * hidden, hidden)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for fc in (self.fc1, self.fc2):
            he_normal_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.norm.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


@torch.no_grad()
def _simba_init_(modules: Iterable[nn.Module]) -> None:
    """SimBa's init, module by module in order: blocks their own, LayerNorms identity, and the input embedding and
    output Dense layers (every `nn.Linear` of any other module) orthogonal with gain 1 and zero bias."""
    for module in modules:
        if isinstance(module, SimbaBlock):
            module.init_weights()
        elif isinstance(module, nn.LayerNorm):
            module.reset_parameters()
        else:
            for linear in (m for m in module.modules() if isinstance(m, nn.Linear)):
                nn.init.orthogonal_(linear.weight, gain=1.0)
                nn.init.zeros_(linear.bias)


class SimbaEncoder(nn.Sequential):
    """SimBa trunk (SimBa's ``SACEncoder``, block_type "residual"), `(B, d_in)` → `(B, h)`: child ``0`` Linear(d_in→h),
    ``1 … num_blocks`` `SimbaBlock`s, then, if `final_norm`, a LayerNorm (ε 1e-6).

    Raises:
        ValueError: `in_dim` or `hidden` not a positive int, `num_blocks` a negative int.
    """

    def __init__(self, in_dim: int, hidden: int, num_blocks: int, final_norm: bool = True) -> None:
        _check_sizes(1, in_dim=in_dim, hidden=hidden)
        _check_sizes(0, num_blocks=num_blocks)
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
        layers += [SimbaBlock(hidden) for _ in range(num_blocks)]
        if final_norm:
            layers.append(nn.LayerNorm(hidden, eps=LAYER_NORM_EPS))
        super().__init__(*layers)
        self.init_weights()

    def init_weights(self) -> None:
        _simba_init_(self)


class GaussianHead(nn.Module):
    """The actor's output: two Linear(h → A), ``mean`` and ``log_std``, as the two Dense layers of SimBa's
    ``NormalTanhPolicy`` (``scale_rl/networks/policies.py``), so that init, FIRE (each with scale √(A/h);
    github.com/isaac7778/FIRE @ c37a0ac, rl/sac/scale_rl/agents/simba/projection.py maps every ``Dense`` kernel), DfI
    and layer selection treat each on its own. forward: `(B, 2·A)` = [mean | raw log-std]."""

    def __init__(self, hidden: int, act_dim: int) -> None:
        _check_sizes(1, hidden=hidden, act_dim=act_dim)
        super().__init__()
        self.mean = nn.Linear(hidden, act_dim)
        self.log_std = nn.Linear(hidden, act_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.mean(x), self.log_std(x)), dim=-1)


class _Simba(nn.Module):
    """SimBa stack `SimbaEncoder(in_dim, hidden, num_blocks − head_blocks)` (with the final LayerNorm when head_blocks
    is 0) and head [the last `head_blocks` SimbaBlocks, final LayerNorm,] `output`."""

    def __init__(self, in_dim: int, hidden: int, num_blocks: int, head_blocks: int, output: nn.Module) -> None:
        _check_sizes(0, num_blocks=num_blocks, head_blocks=head_blocks)
        if head_blocks > num_blocks:
            raise ValueError(f"head_blocks must be in [0, num_blocks={num_blocks}], got {head_blocks}")
        super().__init__()
        self.encoder = SimbaEncoder(in_dim, hidden, num_blocks - head_blocks, final_norm=head_blocks == 0)
        head: list[nn.Module] = [SimbaBlock(hidden) for _ in range(head_blocks)]
        if head_blocks > 0:
            head.append(nn.LayerNorm(hidden, eps=LAYER_NORM_EPS))
        self.head = nn.Sequential(*head, output)
        self.init_weights()

    def init_weights(self) -> None:
        """Re-draw every parameter in place with SimBa's init."""
        self.encoder.init_weights()
        _simba_init_(self.head)


class SimbaActor(_Simba):
    """SimBa SAC actor: tanh-squashed diagonal Gaussian policy (Lee et al. 2024), head output `GaussianHead`. The raw
    log-std x is mapped into [log_std_min, log_std_max] by min + ½(max − min)(tanh(x) + 1) (SimBa's
    ``NormalTanhPolicy``). Observations should be normalised (`RSNorm`); actions lie in (−1, 1).

    Args:
        obs_dim, act_dim: observation and action sizes.
        hidden, num_blocks: width h and residual blocks (128 and 1 in SimBa's SAC actor).
        log_std_min, log_std_max: the log-std range (−10, 2).
        head_blocks: 0 to num_blocks; with 1 the last block and the final LayerNorm belong to the head (role
            ``"head"``), so head-only resets and plasticity injection cover "last block + head".

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
        _check_sizes(1, obs_dim=obs_dim, act_dim=act_dim, hidden=hidden)
        if not log_std_min < log_std_max:
            raise ValueError(f"need log_std_min < log_std_max, got {log_std_min} and {log_std_max}")
        super().__init__(obs_dim, hidden, num_blocks, head_blocks, GaussianHead(hidden, act_dim))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, obs_dim)` normalised obs → pre-squash mean and log_std in [log_std_min, log_std_max], `(B, act_dim)`."""
        mean, raw_log_std = self.head(self.encoder(obs)).chunk(2, dim=-1)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (torch.tanh(raw_log_std) + 1.0)
        return mean, log_std

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reparameterised a = tanh(u), u ~ N(mean, exp(log_std)²), with log π(a|s) = Σᵢ [log N(uᵢ; meanᵢ, stdᵢ) −
        log(1 − tanh²uᵢ)] and the stable log(1 − tanh²u) = 2(log 2 − u − softplus(−2u)) (Haarnoja et al. 2018, App. C).

        Args:
            obs: `(B, obs_dim)` float, normalised.
            generator: RNG for the noise, on obs's device; None: torch's global RNG.

        Returns:
            action `(B, act_dim)` in [−1, 1] (±1 only where tanh saturates), log_prob `(B,)` (finite even then), and
            the deterministic action tanh(mean) `(B, act_dim)`.
        """
        mean, log_std = self(obs)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + log_std.exp() * noise
        log_prob_u = (-0.5 * noise.square() - log_std - _HALF_LOG_2PI).sum(dim=-1)
        log_det = (2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))).sum(dim=-1)
        return torch.tanh(u), log_prob_u - log_det, torch.tanh(mean)


class SimbaCritic(_Simba):
    """SimBa SAC critic Q(s, a) from concat(obs, action) (Lee et al. 2024), head output Linear(h → 1); clipped double
    Q uses two instances. forward: `(B, obs_dim)` normalised obs and `(B, act_dim)` actions → `(B,)`.

    Args:
        obs_dim, act_dim: observation and action sizes.
        hidden, num_blocks: width h and residual blocks (512 and 2 in SimBa's SAC critic).
        head_blocks: as in `SimbaActor`.

    Raises:
        ValueError: non-positive sizes, negative block counts, head_blocks > num_blocks.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: int = 512, num_blocks: int = 2, head_blocks: int = 0
    ) -> None:
        _check_sizes(1, obs_dim=obs_dim, act_dim=act_dim, hidden=hidden)
        super().__init__(obs_dim + act_dim, hidden, num_blocks, head_blocks, nn.Linear(hidden, 1))
        self.obs_dim, self.act_dim = obs_dim, act_dim

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(torch.cat((obs, action), dim=-1))).squeeze(-1)
