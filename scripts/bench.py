"""Benchmark the agents' hot paths: loops on real envs, update cost and FLOPs, resets, replay memory, fast paths.

    python scripts/bench.py                                   # everything, 1 thread -> benchmarks/bench_<host>.json
    python scripts/bench.py --only dqn,peak --seconds 30 --threads 2 --out /tmp/bench.json

Sections (``--only``; every figure is described in benchmarks/README.md):

- ``peak``: fp32 GEMM rate of this machine, ``torch.mm`` of n x n matrices (default n = 2048, and 512, 1024) with the
  same thread count; the best of 7 runs at the fastest size is the "peak" every "% of peak" refers to. A bf16
  ``torch.mm`` is reported for information (CPUs with AMX run it several times faster).
- ``dqn``: a loop that mirrors ``agents/dqn_atari.py`` (the agent's own `update`, `make_atari_env`, `QNetwork`,
  `AtariReplayBuffer`, `ReplayRatio`, `ResetScheduler`, `plasticity_metrics`) on ALE/Breakout-v5 with one env, at
  replay ratios 0.25, 1 and 4 (updates per env step), ε fixed at the preset's final 0.01 (the steady state of 90% of a
  run). The buffer is first filled with ``--fill`` random env steps. Each ratio runs for ``--seconds``; the wall time
  is split into phases (act, env, buffer_add, sample, update, log, target, metrics, reset, other = loop overhead).
  Plasticity metrics run every 10k env steps in the agent, so a short window rarely sees one: one metrics event is
  timed on its own and amortised over 10k env steps. Then the agent's `update` alone (batch 32, fixed batch) in
  updates/s, its FLOPs counted analytically, and the fraction of the GEMM peak it reaches; and the linear-cost check:
  a least-squares fit of seconds per env step against the replay ratio (slope = seconds per update).
- ``sac``: the same for ``agents/sac_simba.py`` on Humanoid-v5 (obs 348, act 17, action repeat 2) at replay ratios 1,
  2 and 4 (updates per agent step), paper widths (actor 128 x 1 block, critics 512 x 2 blocks), batch 256, learning
  from env step 5,000 as the agent. The agent's `update` includes the target EMA; its cost is timed on its own too.
- ``resets``: FIRE, Shrink & Perturb and plasticity injection on the paper networks (Nature CNN with the paper-dqn
  recipe; SimBa actor and both critics with paper-sac), through `ResetScheduler.apply` (the agents' path: finiteness
  checks, plasticity metrics on a 256-sample probe before and after, per-layer SFE/DfI, target copy, optimizer
  handling) and through the raw reset functions with ``measure=False``; median of ``--reset-repeats`` runs on fresh
  networks, and the share of a paper-preset run (DQN: 2.5M env steps at RR 1 = 2.5M updates; SAC: 1M env steps at RR 2
  per agent step with action repeat 2 = 1M updates), estimated from the measured update rate and, when the loop ran,
  from the loop's seconds per env step.
- ``buffer``: resident memory (VmRSS growth) of a real ``AtariReplayBuffer(--buffer-capacity, 1)`` whose pages are all
  written, against capacity x 84 x 84 bytes; batches/s of ``sample(32)`` from a 100k buffer filled through ``add``; and
  the same for the SAC `ReplayBuffer` (batch 256).
- ``speedups``: the agents' fast paths (fused Adam(W), channels_last) and bf16 autocast, each against the eager
  reference `update` on the same batch, interleaved round by round so that load on a shared machine hits all alike;
  two candidates measured earlier and dropped for no gain on this CPU (the DQN target forward under
  `torch.inference_mode`, both SAC critics as one batched module) are in benchmarks/bench_vm.json. Each variant has a
  parity check after two updates from identical states: the relative difference of the second update's loss and of
  the parameter change (Q-network; SAC: the actor, whose second step depends on the critics' first).

Timing: `time.perf_counter`. On CUDA the benchmark synchronises only at phase boundaries (and around each timed update
call), so each phase is charged for the kernels it queued; a real run, which never synchronises there, overlaps them.
The JSON records the machine (CPU model from /proc/cpuinfo, device name, torch version, thread count from
`torch.get_num_threads()`, date) and the load average before and after each section: on a shared machine every rate
here is a lower bound.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fire_rl.buffers import AtariReplayBuffer, ReplayBatch, ReplayBuffer
from fire_rl.envs.atari import episode_stats, make_atari_env, real_next_obs
from fire_rl.envs.humanoid import make_humanoid_env
from fire_rl.metrics import plasticity_metrics
from fire_rl.networks import QNetwork, RSNorm, SimbaActor, SimbaCritic, update_target_
from fire_rl.regularizers import Regularizer
from fire_rl.resets import (
    fire_,
    full_reset_,
    inject_plasticity,
    select_layers,
    shrink_perturb_,
)
from fire_rl.runtime import ReplayRatio, crossed
from fire_rl.scheduler import ResetConfig, ResetScheduler

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("peak", "dqn", "sac", "resets", "buffer", "speedups")
DQN_ENV, SAC_ENV = "ALE/Breakout-v5", "Humanoid-v5"
DQN_BATCH, SAC_BATCH = 32, 256
# Humanoid-v5 (gymnasium MuJoCo): the SAC networks' input sizes when no env is built (update cost, resets).
SAC_OBS_DIM, SAC_ACT_DIM = 348, 17
DQN_ACTIONS = 4  # Breakout's minimal action set; a reset's or update's cost barely depends on it
# Paper-preset runs whose share a reset takes (DESIGN 5, 6): env steps and gradient updates.
DQN_PAPER_ENV_STEPS, DQN_PAPER_UPDATES = 2_500_000, 2_500_000
SAC_PAPER_ENV_STEPS, SAC_PAPER_UPDATES = 1_000_000, 1_000_000
PROBE_BATCH = 256  # the agents' probe and metrics batch


# ----------------------------------------------------------------------------------------------------------------------
# Machine, timing helpers
# ----------------------------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo, else `platform.processor()`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags_of_note() -> list[str]:
    """The SIMD / matrix-unit flags of /proc/cpuinfo that decide GEMM speed (AVX2, AVX-512, AMX, bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if f in flags]


def meminfo_bytes(key: str) -> int | None:
    """A /proc/meminfo entry (e.g. ``MemAvailable``) in bytes, or None where there is no /proc."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def proc_memory(pid: int | str = "self") -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of process `pid` (default: this one) in bytes, from /proc/<pid>/status: resident set size now
    and its peak. None when there is no such file (the process is gone, or not Linux) or no memory lines (a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) * 1024
    if "VmRSS" not in values:
        return None
    return values["VmRSS"], values.get("VmHWM", values["VmRSS"])


def vm_rss_bytes() -> int:
    """This process's resident set size (VmRSS of /proc/self/status) in bytes.

    Raises:
        RuntimeError: no /proc/self/status (not Linux).
    """
    memory = proc_memory()
    if memory is None:
        raise RuntimeError("VmRSS needs /proc/self/status (Linux)")
    return memory[0]


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Phases:
    """Wall time per named phase of a loop, accumulated over calls.

    On CUDA it synchronises at both ends of every phase, so each phase is charged for the kernels it queued (a real
    run overlaps them instead). The context manager itself costs about a microsecond per phase on CPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        sync(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] += time.perf_counter() - t0


def call_times(fn: Callable[[], object], device: torch.device, seconds: float, min_calls: int = 5) -> list[float]:
    """Seconds of each call of `fn` after one untimed warm-up call, for at least `seconds` and `min_calls` calls."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def interleaved_times(
    fns: dict[str, Callable[[], object]], device: torch.device, seconds_each: float, calls_per_round: int
) -> dict[str, list[float]]:
    """Per-call seconds of several functions timed round by round (`calls_per_round` calls of each per round) until
    the slowest has run for `seconds_each` (all get the same number of calls): a load change on a shared machine
    then hits every function alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    while max(sum(t) for t in times.values()) < seconds_each or min(len(t) for t in times.values()) < 3:
        for name, fn in fns.items():
            for _ in range(calls_per_round):
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)
    return times


def no_regularizer(**networks: nn.Module) -> Regularizer:
    """The agents' ``--regularizer none`` with their networks registered (its `loss` is 0.0, `after_step` nothing)."""
    regularizer = Regularizer("none")
    for name, network in networks.items():
        regularizer.add_network(name, network)
    return regularizer


def load_agent(name: str) -> ModuleType:
    """Import ``agents/<name>.py`` as a module (the agents are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "agents" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses with postponed annotations look their module up here
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------------------------------
# FLOP counts (analytic, from the layer shapes)
# ----------------------------------------------------------------------------------------------------------------------


def layer_macs(network: nn.Module, *inputs: torch.Tensor) -> list[tuple[str, float]]:
    """Multiply-accumulates per sample of every `nn.Linear` and `nn.Conv2d` call in one forward, in call order.

    Linear: rows x d_in x d_out; Conv2d: output elements x C_in/groups x k_h x k_w (read from the shapes of one real
    forward on `inputs`, a batch). Normalisation, activations and element-wise work are not counted (memory-bound).
    """
    batch = inputs[0].shape[0]
    calls: list[tuple[str, float]] = []
    hooks = []
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):

            def hook(m, args, out, name=name):
                calls.append((name, args[0].numel() // m.in_features * m.in_features * m.out_features / batch))

        elif isinstance(module, nn.Conv2d):

            def hook(m, args, out, name=name):
                k_h, k_w = m.kernel_size
                calls.append((name, out.numel() * (m.in_channels // m.groups) * k_h * k_w / batch))

        else:
            continue
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            network(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return calls


def dqn_update_flops(q_network: nn.Module, batch: int) -> dict[str, float]:
    """FLOPs of one DQN update (the agent's `update`, not Double DQN), counted from the layer shapes.

    F = 2 x MACs of one forward per sample. Target forward on next_obs (no grad): F; online forward: F; backward: the
    weight-gradient and input-gradient GEMMs, 2F, minus conv1's input gradient (pixels need none), 2 x MACs(conv1).
    Per update: B x (4F - 2 MACs(conv1)); about 2.18 GFLOP at B = 32 (DESIGN 9). Adam, the loss and element-wise work
    are left out.
    """
    device = next(q_network.parameters()).device
    macs = layer_macs(q_network, torch.zeros(1, q_network.in_channels, 84, 84, dtype=torch.uint8, device=device))
    forward = 2.0 * sum(m for _, m in macs)
    first = 2.0 * macs[0][1]
    return {
        "forward_per_sample": forward,
        "target_forward": batch * forward,
        "online_forward": batch * forward,
        "backward": batch * (2.0 * forward - first),
        "total": batch * (4.0 * forward - first),
    }


def sac_update_flops(actor: SimbaActor, critic: SimbaCritic, batch: int) -> dict[str, float]:
    """FLOPs of one SAC update in the agent's form, counted from the layer shapes.

    A, C = forward FLOPs per sample (2 x MACs) of the actor and of one critic; a1, c1 = those of their first Linear.
    Actor step: actor forward A, both critics forward 2C and their input-gradient backward 2C (critic weights frozen),
    actor backward 2A - a1 (observations need no gradient). Temperature: nothing counted. Critic step: target actor A,
    both target critics 2C, both critics forward 2C and backward 2(2C - c1). Total per sample: 4A - a1 + 12C - 2 c1.
    ``total_usual`` adds the critics' weight gradients in the actor step (2C), as the update is usually written
    (DESIGN 9: 30.7 vs 26.3 GFLOP). LayerNorm, activations, the tanh-Gaussian and AdamW are left out.
    """
    device = next(actor.parameters()).device
    obs = torch.zeros(1, actor.obs_dim, device=device)
    act = torch.zeros(1, actor.act_dim, device=device)
    actor_macs, critic_macs = layer_macs(actor, obs), layer_macs(critic, obs, act)
    a, a1 = 2.0 * sum(m for _, m in actor_macs), 2.0 * actor_macs[0][1]
    c, c1 = 2.0 * sum(m for _, m in critic_macs), 2.0 * critic_macs[0][1]
    total = 4 * a - a1 + 12 * c - 2 * c1
    return {
        "actor_forward_per_sample": a,
        "critic_forward_per_sample": c,
        "actor_step": batch * (3 * a - a1 + 4 * c),
        "critic_step": batch * (a + 8 * c - 2 * c1),
        "total": batch * total,
        "total_usual": batch * (total + 2 * c),
    }


# ----------------------------------------------------------------------------------------------------------------------
# GEMM peak
# ----------------------------------------------------------------------------------------------------------------------


def bench_peak(device: torch.device, n: int) -> dict:
    """GFLOP/s of n x n x n `torch.mm` (2n³ FLOPs per call, best and median of 7 calls) in fp32 and, for information,
    bf16, at n and at the smaller sizes 512 and 1024 (on a shared machine the largest size is not always the fastest).
    ``peak_gflops``, the reference of every "% of peak", is the best fp32 rate over the sizes."""
    out: dict = {"n": n, "by_n": {}}
    for size in sorted({512, 1024, n}):
        row = {}
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            gen = torch.Generator(device=device).manual_seed(0)
            a = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
            b = torch.randn(size, size, device=device, dtype=dtype, generator=gen)
            times = call_times(lambda a=a, b=b: torch.mm(a, b), device, seconds=0.0, min_calls=7)
            rates = [2.0 * size**3 / t / 1e9 for t in times]
            row[f"{name}_gflops_best"], row[f"{name}_gflops_median"] = max(rates), statistics.median(rates)
        out["by_n"][size] = row
    for key in ("fp32_gflops_best", "fp32_gflops_median", "bf16_gflops_best", "bf16_gflops_median"):
        out[key] = out["by_n"][n][key]
    out["peak_gflops"] = max(row["fp32_gflops_best"] for row in out["by_n"].values())
    out["bf16_peak_gflops"] = max(row["bf16_gflops_best"] for row in out["by_n"].values())
    return out


# ----------------------------------------------------------------------------------------------------------------------
# DQN: the agent's loop, phase by phase
# ----------------------------------------------------------------------------------------------------------------------


class DqnLoop:
    """The set-up and one loop iteration of ``agents/dqn_atari.py`` (cleanrl preset: one env, MSE, Adam 1e-4), with
    each part of the iteration timed as a phase. The reset scheduler is registered with a FIRE event at the run's
    midpoint (never reached here), so its per-step cost is the agent's integer compare."""

    def __init__(self, dqn: ModuleType, env_id: str, device: torch.device, seed: int, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dqn, self.device = dqn, device
        self.args = a = dqn.resolve_args(dqn.Args(env_id=env_id, preset="cleanrl", seed=seed))
        self.envs = make_atari_env(a.env_id, a.num_envs, a.seed, preset=a.preset)
        self.n_actions = int(self.envs.single_action_space.n)
        torch.manual_seed(seed)
        # The agent's defaults: fused Adam, channels_last networks and replay batches.
        layout = torch.channels_last if a.channels_last else torch.contiguous_format
        self.q_network = QNetwork(self.n_actions, init=a.init).to(device, memory_format=layout)
        self.optimizer = torch.optim.Adam(self.q_network.parameters(), lr=a.learning_rate, eps=a.adam_eps,
                                          fused=a.fused_adam or None)  # fmt: skip
        self.target_network = QNetwork(self.n_actions, init=a.init).to(device, memory_format=layout)
        self.target_network.load_state_dict(self.q_network.state_dict())
        self.rb = AtariReplayBuffer(a.buffer_size, a.num_envs, device=device, seed=a.seed,
                                    channels_last=a.channels_last)  # fmt: skip
        self.regularizer = no_regularizer(q=self.q_network)
        self.writer = SummaryWriter(log_dir)
        config = ResetConfig(method="fire", recipe="paper-dqn", at=(a.total_timesteps // 2,))
        self.scheduler = ResetScheduler(config, log_fn=self.writer.add_scalar, total_steps=a.total_timesteps)
        self.scheduler.add_network(
            "q", self.q_network, target=self.target_network, optimizer=self.optimizer, probe=self.probe
        )
        self.rng = np.random.default_rng(a.seed)
        self.obs, _ = self.envs.reset(seed=a.seed)
        self.global_step, self.update_step = 0, 0

    def probe(self) -> tuple[torch.Tensor] | None:
        return (self.rb.sample(min(PROBE_BATCH, len(self.rb))).observations,) if len(self.rb) else None

    def step(self, epsilon: float, replay: ReplayRatio | None, timer: Phases) -> None:
        """One iteration of the agent's loop; `replay` None: no learning (before learning_starts)."""
        a = self.args
        with timer("act"):
            if self.rng.random() < epsilon:
                actions = self.rng.integers(self.n_actions, size=a.num_envs)
            else:
                with torch.inference_mode():
                    q_values = self.q_network(torch.as_tensor(self.obs, device=self.device))
                actions = q_values.argmax(dim=1).cpu().numpy()
        with timer("env"):
            next_obs, rewards, terminations, truncations, infos = self.envs.step(actions)
            self.global_step += a.num_envs
            for _, game_return, _ in episode_stats(infos):
                self.writer.add_scalar("charts/episodic_return", game_return, self.global_step)
        with timer("buffer_add"):
            self.rb.add(self.obs, real_next_obs(next_obs, infos, terminations, truncations), actions, rewards,
                        terminations, truncations)  # fmt: skip
            self.obs = next_obs
        if replay is not None:
            for _ in range(replay.updates(a.num_envs)):
                with timer("sample"):
                    data = self.rb.sample(a.batch_size)
                with timer("update"):
                    stats = self.dqn.update(self.q_network, self.target_network, self.optimizer, self.regularizer,
                                            data, a.gamma, a.loss, a.double_dqn)  # fmt: skip
                self.update_step += 1
                if self.update_step % 100 == 0:
                    with timer("log"):
                        td_loss, q_mean = torch.stack([stats["td_loss"], stats["q_values"]]).tolist()
                        if not (np.isfinite(td_loss) and np.isfinite(q_mean)):
                            raise FloatingPointError(
                                f"td_loss={td_loss} q_values={q_mean} at update {self.update_step}"
                            )
                        self.writer.add_scalar("losses/td_loss", td_loss, self.global_step)
                        self.writer.add_scalar("losses/q_values", q_mean, self.global_step)
                        self.writer.add_scalar("charts/update_step", self.update_step, self.global_step)
            if crossed(self.global_step, a.num_envs, a.target_network_frequency):
                with timer("target"):
                    for target_param, param in zip(self.target_network.parameters(), self.q_network.parameters()):
                        target_param.data.copy_(a.tau * param.data + (1.0 - a.tau) * target_param.data)
        with timer("reset"):
            self.scheduler.step(self.global_step, self.update_step)
        if crossed(self.global_step, a.num_envs, a.metrics_every) and len(self.rb) >= a.batch_size:
            with timer("metrics"):
                self.metrics_event()

    def metrics_event(self) -> None:
        """What the agent does every `metrics_every` env steps: metrics on a 256-sample batch, logged."""
        for key, value in plasticity_metrics(self.q_network, self.probe()[0]).items():
            self.writer.add_scalar(f"plasticity/{key}", value, self.global_step)

    def close(self) -> None:
        self.envs.close()
        self.writer.close()


def run_window(loop, replay_ratio: float, seconds: float, unit_steps: Callable[[], int], **step_kwargs) -> dict:
    """Run `loop.step` at `replay_ratio` for `seconds` (after a few untimed steps that include updates) and return the
    rates and the per-phase split; `unit_steps()` reads the loop's env step counter."""
    replay = ReplayRatio(replay_ratio)
    scratch = Phases(loop.device)
    start_updates = loop.update_step
    while loop.update_step < start_updates + 2:
        loop.step(replay=replay, timer=scratch, **step_kwargs)
    timer = Phases(loop.device)
    env0, upd0, iters = unit_steps(), loop.update_step, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        loop.step(replay=replay, timer=timer, **step_kwargs)
        iters += 1
    wall = time.perf_counter() - t0
    env_steps, updates = unit_steps() - env0, loop.update_step - upd0
    phases = dict(timer.seconds)
    phases["other"] = max(wall - sum(phases.values()), 0.0)
    return {
        "replay_ratio": replay_ratio,
        "wall_s": wall,
        "iterations": iters,
        "env_steps": env_steps,
        "updates": updates,
        "env_steps_per_s": env_steps / wall,
        "updates_per_s": updates / wall,
        "s_per_env_step": wall / env_steps,
        "phase_s": phases,
        "phase_ms_per_env_step": {k: 1e3 * v / env_steps for k, v in phases.items()},
        "phase_share_pct": {k: 100.0 * v / wall for k, v in phases.items()},
    }


def linear_fit(windows: list[dict]) -> dict | None:
    """Least-squares fit s_per_env_step = intercept + slope x (updates per env step), with the updates per env step
    each window realised (the replay ratio, divided by the action repeat for SAC): slope = seconds per gradient update
    (sampling, update, logging), intercept = seconds per env step without learning. None with fewer than 2 ratios."""
    if len(windows) < 2:
        return None
    x = np.array([w["updates"] / w["env_steps"] for w in windows])
    y = np.array([w["s_per_env_step"] for w in windows])
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    ss_res, ss_tot = float(np.sum((y - fitted) ** 2)), float(np.sum((y - y.mean()) ** 2))
    per_update = [
        sum(w["phase_s"].get(k, 0.0) for k in ("sample", "update", "log")) / max(w["updates"], 1) for w in windows
    ]
    return {
        "slope_s_per_update": float(slope),
        "intercept_s_per_env_step": float(intercept),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
        "max_rel_residual": float(np.max(np.abs(y - fitted) / y)),
        "updates_per_env_step": x.tolist(),
        "measured_s_per_update": per_update,
    }


def bench_dqn(dqn: ModuleType, device: torch.device, ratios: list[float], seconds: float, fill: int, seed: int,
              peak: dict | None) -> dict:  # fmt: skip
    """DQN section: the loop at each replay ratio, one metrics event, the update alone with FLOPs, the linear fit."""
    out: dict = {"env_id": DQN_ENV, "preset": "cleanrl", "num_envs": 1, "epsilon": None, "fill_env_steps": fill}
    with tempfile.TemporaryDirectory() as log_dir:
        loop = DqnLoop(dqn, DQN_ENV, device, seed, log_dir)
        scratch = Phases(device)
        while loop.global_step < fill:
            loop.step(epsilon=1.0, replay=None, timer=scratch)
        epsilon = loop.args.end_e
        out["epsilon"] = epsilon
        windows = []
        for rr in ratios:
            w = run_window(loop, rr, seconds, lambda: loop.global_step, epsilon=epsilon)
            windows.append(w)
            print_loop_row("dqn", w)
        out["loop"] = windows
        times = call_times(loop.metrics_event, device, seconds=0.0, min_calls=3)
        every = loop.args.metrics_every
        out["metrics_event_s"] = statistics.median(times)
        out["metrics_every_env_steps"] = every
        out["metrics_amortised_ms_per_env_step"] = 1e3 * out["metrics_event_s"] / every
        loop.close()
    out["linear_fit"] = linear_fit(windows)
    out["update"] = bench_dqn_update(dqn, device, seconds, seed, peak)
    return out


def dqn_batch(n_actions: int, batch: int, device: torch.device, seed: int) -> ReplayBatch:
    """A fixed random minibatch shaped like `AtariReplayBuffer.sample`'s."""
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=gen)
    next_obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=gen)
    return ReplayBatch(
        observations=obs.to(device),
        actions=torch.randint(0, n_actions, (batch,), generator=gen).to(device),
        rewards=torch.randint(-1, 2, (batch,), generator=gen).float().to(device),
        next_observations=next_obs.to(device),
        dones=(torch.rand(batch, generator=gen) < 0.01).float().to(device),
    )


def dqn_networks(device: torch.device, seed: int, init: str = "pytorch") -> tuple[QNetwork, QNetwork]:
    torch.manual_seed(seed)
    q_network = QNetwork(DQN_ACTIONS, init=init).to(device)
    target_network = QNetwork(DQN_ACTIONS, init=init).to(device)
    target_network.load_state_dict(q_network.state_dict())
    return q_network, target_network


def bench_dqn_update(dqn: ModuleType, device: torch.device, seconds: float, seed: int, peak: dict | None) -> dict:
    """The agent's DQN `update` alone on a fixed batch of 32: updates/s, FLOPs, % of the GEMM peak, and a split of
    the same computation into target forward, online forward + loss, backward and Adam step."""
    args = dqn.resolve_args(dqn.Args(preset="cleanrl"))
    q_network, target_network = dqn_networks(device, seed)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    regularizer = no_regularizer(q=q_network)
    data = dqn_batch(DQN_ACTIONS, DQN_BATCH, device, seed)

    def one_update() -> None:
        dqn.update(q_network, target_network, optimizer, regularizer, data, args.gamma, args.loss, args.double_dqn)

    times = call_times(one_update, device, seconds=seconds / 2)
    flops = dqn_update_flops(q_network, DQN_BATCH)
    out = update_summary(times, flops["total"], peak)
    out["flops"] = flops
    out["batch"] = DQN_BATCH
    out["split_ms"] = dqn_update_split(q_network, target_network, optimizer, data, args.gamma, device)
    # The agent's hard target update (tau = 1, every 1,000 env steps), timed on its own.
    out["target_copy_ms"] = 1e3 * statistics.median(
        call_times(lambda: update_target_(target_network, q_network, args.tau), device, seconds=0.0, min_calls=20)
    )
    if device.type == "cpu":
        out["op_profile"] = dqn_op_profile(dqn, args, data, seed, peak, seconds / 2)
    return out


# Each aten op's self time goes to one group; the FLOP-carrying groups get a rate.
OP_GROUPS = {
    "conv_forward": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution", "aten::conv2d"),
    "conv_backward": ("aten::convolution_backward",),
    "gemm": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear"),
    "optimizer": ("aten::_fused_adam_", "aten::_fused_adamw_"),
    "copies": ("aten::copy_", "aten::clone", "aten::_to_copy", "aten::contiguous"),
}


def dqn_op_profile(dqn: ModuleType, args, data: ReplayBatch, seed: int, peak: dict | None, seconds: float,
                   calls: int = 10) -> dict:  # fmt: skip
    """The agent's default update (fused Adam, channels_last networks and replay batches) on CPU: its time without
    the profiler (`default_update`: median over `seconds`, GFLOP/s, % of peak), then where it goes: torch.profiler self
    time of every aten op over `calls` updates, grouped (`OP_GROUPS`; the rest is element-wise work: ReLU and its
    gradient, the input scaling, the loss), in ms per update, with the GFLOP/s of the convolutions and GEMMs.

    FLOPs per update at batch B, from the layer shapes: conv forward 2 x 2B x MACs(convs) (target and online);
    conv backward 2B x (2 MACs(convs) - MACs(conv1)) (weight gradients of all, input gradients of conv2 and conv3);
    GEMM 2B x 4 MACs(linears) (target and online forward, weight and input gradients).
    """
    from torch.profiler import ProfilerActivity, profile

    q_network, target_network = (
        net.to(memory_format=torch.channels_last) for net in dqn_networks(torch.device("cpu"), seed)
    )
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps, fused=True)
    regularizer = no_regularizer(q=q_network)
    # As AtariReplayBuffer(channels_last=True) returns them.
    data = data._replace(
        observations=data.observations.contiguous(memory_format=torch.channels_last),
        next_observations=data.next_observations.contiguous(memory_format=torch.channels_last),
    )

    def one_update() -> None:
        dqn.update(q_network, target_network, optimizer, regularizer, data, args.gamma, args.loss, args.double_dqn)

    flops = dqn_update_flops(q_network, data.observations.shape[0])["total"]
    default = update_summary(call_times(one_update, torch.device("cpu"), seconds=seconds), flops, peak)
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            one_update()
    wall_ms = 1e3 * (time.perf_counter() - start) / calls
    ms: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        group = next((g for g, names in OP_GROUPS.items() if event.key in names), "elementwise_other")
        ms[group] += event.self_cpu_time_total / 1e3 / calls
    macs = layer_macs(q_network, torch.zeros(1, 4, 84, 84, dtype=torch.uint8))
    conv = [m for name, m in macs if name.startswith("encoder")]
    linear = sum(m for name, m in macs if name.startswith("head"))
    batch = data.observations.shape[0]
    flops = {
        "conv_forward": 2 * 2 * batch * sum(conv),
        "conv_backward": 2 * batch * (2 * sum(conv) - conv[0]),
        "gemm": 2 * batch * 4 * linear,
    }
    out = {
        "config": "fused Adam + channels_last networks and batches (the agent's defaults), batch 32",
        "default_update": default,
        "wall_ms_per_update_profiled": wall_ms,
        "ms_per_update": dict(ms),
        "share_pct": {g: 100.0 * v / sum(ms.values()) for g, v in ms.items()},
        "gflops": {g: flops[g] / (ms[g] / 1e3) / 1e9 for g in flops if ms[g] > 0},
    }
    if peak is not None:
        out["pct_of_peak"] = {g: 100.0 * v / peak["peak_gflops"] for g, v in out["gflops"].items()}
    return out


def dqn_update_split(q_network, target_network, optimizer, data: ReplayBatch, gamma: float, device) -> dict:
    """Median ms of each part of the agent's DQN update (MSE, no Double DQN), the same computation split by timers."""
    parts: dict[str, list[float]] = defaultdict(list)
    for _ in range(7):
        timer = Phases(device)
        with timer("target_forward"), torch.no_grad():
            target_max = target_network(data.next_observations).max(dim=1).values
            td_target = data.rewards + gamma * target_max * (1.0 - data.dones)
        with timer("online_forward_loss"):
            old_val = q_network(data.observations).gather(1, data.actions.unsqueeze(1)).squeeze(1)
            loss = F.mse_loss(td_target, old_val)
        with timer("backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with timer("optimizer_step"):
            optimizer.step()
        for key, value in timer.seconds.items():
            parts[key].append(value)
    return {key: 1e3 * statistics.median(values[1:]) for key, values in parts.items()}


def update_summary(times: list[float], flops: float, peak: dict | None) -> dict:
    median = statistics.median(times)
    out = {
        "calls": len(times),
        "median_s": median,
        "mean_s": statistics.fmean(times),
        "updates_per_s": 1.0 / median,
        "gflop": flops / 1e9,
        "gflops_achieved": flops / median / 1e9,
    }
    if peak is not None:
        out["pct_of_peak"] = 100.0 * out["gflops_achieved"] / peak["peak_gflops"]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# SAC: the agent's loop, phase by phase
# ----------------------------------------------------------------------------------------------------------------------


def sac_networks(obs_dim: int, act_dim: int, device: torch.device, seed: int, args) -> dict:
    """The agent's SAC set-up: actor, two critics and targets, RSNorm, log-temperature and the three AdamW."""
    torch.manual_seed(seed)
    actor = SimbaActor(obs_dim, act_dim, args.actor_hidden, args.actor_blocks).to(device)
    qf1 = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks).to(device)
    qf2 = SimbaCritic(obs_dim, act_dim, args.critic_hidden, args.critic_blocks).to(device)
    qf1_target = copy.deepcopy(qf1)
    qf2_target = copy.deepcopy(qf2)
    log_alpha = torch.tensor(math.log(args.alpha_init), device=device, requires_grad=True)
    return {
        "actor": actor,
        "qf1": qf1,
        "qf2": qf2,
        "qf1_target": qf1_target,
        "qf2_target": qf2_target,
        "rsnorm": RSNorm(obs_dim).to(device),
        "log_alpha": log_alpha,
        "optimizers": sac_optimizers(actor, [*qf1.parameters(), *qf2.parameters()], log_alpha, args),
        "target_entropy": -args.target_entropy_scale * act_dim,
    }


def sac_optimizers(actor: nn.Module, critic_params: list, log_alpha: torch.Tensor, args, fused: bool | None = None):
    """The agent's three AdamW (actor, critics, temperature without weight decay); `fused` as torch's flag."""
    return (
        torch.optim.AdamW(actor.parameters(), lr=args.actor_lr, weight_decay=args.weight_decay, fused=fused),
        torch.optim.AdamW(critic_params, lr=args.critic_lr, weight_decay=args.weight_decay, fused=fused),
        torch.optim.AdamW([log_alpha], lr=args.alpha_lr, weight_decay=0.0, fused=fused),
    )


def sac_update_call(sac: ModuleType, nets: dict, data: ReplayBatch, args, regularizer: Regularizer) -> dict:
    """The agent's SAC `update` on the networks of `sac_networks`."""
    n = nets
    return sac.update(n["actor"], n["qf1"], n["qf2"], n["qf1_target"], n["qf2_target"], n["rsnorm"], n["log_alpha"],
                      n["optimizers"], regularizer, data, args, n["target_entropy"])  # fmt: skip


class SacLoop:
    """The set-up and one loop iteration of ``agents/sac_simba.py`` (its defaults: action repeat 2, paper widths,
    learning from env step 5,000), with each part of the iteration timed as a phase. The agent's `update` includes
    the target EMA, so SAC has no separate target phase here."""

    def __init__(self, sac: ModuleType, env_id: str, device: torch.device, seed: int, log_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.sac, self.device = sac, device
        self.args = a = sac.resolve_args(sac.Args(env_id=env_id, seed=seed))
        self.env = make_humanoid_env(a.env_id, a.seed, action_repeat=a.action_repeat)
        obs_dim, act_dim = self.env.observation_space.shape[0], self.env.action_space.shape[0]
        self.nets = sac_networks(obs_dim, act_dim, device, seed, a)
        self.regularizer = no_regularizer(actor=self.nets["actor"], qf1=self.nets["qf1"], qf2=self.nets["qf2"])
        self.rb = ReplayBuffer(a.buffer_size, (obs_dim,), (act_dim,), device=device, seed=a.seed)
        self.writer = SummaryWriter(log_dir)
        config = ResetConfig(method="fire", recipe="paper-sac", at=(a.total_timesteps // 2,))
        self.scheduler = ResetScheduler(config, log_fn=self.writer.add_scalar, total_steps=a.total_timesteps)
        n = self.nets
        self.scheduler.add_network("actor", n["actor"], optimizer=n["optimizers"][0], probe=self.probe_actor)
        self.scheduler.add_network("qf1", n["qf1"], target=n["qf1_target"], optimizer=n["optimizers"][1],
                                   probe=self.probe_critic)  # fmt: skip
        self.scheduler.add_network("qf2", n["qf2"], target=n["qf2_target"], optimizer=n["optimizers"][1],
                                   probe=self.probe_critic)  # fmt: skip
        self.scheduler.add_temperature(n["log_alpha"], n["optimizers"][2])
        self.obs, _ = self.env.reset(seed=a.seed)
        n["rsnorm"].update(self.obs)
        self.global_step, self.update_step, self.agent_steps = 0, 0, 0

    def probe_actor(self) -> tuple[torch.Tensor] | None:
        return (
            (self.nets["rsnorm"](self.rb.sample(min(PROBE_BATCH, len(self.rb))).observations),)
            if len(self.rb)
            else None
        )

    def probe_critic(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not len(self.rb):
            return None
        data = self.rb.sample(min(PROBE_BATCH, len(self.rb)))
        return self.nets["rsnorm"](data.observations), data.actions

    def step(self, replay: ReplayRatio | None, timer: Phases) -> None:
        """One iteration of the agent's loop (one agent step); `replay` None: no learning."""
        a, n = self.args, self.nets
        with timer("act"):
            if self.global_step < a.learning_starts:
                action = self.env.action_space.sample()
            else:
                with torch.inference_mode():
                    action, _, _ = n["actor"].sample(n["rsnorm"](torch.as_tensor(self.obs, device=self.device)[None]))
                action = action[0].cpu().numpy()
        with timer("env"):
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            step_size = info["env_steps"]
            self.global_step += step_size
            self.agent_steps += 1
            if "episode" in info:
                self.writer.add_scalar("charts/episodic_return", float(info["episode"]["r"]), self.global_step)
        with timer("obs_norm"):
            n["rsnorm"].update(next_obs)
        with timer("buffer_add"):
            self.rb.add(self.obs[None], next_obs[None], action[None], np.array([reward]), np.array([terminated]),
                        np.array([truncated]))  # fmt: skip
            self.obs = next_obs
        if terminated or truncated:
            with timer("env"):
                self.obs, _ = self.env.reset()
            with timer("obs_norm"):
                n["rsnorm"].update(self.obs)
        if replay is not None and self.global_step >= a.learning_starts:
            for _ in range(replay.updates(1)):
                with timer("sample"):
                    data = self.rb.sample(a.batch_size)
                with timer("update"):
                    stats = sac_update_call(self.sac, n, data, a, self.regularizer)
                self.update_step += 1
                if self.update_step % 100 == 0:
                    with timer("log"):
                        values = dict(zip(stats, torch.stack(list(stats.values())).tolist()))
                        if bad := [k for k, v in values.items() if not np.isfinite(v)]:
                            raise FloatingPointError(f"non-finite {bad} at update {self.update_step}")
                        for key, value in values.items():
                            self.writer.add_scalar(f"losses/{key}", value, self.global_step)
        with timer("reset"):
            self.scheduler.step(self.global_step, self.update_step)
        if crossed(self.global_step, step_size, a.metrics_every) and len(self.rb) >= a.batch_size:
            with timer("metrics"):
                self.metrics_event()

    def metrics_event(self) -> None:
        """What the agent does every `metrics_every` env steps: metrics of the actor and qf1 on 256-sample probes."""
        for name, inputs in (("actor", self.probe_actor()), ("qf1", self.probe_critic())):
            for key, value in plasticity_metrics(self.nets[name], inputs).items():
                self.writer.add_scalar(f"plasticity/{name}/{key}", value, self.global_step)

    def close(self) -> None:
        self.env.close()
        self.writer.close()


def bench_sac(sac: ModuleType, device: torch.device, ratios: list[float], seconds: float, seed: int,
              peak: dict | None) -> dict:  # fmt: skip
    """SAC section: the loop at each replay ratio (updates per agent step), one metrics event, the update alone."""
    out: dict = {"env_id": SAC_ENV}
    with tempfile.TemporaryDirectory() as log_dir:
        loop = SacLoop(sac, SAC_ENV, device, seed, log_dir)
        a = loop.args
        out.update(action_repeat=a.action_repeat, learning_starts=a.learning_starts, batch=a.batch_size,
                   obs_dim=loop.env.observation_space.shape[0], act_dim=loop.env.action_space.shape[0])  # fmt: skip
        scratch = Phases(device)
        while loop.global_step < a.learning_starts:
            loop.step(replay=None, timer=scratch)
        windows = []
        for rr in ratios:
            agent0 = loop.agent_steps
            w = run_window(loop, rr, seconds, lambda: loop.global_step)
            w["agent_steps_per_s"] = (loop.agent_steps - agent0) / w["wall_s"]
            windows.append(w)
            print_loop_row("sac", w)
        out["loop"] = windows
        times = call_times(loop.metrics_event, device, seconds=0.0, min_calls=3)
        out["metrics_event_s"] = statistics.median(times)
        out["metrics_every_env_steps"] = a.metrics_every
        out["metrics_amortised_ms_per_env_step"] = 1e3 * out["metrics_event_s"] / a.metrics_every
        loop.close()
    out["linear_fit"] = linear_fit(windows)
    out["update"] = bench_sac_update(sac, device, seconds, seed, peak)
    return out


def sac_batch(obs_dim: int, act_dim: int, batch: int, device: torch.device, seed: int) -> ReplayBatch:
    """A fixed random minibatch shaped like `ReplayBuffer.sample`'s."""
    gen = torch.Generator().manual_seed(seed)
    return ReplayBatch(
        observations=torch.randn(batch, obs_dim, generator=gen).to(device),
        actions=(2 * torch.rand(batch, act_dim, generator=gen) - 1).to(device),
        rewards=torch.randn(batch, generator=gen).to(device),
        next_observations=torch.randn(batch, obs_dim, generator=gen).to(device),
        dones=torch.zeros(batch).to(device),
    )


def bench_sac_update(sac: ModuleType, device: torch.device, seconds: float, seed: int, peak: dict | None) -> dict:
    """The agent's SAC `update` alone at paper widths, batch 256, Humanoid-v5 sizes: updates/s, FLOPs, % of peak,
    and the target EMA it includes, timed on its own."""
    args = sac.resolve_args(sac.Args())
    nets = sac_networks(SAC_OBS_DIM, SAC_ACT_DIM, device, seed, args)
    data = sac_batch(SAC_OBS_DIM, SAC_ACT_DIM, SAC_BATCH, device, seed)
    regularizer = no_regularizer(actor=nets["actor"], qf1=nets["qf1"], qf2=nets["qf2"])
    times = call_times(lambda: sac_update_call(sac, nets, data, args, regularizer), device, seconds=seconds / 2)
    flops = sac_update_flops(nets["actor"], nets["qf1"], SAC_BATCH)
    out = update_summary(times, flops["total"], peak)
    out["flops"] = flops
    out["batch"] = SAC_BATCH
    out["sizes"] = {"obs_dim": SAC_OBS_DIM, "act_dim": SAC_ACT_DIM, "actor": [args.actor_hidden, args.actor_blocks],
                    "critic": [args.critic_hidden, args.critic_blocks]}  # fmt: skip

    def ema() -> None:
        update_target_(nets["qf1_target"], nets["qf1"], args.tau)
        update_target_(nets["qf2_target"], nets["qf2"], args.tau)

    out["target_ema_ms"] = 1e3 * statistics.median(call_times(ema, device, seconds=0.0, min_calls=20))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Resets on the paper networks
# ----------------------------------------------------------------------------------------------------------------------


def _prime_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter an Adam state (a trained run has one), with one step on zero gradients."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def dqn_reset_case(method: str, device: torch.device, seed: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """Fresh paper-preset DQN networks (Xavier init, Adam with state) and two ways to reset them with `method`:
    (through `ResetScheduler.apply` with the paper-dqn recipe, through the raw functions with ``measure=False``)."""
    q_network, target_network = dqn_networks(device, seed, init="xavier")
    optimizer = torch.optim.Adam(q_network.parameters(), lr=6.25e-5, eps=1.5e-4)
    _prime_optimizer(optimizer)
    probe = torch.randint(0, 256, (PROBE_BATCH, 4, 84, 84), dtype=torch.uint8, device=device)
    config = ResetConfig(method=method, recipe="paper-dqn", at=(DQN_PAPER_ENV_STEPS // 2,))
    scheduler = ResetScheduler(config, total_steps=DQN_PAPER_ENV_STEPS)
    scheduler.add_network("q", q_network, target=target_network, optimizer=optimizer, probe=lambda: (probe,))
    theta0 = scheduler.theta0("q")

    def through_scheduler():
        return scheduler.apply(DQN_PAPER_ENV_STEPS // 2, DQN_PAPER_UPDATES // 2)

    def raw():
        if method == "pi":
            return inject_plasticity(q_network, "head", theta0=theta0, measure=False)
        convs, linears = select_layers(q_network, kinds=["conv"]), select_layers(q_network, kinds=["linear"])
        if method == "fire":
            fire_(q_network, convs, measure=False)
        else:
            shrink_perturb_(q_network, convs, theta0, alpha=0.2, measure=False)
        return full_reset_(q_network, linears, theta0, measure=False)

    return through_scheduler, raw


def sac_reset_case(method: str, device: torch.device, seed: int, args) -> tuple[Callable[[], object], ...]:
    """Fresh paper-width SAC networks (Humanoid-v5 sizes, AdamW with state) and the two ways to reset them (the
    paper-sac recipe: every Linear of the actor and both critics)."""
    nets = sac_networks(SAC_OBS_DIM, SAC_ACT_DIM, device, seed, args)
    for optimizer in nets["optimizers"]:
        _prime_optimizer(optimizer)
    gen = torch.Generator(device=device).manual_seed(seed)
    probe_obs = torch.randn(PROBE_BATCH, SAC_OBS_DIM, device=device, generator=gen)
    probe_act = torch.rand(PROBE_BATCH, SAC_ACT_DIM, device=device, generator=gen) * 2 - 1
    config = ResetConfig(method=method, recipe="paper-sac", at=(SAC_PAPER_ENV_STEPS // 2,))
    scheduler = ResetScheduler(config, total_steps=SAC_PAPER_ENV_STEPS)
    actor_opt, q_opt, alpha_opt = nets["optimizers"]
    scheduler.add_network("actor", nets["actor"], optimizer=actor_opt, probe=lambda: (probe_obs,))
    for name in ("qf1", "qf2"):
        scheduler.add_network(name, nets[name], target=nets[f"{name}_target"], optimizer=q_opt,
                              probe=lambda: (probe_obs, probe_act))  # fmt: skip
    scheduler.add_temperature(nets["log_alpha"], alpha_opt)

    def through_scheduler():
        return scheduler.apply(SAC_PAPER_ENV_STEPS // 2, SAC_PAPER_UPDATES // 2)

    def raw():
        for name in ("actor", "qf1", "qf2"):
            net, theta0 = nets[name], scheduler.theta0(name)
            if method == "fire":
                fire_(net, select_layers(net), measure=False)
            elif method == "sp":
                shrink_perturb_(net, select_layers(net), theta0, alpha=0.2, measure=False)
            else:
                inject_plasticity(net, "head", theta0=theta0, measure=False)

    return through_scheduler, raw


def bench_resets(device: torch.device, repeats: int, seed: int, results: dict, sac_args) -> dict:
    """Each (network, method, path): median wall time over `repeats` resets of fresh networks, and its share of a
    paper-preset run estimated from the update rate (and from the loop's seconds per env step when measured)."""
    dqn_rate = results.get("dqn", {}).get("update", {}).get("updates_per_s")
    sac_rate = results.get("sac", {}).get("update", {}).get("updates_per_s")
    run_s = {
        "dqn": DQN_PAPER_UPDATES / dqn_rate if dqn_rate else None,
        "sac": SAC_PAPER_UPDATES / sac_rate if sac_rate else None,
    }
    loop_run_s = {}
    for kind, rr, steps in (("dqn", 1.0, DQN_PAPER_ENV_STEPS), ("sac", 2.0, SAC_PAPER_ENV_STEPS)):
        window = next((w for w in results.get(kind, {}).get("loop", []) if w["replay_ratio"] == rr), None)
        loop_run_s[kind] = window["s_per_env_step"] * steps if window else None
    rows = []
    for kind in ("dqn", "sac"):
        for method in ("fire", "sp", "pi"):
            for path in ("scheduler", "raw"):
                times = []
                for r in range(repeats):
                    if kind == "dqn":
                        cases = dqn_reset_case(method, device, seed + r)
                    else:
                        cases = sac_reset_case(method, device, seed + r, sac_args)
                    fn = cases[0] if path == "scheduler" else cases[1]
                    sync(device)
                    t0 = time.perf_counter()
                    fn()
                    sync(device)
                    times.append(time.perf_counter() - t0)
                seconds = statistics.median(times)
                row = {"network": kind, "method": method, "path": path, "seconds": seconds, "times": times}
                if run_s[kind]:
                    row["run_s_from_update_rate"] = run_s[kind]
                    row["share_pct_of_run"] = 100.0 * seconds / run_s[kind]
                if loop_run_s[kind]:
                    row["run_s_from_loop"] = loop_run_s[kind]
                    row["share_pct_of_loop_run"] = 100.0 * seconds / loop_run_s[kind]
                rows.append(row)
                share = f"{row['share_pct_of_run']:.2g}% of a paper run" if "share_pct_of_run" in row else ""
                print(f"  reset {kind:>3} {method:>4} via {path:>9}: {seconds:7.3f} s  {share}", flush=True)
    return {"repeats": repeats, "cases": rows}


# ----------------------------------------------------------------------------------------------------------------------
# Replay memory
# ----------------------------------------------------------------------------------------------------------------------


def bench_buffer_memory(capacity: int, device: torch.device) -> dict:
    """VmRSS growth of a real `AtariReplayBuffer(capacity, 1)` once every page of its arrays is written.

    Writing every page commits it exactly as `add` would; filling through `add` (capacity calls) takes minutes.
    Skipped (with the numbers) when MemAvailable is below 1.25x the buffer's size.
    """
    need = AtariReplayBuffer.memory_bytes(capacity, 1)
    available = meminfo_bytes("MemAvailable")
    out: dict = {"capacity": capacity, "memory_bytes_formula": need, "frames_bytes": capacity * 84 * 84,
                 "mem_available_bytes": available}  # fmt: skip
    if available is not None and need * 1.25 > available:
        out["skipped"] = f"buffer needs {need / 1e9:.2f} GB, {available / 1e9:.2f} GB available"
        print(f"  buffer memory: skipped ({out['skipped']})")
        return out
    gc.collect()
    rss0 = vm_rss_bytes()
    rb = AtariReplayBuffer(capacity, 1, device=device)
    rss_alloc = vm_rss_bytes()
    t0 = time.perf_counter()
    rb.frames.fill(1)
    for array in (rb.actions, rb.rewards, rb.terminated, rb.truncated, rb.is_transition, rb.offset):
        array.fill(0)
    out["touch_s"] = time.perf_counter() - t0
    rss_full = vm_rss_bytes()
    del rb
    gc.collect()
    rss_freed = vm_rss_bytes()
    out.update(
        rss_growth_after_alloc_bytes=rss_alloc - rss0,
        rss_growth_filled_bytes=rss_full - rss0,
        rss_after_free_growth_bytes=rss_freed - rss0,
        ratio_to_frames=(rss_full - rss0) / (capacity * 84 * 84),
        # CleanRL's dqn_atari.py (SB3 buffer with optimize_memory_usage) keeps a whole (4, 84, 84) stack per step.
        cleanrl_stack_bytes=capacity * 4 * 84 * 84,
    )
    return out


def fill_atari_buffer(rb: AtariReplayBuffer, steps: int, episode_length: int, seed: int) -> float:
    """Fill `rb` through `add` with `steps` transitions of synthetic frames (episodes of `episode_length`, the last
    one terminated); returns the mean seconds per `add`."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, size=(64, 84, 84), dtype=np.uint8)
    actions, rewards = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.float32)
    no = np.zeros(1, dtype=bool)
    t_add, t = 0.0, 0
    while t < steps:
        obs = np.repeat(pool[t % 64][None, None], 4, axis=1)  # an episode starts with 4 copies of its first frame
        for k in range(min(episode_length, steps - t)):
            next_obs = np.concatenate([obs[:, 1:], pool[(t + 1) % 64][None, None]], axis=1)
            terminated = np.array([k == episode_length - 1])
            t0 = time.perf_counter()
            rb.add(obs, next_obs, actions, rewards, terminated, no)
            t_add += time.perf_counter() - t0
            obs, t = next_obs, t + 1
    return t_add / steps


def sampling_rate(buffer, batch: int, device: torch.device, seconds: float) -> dict:
    """Median microseconds per `buffer.sample(batch)` and batches per second, over `seconds`."""
    times = call_times(lambda: buffer.sample(batch), device, seconds=seconds, min_calls=20)
    return {"transitions": len(buffer), "batch": batch, "sample_us_median": 1e6 * statistics.median(times),
            "batches_per_s": len(times) / sum(times)}  # fmt: skip


def bench_buffer(capacity: int, seconds: float, device: torch.device, seed: int) -> dict:
    """Replay memory section: resident memory of a full Atari buffer, and sampling rates of 100k buffers."""
    out: dict = {"memory": bench_buffer_memory(capacity, device)}
    atari = AtariReplayBuffer(100_000, 1, device=device, seed=seed)
    add_s = fill_atari_buffer(atari, 100_000, episode_length=1_000, seed=seed)
    out["atari_100k"] = {"add_us": 1e6 * add_s, **sampling_rate(atari, DQN_BATCH, device, seconds / 3)}
    atari = None  # frees its 0.7 GB before the next buffer
    rng = np.random.default_rng(seed)
    vector = ReplayBuffer(100_000, (SAC_OBS_DIM,), (SAC_ACT_DIM,), device=device, seed=seed)
    n = 1_000
    for _ in range(100):
        vector.add(rng.standard_normal((n, SAC_OBS_DIM), dtype=np.float32),
                   rng.standard_normal((n, SAC_OBS_DIM), dtype=np.float32),
                   rng.uniform(-1, 1, (n, SAC_ACT_DIM)).astype(np.float32), rng.standard_normal(n),
                   np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))  # fmt: skip
    out["vector_100k"] = sampling_rate(vector, SAC_BATCH, device, seconds / 3)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Candidate fast paths (measured against the agents' eager updates)
# ----------------------------------------------------------------------------------------------------------------------


def bench_dqn_speedups(dqn: ModuleType, device: torch.device, seconds: float, seed: int) -> list[dict]:
    """DQN update variants against the agent's eager update (batch 32), each from the same initial state."""
    args = dqn.resolve_args(dqn.Args(preset="cleanrl"))
    data = dqn_batch(DQN_ACTIONS, DQN_BATCH, device, seed)
    variants = {  # name: (fused Adam, channels_last, bf16 autocast)
        "eager (reference)": (False, False, False),
        "fused Adam": (True, False, False),
        "channels_last": (False, True, False),
        "fused + channels_last (agent default)": (True, True, False),
        "bf16 autocast": (False, False, True),
        "all three": (True, True, True),
    }

    def build(fused: bool, channels_last: bool, bf16: bool) -> tuple[Callable[[], dict], list]:
        q_network, target_network = dqn_networks(device, seed)
        if channels_last:
            q_network.to(memory_format=torch.channels_last)
            target_network.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, eps=args.adam_eps,
                                     fused=fused or None)  # fmt: skip
        regularizer = no_regularizer(q=q_network)

        def run() -> dict:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return dqn.update(q_network, target_network, optimizer, regularizer, data, args.gamma, args.loss,
                                  args.double_dqn)  # fmt: skip

        return run, list(q_network.parameters())

    parity = {}
    for name, flags in variants.items():
        run, watched = build(*flags)
        start = [p.detach().clone() for p in watched]
        run()
        loss = run()["td_loss"].item()  # the second update's loss: it sees the first update's step
        parity[name] = (loss, [p.detach() - p0 for p, p0 in zip(watched, start)])
    fns = {name: build(*flags)[0] for name, flags in variants.items()}
    times = interleaved_times(fns, device, seconds, calls_per_round=3)
    return speedup_rows(times, parity, "eager (reference)")


def speedup_rows(times: dict[str, list[float]], parity: dict[str, tuple], baseline: str) -> list[dict]:
    """Rows of the speedup table. `parity[name]` = (the second update's loss, the parameter changes of the watched
    network over two updates); both are compared with the baseline's: relative loss difference, and
    ‖Δθ_variant − Δθ_baseline‖ / ‖Δθ_baseline‖ over all watched parameters."""
    base = statistics.median(times[baseline])
    base_loss, base_delta = parity[baseline]
    base_norm = torch.sqrt(sum(d.double().square().sum() for d in base_delta))
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        loss, delta = parity[name]
        diff = torch.sqrt(sum((d.double() - b.double()).square().sum() for d, b in zip(delta, base_delta)))
        rows.append({
            "variant": name, "calls": len(ts), "median_ms": 1e3 * median, "updates_per_s": 1.0 / median,
            "speedup": base / median, "loss_rel_diff": abs(loss - base_loss) / max(abs(base_loss), 1e-12),
            "update_rel_diff": float(diff / base_norm),
        })  # fmt: skip
    return rows


def bench_sac_speedups(sac: ModuleType, device: torch.device, seconds: float, seed: int) -> list[dict]:
    """SAC update variants against the agent's eager update (paper widths, batch 256), from the same initial state."""
    args = sac.resolve_args(sac.Args())
    data = sac_batch(SAC_OBS_DIM, SAC_ACT_DIM, SAC_BATCH, device, seed)
    variants = {  # name: (fused AdamW, bf16 autocast)
        "eager (reference)": (False, False),
        "fused AdamW (agent default)": (True, False),
        "bf16 autocast": (False, True),
        "fused + bf16": (True, True),
    }

    def build(fused: bool, bf16: bool) -> tuple[Callable[[], dict], list]:
        nets = sac_networks(SAC_OBS_DIM, SAC_ACT_DIM, device, seed, args)
        critic_params = [*nets["qf1"].parameters(), *nets["qf2"].parameters()]
        optimizers = sac_optimizers(nets["actor"], critic_params, nets["log_alpha"], args, fused=fused or None)
        nets["optimizers"] = optimizers
        regularizer = no_regularizer(actor=nets["actor"], qf1=nets["qf1"], qf2=nets["qf2"])

        def run() -> dict:
            # Same noise in every variant: the parity check compares losses after two updates.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                return sac_update_call(sac, nets, data, args, regularizer)

        # The actor has the same structure in every variant, and its second step depends on the critics' first.
        return run, list(nets["actor"].parameters())

    parity = {}
    for name, flags in variants.items():
        run, watched = build(*flags)
        start = [p.detach().clone() for p in watched]
        torch.manual_seed(seed)
        run()
        stats = run()
        loss = (stats["qf1_loss"] + stats["qf2_loss"]).item()
        parity[name] = (loss, [p.detach() - p0 for p, p0 in zip(watched, start)])
    fns = {name: build(*flags)[0] for name, flags in variants.items()}
    times = interleaved_times(fns, device, seconds, calls_per_round=1)
    return speedup_rows(times, parity, "eager (reference)")


# ----------------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------------

LOOP_PHASES = ("act", "env", "obs_norm", "buffer_add", "sample", "update", "log", "target", "metrics", "reset", "other")


def print_loop_row(kind: str, w: dict) -> None:
    ms = w["phase_ms_per_env_step"]
    cells = " ".join(f"{ms.get(p, 0.0):8.3f}" for p in LOOP_PHASES)
    print(f"  {kind} RR {w['replay_ratio']:>4}: {w['env_steps_per_s']:8.1f} env/s {w['updates_per_s']:7.2f} upd/s |"
          f" {cells}", flush=True)  # fmt: skip


def print_loop_header() -> None:
    print(f"  {'':>13}{'':>13}{'':>12}   " + " ".join(f"{p:>8}" for p in LOOP_PHASES) + "  (ms per env step)")


def print_summary(results: dict) -> None:
    """The readable table of everything measured."""
    m = results["machine"]
    print("\n" + "=" * 118)
    print(f"{m['cpu_model']} | {m['device']} ({m['device_name']}) | torch {m['torch']} | threads {m['threads']} | "
          f"load {m['loadavg_start']} -> {m['loadavg_end']}")  # fmt: skip
    if "peak" in results:
        p = results["peak"]
        sizes = "; ".join(f"{n}: fp32 {r['fp32_gflops_best']:.1f} / bf16 {r['bf16_gflops_best']:.1f}"
                          for n, r in p["by_n"].items())  # fmt: skip
        print(f"GEMM GFLOP/s (best of 7) {sizes}; peak (fp32) {p['peak_gflops']:.1f}")
    for kind in ("dqn", "sac"):
        if kind not in results:
            continue
        r = results[kind]
        print(f"\n{kind.upper()} loop on {r['env_id']}")
        print_loop_header()
        for w in r["loop"]:
            print_loop_row(kind, w)
        print(f"  metrics event {r['metrics_event_s'] * 1e3:.1f} ms every {r['metrics_every_env_steps']:,} env steps "
              f"= {r['metrics_amortised_ms_per_env_step']:.4f} ms per env step")  # fmt: skip
        if fit := r.get("linear_fit"):
            print(f"  linear fit: s/env step = {fit['intercept_s_per_env_step'] * 1e3:.3f} ms + RR x "
                  f"{fit['slope_s_per_update'] * 1e3:.2f} ms (R^2 {fit['r2']:.4f}); per update measured in the loop "
                  f"{', '.join(f'{x * 1e3:.2f}' for x in fit['measured_s_per_update'])} ms")  # fmt: skip
        u = r["update"]
        pct = f", {u['pct_of_peak']:.1f}% of peak" if "pct_of_peak" in u else ""
        print(f"  update alone (batch {u['batch']}): {u['updates_per_s']:.2f} upd/s ({u['median_s'] * 1e3:.1f} ms), "
              f"{u['gflop']:.2f} GFLOP -> {u['gflops_achieved']:.1f} GFLOP/s{pct}")  # fmt: skip
        if "split_ms" in u:
            print("  split: " + ", ".join(f"{k} {v:.1f} ms" for k, v in u["split_ms"].items())
                  + f"; target copy {u['target_copy_ms']:.2f} ms")  # fmt: skip
        if "op_profile" in u:
            prof = u["op_profile"]
            d = prof["default_update"]
            pct = f", {d['pct_of_peak']:.1f}% of peak" if "pct_of_peak" in d else ""
            print(f"  the agent's default update: {d['updates_per_s']:.2f} upd/s ({d['median_s'] * 1e3:.1f} ms), "
                  f"{d['gflops_achieved']:.1f} GFLOP/s{pct}")  # fmt: skip
            print(f"  profile of the default update ({prof['wall_ms_per_update_profiled']:.1f} ms): "
                  + ", ".join(f"{g} {v:.1f} ms" for g, v in sorted(prof["ms_per_update"].items(), key=lambda x: -x[1]))
                  + "; " + ", ".join(f"{g} {v:.0f} GFLOP/s" for g, v in prof["gflops"].items()))  # fmt: skip
        if "target_ema_ms" in u:
            print(f"  target EMA (inside update) {u['target_ema_ms']:.2f} ms")
    if "resets" in results:
        print("\nResets (median wall s; share of a paper-preset run from the update rate / from the loop)")
        for row in results["resets"]["cases"]:
            share = f"{row['share_pct_of_run']:.2g}%" if "share_pct_of_run" in row else "-"
            loop_share = f"{row['share_pct_of_loop_run']:.2g}%" if "share_pct_of_loop_run" in row else "-"
            print(f"  {row['network']:>3} {row['method']:>4} {row['path']:>9}: {row['seconds']:8.3f} s  {share:>9} "
                  f"{loop_share:>9}")  # fmt: skip
    if "buffer" in results:
        b = results["buffer"]
        mem = b["memory"]
        if "skipped" in mem:
            print(f"\nBuffer memory: skipped ({mem['skipped']})")
        else:
            grown = mem["rss_growth_filled_bytes"] / 1e9
            print(f"\nAtariReplayBuffer({mem['capacity']:,}): RSS +{grown:.2f} GB filled "
                  f"(+{mem['rss_growth_after_alloc_bytes'] / 1e9:.3f} GB right after allocation) vs frames "
                  f"{mem['frames_bytes'] / 1e9:.2f} GB (x{mem['ratio_to_frames']:.3f}); CleanRL stacks "
                  f"{mem['cleanrl_stack_bytes'] / 1e9:.1f} GB")  # fmt: skip
        a, v = b["atari_100k"], b["vector_100k"]
        print(f"Atari 100k: sample({a['batch']}) {a['sample_us_median']:.0f} us, {a['batches_per_s']:.0f} batches/s; "
              f"add {a['add_us']:.1f} us | vector 100k: sample({v['batch']}) {v['sample_us_median']:.0f} us, "
              f"{v['batches_per_s']:.0f} batches/s")  # fmt: skip
    if "speedups" in results:
        for kind, rows in results["speedups"].items():
            print(f"\n{kind.upper()} update variants (interleaved; speedup vs the eager reference)")
            for row in rows:
                print(f"  {row['variant']:>42}: {row['median_ms']:8.1f} ms  x{row['speedup']:.2f}  loss rel diff "
                      f"{row['loss_rel_diff']:.1e}  update rel diff {row['update_rel_diff']:.1e}")  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def parse_ratios(text: str, flag: str) -> list[float]:
    try:
        ratios = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as err:
        raise ValueError(f"{flag}={text!r}: give comma-separated positive numbers, e.g. 0.25,1,4") from err
    if not ratios or any(not r > 0 for r in ratios):
        raise ValueError(f"{flag}={text!r}: give comma-separated positive numbers, e.g. 0.25,1,4")
    return ratios


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the flag, its value and what is allowed, before any work."""
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if not only or any(s not in SECTIONS for s in only):
        raise ValueError(f"--only={args.only!r}: a comma-separated subset of {','.join(SECTIONS)}")
    args.only = only
    for name in ("threads", "reset_repeats", "gemm_n", "buffer_capacity"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    if not args.seconds > 0:
        raise ValueError(f"--seconds={args.seconds}: must be > 0")
    if args.fill < DQN_BATCH + 10:
        raise ValueError(f"--fill={args.fill}: must be >= {DQN_BATCH + 10} env steps (a batch must be sampleable)")
    args.dqn_ratios = parse_ratios(args.dqn_ratios, "--dqn-ratios")
    args.sac_ratios = parse_ratios(args.sac_ratios, "--sac-ratios")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device=cuda: no CUDA device is available; allowed here: auto, cpu")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"sections to run (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="timed window per loop ratio and per speedup variant; update cost: half")  # fmt: skip
    parser.add_argument("--fill", type=int, default=5_000, help="random env steps filling the DQN buffer first")
    parser.add_argument("--dqn-ratios", default="0.25,1,4", help="DQN replay ratios (updates per env step)")
    parser.add_argument("--sac-ratios", default="1,2,4", help="SAC replay ratios (updates per agent step)")
    parser.add_argument("--reset-repeats", type=int, default=3, help="resets per case (median reported)")
    parser.add_argument("--gemm-n", type=int, default=2048, help="size n of the n x n x n GEMM of the peak")
    parser.add_argument("--buffer-capacity", type=int, default=1_000_000, help="Atari buffer whose memory is measured")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/bench_<host>.json)")
    args = parser.parse_args()
    try:
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")  # fmt: skip
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "cpu")
    out_path = args.out or ROOT / "benchmarks" / f"bench_{host}{'_cuda' if device.type == 'cuda' else ''}.json"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    results: dict = {
        "machine": {
            "host": host, "cpu_model": cpu_model(), "cpu_flags": cpu_flags_of_note(), "cpu_count": os.cpu_count(),
            "device": str(device), "device_name": device_name, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "loadavg_start": load_average(), "mem_available_bytes": meminfo_bytes("MemAvailable"),
        },
        "config": {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()},
        "section_loadavg": {},
    }  # fmt: skip
    print(f"{device_name} | device {device} | torch {torch.__version__} | threads {torch.get_num_threads()} | "
          f"load {load_average()} | sections {','.join(args.only)}", flush=True)  # fmt: skip
    started = time.perf_counter()

    def section(name: str, fn: Callable[[], object]) -> None:
        before = load_average()
        t0 = time.perf_counter()
        print(f"\n[{name}]", flush=True)
        results[name] = fn()
        results["section_loadavg"][name] = {"before": before, "after": load_average(),
                                            "seconds": time.perf_counter() - t0}  # fmt: skip

    peak = None
    if {"peak", "dqn", "sac"} & set(args.only):
        section("peak", lambda: bench_peak(device, args.gemm_n))
        peak = results["peak"]
        print(f"  fp32 peak {peak['peak_gflops']:.1f} GFLOP/s, bf16 {peak['bf16_peak_gflops']:.1f} (best over sizes)")
    dqn = load_agent("dqn_atari") if {"dqn", "speedups"} & set(args.only) else None
    sac = load_agent("sac_simba") if {"sac", "resets", "speedups"} & set(args.only) else None
    if "dqn" in args.only:
        print_loop_header()
        section("dqn", lambda: bench_dqn(dqn, device, args.dqn_ratios, args.seconds, args.fill, args.seed, peak))
    if "sac" in args.only:
        print_loop_header()
        section("sac", lambda: bench_sac(sac, device, args.sac_ratios, args.seconds, args.seed, peak))
    if "resets" in args.only:
        sac_args = sac.resolve_args(sac.Args())
        section("resets", lambda: bench_resets(device, args.reset_repeats, args.seed, results, sac_args))
    if "buffer" in args.only:
        section("buffer", lambda: bench_buffer(args.buffer_capacity, args.seconds, device, args.seed))
    if "speedups" in args.only:
        section("speedups", lambda: {
            "dqn": bench_dqn_speedups(dqn, device, args.seconds, args.seed),
            "sac": bench_sac_speedups(sac, device, args.seconds, args.seed),
        })  # fmt: skip

    results["machine"]["loadavg_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - started
    print_summary(results)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out_path} ({results['total_seconds']:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
