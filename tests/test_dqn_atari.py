"""DQN on a real Atari game, end to end, as a user runs it: a subprocess, tensorboard event files, checkpoints."""

import pytest
import torch
from agent_utils import checkpoint, load_agent, reset_events, run_agent, scalars

# A few hundred env steps that cross learning_starts, reach a reset, and do real gradient updates.
SHORT = ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "240", "--learning-starts", "160", "--buffer-size", "1000",
         "--replay-ratio", "2", "--metrics-every", "200", "--checkpoint-every", "0"]  # fmt: skip


def test_fire_reset_end_to_end(tmp_path):
    run_dir = tmp_path / "fire"
    run_agent("dqn_atari", *SHORT, "--reset", "fire", "--reset-at", "240", "--run-dir", str(run_dir),
              "--eval-every", "240", "--eval-episodes", "1")  # fmt: skip
    tags = scalars(run_dir)
    for tag in ["losses/td_loss", "losses/q_values", "charts/SPS", "charts/epsilon", "reset/event",
                "reset/q/encoder.0/dfi_after", "reset/q/sfe_total", "plasticity/srank", "plasticity/dormant",
                "eval/episodic_return"]:  # fmt: skip
        assert tag in tags, f"missing tag {tag}; have {sorted(tags)}"
    assert [s for s, _ in tags["reset/event"]] == [240]
    assert [s for s, _ in tags["eval/episodic_return"]] == [240], "the last step evaluates once, not twice"
    events = reset_events(run_dir)
    assert len(events) == 1 and events[0]["global_step"] == 240 and events[0]["update_step"] == 160
    assert events[0]["scalars"]["q/encoder.0/dfi_after"] < 1e-3 * events[0]["scalars"]["q/encoder.0/dfi_before"]
    ckpt = checkpoint(run_dir)
    assert ckpt["global_step"] == 240 and ckpt["update_step"] == 160, "replay ratio 2 from step 160 to 240"
    for name, value in ckpt["q_network"].items():  # the official FIRE DQN keeps the target's own conv biases
        if not (name.startswith("encoder.") and name.endswith(".bias")):
            assert torch.equal(value, ckpt["target_network"][name]), f"target {name} differs from online after FIRE"
    assert (run_dir / "result.json").exists() and (run_dir / "config.json").exists()


@pytest.mark.parametrize("method", ["sp", "full", "pi"])
def test_other_resets_end_to_end(tmp_path, method):
    run_dir = tmp_path / method
    run_agent("dqn_atari", *SHORT, "--reset", method, "--reset-at", "200", "--run-dir", str(run_dir))
    events = reset_events(run_dir)
    assert len(events) == 1 and events[0]["method"] == method and events[0]["global_step"] == 200
    change = events[0]["scalars"]["q/output_change"]
    if method == "pi":
        assert change < 1e-4, f"plasticity injection changed the Q-values of the probe batch by {change}"
        state = checkpoint(run_dir)["q_network"]
        assert any(".new." in k or "new" in k.split(".") for k in state), sorted(state)
    else:
        assert change > 1e-3, f"a {method} reset left the Q-values unchanged ({change})"
    assert "reset/event" in scalars(run_dir)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--replay-ratio", "0"], "--replay-ratio=0"),
        (["--env-id", "ALE/NotAGame-v5"], "NotAGame"),
        (["--buffer-size", "16"], "--buffer-size=16"),
        (
            ["--reset", "fire", "--reset-at", "1000000000", "--total-timesteps", "1000", "--learning-starts", "100"],
            "1000000000",
        ),
        (["--reset", "sp", "--reset-at", "100", "--sp-alpha", "1.5"], "--sp-alpha=1.5"),
        (["--resume", "/nonexistent/run"], "/nonexistent/run"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, flags, message):
    run_dir = tmp_path / "run"
    proc = run_agent("dqn_atari", "--run-dir", str(run_dir), *flags, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not run_dir.exists(), "nothing may be written before the input is checked"


def test_unknown_reset_method_is_refused_by_the_parser(tmp_path):
    proc = run_agent("dqn_atari", "--reset", "bogus", check=False, timeout=120)
    assert proc.returncode == 2 and "bogus" in proc.stderr and "Traceback" not in proc.stderr
    for allowed in ["none", "fire", "sp", "full", "pi"]:
        assert allowed in proc.stderr


def test_redo_with_swr_end_to_end(tmp_path):
    run_dir = tmp_path / "redo_swr"
    run_agent("dqn_atari", *SHORT, "--reset", "redo", "--reset-every", "100", "--regularizer", "swr",
              "--run-dir", str(run_dir))  # fmt: skip
    events = reset_events(run_dir)
    assert [e["global_step"] for e in events] == [100, 200] and all(e["method"] == "redo" for e in events)
    assert sum(v for k, v in events[-1]["scalars"].items() if k.endswith("/recycled")) > 0
    tags = scalars(run_dir)
    assert "swr/q/head.0/ratio" in tags and "swr/q/encoder.0/norm" in tags
    assert checkpoint(run_dir)["regularizer"]["q"], "SWR's stored norms are checkpointed"


def test_regularizer_cannot_combine_with_injection(tmp_path):
    proc = run_agent("dqn_atari", "--reset", "pi", "--regularizer", "l2init", check=False, timeout=120)
    assert proc.returncode == 2 and "--regularizer=l2init" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(("method", "ratio"), [("fire", "0.5"), ("pi", "1")])
def test_overlap_trains_on_the_same_batches(tmp_path, method, ratio):
    # With epsilon 1 no action reads the weights, so the games, the buffer and the batches are those of the serial
    # loop: the background learner must then end with the serial loop's networks, optimizer and scalars, bit for bit,
    # through target copies, a reset (plasticity injection changes the parameter set) and metrics.
    flags = ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "260", "--learning-starts", "40", "--buffer-size",
             "1000", "--batch-size", "8", "--replay-ratio", ratio, "--target-network-frequency", "30", "--start-e",
             "1", "--end-e", "1", "--metrics-every", "70", "--reset", method, "--reset-at", "120"]  # fmt: skip
    serial, overlap = tmp_path / "serial", tmp_path / "overlap"
    run_agent("dqn_atari", *flags, "--run-dir", str(serial))  # the default
    run_agent("dqn_atari", *flags, "--overlap", "--run-dir", str(overlap))
    a, b = checkpoint(serial), checkpoint(overlap)
    assert a["update_step"] == b["update_step"] > 0
    for key in ["q_network", "target_network"]:
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name} differs with --overlap"
    for s_a, s_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(s_a[k], s_b[k]) for k in s_a)
    # The actor's weights were taken from the online network at the last learning step, so every update since then is
    # missing from them: at replay ratio 1 the last step's update.
    assert "actor" in b and "actor" not in a
    assert any(not torch.equal(b["actor"][name], value) for name, value in b["q_network"].items())
    sa, sb = scalars(serial), scalars(overlap)
    for tag in ["losses/td_loss", "losses/q_values", "plasticity/srank", "reset/event"]:
        assert sa[tag] == sb[tag], tag
    assert [e["global_step"] for e in reset_events(overlap)] == [120]


def test_ale_vector_backend_resumes_at_an_episode_boundary(tmp_path):
    # ale-py's C++ vector env has no exact state: a resume restarts the games and ends the buffer's open episodes.
    run_dir = tmp_path / "run"
    flags = ["--env-id", "ALE/Breakout-v5", "--env-backend", "ale-vector", "--num-envs", "2", "--learning-starts",
             "100", "--buffer-size", "1000", "--metrics-every", "0", "--save-buffer", "--reset", "fire",
             "--reset-every", "300"]  # fmt: skip
    first = run_agent("dqn_atari", *flags, "--total-timesteps", "200", "--run-dir", str(run_dir))
    assert "episode boundary" in first.stderr or "unfinished episodes" in first.stderr, first.stderr
    run_agent("dqn_atari", "--resume", str(run_dir), "--total-timesteps", "400")
    ckpt = checkpoint(run_dir)
    assert ckpt["global_step"] == 400 and [e["global_step"] for e in reset_events(run_dir)] == [300]


def test_epsilon_schedules():
    dqn = load_agent("dqn_atari")
    # CleanRL: linear from step 0 over exploration_fraction x total_timesteps, then flat.
    args = dqn.Args(total_timesteps=1_000, exploration_fraction=0.5, start_e=1.0, end_e=0.1, learning_starts=200)
    assert [dqn.epsilon_at(args, t) for t in (0, 250, 500, 900)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    # The official FIRE DQN (fire-paper): held at start_e until learning_starts, then the same decay from there.
    args.epsilon_after_learning_starts = True
    assert [dqn.epsilon_at(args, t) for t in (0, 200, 450, 700, 900)] == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    assert dqn.Args(**dqn.PRESETS["fire-paper"]).epsilon_after_learning_starts
