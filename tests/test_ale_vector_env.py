"""make_atari_env(backend="ale-vector"): ale-py's C++ AtariVectorEnv behind the sync stack's contract."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

from fire_rl.envs import env_state
from fire_rl.envs.atari import AleVectorAdapter, episode_stats, make_atari_env, real_next_obs
from fire_rl.envs.env_state import get_env_state, set_env_state


@pytest.mark.parametrize("preset", ["cleanrl", "fire-paper"])
def test_shapes_autoreset_and_final_obs(preset):
    envs = make_atari_env("ALE/Pong-v5", 2, seed=0, preset=preset, max_episode_steps=30, backend="ale-vector")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_action_space == gym.spaces.Discrete(6)
    for _ in range(40):
        next_obs, rewards, term, trunc, infos = envs.step(envs.action_space.sample())
        assert rewards.dtype == np.float64 and set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
        real = real_next_obs(next_obs, infos, term, trunc)
        if trunc.any():
            for i in np.flatnonzero(trunc):
                np.testing.assert_array_equal(real[i, :3], obs[i, 1:])  # the final stack continues the episode
                assert not np.array_equal(real[i], next_obs[i])  # next_obs is already the next episode's
            assert [i for i, _, length in episode_stats(infos)] == list(np.flatnonzero(trunc))
            assert all(length == 30 for _, _, length in episode_stats(infos))
            break
        obs = next_obs
    else:
        pytest.fail("the 30-step limit must truncate")
    envs.close()


def test_cleanrl_life_loss_ends_episodes_and_stats_cover_the_game():
    envs = make_atari_env("ALE/Breakout-v5", 1, seed=1, preset="cleanrl", backend="ale-vector")
    envs.reset(seed=1)
    life_losses, steps = 0, 0
    for _ in range(3_000):
        _, _, term, trunc, infos = envs.step(envs.action_space.sample())
        steps += 1
        if not (term[0] or trunc[0]):
            continue
        stats = episode_stats(infos)
        if not stats:
            life_losses += 1
            continue
        ((_, game_return, game_length),) = stats
        assert (life_losses, game_length) == (4, steps) and game_return >= 0
        break
    else:
        pytest.fail("a random Breakout game ends within 3,000 steps")
    envs.close()


class _RecordingVectorEnv(gym.vector.VectorEnv):
    """Records the actions it receives; one life, never ends unless told."""

    def __init__(self, num_envs: int = 3):
        self.num_envs = num_envs
        self.single_action_space = gym.spaces.Discrete(4)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)
        self.single_observation_space = gym.spaces.Box(0, 255, (1,), np.uint8)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.received, self.end_at = [], set()

    def reset(self, *, seed=None, options=None):
        return np.zeros((self.num_envs, 1), np.uint8), {"lives": np.zeros(self.num_envs, np.int32)}

    def step(self, actions):
        self.received.append(actions.copy())
        n = self.num_envs
        terminations, truncations = np.full(n, len(self.received) in self.end_at), np.zeros(n, bool)
        obs, rewards, infos = np.zeros((n, 1), np.uint8), np.ones(n, np.int32), {"lives": np.zeros(n, np.int32)}
        return obs, rewards, terminations, truncations, infos


def test_adapter_sticky_actions_follow_sb3():
    """With probability 0.25 the previous action is sent instead of the chosen one; NOOP after an episode end."""
    inner = _RecordingVectorEnv()
    inner.end_at = {100}
    envs = AleVectorAdapter(inner, repeat_action_probability=0.25, clip_rewards=False)
    envs.reset(seed=0)
    chosen = np.random.default_rng(1).integers(1, 4, size=(400, 3))
    for a in chosen:
        _, rewards, term, _, infos = envs.step(a)
        assert rewards.dtype == np.float64
        if term.all():
            assert [length for _, _, length in episode_stats(infos)] == [100] * 3
    sent = np.array(inner.received)
    previous = np.vstack([np.zeros((1, 3), np.int64), sent[:-1]])
    previous[100] = 0  # the step after the episode end repeats NOOP
    assert np.all((sent == chosen) | (sent == previous))
    assert 0.1 < np.mean(sent != chosen) < 0.3  # P(repeat and differ) = 0.25 * 2/3
    again = AleVectorAdapter(_RecordingVectorEnv(), repeat_action_probability=0.25, clip_rewards=False)
    again.env.end_at = {100}
    again.reset(seed=0)
    for a in chosen:
        again.step(a)
    np.testing.assert_array_equal(np.array(again.env.received), sent)  # seeded by reset(seed=...)


def test_checkpoints_resume_at_an_episode_boundary(monkeypatch):
    monkeypatch.setattr(env_state, "_warned", set())
    envs = make_atari_env("ALE/Pong-v5", 2, seed=0, preset="fire-paper", backend="ale-vector")
    envs.reset(seed=0)
    with pytest.warns(UserWarning, match="AtariVectorEnv.*restarted"):
        state = get_env_state(envs)
    assert state["exact"] is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert set_env_state(envs, state) is False
    envs.close()


def test_bad_backend_arguments():
    with pytest.raises(ValueError, match=r"unknown backend 'envpool'; allowed: \['sync', 'ale-vector'\]"):
        make_atari_env("ALE/Pong-v5", 1, seed=0, backend="envpool")
    with pytest.raises(ValueError, match="capture_video=True needs backend='sync'"):
        make_atari_env("ALE/Pong-v5", 1, seed=0, backend="ale-vector", capture_video=True, run_dir="x")
