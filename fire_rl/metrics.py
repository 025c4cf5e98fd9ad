"""Plasticity diagnostics: deviation from isometry, squared Frobenius error, dormant neurons, srank, norms.

Every metric is batched (no Python loop over neurons, channels or kernel positions) and returns tensors on the input's
device without a host sync, so an agent can log them every few thousand env steps; `plasticity_metrics` gathers them all
into one dict of floats with a single sync at the end, for logging as ``plasticity/<name>``.

Working precision: float64 inputs are computed in float64, every other floating dtype (float32, float16, bfloat16) in
float32.

This module imports no `fire_rl.resets` (the resets import it); FIRE's scale rules, the kernel-slice layout and the
working dtype come from `fire_rl.polar`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from fire_rl.polar import FIRE_SCALES, fire_scale, kernel_slices, work_dtype

__all__ = [
    "dfi",
    "sfe",
    "relative_sfe",
    "dormant_scores",
    "dormant_ratio",
    "srank",
    "feature_norm",
    "weight_norms",
    "grad_norm",
    "plasticity_metrics",
]


def _check_weight(name: str, weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() not in (2, 4):
        raise ValueError(
            f"{name} must be a 2-D Linear weight (d_out, d_in) or a 4-D Conv2d weight (C_out, C_in, k_h, k_w), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {weight.dtype}")
    if weight.numel() == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(weight.shape)}")


def dfi(weight: torch.Tensor, scale: str | float = "muon", normalized: bool = False) -> torch.Tensor:
    """Deviation from isometry DfI = ‖G − I‖²_F of a Linear or Conv2d weight (FIRE, arXiv 2602.08040, Sec. 3).

    G is the *smaller* Gram matrix of W/c: (W/c)(W/c)ᵀ of shape (d_out, d_out) when d_out ≤ d_in, else (W/c)ᵀ(W/c) of
    shape (d_in, d_in). With a rule name as `scale`, c is the scale FIRE multiplies the polar factor by under that rule
    (`fire_rl.polar.fire_scale`), so a layer freshly FIRE'd with the same rule has DfI ≈ 0 (up to the polar residual).

    Conv2d: FIRE orthogonalises each (C_out × C_in) slice W[:, :, i, j] at each kernel position on its own and
    multiplies the whole kernel by c (``"muon"``: √(C_out/C_in)/(k_h·k_w)), so the conv DfI is the sum over the k_h·k_w
    positions of ‖G_ij − I‖²_F, G_ij the smaller Gram matrix of W[:, :, i, j]/c. It is *not* the DfI of the reshape
    (C_out, C_in·k_h·k_w). All positions are one batched matmul of shape (k_h·k_w, C_out, C_in).

    Equivalently DfI = Σᵢ (σᵢ²/c² − 1)² over the min(d_out, d_in) singular values of each slice (zeros included).

    Args:
        weight: (d_out, d_in) or (C_out, C_in, k_h, k_w), any floating dtype; not modified, no gradient is tracked.
        scale: a rule of `fire_rl.polar.FIRE_SCALES`: ``"muon"`` (default, the official rule), ``"isometry"``,
            ``"none"`` (c = 1, the pure polar factor's isometry); or a positive finite float used as c.
        normalized: divide by the number of Gram diagonal entries, min(d_out, d_in) for a Linear weight and
            k_h·k_w·min(C_out, C_in) for a Conv2d weight (= ‖I‖²_F, so the zero matrix has normalized DfI 1).

    Returns:
        0-dim tensor on `weight`'s device: float64 for a float64 weight, float32 otherwise.

    Raises:
        ValueError: `weight` not a non-empty 2-D/4-D floating tensor; `scale` not a rule of `FIRE_SCALES` or a
            positive finite number.
    """
    _check_weight("weight", weight)
    if isinstance(scale, str):
        if scale not in FIRE_SCALES:
            raise ValueError(f"scale must be one of {list(FIRE_SCALES)} or a positive float, got {scale!r}")
        c = fire_scale(weight.shape, scale)
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite float when numeric, got {scale!r}")
        c = float(scale)
    else:
        raise ValueError(f"scale must be one of {list(FIRE_SCALES)} or a positive float, got {scale!r}")

    x = kernel_slices(weight.detach().to(work_dtype(weight.dtype))) / c  # (P, d_out, d_in)
    d_out, d_in = x.shape[-2:]
    gram = x @ x.mT if d_out <= d_in else x.mT @ x  # (P, n, n), n = min(d_out, d_in)
    # Subtracting I before squaring keeps the small residual of a near-isometry accurate (‖G‖² − 2tr G + n cancels).
    gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)
    value = gram.square().sum()
    if normalized:
        value = value / (x.shape[0] * min(d_out, d_in))
    return value


def _check_pair(w: torch.Tensor, w_new: torch.Tensor) -> None:
    for name, t in (("w", w), ("w_new", w_new)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
    if w.shape != w_new.shape:
        raise ValueError(f"w and w_new must have the same shape, got {tuple(w.shape)} and {tuple(w_new.shape)}")


def sfe(w: torch.Tensor, w_new: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius error SFE = ‖W − W̃‖²_F between a weight and its replacement (FIRE, arXiv 2602.08040).

    For FIRE's unscaled polar factor W̃ = UVᵀ this equals Σᵢ (σᵢ − 1)², the smallest SFE of any isometry.

    Args:
        w: the weight before the reset, any shape, floating dtype.
        w_new: the weight after, same shape (dtype may differ; both are cast to the working precision).

    Returns:
        0-dim tensor on `w`'s device: float64 if either input is float64, float32 otherwise.

    Raises:
        ValueError: a non-tensor, a non-floating dtype, or shapes that differ.
    """
    _check_pair(w, w_new)
    dtype = work_dtype(torch.promote_types(w.dtype, w_new.dtype))
    return (w.detach().to(dtype) - w_new.detach().to(device=w.device, dtype=dtype)).square().sum()


def relative_sfe(w: torch.Tensor, w_new: torch.Tensor) -> torch.Tensor:
    """Relative squared Frobenius error SFE / ‖W‖²_F, the share of the weight's energy a reset changed.

    For a zero W it is defined without dividing by zero: 0 when W̃ is zero too (nothing changed), +inf when W̃ is not
    (any change to nothing is infinitely large relative to it). No host sync is needed to decide.

    Args / Returns / Raises: as `sfe` (same shapes, dtypes and errors).
    """
    err = sfe(w, w_new)
    energy = w.detach().to(err.dtype).square().sum()
    zero_case = torch.where(err > 0, torch.full_like(err, math.inf), torch.zeros_like(err))
    return torch.where(energy > 0, err / energy, zero_case)


def _check_inputs(inputs: object) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    raise ValueError(
        f"inputs must be a tensor or a non-empty tuple/list of tensors (passed to network(*inputs)), "
        f"got {type(inputs).__name__}"
    )


def _check_network(network: object) -> None:
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")


def _activation_modules(network: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    modules = dict(network.named_modules())
    if layers is None:
        found = {name: m for name, m in modules.items() if isinstance(m, nn.ReLU)}
        if not found:
            raise ValueError(
                f"network {type(network).__name__} has no nn.ReLU module (activations written as F.relu cannot be "
                "hooked); pass layers=[names of the activation modules]"
            )
        return found
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers) or not layers:
        raise ValueError(f"layers must be None or a non-empty sequence of module names, got {layers!r}")
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of {type(network).__name__}; available: {sorted(modules)}")
    return {n: modules[n] for n in layers}


def _unit_activity(h: torch.Tensor, name: str) -> torch.Tensor:
    """E|h_i| per unit: (B, D) -> mean over the batch; (B, C, ...) -> mean over the batch and all positions. (n,)"""
    if not isinstance(h, torch.Tensor) or h.dim() < 2:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"activation module {name!r} must output a (B, D) or (B, C, ...) tensor, got {shape}")
    a = h.detach().abs().to(work_dtype(h.dtype))
    return a.mean(dim=0) if a.dim() == 2 else a.mean(dim=(0, *range(2, a.dim())))


@contextmanager
def probe_forward(network: nn.Module, eval_mode: bool = True) -> Iterator[list]:
    """A measuring forward's set-up and clean-up, shared by the metrics and ReDo's tracing.

    Yields a list for the caller's hook handles. Inside, the network is in eval mode if `eval_mode`; on exit, whatever
    happened, every handle is removed and every submodule's `training` flag restored. Run the forward itself under
    `torch.no_grad()`.
    """
    handles: list = []
    modes = {m: m.training for m in network.modules()}
    try:
        if eval_mode:
            network.eval()
        yield handles
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode


def _forward_capture(
    network: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    act_modules: dict[str, nn.Module],
    feature_module: nn.Module | None,
    eval_mode: bool,
    require_all: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One no-grad forward with temporary hooks: per-unit E|h| of each activation module, and the input of one module.

    A module called k > 1 times in the forward yields k entries ``name#0 … name#{k-1}`` (one per call: distinct
    layers sharing an activation module). Modules the forward never calls raise if `require_all`, else are dropped
    (at least one must be called). Hooks are removed and every submodule's `training` flag restored in all cases.
    """
    activity: dict[str, list[torch.Tensor]] = {name: [] for name in act_modules}
    captured: list[torch.Tensor] = []

    def act_hook(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            activity[name].append(_unit_activity(output, name))

        return hook

    def pre_hook(module: nn.Module, args: tuple) -> None:
        if not captured:
            # Cloned so that a later in-place op in the forward cannot change what we measure.
            captured.append(args[0].detach().clone())

    with probe_forward(network, eval_mode) as handles:
        for name, module in act_modules.items():
            handles.append(module.register_forward_hook(act_hook(name)))
        if feature_module is not None:
            handles.append(feature_module.register_forward_pre_hook(pre_hook))
        with torch.no_grad():
            network(*inputs)

    silent = [name for name, acts in activity.items() if not acts]
    if silent and (require_all or len(silent) == len(activity)):
        raise ValueError(f"activation modules {silent} were not called in the forward of {type(network).__name__}")
    out: dict[str, torch.Tensor] = {}
    for name, acts in activity.items():
        if not acts:
            continue
        if len(acts) == 1:
            out[name] = acts[0]
        else:
            out.update({f"{name}#{k}": a for k, a in enumerate(acts)})
    return out, (captured[0] if captured else None)


def _scores(activity: torch.Tensor) -> torch.Tensor:
    mean = activity.mean()
    # A layer whose units are all silent has mean 0: every score is 0, so every unit counts as dormant for any τ ≥ 0.
    return torch.where(mean == 0, torch.zeros_like(activity), activity / mean)


def _check_tau(tau: float) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite float >= 0 (0.025 analysis, 0.1 ReDo benchmarks), got {tau!r}")


def dormant_scores(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    layers: Sequence[str] | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """ReDo neuron scores sᵢ = E|hᵢ| / mean_j E|h_j| per activation layer over a batch (Sokar et al. 2023, eq. 1).

    Activations are the outputs of `nn.ReLU` modules, caught by temporary forward hooks (the contract with
    `fire_rl.networks`: activations written as `F.relu` are invisible; pass `layers` for other activation modules).
    A unit is one feature of a (B, D) output, with E over the batch, or one channel of a (B, C, H, W) output, with E
    over the batch and all spatial positions. A layer whose units are all silent (mean 0) scores 0 everywhere.

    Args:
        network: the module to probe. It runs once under `torch.no_grad()`, in eval mode by default; every submodule's
            train/eval flag is restored and every hook removed afterwards, even when the forward raises.
        inputs: a tensor, or a tuple/list of tensors passed as ``network(*inputs)`` (e.g. (obs, action) for a critic).
        layers: qualified names (from `named_modules()`) of the modules whose outputs count as activations, each of
            which the forward must call; None takes every `nn.ReLU` that the forward calls (at least one).
        eval_mode: run the forward in eval mode (no running-statistics updates, no dropout); False keeps the modes.

    Returns:
        ``{layer_name: (n_units,) scores}`` in registration order, float64 for float64 activations else float32.
        A module called k > 1 times in one forward gives entries ``name#0``, …, ``name#{k-1}``.

    Raises:
        ValueError: `network` not a module, bad `inputs`, no `nn.ReLU` found, unknown names in `layers`, a listed module
            that the forward never calls, or an activation that is not at least 2-D.
    """
    _check_network(network)
    args = _check_inputs(inputs)
    act_modules = _activation_modules(network, layers)
    activity, _ = _forward_capture(network, args, act_modules, None, eval_mode, require_all=layers is not None)
    return {name: _scores(a) for name, a in activity.items()}


def _ratios(scores: dict[str, torch.Tensor], tau: float) -> dict[str, torch.Tensor]:
    dormant = {name: (s <= tau) for name, s in scores.items()}
    out = {name: d.to(s.dtype).mean() for (name, d), s in zip(dormant.items(), scores.values(), strict=True)}
    n_units = sum(d.numel() for d in dormant.values())
    n_dormant = torch.stack([d.sum() for d in dormant.values()]).sum()
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) else torch.float32
    out["overall"] = n_dormant.to(dtype) / n_units
    return out


def dormant_ratio(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    tau: float = 0.025,
    layers: Sequence[str] | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """Share of τ-dormant neurons per activation layer and overall (Sokar et al. 2023, ReDo, def. 3.1).

    Neuron i of a layer is τ-dormant when its score sᵢ = E|hᵢ| / mean_j E|h_j| ≤ τ over the batch (`dormant_scores`
    says which modules, units and expectations); if all units of a layer are silent, all are dormant; NaN scores (a
    diverged network) count as not dormant. τ = 0.025 as in Plasticine (the ReDo analysis); ReDo's benchmarks use 0.1,
    and τ = 0 counts exactly-silent units only.

    Args:
        network, inputs, layers, eval_mode: as `dormant_scores`.
        tau: dormancy threshold, a finite float ≥ 0.

    Returns:
        ``{layer_name: ratio, ..., "overall": ratio}``: 0-dim tensors in [0, 1]; ``"overall"`` is dormant neurons of all
        layers over all neurons (not the mean of the layer ratios).

    Raises:
        ValueError: as `dormant_scores`, and `tau` negative or not finite.
    """
    _check_tau(tau)
    return _ratios(dormant_scores(network, inputs, layers=layers, eval_mode=eval_mode), float(tau))


def _check_delta(delta: float) -> None:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (0 <= delta < 1):
        raise ValueError(f"delta must be a float in [0, 1) (0.01 in Kumar et al. 2021), got {delta!r}")


def _check_features(features: object) -> None:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a 2-D tensor (B, D), got {shape}")
    if features.is_complex() or features.dtype == torch.bool:
        raise ValueError(f"features must be real numbers, got {features.dtype}")


def srank(features: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    """Effective rank srank_δ(Φ) = min{k : Σ_{i≤k} σᵢ / Σᵢ σᵢ ≥ 1 − δ} (Kumar et al. 2021, "Implicit
    Under-Parameterization", eq. 1).

    σ₁ ≥ σ₂ ≥ … are the singular values of the feature matrix Φ (uncentred). This is *not* the "stable rank"
    ‖Φ‖²_F / ‖Φ‖²₂ that some plasticity code logs under a similar name. Zero features have srank 0.

    Args:
        features: (B, D), real; integer dtypes are cast to float32. Usually the penultimate features of a batch.
        delta: δ in [0, 1), default 0.01 as in the paper.

    Returns:
        0-dim int64 tensor on `features`' device, in [0, min(B, D)]; no host sync (call `int()` on it to get a number).

    Raises:
        ValueError: `features` not a real 2-D tensor; `delta` outside [0, 1).
        torch.linalg.LinAlgError: non-finite features (the SVD does not converge); `plasticity_metrics` logs NaN
            instead.
    """
    _check_features(features)
    _check_delta(delta)
    dtype = work_dtype(features.dtype) if features.is_floating_point() else torch.float32
    sigma = torch.linalg.svdvals(features.detach().to(dtype))  # (min(B, D),), descending
    cumulative = sigma.cumsum(0)
    # The total is the last partial sum, so k ≤ min(B, D) always holds despite rounding.
    total = cumulative[-1]
    k = (cumulative < (1.0 - delta) * total).sum() + 1
    return torch.where(total > 0, k, torch.zeros_like(k))


def feature_norm(features: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-sample L2 norm of the features, E_b ‖φ(x_b)‖₂.

    Args:
        features: (B, ...) floating; each sample's trailing dimensions are flattened into one vector.

    Returns:
        0-dim tensor, float64 for float64 features else float32.

    Raises:
        ValueError: not a floating tensor with at least 1 dimension and a non-empty batch.
    """
    if not isinstance(features, torch.Tensor) or features.dim() < 1 or features.shape[0] == 0:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a (B, ...) tensor with B >= 1, got {shape}")
    if not features.is_floating_point():
        raise ValueError(f"features must have a floating dtype, got {features.dtype}")
    flat = features.detach().to(work_dtype(features.dtype)).reshape(features.shape[0], -1)  # (B, D)
    return torch.linalg.vector_norm(flat, dim=1).mean()


def _weight_layers(network: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in network.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def weight_norms(network: nn.Module) -> dict[str, torch.Tensor]:
    """Frobenius norm ‖W‖_F of the weight of every `nn.Linear` and `nn.Conv2d` of `network` (biases excluded).

    Returns:
        ``{qualified_layer_name: 0-dim tensor}`` in registration order (float64 for float64 weights else float32);
        empty when the network has no such layer.

    Raises:
        ValueError: `network` not a module.
    """
    _check_network(network)
    return {
        name: torch.linalg.vector_norm(m.weight.detach().to(work_dtype(m.weight.dtype)))
        for name, m in _weight_layers(network).items()
    }


def grad_norm(network: nn.Module | Iterable[torch.Tensor]) -> torch.Tensor:
    """Global L2 norm √(Σ_p ‖∇p‖²) over the parameters that currently hold a gradient (as `clip_grad_norm_` computes).

    Args:
        network: a module (its `parameters()`) or an iterable of parameters.

    Returns:
        0-dim float32 tensor (float64 if every gradient is float64) on the gradients' device; 0 (on CPU) when no
        parameter has a gradient.

    Raises:
        ValueError: `network` neither a module nor an iterable of tensors; gradients on several devices.
    """
    if isinstance(network, nn.Module):
        params = list(network.parameters())
    elif isinstance(network, Iterable) and not isinstance(network, torch.Tensor):
        params = list(network)
        if not all(isinstance(p, torch.Tensor) for p in params):
            raise ValueError("network must be an nn.Module or an iterable of tensors; the iterable holds a non-tensor")
    else:
        raise ValueError(f"network must be an nn.Module or an iterable of tensors, got {type(network).__name__}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise ValueError(f"gradients live on several devices {sorted(map(str, devices))}; pass one device's parameters")
    dtype = torch.float64 if all(g.dtype == torch.float64 for g in grads) else torch.float32
    norms = torch.stack([torch.linalg.vector_norm(g.detach().to(dtype)) for g in grads])
    return torch.linalg.vector_norm(norms)


def _last_linear(network: nn.Module, feature_layer: str | None) -> tuple[str, nn.Module]:
    modules = dict(network.named_modules())
    if feature_layer is not None:
        if feature_layer not in modules:
            raise ValueError(
                f"feature_layer {feature_layer!r} is not a module of {type(network).__name__}; "
                f"available: {sorted(modules)}"
            )
        return feature_layer, modules[feature_layer]
    linears = [(name, m) for name, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"network {type(network).__name__} has no nn.Linear; pass feature_layer=<module name>")
    return linears[-1]


def plasticity_metrics(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    tau: float = 0.025,
    delta: float = 0.01,
    layers: Sequence[str] | None = None,
    feature_layer: str | None = None,
    eval_mode: bool = True,
    dfi_scale: str = "muon",
) -> dict[str, float]:
    """All plasticity diagnostics of one network on one batch, as flat floats for logging.

    One no-grad forward (see `dormant_scores` for hooks and modes) gives the activations and the penultimate features
    φ, the input of the last registered `nn.Linear` (caught by a forward pre-hook; its first call if it runs several
    times; (B, ..., D) inputs are flattened to (B·…, D)). Weight metrics cover every `nn.Linear` and `nn.Conv2d`.
    Everything stays on the device until one `torch.stack(...).tolist()` at the end: one host sync per call.

    Keys (log them as ``plasticity/<key>``):
        ``dfi/<layer>``: `dfi` with FIRE's scale (rule `dfi_scale`), unnormalised, per Linear/Conv2d layer.
        ``dfi_normalized_mean``: mean over those layers of the normalised DfI.
        ``dormant/<act>``, ``dormant``: `dormant_ratio` per activation layer, and overall; a network without any
            `nn.ReLU` (a SimBa network with no residual block) has no per-layer keys and ``dormant`` NaN.
        ``srank``: `srank`(φ, δ); NaN when φ is not finite (instead of the SVD's error).
        ``feature_norm``: `feature_norm`(φ).
        ``weight_norm/<layer>``, ``weight_norm``: `weight_norms` per layer, and the global √(Σ ‖W‖²_F).
        ``grad_norm``: `grad_norm` of the gradients the parameters hold at the call (those of the latest backward
            pass, as the agent left them); NaN when no parameter holds one.

    Args:
        network, inputs, layers, eval_mode: as `dormant_scores`.
        tau: dormancy threshold τ ≥ 0 (`dormant_ratio`).
        delta: srank's δ in [0, 1) (`srank`).
        feature_layer: name of the module whose input is φ; None takes the last `nn.Linear`.
        dfi_scale: the FIRE scale rule DfI is measured against (`fire_rl.polar.FIRE_SCALES`; ``"muon"``).

    Returns:
        ``{key: float}``; srank is a whole number stored as a float.

    Raises:
        ValueError: as `dormant_ratio` and `srank` (except a network without `nn.ReLU`, see ``dormant``); no
            Linear/Conv2d layer; no `nn.Linear` (and no `feature_layer`) or an unknown `feature_layer`; a feature layer
            that the forward never calls; an unknown `dfi_scale`.
    """
    _check_network(network)
    args = _check_inputs(inputs)
    _check_tau(tau)
    _check_delta(delta)
    if dfi_scale not in FIRE_SCALES:
        raise ValueError(f"dfi_scale must be one of {list(FIRE_SCALES)}, got {dfi_scale!r}")
    weighted = _weight_layers(network)
    if not weighted:
        raise ValueError(f"network {type(network).__name__} has no nn.Linear or nn.Conv2d layer")
    has_relu = any(isinstance(m, nn.ReLU) for m in network.modules())
    act_modules = _activation_modules(network, layers) if layers is not None or has_relu else {}
    feature_name, feature_module = _last_linear(network, feature_layer)

    activity, features = _forward_capture(
        network, args, act_modules, feature_module, eval_mode, require_all=layers is not None
    )
    if features is None:
        raise ValueError(f"feature_layer {feature_name!r} was not called in the forward of {type(network).__name__}")

    values: dict[str, torch.Tensor] = {}
    normalized = []
    for name, m in weighted.items():
        raw = dfi(m.weight, scale=dfi_scale)
        values[f"dfi/{name}"] = raw
        p, n = kernel_slices(m.weight).shape[0], min(m.weight.shape[:2])
        normalized.append(raw / (p * n))
    values["dfi_normalized_mean"] = torch.stack([v.to(torch.float64) for v in normalized]).mean()

    if activity:
        ratios = _ratios({name: _scores(a) for name, a in activity.items()}, float(tau))
        overall = ratios.pop("overall")
        values.update({f"dormant/{name}": r for name, r in ratios.items()})
        values["dormant"] = overall
    else:
        values["dormant"] = torch.tensor(math.nan, dtype=torch.float64)

    phi = features.reshape(-1, features.shape[-1]) if features.dim() > 2 else features  # (B, D)
    if phi.dim() != 2:
        raise ValueError(f"the input of feature_layer {feature_name!r} must be (B, D) or (B, ..., D), got {phi.shape}")
    finite = torch.isfinite(phi).all()
    # Zeroing non-finite features keeps the SVD from raising mid-training; the NaN below is what gets logged.
    rank = srank(torch.where(finite, phi, torch.zeros_like(phi)), delta=delta).to(torch.float64)
    values["srank"] = torch.where(finite, rank, torch.full_like(rank, math.nan))
    values["feature_norm"] = feature_norm(phi)

    norms = weight_norms(network)
    values.update({f"weight_norm/{name}": v for name, v in norms.items()})
    values["weight_norm"] = torch.linalg.vector_norm(torch.stack([v.to(torch.float64) for v in norms.values()]))
    has_grad = any(p.grad is not None for p in network.parameters())
    values["grad_norm"] = grad_norm(network) if has_grad else torch.tensor(math.nan, dtype=torch.float64)

    keys = list(values)
    device = next(iter(values.values())).device
    flat = torch.stack([values[k].to(device=device, dtype=torch.float64) for k in keys]).tolist()
    return dict(zip(keys, flat, strict=True))
