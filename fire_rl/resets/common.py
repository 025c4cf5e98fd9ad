"""What every reset method shares: layer selection, the initial parameters θ₀, fresh draws, and the reset report.

A network's *layers* are its `nn.Linear` and `nn.Conv2d` modules (kinds ``"linear"``, ``"conv"``) and, when asked for,
its normalisation layers with learned affine parameters (kind ``"norm"``), by qualified `named_modules()` name. A *role*
is a top-level child: the networks of `fire_rl.networks` hold ``encoder`` and ``head``, so role ``"head"`` selects the
layers named ``"head.…"``.
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
    """``"linear"``, ``"conv"``, ``"norm"`` (a `NORM_TYPES` layer with a learned affine scale), or None."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, NORM_TYPES) and getattr(module, "weight", None) is not None:
        return "norm"
    return None


def all_layers(network: nn.Module, kinds: Sequence[str] = MATRIX_KINDS) -> dict[str, nn.Module]:
    """Every layer of `network` of the given kinds, by qualified name, in registration order."""
    return {name: m for name, m in network.named_modules() if layer_kind(m) in kinds}


def available(network: nn.Module) -> str:
    """The network's layers with their kinds, for error messages."""
    return ", ".join(f"{n} ({layer_kind(m)})" for n, m in all_layers(network, tuple(KINDS)).items()) or "none"


def select_layers(
    network: nn.Module,
    kinds: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, nn.Module]:
    """Choose the layers a reset acts on: the intersection of three filters, ``{qualified_name: module}`` in
    registration order.

    Args:
        kinds: ``"linear"``, ``"conv"``, ``"norm"``; None: Linear and Conv2d (FIRE and ReDo act on matrices).
        roles: top-level children (``"encoder"``, ``"head"``); None keeps all.
        names: `fnmatch` patterns of qualified names (``"encoder.*"``), each of which must match some layer; None keeps
            all.

    Raises:
        ValueError: an unknown kind or role, a role the network has no child for, a pattern that matches no layer, or
            an empty selection; the message lists the available layers.
    """
    for what, values, allowed in (("kind", kinds, tuple(KINDS)), ("role", roles, ROLES)):
        bad = [v for v in values or () if v not in allowed]
        if bad:
            raise ValueError(f"unknown layer {what}(s) {bad}; allowed: {list(allowed)}")
    layers = all_layers(network, MATRIX_KINDS if kinds is None else tuple(kinds))
    if roles is not None:
        missing = [r for r in roles if not isinstance(getattr(network, r, None), nn.Module)]
        if missing:
            raise ValueError(
                f"network {type(network).__name__} has no child module named {missing}; roles need top-level children "
                f"named {list(ROLES)}; available layers: {available(network)}"
            )
        layers = {n: m for n, m in layers.items() if n.split(".")[0] in roles}
    if names is not None:
        every = all_layers(network, tuple(KINDS))
        for pattern in names:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in every):
                raise ValueError(
                    f"layer name pattern {pattern!r} matches no layer; available layers: {available(network)}"
                )
        layers = {n: m for n, m in layers.items() if any(fnmatch.fnmatchcase(n, p) for p in names)}
    if not layers:
        raise ValueError(
            f"layer selection kinds={kinds} roles={roles} names={names} matches no layer; available layers: "
            f"{available(network)}"
        )
    return layers


def capture_theta0(network: nn.Module) -> dict[str, torch.Tensor]:
    """θ₀: a detached clone of every parameter, by `named_parameters()` name; capture it right after initialisation."""
    return {name: p.detach().clone() for name, p in network.named_parameters()}


def fresh_draw(network: nn.Module, layer_names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{"<layer>.<param>": tensor}``: new parameters for the given layers, from a deep copy of `network` re-drawn with
    its own ``init_weights()`` (the paper's init, `fire_rl.networks`) or else each layer's ``reset_parameters()``;
    torch's global RNG, so reproducible under `torch.manual_seed`."""
    names = list(layer_names)
    fresh = copy.deepcopy(network)
    modules = dict(fresh.named_modules())
    if callable(getattr(fresh, "init_weights", None)):
        fresh.init_weights()
    else:
        for name in names:
            modules[name].reset_parameters()
    return {
        f"{name}.{pname}": p.detach().clone()
        for name in names
        for pname, p in modules[name].named_parameters(recurse=False)
    }


@dataclass
class LayerReport:
    """What a reset did to one layer; unmeasured numbers are NaN.

    Attributes:
        name, op: the qualified layer name and the operation (``"fire"``, ``"sp"``, ``"full"``, ``"pi"``, ``"redo"``).
        sfe, rel_sfe: ‖W − W̃‖²_F of the weight and its share of ‖W‖²_F (`fire_rl.metrics.sfe`).
        dfi_before, dfi_after: `fire_rl.metrics.dfi` of the weight with FIRE's scale (NaN for a norm layer's γ).
        residual: max|σ − 1| of the polar factor (FIRE). seconds: wall time. recycled: neurons recycled (ReDo).
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
    """Per-layer reports, total wall time, and the parameters whose values the reset changed (so the scheduler can zero
    exactly their optimizer moments, ``reset-changed``, or copy exactly them into a target, ``changed``)."""

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
    network: nn.Module, layers: dict[str, nn.Module] | Sequence[str] | str, kinds: Sequence[str] = MATRIX_KINDS
) -> dict[str, nn.Module]:
    """``{name: module}`` in the order given, from `select_layers`' dict or qualified names (or one name).

    Raises:
        ValueError: an empty selection, a name that is not a module of `network`, a dict entry whose module is not the
            network's module of that name (selected on another network), or a module whose kind is not in `kinds`; the
            message lists the available layers.
    """
    if isinstance(layers, str):
        layers = [layers]
    given = layers if isinstance(layers, dict) else None
    if given is None and not (isinstance(layers, Sequence) and all(isinstance(n, str) for n in layers)):
        kind = type(layers).__name__
        raise ValueError(f"layers must be a dict from select_layers(...) or a list of layer names, got {kind}")
    if not layers:
        raise ValueError("layers is empty: a reset needs at least one layer")
    modules = dict(network.named_modules())
    out: dict[str, nn.Module] = {}
    for name in layers:
        module = modules.get(name)
        if module is None:
            raise ValueError(
                f"layer {name!r} is not a module of {type(network).__name__}; available layers: {available(network)}"
            )
        if given is not None and given[name] is not module:
            raise ValueError(
                f"layers[{name!r}] is not the module of that name in {type(network).__name__}: was the selection made "
                "on another network? Select on this one, or pass the names"
            )
        if layer_kind(module) not in kinds:
            allowed = " and ".join(f"{k} ({', '.join(c.__name__ for c in KINDS[k])})" for k in kinds)
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}; this operation acts on {allowed} layers only; "
                f"available layers: {available(network)}"
            )
        out[name] = module
    return out


def check_toward(toward: str) -> None:
    """Raises ValueError unless `toward` is ``"init"`` (θ₀) or ``"random"`` (a fresh draw)."""
    if toward not in ("init", "random"):
        raise ValueError(f"toward must be one of ['init', 'random'], got {toward!r}")


def reset_values(
    network: nn.Module, layers: dict[str, nn.Module], theta0: dict[str, torch.Tensor] | None, toward: str
) -> dict[str, torch.Tensor]:
    """θ_new for every parameter of `layers`, keyed ``"<layer>.<param>"``, on each parameter's device and dtype: θ₀
    (``toward="init"``) or one `fresh_draw` (``"random"``, torch's global RNG).

    Raises:
        ValueError: unknown `toward`; ``"init"`` without θ₀; a θ₀ entry that is missing or of another shape.
    """
    check_toward(toward)
    params = {f"{n}.{pn}": p for n, m in layers.items() for pn, p in m.named_parameters(recurse=False)}
    if toward == "random":
        values = fresh_draw(network, list(layers))
    elif theta0 is None:
        raise ValueError("toward='init' needs theta0 (capture_theta0(network) right after initialisation)")
    else:
        missing = [k for k in params if k not in theta0]
        if missing:
            raise ValueError(f"theta0 has no entry for {missing}: was it captured from this network?")
        values = theta0
    for key, p in params.items():
        if values[key].shape != p.shape:
            raise ValueError(f"theta_new[{key!r}] has shape {tuple(values[key].shape)}, the parameter {tuple(p.shape)}")
    return {k: values[k].to(device=p.device, dtype=p.dtype) for k, p in params.items()}


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work on `device`, so that wall time covers it."""
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
    """A `LayerReport` with SFE, relative SFE and (2-D/4-D weights only) DfI before/after with FIRE's `scale` rule;
    one host sync."""
    values = [sfe(before, after), relative_sfe(before, after)]
    if before.dim() in (2, 4):
        values += [dfi(before, scale=scale), dfi(after, scale=scale)]
    floats = torch.stack([v.to(torch.float64) for v in values]).tolist() + [math.nan] * (4 - len(values))
    fields = dict(zip(("sfe", "rel_sfe", "dfi_before", "dfi_after"), floats, strict=True))
    return LayerReport(name, op, **fields, residual=residual, seconds=seconds)
