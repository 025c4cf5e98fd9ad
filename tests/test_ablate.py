"""scripts/ablate.py: grid, names, manifest, bad input (fast); real DQN sweeps on a real Atari game (slow).

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


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


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
    assert ablate.run_name("ALE/Breakout-v5", "fire", 0.25, 0) == "ALE-Breakout-v5__fire__rr0.25__s0"
    assert ablate.run_name("BreakoutNoFrameskip-v4", "sp", 1.0, 12) == "BreakoutNoFrameskip-v4__sp__rr1__s12"
    assert ablate.run_name("h1-walk-v0", "none", 0.0625, 3) == "h1-walk-v0__none__rr0.0625__s3"
    assert "/" not in ablate.run_name("a/b:c d", "pi", 2.0, 1)


def test_grid_is_the_full_product_in_a_fixed_order(ablate):
    grid = ablate.build_grid(["ALE/Pong-v5", GAME], ["none", "fire", "sp"], [0.25, 1.0], [0, 1])
    assert len(grid) == 2 * 3 * 2 * 2 and len({spec.name for spec in grid}) == len(grid)
    assert grid[0].config() == {"env_id": "ALE/Pong-v5", "method": "none", "replay_ratio": 0.25, "seed": 0}
    assert [s.seed for s in grid[:2]] == [0, 1]
    with pytest.raises(ValueError, match="share run directory names"):
        ablate.build_grid(["ALE/Pong-v5", "ALE-Pong-v5"], ["none"], [1.0], [0])


def test_agent_command_puts_grid_flags_then_pass_through_then_resume(ablate, tmp_path):
    spec = ablate.RunSpec(GAME, "fire", 0.25, 3)
    cmd = ablate.agent_command(DQN, spec, tmp_path / spec.name, 2, ["--total-timesteps", "300"], resume=True)
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
    assert cmd[14:] == ["--total-timesteps", "300", "--resume", str(tmp_path / spec.name)]


def test_run_state_reads_result_and_checkpoint(ablate, tmp_path):
    assert ablate.run_state(tmp_path) == "new"
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    assert ablate.run_state(tmp_path) == "resumable"
    (tmp_path / "result.json").write_text(json.dumps({"finished": False}))
    assert ablate.run_state(tmp_path) == "resumable"
    (tmp_path / "result.json").write_text(json.dumps({"finished": True, "global_step": 300}))
    assert ablate.run_state(tmp_path) == "finished"


def test_manifest_writes_are_atomic_and_complete(ablate, tmp_path):
    path = tmp_path / "manifest.json"
    for i in range(5):
        ablate.write_json_atomic(path, {"i": i, "runs": {f"r{j}": {"status": "pending"} for j in range(50)}})
        assert json.loads(path.read_text())["i"] == i
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_manifest_of_another_experiment_is_refused(ablate, tmp_path):
    m = ablate.Manifest.open(tmp_path, "dqn_atari", ["--total-timesteps", "300"], 1)
    m.save()
    assert ablate.Manifest.open(tmp_path, "dqn_atari", ["--total-timesteps", "300"], 2).data["threads"] == 2
    with pytest.raises(ValueError, match="Use another --out"):
        ablate.Manifest.open(tmp_path, "dqn_atari", ["--total-timesteps", "400"], 1)


# ------------------------------------------------------------------------------------------------- CLI, bad input
BASE = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "1", "--seeds", "0"]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--methods", "swr"], ["--methods: 'swr'", "'fire'", "'redo'"]),
        (["--replay-ratios", "0"], ["--replay-ratios: 0.0", "> 0"]),
        (["--replay-ratios", "nan"], ["--replay-ratios: nan"]),
        (["--seeds", "-1"], ["--seeds: -1", ">= 0"]),
        (["--seeds", "0", "0"], ["--seeds: [0, 0]", "distinct"]),
        (["--workers", "0"], ["--workers: 0", ">= 1"]),
        (["--threads", "0"], ["--threads: 0", ">= 1"]),
        (["--backend", "slurm"], ["--backend: 'slurm'", "'local', 'ray'"]),
        (["--max-retries", "-1"], ["--max-retries: -1", ">= 0"]),
        (["--run-timeout", "0"], ["--run-timeout: 0.0", "> 0"]),
        (["--agent", "dqn_mujoco"], ["--agent: 'dqn_mujoco'", "dqn_atari"]),
        (["--address", "auto"], ["--address: 'auto' needs --backend ray"]),
        (["--seed", "3"], ["'--seed' is set by the sweep", "--seeds"]),
        (["--", "--run-dir=x"], ["'--run-dir=x' is set by the sweep"]),
        (["--workers", "two"], ["--workers: invalid int value: 'two'"]),
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
    assert proc.returncode == 2 and "--env-ids: required" in proc.stderr


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
    assert "1 env id(s) x 2 method(s) x 2 replay ratio(s) x 1 seed(s) = 4 run(s)" in proc.stdout
    for name in ("ALE-Breakout-v5__none__rr0.25__s0", "ALE-Breakout-v5__fire__rr1__s0"):
        assert f"new       {name}: " in proc.stdout
    assert "--reset-at 200" in proc.stdout and "--resume" not in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_sweep_file_equals_flags_and_flags_override_it(tmp_path, suffix):
    if suffix == ".yaml":
        text = (
            f"agent: dqn_atari\nenv-ids: [{GAME}]\nmethods: [none, fire]\nreplay_ratios: [0.25, 1]\nseeds: [0]\n"
            "agent_args: {total-timesteps: 300, learning-starts: 100, buffer-size: 1000, reset-at: 200, "
            "batch-size: 8}\n"
        )
    else:
        text = (
            f'agent = "dqn_atari"\nenv_ids = ["{GAME}"]\nmethods = ["none", "fire"]\nreplay_ratios = [0.25, 1.0]\n'
            'seeds = [0]\nagent_args = ["--total-timesteps", "300", "--learning-starts", "100", "--buffer-size", '
            '"1000", "--reset-at", "200", "--batch-size", "8"]\n'
        )
    config = tmp_path / f"sweep{suffix}"
    config.write_text(text)
    out = str(tmp_path / "sweep")
    from_file = run_cli("--config", str(config), "--out", out, "--dry-run")
    from_flags = run_cli(*BASE, "--out", out, "--dry-run", *TINY)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_flags.stdout
    overridden = run_cli("--config", str(config), "--out", out, "--dry-run", "--seeds", "4", "5")
    assert "= 8 run(s)" in overridden.stdout and "__s5:" in overridden.stdout and "__s0:" not in overridden.stdout
    config.write_text(text + ("bogus: 1\n" if suffix == ".yaml" else "bogus = 1\n"))
    proc = run_cli("--config", str(config), "--out", out, "--dry-run")
    assert proc.returncode == 2 and "unknown key 'bogus'" in proc.stderr


# ------------------------------------------------------------------------------------------- real DQN end to end
def check_finished_sweep(out: Path, methods, replay_ratios) -> dict:
    manifest = manifest_of(out)
    assert manifest["agent"] == "dqn_atari" and manifest["agent_args"] == TINY
    for method in methods:
        for rr in replay_ratios:
            name = f"ALE-Breakout-v5__{method}__rr{rr:g}__s0"
            entry = manifest["runs"][name]
            assert entry["status"] == "finished" and entry["exit_code"] == 0, (name, entry)
            assert entry["start_time"] < entry["end_time"] and Path(entry["log"]).is_file()
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
    return manifest


@pytest.mark.slow
def test_local_sweep_real_dqn_then_nothing_new(tmp_path):
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "0.5", "--seeds", "0"]
    args += ["--out", str(out), "--workers", "2", "--max-retries", "0", *TINY]
    t0 = time.time()
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "4 runs in the grid: 0 finished, 4 to run" in first.stdout and "sweep done: 4 finished" in first.stdout
    manifest = check_finished_sweep(out, ["none", "fire"], [0.25, 0.5])
    # Two workers really ran side by side: some run started before another ended.
    spans = sorted((e["start_time"], e["end_time"]) for e in manifest["runs"].values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))
    print(f"4 tiny DQN runs, 2 workers: {time.time() - t0:.1f} s")

    log_files = sorted(p.name for p in (out / "logs").iterdir())
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "4 runs in the grid: 4 finished, 0 to run" in second.stdout
    assert sorted(p.name for p in (out / "logs").iterdir()) == log_files
    assert manifest_of(out)["runs"] == manifest["runs"]

    # The real agent's event files and resets.jsonl are what aggregate.py reads.
    agg = load_script("aggregate")
    scalars, runs, resets = agg.load_runs([out])
    assert sorted(runs["run"]) == sorted(manifest["runs"])
    assert set(runs["game"]) == {"breakout"}
    assert {"charts/SPS", "losses/td_loss"} <= set(scalars["tag"])
    assert scalars["step"].max() <= 300
    assert sorted(resets["method"]) == ["fire", "fire"] and set(resets["global_step"]) == {200}


@pytest.mark.slow
def test_ctrl_c_stops_children_keeps_manifest_and_rerun_resumes(tmp_path):
    out = tmp_path / "sweep"
    args = ["--env-ids", GAME, "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0", "1"]
    args += ["--out", str(out), "--workers", "2", "--max-retries", "0", *WARM]
    proc = subprocess.Popen(
        [sys.executable, str(ABLATE_PY), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    names = ["ALE-Breakout-v5__none__rr0.25__s0", "ALE-Breakout-v5__none__rr0.25__s1"]
    logs = [out / "logs" / f"{name}.attempt1.log" for name in names]
    deadline = time.time() + 180
    # Ctrl-C once both agents are in their training loops (their progress bars have moved).
    while not all(log.is_file() and "/3000 [" in log.read_text(errors="replace") for log in logs):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    pids = [manifest_of(out)["runs"][name]["pid"] for name in names]
    assert all(pid_alive(pid) for pid in pids)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr[-2000:]
    assert "interrupted" in stdout and "Traceback" not in stderr
    runs = manifest_of(out)["runs"]
    assert not any(pid_alive(pid) for pid in pids)
    for name in names:
        # The agents caught SIGTERM, saved a checkpoint and exited with 130.
        assert (runs[name]["status"], runs[name]["exit_code"]) == ("interrupted", 130)
        assert (out / name / "checkpoint.pt").is_file() and not (out / name / "result.json").exists()

    again = run_cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert "2 runs in the grid: 0 finished, 2 to run (2 resume from a checkpoint)" in again.stdout
    for name in names:
        entry = manifest_of(out)["runs"][name]
        assert entry["status"] == "finished" and entry["resumed"] is True
        assert entry["command"][-2:] == ["--resume", str(out / name)]
        assert [h["status"] for h in entry["history"]] == ["interrupted", "finished"]
        assert json.loads((out / name / "result.json").read_text())["global_step"] == 3000
        assert len(list((out / name).glob("events.out.tfevents.*"))) == 2


@pytest.mark.slow
def test_failing_run_is_retried_and_reported_while_others_finish(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        *("--env-ids", GAME, "ALE/NoSuchGame-v5", "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0"),
        *("--out", str(out), "--workers", "2", "--max-retries", "2", *SHORT),
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "sweep done: 1 failed, 1 finished" in proc.stdout
    assert "failed: ALE-NoSuchGame-v5__none__rr0.25__s0 after 3 attempt(s)" in proc.stdout
    runs = manifest_of(out)["runs"]
    bad, good = runs["ALE-NoSuchGame-v5__none__rr0.25__s0"], runs["ALE-Breakout-v5__none__rr0.25__s0"]
    assert good["status"] == "finished" and good["attempts"] == 1
    assert bad["status"] == "failed" and bad["attempts"] == 3 and bad["exit_code"] != 0
    assert [h["attempt"] for h in bad["history"]] == [1, 2, 3]
    assert all(h["status"] == "failed" and h["exit_code"] == bad["exit_code"] for h in bad["history"])
    assert "NoSuchGame" in Path(bad["log"]).read_text()
    # A second invocation retries the failed run (max-retries again) and leaves the finished one alone.
    proc = run_cli(
        *("--env-ids", GAME, "ALE/NoSuchGame-v5", "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0"),
        *("--out", str(out), "--workers", "2", "--max-retries", "0", *SHORT),
    )
    assert proc.returncode == 1 and "2 runs in the grid: 1 finished, 1 to run" in proc.stdout
    runs = manifest_of(out)["runs"]
    assert runs["ALE-NoSuchGame-v5__none__rr0.25__s0"]["attempts"] == 4
    assert runs["ALE-Breakout-v5__none__rr0.25__s0"]["attempts"] == 1


@pytest.mark.slow
def test_run_timeout_kills_a_run(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli(
        *("--env-ids", GAME, "--methods", "none", "--replay-ratios", "0.25", "--seeds", "0", "--out", str(out)),
        *("--max-retries", "0", "--run-timeout", "2", "--stop-grace", "5", *TINY),
    )
    assert proc.returncode == 1 and "sweep done: 1 timeout" in proc.stdout
    entry = manifest_of(out)["runs"]["ALE-Breakout-v5__none__rr0.25__s0"]
    assert entry["status"] == "timeout" and entry["exit_code"] != 0
    assert not pid_alive(entry["pid"])


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
    manifest = check_finished_sweep(out, ["none", "fire"], [0.25, 0.5])
    assert all(e["host"] for e in manifest["runs"].values())
    second = run_cli(*args)
    assert second.returncode == 0 and "4 finished, 0 to run" in second.stdout
    assert all(e["attempts"] == 1 for e in manifest_of(out)["runs"].values())
