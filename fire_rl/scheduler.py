"""The reset scheduler: when to reset, what to reset, and what happens to targets, optimizers and the temperature.

Both agents use it the same way::

    scheduler = ResetScheduler(args.reset_config(), log_fn=writer.add_scalar, run_dir=run_dir)
    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer)
    scheduler.check()                             # every layer selection resolves now, not at the first reset
    for global_step in ...:                       # env steps
        scheduler.step(global_step, update_step)  # an integer compare between events

A *recipe* says which operation each layer gets: ``"custom"`` applies the method to the layers chosen by
`reset_kinds`, `reset_roles` and `reset_names` on every network; ``"paper-dqn"`` and ``"paper-sac"`` reproduce the
official FIRE recipes (github.com/isaac7778/FIRE @ c37a0ac: rl/dqn/cleanrl/dqn_atari_resume.py ``apply_fire``,
``apply_srdqn``, ``apply_full_reset`` and the ``pi`` branch; rl/sac/scale_rl/agents/simba/simba_agent.py
``_orthogonally_project_network``, ``_snp_network``, ``_init_network``), tabulated in README.md, "The reset methods".
θ₀ is each network's initial parameters. `reset_target`, `reset_optimizer` and `reset_temperature` other than
``"recipe"`` override the recipe's choice (`ResetConfig.target_policy` and siblings).
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin, get_type_hints

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
from fire_rl.resets.common import MATRIX_KINDS, all_layers, available
from fire_rl.runtime import nonfinite_parameters, zero_optimizer_state_
from fire_rl.validation import MAX_STEPS, Flags, In, describe, flag, range_error

EVENTS_FILE = "resets.jsonl"


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{flag(name)}={value!r}: {why}")


@dataclass
class ResetConfig(Flags):
    """What the scheduler does, and when; the agents' reset flags (``fire_rl.cli.PlasticityArgs`` inherits it, so the
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
    reset_every: Annotated[int, In(0, MAX_STEPS)] = 0
    """reset every this many env steps (0: off)"""
    reset_start: Annotated[int, In(0, MAX_STEPS)] = 0
    """no reset before this env step"""
    reset_stop: Annotated[int | None, In(0, MAX_STEPS)] = None
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
    ns_steps: Annotated[int, In(1, 10_000)] = 10
    """Newton-Schulz iterations"""
    ns_tol: Annotated[float | None, In(0, 1, "()")] = None
    """iterate Newton-Schulz until max|sigma-1| <= ns_tol instead"""
    sp_alpha: Annotated[float, In(0, 1)] = 0.2
    """Shrink & Perturb: theta <- alpha*theta + (1-alpha)*theta_0"""
    reset_toward: Literal["init", "random"] = "init"
    """S&P / full reset / injection toward theta_0 or a fresh draw"""
    redo_tau: Annotated[float, In(0)] = 0.1
    """ReDo's dormancy threshold tau"""

    def __post_init__(self) -> None:
        for name in ("reset_at", "reset_kinds", "reset_roles", "reset_names"):
            setattr(self, name, tuple(getattr(self, name)))
        self.validate()
        self.reset_at = tuple(int(s) for s in self.reset_at)

    def validate(self, total_steps: int | None = None) -> None:
        """Check every field (done at construction) and, given the run's length `total_steps` (env steps), that no
        explicit reset step lies beyond it. `reset_at_start` is not checked: fire_rl.run adds the branch point to
        `reset_at`.

        Raises:
            ValueError: the message names the flag, the value and what is allowed.
        """
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise _bad(name, getattr(self, name), f"not allowed; choose one of {list(allowed)}")
        if any(range_error(s, 1, MAX_STEPS, integer=True) for s in self.reset_at):
            raise _bad(
                "reset_at",
                list(self.reset_at),
                f"every reset step must be {describe(1, MAX_STEPS, integer=True)} (env steps)",
            )
        self.check_ranges()
        if self.reset_stop is not None and self.reset_stop < self.reset_start:
            raise _bad("reset_stop", self.reset_stop, f"must be >= --reset-start={self.reset_start}")
        for name, allowed in (("reset_kinds", tuple(KINDS)), ("reset_roles", ROLES)):
            bad = [v for v in getattr(self, name) if v not in allowed]
            if bad:
                raise _bad(name, getattr(self, name), f"unknown value(s) {bad}; allowed: {list(allowed)}")
        if not all(isinstance(p, str) and p for p in self.reset_names):
            raise _bad("reset_names", self.reset_names, "every pattern must be a non-empty string")
        selection = [n for n in ("reset_kinds", "reset_roles", "reset_names") if getattr(self, n)]
        if selection and self.reset != "none":
            flags = "/".join(flag(n) for n in selection)
            if self.reset_recipe != "custom":
                raise _bad("reset_recipe", self.reset_recipe, f"{flags} choose layers for the custom recipe only")
            if self.reset in ("pi", "redo"):
                what = "injects into each network's head" if self.reset == "pi" else "recycles every ReLU layer"
                raise _bad("reset", self.reset, f"{flags} do not apply: it {what}")
        if self.reset == "fire" and "norm" in self.reset_kinds:
            raise _bad("reset_kinds", self.reset_kinds, "FIRE orthogonalises matrices; norm is for sp and full only")
        if self.enabled and not self.reset_at and self.reset_every == 0:
            raise _bad("reset", self.reset, "has no schedule: give --reset-at (env steps) or --reset-every")
        late = [s for s in self.reset_at if total_steps is not None and self.enabled and s > total_steps]
        if late:
            raise _bad("reset_at", list(self.reset_at), f"{late} lies beyond total_timesteps={total_steps} (env steps)")

    @property
    def enabled(self) -> bool:
        """Whether a reset method is set."""
        return self.reset != "none"

    def target_policy(self) -> str:
        """`reset_target`, or the recipe's: paper-dqn copies what FIRE changed into the target and applies S&P, full
        resets and injection to the target's own weights; ReDo keeps the target (the agent's target updates follow the
        online network); otherwise copy."""
        if self.reset_target != "recipe":
            return self.reset_target
        if self.reset == "redo":
            return "keep"
        if self.reset_recipe == "paper-dqn":
            return "changed" if self.reset == "fire" else "same"
        return "copy"

    def optimizer_policy(self) -> str:
        """`reset_optimizer`, or the recipe's: rebuild for paper-sac and paper-dqn's injection, keep otherwise (ReDo
        zeroes the moments of the weights it recycles itself)."""
        if self.reset_optimizer != "recipe":
            return self.reset_optimizer
        if self.reset == "redo":
            return "keep"
        if self.reset_recipe == "paper-sac" or (self.reset_recipe == "paper-dqn" and self.reset == "pi"):
            return "rebuild"
        return "keep"

    def temperature_policy(self) -> str:
        """`reset_temperature`, or the recipe's: reset for paper-sac (except ReDo), keep otherwise."""
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
    """The parameters of `modules` that require grad, each once, in order."""
    params = {id(p): p for m in modules for p in m.parameters() if p.requires_grad}
    return list(params.values())


# The in-place operations of the recipes, by name: a new method is its module in fire_rl/resets/, one entry here and its
# name in the Literal of `ResetConfig.reset`. Plasticity injection is structural: `ResetScheduler._inject`.
OPERATIONS: dict[str, Callable[[ResetConfig, _Entry, nn.Module, Any, Any], ResetReport]] = {
    "fire": lambda cfg, entry, net, layers, inputs: fire_(
        net, layers, method=cfg.polar_method, steps=cfg.ns_steps, tol=cfg.ns_tol, scale=cfg.fire_scale
    ),
    "sp": lambda cfg, entry, net, layers, inputs: shrink_perturb_(
        net, layers, entry.theta0, alpha=cfg.sp_alpha, toward=cfg.reset_toward
    ),
    "full": lambda cfg, entry, net, layers, inputs: full_reset_(net, layers, entry.theta0, toward=cfg.reset_toward),
    # ReDo zeroes the optimizer moments of the online network's recycled weights; the target's have none.
    "redo": lambda cfg, entry, net, layers, inputs: redo_(
        net, inputs, tau=cfg.redo_tau, optimizer=entry.optimizer if net is entry.online else None
    ),
}


def rebuild_optimizer_(optimizer: torch.optim.Optimizer, params: list[nn.Parameter], keep_state: bool) -> None:
    """Point `optimizer` at exactly `params`, in place (the agent's reference stays valid): with `keep_state`, the
    parameters that stay keep their moments; otherwise the state of a fresh optimizer, zeroed in place
    (`fire_rl.runtime.zero_optimizer_state_`). States of parameters no longer in `params` are dropped.

    Raises:
        ValueError: the optimizer has several parameter groups (which one a new parameter joins is ambiguous).
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"cannot rebuild an optimizer with {len(optimizer.param_groups)} parameter groups; give it one"
        )
    staying = set(params)
    for p in [p for p in optimizer.state if p not in staying]:
        del optimizer.state[p]
    if not keep_state:
        zero_optimizer_state_(optimizer)
    optimizer.param_groups[0]["params"] = list(params)


class ResetScheduler:
    """Applies the configured reset to the registered networks when the env step crosses a scheduled point.

    Args:
        config: the `ResetConfig`.
        log_fn: ``log_fn(tag, value, global_step)`` for scalars under ``reset/`` (e.g. ``SummaryWriter.add_scalar``).
        run_dir: where the JSON-lines event log ``resets.jsonl`` goes (one object per event); None: no file.
        total_steps: the run's length in env steps, to validate `config.reset_at`.

    Raises:
        ValueError: a reset step beyond `total_steps`.
    """

    def __init__(
        self,
        config: ResetConfig,
        log_fn: Callable[[str, float, int], Any] | None = None,
        run_dir: str | Path | None = None,
        total_steps: int | None = None,
    ) -> None:
        if total_steps is not None:
            config.validate(total_steps)
        self.config = config
        self.log_fn = log_fn
        self.events_path = Path(run_dir) / EVENTS_FILE if run_dir is not None else None
        self.entries: dict[str, _Entry] = {}
        self.temperature: _Temperature | None = None
        self.events: list[ResetEvent] = []
        self.last_step = 0
        self._next = self._next_point()

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
        """Register a network; networks sharing one optimizer (SAC's twin critics) pass the same one.

        Args:
            name: a short name for log tags (``"q"``, ``"actor"``, ``"qf1"``).
            online: the trained network; its top-level children ``encoder`` and ``head`` give the layer roles.
            target: its target network (same architecture), or None.
            optimizer: the optimizer holding its parameters (one parameter group), or None.
            theta0: θ₀ (`capture_theta0`); None captures it now, so register right after initialisation.
            probe: ``probe() -> inputs | None``, a batch (``online(*inputs)``) to measure the dormant ratio, srank and
                output change on before and after a reset; None, or a probe returning None, skips those.
        """
        if name in self.entries:
            raise ValueError(f"network name {name!r} is already registered")
        self.entries[name] = _Entry(name, online, target, optimizer, theta0 or capture_theta0(online), probe)

    def add_temperature(self, log_alpha: torch.Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Register SAC's log-temperature; under the ``reset`` temperature policy every reset returns it to its value
        now and clears its optimizer state."""
        self.temperature = _Temperature(log_alpha, log_alpha.detach().clone(), optimizer)

    def theta0(self, name: str) -> dict[str, torch.Tensor]:
        """θ₀ of the network registered as `name` (``{parameter name: tensor}``)."""
        return self.entries[name].theta0

    def check(self) -> None:
        """Resolve now, right after the last `add_network`, everything a reset will need, so that a reset that cannot
        run is refused at start-up and not at its scheduled step; nothing changes. For every network: each value of
        `reset_kinds`, `reset_roles` and `reset_names` selects a layer and together they select some; the recipe finds
        its layers; ReDo finds an `nn.ReLU`; injection a ``head``; a target has the network's parameter names and
        shapes; an optimizer the reset rebuilds has one parameter group.

        Raises:
            ValueError: naming the flag and value (``--reset-names 'nonexistent.*'``), the network and its layers;
                also when a method is set and no network is registered.
        """
        cfg = self.config
        if not cfg.enabled:
            return
        if not self.entries:
            raise ValueError(f"--reset {cfg.reset}: no network is registered with the reset scheduler")
        rebuilds = cfg.optimizer_policy() == "rebuild" or cfg.reset == "pi"
        for entry in self.entries.values():
            net, label = entry.online, f"network {entry.name!r} ({type(entry.online).__name__})"
            if cfg.reset_recipe == "custom" and cfg.reset not in ("pi", "redo"):
                self._check_selection(net, label)
            try:
                self._ops(entry)
            except ValueError as err:
                raise ValueError(f"--reset {cfg.reset} --reset-recipe {cfg.reset_recipe}: {label}: {err}") from err
            if cfg.reset == "redo" and not any(isinstance(m, nn.ReLU) for m in net.modules()):
                raise ValueError(f"--reset redo: {label} has no nn.ReLU activation to recycle")
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

    def _check_selection(self, net: nn.Module, label: str) -> None:
        """The custom recipe's selection flags on one network, each value on its own, then together."""
        cfg, layers = self.config, available(net)
        for kind in cfg.reset_kinds:
            if not all_layers(net, (kind,)):
                raise ValueError(f"--reset-kinds {kind} selects no layer of {label}; its layers: {layers}")
        for role in cfg.reset_roles:
            child = getattr(net, role, None)
            if not isinstance(child, nn.Module) or not all_layers(child, tuple(KINDS)):
                raise ValueError(f"--reset-roles {role} selects no layer of {label}; its layers: {layers}")
        for pattern in cfg.reset_names:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in all_layers(net, tuple(KINDS))):
                raise ValueError(f"--reset-names {pattern!r} matches no layer of {label}; its layers: {layers}")
        try:
            select_layers(net, cfg.reset_kinds or None, cfg.reset_roles or None, cfg.reset_names or None)
        except ValueError as err:
            names = ("reset_kinds", "reset_roles", "reset_names")
            given = " ".join(f"{flag(n)} {' '.join(getattr(cfg, n))}" for n in names if getattr(cfg, n))
            raise ValueError(
                f"{given or 'the default selection'} together select no layer of {label}; its layers: {layers}"
            ) from err

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

    def due(self, global_step: int) -> bool:
        """Whether `step(global_step, ...)` would reset now; a loop that trains in the background waits for its
        updates first (agents/dqn_atari.py --overlap)."""
        return global_step >= self._next

    def step(self, global_step: int, update_step: int) -> ResetEvent | None:
        """Call once per loop iteration with the env step count: applies one reset if `global_step` crossed scheduled
        points since the last call (several crossed by one jump make one reset, all recorded), else returns None."""
        if global_step < self._next:
            return None
        points = []
        while self._next <= global_step:
            points.append(int(self._next))
            self.last_step = int(self._next)
            self._next = self._next_point()
        self.last_step = global_step
        return self.apply(global_step, update_step, points)

    def _ops(self, entry: _Entry) -> list[tuple[str, dict[str, nn.Module] | None]]:
        """[(op, layers)] for one network under the recipe (layers None for pi and redo, which find their own);
        ValueError from `select_layers` for a selection that matches no layer."""
        cfg, net = self.config, entry.online
        if cfg.reset in ("pi", "redo"):
            return [(cfg.reset, None)]
        every_parameter = tuple(KINDS)  # Linear, Conv2d and normalisation layers: all parameters of our networks
        if cfg.reset_recipe == "paper-dqn":
            if cfg.reset == "full":
                return [("full", select_layers(net, kinds=every_parameter))]
            return [(cfg.reset, select_layers(net, kinds=["conv"])), ("full", select_layers(net, kinds=["linear"]))]
        if cfg.reset_recipe == "paper-sac":
            # Official SAC: FIRE maps every Dense kernel; S&P and the full reset act on every parameter.
            return [(cfg.reset, select_layers(net, kinds=MATRIX_KINDS if cfg.reset == "fire" else every_parameter))]
        return [
            (cfg.reset, select_layers(net, cfg.reset_kinds or None, cfg.reset_roles or None, cfg.reset_names or None))
        ]

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
        """Apply the configured reset now, whatever the schedule says.

        Raises:
            FloatingPointError: a NaN or Inf in a network before the reset, or produced by it (names the parameter).
        """
        cfg = self.config
        t0 = time.perf_counter()
        scalars: dict[str, float] = {}
        target_policy = cfg.target_policy()
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
                    report = OPERATIONS[op](cfg, entry, entry.online, layers, inputs)
                    if entry.target is not None and target_policy == "same":
                        # The same fresh draw as the online network's (toward="random"): replay the RNG.
                        _set_rng_state(entry.online, rng)
                        twins = dict(entry.target.named_modules())
                        target_layers = None if layers is None else {n: twins[n] for n in layers}
                        OPERATIONS[op](cfg, entry, entry.target, target_layers, inputs)
                    elif entry.target is not None and target_policy == "changed":
                        # The official DQN FIRE: target conv weights := the FIRE result, target conv biases kept.
                        names = {id(p): n for n, p in entry.online.named_parameters()}
                        twins = dict(entry.target.named_parameters())
                        with torch.no_grad():
                            for p in report.changed:
                                twins[names[id(p)]].copy_(p)
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
        self._handle_optimizers(cfg.optimizer_policy(), changed_by_opt, injected_opts)
        if self.temperature is not None and cfg.temperature_policy() == "reset":
            with torch.no_grad():
                self.temperature.log_alpha.copy_(self.temperature.init_value)
            if self.temperature.optimizer is not None:  # a fresh optimizer, its state zeroed in place
                opt = self.temperature.optimizer
                rebuild_optimizer_(opt, opt.param_groups[0]["params"], keep_state=False)
        seconds = time.perf_counter() - t0
        event = ResetEvent(global_step, update_step, cfg.reset, list(points or [global_step]), seconds, scalars)
        self.events.append(event)
        if self.log_fn is not None:
            self.log_fn("reset/event", 1.0, global_step)
            self.log_fn("reset/update_step", float(update_step), global_step)
            self.log_fn("reset/seconds", seconds, global_step)
            for key, value in scalars.items():
                self.log_fn(f"reset/{key}", value, global_step)
        self._write_events([event], append=True)
        return event

    def _inject(self, entry: _Entry) -> ResetReport:
        report = inject_plasticity(entry.online, "head", theta0=entry.theta0, toward=self.config.reset_toward)
        if entry.target is not None:
            # The same structure on the target, with its own weights as the frozen old head (official DQN), so copies
            # and EMAs line up parameter by parameter; the "copy" policy then overwrites it with the online network.
            inject_plasticity(entry.target, "head", theta0=entry.theta0, toward="init", measure=False)
        entry.injections += 1
        return report

    def _handle_optimizers(self, policy: str, changed: dict[int, list[nn.Parameter]], injected: set[int]) -> None:
        by_opt: dict[int, tuple[torch.optim.Optimizer, list[nn.Module]]] = {}
        for entry in self.entries.values():
            if entry.optimizer is not None:
                by_opt.setdefault(id(entry.optimizer), (entry.optimizer, []))[1].append(entry.online)
        for key, (opt, nets) in by_opt.items():
            if policy == "rebuild" or key in injected:
                rebuild_optimizer_(opt, _trainable(nets), keep_state=policy != "rebuild")
            if policy == "reset-changed":
                with torch.no_grad():  # every state tensor (moments, step counts) of the changed parameters
                    for p in changed.get(key, []):
                        for value in opt.state.get(p, {}).values():
                            if torch.is_tensor(value):
                                value.zero_()

    def _check_finite(self, entry: _Entry, when: str) -> None:
        bad = nonfinite_parameters({entry.name: entry.online})
        if bad:
            what = "the network already held" if when == "before" else f"the {self.config.reset} reset produced"
            raise FloatingPointError(f"{what} NaN/Inf in parameter(s) {bad} ({when} the reset)")

    def _write_events(self, events: list[ResetEvent], append: bool) -> None:
        """Append to ``resets.jsonl``, or rewrite it atomically with exactly `events`; fsynced either way."""
        if self.events_path is None:
            return
        self.events_path.parent.mkdir(parents=True, exist_ok=True)
        path = self.events_path if append else self.events_path.with_suffix(".jsonl.tmp")
        with open(path, "a" if append else "w") as f:
            for e in events:
                f.write(json.dumps(asdict(e)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if not append:
            os.replace(path, self.events_path)

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
        """Restore the schedule so a resumed run neither repeats nor skips an event. Call it after registering the
        networks and BEFORE loading their weights and optimizer states: it re-creates the structure injections added
        (so the checkpointed state dicts fit), restores θ₀, and rewrites ``resets.jsonl`` to exactly the checkpointed
        events (superseding those a killed run logged after the checkpoint).

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
                for net in (entry.online, entry.target):
                    if net is not None:
                        rebuild_injections(net, depth, "head")
                entry.injections = depth
            device = next(entry.online.parameters()).device
            entry.theta0 = {n: t.to(device) for n, t in state["theta0"][name].items()}
        if self.temperature is not None and state["temperature_init"] is not None:
            self.temperature.init_value = state["temperature_init"].to(self.temperature.log_alpha.device)
        self.last_step = int(state["last_step"])
        self.events = [ResetEvent(**e) for e in state["events"]]
        self._next = self._next_point()
        self._write_events(self.events, append=False)
        for entry in self.entries.values():
            if entry.injections and entry.optimizer is not None:
                nets = [e.online for e in self.entries.values() if e.optimizer is entry.optimizer]
                rebuild_optimizer_(entry.optimizer, _trainable(nets), keep_state=False)
