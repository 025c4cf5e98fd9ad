"""Shrink & Perturb (Ash & Adams 2020; FIRE's "S&P" baseline, SR-SPR and BBF's resets; DESIGN 3.2)."""

from __future__ import annotations

import time

import torch
from torch import nn

from fire_rl.resets.common import (
    LayerReport,
    ResetReport,
    check_toward,
    layer_report,
    reset_values,
    resolve_layers,
    sync,
)


def shrink_perturb_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    theta0: dict[str, torch.Tensor] | None,
    *,
    alpha: float,
    toward: str = "init",
    include_bias: bool = True,
    measure: bool = True,
) -> ResetReport:
    """Shrink & Perturb in place: θ ← α·θ + (1 − α)·θ_new for the parameters of the selected layers (DESIGN 3.2).

    α is the fraction of the trained parameters KEPT: α = 1 changes nothing, α = 0 is a full reset to θ_new. Papers
    differ in convention; their settings in this one: FIRE's S&P baseline α = 0.2 toward θ₀ (``toward="init"``),
    SR-SPR α = 0.8 and BBF α = 0.5 toward a fresh draw (``toward="random"``).

    What happens to:
        * the changed tensors: the ``weight`` (and ``bias`` if `include_bias`) of each selected layer, overwritten in
          place (`copy_` under `torch.no_grad()`, computed as ``alpha * θ + (1 - alpha) * θ_new``); nothing else.
        * the target network: nothing; the scheduler handles it.
        * the optimizer state: nothing; the scheduler handles it (`changed` lists what moved).
        * the RNG: ``toward="init"`` uses θ₀ and no randomness; ``toward="random"`` draws θ_new once for all selected
          layers with the network's own initialisation (`fresh_draw`, torch's global RNG: reproducible under
          `torch.manual_seed`).

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers`, or a list of qualified Linear/Conv2d layer names.
        theta0: θ₀ from `capture_theta0(network)`; required for ``toward="init"``, ignored (may be None) otherwise.
        alpha: α in [0, 1], the share of θ kept.
        toward: ``"init"`` (θ_new = θ₀) or ``"random"`` (θ_new = a fresh draw).
        include_bias: shrink the biases too (default True; FIRE's DQN baseline shrinks conv weights and biases).
        measure: per-layer SFE, relative SFE and DfI before/after of the weight (one host sync per layer); False: only
            times.

    Returns:
        `ResetReport` with method ``"sp"``, one `LayerReport` (op ``"sp"``) per layer, and `changed` = the parameters it
        overwrote.

    Raises:
        ValueError: `alpha` not a number in [0, 1]; unknown `toward`; ``toward="init"`` without θ₀ or with θ₀ of another
            network; bad `layers`; all raised before any parameter changes.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must be a float in [0, 1] (the share of trained parameters kept), got {alpha!r}")
    check_toward(toward)
    chosen = resolve_layers(network, layers)
    values = reset_values(network, chosen, theta0, toward)
    alpha = float(alpha)

    report = ResetReport("sp")
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            before = module.weight.detach().clone() if measure else None
            for pname, p in module.named_parameters(recurse=False):
                if pname != "weight" and not include_bias:
                    continue
                p.copy_(alpha * p + (1.0 - alpha) * values[f"{name}.{pname}"])
                report.changed.append(p)
            if measure:
                sync(module.weight.device)
                report.layers.append(layer_report(name, "sp", before, module.weight, time.perf_counter() - t0))
            else:
                report.layers.append(LayerReport(name, "sp", seconds=time.perf_counter() - t0))
    report.seconds = time.perf_counter() - start
    return report
