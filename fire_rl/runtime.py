"""Run plumbing both agents share: device choice, seeding, compiling, run directories, atomic JSON, graceful stops,
and the replay-ratio accounting that turns env steps into gradient updates."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    """``"auto"`` → CUDA if available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given.

    Raises:
        ValueError: an unknown name, or ``cuda`` on a machine without a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", name):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
        return torch.device(name)
    raise ValueError(f"device={name!r} is not allowed; choose 'auto', 'cpu', 'cuda' or 'cuda:N'")


def check_compile(compile: bool, cudagraphs: bool, device: str) -> None:
    """Refuse ``--compile``/``--cudagraphs`` where they cannot run, before any work.

    Raises:
        ValueError: ``--cudagraphs`` on a machine or `device` without CUDA; ``--compile`` on CPU without a C++ compiler
            (inductor emits C++ there).
    """
    if cudagraphs and (device == "cpu" or not torch.cuda.is_available()):
        raise ValueError(f"--cudagraphs captures CUDA graphs: it needs a CUDA device (device={device!r}, CUDA "
                         f"available: {torch.cuda.is_available()}); drop --cudagraphs")  # fmt: skip
    compiler = os.environ.get("CXX", "g++")  # inductor's default on Linux
    if compile and not cudagraphs and resolve_device(device).type == "cpu" and not shutil.which(compiler):
        raise ValueError(f"--compile on CPU needs a C++ compiler ({compiler}), which is not on PATH; install one "
                         "(apt-get install g++) or drop --compile")  # fmt: skip


def compiled(fn: Callable, compile: bool, cudagraphs: bool) -> Callable:
    """`fn` as ``--compile`` and ``--cudagraphs`` ask: itself, ``torch.compile(fn)`` (inductor; on CPU C++, on CUDA
    Triton), or ``torch.compile(fn, mode="reduce-overhead")``, which also captures and replays CUDA graphs (inductor's
    CUDA graph trees). Random draws inside stay those of the eager code (inductor's ``fallback_random``), so a compiled
    run differs from the eager one only by the order of floating-point operations that inductor fuses. Guards recompile
    on a changed structure (plasticity injection) and never on values changed in place (every other reset)."""
    if not (compile or cudagraphs):
        return fn
    import torch._inductor.config

    torch._inductor.config.fallback_random = True
    return torch.compile(fn, mode="reduce-overhead" if cudagraphs else None)


def zero_optimizer_state_(optimizer: torch.optim.Optimizer) -> None:
    """Give `optimizer` the state of a fresh one, in place: every state tensor zeroed (Adam's step and moments at 0
    step exactly as an empty state does), its storage kept, so a captured CUDA graph keeps reading it."""
    with torch.no_grad():
        for state in optimizer.state.values():
            for key, value in state.items():
                state[key] = value.zero_() if torch.is_tensor(value) else type(value)(0)


def warm_up(step: Callable, *args: Any, state: dict[str, Any]) -> None:
    """Call `step(*args)` once, so that it compiles (and captures) while the run is built, then put back what it
    changed: the parameters and buffers of each module of `state` and each tensor of `state`, in place (storage kept, as
    a captured graph needs); each optimizer of `state`, which must have no state yet, gets a fresh one's
    (`zero_optimizer_state_`); gradients are cleared and the torch RNGs restored.

    Raises:
        ValueError: an optimizer of `state` already has a state (the warm-up runs before the first update), or
            compiling failed (the message names the error and the flags to drop); nothing was changed.
    """
    modules = [o for o in state.values() if isinstance(o, torch.nn.Module)]
    optimizers = [o for o in state.values() if isinstance(o, torch.optim.Optimizer)]
    if any(opt.state for opt in optimizers):
        raise ValueError("warm_up runs before the first update: its optimizers must not have a state yet")
    tensors = [t for m in modules for t in m.state_dict().values()]  # they share the storage of params and buffers
    tensors += [o for o in state.values() if isinstance(o, torch.Tensor)]
    saved = [t.detach().clone() for t in tensors]
    devices = list({t.device for t in tensors if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            step(*args)
    except Exception as err:  # inductor's and dynamo's errors have no common public base
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(f"compiling the update failed ({type(err).__name__}: {first[:300]}); drop --compile and "
                         "--cudagraphs") from err  # fmt: skip
    finally:
        with torch.no_grad():
            for tensor, before in zip(tensors, saved, strict=True):
                tensor.copy_(before)
        for opt in optimizers:
            zero_optimizer_state_(opt)
        for module in modules:
            module.zero_grad(set_to_none=True)


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; with `deterministic`, ask cuDNN for deterministic kernels (CleanRL's flag)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (legacy global state, for third-party code that still uses it)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False


def default_run_dir(env_id: str, exp_name: str, seed: int, root: str = "runs") -> Path:
    """CleanRL's ``runs/{env}__{exp}__{seed}__{time}``, with ``/`` in env ids replaced so it is one folder."""
    safe_env = env_id.replace("/", "_")
    return Path(root) / f"{safe_env}__{exp_name}__{seed}__{int(time.time())}"


def check_run_dir(path: str | Path) -> Path:
    """Check, without creating anything, that `path` can be (or is) a writable run directory.

    Raises:
        ValueError: `path` or one of its ancestors is a file, or the nearest existing ancestor is not writable.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"run directory {path}: {probe} exists and is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"run directory {path}: {probe} is not writable")
    return path


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to `path` through a temporary file, fsync and rename: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def nonfinite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths (``"optimizers.0.state.3.exp_avg_sq"``) of the floating-point tensors in a nested dict/list/tuple
    that hold a NaN or Inf; one host sync for all of them."""

    def walk(node: Any, path: str):
        if isinstance(node, torch.Tensor):
            if node.is_floating_point() or node.is_complex():
                yield path, node
        elif isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                yield from walk(value, f"{path}.{i}" if path else str(i))

    named = list(walk(tree, prefix))
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named]).tolist()
    return [name for (name, _), ok in zip(named, flags) if not ok]


def nonfinite_parameters(modules: dict[str, torch.nn.Module]) -> list[str]:
    """Names (``"<module>.<parameter>"``) of parameters holding a NaN or Inf; one host sync for all of them."""
    return nonfinite_tensors({m: dict(module.named_parameters()) for m, module in modules.items()})


class GracefulStop:
    """Turns SIGINT (Ctrl-C) and SIGTERM into a flag the training loop checks once per iteration, so the loop stops
    between updates (never inside an optimizer step) and can write a consistent checkpoint.

    A second SIGINT while stopping (Ctrl-C twice) restores the default handlers and raises KeyboardInterrupt at once.
    A repeated SIGTERM is ignored: process managers and the kernel's parent-death signal may send it more than once,
    and the checkpoint it asked for is being written (SIGKILL is what forces a stop).
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        if self.requested is not None:
            if signum == signal.SIGTERM:
                return
            self.restore()
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def __exit__(self, *exc) -> None:
        self.restore()


class Background:
    """Runs one job at a time in a worker thread (`submit`), or inline when not `enabled`; `wait` blocks until the
    running job is done and re-raises its exception. The DQN agent's ``--overlap`` learns with it while the next env
    steps are played (PyTorch's kernels and ale-py release the GIL)."""

    def __init__(self, enabled: bool) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner") if enabled else None
        self._job: Future | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Wait for the previous job, then run ``fn(*args)`` (in the worker thread when enabled)."""
        self.wait()
        if self._pool is None:
            fn(*args)
        else:
            self._job = self._pool.submit(fn, *args)

    def wait(self) -> None:
        """Block until the running job (if any) is done; re-raise what it raised."""
        job, self._job = self._job, None
        if job is not None:
            job.result()

    def shutdown(self) -> None:
        """Wait for the running job and stop the worker thread."""
        self.wait()
        if self._pool is not None:
            self._pool.shutdown()


def crossed(global_step: int, step_size: int, every: int) -> bool:
    """Did the last step of `step_size` env steps, ending at `global_step`, cross a multiple of `every`? (0: never)"""
    return every > 0 and global_step // every > (global_step - step_size) // every


class ReplayRatio:
    """Turns env steps into gradient updates at a fixed replay ratio (updates per env step), fractional ratios included.

    Every call to `updates(env_steps)` adds ``replay_ratio · env_steps`` to a credit and returns its whole part, so over
    a run the number of updates is ``floor(replay_ratio · env_steps)`` exactly (0.25 gives one update every 4 env steps,
    as Nature DQN and CleanRL; 2 gives two per env step). Credits are kept as an integer count of env steps times a
    rational ratio, so no floating-point drift accumulates.

    Raises:
        ValueError: replay_ratio <= 0.
    """

    def __init__(self, replay_ratio: float) -> None:
        if not replay_ratio > 0:
            raise ValueError(f"replay_ratio={replay_ratio}: must be > 0 (gradient updates per env step)")
        from fractions import Fraction

        self.ratio = Fraction(replay_ratio).limit_denominator(10_000)
        self.env_steps = 0
        self.done = 0

    def updates(self, env_steps: int) -> int:
        """Add `env_steps` env steps; return how many gradient updates are now due."""
        self.env_steps += env_steps
        due = int(self.env_steps * self.ratio) - self.done
        self.done += due
        return due

    def state_dict(self) -> dict[str, int | str]:
        return {"env_steps": self.env_steps, "done": self.done, "ratio": str(self.ratio)}

    def load_state_dict(self, state: dict[str, int | str]) -> None:
        """Continue the saved credit; a saved credit of another ratio (a branch that changes ``--replay-ratio``)
        restarts at 0 here, so the new ratio neither bursts updates nor owes any."""
        if str(state.get("ratio", self.ratio)) != str(self.ratio):
            self.env_steps = self.done = 0
            return
        self.env_steps, self.done = int(state["env_steps"]), int(state["done"])
