"""Runs that survive kills, interrupts, bad checkpoints, unwritable directories and numerical trouble.

Real processes on a real Atari game with tiny budgets: each test kills or corrupts something and checks that nothing
was lost: checkpoints are never half-written, resumed curves have no duplicate or missing steps, errors are clear.
"""

import os
import random
import resource
import signal
import subprocess
import sys
import time

import torch
from agent_utils import ROOT, checkpoint, reset_events, run_agent, scalars, wait_for

from fire_rl.checkpoint import load_checkpoint

FLAGS = ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "320", "--learning-starts", "160", "--buffer-size", "1000",
         "--replay-ratio", "1", "--metrics-every", "0", "--checkpoint-every", "80", "--reset", "fire",
         "--reset-every", "160"]  # fmt: skip


def start_agent(run_dir, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "agents" / "dqn_atari.py"), "--threads", "1", *FLAGS, *extra]
    if "--resume" not in extra:
        cmd += ["--run-dir", str(run_dir)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def assert_clean_curves(run_dir):
    for tag, points in scalars(run_dir).items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag} has duplicate or out-of-order steps after resume: {steps}"


def test_kill_9_then_resume_loses_nothing(tmp_path):
    rng = random.Random(0)
    run_dir = tmp_path / "run"
    for attempt in range(2):
        proc = start_agent(run_dir) if attempt == 0 else start_agent(run_dir, "--resume", str(run_dir))
        wait_for(run_dir / "checkpoint.pt", proc)
        time.sleep(rng.uniform(0.5, 4.0))  # somewhere in an update, a checkpoint write or a reset
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        payload = load_checkpoint(run_dir, agent="dqn_atari")  # never half-written, whenever the kill came
        assert payload["global_step"] % 80 == 0
    proc = start_agent(run_dir, "--resume", str(run_dir))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    ckpt = checkpoint(run_dir)
    assert ckpt["global_step"] == 320
    assert [e["global_step"] for e in reset_events(run_dir)] == [160, 320], "each reset exactly once"
    assert_clean_curves(run_dir)
    assert (run_dir / "result.json").exists()


def test_sigint_saves_a_checkpoint_and_resume_finishes(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_agent(run_dir)
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out
    assert "resume with --resume" in out
    step = checkpoint(run_dir)["global_step"]
    assert 80 <= step < 320
    run_agent("dqn_atari", *FLAGS, "--resume", str(run_dir))
    assert checkpoint(run_dir)["global_step"] == 320
    assert_clean_curves(run_dir)


def test_bad_checkpoints_are_refused_and_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cases = {
        "truncated": lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),
        "foreign": lambda p: torch.save({"model": torch.zeros(3)}, p),
        "empty": lambda p: p.write_bytes(b""),
    }
    for name, make in cases.items():
        make(run_dir / "checkpoint.pt")
        before = (run_dir / "checkpoint.pt").read_bytes()
        proc = run_agent("dqn_atari", *FLAGS, "--resume", str(run_dir), check=False, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert "checkpoint" in proc.stderr
        assert (run_dir / "checkpoint.pt").read_bytes() == before, f"{name}: the checkpoint was modified"
        assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt"], "nothing else written"


def test_checkpoint_of_another_agent_or_env_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_agent("dqn_atari", *FLAGS[:2], "--total-timesteps", "100", "--learning-starts", "50", "--buffer-size", "1000",
              "--run-dir", str(run_dir))  # fmt: skip
    proc = run_agent("dqn_atari", "--env-id", "ALE/Pong-v5", "--resume", str(run_dir), check=False, timeout=120)
    assert proc.returncode == 2 and "ALE/Breakout-v5" in proc.stderr and "ALE/Pong-v5" in proc.stderr
    proc = run_agent("sac_simba", "--resume", str(run_dir), check=False, timeout=120)
    assert proc.returncode == 2 and "dqn_atari" in proc.stderr and "Traceback" not in proc.stderr


def test_unwritable_run_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = run_agent("dqn_atari", "--run-dir", str(blocker / "run"), check=False, timeout=120)
    assert proc.returncode == 2 and "not a directory" in proc.stderr and "Traceback" not in proc.stderr


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_agent("dqn_atari", *FLAGS, "--learning-rate", "1e12", "--run-dir", str(run_dir), check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "NaN" in proc.stderr or "nan" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    payload = load_checkpoint(run_dir, agent="dqn_atari")
    for name, value in payload["q_network"].items():
        assert torch.isfinite(value).all(), f"the kept checkpoint holds a non-finite {name}"


def test_disk_full_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path):
    # A file-size limit makes every write past 2 MB fail as a full disk would (EFBIG instead of ENOSPC): the event
    # files stay below it, the next checkpoint (about 27 MB) cannot be written.
    run_dir = tmp_path / "run"
    run_agent("dqn_atari", *FLAGS, "--stop-at", "80", "--run-dir", str(run_dir))
    before = (run_dir / "checkpoint.pt").read_bytes()

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "agents" / "dqn_atari.py"), "--threads", "1", *FLAGS, "--stop-at", "160",
           "--resume", str(run_dir)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=small_disk)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "could not write checkpoint" in proc.stderr and "the previous one is intact" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not list(run_dir.glob(".*.tmp")), "the partial checkpoint was left behind"
    assert load_checkpoint(run_dir, agent="dqn_atari")["global_step"] == 80


def test_a_failed_first_checkpoint_says_there_is_no_earlier_one(tmp_path):
    # main said "the previous one is intact" even when there was none.
    def tiny_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30_000, 30_000))

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "agents" / "dqn_atari.py"), "--threads", "1", *FLAGS, "--stop-at", "80",
           "--run-dir", str(tmp_path / "run")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, preexec_fn=tiny_disk)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "there is no earlier checkpoint" in errors[0], proc.stderr
    assert "intact" not in proc.stderr and "Traceback" not in proc.stderr
