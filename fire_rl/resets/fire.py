"""FIRE: Frobenius-Isometry Reinitialization (Han et al., ICLR 2026, arXiv 2602.08040)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from fire_rl.polar import (
    FIRE_SCALES,
    check_polar_options,
    fire_scale,
    from_kernel_slices,
    kernel_slices,
    polar,
    polar_with_info,
)
from fire_rl.resets.common import LayerReport, ResetReport, layer_report, resolve_layers, sync


def fire_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    *,
    method: str = "newton_schulz",
    steps: int = 10,
    tol: float | None = None,
    scale: str = "muon",
    max_steps: int = 100,
    check_every: int = 2,
    measure: bool = True,
) -> ResetReport:
    """FIRE in place: replace each selected weight by its (scaled) orthogonal polar factor.

    Linear weight W (d_out, d_in): W ← c·polar(W). Conv2d weight (C_out, C_in, k_h, k_w): each (C_out × C_in) slice
    W[:, :, i, j] is orthogonalised on its own (one batched `polar` call of shape (k_h·k_w, C_out, C_in),
    `fire_rl.polar.kernel_slices`, not a reshape to (C_out, C_in·k_h·k_w)), then the whole kernel × c. The scale c is
    `fire_rl.polar.fire_scale(shape, scale)`: ``"muon"`` (the official FIRE code's rule: √(d_out/d_in) for a Linear,
    √(C_out/C_in)/(k_h·k_w) for a conv), ``"isometry"`` (the same for a Linear, √(C_out/C_in)/√(k_h·k_w) for a conv:
    the Linear rule of the unfolded conv; `fire_scale` derives what each rule does to the conv's singular values), or
    ``"none"`` (c = 1). The result is the isometry (up to c) nearest to W, so SFE is as small as any isometry allows.

    What happens to:
        * the changed tensors: only the ``weight`` of each selected layer, overwritten in place (`copy_` under
          `torch.no_grad()`, same tensor object, dtype and device). Biases and every other parameter (LayerNorm, …) are
          untouched, bit for bit.
        * the target network: nothing; the scheduler copies the online result (or only the changed weights, as the
          official DQN code does) or applies FIRE to it.
        * the optimizer state: nothing; the scheduler keeps it (official DQN), zeroes the moments of `changed`, or
          rebuilds the optimizer (official SAC).
        * the RNG: not used; FIRE is a deterministic function of the current weights.

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers(network, ...)`, or a list of qualified layer names; every layer
            must be an `nn.Linear` or `nn.Conv2d`.
        method, steps, tol, max_steps, check_every: how the polar factor is computed (`fire_rl.polar.polar`; default:
            the paper's 10 cubic Newton–Schulz steps; ``method="svd"`` is exact).
        scale: ``"muon"`` (default), ``"isometry"`` or ``"none"`` (`fire_rl.polar.FIRE_SCALES`).
        measure: compute per-layer SFE, relative SFE, DfI before/after (with the same `scale`) and the polar residual
            max|σ − 1| (`polar_with_info`: two SVDs per layer), and time each layer after a CUDA sync. False: a
            sync-free fast path; the report then holds only (launch) times.

    Returns:
        `ResetReport` with method ``"fire"``, one `LayerReport` (op ``"fire"``) per layer, the total seconds, and
        `changed` = the weights it overwrote.

    Raises:
        ValueError: unknown `method` or `scale`, bad `steps`/`tol`/`max_steps`/`check_every`, or bad `layers`
            (`resolve_layers`; normalisation layers are refused: FIRE orthogonalises matrices); all raised before any
            weight changes.
        torch.linalg.LinAlgError: a weight holding NaN/Inf when an SVD is taken (`measure`, ``"svd"``; `polar`).
    """
    check_polar_options(method, steps, tol, max_steps, check_every)
    if scale not in FIRE_SCALES:
        raise ValueError(f"scale must be one of {list(FIRE_SCALES)}, got {scale!r}")
    chosen = resolve_layers(network, layers)
    options = dict(method=method, steps=steps, tol=tol, max_steps=max_steps, check_every=check_every)

    report = ResetReport("fire")
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            weight = module.weight
            before = weight.detach().clone() if measure else None
            slices = kernel_slices(weight)  # (P, d_out, d_in), P = k_h·k_w for a conv, 1 for a Linear
            if measure:
                q, info = polar_with_info(slices, **options)
                residual = info.residual
            else:
                q, residual = polar(slices, **options), math.nan
            c = fire_scale(weight.shape, scale)
            q = from_kernel_slices(q, weight.shape)
            weight.copy_(q if c == 1.0 else q * c)
            if measure:
                sync(weight.device)
                report.layers.append(
                    layer_report(name, "fire", before, weight, time.perf_counter() - t0, residual=residual, scale=scale)
                )
            else:
                report.layers.append(LayerReport(name, "fire", seconds=time.perf_counter() - t0))
            report.changed.append(weight)
    report.seconds = time.perf_counter() - start
    return report
