"""make_atari_env(backend="ale-vector"): ale-py's C++ AtariVectorEnv behind the sync stack's contract."""

import warnings

import cv2
import gymnasium as gym
import numpy as np
import pytest

from fire_rl.envs import atari, env_state
from fire_rl.envs.atari import AleVectorAdapter, episode_stats, make_atari_env, real_next_obs
from fire_rl.envs.env_state import get_env_state, set_env_state

NOOP, FIRE, RIGHT = 0, 1, 2


@pytest.mark.parametrize("preset", ["cleanrl", "fire-paper"])
def test_shapes_autoreset_and_final_obs(preset):
    envs = make_atari_env("ALE/Pong-v5", 2, seed=0, preset=preset, max_episode_steps=30, backend="ale-vector")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_action_space == gym.spaces.Discrete(6)
    assert (obs == obs[:, -1:]).all() and obs.any(), "an episode starts with 4 copies of its first frame"
    for _ in range(40):
        next_obs, rewards, term, trunc, infos = envs.step(envs.action_space.sample())
        assert rewards.dtype == np.float64 and set(np.unique(rewards)) <= {-1.0, 0.0, 1.0}
        real = real_next_obs(next_obs, infos, term, trunc)
        if trunc.any():
            for i in np.flatnonzero(trunc):
                np.testing.assert_array_equal(real[i, :3], obs[i, 1:])  # the final stack continues the episode
                assert not np.array_equal(real[i], next_obs[i])  # next_obs is already the next episode's
                assert (next_obs[i] == next_obs[i, -1]).all()
            assert [i for i, _, length in episode_stats(infos)] == list(np.flatnonzero(trunc))
            assert all(length == 30 for _, _, length in episode_stats(infos))
            break
        obs = next_obs
    else:
        pytest.fail("the 30-step limit must truncate")
    # A partial reset restarts env 0 only; env 1 keeps its stack (4 copies of its new episode's first frame).
    obs, _ = envs.reset(options={"reset_mask": np.array([True, False])})
    assert (obs[0] == obs[0, -1]).all()
    np.testing.assert_array_equal(obs[1], next_obs[1])
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
        if terminations.any():
            infos["final_obs"] = obs.copy()
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


# --------------------------------------------------------------------------------------------------------------------
# The same env as the sync backend: step for step with no-op starts and sticky actions off, and the documented
# differences (AleVectorAdapter's docstring) exactly as documented.
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_noops_no_sticky(monkeypatch):
    """make_atari_env without no-op starts ("cleanrl") and sticky actions ("fire-paper"), on both backends."""
    monkeypatch.setattr(atari, "NOOP_MAX", 0)
    monkeypatch.setitem(atari.STICKY_ACTIONS, "fire-paper", 0.0)


def _both(env_id: str, num_envs: int, **kwargs) -> tuple[gym.vector.VectorEnv, gym.vector.VectorEnv]:
    return tuple(make_atari_env(env_id, num_envs, seed=0, backend=b, **kwargs) for b in ("sync", "ale-vector"))


def _step(envs, actions) -> dict:
    obs, rewards, term, trunc, infos = envs.step(actions)
    real = real_next_obs(obs, infos, term, trunc)
    return {"obs": obs, "rewards": rewards, "term": term, "trunc": trunc, "real": real, "stats": episode_stats(infos)}


def _assert_same(expected: dict, got: dict, keys=("obs", "rewards", "term", "trunc", "real", "stats"), t=None) -> None:
    for k in keys:
        e, g = expected[k], got[k]
        if isinstance(e, np.ndarray):
            assert e.dtype == g.dtype and np.array_equal(e, g), f"step {t}: {k} differ"
        else:
            assert e == g, f"step {t}: {k}: {e} (sync) vs {g} (ale-vector)"


@pytest.mark.parametrize(
    ("env_id", "preset", "eval_env", "max_episode_steps", "steps"),
    [
        ("ALE/Breakout-v5", "fire-paper", False, 200, 700),  # game overs (C++ autoresets) and truncations
        ("ALE/MsPacman-v5", "cleanrl", True, 500, 520),  # no FIRE; eval: no life-loss episodes, unclipped rewards
    ],
)
def test_backends_play_the_same_game_without_hidden_steps(
    no_noops_no_sticky, env_id, preset, eval_env, max_episode_steps, steps
):
    """Everything the agent sees is bit-identical, reset stacks, autoreset stacks and final observations included."""
    sync, ale = _both(env_id, 2, preset=preset, eval=eval_env, max_episode_steps=max_episode_steps)
    obs, _ = sync.reset(seed=0)
    np.testing.assert_array_equal(obs, ale.reset(seed=0)[0])
    ends = np.zeros((2, 2), int)  # [terminations, truncations] x env
    rewards = set()
    for t, action in enumerate(np.random.default_rng(0).integers(sync.single_action_space.n, size=(steps, 2))):
        expected, got = _step(sync, action), _step(ale, action)
        _assert_same(expected, got, t=t)
        ends += np.stack([got["term"], got["trunc"]])
        rewards |= set(got["rewards"])
    assert ends.any(axis=0).all() and ends.any(axis=1).all(), f"the premise: every env ends, both ways: {ends}"
    assert eval_env == (max(rewards) > 1), rewards  # clipped in training, game scores in eval
    sync.close()
    ale.close()


def test_cleanrl_life_loss_sync_plays_one_hidden_noop(no_noops_no_sticky):
    """MsPacman (no FIRE, 3 lives): at a lost life both end the episode with the same final stack; sync then plays one
    NOOP step before the next episode's first frame, ale-vector starts it from the life-loss frame. With that NOOP
    played on ale-vector too, the games go on identically: frames, rewards, ends, statistics (whose game length counts
    sync's hidden step)."""
    sync, ale = _both("ALE/MsPacman-v5", 1, preset="cleanrl")
    obs, _ = sync.reset(seed=0)
    np.testing.assert_array_equal(obs, ale.reset(seed=0)[0])
    life_losses, games, since_life_loss = 0, 0, 4
    for t, action in enumerate(np.random.default_rng(0).integers(9, size=(400, 1))):
        expected, got = _step(sync, action), _step(ale, action)
        life_lost, since_life_loss = bool(got["term"][0] and not got["stats"]), since_life_loss + 1
        # The new episode's first 3 stacks differ in their older frames: it starts one step later on sync.
        stacks = ("real",) * (since_life_loss >= 3) + ("obs",) * (since_life_loss >= 3 and not life_lost)
        _assert_same(expected, got, ("rewards", "term", "trunc", "stats", *stacks), t)
        np.testing.assert_array_equal(expected["real"][:, -1], got["real"][:, -1])
        games += len(got["stats"])
        if life_lost:
            life_losses, since_life_loss = life_losses + 1, 0
            assert (got["obs"] == got["real"][:, -1:]).all(), "ale-vector: 4 copies of the life-loss frame"
            assert (expected["obs"] == expected["obs"][:, -1:]).all()
            assert not np.array_equal(expected["obs"], got["obs"])
            got = _step(ale, np.array([NOOP]))  # sync's hidden step
            assert not (got["term"] | got["trunc"]).any()
        np.testing.assert_array_equal(expected["obs"][:, -1], got["obs"][:, -1])
    assert life_losses >= 2 and games == 1, (life_losses, games)
    sync.close()
    ale.close()


def test_fire_reset_and_frame_cap_differ_as_documented(no_noops_no_sticky):
    """Breakout, "cleanrl": sync's first frame follows a FIRE step and an action-2 step, ale-vector's one FIRE frame.
    Sync's frame cap counts those 2 hidden steps: with max_episode_steps=15 its game truncates after 13 agent steps,
    ale-vector's after 15; both report a game length of 15."""
    sync, ale = _both("ALE/Breakout-v5", 1, preset="cleanrl", max_episode_steps=15)
    sync_obs, ale_obs = sync.reset(seed=0)[0], ale.reset(seed=0)[0]
    assert (sync_obs == sync_obs[:, -1:]).all() and (ale_obs == ale_obs[:, -1:]).all()
    game = gym.make("ALE/Breakout-v5", frameskip=1, repeat_action_probability=0.0, obs_type="grayscale").unwrapped
    game.reset(seed=0)
    game.ale.act(FIRE)
    frame = cv2.resize(game.ale.getScreenGrayscale(), (84, 84), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(ale_obs[0, -1], frame)
    no_fire_reset = make_atari_env("ALE/Breakout-v5", 1, seed=0, preset="fire-paper")
    no_fire_reset.reset(seed=0)
    no_fire_reset.step(np.array([FIRE]))
    np.testing.assert_array_equal(sync_obs[:, -1], no_fire_reset.step(np.array([RIGHT]))[0][:, -1])
    assert not np.array_equal(sync_obs, ale_obs)
    for envs, agent_steps in ((sync, 13), (ale, 15)):
        for t in range(1, agent_steps + 1):
            out = _step(envs, np.array([NOOP]))
            assert not out["term"][0] and out["trunc"][0] == (t == agent_steps), t
        assert out["stats"] == [(0, 0.0, 15)]
        envs.close()
    game.close()
    no_fire_reset.close()
