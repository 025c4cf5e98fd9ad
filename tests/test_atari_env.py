"""Atari vector envs on real ALE games: wrapper stacks, presets, life loss, episode statistics (envs/atari.py)."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import AtariPreprocessing, TransformReward

from fire_rl.envs.atari import (
    EpisodicLifeEnv,
    FireResetEnv,
    StickyAgentAction,
    episode_stats,
    make_atari_env,
    real_next_obs,
)


def _wrappers(env: gym.Env) -> dict[type, gym.Env]:
    out = {}
    while isinstance(env, gym.Wrapper):
        out[type(env)] = env
        env = env.env
    return out


@pytest.mark.parametrize(
    ("env_id", "preset", "eval_env"),
    [
        ("ALE/Breakout-v5", "cleanrl", False),
        ("BreakoutNoFrameskip-v4", "cleanrl", True),
        ("ALE/Breakout-v5", "fire-paper", False),
        ("BreakoutNoFrameskip-v4", "fire-paper", True),
    ],
)
def test_shapes_and_dtypes(env_id, preset, eval_env):
    envs = make_atari_env(env_id, 2, seed=0, preset=preset, eval=eval_env)
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert envs.single_observation_space.shape == (4, 84, 84)
    assert envs.single_action_space == gym.spaces.Discrete(4)
    assert (obs == obs[:, :1]).all(), "the first stack of an episode is 4 copies of its first frame"
    for _ in range(3):
        obs, rewards, term, trunc, _ = envs.step(envs.action_space.sample())
    assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
    assert rewards.shape == (2,) and term.dtype == np.bool_ and trunc.dtype == np.bool_
    assert envs.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    envs.close()


def test_v5_and_noframeskip_v4_ids_give_the_same_game():
    runs = []
    for env_id in ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        envs = make_atari_env(env_id, 1, seed=3)
        obs, _ = envs.reset(seed=3)
        frames = [obs]
        for _ in range(40):
            frames.append(envs.step(envs.action_space.sample())[0])
        runs.append(np.stack(frames))
        envs.close()
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize(
    ("preset", "eval_env", "sticky_actions", "agent_sticky", "frame_sticky", "noop_max", "life_loss", "fire", "clip"),
    [
        ("cleanrl", False, "agent-step", 0.0, 0.0, 30, True, True, True),
        ("cleanrl", True, "frame", 0.0, 0.0, 30, False, True, False),
        ("fire-paper", False, "agent-step", 0.25, 0.0, 0, False, False, True),
        ("fire-paper", True, "agent-step", 0.25, 0.0, 0, False, False, False),
        ("fire-paper", False, "frame", 0.0, 0.25, 0, False, False, True),
    ],
)
def test_preset_wrapper_stacks(
    preset, eval_env, sticky_actions, agent_sticky, frame_sticky, noop_max, life_loss, fire, clip
):
    envs = make_atari_env("ALE/Breakout-v5", 1, seed=0, preset=preset, eval=eval_env, sticky_actions=sticky_actions)
    env = envs.envs[0]
    wrappers = _wrappers(env)
    assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0, "stickiness lives in a wrapper"
    for wrapper_type, p in ((StickyAgentAction, agent_sticky), (gym.wrappers.StickyAction, frame_sticky)):
        wrapper = wrappers.get(wrapper_type)
        assert (wrapper.repeat_action_probability if wrapper else 0.0) == pytest.approx(p)
    assert env.unwrapped._frameskip == 1
    # Both presets truncate a game at 108,000 frames = 27,000 agent steps (the official FIRE code's NoFrameskip-v4
    # ids carry this ALE cap, which ends games before its TimeLimit(100_000) could).
    assert env.unwrapped.ale.getInt("max_num_frames_per_episode") == 108_000
    pre = wrappers[AtariPreprocessing]
    assert (pre.noop_max, pre.frame_skip, pre.terminal_on_life_loss) == (noop_max, 4, False)
    assert (EpisodicLifeEnv in wrappers) == life_loss
    assert (FireResetEnv in wrappers) == fire
    assert (TransformReward in wrappers) == clip
    if fire:
        assert wrappers[FireResetEnv].on_life_loss == eval_env
    envs.close()


def _record_frame_actions(envs) -> list[int]:
    """The action of every emulator frame of env 0, recorded at the ALE env below every wrapper."""
    base, frames = envs.envs[0].unwrapped, []
    step = base.step

    def recording_step(action):
        frames.append(int(action))
        return step(action)

    base.step = recording_step
    return frames


@pytest.mark.parametrize("sticky_actions", ["agent-step", "frame"])
def test_sticky_actions_repeat_whole_agent_steps_or_single_frames(sticky_actions):
    """Sticky "agent-step" (official FIRE, SB3's StickyActionEnv above the frame skip): all frames of an agent step
    execute one action, the chosen one or the previous step's (NOOP after a reset). Sticky "frame" (ALE's rule): the
    frames of one agent step can differ."""
    envs = make_atari_env("ALE/Breakout-v5", 1, seed=0, preset="fire-paper", sticky_actions=sticky_actions)
    envs.reset(seed=0)
    frames = _record_frame_actions(envs)
    chosen = np.random.default_rng(0).integers(1, 4, size=600)  # FIRE, RIGHT, LEFT: never NOOP
    previous, repeated, mixed = 0, 0, 0
    for action in chosen:
        start = len(frames)
        _, _, term, trunc, _ = envs.step(np.array([action]))
        executed = frames[start:]
        mixed += len(set(executed)) > 1
        if sticky_actions == "agent-step":
            assert len(set(executed)) == 1 and executed[0] in (action, previous), (action, previous, executed)
            repeated += executed[0] != action
            previous = 0 if term[0] or trunc[0] else executed[0]
    if sticky_actions == "agent-step":
        assert mixed == 0 and 0.1 < repeated / len(chosen) < 0.3, repeated  # P(repeat and differ) = 0.25 * 2/3
    else:
        assert mixed > 50, "per-frame stickiness mixes actions within agent steps"
    envs.close()


def test_no_fire_reset_for_games_without_fire():
    envs = make_atari_env("ALE/Freeway-v5", 1, seed=0)
    assert FireResetEnv not in _wrappers(envs.envs[0])
    assert EpisodicLifeEnv in _wrappers(envs.envs[0])
    envs.close()


def test_life_loss_ends_the_episode_but_not_the_game():
    """SB3/CleanRL semantics: after a life-loss termination the game goes on; the game's stats cover all lives."""
    envs = make_atari_env("ALE/Breakout-v5", 1, seed=1, preset="cleanrl")
    envs.reset(seed=1)
    life_losses, game_steps, clipped_sum, games = 0, 0, 0.0, 0
    for _ in range(1_500):
        _, rewards, term, trunc, infos = envs.step(envs.action_space.sample())
        game_steps += 1
        clipped_sum += rewards[0]
        assert rewards[0] in (-1.0, 0.0, 1.0)
        if not (term[0] or trunc[0]):
            continue
        final_lives = infos["final_info"]["lives"][0]
        stats = episode_stats(infos)
        if final_lives > 0 and not trunc[0]:
            life_losses += 1
            assert stats == [], "a lost life is no game end"
            assert infos["lives"][0] == final_lives, "the game must not be reset after a life loss"
        else:
            games += 1
            (env_idx, game_return, game_length), *rest = stats
            assert rest == [] and env_idx == 0
            assert infos["lives"][0] == 5, "a new game starts with 5 lives"
            # Hidden steps: FIRE + action 2 at the game's start, no-op + FIRE + action 2 after each lost life.
            assert game_length == game_steps + 2 + 3 * life_losses
            assert game_return >= clipped_sum, "the game return is unclipped (Breakout bricks score 1, 4 or 7)"
            if games == 1:
                break
            life_losses, game_steps, clipped_sum = 0, 0, 0.0
    assert games == 1 and life_losses == 4, "Breakout has 5 lives: 4 life-loss episodes, then the game ends"
    envs.close()


def test_eval_env_plays_whole_games_and_fires_after_life_loss():
    envs = make_atari_env("ALE/Breakout-v5", 1, seed=2, preset="cleanrl", eval=True)
    _, infos = envs.reset(seed=2)
    lives, life_losses, steps, raw_sum = infos["lives"][0], 0, 0, 0.0
    for _ in range(2_000):
        _, rewards, term, trunc, infos = envs.step(envs.action_space.sample())
        steps += 1
        raw_sum += rewards[0]
        if term[0] or trunc[0]:
            assert infos["final_info"]["lives"][0] == 0 or trunc[0], "eval episodes end with the game only"
            ((_, game_return, game_length),) = episode_stats(infos)
            assert game_return == raw_sum
            # FIRE + action 2 at the start, one FIRE after each of the 4 lives lost before the last.
            assert game_length == steps + 2 + life_losses
            assert life_losses == 4
            break
        if infos["lives"][0] < lives:
            life_losses += 1
        lives = infos["lives"][0]
    else:
        pytest.fail("a random Breakout game ends within 2,000 steps")
    envs.close()


def test_episode_stats_are_unclipped_game_returns():
    """fire-paper training and eval envs differ only by reward clipping: same seed and actions, same game."""
    train = make_atari_env("ALE/SpaceInvaders-v5", 1, seed=4, preset="fire-paper", max_episode_steps=150)
    evaluation = make_atari_env(
        "ALE/SpaceInvaders-v5", 1, seed=4, preset="fire-paper", eval=True, max_episode_steps=150
    )
    train.reset(seed=4)
    evaluation.reset(seed=4)
    rng = np.random.default_rng(0)
    eval_sum, train_sum = 0.0, 0.0
    for _ in range(200):
        actions = rng.integers(0, 6, size=1)
        _, r_train, term, trunc, i_train = train.step(actions)
        _, r_eval, term_e, trunc_e, i_eval = evaluation.step(actions)
        assert (term, trunc) == (term_e, trunc_e)
        assert r_train[0] == np.sign(r_eval[0])
        eval_sum += r_eval[0]
        train_sum += r_train[0]
        if term[0] or trunc[0]:
            (_, game_return, length), (_, eval_return, eval_length) = (
                episode_stats(i_train)[0],
                episode_stats(i_eval)[0],
            )
            assert game_return == eval_return == eval_sum
            assert game_return > train_sum > 0, "clipped rewards must not reach the episode statistics"
            assert length == eval_length
            break
    else:
        pytest.fail("the 150-step time limit must end the game")
    train.close()
    evaluation.close()


def test_truncation_and_real_final_observation():
    envs = make_atari_env("ALE/Pong-v5", 2, seed=0, preset="fire-paper", max_episode_steps=30)
    obs, _ = envs.reset(seed=0)
    for step in range(40):
        next_obs, _, term, trunc, infos = envs.step(envs.action_space.sample())
        real = real_next_obs(next_obs, infos, term, trunc)
        if trunc.any():
            assert not term.any() and step < 31
            for i in np.flatnonzero(trunc):
                np.testing.assert_array_equal(real[i], infos["final_obs"][i])
                np.testing.assert_array_equal(real[i, :3], obs[i, 1:])  # the final stack continues the episode
                assert (next_obs[i] == next_obs[i, :1]).all() and not np.array_equal(real[i], next_obs[i])
            break
        assert real is next_obs
        obs = next_obs
    else:
        pytest.fail("the 30-step limit must truncate")
    envs.close()


def test_real_next_obs_needs_same_step_autoreset():
    obs = np.zeros((2, 4, 84, 84), np.uint8)
    with pytest.raises(ValueError, match="env 1 ended but infos has no final_obs"):
        real_next_obs(obs, {}, np.array([False, True]), np.array([False, False]))
    with pytest.raises(ValueError, match="shape"):
        real_next_obs(obs, {}, np.array([False]), np.array([False]))


def test_seeding_is_reproducible_and_env_i_gets_seed_plus_i():
    actions = np.random.default_rng(0).integers(0, 4, size=(60, 2))

    def run(seed, num_envs, columns):
        envs = make_atari_env("ALE/Breakout-v5", num_envs, seed=seed, preset="fire-paper")
        obs, _ = envs.reset(seed=seed)
        frames = [obs]
        for a in actions[:, columns]:
            frames.append(envs.step(a)[0])
        sampled = [envs.action_space.sample() for _ in range(5)] + [envs.single_action_space.sample()]
        envs.close()
        return np.stack(frames), sampled

    (a, sampled_a), (b, sampled_b) = run(5, 2, [0, 1]), run(5, 2, [0, 1])
    np.testing.assert_array_equal(a, b)
    assert all(np.array_equal(x, y) for x, y in zip(sampled_a, sampled_b, strict=True))
    # Sticky actions draw from the game's seed, so env 1 of seed 5 replays env 0 of seed 6, and env 0 differs.
    c, _ = run(6, 1, [1])
    np.testing.assert_array_equal(a[:, 1], c[:, 0])
    assert not np.array_equal(a[:, 0], a[:, 1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"env_id": "ALE/Breakot-v5"}, r"unknown env_id 'ALE/Breakot-v5'.*ALE/Breakout-v5"),
        ({"env_id": "Breakout"}, r"unknown env_id 'Breakout'.*look like"),
        ({"env_id": "CartPole-v1"}, r"'CartPole-v1' is not an Atari game"),
        ({"env_id": "Breakout-v4"}, r"'Breakout-v4' is an Atari id whose frame skip"),
        ({"num_envs": 0}, "num_envs must be an integer >= 1, got 0"),
        ({"preset": "dopamine"}, r"unknown preset 'dopamine'; allowed: \['cleanrl', 'fire-paper'\]"),
        ({"sticky_actions": "step"}, r"unknown sticky_actions 'step'; allowed: \['agent-step', 'frame'\]"),
        ({"max_episode_steps": 0}, "max_episode_steps must be an integer >= 1, got 0"),
        ({"capture_video": True}, "capture_video=True needs run_dir"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"env_id": "ALE/Breakout-v5", "num_envs": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_atari_env(**args)


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is not None, reason="moviepy is installed")
def test_capture_video_without_moviepy_fails_clearly(tmp_path):
    with pytest.raises(gym.error.DependencyNotInstalled, match="pip install moviepy"):
        make_atari_env("ALE/Breakout-v5", 1, seed=0, capture_video=True, run_dir=str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None, reason="needs moviepy")
def test_capture_video_writes_env_0(tmp_path):
    envs = make_atari_env("ALE/Breakout-v5", 2, seed=0, capture_video=True, run_dir=str(tmp_path), max_episode_steps=20)
    envs.reset(seed=0)
    for _ in range(25):
        envs.step(envs.action_space.sample())
    envs.close()
    assert list((tmp_path / "videos").glob("*.mp4"))
