"""Shrink & Perturb (Ash & Adams 2020, "On Warm-Starting Neural Network Training", NeurIPS; FIRE's "S&P" baseline,
SR-SPR's and BBF's resets), and the full reset as its α = 0 case (`fire_rl.resets.full`)."""

from __future__ import annotations

import time

import torch
from torch import nn

from fire_rl.resets.common import KINDS, LayerReport, ResetReport, layer_report, reset_values, resolve_layers, sync
from fire_rl.validation import check_range


def shrink_perturb_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    theta0: dict[str, torch.Tensor] | None,
    *,
    alpha: float,
    toward: str = "init",
    measure: bool = True,
    op: str = "sp",
) -> ResetReport:
    """Shrink & Perturb in place: θ ← α·θ + (1 − α)·θ_new for every parameter of the selected layers.

    α is the fraction of the trained parameters KEPT: α = 1 changes nothing, α = 0 is a full reset to θ_new. In this
    convention FIRE's S&P baseline is α = 0.2 toward θ₀ (official ``θ.mul_(0.2).add_(θ₀, alpha=0.8)``,
    github.com/isaac7778/FIRE @ c37a0ac, rl/dqn/cleanrl/dqn_atari_resume.py ``apply_srdqn``), SR-SPR's α = 0.8 and
    BBF's α = 0.5 toward a fresh draw. Computed as ``θ.mul_(α).add_(θ_new, alpha=1 − α)``; α = 0 copies θ_new exactly
    (also over a NaN or Inf θ).

    What happens to:
        * the changed tensors: every parameter of each selected Linear, Conv2d or normalisation layer (γ, β),
          in place under `torch.no_grad()`; nothing else.
        * the target network and the optimizer state: nothing; the scheduler handles them (`changed` lists what moved).
        * the RNG: ``toward="init"`` uses θ₀; ``toward="random"`` draws θ_new once for all selected layers with the
          network's own initialisation (`fresh_draw`, torch's global RNG).

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers` (kinds linear, conv, norm), or qualified layer names.
        theta0: θ₀ from `capture_theta0(network)`; required for ``toward="init"``.
        alpha: α in [0, 1], the share of θ kept.
        toward: ``"init"`` (θ_new = θ₀) or ``"random"`` (θ_new = a fresh draw).
        measure: per-layer SFE, relative SFE and DfI before/after of the weight (one host sync per layer); False: times.
        op: the name the report gives the operation (`full_reset_` passes ``"full"``).

    Returns:
        `ResetReport` `op`: one `LayerReport` per layer, `changed` = the parameters it overwrote.

    Raises:
        ValueError: `alpha` not in [0, 1]; unknown `toward`; ``"init"`` without θ₀ or with θ₀ of another network; bad
            `layers`; all before any parameter changes.
    """
    check_range("alpha (the share of trained parameters kept)", alpha, 0, 1)
    chosen = resolve_layers(network, layers, kinds=tuple(KINDS))
    values = reset_values(network, chosen, theta0, toward)
    alpha = float(alpha)

    report = ResetReport(op)
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            before = module.weight.detach().clone() if measure else None
            for pname, p in module.named_parameters(recurse=False):
                new = values[f"{name}.{pname}"]
                if alpha == 0.0:
                    p.copy_(new)
                else:
                    p.mul_(alpha).add_(new, alpha=1.0 - alpha)
                report.changed.append(p)
            if measure:
                sync(module.weight.device)
                report.layers.append(layer_report(name, op, before, module.weight, time.perf_counter() - t0))
            else:
                report.layers.append(LayerReport(name, op, seconds=time.perf_counter() - t0))
    report.seconds = time.perf_counter() - start
    return report
