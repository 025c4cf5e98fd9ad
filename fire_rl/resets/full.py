"""Full reset of selected layers (official FIRE code: to θ₀; primacy bias, Nikishin et al. 2022: fresh; DESIGN 3.3)."""

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


def full_reset_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    theta0: dict[str, torch.Tensor] | None,
    *,
    toward: str = "init",
    measure: bool = True,
) -> ResetReport:
    """Full reset in place: θ ← θ_new for every parameter (weight and bias) of the selected layers (DESIGN 3.3).

    In Shrink & Perturb's terms, α = 0: nothing of the trained values is kept. The official FIRE DQN resets its two
    linear layers to θ₀ this way; the primacy-bias resets (SPR: last layer; SAC: everything) use a fresh draw.
    Layer choice: `select_layers(network)` (all), ``roles=["head"]``, or names.

    What happens to:
        * the changed tensors: ``weight`` and ``bias`` of each selected layer, overwritten in place (`copy_` under
          `torch.no_grad()`); nothing else.
        * the target network: nothing; the scheduler handles it.
        * the optimizer state: nothing; the scheduler handles it (`changed` lists what moved).
        * the RNG: ``toward="init"`` copies θ₀ and uses no randomness; ``toward="random"`` draws once for all selected
          layers with the network's own initialisation (`fresh_draw`, torch's global RNG).

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers`, or a list of qualified Linear/Conv2d layer names.
        theta0: θ₀ from `capture_theta0(network)`; required for ``toward="init"``, ignored (may be None) otherwise.
        toward: ``"init"`` (θ₀) or ``"random"`` (a fresh draw).
        measure: per-layer SFE, relative SFE and DfI before/after of the weight (one host sync per layer); False: only
            times.

    Returns:
        `ResetReport` with method ``"full"``, one `LayerReport` (op ``"full"``) per layer, and `changed` = the
        parameters it overwrote.

    Raises:
        ValueError: unknown `toward`; ``toward="init"`` without θ₀ or with θ₀ of another network; bad `layers`; all
            raised before any parameter changes.
    """
    check_toward(toward)
    chosen = resolve_layers(network, layers)
    values = reset_values(network, chosen, theta0, toward)

    report = ResetReport("full")
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            before = module.weight.detach().clone() if measure else None
            for pname, p in module.named_parameters(recurse=False):
                p.copy_(values[f"{name}.{pname}"])
                report.changed.append(p)
            if measure:
                sync(module.weight.device)
                report.layers.append(layer_report(name, "full", before, module.weight, time.perf_counter() - t0))
            else:
                report.layers.append(LayerReport(name, "full", seconds=time.perf_counter() - t0))
    report.seconds = time.perf_counter() - start
    return report
