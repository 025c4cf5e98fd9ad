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


def test_non_finite_tensors_anywhere_in_the_payload_are_never_checkpointed(tmp_path):
    # Parseval with a huge coefficient drives Adam's exp_avg_sq to inf while the weights stay finite: the check covers
    # every tensor of the payload (optimizer states, temperature, statistics), not only the networks.
    path = tmp_path / "checkpoint.pt"
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    save_checkpoint(path, {"step": 1, "net": net.state_dict(), "opt": opt.state_dict()}, agent="a", env_id="e")
    opt.state[net.weight]["exp_avg_sq"][1, 2] = float("inf")
    with pytest.raises(FloatingPointError, match=r"opt\.state\.0\.exp_avg_sq"):
        save_checkpoint(path, {"step": 2, "net": net.state_dict(), "opt": opt.state_dict()}, agent="a", env_id="e")
    with pytest.raises(FloatingPointError, match="log_alpha"):
        save_checkpoint(path, {"step": 2, "log_alpha": torch.tensor(float("inf"))}, agent="a", env_id="e")
    assert load_checkpoint(path, agent="a")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_bit_flipped_checkpoint_is_refused_by_its_crc(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"w": torch.randn(256, 256)}, agent="a", env_id="e")
    save_checkpoint(path, {"w": torch.randn(256, 256)}, agent="a", env_id="e")  # a checkpoint.prev.pt exists
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the tensor's record
    data[middle : middle + 4096] = bytes(b ^ 0xFF for b in data[middle : middle + 4096])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC") as err:
        load_checkpoint(path, agent="a")
    assert "checkpoint.prev.pt" in str(err.value), "the message says how to fall back to the previous checkpoint"
    assert load_checkpoint(tmp_path / "checkpoint.prev.pt", agent="a")["w"].shape == (256, 256)
