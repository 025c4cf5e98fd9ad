"""scripts/ablate.py: grid, names, flags, bad input (fast); real DQN sweeps on a real Atari game (slow).

The end-to-end tests start `agents/dqn_atari.py` as real subprocesses on ALE/Breakout-v5 with tiny budgets that still
pass learning_starts and one reset (300 env steps, learning from step 100, FIRE at step 200).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_aggregate import load_script

REPO = Path(__file__).resolve().parents[1]
ABLATE_PY = REPO / "scripts" / "ablate.py"
DQN = REPO / "agents" / "dqn_atari.py"
GAME = "ALE/Breakout-v5"
# Past learning_starts (100) and through one reset (200); batch 8 keeps the updates cheap on a shared CPU.
TINY = ["--total-timesteps", "300", "--learning-starts", "100", "--buffer-size", "1000", "--reset-at", "200"]
TINY += ["--batch-size", "8"]
# Ctrl-C test: learning starts late, so the interrupt lands in the warm-up and the resumed run refills its buffer
# (checkpoints do not hold the buffer by default) before its first update. 3,000 env steps of acting (about 20 s)
# keep both agents in their loops until the interrupt, however late the second one starts.
WARM = ["--total-timesteps", "3000", "--learning-starts", "2990", "--buffer-size", "5000", "--batch-size", "8"]
# Failure test: the run that succeeds next to the failing one only has to be short.
SHORT = ["--total-timesteps", "120", "--learning-starts", "100", "--buffer-size", "1000", "--batch-size", "8"]


@pytest.fixture(scope="module")
def ablate():
    return load_script("ablate")


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ABLATE_PY), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def attempts(out: Path, event: str | None = None, run: str | None = None) -> list[dict]:
    """The sweep's ``attempts.jsonl`` records, optionally only one event kind (start, end) of one run."""
    path = out / "attempts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in rows if event in (None, r["event"]) and run in (None, r["run"])]


def log_text(out: Path, name: str, attempt: int | None = None) -> str:
    """A run's log, or the part of attempt k (1-based) of it: each attempt starts with a ``====`` header line."""
    path = out / "logs" / f"{name}.log"
    text = path.read_text(errors="replace") if path.is_file() else ""
    parts = text.split("\n==== ")[1:]
    return text if attempt is None else (parts[attempt - 1] if attempt <= len(parts) else "")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


# --------------------------------------------------------------------------------------------------- grid, names
def test_run_names_are_filesystem_safe_and_encode_the_config(ablate):
    assert ablate.RunSpec("ALE/Breakout-v5", "fire", 0.25, 0).name == "ALE-Breakout-v5__fire__rr0.25__s0"
    assert ablate.RunSpec("BreakoutNoFrameskip-v4", "sp", 1.0, 12).name == "BreakoutNoFrameskip-v4__sp__rr1__s12"
    assert ablate.RunSpec("h1-walk-v0", "none", 0.0625, 3).name == "h1-walk-v0__none__rr0.0625__s3"
    assert "/" not in ablate.RunSpec("a/b:c d", "pi", 2.0, 1).name


def test_grid_is_the_full_product_in_a_fixed_order(ablate):
    grid = ablate.build_grid(["ALE/Pong-v5", GAME], ["none", "fire", "sp"], [0.25, 1.0], [0, 1])
    assert len(grid) == 2 * 3 * 2 * 2 and len({spec.name for spec in grid}) == len(grid)
    assert grid[0] == ablate.RunSpec("ALE/Pong-v5", "none", 0.25, 0)
    assert [s.seed for s in grid[:2]] == [0, 1]
    with pytest.raises(ValueError, match="share run directory names"):
        ablate.build_grid(["ALE/Pong-v5", "ALE-Pong-v5"], ["none"], [1.0], [0])


def test_agent_command_puts_grid_flags_then_pass_through(ablate, tmp_path):
    spec = ablate.RunSpec(GAME, "fire", 0.25, 3)
    cmd = ablate.agent_command(DQN, spec, tmp_path / spec.name, 2, ["--total-timesteps", "300"])
    assert cmd[:2] == [sys.executable, str(DQN)]
    flags = dict(zip(cmd[2:14:2], cmd[3:14:2], strict=True))
    assert flags == {
        "--env-id": GAME,
        "--seed": "3",
        "--reset": "fire",
        "--replay-ratio": "0.25",
        "--run-dir": str(tmp_path / spec.name),
        "--threads": "2",
    }
    assert cmd[14:] == ["--total-timesteps", "300"]


def test_branch_grid_names_and_commands(ablate, tmp_path):
    grid = ablate.build_grid([GAME], ["none", "fire"], [0.25], [0, 1], branch_at=200)
    assert [s.name for s in grid] == [f"ALE-Breakout-v5__{m}__rr0.25__s{s}__b200" for m in ("pre", "none", "fire")
                                      for s in (0, 1)]  # fmt: skip
    pre, none, fire = grid[0], grid[2], grid[4]
    assert pre.pretraining is None and none.pretraining == fire.pretraining == pre
    assert ablate.RunSpec(GAME, "fire", 0.25, 0).pretraining is None  # a run from scratch
    args = ["--total-timesteps", "300", "--buffer-size", "1000"]
    cmd = ablate.agent_command(DQN, pre, tmp_path / pre.name, 1, args)
    # The pass-through flags give the whole run's total (every schedule spans it); the pretraining stops at the branch
    # point, its --stop-at after them (the last one wins).
    assert cmd[cmd.index("--reset") + 1] == "none" and cmd[-7:] == [*args, "--stop-at", "200", "--save-buffer"]
    cmd = ablate.agent_command(DQN, fire, tmp_path / fire.name, 1, args)
    assert cmd[cmd.index("--reset") + 1] == "fire"
    assert cmd[-7:] == [*args, "--branch-from", str(tmp_path / pre.name), "--reset-at-start"]
    cmd = ablate.agent_command(DQN, none, tmp_path / none.name, 1, args)
    assert cmd[-6:] == [*args, "--branch-from", str(tmp_path / pre.name)]  # no reset, so no reset at the start


def test_run_state_reads_result_and_checkpoint(ablate, tmp_path):
    assert ablate.run_state(tmp_path) == "new"
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    assert ablate.run_state(tmp_path) == "resumable"
    (tmp_path / "result.json").write_text(json.dumps({"finished": False}))
    assert ablate.run_state(tmp_path) == "resumable"
    (tmp_path / "result.json").write_text("{torn")
    assert ablate.run_state(tmp_path) == "resumable"
    (tmp_path / "result.json").write_text(json.dumps({"finished": True, "global_step": 300}))
    assert ablate.run_state(tmp_path) == "finished"


# ------------------------------------------------------------------------------------------------- CLI, bad input
BASE = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "1", "--seeds", "0"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--methods", "swr"], ["--methods: invalid choice: 'swr'", "'fire'", "'redo'"]),
        (["--replay-ratios", "0"], ["--replay-ratios: 0.0 is invalid; allowed: > 0"]),
        (["--replay-ratios", "nan"], ["--replay-ratios: nan"]),
        (["--seeds", "-1"], ["--seeds: -1 is invalid; allowed: >= 0"]),
        (["--seeds", "0", "0"], ["share run directory names", "__s0"]),
        (["--workers", "0"], ["--workers: 0 is invalid; allowed: >= 1"]),
        (["--threads", "0"], ["--threads: 0", ">= 1"]),
        (["--backend", "slurm"], ["--backend: invalid choice: 'slurm'", "'local', 'ray'"]),
        (["--max-retries", "-1"], ["--max-retries: -1", ">= 0"]),
        (["--run-timeout", "0"], ["--run-timeout: 0.0", "> 0"]),
        (["--agent", "dqn_mujoco"], ["--agent: 'dqn_mujoco'", "dqn_atari"]),
        (["--address", "auto"], ["--address: 'auto' needs --backend ray"]),
        (["--seed", "3"], ["'--seed' is set by the sweep", "--seeds"]),
        (["--", "--run-dir=x"], ["'--run-dir=x' is set by the sweep"]),
        (["--workers", "two"], ["--workers: invalid int value: 'two'"]),
        (["--branch-at", "0"], ["--branch-at: 0 is invalid; allowed: > 0"]),
        (["--branch-at", "200"], ["--branch-at: 200 needs the branches' end", "give none"]),
        (["--branch-at", "200", "--", "--total-timesteps=200"], ["--total-timesteps, agent flags", "give 200"]),
        (["--branch-at", "200", "--", "--total-timesteps", "900", "--stop-at", "150"], ["end (--stop-at", "give 150"]),
        (["--", "--branch-from", "x"], ["'--branch-from' is set by the sweep", "--branch-at"]),
        (["--", "--reset-at-start"], ["'--reset-at-start' is set by the sweep"]),
    ],
)
def test_bad_input_exits_2_before_any_work(tmp_path, args, needles):
    out = tmp_path / "sweep"
    argv = list(BASE)
    for flag in ("--methods", "--replay-ratios", "--seeds"):
        if flag in args and flag in argv:
            i = argv.index(flag)
            j = i + 1
            while j < len(argv) and not argv[j].startswith("--"):
                j += 1
            del argv[i:j]
    proc = run_cli(*argv, "--out", str(out), *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_grid_axis_is_named(tmp_path):
    proc = run_cli("--methods", "none", "--replay-ratios", "1", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "required: --env-ids" in proc.stderr


def test_ray_backend_without_ray_says_how_to_install(tmp_path):
    code = (
        "import runpy, sys; sys.modules['ray'] = None; "
        f"sys.argv = ['ablate.py', *{BASE!r}, '--backend', 'ray', '--out', {str(tmp_path / 'x')!r}]; "
        f"runpy.run_path({str(ABLATE_PY)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2
    assert 'pip install -e ".[ray]"' in proc.stderr and "Traceback" not in proc.stderr


def test_dry_run_prints_grid_and_size_and_touches_nothing(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(*BASE, "--out", str(out), "--dry-run", "--", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "4 runs in the grid: 0 finished, 4 to run (0 resume from a checkpoint)" in proc.stdout
    for name in ("ALE-Breakout-v5__none__rr0.25__s0", "ALE-Breakout-v5__fire__rr1__s0"):
        assert f"new       {name}: " in proc.stdout
    assert "--reset-at 200" in proc.stdout and "--resume" not in proc.stdout
    assert not out.exists()


def test_dry_run_of_a_branch_sweep(tmp_path):
    proc = run_cli(*BASE, "--out", str(tmp_path / "sweep"), "--branch-at", "200", "--dry-run", "--", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "6 runs in the grid: 0 finished, 6 to run" in proc.stdout
    lines = {line.split(": ")[0].split()[-1]: line for line in proc.stdout.splitlines()[1:]}
    assert list(lines) == [
        f"ALE-Breakout-v5__{m}__rr{r}__s0__b200" for m in ("pre", "none", "fire") for r in ("0.25", "1")
    ]
    assert lines["ALE-Breakout-v5__pre__rr1__s0__b200"].endswith("--batch-size 8 --stop-at 200 --save-buffer")
    assert lines["ALE-Breakout-v5__fire__rr1__s0__b200"].endswith(
        f"--branch-from {tmp_path / 'sweep' / 'ALE-Breakout-v5__pre__rr1__s0__b200'} --reset-at-start"
    )
    assert not (tmp_path / "sweep").exists()
    # The agent reads --total_timesteps and 1_000 too (tyro, Python int syntax): so does the --branch-at check.
    proc = run_cli(*BASE, "--out", str(tmp_path / "sweep"), "--branch-at", "200", "--dry-run", "--",
                   "--total_timesteps", "1_000")  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_flags_file_equals_flags_and_later_flags_override_it(tmp_path):
    # The sweep file of README ("Replay-ratio ablations"): one flag or value per line, agent flags included.
    args_file = tmp_path / "sweep.args"
    args_file.write_text("\n".join([*BASE, *TINY]) + "\n")
    out = str(tmp_path / "sweep")
    from_file = run_cli(f"@{args_file}", "--out", out, "--dry-run")
    from_flags = run_cli(*BASE, "--out", out, "--dry-run", *TINY)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_flags.stdout
    overridden = run_cli(f"@{args_file}", "--out", out, "--dry-run", "--seeds", "4", "5")
    assert (
        "8 runs in the grid" in overridden.stdout and "__s5:" in overridden.stdout and "__s0:" not in overridden.stdout
    )
    assert run_cli(f"@{tmp_path / 'missing.args'}", "--dry-run").returncode == 2


# A stand-in agent (``--agent`` takes any agent file): it fails its first attempt with the exit code named in its
# env id (``stub-<code>``), finishes the next one, and records each attempt in its run directory.
STUB = """
import json, sys
from pathlib import Path
run_dir = Path(sys.argv[sys.argv.index("--run-dir") + 1])
env_id = sys.argv[sys.argv.index("--env-id") + 1]
run_dir.mkdir(parents=True, exist_ok=True)
tries = len(list(run_dir.glob("try*"))) + 1
(run_dir / f"try{tries}").write_text(" ".join(sys.argv[1:]))
if tries == 1:
    (run_dir / "checkpoint.pt").write_text("")  # a resumable run: the retry gets --resume
    print(f"error: first attempt of {env_id}", file=sys.stderr)
    sys.exit(int(env_id.split("-")[1]))
(run_dir / "result.json").write_text(json.dumps({"finished": True}))
"""


@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_failures_are_retried_by_the_backend_and_exit_2_never(tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is the optional extra: pip install -e '.[ray]'")
    agent, out = tmp_path / "stub_agent.py", tmp_path / "sweep"
    agent.write_text(STUB)
    args = [
        "--agent",
        str(agent),
        "--env-ids",
        "stub-2",
        "stub-3",
        "stub-9",
        "--methods",
        "none",
        "--replay-ratios",
        "1",
    ]
    proc = run_cli(*args, "--out", str(out), "--backend", backend, "--workers", "2", "--max-retries", "1")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "sweep done: 1 failed, 2 finished" in proc.stdout
    ends = {name: [(e["status"], e["exit_code"]) for e in attempts(out, "end", name)] for name in
            ("stub-2__none__rr1__s0", "stub-3__none__rr1__s0", "stub-9__none__rr1__s0")}  # fmt: skip
    assert ends == {
        "stub-2__none__rr1__s0": [("failed", 2)],  # bad input: once, with its message
        "stub-3__none__rr1__s0": [("failed", 3), ("finished", 0)],
        "stub-9__none__rr1__s0": [("failed", 9), ("finished", 0)],
    }
    assert attempts(out, "end", "stub-2__none__rr1__s0")[0]["error"] == "error: first attempt of stub-2"
    assert sorted(p.name for p in (out / "stub-3__none__rr1__s0").glob("try*")) == ["try1", "try2"]
    resumed = (out / "stub-3__none__rr1__s0" / "try2").read_text().split()
    assert resumed[-2:] == ["--resume", str(out / "stub-3__none__rr1__s0")]


# ------------------------------------------------------------------------------------------- real DQN end to end
def check_finished_sweep(out: Path, methods, replay_ratios) -> None:
    for method in methods:
        for rr in replay_ratios:
            name = f"ALE-Breakout-v5__{method}__rr{rr:g}__s0"
            (end,) = attempts(out, "end", name)
            assert (end["status"], end["exit_code"], end["error"]) == ("finished", 0, None), end
            run_dir = out / name
            result = json.loads((run_dir / "result.json").read_text())
            assert result["finished"] is True and result["global_step"] == 300
            config = json.loads((run_dir / "config.json").read_text())
            assert (config["env_id"], config["reset"], config["replay_ratio"], config["seed"]) == (GAME, method, rr, 0)
            assert config["threads"] == 1 and config["batch_size"] == 8
            resets = (
                [json.loads(line) for line in (run_dir / "resets.jsonl").read_text().splitlines()]
                if (run_dir / "resets.jsonl").is_file()
                else []
            )
            assert [r["global_step"] for r in resets] == ([] if method == "none" else [200])


@pytest.mark.slow
def test_local_sweep_real_dqn_then_nothing_new(tmp_path):
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "0.5", "--seeds", "0"]
    args += ["--out", str(out), "--workers", "2", "--max-retries", "0", *TINY]
    t0 = time.time()
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "4 runs in the grid: 0 finished, 4 to run" in first.stdout and "sweep done: 4 finished" in first.stdout
    check_finished_sweep(out, ["none", "fire"], [0.25, 0.5])
    # Two workers really ran side by side: some run started before another ended.
    starts = sorted(r["time"] for r in attempts(out, "start"))
    assert starts[1] < min(r["time"] for r in attempts(out, "end"))
    print(f"4 tiny DQN runs, 2 workers: {time.time() - t0:.1f} s")

    before = (out / "attempts.jsonl").read_text()
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "4 runs in the grid: 4 finished, 0 to run" in second.stdout and "sweep done: 4 finished" in second.stdout
    assert (out / "attempts.jsonl").read_text() == before

    # The real agent's scalars and resets.jsonl are what aggregate.py reads.
    agg = load_script("aggregate")
    scalars, runs, resets = agg.load_runs([out])
    assert sorted(runs["run"]) == sorted(r["run"] for r in attempts(out, "end"))
    assert set(runs["game"]) == {"breakout"}
    assert {"charts/SPS", "losses/td_loss"} <= set(scalars["tag"])
    assert scalars["step"].max() <= 300
    assert sorted(resets["method"]) == ["fire", "fire"] and set(resets["global_step"]) == {200}


@pytest.mark.slow
def test_ctrl_c_stops_the_agents_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0", "1"]
    args += ["--out", str(out), "--workers", "2", "--max-retries", "0", *WARM]
    proc = subprocess.Popen(
        [sys.executable, str(ABLATE_PY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    names = ["ALE-Breakout-v5__none__rr0.25__s0", "ALE-Breakout-v5__none__rr0.25__s1"]
    deadline = time.time() + 180
    # Ctrl-C once both agents are in their training loops (their progress bars have moved).
    while not all("/3000 [" in log_text(out, name) for name in names):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    pids = [r["pid"] for r in attempts(out, "start")]
    assert len(pids) == 2 and all(pid_alive(pid) for pid in pids)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr[-2000:]
    assert "interrupted; run the same command again" in stdout and "Traceback" not in stderr
    assert not any(pid_alive(pid) for pid in pids)
    for name in names:
        # The agents caught SIGTERM, saved a checkpoint and exited with 130 (143 once the agents say SIGTERM).
        (end,) = attempts(out, "end", name)
        assert end["status"] == "interrupted" and end["exit_code"] in (130, 143), end
        assert "stopped by SIGTERM" in log_text(out, name)
        assert (out / name / "checkpoint.pt").is_file() and not (out / name / "result.json").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert "2 runs in the grid: 0 finished, 2 to run (2 resume from a checkpoint)" in again.stdout
    for name in names:
        starts = attempts(out, "start", name)
        assert len(starts) == 2 and starts[1]["command"][-2:] == ["--resume", str(out / name)]
        assert [e["status"] for e in attempts(out, "end", name)] == ["interrupted", "finished"]
        assert json.loads((out / name / "result.json").read_text())["global_step"] == 3000
        assert "resumed at env step" in log_text(out, name, 2)


@pytest.mark.slow
def test_exit_2_is_recorded_once_with_its_message_and_never_retried(tmp_path):
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "ALE/NoSuchGame-v5", "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0"]
    args += ["--out", str(out), "--workers", "2", "--max-retries", "2", *SHORT]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "sweep done: 1 failed, 1 finished" in proc.stdout
    bad, good = "ALE-NoSuchGame-v5__none__rr0.25__s0", "ALE-Breakout-v5__none__rr0.25__s0"
    (end,) = attempts(out, "end", bad)
    assert (end["status"], end["exit_code"]) == ("failed", 2) and "NoSuchGame" in end["error"], end
    assert f"failed: {bad} (exit code 2" in proc.stdout and "retry" not in proc.stdout
    assert [e["status"] for e in attempts(out, "end", good)] == ["finished"]
    # Run again: the failed run is tried once more (its flags may have been fixed), the finished one is left alone.
    proc = run_cli(*args)
    assert proc.returncode == 1 and "2 runs in the grid: 1 finished, 1 to run" in proc.stdout
    assert len(attempts(out, "start", bad)) == 2 and len(attempts(out, "start", good)) == 1


@pytest.mark.slow
def test_run_timeout_kills_a_run(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        *("--env-ids", GAME, "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0", "--out", str(out)),
        *("--max-retries", "0", "--run-timeout", "2", "--stop-grace", "5", *TINY),
    )
    assert proc.returncode == 1 and "sweep done: 1 timeout" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    (start,) = attempts(out, "start")
    (end,) = attempts(out, "end")
    assert end["status"] == "timeout" and end["exit_code"] != 0 and 2 <= end["seconds"] < 2 + 5 + 5
    assert not pid_alive(start["pid"])


@pytest.mark.slow
def test_ray_backend_local_cluster_real_dqn(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra: pip install -e '.[ray]'")
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "0.5", "--seeds", "0"]
    # --workers 2 with one thread per run starts ray.init(num_cpus=2, include_dashboard=False).
    args += ["--out", str(out), "--backend", "ray", "--workers", "2", "--max-retries", "0", *TINY]
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "sweep done: 4 finished" in first.stdout
    check_finished_sweep(out, ["none", "fire"], [0.25, 0.5])
    assert all(r["host"] for r in attempts(out, "start"))
    second = run_cli(*args)
    assert second.returncode == 0 and "4 finished, 0 to run" in second.stdout
    assert len(attempts(out, "start")) == 4


def test_a_replay_ratio_study_shares_one_pretraining_per_seed(tmp_path):
    args = [*BASE, "--out", str(tmp_path / "sweep"), "--branch-at", "200", "--pretrain-replay-ratio", "1", "--dry-run"]
    proc = run_cli(*args, "--", *TINY)
    assert proc.returncode == 0, proc.stderr
    lines = {line.split(": ")[0].split()[-1]: line for line in proc.stdout.splitlines()[1:]}
    pre = "ALE-Breakout-v5__pre__rr1__s0__b200"
    assert [n for n in lines if "__pre__" in n] == [pre], "one pretraining, at the shared ratio"
    for ratio in ("0.25", "1"):
        line = lines[f"ALE-Breakout-v5__fire__rr{ratio}__s0__b200"]
        assert f"--replay-ratio {ratio}" in line and f"--branch-from {tmp_path / 'sweep' / pre}" in line
    proc = run_cli(*BASE, "--out", str(tmp_path / "sweep"), "--pretrain-replay-ratio", "1", "--dry-run")
    assert proc.returncode == 2 and "--pretrain-replay-ratio: 1.0 needs --branch-at" in proc.stderr
