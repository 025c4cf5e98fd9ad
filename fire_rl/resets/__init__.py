"""Weight-reset methods: FIRE, Shrink & Perturb, full reset, plasticity injection, ReDo, and what they share.

Every method acts in place on an explicit set of layers (`select_layers`), leaves targets and optimizers to the
scheduler, and returns a `ResetReport`. The polar-factor kernel lives in `fire_rl.polar` and is re-exported here.
"""

from fire_rl.polar import PolarInfo, polar, polar_with_info
from fire_rl.resets.common import (
    KINDS,
    NORM_TYPES,
    ROLES,
    LayerReport,
    ResetReport,
    capture_theta0,
    fresh_draw,
    resolve_layers,
    select_layers,
)
from fire_rl.resets.fire import fire_
from fire_rl.resets.full import full_reset_
from fire_rl.resets.injection import (
    InjectedHead,
    inject_plasticity,
    injection_depth,
    rebuild_injections,
)
from fire_rl.resets.redo import NeuronPair, find_neuron_pairs, redo_
from fire_rl.resets.shrink_perturb import shrink_perturb_

__all__ = [
    "KINDS",
    "NORM_TYPES",
    "ROLES",
    "InjectedHead",
    "LayerReport",
    "NeuronPair",
    "PolarInfo",
    "ResetReport",
    "capture_theta0",
    "find_neuron_pairs",
    "fire_",
    "fresh_draw",
    "full_reset_",
    "inject_plasticity",
    "injection_depth",
    "polar",
    "polar_with_info",
    "rebuild_injections",
    "redo_",
    "resolve_layers",
    "select_layers",
    "shrink_perturb_",
]
