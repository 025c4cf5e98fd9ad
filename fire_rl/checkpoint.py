"""Checkpoints that survive crashes: atomic writes, the previous checkpoint kept, and clear errors on foreign files.

A checkpoint is a dict written with `torch.save`. `save_checkpoint` writes it to a temporary file in the same folder,
fsyncs it, keeps the current checkpoint as ``<name>.prev.pt`` (by hard link, so the checkpoint path never disappears),
then renames the temporary file over the checkpoint and fsyncs the folder. A crash or a kill at any moment leaves either
the old or the new checkpoint in place, never a half-written one. Nothing is written when any tensor of the payload
holds a NaN or Inf. `load_checkpoint` verifies the CRC-32 of every record of the file (a ``torch.save`` file is a zip
archive; ``torch.load`` itself does not check them), then the header (`FORMAT`, agent, env id), before anything is
used.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fire_rl.runtime import nonfinite_tensors

FORMAT = "fire_rl-checkpoint"
VERSION = 2  # 2: the SimBa actor's mean and log-std heads are two Linears
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, foreign, or from another agent or env."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    path: str | Path,
    payload: dict[str, Any],
    *,
    agent: str,
    env_id: str,
) -> Path:
    """Write `payload` to `path` atomically, keeping the previous checkpoint as ``<stem>.prev<suffix>``.

    Args:
        path: the checkpoint file, e.g. ``runs/<run>/checkpoint.pt``.
        payload: anything `torch.save` can write (state dicts, tensors, plain Python values, numpy arrays).
        agent: the agent that wrote it (``"dqn_atari"``); `load_checkpoint` refuses other agents' checkpoints.
        env_id: the environment id; `load_checkpoint` refuses other envs' checkpoints.

    Raises:
        FloatingPointError: a floating tensor of the payload (networks, optimizer moments, temperature, RSNorm
            statistics, scheduler and regularizer state; the replay buffer and env state excepted) holds a NaN or Inf;
            the message names it, nothing is written, and the last checkpoint on disk stays the last good one.
        OSError: the folder is not writable or the disk is full; the previous checkpoint is left as it was and the
            temporary file is removed.
    """
    path = Path(path)
    checked = {k: v for k, v in payload.items() if k not in ("buffer", "env_state")}
    if bad := nonfinite_tensors(checked):
        raise FloatingPointError(f"NaN/Inf in {', '.join(bad)}: not checkpointed; the last good one is {path}")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    record = {"format": FORMAT, "version": VERSION, "agent": agent, "env_id": env_id, "payload": payload}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            prev = path.with_name(f"{path.stem}.prev{path.suffix}")
            prev_tmp = path.with_name(f".{path.stem}.prev{path.suffix}.tmp")
            prev_tmp.unlink(missing_ok=True)
            os.link(path, prev_tmp)
            os.replace(prev_tmp, prev)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if (io_error := _os_error_in(err)) is not None:
            kept = "the previous one is intact" if path.exists() else "there is no earlier checkpoint"
            raise OSError(io_error.errno, f"could not write checkpoint {path}: {io_error.strerror}; {kept}") from err
        raise
    return path


def _os_error_in(err: BaseException) -> OSError | None:
    """`err` or the OSError it was raised from: torch.save reports a failed write (disk full, file too large) as a
    RuntimeError of its zip writer whose context is the OSError."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, OSError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint file → the checkpoint file. Raises `CheckpointError` if there is none."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: give a run directory holding {CHECKPOINT_NAME} or the file itself"
        )
    return path


def load_checkpoint(path: str | Path, *, agent: str, env_id: str | None = None, map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint` and return its payload.

    Args:
        path: a checkpoint file or a run directory holding ``checkpoint.pt``.
        agent: the agent that must have written it.
        env_id: the env id it must be for (None: any).

    Raises:
        CheckpointError: the file is missing, truncated or corrupted (a record fails its CRC-32), not a fire_rl
            checkpoint, or from another agent, env, or format version. Nothing is modified.

    Checkpoints are unpickled with ``weights_only=False`` (they hold numpy RNG states); load only your own files.
    """
    path = resolve_checkpoint(path)
    prev = path.with_name(f"{path.stem}.prev{path.suffix}")
    hint = f"; to resume from the previous checkpoint instead: --resume {prev}" if prev.is_file() else ""
    try:
        with zipfile.ZipFile(path) as archive:
            bad_record = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): {err}{hint}") from err
    if bad_record is not None:
        raise CheckpointError(f"{path} is corrupted: record {bad_record} fails its CRC-32 check{hint}")
    try:
        record = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, AttributeError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupted?): {err}{hint}") from err
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a fire_rl checkpoint (no '{FORMAT}' header)")
    if record.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {record.get('version')}; this code reads {VERSION}"
        )
    if record.get("agent") != agent:
        raise CheckpointError(f"{path} was written by agent {record.get('agent')!r}, not {agent!r}")
    if env_id is not None and record.get("env_id") != env_id:
        raise CheckpointError(f"{path} is for env {record.get('env_id')!r}, not {env_id!r}")
    return record["payload"]


def get_rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU, and every CUDA device if initialised)."""
    # NumPy's legacy global state too: third-party code (wrappers, libraries) may still draw from it.
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}  # noqa: NPY002
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `get_rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
