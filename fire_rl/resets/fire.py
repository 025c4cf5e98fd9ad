"""FIRE: Frobenius-Isometry Reinitialization (Han et al., ICLR 2026, arXiv 2602.08040)."""

from __future__ import annotations

import time

import torch
from torch import nn

from fire_rl.polar import fire_scale, from_kernel_slices, kernel_slices, polar, polar_with_info
from fire_rl.resets.common import LayerReport, ResetReport, layer_report, resolve_layers, sync


def fire_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    *,
    scale: str = "muon",
    measure: bool = True,
    **polar_options,
) -> ResetReport:
    """FIRE in place: replace each selected weight by its scaled orthogonal polar factor, the isometry (up to c) nearest
    to it, so SFE is as small as any isometry allows.

    Linear weight W: W ← c·polar(W). Conv2d weight: each (C_out × C_in) slice W[:, :, i, j] is orthogonalised on its own
    (one batched `polar` call on `fire_rl.polar.kernel_slices`, not a reshape to (C_out, C_in·k_h·k_w)), then the whole
    kernel × c, c = `fire_rl.polar.fire_scale(shape, scale)`.

    What happens to:
        * the changed tensors: only each selected layer's ``weight``, overwritten in place (`copy_` under
          `torch.no_grad()`); biases and every other parameter are untouched, bit for bit.
        * the target network and the optimizer state: nothing; the scheduler handles them.
        * the RNG: not used; FIRE is a deterministic function of the current weights.

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers(network, ...)`, or qualified names of `nn.Linear`/`nn.Conv2d`
            layers.
        scale: ``"muon"`` (default, the official rule), ``"isometry"`` or ``"none"`` (`fire_rl.polar.FIRE_SCALES`).
        measure: per-layer SFE, relative SFE, DfI before/after (with `scale`) and the polar residual (`polar_with_info`:
            two SVDs per layer), each layer timed after a CUDA sync. False: sync-free, the report holds launch times.
        **polar_options: `method`, `steps`, `tol`, `max_steps`, `check_every` of `fire_rl.polar.polar` (default: the
            paper's 10 cubic Newton–Schulz steps).

    Returns:
        `ResetReport` ``"fire"``: one `LayerReport` per layer, the total seconds, `changed` = the weights it overwrote.

    Raises:
        ValueError: bad `scale`, polar options or `layers` (`resolve_layers`; normalisation layers are refused), all
            before any weight changes.
        torch.linalg.LinAlgError: a NaN/Inf weight when an SVD is taken (`measure`, ``"svd"``).
    """
    chosen = resolve_layers(network, layers)
    report = ResetReport("fire")
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            weight = module.weight
            c = fire_scale(weight.shape, scale)
            slices = kernel_slices(weight)  # (P, d_out, d_in), P = k_h·k_w for a conv, 1 for a Linear
            if measure:
                before = weight.detach().clone()
                q, info = polar_with_info(slices, **polar_options)
            else:
                q = polar(slices, **polar_options)
            q = from_kernel_slices(q, weight.shape)
            weight.copy_(q if c == 1.0 else q * c)
            if measure:
                sync(weight.device)
                seconds = time.perf_counter() - t0
                report.layers.append(layer_report(name, "fire", before, weight, seconds, info.residual, scale))
            else:
                report.layers.append(LayerReport(name, "fire", seconds=time.perf_counter() - t0))
            report.changed.append(weight)
    report.seconds = time.perf_counter() - start
    return report
