"""The polar-factor kernel shared by FIRE, the plasticity metrics and the tests (one copy, by design).

Pure tensor functions: tensor in, tensor out. Walking modules and choosing layers lives in `fire_rl.resets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def fire_scale(weight_shape: Sequence[int]) -> float:
    """The scale FIRE applies after orthogonalising (official FIRE code, the "muon" rule; DESIGN 3.1).

    Linear weight `(d_out, d_in)`: √(d_out/d_in). Conv2d weight `(C_out, C_in, k_h, k_w)`: √(C_out/C_in)/(k_h·k_w).

    Raises:
        ValueError: a weight that is neither 2-D nor 4-D.
    """
    if len(weight_shape) == 2:
        d_out, d_in = weight_shape
        return math.sqrt(d_out / d_in)
    if len(weight_shape) == 4:
        c_out, c_in, kh, kw = weight_shape
        return math.sqrt(c_out / c_in) / (kh * kw)
    raise ValueError(
        f"FIRE's scale rule is defined for 2-D (Linear) and 4-D (Conv2d) weights, got shape {tuple(weight_shape)}"
    )
