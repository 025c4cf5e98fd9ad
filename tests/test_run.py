"""The run lifecycle (fire_rl/run.py) through both agents: flags refused before any work, --resume DIR from the run's
own flags, exit codes, one process per run directory, verified checkpoints, scalars.csv."""

import importlib.util
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from agent_utils import ROOT, checkpoint, load_agent, run_agent, scalars, start_agent, wait_for

DQN = ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "400", "--learning-starts", "100", "--buffer-size", "1000",
       "--metrics-every", "0", "--checkpoint-every", "100"]  # fmt: skip
SAC = ["--env-id", "Humanoid-v5", "--total-timesteps", "300", "--learning-starts", "100", "--buffer-size", "1000",
       "--batch-size", "16", "--actor-hidden", "32", "--critic-hidden", "64", "--metrics-every", "0",
       "--eval-every", "0", "--checkpoint-every", "100"]  # fmt: skip


def main(agent: str, argv: list[str]) -> int:
    """The agent's ``__main__`` in this process: its exit code (SystemExit included)."""
    module = load_agent(agent)
    try:
        args, ckpt = module.parse_args(module.Args, module.AGENT, getattr(module, "PRESETS", None), argv=argv)
        with module.Run(args, module.AGENT, ckpt) as run:
            module.train(args, run)
    except SystemExit as exit:
        return exit.code
    return run.exit_code


BAD_FLAGS = [
    ("dqn_atari", ["--replay-ratio", "inf"], "--replay-ratio"),
    ("dqn_atari", ["--replay-ratio", "1e-5"], "--replay-ratio"),
    ("dqn_atari", ["--exploration-fraction", "0"], "--exploration-fraction"),
    ("dqn_atari", ["--exploration-fraction", "-1"], "--exploration-fraction"),
    ("dqn_atari", ["--adam-eps", "-1"], "--adam-eps"),
    ("dqn_atari", ["--adam-eps", "nan"], "--adam-eps"),
    ("dqn_atari", ["--learning-rate", "inf"], "--learning-rate"),
    ("dqn_atari", ["--eval-epsilon", "2"], "--eval-epsilon"),
    ("dqn_atari", ["--buffer-size", "100000000000"], "replay buffer"),
    ("dqn_atari", ["--reset", "fire", "--reset-recipe", "custom", "--reset-kinds", "lstm"], "--reset-kinds"),
    ("dqn_atari", ["--reset", "fire", "--reset-recipe", "custom", "--reset-roles", "bogus"], "--reset-roles"),
    ("dqn_atari", ["--reset", "fire", "--reset-recipe", "custom", "--reset-names", "nonexistent.*"], "--reset-names"),
    ("sac_simba", ["--weight-decay", "nan"], "--weight-decay"),
    ("sac_simba", ["--actor-lr", "inf"], "--actor-lr"),
    ("sac_simba", ["--alpha-init", "inf"], "--alpha-init"),
    ("sac_simba", ["--target-entropy-scale", "nan"], "--target-entropy-scale"),
    ("sac_simba", ["--buffer-size", "100000000000"], "replay buffer"),
    ("sac_simba", ["--env-id", "h1-nosuchtask-v0"], "h1-nosuchtask-v0"),
    ("sac_simba", ["--env-id", "Hoper-v5"], "did you mean 'Hopper-v5'"),  # one line: no GLFW display warning first
] + [
    (agent, flags, flags[0])
    for agent in ("dqn_atari", "sac_simba")
    for flags in (
        ["--seed", "-1"],
        ["--seed", "4294967296"],
        ["--replay-ratio", "inf"],
        ["--sp-alpha", "nan"],
        ["--total-timesteps", "100000000000000000000"],
        ["--learning-starts", "400"],
        ["--learning-starts", "100000"],
        ["--reset-every", "-5"],
    )
]


@pytest.mark.parametrize(
    ("agent", "flags", "named"), BAD_FLAGS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_flags_exit_2_before_anything_is_written(tmp_path, capsys, agent, flags, named):
    run_dir = tmp_path / "run"
    base = DQN if agent == "dqn_atari" else SAC
    assert main(agent, [*base, "--run-dir", str(run_dir), *flags]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, f"one line, not {err!r}"
    assert not run_dir.exists(), "nothing may be written before every check has passed"


def test_help_shows_the_real_defaults_of_the_preset():
    out = subprocess.run([sys.executable, "agents/dqn_atari.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    flat = " ".join(line.strip("│ ") for line in out.stdout.splitlines())
    assert "(default: 1; an integer in [1, 1024])" in flat.split("--num-envs")[1], "--help shows each range"
    run_dir = flat.split("--run-dir")[1].split("--resume")[0]
    assert run_dir.count("default") == 1 and "runs/{env}" in run_dir, run_dir
    assert "None" not in out.stdout.split("--learning-rate")[1].split("--")[0], "--learning-rate shows None"
    for flag, value in [("--total-timesteps", "10000000"), ("--replay-ratio", "0.25"), ("--learning-rate", "0.0001")]:
        assert value in out.stdout.split(f"│ {flag} ")[1].split("│ --")[0], (flag, value)
    out = subprocess.run([sys.executable, "agents/dqn_atari.py", "--preset", "fire-paper", "--help"], cwd=ROOT,
                         capture_output=True, text=True).stdout  # fmt: skip
    assert "6.25e-05" in out and "2500000" in out


def test_bare_resume_uses_the_runs_own_flags_and_refuses_a_changed_meaning(tmp_path):
    # main used to build default-width networks on --resume and die with a size mismatch, after overwriting config.json.
    run_dir = tmp_path / "run"
    run_agent("sac_simba", *SAC, "--total-timesteps", "200", "--run-dir", str(run_dir))
    config = (run_dir / "config.json").read_bytes()
    proc = run_agent("sac_simba", "--resume", str(run_dir), "--critic-hidden", "128", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--critic-hidden" in proc.stderr and "128" in proc.stderr and "64" in proc.stderr
    assert (run_dir / "config.json").read_bytes() == config, "a refused resume must not touch config.json"
    run_agent("sac_simba", "--resume", str(run_dir), "--total-timesteps", "300")
    # At action repeat 2 a Humanoid episode that ends on the first repeated step takes 1 env step: 300 or 301.
    result = json.loads((run_dir / "result.json").read_text())
    assert checkpoint(run_dir)["global_step"] == result["global_step"] in (300, 301) and result["finished"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["critic_hidden"] == 64 and config["total_timesteps"] == 300
    history = config["history"]
    assert [h["mode"] for h in history] == ["fresh", "resume"]
    assert history[0]["args"]["total_timesteps"] == 200, "the original flags are kept"
    assert history[1]["overrides"] == {"total_timesteps": 300}
    tags = scalars(run_dir)
    steps = [s for s, _ in tags["losses/qf1_loss"]]
    assert steps == sorted(set(steps))
    csv_rows = (run_dir / "scalars.csv").read_text().splitlines()
    assert csv_rows[0] == "tag,step,value" and len(csv_rows) == len(set(csv_rows)), "scalars.csv has no duplicates"
    assert "charts/rss_mb" in tags


def test_sigterm_exits_143_and_a_second_process_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    first = start_agent("dqn_atari", *DQN, "--total-timesteps", "3000", "--run-dir", str(run_dir))
    wait_for(run_dir / "checkpoint.pt", first)
    # A running run is the first thing said, before any other objection (a total below the checkpoint's step, a
    # source saved without its buffer).
    for flags in (["--run-dir", str(run_dir)], ["--resume", str(run_dir)], ["--run-dir", str(run_dir), "--start-over"],
                  ["--resume", str(run_dir), "--total-timesteps", "50"], ["--branch-from", str(run_dir)]):  # fmt: skip
        proc = run_agent("dqn_atari", *DQN, *flags, check=False, timeout=120)
        assert proc.returncode == 2 and f"pid {first.pid}" in proc.stderr, (flags, proc.stderr)
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 143, out
    assert f"resume with --resume {run_dir}" in out
    run_agent("dqn_atari", "--resume", str(run_dir))  # exactly as the stop message says
    assert checkpoint(run_dir)["global_step"] == 3000
    for tag, points in scalars(run_dir).items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate steps"


def test_two_fresh_runs_on_one_directory(tmp_path):
    run_dir = tmp_path / "run"
    procs = [start_agent("dqn_atari", *DQN, "--run-dir", str(run_dir)) for _ in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    assert codes == [0, 2], [p.stdout.read() for p in procs]
    for tag, points in scalars(run_dir).items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate steps from two writers"


def test_a_finished_run_is_not_overwritten_and_start_over_moves_it_aside(tmp_path):
    run_dir = tmp_path / "run"
    run_agent("dqn_atari", *DQN, "--total-timesteps", "120", "--run-dir", str(run_dir))
    before = (run_dir / "checkpoint.pt").read_bytes()
    proc = run_agent("dqn_atari", *DQN, "--run-dir", str(run_dir), check=False, timeout=120)
    assert proc.returncode == 2 and "--start-over" in proc.stderr and "--resume" in proc.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    (run_dir / ".checkpoint.pt.abc.tmp").write_bytes(b"left by a kill mid-write")
    run_agent("dqn_atari", *DQN, "--total-timesteps", "120", "--run-dir", str(run_dir), "--start-over")
    old = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(old) == 1 and (old[0] / "checkpoint.pt").read_bytes() == before, "the old run is kept, whole"
    assert not list(run_dir.glob(".*.tmp")), "temporary files of an interrupted write are cleaned at start-up"
    history = json.loads((run_dir / "config.json").read_text())["history"]
    assert [h["mode"] for h in history] == ["fresh"]


def test_a_bit_flipped_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_agent("dqn_atari", *DQN, "--total-timesteps", "200", "--run-dir", str(run_dir))
    path = run_dir / "checkpoint.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = os.urandom(4096)
    path.write_bytes(bytes(data))
    proc = run_agent("dqn_atari", "--resume", str(run_dir), "--total-timesteps", "400", check=False, timeout=120)
    assert proc.returncode == 2 and "CRC" in proc.stderr and "checkpoint.prev.pt" in proc.stderr, proc.stderr
    assert path.read_bytes() == bytes(data)
    run_agent("dqn_atari", "--resume", str(run_dir / "checkpoint.prev.pt"), "--total-timesteps", "400")
    assert checkpoint(run_dir)["global_step"] == 400


def test_non_finite_optimizer_state_stops_the_run_with_exit_3(tmp_path):
    # A huge Parseval coefficient sends Adam's exp_avg_sq to inf while the TD loss stays finite.
    run_dir = tmp_path / "run"
    proc = run_agent("dqn_atari", *DQN, "--regularizer", "parseval", "--parseval-lambda", "1e30", "--run-dir",
                     str(run_dir), check=False)  # fmt: skip
    assert proc.returncode == 3 and "exp_avg_sq" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    if (run_dir / "checkpoint.pt").exists():
        payload = checkpoint(run_dir)
        for state in payload["optimizer"]["state"].values():
            assert all(torch.isfinite(v).all() for v in state.values())


def test_resume_refusals_name_the_file_and_what_to_do(tmp_path):
    run_dir = tmp_path / "run"
    first = run_agent("dqn_atari", *DQN, "--total-timesteps", "200", "--run-dir", str(run_dir))
    assert "ret=" in first.stderr, "the progress bar shows the mean return of the last episodes"
    proc = run_agent("dqn_atari", "--resume", str(run_dir), "--start-over", check=False, timeout=120)
    assert proc.returncode == 2 and "--start-over" in proc.stderr and "--resume" in proc.stderr, proc.stderr
    config, ckpt = run_dir / "config.json", run_dir / "checkpoint.pt"
    good_config, good_ckpt = config.read_bytes(), ckpt.read_bytes()
    config.write_text("{ not json")
    proc = run_agent("dqn_atari", "--resume", str(run_dir), "--total-timesteps", "300", check=False, timeout=120)
    assert proc.returncode == 2 and str(config) in proc.stderr and "move config.json aside" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and config.read_text() == "{ not json"
    config.write_bytes(good_config)
    for broken in (good_ckpt[: len(good_ckpt) // 2], b""):  # truncated, empty
        ckpt.write_bytes(broken)
        proc = run_agent("dqn_atari", "--resume", str(run_dir), "--total-timesteps", "300", check=False, timeout=120)
        assert proc.returncode == 2 and f"--resume {run_dir / 'checkpoint.prev.pt'}" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and ckpt.read_bytes() == broken
    run_agent("dqn_atari", "--resume", str(run_dir / "checkpoint.prev.pt"), "--total-timesteps", "300")
    assert checkpoint(run_dir)["global_step"] == 300


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (pip install wandb)")
def test_track_logs_the_scalars_to_wandb_and_a_resume_continues_its_own_run(tmp_path):
    def wandb_runs(wandb_dir):
        """{W&B run id: the bytes of its offline record files}: history records hold each scalar's tag."""
        runs = {}
        for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
            runs[path.stem.removeprefix("run-")] = runs.get(path.stem.removeprefix("run-"), b"") + path.read_bytes()
        return runs

    flags = [*DQN, "--replay-ratio", "1", "--track"]  # 300 updates: losses are logged every 100
    for sweep in ("a", "b"):  # two sweeps whose runs have the same name
        env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path / sweep)}
        run_agent("dqn_atari", *flags, "--run-dir", str(tmp_path / sweep / "run"), env=env)
    runs_a, runs_b = wandb_runs(tmp_path / "a"), wandb_runs(tmp_path / "b")
    assert len(runs_a) == len(runs_b) == 1 and runs_a.keys() != runs_b.keys(), "one W&B run each, never merged"
    (records,) = runs_a.values()
    assert b"losses/td_loss" in records and b"charts/SPS" in records, "the W&B run holds the tensorboard scalars"
    run_agent("dqn_atari", "--resume", str(tmp_path / "a" / "run"), "--total-timesteps", "600", env=env | {
        "WANDB_DIR": str(tmp_path / "a")})  # fmt: skip
    assert wandb_runs(tmp_path / "a").keys() == runs_a.keys(), "the resumed run continues its own W&B run"
    assert len(list((tmp_path / "a").glob("wandb/offline-run-*"))) == 2


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_track_without_wandb_is_a_clear_error(tmp_path):
    proc = run_agent("dqn_atari", *DQN, "--track", "--run-dir", str(tmp_path / "run"), check=False, timeout=120)
    assert proc.returncode == 2 and "pip install" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
