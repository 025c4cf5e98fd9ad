"""What every reset method shares: layer selection, the initial parameters θ₀, fresh draws, and the reset report.

A network's *layers* are its `nn.Linear` and `nn.Conv2d` modules (kind ``"linear"`` / ``"conv"``), addressed by their
qualified names from `named_modules()`. A *role* is a top-level child: the networks of `fire_rl.networks` put their
feature extractor under ``encoder`` and their output layers under ``head``, so role ``"head"`` selects every layer whose
name starts with ``"head."``.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from fire_rl.metrics import dfi, relative_sfe, sfe

KINDS = {"linear": nn.Linear, "conv": nn.Conv2d}
ROLES = ("encoder", "head")


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"`` for `nn.Linear`, ``"conv"`` for `nn.Conv2d`, else None."""
    for kind, cls in KINDS.items():
        if isinstance(module, cls):
            return kind
    return None


def all_layers(network: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d of `network`, by qualified name, in registration order."""
    return {name: m for name, m in network.named_modules() if layer_kind(m) is not None}


def select_layers(
    network: nn.Module,
    kinds: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Choose the layers a reset acts on.

    Args:
        network: the network to search.
        kinds: keep layers of these kinds (``"linear"``, ``"conv"``); None keeps both.
        roles: keep layers under these top-level children (``"encoder"``, ``"head"``); None keeps all.
        names: keep layers whose qualified name matches one of these `fnmatch` patterns (``"encoder.*"``, ``"head.0"``);
            None keeps all. Every pattern must match at least one layer.

    Returns:
        ``{qualified_name: module}`` in registration order; the three filters are intersected.

    Raises:
        ValueError: an unknown kind or role, a pattern that matches no layer, or a selection that is empty; the message
            lists the available layers.
    """
    layers = all_layers(network)
    available = ", ".join(f"{n} ({layer_kind(m)})" for n, m in layers.items()) or "none"
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown layer kind(s) {bad}; allowed: {sorted(KINDS)}")
        layers = {n: m for n, m in layers.items() if layer_kind(m) in kinds}
    if roles is not None:
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ValueError(f"unknown layer role(s) {bad}; allowed: {list(ROLES)}")
        missing = [r for r in roles if not isinstance(getattr(network, r, None), nn.Module)]
        if missing:
            raise ValueError(
                f"network {type(network).__name__} has no child module named {missing}; roles need top-level children "
                f"named {list(ROLES)}; available layers: {available}"
            )
        layers = {n: m for n, m in layers.items() if n.split(".")[0] in roles}
    if names is not None:
        for pattern in names:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in all_layers(network)):
                raise ValueError(f"layer name pattern {pattern!r} matches no layer; available layers: {available}")
        layers = {n: m for n, m in layers.items() if any(fnmatch.fnmatchcase(n, p) for p in names)}
    if not layers:
        raise ValueError(
            f"layer selection kinds={kinds} roles={roles} names={names} matches no layer; available layers: {available}"
        )
    return layers


def capture_theta0(network: nn.Module) -> dict[str, torch.Tensor]:
    """θ₀: a detached clone of every parameter of `network`, by `named_parameters()` name.

    Capture it once, right after construction and initialisation; it is a plain dict of tensors, so it goes into a
    checkpoint as it is and comes back with `restore_theta0`.
    """
    return {name: p.detach().clone() for name, p in network.named_parameters()}


def restore_theta0(theta0: dict[str, torch.Tensor], network: nn.Module) -> dict[str, torch.Tensor]:
    """Check a loaded θ₀ against `network` and move it to the network's devices.

    Raises:
        ValueError: a parameter name missing from θ₀, or a shape that differs.
    """
    out = {}
    for name, p in network.named_parameters():
        if name not in theta0:
            raise ValueError(f"theta_0 has no entry for parameter {name!r}; it has {sorted(theta0)}")
        if theta0[name].shape != p.shape:
            raise ValueError(f"theta_0[{name!r}] has shape {tuple(theta0[name].shape)}, the network {tuple(p.shape)}")
        out[name] = theta0[name].to(device=p.device, dtype=p.dtype)
    return out


def fresh_draw(network: nn.Module, layer_names: Iterable[str]) -> dict[str, torch.Tensor]:
    """New random parameters for the given layers, drawn the way the network initialises itself.

    A deep copy of `network` is re-initialised with its own ``init_weights()`` method (the networks of
    `fire_rl.networks` have one, so the paper's init is used) or, failing that, each layer's ``reset_parameters()``.
    Draws come from torch's global RNG, so they are reproducible under `torch.manual_seed` and checkpointed RNG state.

    Returns:
        ``{"<layer>.weight": tensor, "<layer>.bias": tensor, ...}`` for the selected layers.
    """
    names = list(layer_names)
    fresh = copy.deepcopy(network)
    init = getattr(fresh, "init_weights", None)
    if callable(init):
        init()
    else:
        modules = dict(fresh.named_modules())
        for name in names:
            modules[name].reset_parameters()
    modules = dict(fresh.named_modules())
    out = {}
    for name in names:
        for pname, p in modules[name].named_parameters(recurse=False):
            out[f"{name}.{pname}"] = p.detach().clone()
    return out


@dataclass
class LayerReport:
    """What a reset did to one layer. Unmeasured numbers are NaN.

    Attributes:
        name: qualified layer name.
        op: the operation applied (``"fire"``, ``"sp"``, ``"full"``, ``"pi"``, ``"redo"``).
        sfe: squared Frobenius error ‖W − W̃‖²_F of the weight (DESIGN 4).
        rel_sfe: sfe / ‖W‖²_F.
        dfi_before, dfi_after: deviation from isometry of the weight before and after (DESIGN 4).
        residual: max|σ − 1| of the polar factor FIRE used (FIRE only).
        seconds: wall time spent on this layer.
        recycled: number of neurons (units or conv channels) the layer recycled (ReDo only).
    """

    name: str
    op: str
    sfe: float = math.nan
    rel_sfe: float = math.nan
    dfi_before: float = math.nan
    dfi_after: float = math.nan
    residual: float = math.nan
    seconds: float = math.nan
    recycled: float = math.nan


@dataclass
class ResetReport:
    """What a reset did to a network: per-layer reports, total wall time, and the parameters whose values it changed.

    `changed` lets the scheduler zero exactly those parameters' optimizer moments (``optimizer="reset-changed"``);
    `new_params` holds parameters a method created (plasticity injection), which the optimizer must be rebuilt with.
    """

    method: str
    layers: list[LayerReport] = field(default_factory=list)
    seconds: float = 0.0
    changed: list[nn.Parameter] = field(default_factory=list, repr=False)
    new_params: list[nn.Parameter] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, float]:
        """Flat scalars for logging: ``{"<layer>/sfe": ..., "sfe_total": ..., "seconds": ...}``; NaNs are left out."""
        out: dict[str, float] = {}
        for lr in self.layers:
            for key, value in asdict(lr).items():
                if key not in ("name", "op") and not math.isnan(value):
                    out[f"{lr.name}/{key}"] = value
        sfes = [lr.sfe for lr in self.layers if not math.isnan(lr.sfe)]
        if sfes:
            out["sfe_total"] = float(sum(sfes))
        out["seconds"] = self.seconds
        return out


def resolve_layers(network: nn.Module, layers: dict[str, nn.Module] | Sequence[str] | str) -> dict[str, nn.Module]:
    """The layers a reset acts on, from `select_layers`' dict or from qualified names.

    Args:
        network: the network the layers belong to.
        layers: ``{name: module}`` as `select_layers` returns it, or a list of qualified layer names (a single name as a
            plain string is accepted too).

    Returns:
        ``{qualified_name: module}`` in the order given.

    Raises:
        ValueError: an empty selection, a name that is not a module of `network` (the message lists the available
            layers), a dict entry whose module is not the network's module of that name (e.g. selected on another
            network), or a module that is not an `nn.Linear` / `nn.Conv2d`.
    """
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(layers, dict):
        names, given = list(layers), layers
    elif isinstance(layers, Sequence) and all(isinstance(n, str) for n in layers):
        names, given = list(layers), None
    else:
        raise ValueError(
            f"layers must be a dict from select_layers(...) or a list of layer names, got {type(layers).__name__}"
        )
    if not names:
        raise ValueError("layers is empty: a reset needs at least one layer")
    modules = dict(network.named_modules())
    available = ", ".join(f"{n} ({layer_kind(m)})" for n, m in all_layers(network).items()) or "none"
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            raise ValueError(
                f"layer {name!r} is not a module of {type(network).__name__}; available layers: {available}"
            )
        module = modules[name]
        if given is not None and given[name] is not module:
            raise ValueError(
                f"layers[{name!r}] is not the module of that name in {type(network).__name__}: was the selection made "
                "on another network? Select on this one, or pass the names"
            )
        if layer_kind(module) is None:
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}; resets act on nn.Linear and nn.Conv2d layers only; "
                f"available layers: {available}"
            )
        out[name] = module
    return out


TOWARDS = ("init", "random")


def check_toward(toward: str) -> None:
    """Raises ValueError unless `toward` is ``"init"`` (θ₀) or ``"random"`` (a fresh draw)."""
    if toward not in TOWARDS:
        raise ValueError(f"toward must be one of {list(TOWARDS)}, got {toward!r}")


def reset_values(
    network: nn.Module, layers: dict[str, nn.Module], theta0: dict[str, torch.Tensor] | None, toward: str
) -> dict[str, torch.Tensor]:
    """θ_new for every parameter of `layers`: θ₀ (``toward="init"``) or one fresh draw (``"random"``, `fresh_draw`,
    torch's global RNG), keyed ``"<layer>.<param>"``, on each parameter's device and dtype.

    Raises:
        ValueError: unknown `toward`; ``"init"`` without θ₀; a θ₀ entry that is missing or of another shape.
    """
    check_toward(toward)
    params = {f"{n}.{pn}": p for n, m in layers.items() for pn, p in m.named_parameters(recurse=False)}
    if toward == "init":
        if theta0 is None:
            raise ValueError("toward='init' needs theta0 (capture_theta0(network) right after initialisation)")
        missing = [k for k in params if k not in theta0]
        if missing:
            raise ValueError(f"theta0 has no entry for {missing}: was it captured from this network?")
        values = {k: theta0[k] for k in params}
    else:
        values = fresh_draw(network, list(layers))
    for key, p in params.items():
        if values[key].shape != p.shape:
            raise ValueError(f"theta_new[{key!r}] has shape {tuple(values[key].shape)}, the parameter {tuple(p.shape)}")
    return {k: values[k].to(device=p.device, dtype=p.dtype) for k, p in params.items()}


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work on `device` so that wall time covers it (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def layer_report(
    name: str,
    op: str,
    before: torch.Tensor,
    after: torch.Tensor,
    seconds: float,
    residual: float = math.nan,
    scale: str = "muon",
) -> LayerReport:
    """A `LayerReport` with SFE, relative SFE and DfI before/after of one weight (`fire_rl.metrics`; one host sync).

    Args:
        before, after: the weight before and after the reset, same shape (2-D or 4-D).
        scale: the c of DfI = ‖G(W/c) − I‖²_F (`fire_rl.metrics.dfi`): ``"muon"`` (FIRE's scale) or ``"none"``.
    """
    err, rel = sfe(before, after), relative_sfe(before, after)
    d_before, d_after = dfi(before, scale=scale), dfi(after, scale=scale)
    values = torch.stack([v.to(torch.float64) for v in (err, rel, d_before, d_after)]).tolist()
    fields = dict(zip(("sfe", "rel_sfe", "dfi_before", "dfi_after"), values, strict=True))
    return LayerReport(name, op, **fields, residual=residual, seconds=seconds)
