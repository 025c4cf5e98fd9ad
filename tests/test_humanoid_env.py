"""fire_rl.envs.humanoid on real envs: gymnasium Humanoid-v5, dm_control humanoid-run, HumanoidBench if installed."""

import importlib.util
import sys

import gymnasium as gym
import numpy as np
import pytest

from fire_rl.envs.humanoid import HUMANOID_BENCH_INSTALL, is_humanoid_bench_id, make_humanoid_env

HAS_HUMANOID_BENCH = importlib.util.find_spec("humanoid_bench") is not None


@pytest.fixture(scope="module")
def dmc_run():
    env = make_humanoid_env("dm_control/humanoid-run-v0", seed=0, action_repeat=2)
    yield env
    env.close()


def _assert_spaces(env, obs_dim, act_dim):
    assert env.observation_space.shape == (obs_dim,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (act_dim,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (obs_dim,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and obs.shape == (obs_dim,)
    assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
    assert info["env_steps"] in (1, 2)


def test_humanoid_v5_spaces():
    env = make_humanoid_env("Humanoid-v5", seed=0)
    _assert_spaces(env, 348, 17)
    env.close()


def test_dm_control_humanoid_run_spaces(dmc_run):
    _assert_spaces(dmc_run, 67, 21)


def test_dm_control_episode_is_1000_env_steps_500_agent_steps(dmc_run):
    dmc_run.reset(seed=1)
    agent_steps, env_steps, total = 0, 0, 0.0
    while True:
        _, reward, terminated, truncated, info = dmc_run.step(dmc_run.action_space.sample())
        agent_steps, env_steps, total = agent_steps + 1, env_steps + info["env_steps"], total + reward
        if terminated or truncated:
            break
    assert (agent_steps, env_steps, truncated, terminated) == (500, 1000, True, False)
    assert info["episode"]["l"] == 1000  # RecordEpisodeStatistics counts env steps of the task
    assert info["episode"]["r"] == pytest.approx(total, rel=1e-6)


def test_action_repeat_sums_rewards_and_rescales_actions():
    """Repeat 2 against repeat 1 on the same seed; raw Humanoid-v5 actions in [-0.4, 0.4] mapped from [-1, 1]."""
    twice = make_humanoid_env("Humanoid-v5", seed=0, action_repeat=2)
    once = make_humanoid_env("Humanoid-v5", seed=0, action_repeat=1)
    raw = gym.make("Humanoid-v5")
    obs2, _ = twice.reset(seed=3)
    obs1, _ = once.reset(seed=3)
    obs_raw, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(obs2, obs1)
    np.testing.assert_array_equal(obs1, obs_raw.astype(np.float32))
    low, high = raw.action_space.low, raw.action_space.high
    rng = np.random.default_rng(0)
    for step in range(30):
        action = rng.uniform(-1, 1, size=17).astype(np.float32)
        obs2, r2, term2, trunc2, info2 = twice.step(action)
        rewards, steps = [], 0
        for _ in range(2):
            obs1, r1, term1, trunc1, info1 = once.step(action)
            raw_action = low + (action.astype(np.float64) + 1.0) * 0.5 * (high - low)
            obs_raw, r_raw, *_ = raw.step(raw_action)
            np.testing.assert_allclose(obs1, obs_raw, rtol=1e-5, atol=1e-5)
            assert r1 == pytest.approx(r_raw, rel=1e-6, abs=1e-6)
            rewards.append(r1)
            steps += info1["env_steps"]
            if term1 or trunc1:
                break
        np.testing.assert_array_equal(obs2, obs1)
        assert r2 == pytest.approx(sum(rewards), rel=1e-12)
        assert info2["env_steps"] == steps and (term2, trunc2) == (term1, trunc1)
        if term2 or trunc2:
            assert info2["episode"]["l"] == info1["episode"]["l"] == 2 * step + steps
            break
    for env in (twice, once, raw):
        env.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "needles"),
    [
        ({"env_id": "CartPole-v1"}, ValueError, ["CartPole-v1", "Discrete", "Box"]),
        ({"env_id": "Humanoid-v9"}, ValueError, ["Humanoid-v9", "Humanoid-v5"]),
        ({"env_id": "dm_control/humanoid-rnu-v0"}, ValueError, ["humanoid-rnu", "dm_control/humanoid-run-v0"]),
        ({"env_id": "h1-wlak-v0"}, ValueError, ["h1-wlak-v0", "h1-walk-v0"]),
        ({"env_id": "Humanoid-v5", "action_repeat": 0}, ValueError, ["action_repeat", "0"]),
        ({"env_id": "Humanoid-v5", "action_repeat": 1.5}, ValueError, ["action_repeat", "1.5"]),
        ({"env_id": "Humanoid-v5", "capture_video": True}, ValueError, ["run_dir"]),
    ],
)
def test_bad_input_raises(kwargs, error, needles):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(error) as info:
        make_humanoid_env(**kwargs)
    for needle in needles:
        assert needle in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is not None, reason="moviepy is installed")
def test_capture_video_without_moviepy_raises_before_work(tmp_path):
    with pytest.raises(ImportError, match="moviepy"):
        make_humanoid_env("Humanoid-v5", seed=0, capture_video=True, run_dir=tmp_path)
    assert not (tmp_path / "videos").exists()


def test_humanoid_bench_ids():
    assert is_humanoid_bench_id("h1-walk-v0") and is_humanoid_bench_id("h1hand-balance_simple-v0")
    assert not is_humanoid_bench_id("Humanoid-v5") and not is_humanoid_bench_id("dm_control/humanoid-run-v0")


def test_humanoid_bench_missing_says_how_to_install(monkeypatch):
    if HAS_HUMANOID_BENCH:  # hide the installed package for this test
        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "humanoid_bench" else real_find_spec(name, *a)
        )
        monkeypatch.delitem(sys.modules, "humanoid_bench", raising=False)
    with pytest.raises(ImportError) as info:
        make_humanoid_env("h1-walk-v0", seed=0)
    message = str(info.value)
    assert "https://github.com/carlosferrazza/humanoid-bench" in message
    assert "pip install --no-deps -e" in message
    assert HUMANOID_BENCH_INSTALL in message


NO_HUMANOID_BENCH = "humanoid_bench is not installed (install: see fire_rl.envs.humanoid.HUMANOID_BENCH_INSTALL)"


@pytest.mark.skipif(not HAS_HUMANOID_BENCH, reason=NO_HUMANOID_BENCH)
@pytest.mark.parametrize(("env_id", "obs_dim", "act_dim"), [("h1-walk-v0", 51, 19), ("h1hand-walk-v0", 151, 61)])
def test_humanoid_bench_dims(env_id, obs_dim, act_dim):
    env = make_humanoid_env(env_id, seed=0)
    _assert_spaces(env, obs_dim, act_dim)
    env.close()


@pytest.mark.skipif(not HAS_HUMANOID_BENCH, reason=NO_HUMANOID_BENCH)
def test_humanoid_bench_adapter():
    jax_installed = importlib.util.find_spec("jax") is not None
    env = make_humanoid_env("h1-walk-v0", seed=0)
    if not jax_installed:
        assert "jax" not in sys.modules  # the stand-in never outlives the import
    _assert_spaces(env, 51, 19)
    assert env.spec.max_episode_steps == 1000
    assert type(env.unwrapped.task).__name__ == "Walk"
    env.reset(seed=1)
    env_steps, episodes = 0, 0
    for _ in range(200):
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        env_steps += info["env_steps"]
        if terminated or truncated:
            assert info["episode"]["l"] == env_steps
            env.reset()
            env_steps, episodes = 0, episodes + 1
    assert episodes >= 1  # a random H1 falls within 200 agent steps: the termination path is exercised
    env.close()

    reach = make_humanoid_env("h1-reach-v0", seed=0)  # a task that never terminates: time limit in env steps
    reach.reset(seed=0)
    agent_steps = 0
    while True:
        _, _, terminated, truncated, info = reach.step(reach.action_space.sample())
        agent_steps += 1
        if terminated or truncated:
            break
    assert (agent_steps, info["episode"]["l"], truncated, terminated) == (500, 1000, True, False)
    reach.close()
