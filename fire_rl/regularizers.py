"""Per-step plasticity methods: Soft Weight Rescaling (in place after every optimizer step), L2-init and Parseval
regularisation (loss terms added before `backward()`). None is a reset; ReDo lives in `fire_rl.resets.redo`.

Sources:
    Oh, Park, Han, Kim 2025, "Recovering Plasticity of Neural Networks via Soft Weight Rescaling", arXiv 2507.04683
    (Theorem 1, Sec. 3.3, Algorithm 1), and the authors' code github.com/CILAB-RL-TEAM/soft-weight-rescaling,
    ``src/common/interventions.py`` (6e1a5eb: per-model rules with λ_f/λ_c as in Algorithm 1; 3c3e1df: one running
    product over all parameters in registration order).
    Kumar, Marklund, Van Roy 2023, "Maintaining Plasticity in Continual Learning via Regenerative Regularization"
    (L2 Init), arXiv 2308.11958.
    Chung, Cherif, Meger, Precup 2024, "Parseval Regularization for Continual Reinforcement Learning", NeurIPS 2024,
    arXiv 2412.07224, and github.com/wechu/parseval_reg @ 2fd0529 (``parseval_reg/agent.py``); Cisse et al. 2017,
    "Parseval Networks", for the unfolded convolution kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fire_rl.metrics import check_network
from fire_rl.resets.common import MATRIX_KINDS, NORM_TYPES, layer_kind
from fire_rl.validation import check_range


class SoftWeightRescaling:
    """Soft Weight Rescaling (SWR; Oh et al. 2025, Sec. 3.3 and Algorithm 1); call `step()` after every optimizer step.

    For each layer l, with ‖·‖ the Frobenius norm of the whole weight (a conv kernel included) and n⁰_l its value at
    construction::

        c_l = (λ·n⁰_l + (1 − λ)·‖W_l‖) / ‖W_l‖,        W_l ← c_l·W_l,        b_l ← C_l·b_l,

    so the new norm is the EMA λ·n⁰_l + (1 − λ)·‖W_l‖ (c_l = 1 where ‖W_l‖ = 0). Layers, in registration order (the
    forward order of every network in `fire_rl.networks`): every `nn.Linear`, `nn.Conv2d` and affine normalisation
    layer (`NORM_TYPES`; γ counts as W, β as b).

    Bias factor C_l: the product of the factors from the most recent normalisation layer (inclusive; else the first
    layer) up to l. Without normalisation this is Theorem 1's Π_{i≤l} c_i (both versions of the authors' code); after
    the last normalisation layer k it is the paper's "cumulate scalers from the last normalisation layer". Deviations:
    before the last normalisation layer Algorithm 1 and 6e1a5eb use c_l alone (3c3e1df the product over all earlier
    layers), and at layer k itself they use c_k·c_{k−1}; we keep the product since the previous normalisation layer
    and c_k alone, so each segment between normalisation layers is scaled exactly (SimBa's LN → fc1 → ReLU → fc2).

    Theorem 1: a feed-forward ReLU network of Linear/Conv layers (the Nature CNN) computes exactly (Π_l c_l)·f_old, so
    DQN's greedy action is unchanged. Normalisation layers absorb a positive input scale (LayerNorm up to its ε; not
    BatchNorm in eval mode), so the output scales by c_k·Π_{l>k} c_l. In SimBa the residual sums add paths rescaled by
    different factors, so its outputs are NOT proportional: SWR acts there as a small per-step perturbation.

    What happens to:
        * the changed tensors: every rescaled weight and bias (γ, β), multiplied in place by one ``_foreach_mul_``
          under `torch.no_grad()`; no host sync (the authors' code syncs with ``.item()``).
        * the optimizer, the target networks, the RNG: nothing (apply SWR to the online networks only).

    Args:
        network: the network to rescale, already on its device.
        lam: λ in [0, 1], the pull toward the initial norm per call (the paper's default 1e-3, swept 1 … 1e-4).

    Raises:
        ValueError: `network` not an nn.Module; `lam` outside [0, 1]; a network with no layer to rescale; weights on
            several devices.
    """

    def __init__(self, network: nn.Module, lam: float = 1e-3) -> None:
        check_network(network)
        check_range("lam (1e-3 in the SWR paper; 0 turns SWR off)", lam, 0, 1)
        self.network = network
        self.names: list[str] = []
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        bias_rows: list[list[int]] = []  # per bias: indices (into self.names) of the factors in its product C_l
        segment: list[int] = []
        for name, module in network.named_modules():
            if isinstance(module, NORM_TYPES):
                segment = []
            elif layer_kind(module) is None:
                continue
            if getattr(module, "weight", None) is None:
                continue
            segment = [*segment, len(self.names)]
            self.names.append(name)
            self.weights.append(module.weight)
            if getattr(module, "bias", None) is not None:
                self.biases.append(module.bias)
                bias_rows.append(segment)
        if not self.names:
            raise ValueError(f"SWR has no layer to rescale in {type(network).__name__}")

        devices = {w.device for w in self.weights + self.biases}
        if len(devices) > 1:
            raise ValueError(f"SWR needs the rescaled parameters on one device, got {sorted(map(str, devices))}")
        device = next(iter(devices))
        self._dtype = torch.float64 if any(w.dtype == torch.float64 for w in self.weights) else torch.float32
        # (n_biases, n_layers) bool: row j marks the factors whose product multiplies bias j, so all bias factors are
        # one masked product instead of a Python loop.
        mask = torch.zeros(len(bias_rows), len(self.names), dtype=torch.bool)
        for j, row in enumerate(bias_rows):
            mask[j, row] = True
        self._bias_mask = mask.to(device)
        self.lam = float(lam)
        self._lam = torch.tensor(self.lam, dtype=self._dtype, device=device)
        self._params = self.weights + self.biases
        self.init_norms = self.norms()
        self.last_norms: torch.Tensor | None = None
        self.last_factors: torch.Tensor | None = None

    def norms(self) -> torch.Tensor:
        """Current ‖W_l‖, `(n_layers,)` float32 (float64 if any weight is), in the order of `names`; no host sync."""
        with torch.no_grad():
            return torch.stack([n.to(self._dtype) for n in torch._foreach_norm(self.weights)])

    @torch.no_grad()
    def step(self) -> None:
        """Rescale every layer once; keeps the new norms in `last_norms` and the factors in `last_factors`."""
        norms = self.norms()
        positive = norms > 0
        lam = self._lam
        # Where ‖W‖ = 0 the formula divides by zero; torch.where discards that branch, so no NaN leaks.
        factors = torch.where(positive, lam * self.init_norms / norms + (1.0 - lam), torch.ones_like(norms))
        bias_factors = torch.where(self._bias_mask, factors.unsqueeze(0), torch.ones_like(factors)).prod(dim=1)
        multipliers = torch.cat((factors, bias_factors))  # (n_layers + n_biases,), in the order of self._params
        torch._foreach_mul_(self._params, list(multipliers.unbind()))
        self.last_norms = torch.where(positive, lam * self.init_norms + (1.0 - lam) * norms, norms)
        self.last_factors = factors

    @torch.no_grad()
    def reinit(self) -> None:
        """ "SWR + re-init": the current norms become the initial norms n⁰ (the weights are unchanged)."""
        self.init_norms = self.norms()

    def log_scalars(self, prefix: str = "swr") -> dict[str, float]:
        """``{"<prefix>/<layer>/norm": ‖W‖, ".../ratio": ‖W‖ / n⁰, ".../factor": c}`` after the latest `step` (before
        any: the current norms, no factor; ratio inf for a zero n⁰), with one host sync."""
        norms = self.last_norms if self.last_norms is not None else self.norms()
        rows = [norms, norms / self.init_norms]
        if self.last_factors is not None:
            rows.append(self.last_factors)
        values = torch.stack(rows).to(torch.float64).tolist()
        keys = ("norm", "ratio", "factor")
        return {
            f"{prefix}/{name}/{key}": values[r][i]
            for r, key in enumerate(keys[: len(rows)])
            for i, name in enumerate(self.names)
        }

    def state_dict(self) -> dict[str, Any]:
        """The layer names and initial norms; λ is configuration, not state."""
        return {"names": list(self.names), "init_norms": self.init_norms.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the initial norms; ValueError if the saved layer names or the norms' shape differ."""
        names, norms = list(state["names"]), state["init_norms"]
        if names != self.names:
            raise ValueError(f"SWR state is for layers {names}, this instance rescales {self.names}")
        if not isinstance(norms, torch.Tensor) or norms.shape != self.init_norms.shape:
            shape = tuple(norms.shape) if isinstance(norms, torch.Tensor) else type(norms).__name__
            raise ValueError(f"SWR init_norms must be a tensor of shape {tuple(self.init_norms.shape)}, got {shape}")
        self.init_norms = norms.detach().to(device=self.init_norms.device, dtype=self.init_norms.dtype).clone()


def l2_init_loss(network: nn.Module, theta0: Mapping[str, torch.Tensor], lam: float = 1.0) -> torch.Tensor:
    """L2-init regulariser λ·Σ_p ‖θ_p − θ₀_p‖² over every parameter that requires grad (Kumar et al. 2023, Sec. 3);
    add it to the loss before `backward()` (gradient 2λ(θ − θ₀)).

    Args:
        theta0: θ₀ from `capture_theta0(network)`, constants.
        lam: λ ≥ 0 (1 returns the plain sum).

    Returns:
        0-dim tensor in the parameters' dtype, differentiable w.r.t. them.

    Raises:
        ValueError: bad `lam`; no parameter requires grad; a parameter missing from `theta0` or of another shape.
    """
    check_range("lam", lam, 0)
    params = {name: p for name, p in network.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError(f"l2_init_loss: {type(network).__name__} has no parameter that requires grad")
    terms = []
    for name, p in params.items():
        if name not in theta0:
            raise ValueError(f"theta0 has no entry {name!r}: was it captured from this network?")
        if tuple(theta0[name].shape) != tuple(p.shape):
            raise ValueError(f"theta0[{name!r}] has shape {tuple(theta0[name].shape)}, the parameter {tuple(p.shape)}")
        terms.append((p - theta0[name].detach().to(device=p.device, dtype=p.dtype)).square().sum())
    return lam * torch.stack(terms).sum()


def parseval_layers(network: nn.Module) -> dict[str, nn.Module]:
    """Every `nn.Linear` and `nn.Conv2d` but the last `nn.Linear` in registration order, the output layer (Chung et al.
    2024 regularise all layers but the last)."""
    layers = {name: m for name, m in network.named_modules() if layer_kind(m) in MATRIX_KINDS}
    linears = [name for name, m in layers.items() if isinstance(m, nn.Linear)]
    if linears:
        del layers[linears[-1]]
    return layers


def parseval_loss(network: nn.Module, s: float = 2.0, lam: float = 1.0) -> torch.Tensor:
    """Parseval regulariser λ·Σ_l ‖W_l W_lᵀ − s·I‖²_F over `parseval_layers` (Chung et al. 2024, Eq. 1).

    W_l is in PyTorch's (d_out, d_in) layout, so W Wᵀ is (d_out, d_out) as in the authors' code (``torch.matmul(W,
    W.t()) - scale * I``); a conv kernel is unfolded to (C_out, C_in·k_h·k_w) (Cisse et al. 2017; Chung et al. use
    MLPs only). s = 2 = gain² of the orthogonal init with gain √2 (the authors' default); they sweep λ in {1e-3, 1e-4}
    and also multiply it by (64/width)², left to the caller. Biases are not regularised.

    For d_out > d_in the smaller Gram is used: ‖W Wᵀ − s·I‖²_F = ‖WᵀW − s·I‖²_F + s²·(d_out − d_in), the same value and
    gradient, hence the floor s²·(d_out − d_in) of tall layers. Layers of equal (unfolded) shape share one batched
    matmul.

    Returns:
        0-dim tensor in the weights' dtype, differentiable w.r.t. them.

    Raises:
        ValueError: `s` not > 0 or `lam` not ≥ 0 (finite); no Linear/Conv2d layer besides the output layer.
    """
    check_range("lam", lam, 0)
    check_range("s", s, 0, bounds="(]")
    chosen = parseval_layers(network)
    if not chosen:
        raise ValueError(f"parseval_loss: {type(network).__name__} has no Linear/Conv2d layer besides its output layer")
    groups: dict[tuple[int, int, torch.dtype, torch.device], list[torch.Tensor]] = {}
    for module in chosen.values():
        w = module.weight
        w2 = w.reshape(w.shape[0], -1)  # (C_out, C_in·k_h·k_w) for a conv; (d_out, d_in) for a Linear
        groups.setdefault((*w2.shape, w2.dtype, w2.device), []).append(w2)
    terms = []
    for (d_out, d_in, _, _), ws in groups.items():
        x = torch.stack(ws)  # (G, d_out, d_in)
        gram = x @ x.mT if d_out <= d_in else x.mT @ x  # (G, n, n), n = min(d_out, d_in)
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        # Subtracting s·I before squaring keeps near-isometries accurate (no ‖G‖² − 2s·tr G + s²n cancellation).
        terms.append((gram - s * eye).square().sum() + s * s * max(0, d_out - d_in) * len(ws))
    return lam * torch.stack(terms).sum()


REGULARIZERS = ("none", "swr", "l2init", "parseval")


class Regularizer:
    """The run's per-step plasticity method, driven the same way by both agents: ``loss(name)`` is added to network
    `name`'s loss before `backward()` (L2-init, Parseval; 0 otherwise), ``after_step(name)`` runs right after its
    optimizer step (SWR), ``on_reset()`` after each reset event (SWR + re-init). Not for plasticity injection, which
    changes the parameter set these methods were built on.

    Args:
        kind: ``"none"``, ``"swr"``, ``"l2init"`` or ``"parseval"``.
        swr_lambda: SWR's λ in [0, 1]. swr_reinit: SWR + re-init.
        l2init_lambda: L2-init's λ ≥ 0. parseval_lambda: Parseval's λ ≥ 0; parseval_s: its target scale s > 0.

    Raises:
        ValueError: an unknown kind, or a coefficient out of range or not finite (the message names it).
    """

    def __init__(
        self,
        kind: str = "none",
        *,
        swr_lambda: float = 1e-3,
        swr_reinit: bool = False,
        l2init_lambda: float = 1e-2,
        parseval_lambda: float = 1e-3,
        parseval_s: float = 2.0,
    ) -> None:
        if kind not in REGULARIZERS:
            raise ValueError(f"regularizer={kind!r} is not allowed; choose one of {list(REGULARIZERS)}")
        check_range("swr_lambda", swr_lambda, 0, 1)
        check_range("l2init_lambda", l2init_lambda, 0)
        check_range("parseval_lambda", parseval_lambda, 0)
        check_range("parseval_s", parseval_s, 0, bounds="(]")
        self.kind = kind
        self.swr_lambda, self.swr_reinit = float(swr_lambda), bool(swr_reinit)
        self.l2init_lambda, self.parseval_lambda = float(l2init_lambda), float(parseval_lambda)
        self.parseval_s = float(parseval_s)
        self.networks: dict[str, tuple[nn.Module, Mapping[str, torch.Tensor] | None]] = {}
        self.swr: dict[str, SoftWeightRescaling] = {}

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def add_network(self, name: str, network: nn.Module, theta0: Mapping[str, torch.Tensor] | None = None) -> None:
        """Register a network (after it is on its device); L2-init needs its θ₀ (e.g. ``scheduler.theta0(name)``)."""
        if self.kind == "l2init" and theta0 is None:
            raise ValueError(f"L2-init needs theta_0 for network {name!r}")
        self.networks[name] = (network, theta0)
        if self.kind == "swr":
            self.swr[name] = SoftWeightRescaling(network, lam=self.swr_lambda)

    def loss(self, name: str) -> torch.Tensor | float:
        """The loss term for network `name` (a 0-dim tensor), or 0.0 for methods without one."""
        if self.kind == "l2init":
            return l2_init_loss(self.networks[name][0], self.networks[name][1], lam=self.l2init_lambda)
        if self.kind == "parseval":
            return parseval_loss(self.networks[name][0], s=self.parseval_s, lam=self.parseval_lambda)
        return 0.0

    def after_step(self, *names: str) -> None:
        """SWR's rescaling of the named networks, right after their optimizer step (no host sync)."""
        for name in names:
            if name in self.swr:
                self.swr[name].step()

    def on_reset(self) -> None:
        if self.swr_reinit:
            for swr in self.swr.values():
                swr.reinit()

    def log_scalars(self) -> dict[str, float]:
        """``swr/<network>/<layer>/{norm,ratio,factor}`` for SWR (one host sync per network); {} otherwise."""
        return {k: v for name, swr in self.swr.items() for k, v in swr.log_scalars(prefix=f"swr/{name}").items()}

    def state_dict(self) -> dict[str, Any]:
        return {name: swr.state_dict() for name, swr in self.swr.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, swr in self.swr.items():
            swr.load_state_dict(state[name])
