"""Long-run health (issues 6 and 8): does anything grow with run length? Memory and per-step time of a real agent run.

    # the issue's run: DQN on ALE/Breakout-v5, 200k env steps, replay ratio 4, a FIRE reset every 50k env steps
    # (~13 h on one core of this CPU); the buffer must fill before the end so that the fit has windows after it
    python scripts/health.py --run-dir runs/health_200k -- --buffer-size 100000 --learning-starts 20000

    # scaled down (~30 min on one core: 28k updates at 14-18 updates/s): same ratio, four resets, buffer full at 3k
    # of 8k env steps (6 windows after it), plasticity metrics and checkpoints several times per run
    python scripts/health.py --total-timesteps 8000 --reset-every 2000 --run-dir runs/health_8k \\
        --out benchmarks/health_scaled_<host>.json \\
        -- --buffer-size 3000 --learning-starts 1000 --metrics-every 1000 --checkpoint-every 2000

    python scripts/health.py --agent sac_simba --replay-ratio 2 --total-timesteps 100000 --reset-every 25000 \\
        --run-dir runs/health_sac -- --buffer-size 30000

The script starts ``agents/<agent>.py`` as a subprocess (``--run-dir``, ``--total-timesteps``, ``--replay-ratio``,
``--reset``, ``--reset-every``, ``--threads`` from this script; every flag after ``--`` goes to the agent unchanged;
its output goes to ``<run-dir>/agent.log``). Before starting it, the agent's own parser and ``resolve_args`` check the
flags (exit 2 on a bad one), and the run must leave at least 3 windows after the replay buffer is full.

While the agent runs, every ``--sample-every`` seconds: wall time, the agent's VmRSS and VmHWM (/proc/<pid>/status)
and the machine's load averages (the machine may be shared; per-step time depends on the load). Nothing is read from
the agent while it runs. Afterwards the ``charts/SPS`` events of its tensorboard files (one every 100 gradient
updates, logged at the env step reached) give an env-step clock: their (env step, wall time) stamps, linearly
interpolated. The logged SPS *values* are cumulative and are not used.

Figures (JSON ``--out``, default ``benchmarks/health_<host>.json``, written atomically; a markdown table on stdout):

- ``windows``: the run cut into ``--windows`` equal env-step windows. Per window: ``env_steps_per_s`` and
  ``s_per_1k_env_steps`` from the clock's wall times at the window's ends (a window less than half covered by the
  clock, i.e. before learning starts, has none); ``rss_mib_end`` (VmRSS at the window's end, interpolated in time
  between samples), ``hwm_mib_end`` (the peak VmRSS so far); ``load1_mean/min/max`` (1-min load average of the samples
  inside the window); ``resets`` (env steps of the resets inside, from ``resets.jsonl``); ``after_buffer_full``.
- ``buffer``: ``memory_bytes`` (``AtariReplayBuffer.memory_bytes`` / ``ReplayBuffer.memory_bytes``) and
  ``full_at_env_step``. Buffer pages are committed as they are first written, so VmRSS legitimately grows until the
  buffer is full; the fits use only the windows that start at or after that env step.
- ``fits``: least-squares lines of RSS (MiB, at window end) against env steps and of seconds per 1k env steps (at the
  window's midpoint) against env steps, over those windows: ``slope`` per env step, ``r2``, ``change_pct_over_span`` =
  slope x span / mean(y) x 100 with span = the fitted windows' env-step extent, ``pct_per_100k_env_steps`` the same
  per 100k env steps, and the load-average range over the span.
- ``verdicts``: ``flat`` when |change_pct_over_span| < ``--rss-threshold-pct`` (memory, default 5) or
  ``--time-threshold-pct`` (per-step time, default 10); else ``growing`` or ``shrinking``; ``unmeasured`` with fewer
  than 3 usable windows.

Exit code: 0 when both verdicts are flat, 1 otherwise (or when the agent failed: its exit code is printed and kept in
the JSON), 2 for bad input (this script's flags, the agent's flags, an existing non-empty run directory).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from fire_rl.runtime import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ("dqn_atari", "sac_simba")
RESETS = ("none", "fire", "sp", "full", "pi", "redo")
# Flags this script sets on the agent's command line; given after `--` they would be ambiguous.
OWNED_FLAGS = ("run-dir", "total-timesteps", "replay-ratio", "reset", "reset-every", "threads", "resume")
FIT_MIN_WINDOWS = 3
MIN_COVERAGE = 0.5  # a window needs this share of its env steps on the SPS clock to get a rate
MIB = 2**20
CLOCK_TAG = "charts/SPS"


# ----------------------------------------------------------------------------------------------------------------------
# Analysis (pure functions on arrays; the unit tests call these)
# ----------------------------------------------------------------------------------------------------------------------


def window_edges(stop: int, n: int, start: int = 0) -> np.ndarray:
    """`n` equal env-step windows over [start, stop]: the (n + 1,) float64 edges, in env steps.

    Raises:
        ValueError: n < 1, or stop <= start.
    """
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1 window")
    if not stop > start:
        raise ValueError(f"stop={stop} must be > start={start} (env steps)")
    return np.linspace(start, stop, n + 1)


def step_clock(steps, wall_times) -> tuple[np.ndarray, np.ndarray]:
    """The env-step clock from logged events: (steps (K,) float64, wall times (K,) float64 seconds), sorted by step.

    Several events at one env step keep the latest wall time (the step's work ended then).

    Raises:
        ValueError: the two sequences differ in length, or wall time decreases while the env step increases (not one
            run's events).
    """
    steps = np.asarray(steps, dtype=np.float64)
    wall_times = np.asarray(wall_times, dtype=np.float64)
    if steps.shape != wall_times.shape or steps.ndim != 1:
        raise ValueError(f"steps {steps.shape} and wall_times {wall_times.shape} must be 1-D of one length")
    order = np.lexsort((wall_times, steps))
    steps, wall_times = steps[order], wall_times[order]
    last = np.append(steps[1:] != steps[:-1], True)[: len(steps)]
    steps, wall_times = steps[last], wall_times[last]
    if np.any(np.diff(wall_times) < 0):
        raise ValueError("wall time decreases while the env step increases: the events are not from one run")
    return steps, wall_times


def steps_at_times(times, clock: tuple[np.ndarray, np.ndarray]) -> list[float | None]:
    """Env step at each wall time (seconds) by linear interpolation on `clock`; None outside the clock's span."""
    steps, wall = clock
    out: list[float | None] = []
    for t in np.asarray(times, dtype=np.float64):
        inside = len(wall) >= 2 and wall[0] <= t <= wall[-1]
        out.append(float(np.interp(t, wall, steps)) if inside else None)
    return out


def window_figures(
    edges: np.ndarray,
    clock: tuple[np.ndarray, np.ndarray],
    sample_times,
    rss_bytes,
    hwm_bytes,
    load1,
    reset_steps=(),
    buffer_full_step: float = 0.0,
    min_coverage: float = MIN_COVERAGE,
) -> list[dict]:
    """Per-window figures of a run (see the module docstring).

    Args:
        edges: (W + 1,) window edges in env steps (`window_edges`).
        clock: `step_clock` of the run's SPS events (env steps, wall seconds).
        sample_times, rss_bytes, hwm_bytes, load1: (S,) samples: wall time (seconds, same clock as the events), VmRSS
            and VmHWM in bytes, 1-min load average.
        reset_steps: env steps of the run's resets; a reset at step s belongs to the window (a, b] holding it.
        buffer_full_step: env step from which the replay buffer is full (`after_buffer_full` = window start >= it).
        min_coverage: share of a window's env steps the clock must span to give the window a rate.

    Returns:
        One dict per window: ``index, env_step_start, env_step_end, covered_start, covered_end, wall_s,
        env_steps_per_s, s_per_1k_env_steps, rss_mib_end, hwm_mib_end, load1_mean, load1_min, load1_max, resets,
        after_buffer_full``; rates, RSS and load are None where the clock does not cover the window.
    """
    steps, wall = clock
    sample_times = np.asarray(sample_times, dtype=np.float64)
    rss = np.asarray(rss_bytes, dtype=np.float64)
    hwm = np.asarray(hwm_bytes, dtype=np.float64)
    load1 = np.asarray(load1, dtype=np.float64)
    order = np.argsort(sample_times, kind="stable")
    sample_times, rss, hwm, load1 = sample_times[order], rss[order], hwm[order], load1[order]
    resets = sorted(int(s) for s in reset_steps)
    rows = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        row: dict = {
            "index": i,
            "env_step_start": float(a),
            "env_step_end": float(b),
            "covered_start": None,
            "covered_end": None,
            "wall_s": None,
            "env_steps_per_s": None,
            "s_per_1k_env_steps": None,
            "rss_mib_end": None,
            "hwm_mib_end": None,
            "load1_mean": None,
            "load1_min": None,
            "load1_max": None,
            "resets": [s for s in resets if a < s <= b],
            "after_buffer_full": bool(a >= buffer_full_step),
        }
        if len(steps) >= 2:
            lo, hi = max(a, steps[0]), min(b, steps[-1])
            if hi > lo and hi - lo >= min_coverage * (b - a):
                t_lo, t_hi = np.interp([lo, hi], steps, wall)
                row.update(covered_start=float(lo), covered_end=float(hi), wall_s=float(t_hi - t_lo))
                if t_hi > t_lo:
                    rate = (hi - lo) / (t_hi - t_lo)
                    row.update(env_steps_per_s=float(rate), s_per_1k_env_steps=float(1_000 / rate))
                if len(sample_times):
                    row["rss_mib_end"] = float(np.interp(t_hi, sample_times, rss)) / MIB
                    before = hwm[sample_times <= t_hi]
                    row["hwm_mib_end"] = float(before.max() if len(before) else hwm[0]) / MIB
                    inside = load1[(sample_times >= t_lo) & (sample_times <= t_hi)]
                    if not len(inside):  # a window shorter than the sampling period
                        inside = np.interp([0.5 * (t_lo + t_hi)], sample_times, load1)
                    row.update(load1_mean=float(inside.mean()), load1_min=float(inside.min()),
                               load1_max=float(inside.max()))  # fmt: skip
        rows.append(row)
    return rows


def linear_fit(x, y) -> dict | None:
    """Least-squares line y = slope * x + intercept: ``{slope, intercept, r2, n}``; None with fewer than 2 points or
    no spread in x. r2 is 1.0 when y is constant (a perfect, flat fit)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0:
        return None
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": int(len(x))}


def trend(windows: list[dict], quantity: str, threshold_pct: float, min_windows: int = FIT_MIN_WINDOWS) -> dict:
    """Fit one quantity against env steps over the windows after the buffer is full, and give its verdict.

    Args:
        windows: `window_figures` rows.
        quantity: ``"rss"`` (``rss_mib_end`` at each window's covered end) or ``"step_time"``
            (``s_per_1k_env_steps`` at its covered midpoint).
        threshold_pct: the verdict is ``flat`` when |change over the span| < this many percent.

    Returns:
        ``{quantity, unit, windows (indices), fit (linear_fit or None), span_env_steps, mean, change_pct_over_span,
        pct_per_100k_env_steps, load1_range, threshold_pct, verdict}``; verdict is ``flat``, ``growing``,
        ``shrinking`` or ``unmeasured`` (fewer than `min_windows` usable windows).

    Raises:
        ValueError: an unknown quantity or a threshold <= 0.
    """
    if quantity not in ("rss", "step_time"):
        raise ValueError(f"quantity={quantity!r}: allowed 'rss', 'step_time'")
    if not threshold_pct > 0:
        raise ValueError(f"threshold_pct={threshold_pct}: must be > 0")
    key, unit = ("rss_mib_end", "MiB") if quantity == "rss" else ("s_per_1k_env_steps", "s per 1k env steps")
    used = [w for w in windows if w["after_buffer_full"] and w[key] is not None]
    xs = [w["covered_end"] if quantity == "rss" else 0.5 * (w["covered_start"] + w["covered_end"]) for w in used]
    out: dict = {
        "quantity": quantity,
        "unit": unit,
        "windows": [w["index"] for w in used],
        "fit": None,
        "span_env_steps": None,
        "mean": None,
        "change_pct_over_span": None,
        "pct_per_100k_env_steps": None,
        "load1_range": None,
        "threshold_pct": threshold_pct,
        "verdict": "unmeasured",
    }
    if len(used) < min_windows:
        return out
    ys = np.array([w[key] for w in used])
    fit = linear_fit(xs, ys)
    if fit is None:
        return out
    span = used[-1]["covered_end"] - used[0]["covered_start"]
    mean = float(ys.mean())
    change = 100.0 * fit["slope"] * span / mean
    loads = [v for w in used for v in (w["load1_min"], w["load1_max"]) if v is not None]
    out.update(
        fit=fit,
        span_env_steps=float(span),
        mean=mean,
        change_pct_over_span=float(change),
        pct_per_100k_env_steps=float(100.0 * fit["slope"] * 100_000 / mean),
        load1_range=[min(loads), max(loads)] if loads else None,
    )
    out["verdict"] = "flat" if abs(change) < threshold_pct else ("growing" if change > 0 else "shrinking")
    return out


def buffer_full_step(agent: str, buffer_size: int, num_envs: int = 1, action_repeat: int = 1) -> int:
    """Env step at which every slot of the agent's replay buffer has been written once.

    DQN: `AtariReplayBuffer` holds ``num_envs * ceil(buffer_size / num_envs)`` slots, one per env step of each env.
    SAC: `ReplayBuffer` holds `buffer_size` agent steps of `action_repeat` env steps each.

    Raises:
        ValueError: an unknown agent or a count < 1.
    """
    if agent not in AGENTS:
        raise ValueError(f"agent={agent!r}: allowed {', '.join(AGENTS)}")
    for name, value in (("buffer_size", buffer_size), ("num_envs", num_envs), ("action_repeat", action_repeat)):
        if value < 1:
            raise ValueError(f"{name}={value}: must be >= 1")
    if agent == "dqn_atari":
        return num_envs * -(-buffer_size // num_envs)
    return buffer_size * action_repeat


# ----------------------------------------------------------------------------------------------------------------------
# The run: agent config, sampling, reading its logs
# ----------------------------------------------------------------------------------------------------------------------


@functools.cache
def _load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` as a module (scripts/ is not a package), once per process."""
    spec = importlib.util.spec_from_file_location(f"fire_rl_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def machine_info(threads: int) -> dict:
    """The machine as scripts/bench.py describes it (its helpers), plus the agent's thread count."""
    import torch

    bench = _load_script("bench")
    return {
        "host": re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "cpu"),
        "cpu_model": bench.cpu_model(),
        "cpu_flags": bench.cpu_flags_of_note(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "agent_threads": threads,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": bench.load_average(),
        "mem_available_bytes": bench.meminfo_bytes("MemAvailable"),
        "mem_total_bytes": bench.meminfo_bytes("MemTotal"),
    }


def agent_command(args: argparse.Namespace) -> list[str]:
    """The agent's command line: this script's run flags, then the pass-through flags."""
    return [
        sys.executable,
        str(ROOT / "agents" / f"{args.agent}.py"),
        "--run-dir", str(args.run_dir),
        "--total-timesteps", str(args.total_timesteps),
        "--replay-ratio", repr(args.replay_ratio),
        "--reset", args.reset,
        "--reset-every", str(args.reset_every),
        "--threads", str(args.threads),
        *args.agent_flags,
    ]  # fmt: skip


def resolve_agent(args: argparse.Namespace) -> dict:
    """Parse the agent's flags with its own parser and ``resolve_args`` (presets filled, values checked), without
    starting it, and size its replay buffer.

    Returns:
        ``{"config": the agent's resolved Args as a dict, "buffer": {capacity, unit, full_at_env_step,
        memory_bytes}}``.

    Raises:
        ValueError: a bad agent flag value (the agent's own message), or a buffer that is not full with at least
            `FIT_MIN_WINDOWS` windows left.
        SystemExit(2): tyro rejects a flag (it prints which and the allowed ones).
    """
    import tyro

    bench = _load_script("bench")
    agent = bench.load_agent(args.agent)
    flags = agent_command(args)[2:]
    flags[flags.index("--run-dir") : flags.index("--run-dir") + 2] = []  # checked here, created later
    cfg = agent.resolve_args(tyro.cli(agent.Args, args=flags, prog=f"agents/{args.agent}.py"))
    cfg.reset_config().validate(cfg.total_timesteps)
    if args.agent == "dqn_atari":
        from fire_rl.buffers import AtariReplayBuffer

        full = buffer_full_step(args.agent, cfg.buffer_size, num_envs=cfg.num_envs)
        memory, unit = AtariReplayBuffer.memory_bytes(cfg.buffer_size, cfg.num_envs), "env steps"
    else:
        from fire_rl.buffers import ReplayBuffer
        from fire_rl.envs.humanoid import make_humanoid_env

        env = make_humanoid_env(cfg.env_id, cfg.seed, action_repeat=cfg.action_repeat)
        obs_shape, act_shape = env.observation_space.shape, env.action_space.shape
        env.close()
        full = buffer_full_step(args.agent, cfg.buffer_size, action_repeat=cfg.action_repeat)
        memory, unit = ReplayBuffer.memory_bytes(cfg.buffer_size, obs_shape, act_shape), "agent steps"
    edges = window_edges(args.total_timesteps, args.windows)
    usable = int((edges[:-1] >= full).sum())
    if usable < FIT_MIN_WINDOWS:
        latest = int(edges[-1 - FIT_MIN_WINDOWS])
        raise ValueError(
            f"--buffer-size={cfg.buffer_size} ({unit}) fills at env step {full:,}, leaving {usable} of {args.windows} "
            f"windows after it; the fits need {FIT_MIN_WINDOWS}: give the agent a buffer full by env step {latest:,} "
            f"(e.g. `-- --buffer-size N`) or more --windows"
        )
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
    return {
        "config": config,
        "buffer": {"capacity": cfg.buffer_size, "unit": unit, "full_at_env_step": full, "memory_bytes": memory},
    }


def run_and_sample(cmd: list[str], log_path: Path, sample_every: float, threads: int) -> dict:
    """Start the agent and sample its memory and the load average until it exits.

    Ctrl-C (or SIGTERM) is forwarded to the agent as SIGINT: it checkpoints and stops; a second one aborts it.

    Returns:
        ``{"returncode", "interrupted", "start_time", "end_time", "samples": [{t, elapsed_s, rss_bytes, hwm_bytes,
        load1, load5, load15}, ...]}`` (t: seconds since the epoch, the clock of tensorboard's wall times).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads > 0:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    samples: list[dict] = []
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    proc_memory = _load_script("bench").proc_memory
    old_term = signal.signal(signal.SIGTERM, on_term)
    start = time.time()
    with open(log_path, "w") as log:
        # Its own session: a terminal's Ctrl-C reaches only this script, which forwards it once.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while proc.poll() is None:
                try:
                    memory = proc_memory(proc.pid)
                    now = time.time()
                    if memory is not None:
                        load = os.getloadavg()
                        samples.append({"t": now, "elapsed_s": now - start, "rss_bytes": memory[0],
                                        "hwm_bytes": memory[1], "load1": load[0], "load5": load[1],
                                        "load15": load[2]})  # fmt: skip
                    try:
                        proc.wait(timeout=sample_every)
                    except subprocess.TimeoutExpired:
                        pass
                except KeyboardInterrupt:
                    interrupted = True
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
        finally:
            signal.signal(signal.SIGTERM, old_term)
    return {"returncode": proc.returncode, "interrupted": interrupted, "start_time": start, "end_time": time.time(),
            "samples": samples}  # fmt: skip


def read_clock_and_resets(run_dir: Path) -> tuple[tuple[np.ndarray, np.ndarray], list[int]]:
    """The run's SPS clock (`step_clock` of its ``charts/SPS`` events) and its resets' env steps (``resets.jsonl``,
    the scheduler's file), read with scripts/aggregate.py's readers."""
    aggregate = _load_script("aggregate")
    scalars = aggregate.read_run_scalars(run_dir)
    sps = scalars[scalars["tag"] == CLOCK_TAG]
    clock = step_clock(sps["step"].to_numpy(), sps["wall_time"].to_numpy())
    resets = [int(s) for s in aggregate.read_resets(run_dir)["global_step"]]
    return clock, resets


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_report(result: dict) -> str:
    """The windows as a markdown table, then one line per fit with its verdict and the load-average range."""
    lines = [
        "| window | env steps | env steps/s | s / 1k env steps | RSS MiB (end) | peak RSS MiB | load1 mean (min-max) "
        "| resets | buffer full |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in result["windows"]:
        load = "-" if w["load1_mean"] is None else f"{w['load1_mean']:.2f} ({w['load1_min']:.2f}-{w['load1_max']:.2f})"
        lines.append(
            f"| {w['index']} | {w['env_step_start']:,.0f}-{w['env_step_end']:,.0f} | "
            f"{_fmt(w['env_steps_per_s'], '.2f')} | {_fmt(w['s_per_1k_env_steps'], '.1f')} | "
            f"{_fmt(w['rss_mib_end'], '.1f')} | {_fmt(w['hwm_mib_end'], '.1f')} | {load} | "
            f"{', '.join(f'{s:,}' for s in w['resets']) or '-'} | {'yes' if w['after_buffer_full'] else 'no'} |"
        )
    buf = result["buffer"]
    lines.append("")
    lines.append(f"replay buffer: {buf['memory_bytes'] / MIB:,.1f} MiB, full at env step {buf['full_at_env_step']:,}")
    for name in ("rss", "step_time"):
        t = result["fits"][name]
        if t["fit"] is None:
            lines.append(f"{name}: unmeasured (windows after the buffer is full: {t['windows']})")
            continue
        load = t["load1_range"]
        lines.append(
            f"{name}: {t['verdict'].upper()} — {t['change_pct_over_span']:+.2f}% over {t['span_env_steps']:,.0f} env "
            f"steps ({t['pct_per_100k_env_steps']:+.2f}% per 100k; mean {t['mean']:.2f} {t['unit']}, r2 "
            f"{t['fit']['r2']:.2f}, windows {t['windows']}, threshold {t['threshold_pct']}%, load1 "
            f"{'-' if load is None else f'{load[0]:.2f}-{load[1]:.2f}'})"
        )
    return "\n".join(lines)


def analyse(run: dict, clock, resets: list[int], buffer: dict, args: argparse.Namespace) -> dict:
    """Windows, fits and verdicts of a finished run (see the module docstring)."""
    samples = run["samples"]
    stop = args.total_timesteps
    if run["returncode"] != 0 and len(clock[0]):
        # Cut what the stopped run did (its last clock event), not the steps it never reached.
        stop = max(int(clock[0][-1]), args.windows)
        print(f"the run stopped near env step {stop:,} of {args.total_timesteps:,}: the windows cover what it did")
    windows = window_figures(
        window_edges(stop, args.windows),
        clock,
        [s["t"] for s in samples],
        [s["rss_bytes"] for s in samples],
        [s["hwm_bytes"] for s in samples],
        [s["load1"] for s in samples],
        reset_steps=resets,
        buffer_full_step=buffer["full_at_env_step"],
    )
    for sample, step in zip(samples, steps_at_times([s["t"] for s in samples], clock)):
        sample["env_step"] = step
    return {
        "windows": windows,
        "fits": {
            "rss": trend(windows, "rss", args.rss_threshold_pct),
            "step_time": trend(windows, "step_time", args.time_threshold_pct),
        },
    }


# ----------------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/health.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] [-- agent flags]",
    )
    parser.add_argument("--agent", choices=AGENTS, default="dqn_atari", help="agents/<agent>.py (default dqn_atari)")
    parser.add_argument("--replay-ratio", type=float, default=4.0, help="gradient updates per env step (default 4)")
    parser.add_argument("--total-timesteps", type=int, default=200_000, help="env steps (default 200,000)")
    parser.add_argument("--reset", choices=RESETS, default="fire", help="reset method (default fire)")
    parser.add_argument("--reset-every", type=int, default=50_000, help="env steps between resets (default 50,000)")
    parser.add_argument("--threads", type=int, default=1, help="the agent's torch threads (default 1)")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="the agent's run directory, new or empty (default runs/health__*)"
    )
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples (default 5)")
    parser.add_argument("--windows", type=int, default=10, help="equal env-step windows (default 10)")
    parser.add_argument(
        "--rss-threshold-pct", type=float, default=5.0, help="memory: flat below this |change| over the span, %% (5)"
    )
    parser.add_argument(
        "--time-threshold-pct", type=float, default=10.0, help="step time: flat below this |change|, %% (10)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/health_<host>.json)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError naming the first bad value of this script's flags (before any work)."""
    checks = [
        ("replay-ratio", args.replay_ratio, args.replay_ratio > 0, "> 0"),
        ("total-timesteps", args.total_timesteps, args.total_timesteps > 0, "> 0"),
        ("reset-every", args.reset_every, args.reset_every >= 0, ">= 0 (0: off)"),
        ("threads", args.threads, args.threads >= 0, ">= 0 (0: torch's default)"),
        ("sample-every", args.sample_every, args.sample_every > 0, "> 0 seconds"),
        ("windows", args.windows, args.windows >= FIT_MIN_WINDOWS, f">= {FIT_MIN_WINDOWS}"),
        ("rss-threshold-pct", args.rss_threshold_pct, args.rss_threshold_pct > 0, "> 0"),
        ("time-threshold-pct", args.time_threshold_pct, args.time_threshold_pct > 0, "> 0"),
    ]
    for name, value, ok, allowed in checks:
        if not ok:
            raise ValueError(f"--{name}={value}: must be {allowed}")
    if args.total_timesteps < args.windows:
        raise ValueError(f"--total-timesteps={args.total_timesteps}: must be >= --windows={args.windows}")
    for flag in args.agent_flags:
        name = flag[2:].split("=", 1)[0].replace("_", "-") if flag.startswith("--") else None
        if name in OWNED_FLAGS:
            raise ValueError(
                f"agent flag {flag!r} after `--`: give it to this script instead (it sets {', '.join(OWNED_FLAGS)})"
            )
    if args.run_dir.exists() and (not args.run_dir.is_dir() or any(args.run_dir.iterdir())):
        raise ValueError(f"--run-dir={args.run_dir}: exists and is not an empty directory; give a fresh one")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """This script's flags, and the agent's after the first ``--``; exits 2 naming a bad value."""
    own, agent_flags = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = build_parser()
    args = parser.parse_args(own)
    args.agent_flags = agent_flags
    if args.run_dir is None:
        args.run_dir = ROOT / "runs" / f"health__{args.agent}__{int(time.time())}"
    try:
        check_args(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        agent = resolve_agent(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    machine = machine_info(args.threads)
    out_path = args.out or ROOT / "benchmarks" / f"health_{machine['host']}.json"
    cmd = agent_command(args)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = args.run_dir / "agent.log"
    buf = agent["buffer"]
    print(
        f"{machine['cpu_model']} | {args.threads} thread(s) | load {machine['loadavg_start']} | buffer "
        f"{buf['memory_bytes'] / MIB:,.1f} MiB full at env step {buf['full_at_env_step']:,}\n$ {' '.join(cmd)}\n"
        f"(agent output: {log_path})",
        flush=True,
    )

    run = run_and_sample(cmd, log_path, args.sample_every, args.threads)
    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    returncode = run["returncode"]
    if returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").replace("\r", "\n").splitlines(keepends=True)[-15:])
        print(f"the agent exited with code {returncode}; the end of {log_path}:\n{tail}", file=sys.stderr)
    clock, resets = read_clock_and_resets(args.run_dir)
    result = {
        "machine": machine,
        "config": {
            "argv": sys.argv[1:] if argv is None else argv,
            "agent": args.agent,
            "agent_command": cmd,
            "agent_config": agent["config"],
            "windows": args.windows,
            "sample_every_s": args.sample_every,
            "rss_threshold_pct": args.rss_threshold_pct,
            "time_threshold_pct": args.time_threshold_pct,
            "run_dir": str(args.run_dir),
        },
        "agent_returncode": returncode,
        "interrupted": run["interrupted"],
        "wall_s": run["end_time"] - run["start_time"],
        "buffer": agent["buffer"],
        "resets": resets,
        "clock_events": len(clock[0]),
        "samples": run["samples"],
    }
    result.update(analyse(run, clock, resets, agent["buffer"], args))
    peak = max((s["hwm_bytes"] for s in run["samples"]), default=None)
    result["peak_rss_mib"] = None if peak is None else peak / MIB
    result["verdicts"] = {name: fit["verdict"] for name, fit in result["fits"].items()}
    write_json_atomic(out_path, result)
    print(markdown_report(result))
    print(f"\nwrote {out_path} ({result['wall_s']:.0f} s, {len(run['samples'])} samples)")
    if returncode == 2:
        return 2  # the agent rejected its flags (its message is above)
    if returncode != 0:
        return 1
    return 0 if all(v == "flat" for v in result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
