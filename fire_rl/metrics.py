"""Plasticity diagnostics: deviation from isometry, squared Frobenius error, dormant neurons, srank, norms.

Every metric is batched and returns tensors on the input's device without a host sync; `plasticity_metrics` gathers
them into one dict of floats with a single sync. float64 inputs are computed in float64, every other dtype in float32.
This module imports no `fire_rl.resets` (the resets import it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from fire_rl.polar import FIRE_SCALES, fire_scale, kernel_slices, work_dtype
from fire_rl.validation import check_range, range_error


def dfi(weight: torch.Tensor, scale: str | float = "muon", normalized: bool = False) -> torch.Tensor:
    """Deviation from isometry DfI = ‖G − I‖²_F of a Linear or Conv2d weight (FIRE, arXiv 2602.08040, Sec. 3).

    G is the smaller Gram matrix of W/c ((W/c)(W/c)ᵀ when d_out ≤ d_in, else (W/c)ᵀ(W/c)), with c the scale FIRE uses
    under rule `scale` (`fire_rl.polar.fire_scale`), so a freshly FIRE'd layer has DfI ≈ 0. A Conv2d's DfI is the sum
    over its k_h·k_w kernel positions of that of each (C_out × C_in) slice, as FIRE orthogonalises each slice (not the
    (C_out, C_in·k_h·k_w) reshape); one batched matmul. Equivalently Σᵢ (σᵢ²/c² − 1)² over each slice's min(d_out, d_in)
    singular values.

    Args:
        weight: (d_out, d_in) or (C_out, C_in, k_h, k_w), any floating dtype; not modified, no gradient tracked.
        scale: a rule of `FIRE_SCALES` (``"muon"``, the official rule; ``"isometry"``; ``"none"``: c = 1), or a
            positive finite float used as c.
        normalized: divide by ‖I‖²_F = (k_h·k_w·) min(d_out, d_in), so the zero matrix has normalized DfI 1.

    Returns:
        0-dim tensor on `weight`'s device, float64 for a float64 weight, else float32.

    Raises:
        ValueError: `weight` not a non-empty 2-D/4-D floating tensor; `scale` neither a rule nor a positive float.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (2, 4) or weight.numel() == 0:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a non-empty (d_out, d_in) or (C_out, C_in, k_h, k_w) tensor, got {shape}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must have a floating dtype, got {weight.dtype}")
    if isinstance(scale, str) and scale in FIRE_SCALES:
        c = fire_scale(weight.shape, scale)
    elif isinstance(scale, str) or range_error(scale, 0, bounds="(]") is not None:
        raise ValueError(f"scale must be one of {list(FIRE_SCALES)} or a positive finite float, got {scale!r}")
    else:
        c = float(scale)

    x = kernel_slices(weight.detach().to(work_dtype(weight.dtype))) / c  # (P, d_out, d_in)
    d_out, d_in = x.shape[-2:]
    gram = x @ x.mT if d_out <= d_in else x.mT @ x  # (P, n, n), n = min(d_out, d_in)
    # Subtracting I before squaring keeps the small residual of a near-isometry accurate (‖G‖² − 2tr G + n cancels).
    gram.diagonal(dim1=-2, dim2=-1).sub_(1.0)
    value = gram.square().sum()
    return value / (x.shape[0] * min(d_out, d_in)) if normalized else value


def sfe(w: torch.Tensor, w_new: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius error SFE = ‖W − W̃‖²_F between a weight and its replacement (FIRE, arXiv 2602.08040); for
    FIRE's unscaled W̃ = UVᵀ it is Σᵢ (σᵢ − 1)², the smallest of any isometry.

    Args:
        w, w_new: the weight before and after, same shape, floating (dtypes may differ).

    Returns:
        0-dim tensor on `w`'s device: float64 if either input is float64, float32 otherwise.

    Raises:
        ValueError: a non-tensor, a non-floating dtype, or shapes that differ.
    """
    for name, t in (("w", w), ("w_new", w_new)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if w.shape != w_new.shape:
        raise ValueError(f"w and w_new must have the same shape, got {tuple(w.shape)} and {tuple(w_new.shape)}")
    dtype = work_dtype(torch.promote_types(w.dtype, w_new.dtype))
    return (w.detach().to(dtype) - w_new.detach().to(device=w.device, dtype=dtype)).square().sum()


def relative_sfe(w: torch.Tensor, w_new: torch.Tensor) -> torch.Tensor:
    """SFE / ‖W‖²_F, the share of the weight's energy a reset changed; for a zero W, 0 if W̃ is zero too, else +inf
    (decided without a host sync). Args, Returns, Raises: as `sfe`."""
    err = sfe(w, w_new)
    energy = w.detach().to(err.dtype).square().sum()
    zero_case = torch.where(err > 0, torch.full_like(err, math.inf), torch.zeros_like(err))
    return torch.where(energy > 0, err / energy, zero_case)


def check_inputs(inputs: object) -> tuple[torch.Tensor, ...]:
    """A tensor or a non-empty tuple/list of tensors (passed as ``network(*inputs)``) as a tuple; else ValueError."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    raise ValueError(f"inputs must be a tensor or a non-empty tuple/list of tensors, got {type(inputs).__name__}")


def check_network(network: object) -> None:
    """Raises ValueError, naming the type, unless `network` is a torch.nn.Module."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")


def frozen_subtrees(network: nn.Module) -> tuple[str, ...]:
    """Names of the largest submodules whose parameters are all frozen in a network that also has trainable ones:
    plasticity injection's old head and its frozen copy (`fire_rl.resets.injection.InjectedHead`), which never train.
    The diagnostics' default feature layer and activations come from the trainable path only."""
    if not any(p.requires_grad for p in network.parameters()):
        return ()
    frozen: list[str] = []
    for name, module in network.named_modules():
        if name and not _inside(name, frozen):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                frozen.append(name)
    return tuple(frozen)


def _inside(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _activation_modules(network: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    modules = dict(network.named_modules())
    if layers is None:
        frozen = frozen_subtrees(network)
        found = {name: m for name, m in modules.items() if isinstance(m, nn.ReLU) and not _inside(name, frozen)}
        if not found:
            raise ValueError(
                f"network {type(network).__name__} has no nn.ReLU module (activations written as F.relu cannot be "
                "hooked); pass layers=[names of the activation modules]"
            )
        return found
    if isinstance(layers, str) or not layers or not all(isinstance(n, str) for n in layers):
        raise ValueError(f"layers must be None or a non-empty sequence of module names, got {layers!r}")
    missing = [n for n in layers if n not in modules]
    if missing:
        raise ValueError(f"layers {missing} are not modules of {type(network).__name__}; available: {sorted(modules)}")
    return {n: modules[n] for n in layers}


def _unit_activity(h: torch.Tensor, name: str) -> torch.Tensor:
    """E|h_i| per unit, (n,): over the batch for (B, D); over the batch and all positions for (B, C, ...)."""
    if not isinstance(h, torch.Tensor) or h.dim() < 2:
        shape = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(f"activation module {name!r} must output a (B, D) or (B, C, ...) tensor, got {shape}")
    a = h.detach().abs().to(work_dtype(h.dtype))
    return a.mean(dim=0) if a.dim() == 2 else a.mean(dim=(0, *range(2, a.dim())))


@contextmanager
def probe_forward(network: nn.Module, eval_mode: bool = True) -> Iterator[list]:
    """Yields a list for the caller's hook handles; inside, `network` is in eval mode if `eval_mode`. On exit, whatever
    happened, the handles are removed and every submodule's `training` flag restored. Shared with ReDo's tracing."""
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
    """One no-grad forward with temporary hooks: per-unit E|h| of each activation module (``name#k`` per call for a
    module called several times), and the input of `feature_module` at its first call. Modules never called raise if
    `require_all`, else are dropped (at least one must be called)."""
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
        out.update({name: acts[0]} if len(acts) == 1 else {f"{name}#{k}": a for k, a in enumerate(acts)})
    return out, (captured[0] if captured else None)


def _scores(activity: torch.Tensor) -> torch.Tensor:
    mean = activity.mean()
    # A layer whose units are all silent has mean 0: every score is 0, so every unit counts as dormant for any τ ≥ 0.
    return torch.where(mean == 0, torch.zeros_like(activity), activity / mean)


def dormant_scores(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    layers: Sequence[str] | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """ReDo neuron scores sᵢ = E|hᵢ| / mean_j E|h_j| per activation layer over a batch (Sokar et al. 2023, eq. 1).

    Activations are the outputs of `nn.ReLU` modules, caught by temporary forward hooks (activations written as
    `F.relu` are invisible). A unit is a feature of a (B, D) output (E over the batch) or a channel of a (B, C, H, W)
    output (E over the batch and positions). A layer whose units are all silent scores 0 everywhere.

    Args:
        network: runs once under `torch.no_grad()`; modes and hooks are restored even when the forward raises.
        inputs: a tensor, or a tuple/list of tensors passed as ``network(*inputs)`` (e.g. (obs, action)).
        layers: names of the modules whose outputs count as activations, each of which the forward must call; None:
            every `nn.ReLU` the forward calls (at least one).
        eval_mode: run the forward in eval mode; False keeps the modes.

    Returns:
        ``{layer_name: (n_units,) scores}`` in registration order, float64 for float64 activations else float32; a
        module called k > 1 times gives ``name#0``, …, ``name#{k-1}``.

    Raises:
        ValueError: `network` not a module, bad `inputs`, no `nn.ReLU`, unknown names in `layers`, a listed module the
            forward never calls, or an activation that is not at least 2-D.
    """
    check_network(network)
    args = check_inputs(inputs)
    act_modules = _activation_modules(network, layers)
    activity, _ = _forward_capture(network, args, act_modules, None, eval_mode, require_all=layers is not None)
    return {name: _scores(a) for name, a in activity.items()}


def _ratios(scores: dict[str, torch.Tensor], tau: float) -> dict[str, torch.Tensor]:
    dormant = {name: (s <= tau) for name, s in scores.items()}
    out = {name: d.to(s.dtype).mean() for (name, d), s in zip(dormant.items(), scores.values(), strict=True)}
    n_dormant = torch.stack([d.sum() for d in dormant.values()]).sum()
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores.values()) else torch.float32
    out["overall"] = n_dormant.to(dtype) / sum(d.numel() for d in dormant.values())
    return out


def dormant_ratio(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    tau: float = 0.025,
    layers: Sequence[str] | None = None,
    eval_mode: bool = True,
) -> dict[str, torch.Tensor]:
    """Share of τ-dormant neurons, sᵢ ≤ τ (`dormant_scores`), per activation layer and overall (Sokar et al. 2023,
    ReDo, def. 3.1). NaN scores count as not dormant. τ = 0.025 as in Plasticine (the ReDo analysis); ReDo's benchmarks
    use 0.1; τ = 0 counts exactly-silent units only.

    Args:
        network, inputs, layers, eval_mode: as `dormant_scores`.
        tau: dormancy threshold, a finite float ≥ 0.

    Returns:
        ``{layer_name: ratio, ..., "overall": ratio}``: 0-dim tensors in [0, 1]; ``"overall"`` counts the neurons of all
        layers together (not the mean of the layer ratios).

    Raises:
        ValueError: as `dormant_scores`; `tau` negative or not finite.
    """
    check_range("tau", tau, 0)
    return _ratios(dormant_scores(network, inputs, layers=layers, eval_mode=eval_mode), float(tau))


def srank(features: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    """Effective rank srank_δ(Φ) = min{k : Σ_{i≤k} σᵢ / Σᵢ σᵢ ≥ 1 − δ}, σ the singular values of the uncentred feature
    matrix Φ (Kumar et al. 2021, "Implicit Under-Parameterization", eq. 1). Not the "stable rank" ‖Φ‖²_F / ‖Φ‖²₂.

    Args:
        features: (B, D), real; integer dtypes are cast to float32.
        delta: δ in [0, 1), 0.01 as in the paper.

    Returns:
        0-dim int64 tensor on `features`' device in [0, min(B, D)] (0 for zero features); no host sync.

    Raises:
        ValueError: `features` not a real 2-D tensor; `delta` outside [0, 1).
        torch.linalg.LinAlgError: non-finite features (`plasticity_metrics` logs NaN instead).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or features.is_complex():
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"features must be a real 2-D tensor (B, D), got {shape}")
    if features.dtype == torch.bool:
        raise ValueError(f"features must be real numbers, got {features.dtype}")
    check_range("delta", delta, 0, 1, "[)")
    dtype = work_dtype(features.dtype) if features.is_floating_point() else torch.float32
    cumulative = torch.linalg.svdvals(features.detach().to(dtype)).cumsum(0)  # (min(B, D),)
    # The total is the last partial sum, so k ≤ min(B, D) always holds despite rounding.
    total = cumulative[-1]
    k = (cumulative < (1.0 - delta) * total).sum() + 1
    return torch.where(total > 0, k, torch.zeros_like(k))


def feature_norm(features: torch.Tensor) -> torch.Tensor:
    """E_b ‖φ(x_b)‖₂ of (B, ...) floating features (trailing dimensions flattened); 0-dim, float64 for float64 else
    float32. Raises ValueError for anything but a floating tensor with B ≥ 1."""
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
    """``{layer: ‖W‖_F}`` of every `nn.Linear` and `nn.Conv2d` weight (biases excluded), in registration order; float64
    for float64 weights else float32. Raises ValueError if `network` is not a module."""
    check_network(network)
    return {
        name: torch.linalg.vector_norm(m.weight.detach().to(work_dtype(m.weight.dtype)))
        for name, m in _weight_layers(network).items()
    }


def grad_norm(network: nn.Module) -> torch.Tensor:
    """Global L2 norm √(Σ_p ‖∇p‖²) over the parameters holding a gradient (as `clip_grad_norm_`): 0-dim float32 (float64
    if every gradient is), on the gradients' device; 0 on CPU without gradients.

    Raises:
        ValueError: `network` not a module; gradients on several devices.
    """
    check_network(network)
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(())
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise ValueError(f"gradients live on several devices {sorted(map(str, devices))}; pass one device's parameters")
    dtype = torch.float64 if all(g.dtype == torch.float64 for g in grads) else torch.float32
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().to(dtype)) for g in grads]))


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
    """All plasticity diagnostics of one network on one batch, as flat floats for logging (one host sync).

    One no-grad forward (hooks and modes as `dormant_scores`) gives the activations and the features φ: the input of
    `feature_layer` at its first call ((B, ..., D) flattened to (B·…, D)).

    Keys (log them as ``plasticity/<key>``):
        ``dfi/<layer>``: `dfi` with rule `dfi_scale` per Linear/Conv2d; ``dfi_normalized_mean``: mean normalised DfI.
        ``dormant/<act>``, ``dormant``: `dormant_ratio` per activation layer and overall (NaN without an `nn.ReLU`);
            by default the `nn.ReLU` modules outside `frozen_subtrees`.
        ``srank``: `srank`(φ, δ), NaN when φ is not finite. ``feature_norm``: `feature_norm`(φ).
        ``weight_norm/<layer>``, ``weight_norm``: `weight_norms` and the global √(Σ ‖W‖²_F).
        ``grad_norm``: `grad_norm` of the gradients the parameters hold now; NaN when none holds one.

    Args:
        network, inputs, layers, eval_mode: as `dormant_scores`.
        tau: dormancy threshold τ ≥ 0. delta: srank's δ in [0, 1).
        feature_layer: the module whose input is φ; None: the last registered `nn.Linear` outside `frozen_subtrees`
            (after plasticity injection: the trainable head's, never the frozen copy's).
        dfi_scale: a rule of `fire_rl.polar.FIRE_SCALES`.

    Raises:
        ValueError: as `dormant_ratio` and `srank` (except a network without `nn.ReLU`); no Linear/Conv2d layer; no
            `nn.Linear` (and no `feature_layer`), an unknown `feature_layer` or one the forward never calls; an unknown
            `dfi_scale`.
    """
    check_network(network)
    args = check_inputs(inputs)
    check_range("tau", tau, 0)
    check_range("delta", delta, 0, 1, "[)")
    if dfi_scale not in FIRE_SCALES:
        raise ValueError(f"dfi_scale must be one of {list(FIRE_SCALES)}, got {dfi_scale!r}")
    weighted = _weight_layers(network)
    if not weighted:
        raise ValueError(f"network {type(network).__name__} has no nn.Linear or nn.Conv2d layer")
    has_relu = any(isinstance(m, nn.ReLU) for m in network.modules())
    act_modules = _activation_modules(network, layers) if layers is not None or has_relu else {}
    modules = dict(network.named_modules())
    if feature_layer is None:
        frozen = frozen_subtrees(network)
        linears = [name for name, m in modules.items() if isinstance(m, nn.Linear) and not _inside(name, frozen)]
        if not linears:
            raise ValueError(f"network {type(network).__name__} has no nn.Linear; pass feature_layer=<module name>")
        feature_layer = linears[-1]
    elif feature_layer not in modules:
        raise ValueError(f"feature_layer {feature_layer!r} is not a module; available: {sorted(modules)}")

    activity, features = _forward_capture(
        network, args, act_modules, modules[feature_layer], eval_mode, require_all=layers is not None
    )
    if features is None:
        raise ValueError(f"feature_layer {feature_layer!r} was not called in the forward of {type(network).__name__}")

    values: dict[str, torch.Tensor] = {f"dfi/{name}": dfi(m.weight, scale=dfi_scale) for name, m in weighted.items()}
    normalized = [
        values[f"dfi/{name}"] / (kernel_slices(m.weight).shape[0] * min(m.weight.shape[:2]))
        for name, m in weighted.items()
    ]
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
        raise ValueError(f"the input of feature_layer {feature_layer!r} must be (B, D) or (B, ..., D), got {phi.shape}")
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

    device = next(iter(values.values())).device
    flat = torch.stack([v.to(device=device, dtype=torch.float64) for v in values.values()]).tolist()
    return dict(zip(values, flat, strict=True))
