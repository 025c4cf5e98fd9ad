"""scripts/ablate.py under faults: kill -9 of an agent, kill -9 of the runner, an agent that hangs past
``--run-timeout``, a run still held by another process. After each the sweep, or its re-run, completes the grid, keeps
every finished run and runs none twice.

Real processes: `agents/dqn_atari.py` on ALE/Breakout-v5 with 400 env steps, learning from step 100, a checkpoint every
100 env steps. Every run's tensorboard scalars are read back with tensorboard's own EventAccumulator, which applies the
purge a resumed agent writes (``SummaryWriter(purge_step=...)``): each logged step must appear exactly once.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ablate import ABLATE_PY, GAME, REPO, attempts, log_text, pid_alive, run_cli

TOTAL = 400
FAULT = ["--total-timesteps", str(TOTAL), "--learning-starts", "100", "--buffer-size", "1000", "--batch-size", "8"]
FAULT += ["--checkpoint-every", "100"]
# Logged together every 100 gradient updates (agents/dqn_atari.py); charts/update_step holds the update count itself.
EVERY_100_UPDATES = ("losses/td_loss", "losses/q_values", "charts/SPS", "charts/epsilon", "charts/update_step")
# Seconds. Measured here: a whole tiny run takes 12-15 s alone and 23 s beside another (about 8 s of it imports), a
# resumed one 11-13 s; the hung attempt reaches its first checkpoint after about 10 s. 45 s leaves 2-3x for load.
RUN_TIMEOUT = 45


@pytest.fixture
def sweeps():
    """Started sweeps; any still running at the end of the test (it failed) is stopped with its agents."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # ablate's SIGTERM handling stops its agents: SIGTERM, SIGKILL after --stop-grace
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def start_sweep(sweeps: list, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(ABLATE_PY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    sweeps.append(proc)
    return proc


def wait_for(condition, proc: subprocess.Popen, what: str, limit: float = 180) -> None:
    deadline = time.time() + limit
    while not condition():
        if proc.poll() is not None:
            stdout, stderr = proc.communicate()
            pytest.fail(f"sweep ended (exit {proc.returncode}) before {what}:\n{stdout}\n{stderr[-3000:]}")
        assert time.time() < deadline, f"no {what} after {limit} s"
        time.sleep(0.1)


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def check_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of a finished run: steps strictly increasing (no step twice, none purged and rewritten out of
    order) within 1..TOTAL, and the every-100-updates tags present at the same steps for updates 100, 200, ... up to
    the run's last hundred (none below 100 updates): nothing lost at a resume boundary."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    for tag, points in scalars.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), (run_dir.name, tag, steps)
        assert 1 <= steps[0] and steps[-1] <= TOTAL, (run_dir.name, tag, steps)
    update_steps = [step for step, _ in scalars.get("charts/update_step", [])]
    for tag in EVERY_100_UPDATES:
        assert [step for step, _ in scalars.get(tag, [])] == update_steps, (run_dir.name, tag)
    last = result_of(run_dir)["update_step"] // 100 * 100
    updates = [int(value) for _, value in scalars.get("charts/update_step", [])]
    assert updates == list(range(100, last + 1, 100)), (run_dir.name, updates, update_steps)
    return scalars


def check_finished(run_dir: Path) -> None:
    result = result_of(run_dir)
    assert result["finished"] is True and result["global_step"] == TOTAL, result
    check_scalars(run_dir)


def agent_pid(out: Path, name: str) -> int:
    """The pid of the latest attempt of run `name` (its start record)."""
    return attempts(out, "start", name)[-1]["pid"]


# ------------------------------------------------------------------------------------- mechanisms, no agent (fast)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
@pytest.mark.parametrize("pdeathsig", [True, False])
def test_a_child_started_with_the_parent_death_signal_ends_when_its_parent_is_killed(pdeathsig):
    # A stand-in runner: starts `sleep` the way ablate starts an agent (own session; with or without the parent-death
    # signal), prints its pid, then waits to be killed.
    code = (
        "import importlib.util, subprocess, sys, time; "
        "spec = importlib.util.spec_from_file_location('ablate', sys.argv[1]); "
        "ablate = importlib.util.module_from_spec(spec); sys.modules['ablate'] = ablate; "
        "spec.loader.exec_module(ablate); "
        "cmd = ['sleep', '60']; cmd = ablate.with_parent_death_signal(cmd) if sys.argv[2] == '1' else cmd; "
        "child = subprocess.Popen(cmd, start_new_session=True); "
        "print(child.pid, flush=True); time.sleep(60)"
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", code, str(ABLATE_PY), "1" if pdeathsig else "0"], stdout=subprocess.PIPE, text=True
    )
    child = int(runner.stdout.readline())
    try:
        # Killed once the child runs `sleep`, i.e. after setpriv set the signal (a runner killed in that millisecond
        # leaves the agent running to its end; the run's lock still keeps a re-run off it).
        while Path(f"/proc/{child}/comm").read_text().strip() != "sleep":
            time.sleep(0.01)
        runner.kill()
        runner.wait(timeout=10)
        deadline = time.time() + (5 if pdeathsig else 1)
        while pid_alive(child) and time.time() < deadline:
            time.sleep(0.05)
        assert pid_alive(child) is not pdeathsig
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_run_held_by_another_process_is_left_alone(tmp_path):
    out = tmp_path / "sweep"
    name = "ALE-Breakout-v5__none__rr1__s0"
    (out / "logs").mkdir(parents=True)
    # Stands in for an agent of a killed runner: a process that holds the run's log, as an agent holds its stdout.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'ab'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)", str(out / "logs" / f"{name}.log")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "1"
        t0 = time.time()
        proc = run_cli(*("--env-ids", GAME, "--methods", "none", "--replay-ratios", "1", "--out", str(out)),
                       *("--stop-grace", "1", *FAULT))  # fmt: skip
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert time.time() - t0 >= 1 and f"busy: {name}" in proc.stdout and "sweep done: 1 busy" in proc.stdout
        assert not (out / name).exists() and attempts(out, "start") == []
    finally:
        holder.kill()
        holder.wait()
    with open(out / "logs" / f"{name}.log", "ab") as log:  # the holder's death released the lock
        fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)


# ---------------------------------------------------------------------------------- real DQN under faults (slow)
@pytest.mark.slow
def test_kill_9_of_an_agent_is_retried_from_its_checkpoint(tmp_path, sweeps):
    out = tmp_path / "sweep"
    a, b = "ALE-Breakout-v5__none__rr1__s0", "ALE-Breakout-v5__none__rr1__s1"
    proc = start_sweep(
        sweeps,
        *("--env-ids", GAME, "--methods", "none", "--replay-ratios", "1", "--seeds", "0", "1", "--out", str(out)),
        *("--workers", "2", "--max-retries", "1", *FAULT),
    )
    # Killed just after the checkpoint at env step 200, where the first 100 updates were logged (step 200): the resumed
    # run must neither log them twice nor lose them.
    wait_for(lambda: "checkpoint (periodic) at env step 200" in log_text(out, a, 1), proc, f"{a}'s checkpoint at 200")
    pid = agent_pid(out, a)
    assert pid_alive(pid)
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stdout + stderr[-3000:]
    assert "sweep done: 2 finished" in stdout
    assert f"failed: {a} (exit code -9" in stdout and f"retry 1/1 of {a}" in stdout
    assert [(e["status"], e["exit_code"]) for e in attempts(out, "end", a)] == [("failed", -9), ("finished", 0)]
    starts = attempts(out, "start", a)
    assert "--resume" not in starts[0]["command"] and starts[1]["command"][-2:] == ["--resume", str(out / a)]
    assert "resumed at env step 200 (update 100)" in log_text(out, a, 2)
    assert not pid_alive(pid)
    assert [e["status"] for e in attempts(out, "end", b)] == ["finished"]
    assert len(list((out / a).glob("events.out.tfevents.*"))) == 2
    for name in (a, b):
        check_finished(out / name)


@pytest.mark.slow
def test_kill_9_of_the_runner_stops_its_agents_and_the_rerun_resumes(tmp_path, sweeps):
    out = tmp_path / "sweep"
    # Replay ratio 0.25 finishes long before 4 (75 vs 1200 gradient updates), so the kill lands between the two.
    fast, slow = "ALE-Breakout-v5__none__rr0.25__s0", "ALE-Breakout-v5__none__rr4__s0"
    args = ["--env-ids", GAME, "--methods", "none", "--replay-ratios", "0.25", "4", "--seeds", "0", "--out", str(out)]
    args += ["--workers", "2", "--max-retries", "0", *FAULT]
    proc = start_sweep(sweeps, *args)
    wait_for(
        lambda: attempts(out, "end", fast) and (out / slow / "checkpoint.pt").is_file(),
        proc,
        f"{fast} finished while {slow} has a checkpoint",
    )
    assert not (out / slow / "result.json").exists(), f"{slow} finished before the kill; the test needs it mid-run"
    pid = agent_pid(out, slow)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = time.time()
    # The dead runner's agent got SIGTERM from the kernel (parent-death signal): it checkpoints and exits on its own.
    while pid_alive(pid):
        assert time.time() - killed_at < 30, f"{slow}'s agent (pid {pid}) still runs 30 s after its runner died"
        time.sleep(0.2)
    assert "stopped by SIGTERM" in log_text(out, slow, 1)
    assert (out / slow / "checkpoint.pt").is_file() and not (out / slow / "result.json").exists()
    fast_mtime = (out / fast / "result.json").stat().st_mtime_ns
    assert attempts(out, "end", slow) == []  # the runner died before the attempt's end

    again = run_cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert "2 runs in the grid: 1 finished, 1 to run (1 resume from a checkpoint)" in again.stdout
    assert len(attempts(out, "start", fast)) == 1 and (out / fast / "result.json").stat().st_mtime_ns == fast_mtime
    starts = attempts(out, "start", slow)
    assert len(starts) == 2 and starts[1]["command"][-2:] == ["--resume", str(out / slow)]
    assert [e["status"] for e in attempts(out, "end", slow)] == ["finished"]
    assert "resumed" in log_text(out, slow, 2)
    for name in (fast, slow):
        check_finished(out / name)


@pytest.mark.slow
def test_a_hung_agent_is_killed_at_the_run_timeout_and_resumed(tmp_path, sweeps):
    out = tmp_path / "sweep"
    name = "ALE-Breakout-v5__none__rr1__s0"
    proc = start_sweep(
        sweeps,
        *("--env-ids", GAME, "--methods", "none", "--replay-ratios", "1", "--seeds", "0", "--out", str(out)),
        *("--max-retries", "1", "--run-timeout", str(RUN_TIMEOUT), "--stop-grace", "2", *FAULT),
    )
    wait_for(lambda: (out / name / "checkpoint.pt").is_file(), proc, f"{name}'s first checkpoint")
    pid = agent_pid(out, name)
    # A stopped process neither runs nor handles the timeout's SIGTERM: only the SIGKILL after --stop-grace ends it.
    os.kill(pid, signal.SIGSTOP)
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT + 180)
    assert proc.returncode == 0, stdout + stderr[-3000:]
    assert f"timeout: {name} (exit code -9" in stdout
    assert not pid_alive(pid)
    ends = attempts(out, "end", name)
    assert [(e["status"], e["exit_code"]) for e in ends] == [("timeout", -9), ("finished", 0)]
    assert RUN_TIMEOUT <= ends[0]["seconds"] < RUN_TIMEOUT + 2 + 5, ends[0]
    assert attempts(out, "start", name)[1]["command"][-2:] == ["--resume", str(out / name)]
    assert "resumed" in log_text(out, name, 2)
    check_finished(out / name)
