"""What every reset method shares: layer selection, the initial parameters θ₀, fresh draws, and the reset report.

A network's *layers* are its `nn.Linear` and `nn.Conv2d` modules (kind ``"linear"`` / ``"conv"``) and, when asked for
by kind, its normalisation layers with learned affine parameters (kind ``"norm"``: `NORM_TYPES`), addressed by their
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

# Normalisation layers whose output scale does not depend on their input scale; their affine γ (``weight``) and β
# (``bias``) are what Shrink & Perturb, full resets and SWR act on.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
KINDS: dict[str, tuple[type[nn.Module], ...]] = {"linear": (nn.Linear,), "conv": (nn.Conv2d,), "norm": NORM_TYPES}
# The layers whose weight is a matrix (or a stack of them): what FIRE, ReDo, DfI and Parseval act on.
MATRIX_KINDS = ("linear", "conv")
ROLES = ("encoder", "head")


def layer_kind(module: nn.Module) -> str | None:
    """``"linear"`` for `nn.Linear`, ``"conv"`` for `nn.Conv2d`, ``"norm"`` for a normalisation layer with a learned
    affine scale (`NORM_TYPES`), else None."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, NORM_TYPES) and getattr(module, "weight", None) is not None:
        return "norm"
    return None


def all_layers(network: nn.Module, kinds: Sequence[str] = MATRIX_KINDS) -> dict[str, nn.Module]:
    """Every layer of `network` of the given kinds (default: every Linear and Conv2d), by qualified name, in
    registration order."""
    return {name: m for name, m in network.named_modules() if layer_kind(m) in kinds}


def _available(network: nn.Module) -> str:
    layers = all_layers(network, tuple(KINDS))
    return ", ".join(f"{n} ({layer_kind(m)})" for n, m in layers.items()) or "none"


def select_layers(
    network: nn.Module,
    kinds: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Choose the layers a reset acts on.

    Args:
        network: the network to search.
        kinds: keep layers of these kinds (``"linear"``, ``"conv"``, ``"norm"``); None keeps Linear and Conv2d layers
            (normalisation layers only when ``"norm"`` is asked for: FIRE and ReDo act on matrices).
        roles: keep layers under these top-level children (``"encoder"``, ``"head"``); None keeps all.
        names: keep layers whose qualified name matches one of these `fnmatch` patterns (``"encoder.*"``, ``"head.0"``);
            None keeps all. Every pattern must match at least one layer of any kind.

    Returns:
        ``{qualified_name: module}`` in registration order; the three filters are intersected.

    Raises:
        ValueError: an unknown kind or role, a role the network has no child for, a pattern that matches no layer, or
            a selection that is empty; the message lists the available layers.
    """
    if kinds is not None:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown layer kind(s) {bad}; allowed: {list(KINDS)}")
    layers = all_layers(network, MATRIX_KINDS if kinds is None else tuple(kinds))
    if roles is not None:
        bad = [r for r in roles if r not in ROLES]
        if bad:
            raise ValueError(f"unknown layer role(s) {bad}; allowed: {list(ROLES)}")
        missing = [r for r in roles if not isinstance(getattr(network, r, None), nn.Module)]
        if missing:
            raise ValueError(
                f"network {type(network).__name__} has no child module named {missing}; roles need top-level children "
                f"named {list(ROLES)}; available layers: {_available(network)}"
            )
        layers = {n: m for n, m in layers.items() if n.split(".")[0] in roles}
    if names is not None:
        every = all_layers(network, tuple(KINDS))
        for pattern in names:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in every):
                raise ValueError(
                    f"layer name pattern {pattern!r} matches no layer; available layers: {_available(network)}"
                )
        layers = {n: m for n, m in layers.items() if any(fnmatch.fnmatchcase(n, p) for p in names)}
    if not layers:
        raise ValueError(
            f"layer selection kinds={kinds} roles={roles} names={names} matches no layer; available layers: "
            f"{_available(network)}"
        )
    return layers


def capture_theta0(network: nn.Module) -> dict[str, torch.Tensor]:
    """θ₀: a detached clone of every parameter of `network`, by `named_parameters()` name.

    Capture it once, right after construction and initialisation; it is a plain dict of tensors, so it goes into a
    checkpoint as it is.
    """
    return {name: p.detach().clone() for name, p in network.named_parameters()}


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
        sfe: squared Frobenius error ‖W − W̃‖²_F of the weight (FIRE, arXiv 2602.08040; `fire_rl.metrics.sfe`).
        rel_sfe: sfe / ‖W‖²_F.
        dfi_before, dfi_after: deviation from isometry ‖WᵀW − I‖²_F of the weight (up to FIRE's scale) before and
            after (`fire_rl.metrics.dfi`); NaN for a normalisation layer's γ, which is not a matrix.
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

    `changed` lets the scheduler zero exactly those parameters' optimizer moments (``optimizer="reset-changed"``) and
    copy exactly those into a target network (``target="changed"``).
    """

    method: str
    layers: list[LayerReport] = field(default_factory=list)
    seconds: float = 0.0
    changed: list[nn.Parameter] = field(default_factory=list, repr=False)

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


def resolve_layers(
    network: nn.Module,
    layers: dict[str, nn.Module] | Sequence[str] | str,
    kinds: Sequence[str] = MATRIX_KINDS,
) -> dict[str, nn.Module]:
    """The layers a reset acts on, from `select_layers`' dict or from qualified names.

    Args:
        network: the network the layers belong to.
        layers: ``{name: module}`` as `select_layers` returns it, or a list of qualified layer names (a single name as a
            plain string is accepted too).
        kinds: the layer kinds the caller can act on (default Linear and Conv2d; Shrink & Perturb and full resets also
            take ``"norm"``).

    Returns:
        ``{qualified_name: module}`` in the order given.

    Raises:
        ValueError: an empty selection, a name that is not a module of `network` (the message lists the available
            layers), a dict entry whose module is not the network's module of that name (e.g. selected on another
            network), or a module whose kind is not in `kinds`.
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
    out: dict[str, nn.Module] = {}
    for name in names:
        if name not in modules:
            raise ValueError(
                f"layer {name!r} is not a module of {type(network).__name__}; available layers: {_available(network)}"
            )
        module = modules[name]
        if given is not None and given[name] is not module:
            raise ValueError(
                f"layers[{name!r}] is not the module of that name in {type(network).__name__}: was the selection made "
                "on another network? Select on this one, or pass the names"
            )
        if layer_kind(module) not in kinds:
            allowed = " and ".join(f"{k} ({', '.join(c.__name__ for c in KINDS[k])})" for k in kinds)
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}; this operation acts on {allowed} layers only; "
                f"available layers: {_available(network)}"
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
        before, after: the weight before and after the reset, same shape: 2-D or 4-D, or a normalisation layer's 1-D
            γ (SFE only; its DfI is NaN).
        scale: the c of DfI = ‖G(W/c) − I‖²_F (`fire_rl.metrics.dfi`): a rule of `fire_rl.polar.FIRE_SCALES`.
    """
    values = [sfe(before, after), relative_sfe(before, after)]
    if before.dim() in (2, 4):
        values += [dfi(before, scale=scale), dfi(after, scale=scale)]
    floats = torch.stack([v.to(torch.float64) for v in values]).tolist() + [math.nan] * (4 - len(values))
    fields = dict(zip(("sfe", "rel_sfe", "dfi_before", "dfi_after"), floats, strict=True))
    return LayerReport(name, op, **fields, residual=residual, seconds=seconds)
