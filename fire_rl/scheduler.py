"""The reset scheduler: when to reset, what to reset, and what happens to targets, optimizers and the temperature.

Both agents use it the same way (DESIGN 3.5)::

    scheduler = ResetScheduler(ResetConfig(method="fire", at=(100_000,)), log_fn=writer.add_scalar, run_dir=run_dir)
    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer)
    ...
    for global_step in ...:                      # env steps
        ...
        scheduler.step(global_step, update_step)  # one line in the loop; a cheap integer compare between events

A *recipe* says which operation each layer gets. ``"custom"`` applies `method` to the layers chosen by `kinds`, `roles`
and `names` on every registered network. ``"paper-dqn"`` and ``"paper-sac"`` reproduce the official FIRE recipes
(DESIGN 3.1-3.4):

=========  ===========================================================  ============================================
method     paper-dqn (Nature CNN)                                        paper-sac (SimBa actor and both critics)
=========  ===========================================================  ============================================
fire       FIRE on the convs; the Linears ← θ₀; Adam state kept           FIRE on every Linear; fresh optimizers and
                                                                          temperature
sp         convs (weights and biases) shrunk toward θ₀ (α = 0.2);        all parameters shrunk toward θ₀; fresh
           the Linears ← θ₀; Adam state kept                              optimizers and temperature
full       every layer ← θ₀; Adam state kept                              every layer ← θ₀; fresh optimizers and
                                                                          temperature
pi         plasticity injection on the head; optimizer rebuilt           injection on each head; fresh optimizers and
                                                                          temperature
redo       ReDo on every ReLU layer; Adam moments of recycled weights    the same on actor and critics
           zeroed; target kept (the agent's target updates follow)
=========  ===========================================================  ============================================

In both recipes the target network receives the online network's result (``target="copy"``).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from fire_rl.metrics import plasticity_metrics
from fire_rl.resets import (
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

METHODS = ("none", "fire", "sp", "full", "pi", "redo")
RECIPES = ("custom", "paper-dqn", "paper-sac")
TARGETS = ("copy", "same", "keep")
OPTIMIZERS = ("keep", "reset-changed", "rebuild")
EVENTS_FILE = "resets.jsonl"


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {list(allowed)}")


@dataclass
class ResetConfig:
    """What the scheduler does, and when. Schedules are in env steps (`global_step`), never gradient updates."""

    method: Literal["none", "fire", "sp", "full", "pi", "redo"] = "none"
    """reset method: none, fire (FIRE), sp (Shrink & Perturb), full (full reset), pi (plasticity injection), redo
    (ReDo: recycle dormant neurons, on the probe batch)"""
    recipe: Literal["custom", "paper-dqn", "paper-sac"] = "custom"
    """which layers get which operation: the official FIRE recipes, or `method` on the layers chosen below"""
    at: tuple[int, ...] = ()
    """env steps at which to reset"""
    every: int = 0
    """reset every this many env steps (0: off)"""
    start: int = 0
    """no reset before this env step"""
    stop: int | None = None
    """no reset after this env step (None: never stop)"""
    kinds: tuple[str, ...] = ()
    """custom recipe: layer kinds to reset (linear, conv); empty: all"""
    roles: tuple[str, ...] = ()
    """custom recipe: layer roles to reset (encoder, head); empty: all"""
    names: tuple[str, ...] = ()
    """custom recipe: fnmatch patterns of layer names to reset; empty: all"""
    target: Literal["copy", "same", "keep"] | None = None
    """target networks after a reset: copy the online result, apply the same operation to their own weights, or keep
    (None: the recipe's choice, copy)"""
    optimizer: Literal["keep", "reset-changed", "rebuild"] | None = None
    """optimizer state after a reset: keep, zero the moments of changed parameters, or rebuild from scratch (None: the
    recipe's choice)"""
    temperature: Literal["keep", "reset"] | None = None
    """SAC temperature after a reset (None: the recipe's choice: reset for paper-sac, keep otherwise)"""
    polar_method: Literal["newton_schulz", "polar_express", "svd"] = "newton_schulz"
    """how FIRE computes the polar factor: cubic Newton-Schulz (the paper), Polar Express, or an exact SVD"""
    ns_steps: int = 10
    """Newton-Schulz iterations (the paper's 10)"""
    ns_tol: float | None = None
    """if set, iterate until max|sigma - 1| <= ns_tol instead of a fixed number of steps"""
    fire_scale: Literal["muon", "none"] = "muon"
    """FIRE's scale after orthogonalising: the official sqrt(d_out/d_in) rule, or none"""
    sp_alpha: float = 0.2
    """Shrink & Perturb: theta <- alpha * theta + (1 - alpha) * theta_new (alpha = share of trained weights kept)"""
    toward: Literal["init", "random"] = "init"
    """S&P, full reset and injection: move toward theta_0 or a fresh random draw"""
    redo_tau: float = 0.1
    """ReDo: a neuron is dormant when its score E|h_i| / mean_j E|h_j| <= redo_tau (ReDo's benchmarks: 0.1)"""

    def __post_init__(self) -> None:
        self.at = tuple(int(s) for s in self.at)
        _choice("method", self.method, METHODS)
        _choice("recipe", self.recipe, RECIPES)
        if self.target is not None:
            _choice("target", self.target, TARGETS)
        if self.optimizer is not None:
            _choice("optimizer", self.optimizer, OPTIMIZERS)
        if self.temperature is not None:
            _choice("temperature", self.temperature, ("keep", "reset"))
        _choice("polar_method", self.polar_method, ("newton_schulz", "polar_express", "svd"))
        _choice("fire_scale", self.fire_scale, ("muon", "none"))
        _choice("toward", self.toward, ("init", "random"))
        if any(s <= 0 for s in self.at):
            raise ValueError(f"reset at={list(self.at)}: every reset step must be a positive env step")
        if self.every < 0:
            raise ValueError(f"reset every={self.every}: must be >= 0 env steps (0 turns periodic resets off)")
        if self.start < 0:
            raise ValueError(f"reset start={self.start}: must be >= 0")
        if self.stop is not None and self.stop < self.start:
            raise ValueError(f"reset stop={self.stop} is before start={self.start}")
        if self.ns_steps < 1:
            raise ValueError(f"ns_steps={self.ns_steps}: must be >= 1")
        if self.ns_tol is not None and not (0 < self.ns_tol < 1):
            raise ValueError(f"ns_tol={self.ns_tol}: must be in (0, 1)")
        if not self.redo_tau >= 0:
            raise ValueError(f"redo_tau={self.redo_tau}: must be >= 0")
        if not (0.0 <= self.sp_alpha <= 1.0):
            raise ValueError(f"sp_alpha={self.sp_alpha}: must be in [0, 1] (share of trained weights kept)")
        if self.method != "none" and not self.at and self.every == 0:
            raise ValueError(f"reset method {self.method!r} has no schedule: give `at` (env steps) or `every`")
        if self.recipe == "custom" and self.method == "pi" and (self.kinds or self.names):
            raise ValueError("plasticity injection acts on each network's `head`; kinds/names do not apply to it")

    @property
    def enabled(self) -> bool:
        """Whether any reset is configured (method other than none)."""
        return self.method != "none"

    def target_policy(self) -> str:
        """`target`, or the recipe's choice: copy (keep for ReDo, whose targets follow the agent's target updates)."""
        if self.target is not None:
            return self.target
        return "keep" if self.method == "redo" else "copy"  # ReDo leaves the target to the agent's target updates

    def optimizer_policy(self) -> str:
        """`optimizer`, or the recipe's choice: rebuild for paper-sac, keep otherwise."""
        if self.optimizer is not None:
            return self.optimizer
        if self.recipe == "paper-sac":
            return "rebuild"
        return "keep"

    def temperature_policy(self) -> str:
        """`temperature`, or the recipe's choice: reset for paper-sac, keep otherwise."""
        if self.temperature is not None:
            return self.temperature
        return "reset" if self.recipe == "paper-sac" else "keep"

    def points(self, total_steps: int) -> list[int]:
        """Every scheduled env step up to `total_steps`, sorted, within [start, stop]."""
        pts = set(self.at)
        if self.every > 0:
            pts.update(range(self.every, total_steps + 1, self.every))
        hi = total_steps if self.stop is None else min(self.stop, total_steps)
        return sorted(s for s in pts if self.start <= s <= hi)

    def validate(self, total_steps: int) -> None:
        """Raise ValueError if an explicit reset step lies beyond the run's `total_steps` (env steps)."""
        late = [s for s in self.at if s > total_steps]
        if late and self.enabled:
            raise ValueError(f"reset at={late} lies beyond total_timesteps={total_steps} (env steps)")


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
        total_steps: the run's length in env steps, to validate `config.at`.

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

    # ---- schedule -----------------------------------------------------------------------------------------------
    def _next_point(self) -> float:
        """The first scheduled env step after `last_step`, or inf."""
        cfg = self.config
        if not cfg.enabled:
            return math.inf
        cands = [s for s in cfg.at if s > self.last_step and s >= cfg.start]
        if cfg.every > 0:
            first = max(self.last_step + 1, cfg.start)
            cands.append(-(-first // cfg.every) * cfg.every)
        return min((s for s in cands if cfg.stop is None or s <= cfg.stop), default=math.inf)

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
        """[(op, layers)] for one network under the configured recipe; op in fire, sp, sp_conv, full, pi."""
        cfg, net = self.config, entry.online
        if cfg.method == "pi":
            return [("pi", None)]
        if cfg.method == "redo":  # ReDo finds its (producer, ReLU, consumer) triples itself
            return [("redo", None)]
        if cfg.recipe == "paper-dqn":
            if cfg.method == "full":
                return [("full", select_layers(net))]
            convs = select_layers(net, kinds=["conv"])
            linears = select_layers(net, kinds=["linear"])
            return [(cfg.method, convs), ("full", linears)]
        if cfg.recipe == "paper-sac":
            return [(cfg.method, select_layers(net))]
        layers = select_layers(net, kinds=cfg.kinds or None, roles=cfg.roles or None, names=cfg.names or None)
        return [(cfg.method, layers)]

    def _run_op(self, op: str, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
        return OPERATIONS[op](self.config, entry, net, layers, inputs)

    @torch.no_grad()
    def _probe_metrics(self, entry: _Entry, inputs: tuple | None, when: str, out: dict[str, float]) -> torch.Tensor:
        """Plasticity metrics of `entry` on `inputs`, into `out`; returns the network's flattened outputs."""
        if inputs is None:
            return torch.empty(0)
        metrics = plasticity_metrics(entry.online, inputs)
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
                    report = self._run_op(op, entry, entry.online, layers, inputs)
                    if entry.target is not None and target_policy == "same":
                        target_layers = layers_of(entry.target, layers) if layers is not None else None
                        self._run_op(op, entry, entry.target, target_layers, inputs)
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
        event = ResetEvent(global_step, update_step, cfg.method, list(points or [global_step]), seconds, scalars)
        self.events.append(event)
        self._log(event)
        return event

    def _inject(self, entry: _Entry) -> ResetReport:
        cfg = self.config
        report = inject_plasticity(entry.online, "head", theta0=entry.theta0, toward=cfg.toward)
        if entry.target is not None:
            # The target gets the same (function-preserving) structure so that copies and EMAs line up parameter by
            # parameter; its values come from the online network unless the target policy is "keep".
            inject_plasticity(entry.target, "head", theta0=entry.theta0, toward="init")
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
        params = dict(entry.online.named_parameters())
        if not params:
            return
        flags = torch.stack([torch.isfinite(p).all() for p in params.values()]).tolist()
        bad = [n for n, ok in zip(params, flags) if not ok]
        if bad:
            what = "the network already held" if when == "before" else f"the {self.config.method} reset produced"
            raise FloatingPointError(f"{what} NaN/Inf in network {entry.name!r}, parameter(s) {bad} ({when} the reset)")

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
    return shrink_perturb_(net, layers, entry.theta0, alpha=cfg.sp_alpha, toward=cfg.toward)


def _full(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    return full_reset_(net, layers, entry.theta0, toward=cfg.toward)


def _redo(cfg: ResetConfig, entry: _Entry, net: nn.Module, layers, inputs) -> ResetReport:
    optimizer = entry.optimizer if net is entry.online else None
    return redo_(net, inputs, tau=cfg.redo_tau, optimizer=optimizer)


# The in-place operations the recipes use, by name: adding a method is its module in fire_rl/resets/ plus one line
# here (and its name in METHODS). Plasticity injection is structural and handled by `ResetScheduler._inject`.
OPERATIONS: dict[str, Callable[..., ResetReport]] = {"fire": _fire, "sp": _shrink_perturb, "full": _full, "redo": _redo}


def layers_of(network: nn.Module, layers: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The layers of `network` with the same qualified names as `layers` (e.g. a target network's twins)."""
    modules = dict(network.named_modules())
    return {name: modules[name] for name in layers}
