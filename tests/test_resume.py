"""Exact resume: N env steps + N resumed equals 2N straight, bit for bit, for both agents and every reset method.

Checkpoints hold the networks, targets, θ₀, optimizers, scheduler, RNGs, the replay buffer (``--save-buffer``) and the
environments' full state (emulators, simulators, wrappers and their RNGs), so on CPU with torch_deterministic a
resumed run is indistinguishable from one that never stopped. The first half stops at ``--stop-at N`` (its schedules
span the whole run, as the straight run's) and ``--resume DIR`` continues it.
"""

import collections

import pytest
import torch
from agent_utils import HUMANOID_BENCH, checkpoint, reset_events, run_agent

DQN = ["--env-id", "ALE/Breakout-v5", "--learning-starts", "40", "--buffer-size", "1000", "--replay-ratio", "1",
       "--checkpoint-every", "80", "--metrics-every", "50", "--save-buffer", "--start-e", "0.1", "--end-e", "0.1",
       "--reset-every", "60"]  # fmt: skip
SAC = ["--env-id", "Humanoid-v5", "--learning-starts", "60", "--batch-size", "16", "--buffer-size", "1000",
       "--actor-hidden", "16", "--critic-hidden", "16", "--checkpoint-every", "100", "--metrics-every", "70",
       "--eval-every", "0", "--save-buffer", "--reset-every", "80"]  # fmt: skip


# Skipped: wall-clock times (reset durations), the config (--stop-at differs between the first half and the straight
# run), and the saved env state itself, whose unused parts (RNGs of observation spaces nothing samples, MuJoCo
# scratch arrays) may differ: that the env continues exactly is what the identical networks, optimizer, buffer, last
# observation and events after N more steps show (and tests/test_env_state.py checks step by step).
SKIP = {"args", "config", "env_state"}


def assert_same(a, b, path="checkpoint"):
    """Bit-identical nested checkpoint contents, but for the `SKIP` keys and keys naming seconds."""
    if isinstance(a, dict):
        keys = {k for k in a if k not in SKIP and "seconds" not in str(k)}
        assert keys == {k for k in b if k not in SKIP and "seconds" not in str(k)}, path
        for k in keys:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple, collections.deque)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), f"{path} differs"
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # numpy arrays
        assert a.shape == b.shape and (a == b).all(), f"{path} differs"
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def straight_and_resumed(tmp_path, agent, flags, n):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_agent(agent, *flags, "--total-timesteps", str(2 * n), "--run-dir", str(straight))
    run_agent(agent, *flags, "--total-timesteps", str(2 * n), "--stop-at", str(n), "--run-dir", str(resumed))
    run_agent(agent, "--resume", str(resumed))  # with the run's own flags: on to its total
    return straight, resumed


@pytest.mark.parametrize("method", ["fire", "sp", "full", "pi", "redo"])
def test_dqn_resume_is_exact(tmp_path, method):
    straight, resumed = straight_and_resumed(tmp_path, "dqn_atari", [*DQN, "--reset", method], 80)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] == 160 and a["update_step"] == b["update_step"] == 120
    assert_same(a, b)
    events_a, events_b = reset_events(straight), reset_events(resumed)
    assert [e["global_step"] for e in events_a] == [e["global_step"] for e in events_b] == [60, 120]
    assert_same(events_a, events_b, "resets.jsonl")


@pytest.mark.parametrize("method", ["fire", "pi"])
def test_dqn_overlap_resume_is_exact(tmp_path, method):
    # --overlap: the checkpoint waits for the background updates and keeps the actor's (older) weights.
    straight, resumed = straight_and_resumed(tmp_path, "dqn_atari", [*DQN, "--reset", method, "--overlap"], 80)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] == 160 and a["update_step"] == b["update_step"] == 120
    assert "actor" in a
    assert_same(a, b)
    assert_same(reset_events(straight), reset_events(resumed), "resets.jsonl")


@pytest.mark.parametrize("method", ["fire", "sp", "full", "pi"])
def test_sac_resume_is_exact(tmp_path, method):
    straight, resumed = straight_and_resumed(tmp_path, "sac_simba", [*SAC, "--reset", method], 100)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] and a["update_step"] == b["update_step"] > 0
    assert_same(a, b)
    assert len(reset_events(straight)) == len(reset_events(resumed)) == 2
    assert_same(reset_events(straight), reset_events(resumed), "resets.jsonl")


@pytest.mark.parametrize(
    ("agent", "flags"),
    [("dqn_atari", DQN), ("sac_simba", SAC),
     pytest.param("sac_simba", [*SAC, "--env-id", "h1-walk-v0"], marks=HUMANOID_BENCH)],
    ids=["dqn-breakout", "sac-humanoid", "sac-h1-walk"],
)  # fmt: skip
def test_replay_memory_on_the_device_changes_no_value(tmp_path, agent, flags):
    # --buffer-device moves the replay memory, not the batches: a run that keeps it in --device's memory until its stop
    # and in host memory after `--resume DIR --no-buffer-device` equals a run in host memory throughout, bit for bit.
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_agent(agent, *flags, "--reset", "fire", "--total-timesteps", "200", "--run-dir", str(straight))
    run_agent(agent, *flags, "--reset", "fire", "--buffer-device", "--total-timesteps", "200", "--stop-at", "100",
              "--run-dir", str(resumed))  # fmt: skip
    run_agent(agent, "--resume", str(resumed), "--no-buffer-device")
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] >= 200 and a["update_step"] == b["update_step"] > 0
    assert b["args"]["buffer_device"] is False and len(reset_events(resumed)) >= 2
    assert_same(a, b)


@HUMANOID_BENCH
def test_sac_resume_is_exact_on_humanoid_bench(tmp_path):
    flags = [*SAC, "--env-id", "h1-walk-v0", "--reset", "fire"]
    straight, resumed = straight_and_resumed(tmp_path, "sac_simba", flags, 100)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] >= 200 and a["update_step"] == b["update_step"] > 0
    assert_same(a, b)
