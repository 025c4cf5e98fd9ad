"""Helpers for the end-to-end tests: run an agent as a real subprocess and read what it wrote."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
HUMANOID_BENCH = pytest.mark.skipif(importlib.util.find_spec("humanoid_bench") is None,
                                    reason="HumanoidBench is not installed (README: HumanoidBench)")  # fmt: skip


def run_agent(
    agent: str, *flags: str, timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python agents/<agent>.py <flags>`` from the repository root with one torch thread (and `env` added to
    the environment)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, str(ROOT / "agents" / f"{agent}.py"), "--threads", "1", *flags]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        output = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
    return proc


def start_agent(agent: str, *flags: str) -> subprocess.Popen:
    """Start ``python agents/<agent>.py <flags>`` in the background (stdout and stderr merged)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "agents" / f"{agent}.py"), "--threads", "1", *flags]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until `path` exists, failing if `proc` exits first or `timeout` seconds pass."""
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"agent exited early:\n{proc.stdout.read()}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def load_agent(name: str):
    """Import ``agents/<name>.py`` as a module (to test its `update` functions directly)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "agents" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a run directory: ``{tag: [(step, value), ...]}`` read with tensorboard's own reader."""
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def reset_events(run_dir: Path) -> list[dict]:
    path = run_dir / "resets.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoint.pt", weights_only=False)["payload"]
