"""The reset scheduler: when to reset, what to reset, and what happens to targets, optimizers and the temperature.

Both agents use it the same way::

    config = ResetConfig(reset="fire", reset_at=(100_000,))  # or the agent's args.reset_config()
    scheduler = ResetScheduler(config, log_fn=writer.add_scalar, run_dir=run_dir)
    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer)
    scheduler.check()                              # every layer selection resolves now, not at the first reset
    ...
    for global_step in ...:                      # env steps
        ...
        scheduler.step(global_step, update_step)  # one line in the loop; a cheap integer compare between events

A *recipe* (`reset_recipe`) says which operation each layer gets. ``"custom"`` applies the method `reset` to the layers
chosen by `reset_kinds`, `reset_roles` and `reset_names` on every registered network. ``"paper-dqn"`` and
``"paper-sac"`` reproduce the official FIRE recipes (github.com/isaac7778/FIRE @ c37a0ac:
rl/dqn/cleanrl/dqn_atari_resume.py ``apply_fire``, ``apply_srdqn``, ``apply_full_reset`` and the ``pi`` branch;
rl/sac/scale_rl/agents/simba/simba_agent.py ``_orthogonally_project_network``, ``_snp_network`` and
``_init_network``). θ₀ is each network's initial parameters.

=========  =========================================================  ==============================================
reset      paper-dqn (Nature CNN)                                      paper-sac (SimBa actor and both critics)
=========  =========================================================  ==============================================
fire       FIRE on the convs' weights (biases kept); the Linears ←     FIRE on every Linear's weight (biases and
           θ₀. Target: the changed tensors copied (conv weights,       LayerNorms kept); target := online; fresh
           Linears), its own conv biases kept. Adam state kept         optimizers and temperature
sp         convs (weights and biases) shrunk toward θ₀ (α = 0.2);      every parameter, LayerNorms included, shrunk
           the Linears ← θ₀. Target: its own convs shrunk, its         toward θ₀ (α = 0.2); target := online; fresh
           Linears ← θ₀. Adam state kept                               optimizers and temperature
full       every parameter ← θ₀, target too; Adam state kept           every parameter, LayerNorms included, ← θ₀;
                                                                       target := online; fresh optimizers and
                                                                       temperature
pi         plasticity injection on the head (new heads = θ₀); the      injection on each head; target := online;
           target injected with its own weights (its output does not   fresh optimizers and temperature
           change); a fresh Adam over the new parameter set
redo       ReDo on every ReLU layer; Adam moments of recycled weights  the same on actor and critics; every other
           zeroed; target kept (the agent's target updates follow)     optimizer state and the temperature kept
=========  =========================================================  ==============================================

FIRE's scale is the official rule (``fire_scale="muon"``) in both recipes. ``"custom"``: the method on the selected
layers of every network, target := online (ReDo: kept), optimizer state kept (plasticity injection: the optimizer is
pointed at the new parameter set, keeping the moments of the parameters that stay), temperature kept. `reset_target`,
`reset_optimizer` and `reset_temperature` other than ``"recipe"`` override any recipe's choice.
"""

from __future__ import annotations

import fnmatch
import json
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import torch
from torch import nn

from fire_rl.metrics import plasticity_metrics
from fire_rl.resets import (
    KINDS,
    ROLES,
    ResetReport,
    capture_theta0,
    fire_,
    full_reset_,
    inject_plasticity,
    rebuild_injections,
    redo_,
    select_layers,
    shrink_perturb_,
)
from fire_rl.resets.common import MATRIX_KINDS, all_layers, layer_kind
from fire_rl.runtime import nonfinite_parameters

EVENTS_FILE = "resets.jsonl"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{_flag(name)}={value!r}: {why}")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ResetConfig:
    """What the scheduler does, and when; the agents' reset flags (``fire_rl.cli.PlasticityArgs`` inherits it, so a
    field ``reset_at`` is the flag ``--reset-at``). Schedules are in env steps (`global_step`), never gradient updates.

    Raises (at construction, `validate`):
        ValueError: a value out of range or not finite, an unknown choice, or an inconsistent combination; the message
            names the flag, the value and what is allowed (``--reset-kinds=('lstm',): unknown value(s) ...``).
    """

    reset: Literal["none", "fire", "sp", "full", "pi", "redo"] = "none"
    """reset method: none, fire (FIRE), sp (Shrink & Perturb), full (full reset), pi (plasticity injection), redo
    (ReDo: recycle dormant neurons; give --reset-every)"""
    reset_recipe: Literal["paper-dqn", "paper-sac", "custom"] = "custom"
    """which layers get which operation: an official FIRE recipe (the agent's default), or the method on the layers
    chosen by --reset-kinds/--reset-roles/--reset-names"""
    reset_at: tuple[int, ...] = ()
    """env steps at which to reset (default when a method is set and no schedule is given: the run's midpoint)"""
    reset_at_start: bool = False
    """with --branch-from: reset once at the branch point, before the first env step"""
    reset_every: int = 0
    """reset every this many env steps (0: off)"""
    reset_start: int = 0
    """no reset before this env step"""
    reset_stop: int | None = None
    """no reset after this env step (None: never stop)"""
    reset_kinds: tuple[str, ...] = ()
    """custom recipe: layer kinds (linear, conv, norm; norm: sp and full only; empty: linear and conv)"""
    reset_roles: tuple[str, ...] = ()
    """custom recipe: layer roles (encoder, head)"""
    reset_names: tuple[str, ...] = ()
    """custom recipe: fnmatch patterns of layer names"""
    reset_target: Literal["recipe", "copy", "changed", "same", "keep"] = "recipe"
    """target networks after a reset: copy the online network; changed: copy only the tensors the reset changed;
    same: the same operation on the target's own weights; keep; recipe: paper-dqn changed for fire, same otherwise;
    paper-sac and custom copy; redo keep"""
    reset_optimizer: Literal["recipe", "keep", "reset-changed", "rebuild"] = "recipe"
    """optimizer state after a reset (recipe: paper-dqn keeps Adam's state, pi a fresh Adam; paper-sac rebuilds,
    redo keeps)"""
    reset_temperature: Literal["recipe", "keep", "reset"] = "recipe"
    """SAC's temperature after a reset (recipe: paper-sac resets it, except for redo)"""
    fire_scale: Literal["muon", "isometry", "none"] = "muon"
    """FIRE's scale after orthogonalising: muon (the official rule, sqrt(d_out/d_in), convs also / (k_h k_w)),
    isometry (convs / sqrt(k_h k_w) instead, so the flattened conv is an isometry up to sqrt(d_out/d_in)), or none"""
    polar_method: Literal["newton_schulz", "polar_express", "svd"] = "newton_schulz"
    """FIRE's polar factor: cubic Newton-Schulz (the paper), Polar Express (with --ns-tol), or an exact SVD"""
    ns_steps: int = 10
    """Newton-Schulz iterations"""
    ns_tol: float | None = None
    """iterate Newton-Schulz until max|sigma-1| <= ns_tol instead"""
    sp_alpha: float = 0.2
    """Shrink & Perturb: theta <- alpha*theta + (1-alpha)*theta_0"""
    reset_toward: Literal["init", "random"] = "init"
    """S&P / full reset / injection toward theta_0 or a fresh draw"""
    redo_tau: float = 0.1
    """ReDo's dormancy threshold tau"""

    def __post_init__(self) -> None:
        self.reset_at = tuple(self.reset_at)
        self.reset_kinds, self.reset_roles = tuple(self.reset_kinds), tuple(self.reset_roles)
        self.reset_names = tuple(self.reset_names)
        self.validate()
        self.reset_at = tuple(int(s) for s in self.reset_at)

    def validate(self, total_steps: int | None = None) -> None:
        """Check every field (done at construction) and, given the run's length `total_steps` (env steps), that no
        explicit reset step lies beyond it. `reset_at_start` is not checked: the scheduler ignores it
        (fire_rl.run adds the branch point to `reset_at`).

        Raises:
            ValueError: the message names the flag, the value and what is allowed.
        """
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise _bad(name, getattr(self, name), f"not allowed; choose one of {list(allowed)}")
        if not all(_is_int(s) and s > 0 for s in self.reset_at):
            raise _bad("reset_at", list(self.reset_at), "every reset step must be a positive int (env steps)")
        if not _is_int(self.reset_every) or self.reset_every < 0:
            raise _bad("reset_every", self.reset_every, "must be an int >= 0 env steps (0 turns periodic resets off)")
        if not _is_int(self.reset_start) or self.reset_start < 0:
            raise _bad("reset_start", self.reset_start, "must be an int >= 0 env steps")
        if self.reset_stop is not None and (not _is_int(self.reset_stop) or self.reset_stop < self.reset_start):
            raise _bad("reset_stop", self.reset_stop, f"must be None or an int >= --reset-start={self.reset_start}")
        if not _is_int(self.ns_steps) or self.ns_steps < 1:
            raise _bad("ns_steps", self.ns_steps, "must be an int >= 1")
        if self.ns_tol is not None and not (_is_real(self.ns_tol) and 0 < self.ns_tol < 1):
            raise _bad("ns_tol", self.ns_tol, "must be None or a finite float in (0, 1) (a bound on max|sigma - 1|)")
        if not (_is_real(self.sp_alpha) and 0.0 <= self.sp_alpha <= 1.0):
            raise _bad("sp_alpha", self.sp_alpha, "must be a finite float in [0, 1] (share of trained weights kept)")
        if not (_is_real(self.redo_tau) and self.redo_tau >= 0):
            raise _bad("redo_tau", self.redo_tau, "must be a finite float >= 0 (0.1 in ReDo's benchmarks)")
        for name, allowed in (("reset_kinds", tuple(KINDS)), ("reset_roles", ROLES)):
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if bad:
                raise _bad(name, values, f"unknown value(s) {bad}; allowed: {list(allowed)}")
        if not all(isinstance(p, str) and p for p in self.reset_names):
            raise _bad("reset_names", self.reset_names, "every pattern must be a non-empty string")
        selection = [n for n in ("reset_kinds", "reset_roles", "reset_names") if getattr(self, n)]
        if selection and self.reset != "none":
            flags = "/".join(_flag(n) for n in selection)
            if self.reset_recipe != "custom":
                raise _bad(
                    "reset_recipe", self.reset_recipe, f"{flags} choose layers for the custom recipe only; give custom"
                )
            if self.reset in ("pi", "redo"):
                what = "injects into each network's head" if self.reset == "pi" else "recycles every ReLU layer"
                raise _bad("reset", self.reset, f"{flags} do not apply: it {what}")
        if self.reset == "fire" and "norm" in self.reset_kinds:
            raise _bad(
                "reset_kinds", self.reset_kinds, "FIRE orthogonalises matrices; kind norm applies to sp and full only"
            )
        if self.reset != "none" and not self.reset_at and self.reset_every == 0:
            raise _bad("reset", self.reset, "has no schedule: give --reset-at (env steps) or --reset-every")
        if total_steps is not None and self.enabled:
            late = [s for s in self.reset_at if s > total_steps]
            if late:
                raise _bad(
                    "reset_at", list(self.reset_at), f"{late} lies beyond total_timesteps={total_steps} (env steps)"
                )

    @property
    def enabled(self) -> bool:
        """Whether any reset is configured (method other than none)."""
        return self.reset != "none"

    def target_policy(self) -> str:
        """`reset_target`, or the recipe's choice: paper-dqn copies what FIRE changed into the target and applies S&P,
        full resets and injection to the target's own weights; otherwise copy. ReDo keeps the target (the agent's
        target updates follow the online network)."""
        if self.reset_target != "recipe":
            return self.reset_target
        if self.reset == "redo":
            return "keep"
        if self.reset_recipe == "paper-dqn":
            return "changed" if self.reset == "fire" else "same"
        return "copy"

    def optimizer_policy(self) -> str:
        """`reset_optimizer`, or the recipe's choice: rebuild for paper-sac (ReDo: keep, it zeroes the moments of the
        weights it recycles itself) and for paper-dqn's plasticity injection; keep otherwise."""
        if self.reset_optimizer != "recipe":
            return self.reset_optimizer
        if self.reset == "redo":
            return "keep"
        if self.reset_recipe == "paper-sac" or (self.reset_recipe == "paper-dqn" and self.reset == "pi"):
            return "rebuild"
        return "keep"

    def temperature_policy(self) -> str:
        """`reset_temperature`, or the recipe's choice: reset for paper-sac (except ReDo), keep otherwise."""
        if self.reset_temperature != "recipe":
            return self.reset_temperature
        return "reset" if self.reset_recipe == "paper-sac" and self.reset != "redo" else "keep"


# The allowed values of every choice field, read from its Literal annotation (declared once, above).
CHOICES: dict[str, tuple[str, ...]] = {
    name: get_args(hint) for name, hint in get_type_hints(ResetConfig).items() if get_origin(hint) is Literal
}


@dataclass
class _Entry:
    name: str
    online: nn.Module
    target: nn.Module | None
    optimizer: torch.optim.Optimizer | None
    theta0: dict[str, torch.Tensor]
    probe: Callable[[], tuple] | None
    injections: int = 0


@dataclass
class _Temperature:
    log_alpha: torch.Tensor
    init_value: torch.Tensor
    optimizer: torch.optim.Optimizer | None


@dataclass
class ResetEvent:
    """One reset as logged: env step, gradient update, the points it covered, and per-network scalars."""

    global_step: int
    update_step: int
    method: str
    points: list[int]
    seconds: float
    scalars: dict[str, float] = field(default_factory=dict)


def _rng_state(network: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """torch's global CPU RNG state and, for a network on a CUDA device, that device's (what `fresh_draw` uses)."""
    device = next(network.parameters()).device
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(network: nn.Module, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], next(network.parameters()).device)


def _trainable(modules: list[nn.Module]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for m in modules:
        for p in m.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


def zero_optimizer_state_(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> int:
    """Zero every state tensor (moments, step counts) the optimizer holds for `params`; returns how many it touched."""
    n = 0
    with torch.no_grad():
        for p in params:
            state = optimizer.state.get(p)
            if not state:
                continue
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()
            n += 1
    return n


def rebuild_optimizer_(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], keep_state: bool) -> None:
    """Point `optimizer` at exactly `params`, in place (the agent's reference stays valid).

    With `keep_state`, parameters that stay keep their moments and parameters that leave are dropped; otherwise every
    state is cleared (a fresh optimizer with the same hyper-parameters).

    Raises:
        ValueError: the optimizer has several parameter groups (which group a new parameter joins is ambiguous).
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"cannot rebuild an optimizer with {len(optimizer.param_groups)} parameter groups; "
            "give each network's optimizer one group"
        )
    keep = {p: optimizer.state[p] for p in params if keep_state and p in optimizer.state}
    optimizer.state.clear()
    optimizer.state.update(keep)
    optimizer.param_groups[0]["params"] = list(params)


class ResetScheduler:
    """Applies the configured reset to the registered networks when the env step crosses a scheduled point.

    Args:
        config: the `ResetConfig`.
        log_fn: ``log_fn(tag, value, global_step)`` for scalars (e.g. a tensorboard ``SummaryWriter.add_scalar``); the
            scheduler logs under ``reset/``. None: no scalar logging.
        run_dir: where the JSON-lines event log ``resets.jsonl`` goes (one object per event). None: no file.
        total_steps: the run's length in env steps, to validate `config.reset_at`.

    Raises:
        ValueError: an invalid config, or a reset step beyond `total_steps`.
    """

    def __init__(
        self,
        config: ResetConfig,
        log_fn: Callable[[str, float, int], Any] | None = None,
        run_dir: str | Path | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.config = config
        if total_steps is not None:
            config.validate(total_steps)
        self.log_fn = log_fn
        self.events_path = Path(run_dir) / EVENTS_FILE if run_dir is not None else None
        self.entries: dict[str, _Entry] = {}
        self.temperature: _Temperature | None = None
        self.events: list[ResetEvent] = []
        self.last_step = 0
        self._next = self._next_point()

    # ---- registration -------------------------------------------------------------------------------------------
    def add_network(
        self,
        name: str,
        online: nn.Module,
        *,
        target: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        theta0: dict[str, torch.Tensor] | None = None,
        probe: Callable[[], tuple] | None = None,
    ) -> None:
        """Register a network. Networks sharing one optimizer (SAC's twin critics) pass the same optimizer.

        Args:
            name: a short name used in log tags (``"q"``, ``"actor"``, ``"qf1"``).
            online: the trained network; its top-level children ``encoder`` and ``head`` give the layer roles.
            target: its target network (same architecture), or None.
            optimizer: the optimizer that holds its parameters (one parameter group), or None.
            theta0: θ₀ (`capture_theta0`); None captures it now, so register right after initialisation.
            probe: ``probe() -> inputs | None`` giving a batch to measure the dormant ratio, srank and output change
                on before and after a reset (``online(*inputs)`` must work); None, or a probe returning None (no data
                yet), skips those metrics.
        """
        if name in self.entries:
            raise ValueError(f"network name {name!r} is already registered")
        self.entries[name] = _Entry(name, online, target, optimizer, theta0 or capture_theta0(online), probe)

    def add_temperature(self, log_alpha: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Register SAC's log-temperature; with the ``reset`` temperature policy it returns to its current value
        (the initial one, if registered at start) and its optimizer state is cleared at every reset."""
        self.temperature = _Temperature(log_alpha, log_alpha.detach().clone(), optimizer)

    def theta0(self, name: str) -> dict[str, torch.Tensor]:
        """θ₀ of the network registered as `name` (``{parameter name: tensor}``)."""
        return self.entries[name].theta0

    def check(self) -> None:
        """Resolve, now, everything a reset will need from the registered networks, so that a reset that cannot run is
        refused at start-up and not at its scheduled step. Call it right after the last `add_network`.

        Checks, for every registered network: every value of `reset_kinds`, `reset_roles` and `reset_names` (custom
        recipe) selects at least one of its layers and together they select some; the paper recipes find the layers
        they act on; ReDo finds an `nn.ReLU` to recycle; plasticity injection finds a ``head`` child; a target network
        has the online network's parameter names and shapes; an optimizer the reset rebuilds has one parameter group.
        Nothing changes.

        Raises:
            ValueError: a check failed; the message names the flag and value (``--reset-kinds lstm``,
                ``--reset-names 'nonexistent.*'``), the network and its layers. Also when a method is set and no
                network is registered.
        """
        cfg = self.config
        if not cfg.enabled:
            return
        if not self.entries:
            raise ValueError(f"--reset {cfg.reset}: no network is registered with the reset scheduler")
        rebuilds = cfg.optimizer_policy() == "rebuild" or cfg.reset == "pi"
        for entry in self.entries.values():
            net, label = entry.online, f"network {entry.name!r} ({type(entry.online).__name__})"
            layers = ", ".join(f"{n} ({layer_kind(m)})" for n, m in all_layers(net, tuple(KINDS)).items()) or "none"
            if cfg.reset_recipe == "custom" and cfg.reset not in ("pi", "redo"):
                self._check_selection(entry, label, layers)
            try:
                self._ops(entry)
            except ValueError as err:
                raise ValueError(f"--reset {cfg.reset} --reset-recipe {cfg.reset_recipe}: {label}: {err}") from err
            if cfg.reset == "redo" and not any(isinstance(m, nn.ReLU) for m in net.modules()):
                raise ValueError(
                    f"--reset redo: {label} has no nn.ReLU activation to recycle (a SimBa network with no residual "
                    "block has none)"
                )
            if cfg.reset == "pi" and not isinstance(getattr(net, "head", None), nn.Module):
                raise ValueError(f"--reset pi: {label} has no top-level child `head` to inject into")
            if entry.target is not None:
                ours = {n: tuple(p.shape) for n, p in net.named_parameters()}
                theirs = {n: tuple(p.shape) for n, p in entry.target.named_parameters()}
                if ours != theirs:
                    diff = sorted(set(ours.items()) ^ set(theirs.items()))
                    raise ValueError(f"the target of {label} differs from it in parameters {diff[:4]}")
            if rebuilds and entry.optimizer is not None and len(entry.optimizer.param_groups) != 1:
                raise ValueError(
                    f"--reset {cfg.reset}: the optimizer of {label} has {len(entry.optimizer.param_groups)} "
                    "parameter groups; a reset that rebuilds it needs one"
                )

    def _check_selection(self, entry: _Entry, label: str, layers: str) -> None:
        """The custom recipe's `reset_kinds`, `reset_roles` and `reset_names` on one network, each value on its own,
        then together."""
        cfg, net = self.config, entry.online
        for kind in cfg.reset_kinds:
            if not all_layers(net, (kind,)):
                raise ValueError(f"--reset-kinds {kind} selects no layer of {label}; its layers: {layers}")
        for role in cfg.reset_roles:
            child = getattr(net, role, None)
            if not isinstance(child, nn.Module) or not all_layers(child, tuple(KINDS)):
                raise ValueError(
                    f"--reset-roles {role} selects no layer of {label}: it has no top-level child {role!r} holding "
                    f"layers; its layers: {layers}"
                )
        every = list(all_layers(net, tuple(KINDS)))
        for pattern in cfg.reset_names:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in every):
                raise ValueError(f"--reset-names {pattern!r} matches no layer of {label}; its layers: {layers}")
        try:
            select_layers(
                net, kinds=cfg.reset_kinds or None, roles=cfg.reset_roles or None, names=cfg.reset_names or None
            )
        except ValueError as err:
            given = " ".join(
                f"{_flag(n)} {' '.join(getattr(cfg, n))}"
                for n in ("reset_kinds", "reset_roles", "reset_names")
                if getattr(cfg, n)
            )
            raise ValueError(
                f"{given.strip() or 'the default selection'} together select no layer of {label}; its layers: {layers}"
            ) from err

    # ---- schedule -----------------------------------------------------------------------------------------------
    def _next_point(self) -> float:
        """The first scheduled env step after `last_step`, or inf."""
        cfg = self.config
        if not cfg.enabled:
            return math.inf
        cands = [s for s in cfg.reset_at if s > self.last_step and s >= cfg.reset_start]
        if cfg.reset_every > 0:
            first = max(self.last_step + 1, cfg.reset_start)
            cands.append(-(-first // cfg.reset_every) * cfg.reset_every)
        return min((s for s in cands if cfg.reset_stop is None or s <= cfg.reset_stop), default=math.inf)

    def _crossed(self, global_step: int) -> list[int]:
        pts = []
        while self._next <= global_step:
            pts.append(int(self._next))
            self.last_step = int(self._next)
            self._next = self._next_point()
        return pts

    def due(self, global_step: int) -> bool:
        """Whether `step(global_step, ...)` would apply a reset now (`global_step` in env steps). A loop that trains
        in the background waits for its updates first (agents/dqn_atari.py --overlap)."""
        return global_step >= self._next

    def step(self, global_step: int, update_step: int) -> ResetEvent | None:
        """Call once per loop iteration with the current env step count. Applies one reset if `global_step` crossed a
        scheduled point since the last call (several points crossed by one jump are covered by one reset and all
        recorded), else returns None at the cost of one integer compare.
        """
        if global_step < self._next:
            return None
        points = self._crossed(global_step)
        self.last_step = global_step
        return self.apply(global_step, update_step, points)

    # ---- the reset itself ---------------------------------------------------------------------------------------
    def _ops(self, entry: _Entry) -> list[tuple[str, dict[str, nn.Module] | None]]:
        """[(op, layers)] for one network under the configured recipe; op in fire, sp, full, pi, redo (layers None for
        pi and redo, which find their layers themselves).

        Raises:
            ValueError: a selection that matches no layer of the network (`select_layers`).
        """
        cfg, net = self.config, entry.online
        if cfg.reset == "pi":
            return [("pi", None)]
        if cfg.reset == "redo":  # ReDo finds its (producer, ReLU, consumer) triples itself
            return [("redo", None)]
        every_parameter = tuple(KINDS)  # Linear, Conv2d and normalisation layers: all parameters of our networks
        if cfg.reset_recipe == "paper-dqn":
            if cfg.reset == "full":
                return [("full", select_layers(net, kinds=every_parameter))]
            convs = select_layers(net, kinds=["conv"])
            linears = select_layers(net, kinds=["linear"])
            return [(cfg.reset, convs), ("full", linears)]
        if cfg.reset_recipe == "paper-sac":
            # Official SAC: FIRE maps every Dense kernel; S&P and the full reset act on every parameter.
            return [(cfg.reset, select_layers(net, kinds=MATRIX_KINDS if cfg.reset == "fire" else every_parameter))]
        layers = select_layers(
            net, kinds=cfg.reset_kinds or None, roles=cfg.reset_roles or None, names=cfg.reset_names or None
        )
        return [(cfg.reset, layers)]

    def _run_op(self, op: str, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
        return OPERATIONS[op](self.config, entry, net, layers, inputs)

    @torch.no_grad()
    def _probe_metrics(self, entry: _Entry, inputs: tuple | None, when: str, out: dict[str, float]) -> torch.Tensor:
        """Plasticity metrics of `entry` on `inputs`, into `out`; returns the network's flattened outputs."""
        if inputs is None:
            return torch.empty(0)
        metrics = plasticity_metrics(entry.online, inputs, dfi_scale=self.config.fire_scale)
        for key in ("dormant", "srank", "dfi_normalized_mean", "feature_norm", "weight_norm"):
            out[f"{entry.name}/{key}_{when}"] = metrics[key]
        was_training = entry.online.training
        entry.online.eval()
        outputs = entry.online(*inputs)
        entry.online.train(was_training)
        outputs = (outputs,) if torch.is_tensor(outputs) else outputs
        return torch.cat([o.reshape(len(o), -1) for o in outputs], dim=1)

    def apply(self, global_step: int, update_step: int, points: list[int] | None = None) -> ResetEvent:
        """Apply the configured reset now, whatever the schedule says (the scheduler calls this; tests may too).

        Raises:
            FloatingPointError: a NaN or Inf in a network before the reset, or produced by it; the message names the
                network and parameter.
        """
        cfg = self.config
        t0 = time.perf_counter()
        scalars: dict[str, float] = {}
        target_policy, opt_policy = cfg.target_policy(), cfg.optimizer_policy()
        changed_by_opt: dict[int, list[nn.Parameter]] = {}
        injected_opts: set[int] = set()
        for entry in self.entries.values():
            self._check_finite(entry, "before")
            inputs = entry.probe() if entry.probe is not None else None
            outputs_before = self._probe_metrics(entry, inputs, "before", scalars)
            for op, layers in self._ops(entry):
                if op == "pi":
                    report = self._inject(entry)
                    if entry.optimizer is not None:
                        injected_opts.add(id(entry.optimizer))
                elif op == "redo" and inputs is None:
                    report = ResetReport("redo")  # no data to score neurons on yet
                else:
                    rng = _rng_state(entry.online)
                    report = self._run_op(op, entry, entry.online, layers, inputs)
                    if entry.target is not None and target_policy == "same":
                        # The same fresh draw as the online network's (toward="random"): replay the RNG.
                        _set_rng_state(entry.online, rng)
                        target_layers = layers_of(entry.target, layers) if layers is not None else None
                        self._run_op(op, entry, entry.target, target_layers, inputs)
                    elif entry.target is not None and target_policy == "changed":
                        copy_changed_(entry.online, entry.target, report.changed)
                for key, value in report.summary().items():
                    if key == "seconds":
                        scalars[f"{entry.name}/{op}_seconds"] = value
                    else:  # per-layer keys are unique (a layer gets one operation); totals add up over operations
                        scalars[f"{entry.name}/{key}"] = scalars.get(f"{entry.name}/{key}", 0.0) + value
                if entry.optimizer is not None:
                    changed_by_opt.setdefault(id(entry.optimizer), []).extend(report.changed)
            if entry.target is not None and target_policy == "copy":
                entry.target.load_state_dict(entry.online.state_dict())
            self._check_finite(entry, "after")
            outputs_after = self._probe_metrics(entry, inputs, "after", scalars)
            if inputs is not None:
                # Output change on the probe batch: ~0 for plasticity injection (function-preserving), large for resets.
                scalars[f"{entry.name}/output_change"] = float((outputs_after - outputs_before).abs().max())
        self._handle_optimizers(opt_policy, changed_by_opt, injected_opts)
        if self.temperature is not None and cfg.temperature_policy() == "reset":
            with torch.no_grad():
                self.temperature.log_alpha.copy_(self.temperature.init_value)
            if self.temperature.optimizer is not None:
                self.temperature.optimizer.state.clear()
        seconds = time.perf_counter() - t0
        event = ResetEvent(global_step, update_step, cfg.reset, list(points or [global_step]), seconds, scalars)
        self.events.append(event)
        self._log(event)
        return event

    def _inject(self, entry: _Entry) -> ResetReport:
        cfg = self.config
        report = inject_plasticity(entry.online, "head", theta0=entry.theta0, toward=cfg.reset_toward)
        if entry.target is not None:
            # The target gets the same (function-preserving) structure so that copies and EMAs line up parameter by
            # parameter, with its own weights as the frozen old head (official DQN); the "copy" policy then
            # overwrites it with the online network.
            inject_plasticity(entry.target, "head", theta0=entry.theta0, toward="init", measure=False)
        entry.injections += 1
        return report

    def _handle_optimizers(self, policy: str, changed: dict[int, list[nn.Parameter]], injected: set[int]) -> None:
        by_opt: dict[int, tuple[torch.optim.Optimizer, list[nn.Module]]] = {}
        for entry in self.entries.values():
            if entry.optimizer is not None:
                by_opt.setdefault(id(entry.optimizer), (entry.optimizer, []))[1].append(entry.online)
        for key, (opt, nets) in by_opt.items():
            if policy == "rebuild":
                rebuild_optimizer_(opt, _trainable(nets), keep_state=False)
            elif key in injected:
                rebuild_optimizer_(opt, _trainable(nets), keep_state=True)
            if policy == "reset-changed":
                zero_optimizer_state_(opt, changed.get(key, []))

    def _check_finite(self, entry: _Entry, when: str) -> None:
        bad = nonfinite_parameters({entry.name: entry.online})
        if bad:
            what = "the network already held" if when == "before" else f"the {self.config.reset} reset produced"
            raise FloatingPointError(f"{what} NaN/Inf in parameter(s) {bad} ({when} the reset)")

    def _log(self, event: ResetEvent) -> None:
        if self.log_fn is not None:
            self.log_fn("reset/event", 1.0, event.global_step)
            self.log_fn("reset/update_step", float(event.update_step), event.global_step)
            self.log_fn("reset/seconds", event.seconds, event.global_step)
            for key, value in event.scalars.items():
                self.log_fn(f"reset/{key}", value, event.global_step)
        if self.events_path is not None:
            self.events_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.events_path, "a") as f:
                f.write(json.dumps(asdict(event)) + "\n")
                f.flush()
                os.fsync(f.fileno())

    # ---- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Schedule position, past events, θ₀ of every network, injection counts and the temperature's initial value."""
        return {
            "config": asdict(self.config),
            "last_step": self.last_step,
            "events": [asdict(e) for e in self.events],
            "theta0": {n: e.theta0 for n, e in self.entries.items()},
            "injections": {n: e.injections for n, e in self.entries.items()},
            "temperature_init": None if self.temperature is None else self.temperature.init_value,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the schedule so a resumed run neither repeats nor skips an event.

        Call it after registering the networks and BEFORE loading their weights and optimizer states: it re-creates the
        structure plasticity injections added (so the checkpointed state dicts fit), restores θ₀, and rewrites
        ``resets.jsonl`` to exactly the checkpointed events (events logged after the checkpoint by a killed run are
        superseded).

        Raises:
            ValueError: the checkpoint's networks differ from the registered ones.
        """
        if set(state["theta0"]) != set(self.entries):
            raise ValueError(
                f"checkpoint has reset state for networks {sorted(state['theta0'])}, not {sorted(self.entries)}"
            )
        for name, entry in self.entries.items():
            depth = state["injections"][name]
            if depth != entry.injections:
                # The structure only: the values come with the network's and target's state dicts (no RNG draws).
                rebuild_injections(entry.online, depth, "head")
                if entry.target is not None:
                    rebuild_injections(entry.target, depth, "head")
                entry.injections = depth
            device = next(entry.online.parameters()).device
            entry.theta0 = {n: t.to(device) for n, t in state["theta0"][name].items()}
        if self.temperature is not None and state["temperature_init"] is not None:
            self.temperature.init_value = state["temperature_init"].to(self.temperature.log_alpha.device)
        self.last_step = int(state["last_step"])
        self.events = [ResetEvent(**e) for e in state["events"]]
        self._next = self._next_point()
        if self.events_path is not None:
            self.events_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.events_path.with_suffix(".jsonl.tmp")
            with open(tmp, "w") as f:
                for e in self.events:
                    f.write(json.dumps(asdict(e)) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.events_path)
        for entry in self.entries.values():
            if entry.injections and entry.optimizer is not None:
                nets = [e.online for e in self.entries.values() if e.optimizer is entry.optimizer]
                rebuild_optimizer_(entry.optimizer, _trainable(nets), keep_state=False)


def _fire(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    return fire_(net, layers, method=cfg.polar_method, steps=cfg.ns_steps, tol=cfg.ns_tol, scale=cfg.fire_scale)


def _shrink_perturb(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    return shrink_perturb_(net, layers, entry.theta0, alpha=cfg.sp_alpha, toward=cfg.reset_toward)


def _full(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    return full_reset_(net, layers, entry.theta0, toward=cfg.reset_toward)


def _redo(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    optimizer = entry.optimizer if net is entry.online else None
    return redo_(net, inputs, tau=cfg.redo_tau, optimizer=optimizer)


# The in-place operations the recipes use, by name: adding a method is its module in fire_rl/resets/ plus one line
# here (and its name in the Literal of `ResetConfig.reset`). Plasticity injection is structural and handled by
# `ResetScheduler._inject`.
OPERATIONS: dict[str, Callable[..., ResetReport]] = {"fire": _fire, "sp": _shrink_perturb, "full": _full, "redo": _redo}


def layers_of(network: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The layers of `network` with the same qualified names as `layers` (e.g. a target network's twins)."""
    modules = dict(network.named_modules())
    return {name: modules[name] for name in layers}


@torch.no_grad()
def copy_changed_(online: nn.Module, target: nn.Module, changed: list[nn.Parameter]) -> None:
    """Copy the parameters of `online` listed in `changed` into the parameters of `target` with the same names; every
    other target parameter keeps its value (the official DQN FIRE: target conv weights := the FIRE result, target
    conv biases kept)."""
    names = {id(p): n for n, p in online.named_parameters()}
    twins = dict(target.named_parameters())
    for p in changed:
        twins[names[id(p)]].copy_(p)
