"""Plasticity injection (Nikishin, Oh, Ostrovski, Lyle, Pascanu, Dabney, Barreto, "Deep Reinforcement Learning with
Plasticity Injection", NeurIPS 2023)."""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from fire_rl.metrics import check_network
from fire_rl.resets.common import (
    MATRIX_KINDS,
    LayerReport,
    ResetReport,
    check_toward,
    fresh_draw,
    layer_kind,
    layer_report,
)
from fire_rl.validation import check_range


class InjectedHead(nn.Module):
    """h(z) = old(z) + (new(z) − new_frozen(z)) (Nikishin et al. 2023, eq. 1).

    `old` (the trained head, possibly itself an `InjectedHead`) and `new_frozen` have ``requires_grad=False``; `new`
    is trainable and starts equal to `new_frozen`, so the output is bit-identical at injection (the difference is
    formed first and is exactly zero). `new` and `new_frozen` have the original head's architecture.
    """

    def __init__(self, old: nn.Module, new: nn.Module, new_frozen: nn.Module) -> None:
        super().__init__()
        self.old = old.requires_grad_(False)
        self.new = new
        self.new_frozen = new_frozen.requires_grad_(False)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.old(*args, **kwargs) + (self.new(*args, **kwargs) - self.new_frozen(*args, **kwargs))


def _split(network: nn.Module, head: str) -> tuple[nn.Module, str, nn.Module]:
    """(parent module, attribute name, head module) for a dotted `head` path."""
    check_network(network)
    parent_name, _, attr = head.rpartition(".") if isinstance(head, str) else ("", "", "")
    parent = dict(network.named_modules()).get(parent_name)
    child = getattr(parent, attr, None) if attr else None
    if not isinstance(child, nn.Module):
        children = [n for n, _ in network.named_children()]
        raise ValueError(f"head {head!r} is not a submodule of {type(network).__name__}; its children are {children}")
    return parent, attr, child


def _template(head_module: nn.Module) -> nn.Module:
    """The original head's architecture: an injected head's trainable `new`, else the head itself."""
    return head_module.new if isinstance(head_module, InjectedHead) else head_module


def injection_depth(network: nn.Module, head: str = "head") -> int:
    """How many times plasticity was injected into `network.<head>` (0 for a plain head); ValueError if `head` is not a
    submodule."""
    _, _, module = _split(network, head)
    depth = 0
    while isinstance(module, InjectedHead):
        module, depth = module.old, depth + 1
    return depth


def _inject(parent: nn.Module, attr: str, old: nn.Module, values: dict[str, torch.Tensor] | None) -> InjectedHead:
    new = copy.deepcopy(_template(old))
    with torch.no_grad():
        for pname, p in new.named_parameters():
            # deepcopy copies .grad too; a stale gradient must not reach the new head's first optimizer step.
            p.grad = None
            if values is not None:
                p.copy_(values[pname])
    injected = InjectedHead(old, new, copy.deepcopy(new))
    setattr(parent, attr, injected)
    return injected


def _theta0_values(theta0: dict[str, torch.Tensor], head: str, template: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for pname, p in template.named_parameters():
        key = f"{head}.{pname}"
        if key not in theta0:
            raise ValueError(f"theta0 has no entry {key!r}: pass the θ₀ captured before any injection")
        if theta0[key].shape != p.shape:
            raise ValueError(f"theta0[{key!r}] has shape {tuple(theta0[key].shape)}, the head {tuple(p.shape)}")
        out[pname] = theta0[key].to(device=p.device, dtype=p.dtype)
    return out


def _fresh_values(network: nn.Module, parent: nn.Module, attr: str, head: str, template: nn.Module) -> dict:
    """A fresh draw of the original head with the network's own init, drawn with a plain copy of the head in place
    (``init_weights`` may expect the original structure)."""
    owners = [n for n, m in template.named_modules() if any(True for _ in m.parameters(recurse=False))]
    current = getattr(parent, attr)
    setattr(parent, attr, copy.deepcopy(template))
    try:
        drawn = fresh_draw(network, [f"{head}.{n}" if n else head for n in owners])
    finally:
        setattr(parent, attr, current)
    return {pname: drawn[f"{head}.{pname}"].to(p) for pname, p in template.named_parameters()}


def inject_plasticity(
    network: nn.Module,
    head: str = "head",
    *,
    theta0: dict[str, torch.Tensor] | None = None,
    toward: str = "init",
    measure: bool = True,
) -> ResetReport:
    """Plasticity injection in place (Nikishin et al. 2023, Sec. 3): ``network.<head>`` becomes an `InjectedHead`
    h_θ(z) + h_θ′(z) − h_θ′₀(z), the trained head frozen and two copies of the original head with identical new
    parameters θ′ added, one trainable. Predictions (bit-identical) and the number of trainable parameters are
    unchanged; the encoder stays shared and trainable. Injecting again nests.

    What happens to:
        * the changed tensors: none changes value; the head module is replaced, the old head's parameters get
          ``requires_grad=False`` and new ones are created (``network.<head>.new``).
        * the target network: nothing; the scheduler injects it too, with its own weights as the frozen old head
          (official FIRE DQN: github.com/isaac7778/FIRE @ c37a0ac, rl/dqn/cleanrl/dqn_atari_resume.py,
          ``PlasticityInjectedQNetwork(old_q_network=target)``), or copies the online network.
        * the optimizer state: the optimizer MUST be rebuilt over the trainable parameters (the new ones are in none);
          the official DQN code builds a fresh Adam.
        * the RNG: ``toward="init"``: θ′ = θ₀ of the head (official), no randomness; ``"random"``: a fresh draw with
          the network's own init (`fresh_draw`, torch's global RNG).

    To resume, `rebuild_injections(fresh, depth, head)` before loading the state dict.

    Args:
        network: the network; `head` names its output module (dotted paths allowed).
        theta0: θ₀ from `capture_theta0(network)` before any injection; required for ``toward="init"``.
        toward: ``"init"`` or ``"random"``.
        measure: one `LayerReport` (op ``"pi"``, seconds NaN) per Linear/Conv2d of the new head: SFE and DfI between
            the weights trainable until now and the new trainable ones. False: only the total time.

    Returns:
        `ResetReport` ``"pi"`` with `changed` empty.

    Raises:
        ValueError: `head` not a submodule; unknown `toward`; ``"init"`` without θ₀ or with θ₀ lacking the head's
            entries or of other shapes; all before the network changes.
    """
    parent, attr, old = _split(network, head)
    check_toward(toward)
    template = _template(old)
    if toward == "random":
        values = _fresh_values(network, parent, attr, head, template)
    elif theta0 is None:
        raise ValueError("toward='init' needs theta0 (capture_theta0(network) right after initialisation)")
    else:
        values = _theta0_values(theta0, head, template)

    start = time.perf_counter()
    injected = _inject(parent, attr, old, values)
    report = ResetReport("pi")
    trained = dict(template.named_modules())
    for name, module in injected.new.named_modules():
        if layer_kind(module) in MATRIX_KINDS:
            qualified = f"{head}.new.{name}" if name else f"{head}.new"
            if measure:
                report.layers.append(layer_report(qualified, "pi", trained[name].weight, module.weight, math.nan))
            else:
                report.layers.append(LayerReport(qualified, "pi"))
    report.seconds = time.perf_counter() - start
    return report


def rebuild_injections(network: nn.Module, depth: int, head: str = "head") -> None:
    """Re-create the structure of `depth` injections on a fresh (or less injected) network, for resuming: the added
    heads are copies of the current trainable head (no RNG); load the saved state dict afterwards, then rebuild the
    optimizer.

    Raises:
        ValueError: `depth` not an int ≥ the network's current `injection_depth`, or `head` not a submodule.
    """
    current = injection_depth(network, head)
    check_range("depth (at least the current injection depth)", depth, current, integer=True)
    parent, attr, _ = _split(network, head)
    for _ in range(depth - current):
        _inject(parent, attr, getattr(parent, attr), None)
