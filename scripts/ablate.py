"""Replay-ratio ablations: run a grid of agent configurations, each as its own process, with a resumable manifest.

    python scripts/ablate.py --agent dqn_atari --env-ids ALE/Breakout-v5 ALE/Pong-v5 --methods none fire sp \\
        --replay-ratios 0.25 1 4 --seeds 0 1 2 --out runs/rr-sweep --workers 2 -- --total-timesteps 100000
    python scripts/ablate.py --config sweep.yaml --dry-run          # print the grid and its size, run nothing
    python scripts/ablate.py --config sweep.yaml --backend ray      # one Ray task per run (local cluster)

Grid: every combination of ``--env-ids`` × ``--methods`` (the agents' ``--reset``) × ``--replay-ratios`` (gradient
updates per env step, DESIGN 2) × ``--seeds``. Every other flag (unknown to this script, or after ``--``) is passed
to the agent unchanged, e.g. ``--total-timesteps 300 --learning-starts 100 --reset-at 200``. The agent is started as
``sys.executable agents/<agent>.py --env-id E --seed S --reset M --replay-ratio R --run-dir OUT/<name> --threads T``
plus those flags; ``<name>`` = ``<env id with / replaced>__<method>__rr<ratio>__s<seed>``, e.g.
``ALE-Breakout-v5__fire__rr0.25__s0``.

A sweep file (``--config``, YAML ``.yaml``/``.yml`` or TOML ``.toml``) holds the same settings; flags given on the
command line override it. Keys (``-`` or ``_``): ``agent, env_ids, methods, replay_ratios, seeds, agent_args`` (a list
of strings, or a mapping ``{flag: value}``; ``true`` / ``false`` become ``--flag`` / ``--no-flag``), ``out, backend,
workers, address, threads, gpus_per_run, max_retries, run_timeout, stop_grace``::

    agent: dqn_atari
    env_ids: [ALE/Breakout-v5]
    methods: [none, fire]
    replay_ratios: [0.25, 1.0]
    seeds: [0, 1, 2]
    agent_args: {total-timesteps: 100000, learning-starts: 5000}
    out: runs/rr-sweep

Manifest ``OUT/manifest.json`` (rewritten atomically after every change: temporary file, fsync, ``os.replace``):
the sweep's agent and fixed flags, and per run its config, run directory, status (``pending``, ``running``,
``queued`` (Ray), ``finished``, ``failed``, ``timeout``, ``interrupted``), attempts, start and end time (UTC, ISO 8601),
exit code, pid, command, log path (``OUT/logs/<name>.attempt<k>.log``, stdout and stderr) and the history of attempts.

Fault tolerance: a failing run never stops the others. Running the same command again skips finished runs (those
whose run directory holds ``result.json`` with ``"finished": true``), resumes every other run that left a
``checkpoint.pt`` (same command plus ``--resume RUN_DIR``), and starts the rest afresh (a run directory without a
checkpoint is deleted first: it holds nothing to resume and its event files would mix with the new ones). Within one
invocation a failed or timed-out run is tried again up to ``--max-retries`` times (resuming from its checkpoint when
it has one). Faults:

- An agent killed (``kill -9``, out of memory) or crashing: its attempt is ``failed`` with its exit code (``-9``); the
  other runs go on, and the retry resumes from the agent's last periodic checkpoint (``--checkpoint-every``).
- A run that hangs (or is just slow) past ``--run-timeout`` seconds: SIGTERM to its process group, SIGKILL after
  ``--stop-grace`` seconds (a hung process may ignore SIGTERM); ``timeout``, retried like a failure.
- The runner itself killed (``kill -9``, a lost terminal): on Linux every agent is started with a parent-death signal
  (``prctl(PR_SET_PDEATHSIG, SIGTERM)``), so the kernel sends it SIGTERM when its runner (or, with Ray, its Ray
  worker) dies; it saves a checkpoint and exits 130 within seconds instead of running on unsupervised. The manifest
  still says ``running`` for them; the re-run waits up to ``--stop-grace`` seconds for such agents to exit, refuses to
  start (exit 2) while one still runs (never two processes for one run), records the orphaned attempt as
  ``interrupted`` and resumes it. With Ray, an agent whose Ray worker dies may get SIGTERM twice and stop without
  the final checkpoint (see `die_with_parent`); it resumes from its last periodic one. Where prctl is unavailable
  (not Linux) the parent-death signal is not set: agents of a killed runner run on to their end, and the re-run
  refuses to start until they have exited.
- Ctrl-C or SIGTERM to the runner stops the sweep: every running agent gets SIGTERM (the agents save a checkpoint and
  exit), SIGKILL after ``--stop-grace`` seconds or a second Ctrl-C; the manifest records them as ``interrupted``; exit
  code 130.

Exit code 0 when every run of the grid finished, 1 when some did not, 2 for bad input (before any work).

Backends: ``local`` (default) keeps up to ``--workers`` agent processes running, each in its own process group
(default ``--workers``: usable cores // ``--threads``). ``ray`` runs each attempt as a Ray task requesting ``--threads``
CPUs and ``--gpus-per-run`` GPUs; ``--address`` joins an existing cluster, otherwise ``ray.init()`` starts a local one
(``num_cpus`` = ``--workers`` × ``--threads`` when ``--workers`` is given). Every node must see the repository, the
Python at ``sys.executable`` and ``--out`` at the same paths (a shared filesystem). Ray is the optional extra
``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AGENTS = {"dqn_atari": REPO / "agents" / "dqn_atari.py", "sac_simba": REPO / "agents" / "sac_simba.py"}
METHODS = ("none", "fire", "sp", "full", "pi", "redo")
BACKENDS = ("local", "ray")
GRID_FLAGS = ("--env-id", "--seed", "--reset", "--replay-ratio", "--run-dir", "--resume", "--threads")
RETRYABLE = ("failed", "timeout")
# Statuses of an attempt whose runner may have died before recording its end.
IN_FLIGHT = ("running", "queued")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
MANIFEST_VERSION = 1
POLL_SECONDS = 0.2
CONFIG_KEYS = (
    "agent",
    "env_ids",
    "methods",
    "replay_ratios",
    "seeds",
    "agent_args",
    "out",
    "backend",
    "workers",
    "address",
    "threads",
    "gpus_per_run",
    "max_retries",
    "run_timeout",
    "stop_grace",
)
DEFAULTS = {
    "agent": "dqn_atari",
    "seeds": [0],
    "agent_args": [],
    "backend": "local",
    "workers": None,
    "address": None,
    "threads": 1,
    "gpus_per_run": 0.0,
    "max_retries": 1,
    "run_timeout": None,
    "stop_grace": 30.0,
}


# ------------------------------------------------------------------------------------------------------------ grid
@dataclass(frozen=True)
class RunSpec:
    """One grid cell: env id, reset method, replay ratio (gradient updates per env step) and seed."""

    env_id: str
    method: str
    replay_ratio: float
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.env_id, self.method, self.replay_ratio, self.seed)

    def config(self) -> dict[str, Any]:
        return {"env_id": self.env_id, "method": self.method, "replay_ratio": self.replay_ratio, "seed": self.seed}


def safe(text: str) -> str:
    """`text` with every character outside ``[A-Za-z0-9._-]`` replaced by ``-`` (``ALE/Pong-v5`` -> ``ALE-Pong-v5``)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in text)


def run_name(env_id: str, method: str, replay_ratio: float, seed: int) -> str:
    """The run directory name of a grid cell: ``<env>__<method>__rr<ratio>__s<seed>`` (ratio in ``%g``)."""
    return f"{safe(env_id)}__{safe(method)}__rr{replay_ratio:g}__s{seed}"


def build_grid(env_ids: Sequence[str], methods: Sequence[str], replay_ratios: Sequence[float], seeds: Sequence[int]):
    """Every combination, in the order env id, method, replay ratio, seed (seeds vary fastest).

    Raises:
        ValueError: two cells would share a run directory name (e.g. ``ALE/Pong-v5`` and ``ALE-Pong-v5``).
    """
    grid = [RunSpec(e, m, float(r), int(s)) for e in env_ids for m in methods for r in replay_ratios for s in seeds]
    names = collections.Counter(spec.name for spec in grid)
    clashes = sorted(n for n, c in names.items() if c > 1)
    if clashes:
        raise ValueError(f"grid cells share run directory names {clashes}; make the env ids / values distinct")
    return grid


def agent_command(
    agent: Path, spec: RunSpec, run_dir: Path, threads: int, agent_args: Sequence[str], resume: bool
) -> list[str]:
    """The argv of one attempt: the grid flags, then the pass-through flags, then ``--resume RUN_DIR`` if resuming."""
    cmd = [
        sys.executable,
        str(agent),
        "--env-id",
        spec.env_id,
        "--seed",
        str(spec.seed),
        "--reset",
        spec.method,
        "--replay-ratio",
        repr(spec.replay_ratio),
        "--run-dir",
        str(run_dir),
        "--threads",
        str(threads),
        *agent_args,
    ]
    if resume:
        cmd += ["--resume", str(run_dir)]
    return cmd


def run_state(run_dir: Path) -> str:
    """``"finished"`` (``result.json`` says so), ``"resumable"`` (``checkpoint.pt`` exists) or ``"new"``."""
    result = run_dir / "result.json"
    if result.is_file():
        try:
            if json.loads(result.read_text()).get("finished") is True:
                return "finished"
        except (OSError, json.JSONDecodeError):
            pass
    return "resumable" if (run_dir / "checkpoint.pt").is_file() else "new"


# -------------------------------------------------------------------------------------------------------- manifest
def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON so that a reader sees the old or the new file, never a torn one: temporary file in the same
    directory, flush + fsync, ``os.replace``, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Manifest:
    """``OUT/manifest.json``: the sweep's fixed settings and one entry per run (see the module docstring)."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path = path
        self.data = data

    @classmethod
    def open(cls, out: Path, agent: str, agent_args: list[str], threads: int) -> Manifest:
        """Load ``out/manifest.json`` or start a new one (not written until `save`).

        Raises:
            ValueError: the existing manifest belongs to a sweep with another agent or other pass-through flags.
        """
        path = out / "manifest.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("agent") != agent or data.get("agent_args") != agent_args:
                raise ValueError(
                    f"--out {out} holds a sweep of agent {data.get('agent')!r} with agent flags "
                    f"{data.get('agent_args')}; this command has {agent!r} with {agent_args}. "
                    "Use another --out for a different experiment"
                )
            data["threads"] = threads
            return cls(path, data)
        data = {
            "version": MANIFEST_VERSION,
            "agent": agent,
            "agent_args": agent_args,
            "threads": threads,
            "created": now_iso(),
            "updated": None,
            "runs": {},
        }
        return cls(path, data)

    def entry(self, spec: RunSpec, run_dir: Path) -> dict:
        runs = self.data["runs"]
        if spec.name not in runs:
            runs[spec.name] = {
                "config": spec.config(),
                "run_dir": str(run_dir),
                "status": "pending",
                "attempts": 0,
                "start_time": None,
                "end_time": None,
                "exit_code": None,
                "pid": None,
                "log": None,
                "command": None,
                "resumed": False,
                "history": [],
            }
        return runs[spec.name]

    def save(self) -> None:
        self.data["updated"] = now_iso()
        write_json_atomic(self.path, self.data)


# -------------------------------------------------------------------------------------------------------- processes
def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for `subprocess.Popen` that makes the child get SIGTERM when this process dies, or None where
    that is unavailable (not Linux, no libc ``prctl``): then a child outlives a killed parent.

    Linux's ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` (man 2 PR_SET_PDEATHSIG), set in the child between fork and exec, is
    kept across exec; the kernel sends the signal when the thread that forked the child exits, so call `Popen` from a
    thread that lives as long as the process (the main thread here; a Ray task's executing thread). If the parent died
    before the prctl took effect, the child is already re-parented (``getppid()`` changed) and SIGTERMs itself. The
    agents handle SIGTERM by saving a checkpoint and exiting with 130.

    One SIGTERM per death only when the parent is single-threaded: the kernel re-parents the child to another live
    thread of the parent first, signalling it at each step (measured: 1 of 12 children of a two-thread parent got two).
    The local runner keeps to one thread; a Ray worker has several, so a killed worker may deliver a second SIGTERM,
    which the agents take as "stop at once" (they resume from their last periodic checkpoint instead).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        # Runs in the forked child before exec (other threads' locks may be held): two system calls, nothing else.
        prctl(PR_SET_PDEATHSIG, sigterm, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sigterm)

    return preexec


def close_attempt(entry: dict) -> None:
    """Append the attempt a manifest entry describes (its status, exit code, times, log, error) to its history."""
    entry["history"].append(
        {
            "attempt": entry["attempts"],
            "status": entry["status"],
            "exit_code": entry["exit_code"],
            "start_time": entry["start_time"],
            "end_time": entry["end_time"],
            "resumed": entry["resumed"],
            "log": entry["log"],
            **({"error": entry["error"]} if entry.get("error") else {}),
        }
    )


def signal_group(pid: int, sig: int) -> None:
    """Send `sig` to the process group led by `pid` (each agent runs in its own session); gone groups are ignored."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_process(proc: subprocess.Popen, grace: float) -> int:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; returns the exit code."""
    signal_group(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(proc.pid, signal.SIGKILL)
        return proc.wait()


def run_process(
    cmd: list[str], cwd: str, env_overrides: dict[str, str], log_path: str, timeout: float | None, grace: float
) -> dict:
    """Run one attempt to completion (the body of a Ray task): output to `log_path`, `timeout` seconds at most.

    Returns:
        ``{"exit_code", "timed_out", "pid", "host", "start", "end"}`` (times in seconds since the epoch).

    Raises:
        KeyboardInterrupt: passed on (``ray.cancel`` raises it in the task) after stopping the process group.
    """
    import socket

    env = {**os.environ, **env_overrides}
    start = time.time()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The Ray worker running this task is the parent: if it dies, the agent checkpoints and exits.
            preexec_fn=die_with_parent(),
        )
        timed_out = False
        try:
            while True:
                # Short waits keep the task responsive to the KeyboardInterrupt of ray.cancel.
                try:
                    exit_code = proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if timeout is not None and time.time() - start > timeout:
                        timed_out = True
                        exit_code = stop_process(proc, grace)
                        break
        except BaseException:
            stop_process(proc, grace)
            raise
    return {
        "exit_code": exit_code,
        "timed_out": timed_out,
        "pid": proc.pid,
        "host": socket.gethostname(),
        "start": start,
        "end": time.time(),
    }


@dataclass
class _Local:
    proc: subprocess.Popen
    log: Any
    start: float
    timed_out: bool = False
    kill_at: float | None = None


class LocalBackend:
    """Up to `workers` agent processes at once on this machine, each in its own session (own process group) and, on
    Linux, with a parent-death signal (`die_with_parent`)."""

    def __init__(self, workers: int, run_timeout: float | None, grace: float) -> None:
        self.workers = workers
        self.run_timeout = run_timeout
        self.grace = grace
        self.procs: dict[str, _Local] = {}

    def capacity(self) -> int:
        return self.workers - len(self.procs)

    def running(self) -> int:
        return len(self.procs)

    def start(self, name: str, cmd: list[str], log_path: Path, env_overrides: dict[str, str]) -> int:
        log = open(log_path, "ab")
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env={**os.environ, **env_overrides},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # A runner killed with SIGKILL cannot stop its agents; the kernel does (SIGTERM: checkpoint, exit).
                preexec_fn=die_with_parent(),
            )
        except OSError:
            log.close()
            raise
        self.procs[name] = _Local(proc, log, time.time())
        return proc.pid

    def poll(self) -> list[tuple[str, dict]]:
        done, now = [], time.time()
        for name, st in list(self.procs.items()):
            code = st.proc.poll()
            if code is None:
                if self.run_timeout is not None and not st.timed_out and now - st.start > self.run_timeout:
                    st.timed_out = True
                    st.kill_at = now + self.grace
                    signal_group(st.proc.pid, signal.SIGTERM)
                elif st.kill_at is not None and now > st.kill_at:
                    signal_group(st.proc.pid, signal.SIGKILL)
                continue
            done.append((name, self._result(name, code)))
        time.sleep(POLL_SECONDS)
        return done

    def _result(self, name: str, code: int) -> dict:
        st = self.procs.pop(name)
        st.log.close()
        return {"exit_code": code, "timed_out": st.timed_out, "pid": st.proc.pid, "start": st.start, "end": time.time()}

    def stop_all(self) -> list[tuple[str, dict]]:
        """SIGTERM every running agent, wait up to the grace period (a second Ctrl-C cuts it short), SIGKILL the
        rest; returns their results."""
        for st in self.procs.values():
            signal_group(st.proc.pid, signal.SIGTERM)
        deadline = time.time() + self.grace
        try:
            while self.procs and time.time() < deadline:
                if all(st.proc.poll() is not None for st in self.procs.values()):
                    break
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            pass
        for st in self.procs.values():
            if st.proc.poll() is None:
                signal_group(st.proc.pid, signal.SIGKILL)
        return [(name, self._result(name, self.procs[name].proc.wait())) for name in list(self.procs)]

    def close(self) -> None:
        pass


class RayBackend:
    """Each attempt a Ray task (`run_process`) requesting `threads` CPUs and `gpus` GPUs."""

    def __init__(
        self,
        workers: int | None,
        threads: int,
        gpus: float,
        run_timeout: float | None,
        grace: float,
        address: str | None,
    ) -> None:
        import ray

        self.ray = ray
        if __name__ != "__main__":
            # Imported under another module name (tests, other scripts): Ray workers cannot import it by name.
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        if address is not None:
            ray.init(address=address)
        else:
            ray.init(num_cpus=None if workers is None else workers * threads, include_dashboard=False)
        self.remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0)(run_process)
        self.workers = workers
        self.run_timeout = run_timeout
        self.grace = grace
        self.refs: dict[Any, str] = {}

    def capacity(self) -> int:
        return (self.workers if self.workers is not None else 1_000_000) - len(self.refs)

    def running(self) -> int:
        return len(self.refs)

    def start(self, name: str, cmd: list[str], log_path: Path, env_overrides: dict[str, str]) -> None:
        ref = self.remote.remote(cmd, str(REPO), env_overrides, str(log_path), self.run_timeout, self.grace)
        self.refs[ref] = name
        return None

    def _collect(self, refs) -> list[tuple[str, dict]]:
        out = []
        for ref in refs:
            name = self.refs.pop(ref)
            try:
                out.append((name, self.ray.get(ref)))
            except self.ray.exceptions.RayError as err:
                # The last line names the cause (TaskCancelledError, a worker crash, ...); the rest is a traceback.
                lines = str(err).strip().splitlines() or [type(err).__name__]
                out.append((name, {"exit_code": None, "timed_out": False, "error": lines[-1][:500]}))
        return out

    def poll(self) -> list[tuple[str, dict]]:
        if not self.refs:
            time.sleep(POLL_SECONDS)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=POLL_SECONDS)
        return self._collect(ready)

    def stop_all(self) -> list[tuple[str, dict]]:
        """Cancel every task (a KeyboardInterrupt inside it stops its agent: SIGTERM, SIGKILL after the grace
        period); tasks still busy after that, or after a second Ctrl-C, are force-cancelled (worker killed)."""
        for ref in self.refs:
            self.ray.cancel(ref)
        not_ready = list(self.refs)
        try:
            _, not_ready = self.ray.wait(not_ready, num_returns=len(not_ready), timeout=self.grace + 10)
        except KeyboardInterrupt:
            pass
        for ref in not_ready:
            self.ray.cancel(ref, force=True)
        return self._collect(list(self.refs))

    def close(self) -> None:
        self.ray.shutdown()


# ------------------------------------------------------------------------------------------------------------ sweep
class Sweep:
    """Runs the grid's unfinished cells through a backend, keeping the manifest current."""

    def __init__(self, cfg: argparse.Namespace, grid: list[RunSpec], manifest: Manifest, agent: Path) -> None:
        self.cfg = cfg
        self.grid = grid
        self.manifest = manifest
        self.agent = agent
        self.out: Path = cfg.out
        self.by_name = {spec.name: spec for spec in grid}
        self.tries: collections.Counter[str] = collections.Counter()

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / spec.name

    def env_overrides(self) -> dict[str, str]:
        threads = str(self.cfg.threads)
        return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}

    def plan(self) -> tuple[list[RunSpec], list[RunSpec]]:
        """``(finished, todo)``; records finished runs in the manifest, and attempts that an earlier runner left
        ``running`` or ``queued`` (it died first; `main` has checked that their agents no longer run) as
        ``interrupted`` (or ``finished`` when their agent finished on its own)."""
        finished, todo = [], []
        for spec in self.grid:
            entry = self.manifest.entry(spec, self.run_dir(spec))
            state = run_state(self.run_dir(spec))
            if entry["status"] in IN_FLIGHT:
                self.record_orphan(entry, "finished" if state == "finished" else "interrupted")
            if state == "finished":
                entry["status"] = "finished"
                finished.append(spec)
            else:
                todo.append(spec)
        return finished, todo

    @staticmethod
    def record_orphan(entry: dict, status: str) -> None:
        """Close the history of an attempt whose runner died before it ended; its exit code and end are unknown."""
        error = None if status == "finished" else "the sweep runner ended before this attempt (killed?)"
        entry.update(status=status, exit_code=None, end_time=None)
        entry.pop("error", None)
        if error:
            entry["error"] = error
        close_attempt(entry)

    def launch(self, backend, spec: RunSpec) -> None:
        run_dir = self.run_dir(spec)
        resume = run_state(run_dir) == "resumable"
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        entry = self.manifest.entry(spec, run_dir)
        entry["attempts"] += 1
        self.tries[spec.name] += 1
        log_path = self.out / "logs" / f"{spec.name}.attempt{entry['attempts']}.log"
        cmd = agent_command(self.agent, spec, run_dir, self.cfg.threads, self.cfg.agent_args, resume)
        entry.pop("error", None)
        entry.update(
            status="running" if self.cfg.backend == "local" else "queued",
            start_time=now_iso(),
            end_time=None,
            exit_code=None,
            log=str(log_path),
            command=cmd,
            resumed=resume,
            pid=None,
        )
        try:
            entry["pid"] = backend.start(spec.name, cmd, log_path, self.env_overrides())
        except OSError as err:
            self.manifest.save()
            self.finish(spec, {"exit_code": None, "timed_out": False, "error": f"could not start: {err}"})
            raise
        self.manifest.save()

    def finish(self, spec: RunSpec, result: dict, interrupted: bool = False) -> str:
        """Record an attempt's outcome; returns its status."""
        entry = self.manifest.entry(spec, self.run_dir(spec))
        code = result.get("exit_code")
        if run_state(self.run_dir(spec)) == "finished" and code == 0:
            status = "finished"
        elif interrupted:
            status = "interrupted"
        elif result.get("timed_out"):
            status = "timeout"
        else:
            status = "failed"
        for key in ("start", "end"):
            if key in result:
                entry[f"{key}_time"] = dt.datetime.fromtimestamp(result[key], dt.timezone.utc).isoformat(
                    timespec="milliseconds"
                )
        if "end" not in result:
            entry["end_time"] = now_iso()
        entry.update(status=status, exit_code=code)
        for key in ("pid", "host", "error"):
            if result.get(key) is not None:
                entry[key] = result[key]
        if status == "failed" and code == 0:
            entry["error"] = "exit code 0 but no result.json with finished: true"
        close_attempt(entry)
        self.manifest.save()
        return status

    def execute(self) -> int:
        """Run every unfinished cell; returns the exit code (0 all finished, 1 some not, 130 interrupted)."""
        from tqdm import tqdm

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        finished, todo = self.plan()
        self.manifest.save()
        print(
            f"{len(self.grid)} runs in the grid: {len(finished)} finished, {len(todo)} to run "
            f"({sum(run_state(self.run_dir(s)) == 'resumable' for s in todo)} resume from a checkpoint); "
            f"manifest {self.manifest.path}",
            flush=True,
        )
        if not todo:
            return 0
        backend = self.make_backend()
        pending = collections.deque(todo)
        failed: set[str] = set()
        # No tqdm monitor thread: the runner stays single-threaded, so its death sends each agent one parent-death
        # SIGTERM. With a second thread alive, the kernel re-parents the agents to it first and signals them again
        # when it dies; the agents take a second SIGTERM as "stop now", without the final checkpoint.
        tqdm.monitor_interval = 0
        bar = tqdm(
            total=len(self.grid), initial=len(finished), unit="run", desc="sweep", file=sys.stderr, mininterval=1.0
        )
        last_postfix: dict[str, int] = {}
        old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while pending or backend.running():
                while pending and backend.capacity() > 0:
                    spec = pending.popleft()
                    try:
                        self.launch(backend, spec)
                    except OSError as err:
                        tqdm.write(f"could not start {spec.name}: {err}")
                        failed.add(spec.name)
                        bar.update(1)
                for name, result in backend.poll():
                    spec = self.by_name[name]
                    status = self.finish(spec, result)
                    entry = self.manifest.data["runs"][name]
                    if status in RETRYABLE and self.tries[name] <= self.cfg.max_retries:
                        tqdm.write(
                            f"{status}: {name} (exit code {entry['exit_code']}, log {entry['log']}); "
                            f"retry {self.tries[name]}/{self.cfg.max_retries}"
                        )
                        pending.append(spec)
                    else:
                        if status != "finished":
                            failed.add(name)
                        tqdm.write(f"{status}: {name} (exit code {entry['exit_code']}, log {entry['log']})")
                        bar.update(1)
                postfix = {"running": backend.running(), "failed": len(failed), "waiting": len(pending)}
                if postfix != last_postfix:
                    bar.set_postfix(postfix, refresh=False)
                    last_postfix = postfix
        except KeyboardInterrupt:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            tqdm.write(f"stopping {backend.running()} running run(s): SIGTERM, SIGKILL after {self.cfg.stop_grace} s")
            for name, result in backend.stop_all():
                self.finish(self.by_name[name], result, interrupted=True)
            bar.close()
            backend.close()
            print(f"interrupted; manifest {self.manifest.path}; run the same command again to resume", flush=True)
            return 130
        finally:
            signal.signal(signal.SIGTERM, old_term)
        bar.close()
        backend.close()
        return self.report()

    def make_backend(self):
        if self.cfg.backend == "ray":
            return RayBackend(
                self.cfg.workers,
                self.cfg.threads,
                self.cfg.gpus_per_run,
                self.cfg.run_timeout,
                self.cfg.stop_grace,
                self.cfg.address,
            )
        return LocalBackend(self.cfg.workers, self.cfg.run_timeout, self.cfg.stop_grace)

    def report(self) -> int:
        runs = self.manifest.data["runs"]
        counts = collections.Counter(runs[s.name]["status"] for s in self.grid)
        print("sweep done: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), flush=True)
        for spec in self.grid:
            entry = runs[spec.name]
            if entry["status"] != "finished":
                print(f"  {entry['status']}: {spec.name} after {entry['attempts']} attempt(s); log {entry['log']}")
        return 0 if counts["finished"] == len(self.grid) else 1


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# -------------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate.py",
        description="Run a grid of agent runs (env ids x reset methods x replay ratios x seeds), one process each. "
        "Flags this script does not know, and everything after --, are passed to the agent.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--config", type=Path, help="sweep file (.yaml, .yml or .toml); command-line flags override it")
    add("--agent", help="dqn_atari, sac_simba, or a path to an agent .py file (default dqn_atari)")
    add("--env-ids", nargs="+", help="env ids, e.g. ALE/Breakout-v5")
    add("--methods", nargs="+", help=f"reset methods, from {list(METHODS)}")
    add("--replay-ratios", nargs="+", type=float, help="gradient updates per env step, > 0")
    add("--seeds", nargs="+", type=int, help="seeds, >= 0 (default 0)")
    add("--out", type=Path, help="sweep directory (default runs/ablate-<agent>)")
    add("--backend", help="local (default) or ray")
    add("--workers", type=int, help="runs at once (local default: usable cores // --threads)")
    add("--address", help="Ray cluster address (ray backend; default: start a local cluster)")
    add("--threads", type=int, help="torch threads per run, passed to the agent as --threads (default 1)")
    add("--gpus-per-run", type=float, help="GPUs requested per Ray task (default 0)")
    add("--max-retries", type=int, help="extra attempts of a failed or timed-out run per invocation (default 1)")
    add("--run-timeout", type=float, help="seconds after which a run is stopped (default: none)")
    add("--stop-grace", type=float, help="seconds between SIGTERM and SIGKILL (default 30)")
    add("--dry-run", action="store_true", help="print the grid and its size, run nothing")
    return parser


def load_sweep_file(path: Path, parser: argparse.ArgumentParser) -> dict:
    """Read a YAML or TOML sweep file into a dict with underscore keys; bad files end in ``parser.error``."""
    if not path.is_file():
        parser.error(f"argument --config: {str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        parser.error(f"argument --config: {str(path)!r} has suffix {suffix!r}; allowed: .yaml, .yml, .toml")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"argument --config: cannot read {str(path)!r}: {err}")
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            parser.error(f"argument --config: cannot parse {str(path)!r}: {err}")
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            parser.error(f"argument --config: cannot parse {str(path)!r}: {err}")
    if not isinstance(data, dict):
        parser.error(f"argument --config: {str(path)!r} must hold a mapping of settings")
    out = {}
    for key, value in data.items():
        norm = str(key).replace("-", "_")
        if norm not in CONFIG_KEYS:
            parser.error(f"argument --config: unknown key {key!r} in {str(path)!r}; allowed: {list(CONFIG_KEYS)}")
        out[norm] = value
    return out


def agent_args_from(value: Any, parser: argparse.ArgumentParser) -> list[str]:
    """Pass-through flags from a sweep file: a list of strings, or a mapping flag -> value (bool -> --x / --no-x)."""
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            parser.error(f"argument --config: agent_args={value!r}; allowed: a list of strings or a mapping")
        return [str(v) for v in value]
    if isinstance(value, dict):
        args = []
        for key, v in value.items():
            flag = "--" + str(key).lstrip("-").replace("_", "-")
            if isinstance(v, bool):
                args.append(flag if v else "--no-" + flag[2:])
            elif isinstance(v, list):
                args += [flag, *map(str, v)]
            elif isinstance(v, str | int | float):
                args += [flag, str(v)]
            else:
                parser.error(f"argument --config: agent_args[{key!r}]={v!r}; allowed: str, number, bool or a list")
        return args
    parser.error(f"argument --config: agent_args={value!r}; allowed: a list of strings or a mapping")
    return []


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve(argv: Sequence[str] | None, parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, Path]:
    """Parse and merge command line and sweep file, validate every value (``parser.error``, exit code 2, on bad
    input), and return the settings and the agent file."""
    args, extra = parser.parse_known_args(argv)
    if "--" in extra:
        extra.remove("--")
    file_cfg = load_sweep_file(args.config, parser) if args.config is not None else {}
    cfg = argparse.Namespace(dry_run=args.dry_run)
    for key in CONFIG_KEYS:
        if key == "agent_args":
            continue
        cli = getattr(args, key)
        setattr(cfg, key, cli if cli is not None else file_cfg.get(key, DEFAULTS.get(key)))
    cfg.agent_args = agent_args_from(file_cfg.get("agent_args"), parser) + list(extra)

    def bad(flag: str, value: Any, allowed: str) -> None:
        parser.error(f"argument --{flag}: {value!r} is invalid; allowed: {allowed}")

    agent_name = cfg.agent
    if not isinstance(agent_name, str) or not agent_name:
        bad("agent", agent_name, f"{list(AGENTS)} or a path to a .py file")
    agent = AGENTS.get(agent_name, Path(agent_name))
    if agent_name not in AGENTS and agent.suffix != ".py":
        bad("agent", agent_name, f"{list(AGENTS)} or a path to a .py file")
    if not agent.is_file():
        parser.error(f"argument --agent: {agent_name!r}: agent file {agent} does not exist")
    agent = agent.resolve()

    for key, check, allowed in (
        ("env_ids", lambda v: isinstance(v, str) and v.strip() != "", "non-empty env id strings"),
        ("methods", lambda v: v in METHODS, f"values from {list(METHODS)}"),
        ("replay_ratios", lambda v: _is_number(v) and v > 0, "finite numbers > 0"),
        ("seeds", lambda v: _is_int(v) and v >= 0, "integers >= 0"),
    ):
        values = getattr(cfg, key)
        flag = key.replace("_", "-")
        if values is None:
            parser.error(f"argument --{flag}: required (on the command line or as {key}: in --config)")
        if not isinstance(values, list) or not values:
            bad(flag, values, f"a non-empty list of {allowed}")
        for v in values:
            if not check(v):
                bad(flag, v, allowed)
        if len({float(v) if key == "replay_ratios" else v for v in values}) < len(values):
            bad(flag, values, "distinct values")
    if cfg.backend not in BACKENDS:
        bad("backend", cfg.backend, str(list(BACKENDS)))
    if cfg.workers is not None and not (_is_int(cfg.workers) and cfg.workers >= 1):
        bad("workers", cfg.workers, "an integer >= 1")
    if not (_is_int(cfg.threads) and cfg.threads >= 1):
        bad("threads", cfg.threads, "an integer >= 1")
    if not (_is_number(cfg.gpus_per_run) and cfg.gpus_per_run >= 0):
        bad("gpus-per-run", cfg.gpus_per_run, "a number >= 0")
    if not (_is_int(cfg.max_retries) and cfg.max_retries >= 0):
        bad("max-retries", cfg.max_retries, "an integer >= 0")
    if cfg.run_timeout is not None and not (_is_number(cfg.run_timeout) and cfg.run_timeout > 0):
        bad("run-timeout", cfg.run_timeout, "a number of seconds > 0")
    if not (_is_number(cfg.stop_grace) and cfg.stop_grace >= 0):
        bad("stop-grace", cfg.stop_grace, "a number of seconds >= 0")
    if cfg.address is not None and cfg.backend != "ray":
        parser.error(f"argument --address: {cfg.address!r} needs --backend ray (backend is {cfg.backend!r})")
    for token in cfg.agent_args:
        flag = token.split("=", 1)[0].replace("_", "-")
        if flag in GRID_FLAGS:
            parser.error(
                f"agent flag {token!r} is set by the sweep; allowed pass-through flags are any but {list(GRID_FLAGS)} "
                "(use --env-ids, --seeds, --methods, --replay-ratios, --out, --threads)"
            )
    if cfg.backend == "ray" and not cfg.dry_run:
        try:
            import ray  # noqa: F401
        except ImportError:
            parser.error('argument --backend: "ray" needs Ray, which is not installed: pip install -e ".[ray]"')
    if cfg.backend == "local" and cfg.workers is None:
        cfg.workers = max(1, usable_cores() // cfg.threads)
    # Absolute, because the agents run with the repository root as their working directory.
    cfg.out = (Path(cfg.out) if cfg.out is not None else REPO / "runs" / f"ablate-{safe(agent.stem)}").resolve()
    if cfg.out.exists() and not cfg.out.is_dir():
        bad("out", str(cfg.out), "a directory path")
    return cfg, agent


def dry_run(cfg: argparse.Namespace, grid: list[RunSpec], agent: Path) -> int:
    """Print the grid, its size and each run's state and command; touch nothing."""
    n = len(grid)
    print(
        f"grid: {len(cfg.env_ids)} env id(s) x {len(cfg.methods)} method(s) x {len(cfg.replay_ratios)} replay "
        f"ratio(s) x {len(cfg.seeds)} seed(s) = {n} run(s)"
    )
    print(f"agent {agent}; pass-through flags {cfg.agent_args}; out {cfg.out}; backend {cfg.backend}")
    for spec in grid:
        run_dir = cfg.out / spec.name
        state = run_state(run_dir)
        cmd = agent_command(agent, spec, run_dir, cfg.threads, cfg.agent_args, state == "resumable")
        print(f"  {state:9s} {spec.name}: {' '.join(cmd[1:])}")
    print(f"{n} run(s)")
    return 0


def _stale_agents(manifest: Manifest) -> list[str]:
    """Runs the manifest says are running whose pid is still an agent writing to that run directory (left behind by
    an ablate that was killed with SIGKILL)."""
    alive = []
    for name, entry in manifest.data["runs"].items():
        pid = entry.get("pid")
        if entry.get("status") != "running" or not pid:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry["run_dir"] in cmdline:
            alive.append(f"{name} (pid {pid})")
    return alive


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = build_parser()
    cfg, agent = resolve(argv, parser)
    try:
        grid = build_grid(cfg.env_ids, cfg.methods, cfg.replay_ratios, cfg.seeds)
    except ValueError as err:
        parser.error(str(err))
    if cfg.dry_run:
        return dry_run(cfg, grid, agent)
    agent_label = next((name for name, path in AGENTS.items() if path == agent), str(agent))
    try:
        manifest = Manifest.open(cfg.out, agent_label, cfg.agent_args, cfg.threads)
    except ValueError as err:
        parser.error(str(err))
    cfg.out.mkdir(parents=True, exist_ok=True)
    lock = _lock(cfg.out)
    if lock is None:
        parser.error(f"argument --out: another ablate.py is running on {str(cfg.out)!r}")
    stale = _stale_agents(manifest)
    if stale:
        # Agents of a runner killed a moment ago got their parent-death SIGTERM and are writing their checkpoints.
        print(f"agents of an earlier sweep still run: {stale}; waiting up to {cfg.stop_grace:g} s", flush=True)
        deadline = time.time() + cfg.stop_grace
        while stale and time.time() < deadline:
            time.sleep(1.0)
            stale = _stale_agents(manifest)
    if stale:
        parser.error(f"argument --out: agents of an earlier sweep still run: {stale}; stop them or let them finish")
    try:
        return Sweep(cfg, grid, manifest, agent).execute()
    finally:
        lock.close()


def _lock(out: Path):
    """An exclusive, non-blocking lock on ``out/.ablate.lock``; None when another process holds it."""
    try:
        import fcntl
    except ImportError:
        return open(os.devnull)
    handle = open(out / ".ablate.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


if __name__ == "__main__":
    sys.exit(main())
