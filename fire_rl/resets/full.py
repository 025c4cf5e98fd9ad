"""Full reset of selected layers: Shrink & Perturb with α = 0 (official FIRE code: to θ₀; primacy bias, Nikishin et
al. 2022, "The Primacy Bias in Deep Reinforcement Learning", ICML: to a fresh draw)."""

from __future__ import annotations

import torch
from torch import nn

from fire_rl.resets.common import ResetReport
from fire_rl.resets.shrink_perturb import shrink_perturb_


def full_reset_(
    network: nn.Module,
    layers: dict[str, nn.Module] | list[str],
    theta0: dict[str, torch.Tensor] | None,
    *,
    toward: str = "init",
    measure: bool = True,
) -> ResetReport:
    """Full reset in place: θ ← θ_new (copied exactly) for every parameter of the selected layers; `shrink_perturb_`
    with α = 0, whose Args, targets, optimizer state, RNG and Raises it shares. The official FIRE DQN resets its
    Linears (and, as its full-reset baseline, every layer) to θ₀ this way (github.com/isaac7778/FIRE @ c37a0ac,
    rl/dqn/cleanrl/dqn_atari_resume.py ``apply_full_reset``); its SAC re-initialises every parameter, LayerNorms
    included; the primacy-bias resets use a fresh draw.

    Returns:
        `ResetReport` ``"full"``: one `LayerReport` per layer, `changed` = the parameters it overwrote.
    """
    return shrink_perturb_(network, layers, theta0, alpha=0.0, toward=toward, measure=measure, op="full")
