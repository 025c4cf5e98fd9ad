"""The run lifecycle both agents share: flags, checks, run directory, logging, checkpoints and exit codes.

An agent's ``__main__`` is three lines; its `train` calls `Run.start` once all that can refuse has been built::

    args, checkpoint = parse_args(Args, AGENT)      # bad flag or --resume: exit 2, nothing written
    with Run(args, AGENT, checkpoint) as run:       # exceptions become exit codes, one line each
        train(args, run)                            # build envs and networks, run.start(), the loop, run.finish()
    sys.exit(run.exit_code)

Exit codes: 0 finished, 2 bad input (before `start`: flags, env ids, layer selections, memory, a locked or occupied
run directory, a corrupt checkpoint), 3 a NaN/Inf in a loss or in any tensor of a checkpoint, 4 disk or I/O error,
130 stopped by SIGINT, 143 stopped by SIGTERM (128 + the signal number, what SLURM, Ray and Kubernetes read as
"terminated, requeue"). A stop always writes a checkpoint first.

The run directory holds ``config.json`` (the flags of this start, and ``history``: one entry per start with its
mode, env step and overrides; the first entry keeps the original flags), ``checkpoint.pt`` (+ ``checkpoint.prev.pt``),
the tensorboard event files, ``scalars.csv`` (every logged scalar once, ``tag,step,value``, for pandas),
``resets.jsonl`` and, at the end, ``result.json``. While a run lives it holds an exclusive OS lock on ``.lock``
(released by the kernel when the process dies, so a SIGKILL never leaves a stale lock).
"""

from __future__ import annotations

import collections
import csv
import fcntl
import hashlib
import importlib.util
import json
import math
import os
import secrets
import shutil
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
import tyro
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from fire_rl.checkpoint import get_rng_state, load_checkpoint, resolve_checkpoint, save_checkpoint, set_rng_state
from fire_rl.runtime import GracefulStop, check_run_dir, default_run_dir, seed_everything, write_json_atomic
from fire_rl.scheduler import ResetConfig
from fire_rl.validation import flag

# Flags a resumed run may change: they say how long and where it runs and what it logs, not what its state means.
RESUMABLE = frozenset({
    "total_timesteps", "stop_at", "checkpoint_every", "eval_every", "eval_episodes", "metrics_every", "threads",
    "compile", "cudagraphs", "device", "buffer_device", "track", "wandb_project_name", "wandb_entity",
    "capture_video", "save_buffer", "save_model", "resume", "run_dir", "start_over",
})  # fmt: skip
RESET_FLAGS = frozenset(f.name for f in fields(ResetConfig))
# Flags a branch (--branch-from) may also set: its seed and name, its own reset schedule from the branch point on, and
# its replay ratio (a replay-ratio study on one shared pretraining; the fractional credit restarts at the branch point).
BRANCHABLE = RESUMABLE | {"seed", "exp_name", "branch_from", "replay_ratio"} | RESET_FLAGS
EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_IO = 2, 3, 4
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
RUN_FILES = ("config.json", "checkpoint.pt", "result.json")


def _argv_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in `argv` (``--flag V`` or ``--flag=V``), the last one if repeated."""
    value = None
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(flag + "="):
            value = token.split("=", 1)[1]
    return value


def check_config(path: Path) -> None:
    """Refuse to resume a run whose ``config.json`` (its start history) is not a JSON object.

    Raises:
        ValueError: the message names the file and what to do.
    """
    if not path.is_file():
        return
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict) or not isinstance(config.get("history", []), list):
            raise ValueError("not a JSON object with a 'history' list")
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(
            f"{path} is not a run's config ({err}); the checkpoint holds the run's flags: move {path.name} aside and "
            "--resume again (the record of earlier starts is then lost)"
        ) from None


def holds_run(path: Path) -> bool:
    """Whether `path` already holds a run (its config, checkpoint or result)."""
    return any((path / name).exists() for name in RUN_FILES)


def lock_run_dir(path: Path, probe: bool = False) -> int | None:
    """Take the exclusive OS lock (``flock``) on ``path/.lock`` and write this pid into it; return its descriptor
    (closing it releases the lock; the kernel releases it when the process dies). With `probe`, release it at once.

    Raises:
        ValueError: another process holds it (the message names that process's pid).
    """
    if probe and not (path / ".lock").exists():
        return None
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ValueError(f"run directory {path} is in use by another run (pid {holder})") from None
    if probe:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def parse_args(cls: type, agent: str, presets: dict[str, dict] | None = None, argv: list[str] | None = None):
    """Parse the command line into `cls` (a tyro dataclass with `RunArgs` fields), check it, and load the checkpoint
    of ``--resume`` or ``--branch-from``.

    Defaults come from the preset named by ``--preset`` (so ``--help`` shows the values a run will use), or from the
    flags saved in the checkpoint: a resumed run is the run in DIR, a branch starts as its source. With ``--resume``
    only the flags in `RESUMABLE` may differ from the saved ones, with ``--branch-from`` those in `BRANCHABLE`; any
    other one changes what the checkpoint means and is refused. ``--reset-at-start`` adds the branch's env step to
    ``reset_at``.

    Returns:
        ``(args, checkpoint payload or None)``. Exits with code 2 and one line naming the bad value on any error
        (tyro's own parse errors keep their format); nothing is written.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        checkpoint, default = None, cls()
        resume, branch = _argv_value(argv, "--resume"), _argv_value(argv, "--branch-from")
        if resume is not None and branch is not None:
            raise ValueError("--resume and --branch-from exclude each other: a branch is a new run")
        if (source := resume or branch) is not None:
            source_dir = Path(source) if Path(source).is_dir() else Path(source).parent
            try:  # a running run is the first thing to say
                lock_run_dir(source_dir, probe=True)
            except ValueError as err:
                if resume is not None:
                    raise
                raise ValueError(f"--branch-from {branch}: {err}; its checkpoint is rewritten while it runs: branch "
                                 "from it once it has stopped") from None  # fmt: skip
            checkpoint = load_checkpoint(source, agent=agent)
            if resume is not None:
                check_config(source_dir / "config.json")
            if branch is not None and "buffer" not in checkpoint:
                raise ValueError(
                    f"--branch-from {branch}: the checkpoint holds no replay buffer; save the source run with "
                    f"--save-buffer"
                )
            names = {f.name for f in fields(cls)}
            saved = {k: v for k, v in checkpoint["args"].items() if k in names}
            saved["stop_at"] = None  # each start's own
            if branch is not None:  # a new run: its own directory, unless --run-dir names one
                saved.update(resume=None, run_dir=None, branch_from=branch)
                # ... and its own reset schedule: the source's past resets are in its history, its future is not ours
                for name in RESET_FLAGS:
                    saved.pop(name, None)
            default = cls(**saved)
        elif presets:
            preset = _argv_value(argv, "--preset") or default.preset
            default = cls(**{**asdict(default), **presets.get(preset, {}), "preset": preset})
        args = tyro.cli(cls, default=default, args=argv)
        if checkpoint is not None:
            allowed = BRANCHABLE if branch is not None else RESUMABLE
            for f in fields(cls):
                if f.name not in allowed and getattr(args, f.name) != getattr(default, f.name):
                    raise ValueError(
                        f"{flag(f.name)}={getattr(args, f.name)!r} differs from the run's {getattr(default, f.name)!r}"
                        f": it changes what the checkpoint means; "
                        f"{'a branch' if branch else 'a resumed run'} may change only "
                        f"{', '.join(flag(n) for n in sorted(allowed - {'resume', 'run_dir', 'branch_from'}))}"
                    )
            step = checkpoint["global_step"]
            if args.total_timesteps < step:
                raise ValueError(f"--total-timesteps={args.total_timesteps} is below the checkpoint's env step {step}")
            if args.stop_at is not None and args.stop_at <= step:
                raise ValueError(f"--stop-at={args.stop_at} is not past the checkpoint's env step {step}")
        if resume is not None:
            args.run_dir = str(source_dir)
        else:
            if args.run_dir is None:
                args.run_dir = str(default_run_dir(args.env_id, args.exp_name, args.seed))
            lock_run_dir(Path(args.run_dir), probe=True)
            if holds_run(Path(args.run_dir)) and not args.start_over:
                raise ValueError(
                    f"--run-dir={args.run_dir} already holds a run: continue it with --resume {args.run_dir}, or "
                    f"pass --start-over to move it aside and start a new one"
                )
            if branch is not None and args.reset_at_start:
                args.reset_at = tuple(sorted({*args.reset_at, checkpoint["global_step"]}))
        check_run_dir(args.run_dir)
        args.check(branch_step=checkpoint["global_step"] if branch is not None else None)
        if args.track and importlib.util.find_spec("wandb") is None:
            raise ValueError("--track needs wandb, which is not installed: pip install 'fire_rl[track]'")
    except ValueError as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    return args, checkpoint


def check_memory(what: str, needed_bytes: int, device: torch.device | None = None) -> None:
    """Print how much memory `what` needs (`needed_bytes`, bytes) and how much is available now, with a warning when it
    exceeds 90% of that: the host's (psutil), or with a CUDA `device` that device's (``torch.cuda.mem_get_info``).

    Raises:
        ValueError: `needed_bytes` exceeds the machine's physical memory, or the device's (it could never fit); the
            message names both.
    """
    if device is not None and device.type == "cuda":
        available, total = torch.cuda.mem_get_info(device)
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        mem = psutil.virtual_memory()
        available, total, where = mem.available, mem.total, "this machine"
    if needed_bytes > total:
        raise ValueError(f"{what} needs {needed_bytes / 1e9:.1f} GB; {where} has {total / 1e9:.1f} GB")
    line = f"{what} needs {needed_bytes / 1e9:.2f} GB, {available / 1e9:.1f} GB available on {where}"
    if needed_bytes > 0.9 * available:
        line = f"WARNING: {line}: the run may be killed for lack of memory; lower --buffer-size"
    print(line, flush=True)


class Run:
    """One run of an agent: its directory, lock, logs, checkpoints, signals and exit code.

    Args:
        args: the checked flags from `parse_args` (``run_dir`` set).
        agent: the agent's name, written into and checked against checkpoints.
        checkpoint: the payload to resume from, or None for a fresh run.

    Nothing is written until `start`; an exception before it (ValueError, ImportError) exits 2. After it,
    FloatingPointError exits 3 and OSError exits 4, each with one line; the last good checkpoint is kept.
    """

    def __init__(self, args: Any, agent: str, checkpoint: dict | None = None) -> None:
        self.args, self.agent, self.checkpoint = args, agent, checkpoint
        self.dir = Path(args.run_dir)
        self.branched = args.branch_from is not None and checkpoint is not None and args.resume is None
        self.start_step = checkpoint["global_step"] if checkpoint else 0
        self.end_step = args.stop_at or args.total_timesteps  # env steps: where this start's loop ends
        self.exit_code = 0
        self.started = False
        self._stop = GracefulStop()
        self._lock_fd: int | None = None
        # --overlap logs from the learner thread too; a TextIOWrapper is not thread-safe
        self._log_lock = threading.Lock()
        self._process = psutil.Process()
        self._sps_mark = (time.time(), self.start_step)
        self._returns: collections.deque[float] = collections.deque(maxlen=10)  # the last episodes' returns
        self._postfix: dict[str, Any] = {}
        self.rng = np.random.default_rng(args.seed)  # the agent's own draws (DQN's exploration), checkpointed
        # Batches for diagnostics (plasticity metrics, reset reports): never the buffer's training draws.
        self.probe_rng = np.random.default_rng([args.seed, 1])

    # ---- lifecycle --------------------------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        if self.args.threads:
            torch.set_num_threads(self.args.threads)
        return self

    def start(self, state: dict[str, Any], buffer: Any) -> dict | None:
        """Lock the run directory, open its logs, then `restore` `state` and `buffer` from the checkpoint (if any) and
        apply a branch's ``--reset-at-start`` (``state["scheduler"]``, then, if it reset,
        ``state["regularizer"].on_reset()``). Call once every check has passed and before the first env step.

        Returns:
            The checkpoint payload, or None for a fresh run.

        Raises:
            ValueError: another process holds the run directory (its pid is named), or it holds another run.
            FloatingPointError: the branch's reset produced a NaN or Inf (`ResetScheduler.step`).
            RuntimeError: a `state` object does not fit the checkpoint (its ``load_state_dict``).
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_run_dir(self.dir)
        fresh = self.checkpoint is None or self.branched
        if fresh and holds_run(self.dir):
            if not self.args.start_over:
                raise ValueError(f"{self.dir} already holds a run: --resume {self.dir}, or --start-over")
            self._move_aside()
        for stale in self.dir.glob(".*.tmp"):  # temporary files of a write that a kill interrupted
            stale.unlink()
        if not fresh:  # the result of an earlier start (a --stop-at) no longer holds
            (self.dir / "result.json").unlink(missing_ok=True)
        wandb_id = self._write_config()
        self._open_scalars()
        self._hook = threading.excepthook
        threading.excepthook = self._thread_hook
        if self.args.track:  # before the SummaryWriter exists: sync_tensorboard patches its class
            import wandb

            wandb.init(project=self.args.wandb_project_name, entity=self.args.wandb_entity, sync_tensorboard=True,
                       config=asdict(self.args), name=self.dir.name, id=wandb_id, resume="allow")  # fmt: skip
        self.writer = SummaryWriter(str(self.dir), purge_step=None if fresh else self.start_step + 1)
        if fresh:
            self.writer.add_text("hyperparameters", self.args.markdown())
        self._stop.__enter__()
        self.progress = tqdm(total=self.end_step, initial=self.start_step, unit="step",
                             dynamic_ncols=True, smoothing=0.05, mininterval=1.0)  # fmt: skip
        self._sps_mark = (time.time(), self.start_step)
        self.started = True
        if self.checkpoint is not None:
            how = f"branched from {self.args.branch_from}" if self.branched else "resumed"
            print(f"{self.dir}: {how} at env step {self.start_step:,} (update {self.checkpoint['update_step']:,})")
        ckpt = self.restore(state, buffer)
        self._scheduler = state["scheduler"]
        # A branch inherits its source's reset events (its history); result.json counts them apart.
        inherited = len(self._scheduler.events) if self.branched else (ckpt or {}).get("inherited_resets", 0)
        self.inherited_resets = inherited
        if self.branched and self.args.reset_at_start:
            if state["scheduler"].step(self.start_step, ckpt["update_step"]) is not None:  # None under --reset none
                state["regularizer"].on_reset()
        return ckpt

    def _move_aside(self) -> None:
        old = self.dir.with_name(f"{self.dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        old.mkdir()
        for entry in self.dir.iterdir():
            if entry.name != ".lock":
                shutil.move(str(entry), old / entry.name)
        print(f"--start-over: the previous run is now in {old}", flush=True)

    def _write_config(self) -> str | None:
        """Write ``config.json`` with this start's entry appended to ``history``; return the run's W&B id with
        ``--track`` (a new random one, or the one an earlier start of this run recorded: a resumed run continues its
        own W&B run, and two sweeps with the same run names never merge), else None."""
        args = asdict(self.args)
        history = []
        path = self.dir / "config.json"
        if self.checkpoint is not None and not self.branched and path.is_file():
            history = json.loads(path.read_text()).get("history", [])
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}
        wandb_id = None
        if self.args.track:
            wandb_id = next((h["wandb_id"] for h in reversed(history) if "wandb_id" in h), None) or secrets.token_hex(4)
            entry["wandb_id"] = wandb_id
        if self.checkpoint is None:
            entry.update(mode="fresh", args=args)
        elif self.branched:
            source = resolve_checkpoint(self.args.branch_from)
            digest = hashlib.sha256()
            with open(source, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
            # total_timesteps: the source's planned end, which an action repeat can overshoot (scripts/aggregate.py)
            entry.update(mode="branch", args=args, source={"path": str(source.resolve()), "sha256": digest.hexdigest(),
                         "env_step": self.start_step, "update_step": self.checkpoint["update_step"],
                         "total_timesteps": self.checkpoint["args"]["total_timesteps"],
                         "stop_at": self.checkpoint["args"].get("stop_at")})  # fmt: skip
        else:
            saved = self.checkpoint["args"]
            overrides = {k: v for k, v in args.items() if k not in ("resume", "run_dir") and saved.get(k) != v}
            entry.update(mode="resume", env_step=self.start_step, overrides=overrides)
        write_json_atomic(path, {**args, "history": [*history, entry]})
        return wandb_id

    def _open_scalars(self) -> None:
        path = self.dir / "scalars.csv"
        rows = []
        if self.checkpoint is not None and not self.branched and path.is_file():  # keep what was logged up to it
            with open(path, newline="") as f:
                for row in csv.reader(f):
                    if len(row) == 3 and row[1].isdigit() and int(row[1]) <= self.start_step:
                        rows.append(row)
        tmp = path.with_name(".scalars.csv.tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([["tag", "step", "value"], *rows])
        os.replace(tmp, path)
        self._csv_file = open(path, "a", newline="")  # noqa: SIM115 (closed in __exit__)
        self._csv = csv.writer(self._csv_file)

    def _thread_hook(self, hook_args) -> None:
        if issubclass(hook_args.exc_type, OSError):  # the writer thread's failed write: reported once, as exit 4
            return
        self._hook(hook_args)

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.restore()
        if self.started:
            self.progress.close()
            try:
                self.writer.close()
                self._csv_file.close()
            except OSError as err:
                exc_type, exc = exc_type or OSError, exc or err
            threading.excepthook = self._hook
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        if exc_type is None:
            return False
        if issubclass(exc_type, KeyboardInterrupt):
            code = EXIT_SIGNAL["SIGINT"]
        elif issubclass(exc_type, FloatingPointError):
            code = EXIT_NONFINITE
        elif issubclass(exc_type, OSError):
            code = EXIT_IO
        elif issubclass(exc_type, ValueError | ImportError) and not self.started:
            code = EXIT_BAD_INPUT
        else:
            return False  # a bug: let the traceback show
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(code) from None

    # ---- logging ----------------------------------------------------------------------------------------------------
    def log(self, tag: str, value: float, step: int) -> None:
        """Log one scalar at `step` (env steps) to tensorboard and ``scalars.csv``."""
        value = float(value)
        with self._log_lock:
            self.writer.add_scalar(tag, value, step)
            self._csv.writerow((tag, step, repr(value)))
            if tag == "charts/episodic_return":  # the progress bar shows the mean of the last ones
                self._returns.append(value)
                self._postfix["ret"] = f"{np.mean(self._returns):.4g}"
                self.progress.set_postfix(self._postfix, refresh=False)

    def log_all(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        """Log every scalar of `values` at `step` (env steps), each tag prefixed by `prefix`."""
        for key, value in values.items():
            self.log(prefix + key, value, step)

    def log_losses(self, stats: dict[str, torch.Tensor], step: int, update_step: int, prefix: str = "losses/") -> None:
        """Log an update's 0-dim tensors `stats` (one host sync) as ``<prefix><key>`` at env step `step`, with
        ``charts/SPS`` (env steps per second since this process started), ``charts/update_step`` (gradient updates)
        and ``charts/rss_mb`` (resident memory, MiB).

        Raises:
            FloatingPointError: a NaN or Inf in `stats`; the message names every such tensor and the last good
                checkpoint.
        """
        values = dict(zip(stats, torch.stack([v.float() for v in stats.values()]).tolist()))
        if bad := [k for k, v in values.items() if not math.isfinite(v)]:
            raise FloatingPointError(
                f"non-finite {', '.join(f'{prefix}{k}={values[k]}' for k in bad)} at env step {step}, update "
                f"{update_step}; the last good checkpoint is {self.dir / 'checkpoint.pt'}"
            )
        self.log_all(values, step, prefix)
        now, (then, then_step) = time.time(), self._sps_mark
        sps = int((step - then_step) / max(now - then, 1e-9))
        self.log("charts/SPS", sps, step)
        self.log("charts/update_step", update_step, step)
        self.log("charts/rss_mb", self._process.memory_info().rss / 2**20, step)
        with self._log_lock:
            self._postfix.update(sps=sps, upd=update_step)
            self.progress.set_postfix(self._postfix, refresh=False)

    def advance(self, env_steps: int) -> None:
        """Move the progress bar by `env_steps`."""
        self.progress.update(env_steps)

    # ---- checkpoints and the end ------------------------------------------------------------------------------------
    @property
    def stop_requested(self) -> str | None:
        """``"SIGINT"`` or ``"SIGTERM"`` once one arrived (the loop checkpoints, then calls `stop`), else None."""
        return self._stop.requested

    def restore(self, state: dict[str, Any], buffer: Any) -> dict | None:
        """Resume: load every object of `state` from the checkpoint, in its order (the reset scheduler first: it
        re-applies plasticity injection, which changes the parameter set), the global RNGs and the replay `buffer`
        if the checkpoint holds it. Without a saved buffer, `learning_starts` moves so that the buffer refills before
        learning again.

        Tensors of `state` (SAC's ``log_alpha``) are copied in place. A branch (``--branch-from``) with a seed other
        than its source's reseeds the global RNGs, the agent's RNG and the buffer's sampling RNG; with the same seed it
        continues the source's random streams exactly.

        Returns:
            The checkpoint payload (counters, env state, ...), or None for a fresh run.
        """
        args, ckpt = self.args, self.checkpoint
        self.learning_starts = args.learning_starts
        if ckpt is None:
            return None
        for name, obj in state.items():
            if isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.copy_(ckpt[name])
            else:
                obj.load_state_dict(ckpt[name])
        set_rng_state(ckpt["rng"])
        self.rng.bit_generator.state = ckpt["exploration_rng"]
        self.probe_rng.bit_generator.state = ckpt["probe_rng"]
        if "buffer" in ckpt:
            buffer.load_state_dict(ckpt["buffer"])
        if self.branched and args.seed != ckpt["args"]["seed"]:  # a branch of its own seed: fresh random draws
            seed_everything(args.seed, args.torch_deterministic)
            self.rng, self.probe_rng = np.random.default_rng(args.seed), np.random.default_rng([args.seed, 1])
            buffer.rng = np.random.default_rng(args.seed)
        if "buffer" not in ckpt:
            refill = max(args.batch_size, min(args.learning_starts, args.buffer_size))
            self.learning_starts = ckpt["global_step"] + refill
        return ckpt

    def save(self, state: dict[str, Any], tag: str, buffer: Any, **extra: Any) -> None:
        """Write ``checkpoint.pt`` atomically: the flags, each object's ``state_dict()``, the global RNGs, the replay
        `buffer` with ``--save-buffer``, and `extra` (``global_step``, ``update_step``, env state, ...); then flush the
        logs. Every tensor is checked to be finite first.

        Raises:
            FloatingPointError: a tensor holds a NaN or Inf (named); nothing is written, the last checkpoint stays.
            OSError: the disk is full or read-only; the previous checkpoint is intact.
        """
        payload = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v.state_dict() for k, v in state.items()}
        payload.update(extra, args=asdict(self.args), rng=get_rng_state(), exploration_rng=self.rng.bit_generator.state,
                       probe_rng=self.probe_rng.bit_generator.state,
                       inherited_resets=self.inherited_resets)  # fmt: skip
        if self.args.save_buffer:
            payload["buffer"] = buffer.state_dict()
        save_checkpoint(self.dir / "checkpoint.pt", payload, agent=self.agent, env_id=self.args.env_id)
        self.writer.flush()
        self._csv_file.flush()
        tqdm.write(f"checkpoint ({tag}) at env step {extra['global_step']:,}")

    def stop(self, global_step: int) -> None:
        """End a run stopped by a signal (call after `save`): exit code 130 (SIGINT) or 143 (SIGTERM)."""
        self.exit_code = EXIT_SIGNAL[self._stop.requested]
        self.progress.close()
        print(f"stopped by {self._stop.requested} at env step {global_step:,}; resume with --resume {self.dir}")

    def finish(self, result: dict[str, Any]) -> None:
        """Write ``result.json``: ``finished`` (true at ``total_timesteps``; at ``--stop-at`` false, with
        ``stopped_at``, the env step), `result` (``global_step`` ...), ``resets`` (the number of resets this run
        applied) and ``inherited_resets`` (the env steps of those a branch's source applied before the branch point).
        A sweep reads it as the mark of a run that is done."""
        self.progress.close()
        events = self._scheduler.events
        end = {"finished": True} if result["global_step"] >= self.args.total_timesteps else {
            "finished": False, "stopped_at": result["global_step"]}  # fmt: skip
        resets = {"resets": len(events) - self.inherited_resets,
                  "inherited_resets": [e.global_step for e in events[: self.inherited_resets]]}  # fmt: skip
        write_json_atomic(self.dir / "result.json", {**end, **result, **resets})
        if not end["finished"]:
            print(f"stopped at env step {result['global_step']:,} (--stop-at); continue toward --total-timesteps "
                  f"{self.args.total_timesteps:,} with --resume {self.dir}")  # fmt: skip
