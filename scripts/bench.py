"""Benchmark the agents' own code (update, processes, resets, replay memory), the polar kernel and the Atari envs.

    python scripts/bench.py                                   # every section, 1 thread -> benchmarks/bench_<host>.json
    python scripts/bench.py --only peak,dqn --seconds 5 --threads 2 --out /tmp/bench.json

Sections (``--only``; every figure is described in benchmarks/README.md):
- ``peak``: fp32 (and bf16) ``torch.mm`` of n x n matrices; ``peak_gflops`` is what every "% of peak" refers to.
- ``dqn``, ``sac``: the agent's `update` from ``agents/<agent>.py`` on a fixed random batch: time, FLOPs
  (``FlopCounterMode``), % of peak; the fast paths against the eager reference (``torch.utils.benchmark.Compare``)
  with their parity (``--compile``: also compiled, and on CUDA captured as CUDA graphs); for DQN on CPU the time per
  op group (``torch.profiler``). Then the agent process at each replay
  ratio: env steps/s while learning (tensorboard's wall times), peak resident memory (psutil), a linear fit.
- ``resets``: FIRE, Shrink & Perturb and plasticity injection through `ResetScheduler.apply` on fresh paper networks,
  and the FIRE kernel alone.
- ``buffer``: resident memory of an ``AtariReplayBuffer(--buffer-capacity)`` against capacity x 84 x 84 bytes;
  ``sample(32)`` from it, ``sample(256)`` from SAC's ``ReplayBuffer``.
- ``polar``: the polar-factor kernel per method and shape (max|σ − 1|, time), and `fire_` on whole networks.
- ``envs``: env steps/s of the raw Atari vector env, the sync wrapper stack against ale-py's ``AtariVectorEnv``.

Timings use ``torch.utils.benchmark.Timer`` with ``--threads`` torch threads (the agent processes get ``--threads``
too); on CUDA it synchronises around each timed call. The JSON keeps the load average around each section.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.benchmark import Compare, Measurement, Timer
from torch.utils.flop_counter import FlopCounterMode

from fire_rl.buffers import AtariReplayBuffer, ReplayBatch, ReplayBuffer
from fire_rl.envs.atari import BACKENDS, make_atari_env
from fire_rl.networks import QNetwork, RSNorm, SimbaActor, SimbaCritic
from fire_rl.polar import polar, polar_with_info
from fire_rl.regularizers import Regularizer
from fire_rl.resets import fire_, select_layers
from fire_rl.runtime import compiled
from fire_rl.scheduler import ResetConfig, ResetScheduler

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("peak", "dqn", "sac", "resets", "buffer", "polar", "envs")
# Humanoid-v5 sizes and Breakout's minimal action set: an update's cost barely depends on them.
SAC_OBS, SAC_ACT, DQN_ACTIONS = 348, 17, 4
ENV_IDS = {"dqn": "ALE/Breakout-v5", "sac": "Humanoid-v5"}
# Gradient updates of a paper-preset run: DQN 2.5M env steps at RR 1; SAC 1M env steps, RR 2 per agent step of 2.
PAPER_UPDATES = {"dqn": 2_500_000, "sac": 1_000_000}
# torch.profiler op names -> groups, by substring, first match wins; FlopCounterMode's aten ops -> the same groups.
OP_GROUPS = [("convolution_backward", "conv_backward"), ("convolution", "conv_forward"), ("adam", "optimizer")]
OP_GROUPS += [("mm", "gemm"), ("linear", "gemm"), ("copy", "copies"), ("clone", "copies"), ("contiguous", "copies")]
FLOP_GROUPS = {"convolution": "conv_forward", "convolution_backward": "conv_backward", "addmm": "gemm", "mm": "gemm"}


def load_agent(name: str):
    """``agents/<name>.py`` as a module (the agents are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "agents" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def timed(fn, seconds: float, label: str = "", sub_label: str = "") -> Measurement:
    """``Timer.blocked_autorange`` of `fn` for at least `seconds`, after one untimed warm-up call; `Compare` tables
    put `label` above, `sub_label` on the rows and the thread count on the columns."""
    fn()
    threads = torch.get_num_threads()
    timer = Timer("fn()", globals={"fn": fn}, label=label, sub_label=sub_label, description=f"{threads} thread(s)",
                  num_threads=threads)  # fmt: skip
    return timer.blocked_autorange(min_run_time=seconds)


def rate(m: Measurement, flops: float, peak: dict | None) -> dict:
    """Median seconds and updates/s of a timed update, its GFLOP, GFLOP/s and share of the GEMM peak."""
    out = {"calls": len(m.times) * m.number_per_run, "median_s": m.median, "updates_per_s": 1.0 / m.median}
    out |= {"gflop": flops / 1e9, "gflops_achieved": flops / m.median / 1e9}
    if peak:
        out["pct_of_peak"] = 100.0 * out["gflops_achieved"] / peak["peak_gflops"]
    return out


def flops_of(fn) -> tuple[float, dict[str, float]]:
    """FLOPs of one call of `fn` (``FlopCounterMode``: matmuls and convolutions), in total and per aten op."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = {str(op).split(".")[-1]: float(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return float(counter.get_total_flops()), per_op


def bench_peak(device: torch.device, n: int, seconds: float) -> dict:
    """GFLOP/s (2n³ FLOPs per call) of fp32 and bf16 ``torch.mm`` at 512, 1024 and `n` (median and best block);
    ``peak_gflops``: the best fp32 rate (on a shared machine the largest size is not always the fastest)."""
    by_n = {}
    for size in sorted({512, 1024, n}):
        by_n[size] = {}
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            a = torch.randn(size, size, device=device, dtype=dtype)
            m = timed(lambda a=a: torch.mm(a, a), seconds / 6)
            by_n[size][f"{name}_gflops_median"] = 2 * size**3 / m.median / 1e9
            by_n[size][f"{name}_gflops_best"] = 2 * size**3 / min(m.times) / 1e9
    best = {kind: max(row[f"{kind}_gflops_best"] for row in by_n.values()) for kind in ("fp32", "bf16")}
    return {"n": n, "by_n": by_n, "peak_gflops": best["fp32"], "bf16_peak_gflops": best["bf16"]}


# ----------------------------------------------------------------------------------------------------------- updates
def batch(size: int, obs: tuple[int, ...], actions, device: torch.device, seed: int, layout) -> ReplayBatch:
    """A fixed random batch: uint8 stacks (Atari) or float32 vectors, integer or [-1, 1] actions, no terminal."""
    gen = torch.Generator().manual_seed(seed)

    def observations():
        if len(obs) == 1:
            return torch.randn(size, *obs, generator=gen).to(device)
        return torch.randint(0, 256, (size, *obs), dtype=torch.uint8, generator=gen).to(device, memory_format=layout)

    acts = torch.randint(0, actions, (size,), generator=gen) if len(obs) > 1 else torch.rand(size, actions) * 2 - 1
    return ReplayBatch(observations=observations(), actions=acts.to(device), rewards=torch.rand(size).to(device),
                       next_observations=observations(), dones=torch.zeros(size, device=device))  # fmt: skip


def dqn_update(dqn, device: torch.device, seed: int, fused: bool, channels_last: bool, bf16: bool, graphs: int = 0):
    """The agent's DQN `update` on Nature-CNN networks and 32 random stacks: ``(call, watched parameters)``; `graphs`
    1 compiles it (``--compile``), 2 also captures CUDA graphs (``--cudagraphs``)."""
    update = compiled(dqn.update, graphs >= 1, graphs == 2)
    torch.manual_seed(seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    q_network, target_network = (QNetwork(DQN_ACTIONS).to(device, memory_format=layout) for _ in range(2))
    target_network.load_state_dict(q_network.state_dict())
    optimizer = torch.optim.Adam(q_network.parameters(), lr=1e-4, fused=fused or None)
    data = batch(32, (4, 84, 84), DQN_ACTIONS, device, seed, layout)

    def call() -> dict:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
            return update(q_network, target_network, optimizer, Regularizer("none"), data, 0.99, "mse", False)

    return call, list(q_network.parameters())


def sac_update(sac, device: torch.device, seed: int, fused: bool, channels_last: bool, bf16: bool, graphs: int = 0):
    """The agent's SAC `update` on SimBa networks of its `Args` defaults (the paper widths) and 256 random
    Humanoid-sized samples: ``(call, watched parameters)``; `channels_last` does not apply; `graphs` as `dqn_update`."""
    args = sac.Args()
    update = compiled(sac.update, graphs >= 1, graphs == 2)
    torch.manual_seed(seed)
    actor = SimbaActor(SAC_OBS, SAC_ACT, args.actor_hidden, args.actor_blocks).to(device)
    critics = [SimbaCritic(SAC_OBS, SAC_ACT, args.critic_hidden, args.critic_blocks).to(device) for _ in range(4)]
    critics[2].load_state_dict(critics[0].state_dict())
    critics[3].load_state_dict(critics[1].state_dict())
    log_alpha = torch.tensor(float(np.log(args.alpha_init)), device=device, requires_grad=True)
    adamw = {"weight_decay": args.weight_decay, "fused": fused or None}
    optimizers = (torch.optim.AdamW(actor.parameters(), lr=args.actor_lr, **adamw),
                  torch.optim.AdamW([*critics[0].parameters(), *critics[1].parameters()], lr=args.critic_lr, **adamw),
                  torch.optim.AdamW([log_alpha], lr=args.alpha_lr, weight_decay=0.0, fused=fused or None))  # fmt: skip
    data, rsnorm = batch(256, (SAC_OBS,), SAC_ACT, device, seed, None), RSNorm(SAC_OBS).to(device)

    def call() -> dict:
        torch.manual_seed(seed)  # the same policy noise in every variant, for the parity check
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(bf16)):
            return update(actor, *critics, rsnorm, log_alpha, optimizers, Regularizer("none"), data, args,
                          -args.target_entropy_scale * SAC_ACT)  # fmt: skip

    return call, list(actor.parameters())  # the actor's second step depends on the critics' first


VARIANTS = {  # name: (fused Adam(W), channels_last, bf16 autocast[, graphs]); the first is the reference
    "dqn": {"eager (reference)": (0, 0, 0), "fused Adam": (1, 0, 0), "channels_last": (0, 1, 0),
            "fused + channels_last (agent default)": (1, 1, 0), "bf16 autocast": (0, 0, 1)},
    "sac": {"eager (reference)": (0, 0, 0), "fused AdamW (agent default)": (1, 0, 0), "bf16 autocast": (0, 0, 1),
            "fused + bf16": (1, 0, 1)},
}  # fmt: skip
# With --compile: the agent defaults compiled (1, --compile) and, on CUDA, captured (2, --cudagraphs).
COMPILED = {"dqn": {"--compile": (1, 1, 0, 1), "--cudagraphs": (1, 1, 0, 2)},
            "sac": {"--compile": (1, 0, 0, 1), "--cudagraphs": (1, 0, 0, 2)}}  # fmt: skip


def variants(kind: str, device: torch.device, compile: bool) -> dict[str, tuple]:
    """`VARIANTS` of `kind`, with `COMPILED` (CUDA graphs on CUDA only) if `compile`."""
    extra = {k: v for k, v in COMPILED[kind].items() if compile and (v[3] < 2 or device.type == "cuda")}
    return {**VARIANTS[kind], **extra}


def bench_update(kind: str, agent, device: torch.device, seconds: float, seed: int, peak: dict | None,
                 compile: bool = False) -> dict:  # fmt: skip
    """The eager reference update (time, FLOPs, % of peak) and each of `VARIANTS` against it, timed in 3 interleaved
    rounds so that load changes hit all alike. Parity: relative difference of the second update's loss (SAC: qf1 +
    qf2) and ‖Δθ − Δθ_ref‖ / ‖Δθ_ref‖ over the watched network, after two updates from identical states."""
    build = dqn_update if kind == "dqn" else sac_update
    parity, measurements = {}, defaultdict(list)
    cases = variants(kind, device, compile)
    for name, flags in cases.items():
        call, watched = build(agent, device, seed, *flags)
        start = [p.detach().clone() for p in watched]
        call()
        stats = call()
        loss = float(stats["td_loss"] if kind == "dqn" else stats["qf1_loss"] + stats["qf2_loss"])
        parity[name] = (loss, torch.cat([(p.detach() - p0).double().ravel() for p, p0 in zip(watched, start)]))
    calls = {name: build(agent, device, seed, *flags)[0] for name, flags in cases.items()}
    for _ in range(3):
        for name, call in calls.items():
            measurements[name].append(timed(call, seconds / 3, f"{kind} update", name))
    merged = {name: Measurement.merge(ms)[0] for name, ms in measurements.items()}
    Compare(list(merged.values())).print()
    (ref, m_ref), (ref_loss, ref_delta) = next(iter(merged.items())), next(iter(parity.values()))
    flops, per_op = flops_of(calls[ref])
    out = {**rate(m_ref, flops, peak), "batch": 32 if kind == "dqn" else 256, "flops_by_op": per_op, "variants": []}
    for name, m in merged.items():
        loss, delta = parity[name]
        out["variants"].append({"variant": name, "median_ms": 1e3 * m.median, "speedup": m_ref.median / m.median,
                                "loss_rel_diff": abs(loss - ref_loss) / max(abs(ref_loss), 1e-12),
                                "update_rel_diff": float((delta - ref_delta).norm() / ref_delta.norm())})  # fmt: skip
    if kind == "dqn" and device.type == "cpu":
        default = "fused + channels_last (agent default)"
        out["op_profile"] = op_profile(calls[default], merged[default], peak)
    return out


def op_profile(call, m: Measurement, peak: dict | None, calls: int = 10) -> dict:
    """The agent's default DQN update under ``torch.profiler``: self time per op group (`OP_GROUPS`; the rest, ReLU,
    input scaling and loss, is ``elementwise_other``) in ms per update and share, and the GFLOP/s of the groups that
    carry FLOPs (`FLOP_GROUPS`): where the update's distance from the GEMM peak comes from."""
    flops, per_op = flops_of(call)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            call()
    ms, group_flops = defaultdict(float), defaultdict(float)
    for event in prof.key_averages():
        group = next((g for key, g in OP_GROUPS if key in event.key.lower()), "elementwise_other")
        ms[group] += event.self_cpu_time_total / 1e3 / calls
    for op, n in per_op.items():
        group_flops[FLOP_GROUPS.get(op, "other")] += n
    gflops = {g: group_flops[g] / ms[g] / 1e6 for g in set(FLOP_GROUPS.values()) if ms[g] > 0}
    share = {g: 100 * v / sum(ms.values()) for g, v in ms.items()}
    return {"default_update": rate(m, flops, peak), "ms_per_update": dict(ms), "share_pct": share, "gflops": gflops}


# -------------------------------------------------------------------------------------------------------------- loops
def run_agent(agent: str, flags: list[str], threads: int, device: torch.device) -> dict:
    """``agents/<agent>.py`` with `flags` as a subprocess in a temporary run directory (no checkpoints but the last,
    no plasticity metrics, which would land in a short window): its peak resident memory (psutil, every 0.2 s) and
    every scalar event's ``(env step, wall time)``, read with tensorboard's reader.

    Raises:
        RuntimeError: the agent failed (the message ends with its output).
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    with tempfile.TemporaryDirectory(prefix=f"bench_{agent}_") as tmp, tempfile.TemporaryFile() as log:
        cmd = [sys.executable, str(ROOT / "agents" / f"{agent}.py"), *flags, "--threads", str(threads), "--device",
               device.type, "--run-dir", f"{tmp}/run", "--checkpoint-every", "0", "--metrics-every", "0"]  # fmt: skip
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
        )
        peak = 0
        while proc.poll() is None:
            peak = max(peak, psutil.Process(proc.pid).memory_info().rss)
            time.sleep(0.2)
        if proc.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {log.read().decode()[-2000:]}")
        acc = EventAccumulator(f"{tmp}/run", size_guidance={SCALARS: 0})
        acc.Reload()
        events = sorted((e.step, e.wall_time) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag))
    return {"rss_peak_mib": peak / 2**20, "events": events}


def learning_window(run: dict, fill: int) -> dict:
    """Env steps, wall seconds and env steps/s between the first and last scalar an agent run (`run_agent`) logged
    after env step `fill` (while learning). Raises ValueError when it logged fewer than two env steps there."""
    (s0, t0), *_, (s1, t1) = [(s, t) for s, t in run["events"] if s > fill] * 2
    if s1 == s0:  # the agents log every 100 updates and at episode ends
        raise ValueError(f"too few updates after env step {fill} to log two env steps")
    return {"env_steps": s1 - s0, "wall_s": t1 - t0, "env_steps_per_s": (s1 - s0) / (t1 - t0)}


def bench_loop(kind: str, ratios: list[float], updates: int, fill: int, threads: int, device: torch.device) -> dict:
    """The agent process at each replay ratio on `ENV_IDS`: `fill` env steps before learning, then `updates` gradient
    updates; env steps/s while learning = env steps / wall time between its first and last scalar after `fill`. The
    linear fit: seconds per env step = intercept (acting) + slope x updates per env step (slope: s per update)."""
    windows, agent_step = [], 2 if kind == "sac" else 1  # SAC: replay ratio per agent step of 2 env steps
    for rr in ratios:
        total = fill + int(updates / rr * agent_step)
        flags = ["--env-id", ENV_IDS[kind], "--learning-starts", str(fill), "--total-timesteps", str(total)]
        flags += ["--buffer-size", str(total), "--replay-ratio", str(rr)]
        run = run_agent("dqn_atari" if kind == "dqn" else "sac_simba", flags, threads, device)
        windows.append({"replay_ratio": rr, "updates_per_env_step": rr / agent_step, **learning_window(run, fill),
                        "flags": flags, "rss_peak_mib": run["rss_peak_mib"]})  # fmt: skip
        print(f"  {kind} loop at replay ratio {rr:g}: {windows[-1]['env_steps_per_s']:.1f} env steps/s while learning, "
              f"peak RSS {run['rss_peak_mib']:.0f} MiB", flush=True)  # fmt: skip
    out = {"env_id": ENV_IDS[kind], "fill_env_steps": fill, "updates_per_run": updates, "loop": windows}
    if len(windows) >= 2:
        x = np.array([w["updates_per_env_step"] for w in windows])
        y = np.array([1.0 / w["env_steps_per_s"] for w in windows])
        slope, intercept = np.polyfit(x, y, 1)
        residual = y - intercept - slope * x
        fit = {"slope_s_per_update": slope, "intercept_s_per_env_step": intercept, "r2": 1 - residual.var() / y.var()}
        out["linear_fit"] = fit | {"max_rel_residual": np.max(np.abs(residual) / y)}
    return out


# ------------------------------------------------------------------------------------------------------------ resets
def reset_case(kind: str, method: str, device: torch.device, seed: int, sac_args) -> tuple:
    """Fresh paper networks whose optimizers hold state, their scheduler (paper-dqn: Xavier Nature CNN and Adam;
    paper-sac: actor, both critics, AdamW, temperature), and the FIRE kernel alone on the recipe's FIRE layers (DQN:
    the convs; SAC: every Linear): ``(through_scheduler, raw_fire)``."""
    torch.manual_seed(seed)
    total, a = 2 * PAPER_UPDATES[kind], sac_args
    scheduler = ResetScheduler(
        ResetConfig(reset=method, reset_recipe=f"paper-{kind}", reset_at=(total // 2,)), total_steps=total
    )
    if kind == "dqn":
        nets = {"q": QNetwork(DQN_ACTIONS, init="xavier").to(device)}
        probe = (torch.randint(0, 256, (256, 4, 84, 84), dtype=torch.uint8, device=device),)
        optimizers = [torch.optim.Adam(nets["q"].parameters(), lr=6.25e-5, eps=1.5e-4)]
        target = QNetwork(DQN_ACTIONS, init="xavier").to(device)
        scheduler.add_network("q", nets["q"], target=target, optimizer=optimizers[0], probe=lambda: probe)
        layers = {"q": select_layers(nets["q"], kinds=["conv"])}
    else:
        nets = {"actor": SimbaActor(SAC_OBS, SAC_ACT, a.actor_hidden, a.actor_blocks).to(device)}
        nets |= {n: SimbaCritic(SAC_OBS, SAC_ACT, a.critic_hidden, a.critic_blocks).to(device) for n in ("qf1", "qf2")}
        log_alpha = torch.zeros((), device=device, requires_grad=True)
        critic_params = [*nets["qf1"].parameters(), *nets["qf2"].parameters()]
        optimizers = [torch.optim.AdamW(p) for p in (nets["actor"].parameters(), critic_params, [log_alpha])]
        obs, act = torch.randn(256, SAC_OBS, device=device), torch.rand(256, SAC_ACT, device=device) * 2 - 1
        scheduler.add_network("actor", nets["actor"], optimizer=optimizers[0], probe=lambda: (obs,))
        for name in ("qf1", "qf2"):
            target = SimbaCritic(SAC_OBS, SAC_ACT, a.critic_hidden, a.critic_blocks).to(device)
            scheduler.add_network(name, nets[name], target=target, optimizer=optimizers[1], probe=lambda: (obs, act))
        scheduler.add_temperature(log_alpha, optimizers[2])
        layers = {name: select_layers(net) for name, net in nets.items()}
    for optimizer in optimizers:  # a trained run's optimizers hold state: one step on zero gradients
        for p in (p for group in optimizer.param_groups for p in group["params"]):
            p.grad = torch.zeros_like(p)
        optimizer.step()
    through_scheduler = functools.partial(scheduler.apply, total // 2, PAPER_UPDATES[kind] // 2)
    return through_scheduler, lambda: [fire_(nets[name], layers[name], measure=False) for name in nets]


def bench_resets(device: torch.device, repeats: int, seed: int, results: dict, sac_args) -> dict:
    """Median seconds of `repeats` resets, each on fresh networks (built in the Timer's setup, one timed call), per
    (network, method, path), and their share of a paper-preset run at the update rate measured in ``dqn``/``sac``."""
    rows = []
    for kind in ("dqn", "sac"):
        for method, path in (("fire", "scheduler"), ("sp", "scheduler"), ("pi", "scheduler"), ("fire", "raw")):
            times = []
            for r in range(repeats):
                case = {"case": reset_case, "args": (kind, method, device, seed + r, sac_args)}
                setup = f"fn = case(*args)[{int(path == 'raw')}]"  # fresh networks, untimed
                times.append(Timer("fn()", setup, globals=case, num_threads=torch.get_num_threads()).timeit(1).median)
            row = {"network": kind, "method": method, "path": path, "seconds": float(np.median(times)), "times": times}
            if updates_per_s := results.get(kind, {}).get("update", {}).get("updates_per_s"):
                row["share_pct_of_run"] = 100.0 * row["seconds"] * updates_per_s / PAPER_UPDATES[kind]
            rows.append(row)
            print(f"  reset {kind} {method:>4} via {path:>9}: {row['seconds']:7.3f} s", flush=True)
    return {"repeats": repeats, "cases": rows}


# ------------------------------------------------------------------------------------------------------------ buffers
def _filled_atari(capacity: int, device: torch.device, seed: int, on_device: bool) -> tuple[AtariReplayBuffer, float]:
    """An ``AtariReplayBuffer(capacity, 1)`` filled through `add` (one 84 x 84 frame per call; episodes of 1,000 env
    steps), and the microseconds per `add`."""
    rb = AtariReplayBuffer(capacity, 1, device=device, seed=seed, on_device=on_device)
    stack = np.full((1, 4, 84, 84), 7, dtype=np.uint8)  # one frame over and over: `add` checks obs continues next_obs
    action, reward, no = np.zeros(1, np.int64), np.zeros(1, np.float32), np.zeros(1, bool)
    t0 = time.perf_counter()
    for t in range(capacity):
        rb.add(stack, stack, action, reward, np.array([t % 1_000 == 999]), no)
    return rb, 1e6 * (time.perf_counter() - t0) / capacity


def _filled_vector(device: torch.device, seed: int, on_device: bool) -> ReplayBuffer:
    """SAC's ``ReplayBuffer`` holding 100k Humanoid-sized transitions."""
    vector = ReplayBuffer(100_000, (SAC_OBS,), (SAC_ACT,), device=device, seed=seed, on_device=on_device)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        obs, zeros = rng.standard_normal((1_000, SAC_OBS), dtype=np.float32), np.zeros(1_000, bool)
        vector.add(obs, obs, np.zeros((1_000, SAC_ACT), np.float32), np.zeros(1_000, np.float32), zeros, zeros)
    return vector


def _sample_us(rb: AtariReplayBuffer | ReplayBuffer, batch: int, seconds: float) -> float:
    """Median microseconds of ``rb.sample(batch)``."""
    return 1e6 * timed(functools.partial(rb.sample, batch), seconds).median


def bench_buffer(capacity: int, seconds: float, device: torch.device, seed: int) -> dict:
    """Resident-memory growth (psutil RSS) of an ``AtariReplayBuffer(capacity, 1)`` filled through `add` against
    capacity x 84 x 84 bytes; ``sample(32)`` from it; ``sample(256)`` from SAC's ``ReplayBuffer`` holding 100k
    Humanoid-sized transitions. On a GPU also both with the memory on the device (``on_device``, the agents'
    ``--buffer-device``; the Atari one at 100k slots), sampled there.

    Raises:
        ValueError: the buffer would not fit in 80% of the available memory.
    """
    need, available = AtariReplayBuffer.memory_bytes(capacity, 1), psutil.virtual_memory().available
    if need * 1.25 > available:
        raise ValueError(f"--buffer-capacity={capacity}: needs {need / 1e9:.2f} GB, {available / 1e9:.2f} GB free")
    memory = {"capacity": capacity, "memory_bytes_formula": need, "frames_bytes": capacity * 84 * 84,
              "cleanrl_stack_bytes": capacity * 4 * 84 * 84, "mem_available_bytes": available}  # fmt: skip
    rss0 = psutil.Process().memory_info().rss
    rb, memory["add_us"] = _filled_atari(capacity, device, seed, on_device=False)
    memory["rss_growth_filled_bytes"] = psutil.Process().memory_info().rss - rss0
    memory["ratio_to_frames"] = memory["rss_growth_filled_bytes"] / memory["frames_bytes"]
    out = {"memory": memory, "atari": {"batch": 32, "sample_us_median": _sample_us(rb, 32, seconds / 4)}}
    del rb
    vector = _filled_vector(device, seed, on_device=False)
    out["vector_100k"] = {"batch": 256, "sample_us_median": _sample_us(vector, 256, seconds / 4)}
    if device.type == "cuda":  # --buffer-device
        rb, add_us = _filled_atari(100_000, device, seed, on_device=True)
        out["atari_on_device"] = {"batch": 32, "capacity": 100_000, "add_us": add_us,
                                  "sample_us_median": _sample_us(rb, 32, seconds / 4)}  # fmt: skip
        del rb
        vector = _filled_vector(device, seed, on_device=True)
        out["vector_100k_on_device"] = {"batch": 256, "sample_us_median": _sample_us(vector, 256, seconds / 4)}
    return out


# ------------------------------------------------------------------------------------------------------- polar, envs
POLAR_SHAPES = ((512, 3136), (512, 512), (2048, 512))  # DQN fc1 (transposed), SimBa h x h and 4h x h at h = 512
POLAR_CASES = {"ns10": {"method": "newton_schulz", "steps": 10},
               "ns_tol": {"method": "newton_schulz", "max_steps": 200},
               "pe_tol": {"method": "polar_express"}, "svd": {"method": "svd"}}  # fmt: skip


def bench_polar(device: torch.device, seconds: float, tol: float) -> dict:
    """`polar` on float32 Gaussian weights of `POLAR_SHAPES` per case: ``ns10`` (the paper's 10 cubic Newton–Schulz
    steps), ``ns_tol`` / ``pe_tol`` (cubic Newton–Schulz / Polar Express until max|σ − 1| ≤ `tol`, the steps taken
    reported; the time includes the ``svdvals`` that finds the ranks), ``svd`` (exact); ``residual`` = max|σ − 1| from
    float64 singular values of the result. Then one `fire_` (with and without its per-layer measurements, the network
    reloaded in each call) on a Nature CNN (18 actions; all layers, and the convs of the DQN recipe) and a paper-width
    SimBa critic (h1: observation 51, action 19)."""
    gen, kernels, fire = torch.Generator().manual_seed(0), [], []
    for shape in POLAR_SHAPES:
        w = torch.randn(*shape, generator=gen).to(device)
        for case, options in POLAR_CASES.items():
            options = options | ({"tol": tol} if case.endswith("_tol") else {})
            q, info = polar_with_info(w, **options)
            residual = float((torch.linalg.svdvals(q.double().cpu()) - 1.0).abs().max())
            median = timed(functools.partial(polar, w, **options), seconds).median
            kernels.append({"shape": list(shape), "case": case, "steps": info.steps, "residual": residual,
                            "seconds": median})  # fmt: skip
            print(f"  {str(shape):>12} {case:>7}: steps {info.steps:>3}  max|σ-1| {residual:.2e}  {median:.4f} s")
    dqn, critic = QNetwork(18).to(device), SimbaCritic(obs_dim=51, act_dim=19, hidden=512, num_blocks=2).to(device)
    nets = {"nature_cnn_all": (dqn, select_layers(dqn)), "nature_cnn_convs": (dqn, select_layers(dqn, kinds=["conv"])),
            "simba_critic_h512": (critic, select_layers(critic))}  # fmt: skip
    for label, (net, layers) in nets.items():
        state = {k: v.clone() for k, v in net.state_dict().items()}
        for measure in (False, True):

            def run(net=net, layers=layers, state=state, measure=measure) -> None:
                net.load_state_dict(state)  # FIRE of a not yet orthogonal network every time
                fire_(net, layers, measure=measure)

            median = timed(run, seconds).median
            fire.append({"network": label, "layers": len(layers), "measure": measure, "seconds": median,
                         "weights": sum(m.weight.numel() for m in layers.values())})  # fmt: skip
            print(f"  fire_ {label:>18} ({len(layers)} layers, measure={measure!s:>5}): {median:.4f} s")
    return {"tol": tol, "dtype": "float32", "kernels": kernels, "fire": fire}


def bench_envs(counts: list[int], seconds: float, fill: int, updates: int, threads: int, device: torch.device) -> dict:
    """Env steps/s of `make_atari_env` (Breakout, fire-paper preset, uniformly random actions; no agent, no buffer:
    the ceiling the env puts on a DQN loop) per backend and number of envs N: N / median seconds of a vector step.
    ale-vector runs ale-py's default thread count (one per core, at most N). Then the DQN agent's own env steps/s
    while learning (`learning_window`) with the fire-paper preset on each backend: `fill` env steps, then `updates`
    env steps of learning (4 envs, replay ratio 1: as many gradient updates)."""
    rates = {backend: {} for backend in BACKENDS}
    for n in counts:
        for backend in BACKENDS:
            envs = make_atari_env(ENV_IDS["dqn"], n, 0, preset="fire-paper", backend=backend)
            rng = np.random.default_rng(0)
            envs.reset(seed=0)

            def step(envs=envs, rng=rng, n=n) -> None:
                envs.step(rng.integers(envs.single_action_space.n, size=n))

            rates[backend][n] = round(n / timed(step, seconds).median, 1)
            envs.close()
            print(f"  {backend:>10}  N={n:<3} {rates[backend][n]:>10,.0f} env steps/s", flush=True)
    speedup = {n: round(rates["ale-vector"][n] / rates["sync"][n], 2) for n in counts}
    agent = {}  # the DQN agent itself, fire-paper preset (4 envs, replay ratio 1), while learning
    for backend in BACKENDS:
        # --eval-every 0: no final evaluation inside the timed window.
        flags = ["--preset", "fire-paper", "--env-id", ENV_IDS["dqn"], "--env-backend", backend, "--learning-starts",
                 str(fill), "--total-timesteps", str(fill + updates), "--buffer-size", str(fill + updates),
                 "--eval-every", "0"]  # fmt: skip
        agent[backend] = learning_window(run_agent("dqn_atari", flags, threads, device), fill) | {"flags": flags}
        print(f"  agent, {backend:>10}: {agent[backend]['env_steps_per_s']:.1f} env steps/s while learning", flush=True)
    return {"env_id": ENV_IDS["dqn"], "preset": "fire-paper", "env_steps_per_second": rates,
            "speedup_ale_vector": speedup, "agent_fire_paper": agent}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------- main
def machine_info(device: torch.device | None = None) -> dict:
    """What a figure was measured on: host, CPU model (or GPU name), torch's CPU capability (the ATen kernels it
    dispatches: AVX2, AVX512, ...), the variables that cap the instruction set, torch thread count, load average."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    cpu = next((x.split(":", 1)[1].strip() for x in cpuinfo.splitlines() if x.startswith("model name")), "")
    device = device or torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu or platform.processor()
    return {
        "host": "".join(c if c.isalnum() or c in "._-" else "_" for c in socket.gethostname() or "cpu"),
        "device": str(device), "device_name": name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_count": psutil.cpu_count(),
        "isa_caps": {k: v for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
                     if (v := os.environ.get(k))},
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(), "mem_available_bytes": psutil.virtual_memory().available,
    }  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    def checked(parse, allowed: str, ok):
        """An argparse type: `parse` of the text, refused unless `ok` (the message names the value and `allowed`)."""

        def check(text: str):
            with contextlib.suppress(ValueError):
                if ok(value := parse(text)):
                    return value
            raise argparse.ArgumentTypeError(f"{text!r} is invalid; allowed: {allowed}")

        return check

    def listed(kind):
        return lambda text: [kind(x) for x in text.split(",")]

    count = checked(int, "an integer >= 1", lambda v: v >= 1)
    ratios = checked(listed(float), "comma-separated numbers > 0", lambda v: min(v) > 0)
    sections = checked(lambda t: [x.strip() for x in t.split(",") if x.strip()], f"a subset of {','.join(SECTIONS)}",
                       lambda v: v and set(v) <= set(SECTIONS))  # fmt: skip
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind, default, text in (
        ("--threads", count, 1, "torch intra-op threads, here and in the agent processes"),
        ("--only", sections, ",".join(SECTIONS), "comma-separated sections"),
        ("--seconds", checked(float, "> 0", lambda v: v > 0), 15.0,
         "timed seconds per update variant; per case: polar 1/5 of it, envs 1/3"),
        ("--fill", count, 5_000, "env steps before learning in the DQN loop runs"),
        ("--dqn-ratios", ratios, "0.25,1,4", "DQN loop replay ratios, updates per env step"),
        ("--sac-ratios", ratios, "1,2,4", "SAC loop replay ratios, updates per agent step"),
        ("--dqn-updates", count, 300, "gradient updates per DQN loop run"),
        ("--sac-updates", count, 100, "gradient updates per SAC loop run"),
        ("--reset-repeats", count, 3, "resets per case, median reported"),
        ("--gemm-n", count, 2048, "largest n of the n x n GEMM of the peak"),
        ("--buffer-capacity", count, 1_000_000, "Atari buffer whose memory is measured"),
        ("--tol", checked(float, "0 < tol < 1", lambda v: 0 < v < 1), 1e-3, "polar: tolerance of the tolerance mode"),
        ("--num-envs", checked(listed(int), "comma-separated integers >= 1", lambda v: min(v) >= 1), "1,4,8,16",
         "envs: numbers of envs"),
        ("--seed", int, 1, "seed of networks and batches"),
    ):  # fmt: skip
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/bench_<host>[_cuda].json)")
    parser.add_argument("--compile", action="store_true", help="dqn, sac: also time the update compiled (the agents' "
                        "--compile) and, on CUDA, captured as CUDA graphs (--cudagraphs) (default: off)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: 'cuda' is invalid here (no CUDA device); allowed: auto, cpu")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    machine = machine_info(device)
    out_path = args.out or ROOT / "benchmarks" / f"bench_{machine['host']}{'_cuda' if cuda else ''}.json"
    results = {"machine": machine, "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    print(
        f"{machine['device_name']} | {machine['cpu_capability']} | {device} | torch {torch.__version__} | "
        f"{torch.get_num_threads()} thread(s) | {args.only}"
    )
    agents = {kind: load_agent(f) for kind, f in (("dqn", "dqn_atari"), ("sac", "sac_simba"))}
    sections = {
        "peak": lambda: bench_peak(device, args.gemm_n, args.seconds),
        "resets": lambda: bench_resets(device, args.reset_repeats, args.seed, results, agents["sac"].Args()),
        "buffer": lambda: bench_buffer(args.buffer_capacity, args.seconds, device, args.seed),
        "polar": lambda: bench_polar(device, args.seconds / 5, args.tol),
        "envs": lambda: bench_envs(
            args.num_envs, args.seconds / 3, args.fill, 3 * args.dqn_updates, args.threads, device
        ),
    }
    for kind, fill in (("dqn", args.fill), ("sac", agents["sac"].Args().learning_starts)):
        loop = (kind, getattr(args, f"{kind}_ratios"), getattr(args, f"{kind}_updates"), fill, args.threads, device)
        update = (kind, agents[kind], device, args.seconds, args.seed)
        sections[kind] = lambda u=update, lp=loop: {
            "update": bench_update(*u, results.get("peak"), args.compile), **bench_loop(*lp)}  # fmt: skip
    results["section_loadavg"] = {}
    for section in [s for s in SECTIONS if s in args.only]:
        before, t0 = os.getloadavg(), time.perf_counter()
        print(f"\n[{section}]", flush=True)
        results[section] = sections[section]()
        seconds = time.perf_counter() - t0
        results["section_loadavg"][section] = {"before": before, "after": os.getloadavg(), "seconds": seconds}
    results["machine"]["loadavg_end"] = os.getloadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
