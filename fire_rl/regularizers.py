"""Per-step plasticity methods: Soft Weight Rescaling, L2-init and Parseval regularisation.

None of them is a reset: SWR rescales weights in place right after every optimizer step (no gradient, no loss term),
L2-init and Parseval are loss terms the agent adds to its loss before `backward()`. The reset-like per-neuron method,
ReDo, lives in `fire_rl.resets.redo`.

Sources:
    Oh, Park, Han, Kim 2025, "Recovering Plasticity of Neural Networks via Soft Weight Rescaling", arXiv 2507.04683
    (Theorem 1, Sec. 3.3 and Algorithm 1), and the authors' PyTorch code,
    github.com/CILAB-RL-TEAM/soft-weight-rescaling, ``src/common/interventions.py`` (two stored versions: 6e1a5eb,
    per-model rules with λ_f/λ_c as in Algorithm 1; 3c3e1df, one running product over all parameters in registration
    order).
    Kumar, Marklund, Van Roy 2023, "Maintaining Plasticity in Continual Learning via Regenerative Regularization"
    (L2 Init), arXiv 2308.11958.
    Chung, Cherif, Meger, Precup 2024, "Parseval Regularization for Continual Reinforcement Learning", NeurIPS 2024,
    arXiv 2412.07224, and its code github.com/wechu/parseval_reg @ 2fd0529 (``parseval_reg/agent.py``); Cisse et al.
    2017, "Parseval Networks", for the unfolded convolution kernel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fire_rl.resets.common import MATRIX_KINDS, NORM_TYPES, layer_kind, resolve_layers

__all__ = ["NORM_TYPES", "SoftWeightRescaling", "l2_init_loss", "parseval_loss"]


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES)


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a float in [0, 1] (1e-3 in the SWR paper; 0 turns SWR off), got {value!r}")
    return float(value)


def _check_coefficient(name: str, value: object, positive: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if bad or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _layer_names(layers: object) -> list[str] | None:
    """None, a dict from `select_layers` or a sequence of names -> list of names (no validation of the names)."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return [layers]
    if isinstance(layers, Mapping):
        return list(layers)
    if isinstance(layers, Sequence) and all(isinstance(n, str) for n in layers):
        return list(layers)
    raise ValueError(f"layers must be None, a dict from select_layers(...) or a list of layer names, got {layers!r}")


# --------------------------------------------------------------------------------------------------------------------
# Soft Weight Rescaling
# --------------------------------------------------------------------------------------------------------------------


class SoftWeightRescaling:
    """Soft Weight Rescaling (SWR; Oh et al. 2025, arXiv 2507.04683, Sec. 3.3 and Algorithm 1).

    Call `step()` right after every optimizer step. For each rescaled layer l, with ‖·‖ the Frobenius norm of the whole
    weight tensor (a conv kernel included) and n⁰_l = ‖W_l‖ stored once at construction::

        c_l = (λ·n⁰_l + (1 − λ)·‖W_l‖) / ‖W_l‖,        W_l ← c_l·W_l,        b_l ← C_l·b_l,

    so the new norm is the EMA λ·n⁰_l + (1 − λ)·‖W_l‖ between the initial and the current norm (it scales up when the
    weight shrank below its initial norm). A layer whose weight norm is 0 gets c_l = 1.

    Layers, in registration order (`named_modules`, which is the forward order for every network in
    `fire_rl.networks`): each `nn.Linear` and `nn.Conv2d`, and each normalisation layer (`NORM_TYPES`: LayerNorm,
    GroupNorm, BatchNorm) with learned affine parameters, whose scale γ counts as W and shift β as b.

    Bias factor C_l (the "running product"): the product of the factors of the rescaled layers from the most recent
    normalisation layer (inclusive) up to and including layer l, or from the network's first layer when no
    normalisation layer precedes l. So C restarts at every normalisation layer:

    * a network without normalisation (the Nature CNN, a plain MLP): C_l = c_1·…·c_l, Theorem 1's rule
      (b_l ← (Π_{i≤l} c_i)·b_l), as in both versions of the authors' code;
    * at the last normalisation layer k: C_k = c_k and C_l = c_k·…·c_l after it, the paper's "cumulate scalers from
      the last normalisation layer";
    * before the last normalisation layer, where Algorithm 1 and the authors' code at 6e1a5eb scale each bias by its
      own factor c_l only (3c3e1df: by the product over all earlier layers), we keep the product since the previous
      normalisation layer, so that every segment between two normalisation layers is scaled exactly (it matters for
      SimBa's residual branches LN → fc1 → ReLU → fc2; the rules agree on the paper's networks, whose convs before a
      BatchNorm have no bias);
    * at the last normalisation layer itself, Algorithm 1 as written and the authors' code (commit 6e1a5eb, the
      ``CNN_BN`` branch) also multiply β by the factor of the layer just before it (C ← c_k·c_{k−1}), which breaks
      Theorem 1's proportionality after that layer; we use c_k alone.

    What Theorem 1 guarantees, and what not:

    * Bias-free or biased feed-forward ReLU networks of Linear/Conv layers (Flatten and pooling allowed), e.g. the
      Nature CNN: f_new(x) = (Π_l c_l)·f_old(x) exactly, for every input (up to float rounding). For DQN the greedy
      action is unchanged, but every Q-value is scaled by that factor, toward the TD targets' scale or away from it.
    * A normalisation layer's output does not depend on a positive scale of its input (LayerNorm up to its ε:
      LN(k·x) = LN(x) exactly only when ε = 0). So the layers up to the last normalisation layer do not change the
      network's output scale, and with C restarting there the output is scaled by c_k·Π_{l>k} c_l, provided the
      last normalisation layer's input changed by a positive scale only.
    * SimBa (pre-LN residual blocks x + fc2(ReLU(fc1(LN(x)))), final LayerNorm, Linear head): each residual branch is
      scaled exactly by c_LN·c_fc1·c_fc2 for the same block input, the input embedding by c_in, and the final
      LayerNorm plus head by c_LNf·c_head for the same trunk output. But the residual sums x + branch add paths
      rescaled by different factors (c_in·… on the skip path, c_LN·c_fc1·c_fc2 on the branch), so the residual
      stream changes direction, not just scale, and the final LayerNorm does not undo that: SimBa's outputs are NOT
      proportional to the old ones. The per-step change is small (each c_l − 1 = λ·(n⁰_l/‖W_l‖ − 1)), so SWR acts on
      SimBa as a regulariser that perturbs the function slightly at every step, not as a reparametrisation.
    * BatchNorm in eval mode normalises with running statistics, which do not scale with the input: not scale
      invariant there.

    What happens to:
        * the changed tensors: the weights of the rescaled layers and their biases (and the γ, β of rescaled
          normalisation layers), multiplied in place under `torch.no_grad()` by one ``torch._foreach_mul_``; nothing
          else. No host sync: the norms, factors and products stay on the device.
        * the optimizer: nothing (moments, steps untouched).
        * target networks: nothing; apply SWR to the online networks only (DQN's target copies them, SAC's follows
          them by EMA).
        * the RNG: not used.

    The authors' code applies SWR before each forward pass from the second step on, which is the same as after every
    optimizer step but the last; it computes the factors with host syncs (``.item()``), we do not.

    Args:
        network: the network to rescale, already on its device (the stored norms and masks live there).
        lam: λ in [0, 1], the pull toward the initial norm per call; 1e-3 is the paper's default (swept 1 … 1e-4);
            1 keeps every norm at its initial value, 0 makes `step` a no-op.
        layers: the layers to rescale: None (every Linear, Conv2d and affine normalisation layer), a dict from
            `select_layers`, or qualified module names (Linear, Conv2d or affine normalisation layers). Layers left
            out are not touched and count as factor 1 (a bias left out after a rescaled layer then breaks
            proportionality); normalisation layers still restart C whether selected or not.

    Raises:
        ValueError: `lam` outside [0, 1]; a name that is not a module of `network`, or not a Linear, Conv2d or affine
            normalisation layer; an empty selection; weights on several devices.
    """

    def __init__(
        self,
        network: nn.Module,
        lam: float = 1e-3,
        layers: Mapping[str, nn.Module] | Sequence[str] | None = None,
    ) -> None:
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        lam = _check_fraction("lam", lam)
        chain = [(name, m) for name, m in network.named_modules() if layer_kind(m) is not None or _is_norm(m)]
        rescalable = {name: m for name, m in chain if getattr(m, "weight", None) is not None}
        wanted = _layer_names(layers)
        if wanted is None:
            selected = set(rescalable)
        else:
            modules = dict(network.named_modules())
            available = ", ".join(rescalable) or "none"
            for name in wanted:
                if name not in modules:
                    raise ValueError(
                        f"layer {name!r} is not a module of {type(network).__name__}; available: {available}"
                    )
                if name not in rescalable:
                    raise ValueError(
                        f"layer {name!r} is a {type(modules[name]).__name__}; SWR rescales nn.Linear, nn.Conv2d and "
                        f"affine normalisation layers only; available: {available}"
                    )
            selected = set(wanted)
        if not selected:
            raise ValueError(f"SWR has no layer to rescale in {type(network).__name__} (layers={layers!r})")

        self.network = network
        self.names: list[str] = []
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        bias_rows: list[list[int]] = []  # per bias: indices (into self.names) of the factors in its product C_l
        segment: list[int] = []
        for name, module in chain:
            if _is_norm(module):
                segment = []
            if name not in selected:
                continue
            index = len(self.names)
            self.names.append(name)
            self.weights.append(module.weight)
            segment = [*segment, index]
            if getattr(module, "bias", None) is not None:
                self.biases.append(module.bias)
                bias_rows.append(segment)

        devices = {w.device for w in self.weights + self.biases}
        if len(devices) > 1:
            raise ValueError(f"SWR needs the rescaled parameters on one device, got {sorted(map(str, devices))}")
        device = next(iter(devices))
        self._dtype = torch.float64 if any(w.dtype == torch.float64 for w in self.weights) else torch.float32
        n_layers = len(self.names)
        # (n_biases, n_layers) bool: row j marks the factors whose product multiplies bias j, so all bias factors are
        # one masked product instead of a Python loop.
        mask = torch.zeros(len(bias_rows), n_layers, dtype=torch.bool)
        for j, row in enumerate(bias_rows):
            mask[j, row] = True
        self._bias_mask = mask.to(device)
        self.lam = lam
        self._lam = torch.tensor(lam, dtype=self._dtype, device=device)
        self._params = self.weights + self.biases
        self.init_norms = self.norms()
        self.last_norms: torch.Tensor | None = None
        self.last_factors: torch.Tensor | None = None

    def norms(self) -> torch.Tensor:
        """Current Frobenius norms ‖W_l‖ of the rescaled weights, `(n_layers,)` float32 (float64 if any weight is
        float64), in the order of `names`; no host sync."""
        with torch.no_grad():
            return torch.stack([n.to(self._dtype) for n in torch._foreach_norm(self.weights)])

    @torch.no_grad()
    def step(self) -> None:
        """Rescale every selected layer once (call right after `optimizer.step()`); see the class docstring.

        One batched norm, a few (n_layers,)-sized ops and one ``_foreach_mul_``; no host sync. Keeps the new norms
        λ·n⁰ + (1 − λ)·‖W‖ in `last_norms` and the factors c_l in `last_factors` (tensors) for `log_scalars`.
        """
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
        """ "SWR + re-init": make the current norms the new initial norms n⁰ (the weights themselves are unchanged)."""
        self.init_norms = self.norms()

    def log_scalars(self, prefix: str = "swr") -> dict[str, float]:
        """``{"<prefix>/<layer>/norm": ‖W‖, "<prefix>/<layer>/ratio": ‖W‖ / n⁰, "<prefix>/<layer>/factor": c}`` after
        the latest `step` (before any step: the current norms and no factor), with one host sync; call it every few
        thousand updates. A zero initial norm gives ratio inf (or NaN if the norm is 0 too)."""
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
        """The stored initial norms and the layer names (for checkpoints); λ is configuration, not state."""
        return {"names": list(self.names), "init_norms": self.init_norms.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the initial norms saved by `state_dict`.

        Raises:
            ValueError: the saved layer names differ from this instance's, or the norms have another length.
        """
        names, norms = list(state["names"]), state["init_norms"]
        if names != self.names:
            raise ValueError(f"SWR state is for layers {names}, this instance rescales {self.names}")
        if not isinstance(norms, torch.Tensor) or norms.shape != self.init_norms.shape:
            shape = tuple(norms.shape) if isinstance(norms, torch.Tensor) else type(norms).__name__
            raise ValueError(f"SWR init_norms must be a tensor of shape {tuple(self.init_norms.shape)}, got {shape}")
        self.init_norms = norms.detach().to(device=self.init_norms.device, dtype=self.init_norms.dtype).clone()


# --------------------------------------------------------------------------------------------------------------------
# L2-init
# --------------------------------------------------------------------------------------------------------------------


def _selected_parameters(
    network: nn.Module, layers: Mapping[str, nn.Module] | Sequence[str] | None
) -> dict[str, nn.Parameter]:
    if layers is None:
        return {name: p for name, p in network.named_parameters() if p.requires_grad}
    chosen = resolve_layers(network, layers)
    return {f"{n}.{pn}": p for n, m in chosen.items() for pn, p in m.named_parameters(recurse=False)}


def l2_init_loss(
    network: nn.Module,
    theta0: Mapping[str, torch.Tensor],
    layers: Mapping[str, nn.Module] | Sequence[str] | None = None,
    lam: float = 1.0,
) -> torch.Tensor:
    """L2-init regulariser λ·Σ_p ‖θ_p − θ₀_p‖² (Kumar et al. 2023, "L2 Init", Sec. 3).

    Add it to the loss before `backward()`; its gradient is 2λ(θ − θ₀). Which parameters:

    * ``layers=None`` (default, the paper's choice): every parameter of `network` that requires grad, by
      `named_parameters` name: weights, biases, LayerNorm γ and β, anything else.
    * ``layers`` given (Linear/Conv2d layers, as for the resets): the weight and bias of each of those layers only.

    Args:
        network: the regularised network.
        theta0: θ₀ from `capture_theta0(network)` (``{parameter name: tensor}``); its entries are constants.
        layers: None, a dict from `select_layers`, or qualified Linear/Conv2d layer names.
        lam: λ ≥ 0 (1 returns the plain sum, so the caller can apply λ itself).

    Returns:
        0-dim tensor in the parameters' dtype, differentiable w.r.t. the selected parameters.

    Raises:
        ValueError: bad `lam`; a bad `layers` (`resolve_layers`); a parameter missing from `theta0` or of another shape.
    """
    lam = _check_coefficient("lam", lam)
    params = _selected_parameters(network, layers)
    if not params:
        raise ValueError(f"l2_init_loss: {type(network).__name__} has no parameter that requires grad")
    targets = []
    for name, p in params.items():
        if name not in theta0:
            raise ValueError(f"theta0 has no entry {name!r}: was it captured from this network?")
        t = theta0[name]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"theta0[{name!r}] has shape {tuple(t.shape)}, the parameter {tuple(p.shape)}")
        targets.append(t.detach().to(device=p.device, dtype=p.dtype))
    return lam * torch.stack([(p - t).square().sum() for p, t in zip(params.values(), targets)]).sum()


# --------------------------------------------------------------------------------------------------------------------
# Parseval regularisation
# --------------------------------------------------------------------------------------------------------------------


def parseval_layers(network: nn.Module) -> dict[str, nn.Module]:
    """Parseval's default layers: every `nn.Linear` and `nn.Conv2d` except the last `nn.Linear` in registration order
    (the output layer; Chung et al. 2024 regularise all layers but the last)."""
    layers = {name: m for name, m in network.named_modules() if layer_kind(m) in MATRIX_KINDS}
    linears = [name for name, m in layers.items() if isinstance(m, nn.Linear)]
    if linears:
        del layers[linears[-1]]
    return layers


def parseval_loss(
    network: nn.Module,
    layers: Mapping[str, nn.Module] | Sequence[str] | None = None,
    s: float = 2.0,
    lam: float = 1.0,
) -> torch.Tensor:
    """Parseval regulariser λ·Σ_l ‖W_l W_lᵀ − s·I‖²_F (Chung et al. 2024, NeurIPS, Eq. 1).

    W_l is a layer's weight in PyTorch's (d_out, d_in) layout, so W Wᵀ is (d_out, d_out), as in the authors' code
    (``torch.matmul(W, W.t()) - scale * I``; "weight matrices right multiply by their inputs"). A Conv2d kernel
    (C_out, C_in, k_h, k_w) is unfolded to (C_out, C_in·k_h·k_w), the matrix of the convolution on one patch (Cisse
    et al. 2017, Parseval networks; Chung et al. use MLPs only). s = 2 = gain² of the orthogonal init with gain √2
    (the authors' default); Chung et al. sweep λ in {1e-3, 1e-4}; their code also multiplies λ by (64/width)², which
    is left to the caller. Biases are not regularised.

    Computed without the (d_out × d_out) Gram when d_out > d_in: W Wᵀ and WᵀW share their nonzero eigenvalues, so
    ‖W Wᵀ − s·I_{d_out}‖²_F = ‖WᵀW − s·I_{d_in}‖²_F + s²·(d_out − d_in), the same value and gradient from the smaller
    Gram (SimBa's fc1, 4h × h, costs 4× less). Hence the floor s²·max(0, d_out − d_in) for tall layers: their rows
    cannot be orthogonal. Layers of equal (unfolded) shape are stacked into one batched matmul.

    Args:
        network: the regularised network.
        layers: None (every Linear and Conv2d but the last Linear, `parseval_layers`), a dict from `select_layers`,
            or qualified Linear/Conv2d names.
        s: the target scale s > 0 of W Wᵀ.
        lam: λ ≥ 0 (1 returns the plain sum).

    Returns:
        0-dim tensor in the weights' dtype, differentiable w.r.t. the weights.

    Raises:
        ValueError: bad `s` or `lam`; a bad `layers` (`resolve_layers`); an empty default selection (a network with
            a single Linear and no conv).
    """
    lam = _check_coefficient("lam", lam)
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s > 0):
        raise ValueError(f"s must be a finite float > 0 (2 in Chung et al. 2024), got {s!r}")
    if layers is None:
        chosen = parseval_layers(network)
        if not chosen:
            raise ValueError(
                f"parseval_loss: {type(network).__name__} has no Linear/Conv2d layer besides its output layer"
            )
    else:
        chosen = resolve_layers(network, layers)
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
    """The run's per-step plasticity method, driven the same way by both agents.

    ``loss(name)`` is added to network `name`'s loss before `backward()` (L2-init, Parseval; 0 otherwise);
    ``after_step(name)`` runs right after that network's optimizer step (SWR; nothing otherwise); ``on_reset()`` runs
    after each reset event (SWR + re-init: the stored norms become the current ones). It combines with any reset method
    except plasticity injection, which changes the parameter set these methods were built on.

    Args:
        kind: ``"none"``, ``"swr"`` (Soft Weight Rescaling), ``"l2init"`` (L2-init) or ``"parseval"``.
        swr_lambda: SWR's λ in [0, 1] (1e-3).
        swr_reinit: SWR + re-init: reset the stored norms to the current ones at every reset event.
        l2init_lambda: L2-init's λ ≥ 0.
        parseval_lambda: Parseval's λ ≥ 0 (1e-3); parseval_s: its target scale s > 0 (2).

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
        self.kind = kind
        self.swr_lambda = _check_fraction("swr_lambda", swr_lambda)
        self.swr_reinit = bool(swr_reinit)
        self.l2init_lambda = _check_coefficient("l2init_lambda", l2init_lambda)
        self.parseval_lambda = _check_coefficient("parseval_lambda", parseval_lambda)
        self.parseval_s = _check_coefficient("parseval_s", parseval_s, positive=True)
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
        if self.kind not in ("l2init", "parseval"):
            return 0.0
        network, theta0 = self.networks[name]
        if self.kind == "l2init":
            return l2_init_loss(network, theta0, lam=self.l2init_lambda)
        return parseval_loss(network, s=self.parseval_s, lam=self.parseval_lambda)

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
        out: dict[str, float] = {}
        for name, swr in self.swr.items():
            out.update(swr.log_scalars(prefix=f"swr/{name}"))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {name: swr.state_dict() for name, swr in self.swr.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, swr in self.swr.items():
            swr.load_state_dict(state[name])
