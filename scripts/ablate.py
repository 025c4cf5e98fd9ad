"""Replay-ratio ablations: a grid of agent runs, one process each, on a local pool or on Ray.

    python scripts/ablate.py --agent dqn_atari --env-ids ALE/Breakout-v5 ALE/Pong-v5 --methods none fire sp \\
        --replay-ratios 0.25 1 4 --seeds 0 1 2 --out runs/rr-sweep --workers 2 -- --total-timesteps 100000
    python scripts/ablate.py @sweep.args --seeds 3 --backend ray   # flags from a file, one per line; later ones win
    python scripts/ablate.py ... --branch-at 100000 -- --total-timesteps 200000 --stop-at 130000   # the FIRE paper's
                                                                                                    # branches

Grid: ``--env-ids`` x ``--methods`` (the agents' ``--reset``) x ``--replay-ratios`` (gradient updates per env step) x
``--seeds``; other flags go to the agent unchanged (`agent_command`). A run's state is its directory ``OUT/<name>``:
finished when ``result.json`` says so (skipped), resumable when it holds ``checkpoint.pt`` (``--resume``), else new
(a directory without a checkpoint is removed first). Agent output goes to ``OUT/logs/<name>.log``;
``OUT/attempts.jsonl`` gets a line when an attempt starts (pid, command) and ends (status, exit code, error).

Branches (``--branch-at STEP``): per (env id, replay ratio, seed) a pretraining ``<env>__pre__rr<r>__s<seed>__b<STEP>``
(``--reset none --stop-at STEP --save-buffer``), then per method a branch ``<env>__<method>__...__b<STEP>``
(``--branch-from`` it, ``--reset M --reset-at-start``); the flags after ``--`` go to both (the last one wins): their
``--total-timesteps`` is the whole run's, which every schedule spans (epsilon's decay, as in the official runs, which
train with their full total and branch at its midpoint), and their ``--stop-at``, if any, ends the branches. Locally
the pretrainings run first, then the branches; on Ray a branch's task takes its pretraining's ObjectRef. A branch whose
pretraining did not finish is ``failed``, unstarted; its records name the pretraining (``after``). With
``--pretrain-replay-ratio R`` one pretraining per (env id, seed), at R, is shared by the branches of every replay ratio
(they change ``--replay-ratio`` at the branch point: the replay-ratio study on shared pretraining).

Faults (tests/test_sweep_faults.py, tests/test_ablate.py):
- Exit code 2 (the agent refused its input; deterministic): ``failed`` once with its message, never retried.
- Any other failure (crash, ``kill -9``, exit 3 or 4) or a run past ``--run-timeout`` (SIGTERM to its process group,
  SIGKILL after ``--stop-grace``): up to ``--max-retries`` more attempts, resuming from the last checkpoint; locally a
  loop around `attempt`, on Ray the task's ``max_retries``/``retry_exceptions`` (which also cover a lost node).
- The runner killed with SIGKILL: only the kernel can still tell its agents, so on Linux each starts under util-linux's
  ``setpriv --pdeathsig TERM`` (man 2 PR_SET_PDEATHSIG); an agent takes SIGTERM as "checkpoint and exit"
  (fire_rl.runtime.GracefulStop ignores a repeated one) and the re-run resumes it. No orphan runs on (bar a runner
  killed in the millisecond before setpriv's prctl; the run's lock still keeps others off it).
- Nothing runs twice: an attempt holds an exclusive ``flock`` on its log file, which the agent shares as its stdout, so
  the lock lives as long as the agent, past a killed runner; a re-run or a second sweep waits ``--stop-grace`` s for
  it, then reports the run ``busy``.
- Ctrl-C or SIGTERM to the runner: SIGTERM to every agent (each checkpoints), SIGKILL after ``--stop-grace`` s or a
  second Ctrl-C. Exit code 0 when every run finished, 1 when some did not, 2 for bad input (before any work), 130
  when interrupted. Ray (``.[ray]`` extra): every node must see the repository, Python and ``--out`` at one path.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
AGENTS = {"dqn_atari": REPO / "agents" / "dqn_atari.py", "sac_simba": REPO / "agents" / "sac_simba.py"}
METHODS = ("none", "fire", "sp", "full", "pi", "redo")
GRID_FLAGS = ("--env-id", "--seed", "--reset", "--replay-ratio", "--run-dir", "--resume", "--threads", "--branch-from",
              "--reset-at-start")  # fmt: skip
PRE = "pre"  # the method field of a branch sweep's pretraining run (the agent runs it with --reset none)
# The local pool's state. Plain containers: Ray pickles `attempt` with the globals it names (a lock would not pickle).
STOPPING = {"now": False}  # the runner was interrupted: no new attempt, no retry
RUNNING: dict[str, subprocess.Popen] = {}  # run name -> its agent process
# What each numeric flag allows.
LIMITS = {"replay_ratios": "> 0", "seeds": ">= 0", "workers": ">= 1", "threads": ">= 1", "gpus_per_run": ">= 0",
          "max_retries": ">= 0", "run_timeout": "> 0", "stop_grace": ">= 0", "branch_at": "> 0",
          "pretrain_replay_ratio": "> 0"}  # fmt: skip


class RunSpec(NamedTuple):
    """One grid cell: env id, reset method (`PRE`: a pretraining), replay ratio (gradient updates per env step), seed
    and branch point (env steps; 0: a run from scratch)."""

    env_id: str
    method: str
    replay_ratio: float
    seed: int
    branch_at: int = 0
    pretrain_ratio: float | None = None  # a branch's shared pretraining's replay ratio (None: the branch's own)

    @property
    def name(self) -> str:
        """``<env>__<method>__rr<ratio %g>__s<seed>[__b<branch_at>]``, characters not in ``[A-Za-z0-9._-]`` as -."""
        text = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in f"{self[0]}__{self[1]}")
        return f"{text}__rr{self.replay_ratio:g}__s{self.seed}" + (f"__b{self.branch_at}" if self.branch_at else "")

    @property
    def pretraining(self) -> RunSpec | None:
        """The run this branch starts from, None for a pretraining or a run from scratch."""
        if not self.branch_at or self.method == PRE:
            return None
        return RunSpec(self.env_id, PRE, self.pretrain_ratio or self.replay_ratio, self.seed, self.branch_at)


def build_grid(env_ids, methods, replay_ratios, seeds, branch_at: int = 0, pretrain_ratio: float | None = None):
    """Every combination, seeds varying fastest; with `branch_at`, each env id's pretrainings before its branches: one
    per replay ratio, or with `pretrain_ratio` one at that ratio that the branches of every ratio share (a replay-ratio
    study in the FIRE paper's protocol). Returns a list of `RunSpec`. Raises ValueError when two cells share a run
    directory name."""
    grid = []
    for e in env_ids:
        if branch_at:
            grid += [RunSpec(e, PRE, float(r), int(s), branch_at) for r in
                     ([pretrain_ratio] if pretrain_ratio else replay_ratios) for s in seeds]  # fmt: skip
        grid += [RunSpec(e, m, float(r), int(s), branch_at, pretrain_ratio if branch_at else None) for m in methods
                 for r in replay_ratios for s in seeds]  # fmt: skip
    clashes = sorted(n for n, c in collections.Counter(s.name for s in grid).items() if c > 1)
    if clashes:
        raise ValueError(f"grid cells share run directory names {clashes}; make the env ids / values distinct")
    return grid


def agent_command(agent: Path, spec: RunSpec, run_dir: Path, threads: int, agent_args) -> list[str]:
    """A run's argv: the grid flags, the pass-through flags, then a pretraining's length and ``--save-buffer`` or a
    branch's source (`attempt` adds ``--resume RUN_DIR`` to resume)."""
    cmd = [sys.executable, str(agent), "--env-id", spec.env_id, "--seed", str(spec.seed), "--reset",
           "none" if spec.method == PRE else spec.method, "--replay-ratio", repr(spec.replay_ratio), "--run-dir",
           str(run_dir), "--threads", str(threads), *agent_args]  # fmt: skip
    if spec.method == PRE:  # after the pass-through flags, whose --stop-at ends the branches: the last one wins
        return [*cmd, "--stop-at", str(spec.branch_at), "--save-buffer"]
    if spec.pretraining:
        return [*cmd, "--branch-from", str(run_dir.parent / spec.pretraining.name)] + (
            ["--reset-at-start"] if spec.method != "none" else [])  # fmt: skip
    return cmd


def run_state(run_dir: Path) -> str:
    """``"finished"`` (``result.json`` says so, or that it stopped at its ``--stop-at``), ``"resumable"``
    (``checkpoint.pt`` exists) or ``"new"``."""
    try:
        result = json.loads((run_dir / "result.json").read_text())
        if result.get("finished") is True or "stopped_at" in result:
            return "finished"
    except (OSError, ValueError):
        pass
    return "resumable" if (run_dir / "checkpoint.pt").is_file() else "new"


def with_parent_death_signal(cmd: list[str]) -> list[str]:
    """`cmd` under ``setpriv --pdeathsig TERM`` where util-linux's setpriv exists (Linux), else unchanged."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


class RunFailed(Exception):
    """An attempt that failed in a way worth another (Ray retries a task on it through ``retry_exceptions``)."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)  # its only argument: unpickled (Ray's driver) as RunFailed(result)
        self.result = result

    def __str__(self) -> str:
        return f"{self.result['status']}: {self.result['run']} (exit code {self.result['exit_code']})"


def record(out: Path, **fields) -> dict:
    """Append one JSON line to ``out/attempts.jsonl`` (appends of one short line each do not interleave); an attempt's
    end is also printed."""
    with open(out / "attempts.jsonl", "a") as f:
        f.write(json.dumps({"time": time.time(), **fields}) + "\n")
    if fields["event"] == "end":
        error = f": {fields['error']}" if fields["error"] else ""
        log = out / "logs" / f"{fields['run']}.log"
        print(f"{fields['status']}: {fields['run']} (exit code {fields['exit_code']}, log {log}){error}", flush=True)
    return {key: value for key, value in fields.items() if key != "event"}


def hold_lock(log, wait_s: float) -> bool:
    """Take the exclusive flock of an open file, trying for `wait_s` seconds; False when another process keeps it."""
    for _ in range(int(wait_s / 0.2) + 1):
        with contextlib.suppress(BlockingIOError):
            fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen, grace: float) -> int:
    """SIGTERM the agent's process group, SIGKILL it after `grace` s; returns the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def attempt(name: str, cmd: list[str], out: str, timeout: float | None, grace: float, after=None) -> dict:
    """One attempt of run `name` (directory ``out/name``, fresh-run argv `cmd`), start to end; a Ray task's body.
    `after`: the result of the run it branches from; unless that finished, nothing starts and the run is ``failed``.

    Returns:
        ``{run, status, exit_code, seconds, error}`` (``after``: the pretraining's name), status ``finished``,
        ``failed`` (exit code 2, or no finished pretraining), ``interrupted`` (the runner is stopping) or ``busy``
        (another process holds the run).

    Raises:
        RunFailed: any other failure or a timeout. KeyboardInterrupt (``ray.cancel``): after stopping the agent.
    """
    out, start = Path(out), time.time()
    run_dir, result = out / name, {"run": name, "status": "interrupted", "exit_code": None, "error": None}
    if after is not None:
        result["after"] = after["run"]
        if after["status"] != "finished":
            error = f"not started: its pretraining {after['run']} did not finish ({after['status']})"
            return record(out, event="end", **{**result, "status": "failed", "error": error})
    with open(out / "logs" / f"{name}.log", "ab") as log:
        if not hold_lock(log, grace):
            return record(out, event="end", **{**result, "status": "busy", "error": f"{log.name} is locked: it runs"})
        state = run_state(run_dir)
        if state == "finished" or STOPPING["now"]:
            return {**result, "status": "finished", "exit_code": 0} if state == "finished" else result
        if state == "new" and run_dir.exists():
            shutil.rmtree(run_dir)
        if state == "resumable":  # a branch resumes as the run in its directory; the agent takes one of the two
            cut = cmd.index("--branch-from") if "--branch-from" in cmd else len(cmd)
            cmd = [*cmd[:cut], *cmd[cut + 2 :], "--resume", str(run_dir)]
        log.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {socket.gethostname()}: {' '.join(cmd)}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(with_parent_death_signal(cmd), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        RUNNING[name] = proc
        if STOPPING["now"]:  # interrupted while starting it, perhaps after the runner signalled RUNNING: stop it here
            os.killpg(proc.pid, signal.SIGTERM)
        record(out, run=name, event="start", pid=proc.pid, host=socket.gethostname(), command=cmd,
               **({"after": after["run"]} if after else {}))  # fmt: skip
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, code = True, stop(proc, grace)
        except BaseException:
            stop(proc, grace)
            raise
        finally:
            RUNNING.pop(name, None)
    finished = code == 0 and run_state(run_dir) == "finished"
    status = "finished" if finished else "interrupted" if STOPPING["now"] else "timeout" if timed_out else "failed"
    lines = Path(log.name).read_bytes()[offset:].decode(errors="replace").strip().splitlines() or [""]
    error = next((line for line in reversed(lines) if line.startswith("error:")), lines[-1])
    result.update(status=status, exit_code=code, seconds=round(time.time() - start, 3))
    result = record(out, event="end", **result | {"error": None if finished else error[:500]})
    if status in ("failed", "timeout") and code != 2:
        raise RunFailed(result)
    return result


def run_with_retries(retries: int, *args) -> dict:
    """`attempt(*args)`, then up to `retries` more after a `RunFailed` (the local pool's counterpart of Ray's)."""
    for left in range(retries, -1, -1):
        try:
            return attempt(*args)
        except RunFailed as err:
            if left == 0 or STOPPING["now"]:
                return err.result
            print(f"retry {retries - left + 1}/{retries} of {err.result['run']}", flush=True)


def dependency(name: str, after: dict[str, str], results: dict):
    """What run `name` waits for: None, or its pretraining's result (a Ray ObjectRef of it), or, for one that is not
    among `results` (it finished before this sweep), ``{run, status: finished}``."""
    return None if name not in after else results.get(after[name], {"run": after[name], "status": "finished"})


def run_local(tasks: list[tuple], cfg: argparse.Namespace, after: dict[str, str]) -> list[dict]:
    """Up to ``--workers`` agents at once, `run_with_retries` in a thread each: first the runs that depend on none,
    then those that branch from one (`after`: run -> pretraining), given its result; on Ctrl-C stop them all."""
    pool, results, futures = ThreadPoolExecutor(max_workers=cfg.workers), {}, {}
    try:
        for wave in ([t for t in tasks if t[0] not in after], [t for t in tasks if t[0] in after]):
            futures = {t[0]: pool.submit(run_with_retries, cfg.max_retries, *t, dependency(t[0], after, results))
                       for t in wave}  # fmt: skip
            results |= {name: future.result() for name, future in futures.items()}
        return list(results.values())
    except KeyboardInterrupt:
        STOPPING["now"] = True
        print(f"stopping {len(RUNNING)} agent(s): SIGTERM, SIGKILL after {cfg.stop_grace:g} s", flush=True)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for proc in list(RUNNING.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: SIGKILL now
                wait(futures.values(), timeout=cfg.stop_grace if sig == signal.SIGTERM else None)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_ray(tasks: list[tuple], cfg: argparse.Namespace, after: dict[str, str]) -> list[dict]:
    """One Ray task per run (``num_cpus`` = ``--threads``), retried by Ray; a branch's task takes its pretraining's
    ObjectRef (`tasks` lists pretrainings first); on Ctrl-C the tasks are cancelled, which raises KeyboardInterrupt in
    each and stops its agent."""
    import ray

    if __name__ != "__main__":  # imported under another name (tests): Ray's workers could not import it by name
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    if cfg.address:
        ray.init(address=cfg.address)
    else:
        ray.init(num_cpus=cfg.workers * cfg.threads if cfg.workers else None, include_dashboard=False)
    remote = ray.remote(num_cpus=cfg.threads, num_gpus=cfg.gpus_per_run, max_retries=cfg.max_retries,
                        retry_exceptions=[RunFailed])(attempt)  # fmt: skip
    refs, results = {}, []
    for task in tasks:
        refs[task[0]] = remote.remote(*task, dependency(task[0], after, refs))
    try:
        for (name, *args), ref in zip(tasks, refs.values()):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as err:  # retries spent (RunFailed), or a task Ray could not run
                cause = getattr(err, "cause", None)
                failed = {"run": name, "status": "failed", "exit_code": None, "error": str(err).strip()[-500:]}
                if isinstance(cause, RunFailed):  # its own, or its pretraining's (then it never ran: say so)
                    failed = cause.result if cause.result["run"] == name else attempt(name, *args, after=cause.result)
                results.append(failed)
        return results
    except KeyboardInterrupt:
        for ref in refs.values():
            ray.cancel(ref)
        ray.wait(list(refs.values()), num_returns=len(refs), timeout=cfg.stop_grace + 10)
        raise
    finally:
        ray.shutdown()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ablate.py", allow_abbrev=False, fromfile_prefix_chars="@",
        description="Run a grid of agent runs (env ids x reset methods x replay ratios x seeds), one process each. "
        "Flags this script does not know, and everything after --, go to the agent. @FILE reads flags from FILE.",
    )  # fmt: skip
    add = parser.add_argument
    add(
        "--agent",
        default="dqn_atari",
        help="dqn_atari, sac_simba, or a path to an agent .py file (default: %(default)s)",
    )
    add("--env-ids", nargs="+", required=True, help="env ids, e.g. ALE/Breakout-v5")
    add("--methods", nargs="+", required=True, choices=METHODS, help="reset methods")
    add("--replay-ratios", nargs="+", required=True, type=float, help="gradient updates per env step")
    add("--seeds", nargs="+", type=int, default=[0], help="seeds (default: 0)")
    add("--out", type=Path, help="sweep directory (default: runs/ablate-<agent>)")
    add("--backend", choices=("local", "ray"), default="local", help="local process pool or Ray (default: %(default)s)")
    add("--workers", type=int, help="runs at once (default: usable cores // --threads; local backend)")
    add("--address", help="Ray cluster address (ray backend; default: start a local cluster)")
    add("--threads", type=int, default=1, help="torch threads per run, the agent's --threads (default: %(default)s)")
    add("--gpus-per-run", type=float, default=0.0, help="GPUs per Ray task (default: %(default)s)")
    add("--max-retries", type=int, default=1, help="extra attempts of a failed run (default: %(default)s)")
    add("--run-timeout", type=float, help="seconds after which a run is stopped (default: none)")
    add("--stop-grace", type=float, default=30.0, help="seconds from SIGTERM to SIGKILL (default: %(default)s)")
    add("--branch-at", type=int, help="env step of the branch point: per (env id, replay ratio, seed) a pretraining "
        "to it, then a branch per method from its checkpoint (default: no branches)")  # fmt: skip
    add(
        "--pretrain-replay-ratio",
        type=float,
        help="with --branch-at: one pretraining per (env id, seed) at this "
        "replay ratio, shared by the branches of every --replay-ratios value (default: one per ratio, at it)",
    )
    add("--dry-run", action="store_true", help="print the grid and each run's command, run nothing")
    return parser


def resolve(argv, parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, Path]:
    """Parse and check every value (``parser.error``: exit code 2 before any work); returns settings and agent file."""
    cfg, extra = parser.parse_known_args(argv)
    cfg.agent_args = tuple(a for a in extra if a != "--")
    for key, bound in LIMITS.items():
        values, (op, low) = getattr(cfg, key), bound.split()
        for v in values if isinstance(values, list) else [] if values is None else [values]:
            if not (math.isfinite(v) and (v > int(low) if op == ">" else v >= int(low))):
                parser.error(f"argument --{key.replace('_', '-')}: {v!r} is invalid; allowed: {bound}")
    agent = AGENTS.get(cfg.agent, Path(cfg.agent))
    if agent.suffix != ".py" or not agent.is_file():
        parser.error(f"argument --agent: {cfg.agent!r} is invalid; allowed: {list(AGENTS)} or an agent .py file")
    if cfg.address is not None and cfg.backend != "ray":
        parser.error(f"argument --address: {cfg.address!r} needs --backend ray (backend is {cfg.backend!r})")
    for token in cfg.agent_args:
        if token.split("=", 1)[0].replace("_", "-") in GRID_FLAGS:
            parser.error(f"agent flag {token!r} is set by the sweep; use --env-ids, --seeds, --methods, "
                         "--replay-ratios, --out, --threads, --branch-at")  # fmt: skip
    if cfg.pretrain_replay_ratio is not None and cfg.branch_at is None:
        parser.error(f"argument --pretrain-replay-ratio: {cfg.pretrain_replay_ratio} needs --branch-at")
    if cfg.branch_at is not None:  # the agent flags' last --stop-at (else --total-timesteps) ends the branches
        pairs = [a.split("=", 1) if "=" in a else [a, b] for a, b in zip(cfg.agent_args, (*cfg.agent_args[1:], ""))]
        given = {key.replace("_", "-"): value for key, value in pairs}
        end = given.get("--stop-at", given.get("--total-timesteps", "none"))
        with contextlib.suppress(ValueError):  # tyro reads 130_000 as Python does
            end = int(end)
        if not (isinstance(end, int) and end > cfg.branch_at):
            parser.error(f"argument --branch-at: {cfg.branch_at} needs the branches' end (--stop-at, else "
                         f"--total-timesteps, agent flags after --) above it; they give {end}")  # fmt: skip
    if cfg.backend == "ray" and not cfg.dry_run:
        try:
            import ray  # noqa: F401
        except ImportError:
            parser.error('argument --backend: "ray" needs Ray, which is not installed: pip install -e ".[ray]"')
    if cfg.backend == "local" and cfg.workers is None:
        cfg.workers = max(1, len(os.sched_getaffinity(0)) // cfg.threads)
    cfg.out = (cfg.out or REPO / "runs" / f"ablate-{agent.stem}").resolve()  # absolute: the agents run in REPO
    if cfg.out.exists() and not cfg.out.is_dir():
        parser.error(f"argument --out: {str(cfg.out)!r} is not a directory")
    return cfg, agent.resolve()


def main(argv=None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = build_parser()
    cfg, agent = resolve(argv, parser)
    try:
        grid = build_grid(cfg.env_ids, cfg.methods, cfg.replay_ratios, cfg.seeds, cfg.branch_at or 0,
                          cfg.pretrain_replay_ratio)  # fmt: skip
    except ValueError as err:
        parser.error(str(err))
    states = {spec.name: run_state(cfg.out / spec.name) for spec in grid}
    commands = {s.name: agent_command(agent, s, cfg.out / s.name, cfg.threads, cfg.agent_args) for s in grid}
    todo = [name for name, state in states.items() if state != "finished"]
    resumable = list(states.values()).count("resumable")
    print(f"{len(grid)} runs in the grid: {len(grid) - len(todo)} finished, {len(todo)} to run ({resumable} resume "
          f"from a checkpoint); out {cfg.out}", flush=True)  # fmt: skip
    if cfg.dry_run:
        for name, state in states.items():
            print(f"  {state:9s} {name}: {' '.join(commands[name][1:])}")
        return 0
    (cfg.out / "logs").mkdir(parents=True, exist_ok=True)
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads)  # inherited by the agents (and a local Ray cluster's workers)
    tasks = [(name, commands[name], str(cfg.out), cfg.run_timeout, cfg.stop_grace) for name in todo]
    after = {s.name: s.pretraining.name for s in grid if s.pretraining}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the sweep as Ctrl-C does
    try:
        results = run_ray(tasks, cfg, after) if cfg.backend == "ray" and tasks else run_local(tasks, cfg, after)
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume (log {cfg.out / 'attempts.jsonl'})", flush=True)
        return 130
    counts = collections.Counter(r["status"] for r in results) + collections.Counter(finished=len(grid) - len(todo))
    print("sweep done: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())), flush=True)
    return 0 if counts["finished"] == len(grid) else 1


if __name__ == "__main__":
    sys.exit(main())
