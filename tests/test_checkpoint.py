"""Atomic checkpoints, their header checks, and the replay-ratio accounting."""

import os

import pytest
import torch

from fire_rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fire_rl.runtime import ReplayRatio


def test_round_trip_and_previous_kept(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.arange(3), "step": 1}, agent="dqn_atari", env_id="ALE/Pong-v5")
    save_checkpoint(path, {"w": torch.arange(4), "step": 2}, agent="dqn_atari", env_id="ALE/Pong-v5")
    assert load_checkpoint(tmp_path, agent="dqn_atari", env_id="ALE/Pong-v5")["step"] == 2
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt", agent="dqn_atari")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"], "no temp files left"


def test_bad_checkpoints_are_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1}, agent="dqn_atari", env_id="ALE/Pong-v5")
    with pytest.raises(CheckpointError, match="sac_simba"):
        load_checkpoint(path, agent="sac_simba")
    with pytest.raises(CheckpointError, match="ALE/Breakout-v5"):
        load_checkpoint(path, agent="dqn_atari", env_id="ALE/Breakout-v5")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing", agent="dqn_atari")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(truncated, agent="dqn_atari")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a fire_rl checkpoint"):
        load_checkpoint(foreign, agent="dqn_atari")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage, agent="dqn_atari")


def test_failed_write_keeps_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1}, agent="a", env_id="e")

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="previous one is intact"):
        save_checkpoint(path, {"step": 2, "x": Unpicklable()}, agent="a", env_id="e")
    assert load_checkpoint(path, agent="a")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


@pytest.mark.parametrize("ratio,n_envs", [(0.25, 1), (1.0, 4), (2.0, 1), (8.0, 4), (0.3, 7), (1 / 3, 1)])
def test_replay_ratio_counts_updates_exactly(ratio, n_envs):
    rr = ReplayRatio(ratio)
    total = 0
    for step in range(1, 1001):
        total += rr.updates(n_envs)
        assert total == int(step * n_envs * rr.ratio)
    assert abs(total - ratio * 1000 * n_envs) <= 1


def test_replay_ratio_rejects_non_positive():
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"replay_ratio={bad}"):
            ReplayRatio(bad)


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    net = torch.nn.Linear(3, 2)
    save_checkpoint(path, {"step": 1}, agent="a", env_id="e", finite={"net": net})
    with torch.no_grad():
        net.weight[1, 2] = float("inf")
    with pytest.raises(FloatingPointError, match=r"net\.weight"):
        save_checkpoint(path, {"step": 2}, agent="a", env_id="e", finite={"net": net})
    assert load_checkpoint(path, agent="a")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
