"""FIRE: Frobenius-Isometry Reinitialization (Han et al., ICLR 2026, arXiv 2602.08040; DESIGN 3.1)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from fire_rl.polar import check_polar_options, fire_scale, polar, polar_with_info
from fire_rl.resets.common import LayerReport, ResetReport, layer_report, resolve_layers, sync

SCALES = ("muon", "none")


def _orthogonalise(weight: torch.Tensor, measure: bool, **options) -> tuple[torch.Tensor, float]:
    """Polar factor of a Linear weight, or of every kernel-position slice of a Conv2d weight; (Q, residual)."""
    if weight.dim() == 4:
        c_out, c_in, kh, kw = weight.shape
        # (C_out, C_in, k_h, k_w) -> (k_h·k_w, C_out, C_in): one batched call, each position on its own.
        slices = weight.permute(2, 3, 0, 1).reshape(kh * kw, c_out, c_in)
    else:
        slices = weight
    if measure:
        q, info = polar_with_info(slices, **options)
        residual = info.residual
    else:
        q, residual = polar(slices, **options), math.nan
    if weight.dim() == 4:
        q = q.reshape(kh, kw, c_out, c_in).permute(2, 3, 0, 1)  # back to (C_out, C_in, k_h, k_w)
    return q, residual


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
    """FIRE in place: replace each selected weight by its (scaled) orthogonal polar factor (DESIGN 3.1).

    Linear weight W (d_out, d_in): W ← c·polar(W), c = √(d_out/d_in). Conv2d weight (C_out, C_in, k_h, k_w): each
    (C_out × C_in) slice W[:, :, i, j] is orthogonalised on its own (one batched `polar` call of shape
    (k_h·k_w, C_out, C_in), not a reshape to (C_out, C_in·k_h·k_w)), then the whole kernel × c,
    c = √(C_out/C_in)/(k_h·k_w) (`fire_rl.polar.fire_scale`, the official FIRE code's rule). ``scale="none"``: c = 1,
    the pure polar factor. The result is the isometry (up to c) nearest to W, so SFE is as small as any isometry allows.

    What happens to:
        * the changed tensors: only the ``weight`` of each selected layer, overwritten in place (`copy_` under
          `torch.no_grad()`, same tensor object, dtype and device). Biases and every other parameter (LayerNorm, …) are
          untouched, bit for bit.
        * the target network: nothing; the scheduler copies the online result or applies FIRE to it.
        * the optimizer state: nothing; the scheduler keeps it (official DQN), zeroes the moments of `changed`, or
          rebuilds the optimizer (official SAC).
        * the RNG: not used; FIRE is a deterministic function of the current weights.

    Args:
        network: the network whose layers are reset.
        layers: ``{name: module}`` from `select_layers(network, ...)`, or a list of qualified layer names; every layer
            must be an `nn.Linear` or `nn.Conv2d`.
        method, steps, tol, max_steps, check_every: how the polar factor is computed (`fire_rl.polar.polar`; default:
            the paper's 10 cubic Newton–Schulz steps; ``method="svd"`` is exact).
        scale: ``"muon"`` (default, the official rule above) or ``"none"``.
        measure: compute per-layer SFE, relative SFE, DfI before/after (with the same `scale`) and the polar residual
            max|σ − 1| (`polar_with_info`: two SVDs per layer), and time each layer after a CUDA sync. False: a
            sync-free fast path; the report then holds only (launch) times.

    Returns:
        `ResetReport` with method ``"fire"``, one `LayerReport` (op ``"fire"``) per layer, the total seconds, and
        `changed` = the weights it overwrote.

    Raises:
        ValueError: unknown `method` or `scale`, bad `steps`/`tol`/`max_steps`/`check_every`, or bad `layers`
            (`resolve_layers`); all raised before any weight changes.
        torch.linalg.LinAlgError: a weight holding NaN/Inf when an SVD is taken (`measure`, ``"svd"``; `polar`).
    """
    check_polar_options(method, steps, tol, max_steps, check_every)
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    chosen = resolve_layers(network, layers)
    options = dict(method=method, steps=steps, tol=tol, max_steps=max_steps, check_every=check_every)

    report = ResetReport("fire")
    start = time.perf_counter()
    with torch.no_grad():
        for name, module in chosen.items():
            t0 = time.perf_counter()
            weight = module.weight
            before = weight.detach().clone() if measure else None
            q, residual = _orthogonalise(weight, measure, **options)
            c = fire_scale(weight.shape) if scale == "muon" else 1.0
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
