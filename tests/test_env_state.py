"""Env-state checkpoints (fire_rl.envs.env_state): capture, torch.save round trip, restore into a fresh env built by
the same factory call, and the same outputs step for step as the env that went on, across episode ends; envs without
a protocol give an inexact state, one warning and set_env_state() == False."""

import importlib.util
import io
import subprocess
import sys
import threading
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from fire_rl.envs import env_state
from fire_rl.envs.atari import episode_stats, make_atari_env
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.envs.humanoid import make_humanoid_env

HAS_HUMANOID_BENCH = importlib.util.find_spec("humanoid_bench") is not None
NO_HUMANOID_BENCH = "humanoid_bench is not installed (see fire_rl.envs.humanoid.HUMANOID_BENCH_INSTALL)"

ATARI_ID = "ALE/Breakout-v5"  # FIRE game with 5 lives: life-loss, fire-reset and no-op wrappers all active in "cleanrl"
NOOP, FIRE, RIGHT, LEFT = 0, 1, 2, 3


def _round_trip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _without_wall_time(info):
    """`info` with RecordEpisodeStatistics' wall-clock "t" (and its mask) removed, recursively."""
    if isinstance(info, dict):
        return {k: _without_wall_time(v) for k, v in info.items() if k not in ("t", "_t")}
    if isinstance(info, (list, tuple)):
        return [_without_wall_time(v) for v in info]
    return np.array(info, copy=True) if isinstance(info, np.ndarray) else info


def _assert_same(expected, got, path="record"):
    """Bit-identical nested records: same structure, same keys, arrays equal in value, dtype and shape."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and expected.keys() == got.keys(), f"{path}: keys {expected.keys()} vs {got}"
        for k in expected:
            _assert_same(expected[k], got[k], f"{path}[{k!r}]")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(expected) == len(got), f"{path}: lengths differ"
        for i, (e, g) in enumerate(zip(expected, got)):
            _assert_same(e, g, f"{path}[{i}]")
    elif isinstance(expected, np.ndarray) and expected.dtype == object:  # e.g. infos["final_obs"]: arrays or None
        assert isinstance(got, np.ndarray) and got.dtype == object and got.shape == expected.shape, f"{path}: {got!r}"
        for i, (e, g) in enumerate(zip(expected.flat, got.flat)):
            _assert_same(e, g, f"{path}[{i}]")
    elif isinstance(expected, np.ndarray) or isinstance(got, np.ndarray):
        e, g = np.asarray(expected), np.asarray(got)
        assert e.dtype == g.dtype and e.shape == g.shape, f"{path}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}"
        assert np.array_equal(e, g, equal_nan=e.dtype.kind == "f"), f"{path}: values differ"
    else:
        assert type(expected) is type(got) and expected == got, f"{path}: {expected!r} vs {got!r}"


# --------------------------------------------------------------------------------------------------------------------
# Atari (ALE), through make_atari_env's SyncVectorEnv
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees env_state's warn-once memory empty."""
    monkeypatch.setattr(env_state, "_warned", set())


def _atari(preset: str, num_envs: int = 2, sticky_actions: str = "agent-step"):
    # A 60-step game cap makes truncations (and their autoresets) frequent in a few hundred steps.
    return make_atari_env(
        ATARI_ID, num_envs, seed=1, preset=preset, max_episode_steps=60, sticky_actions=sticky_actions
    )


def _run_vector(envs, actions, ram: bool = True) -> list:
    """Per vector step: the step's outputs, its infos (final obs and final info included) and each game's RAM."""
    records = []
    for a in actions:
        obs, rewards, terminations, truncations, infos = envs.step(a)
        rams = [e.unwrapped.ale.getRAM().copy() for e in envs.envs] if ram else []
        records.append(
            {
                "obs": obs.copy(),
                "rewards": rewards,
                "terminations": terminations,
                "truncations": truncations,
                "infos": _without_wall_time(infos),
                "episodes": episode_stats(infos),
                "ram": rams,
            }
        )
    return records


@pytest.mark.parametrize(
    ("preset", "sticky_actions"), [("cleanrl", "agent-step"), ("fire-paper", "agent-step"), ("fire-paper", "frame")]
)
def test_atari_resume_is_bit_exact(preset, sticky_actions):
    k_steps, m_steps = 100, 150
    envs = _atari(preset, sticky_actions=sticky_actions)
    actions = np.random.default_rng(0).integers(envs.single_action_space.n, size=(k_steps + m_steps, 2))
    envs.reset(seed=1)
    before = _run_vector(envs, actions[:k_steps])
    state = _round_trip(get_env_state(envs))
    assert state["exact"]
    expected = _run_vector(envs, actions[k_steps:])

    fresh = _atari(preset, sticky_actions=sticky_actions)
    fresh.reset(seed=2)
    _run_vector(fresh, actions[:7])
    assert set_env_state(fresh, state) is True
    _assert_same(expected, _run_vector(fresh, actions[k_steps:]))

    # The same state again: set_env_state left it untouched, and a restored env can be rewound.
    assert set_env_state(fresh, state) is True
    _assert_same(expected, _run_vector(fresh, actions[k_steps:]))

    # The premise: games end on both sides of the checkpoint in every env (autoresets, no-op starts drawn after it).
    for part in (before, expected):
        ended = np.sum([r["terminations"] | r["truncations"] for r in part], axis=0)
        assert np.all(ended >= 1), f"no episode end in some env: {ended}"
        assert any(r["episodes"] for r in part)
    if preset == "cleanrl":
        game_ends = {(t, i) for t, r in enumerate(expected) for i, _, _ in r["episodes"]}
        life_losses = [(t, i) for t, r in enumerate(expected) for i in np.flatnonzero(r["terminations"])]
        assert set(life_losses) - game_ends, "no life loss after the checkpoint"
    fresh.close()
    envs.close()


@pytest.mark.parametrize("sticky_actions", ["agent-step", "frame"])
def test_atari_sticky_repeated_action_is_restored(sticky_actions):
    """The action a sticky wrapper repeats is part of the state: the target's last action (RIGHT) differs from the
    source's (LEFT), so a restore that ignored it would differ in the paddle's RAM after the first NOOP steps."""
    source, target = _atari("fire-paper", 1, sticky_actions), _atari("fire-paper", 1, sticky_actions)
    source.reset(seed=3)
    target.reset(seed=4)
    for _ in range(12):
        _run_vector(source, [[FIRE], [NOOP], [LEFT]])
        state = get_env_state(source)
        expected = _run_vector(source, [[NOOP], [NOOP], [NOOP]])
        _run_vector(target, [[RIGHT]])
        assert set_env_state(target, state)
        _assert_same(expected, _run_vector(target, [[NOOP], [NOOP], [NOOP]]))
    source.close()
    target.close()


# --------------------------------------------------------------------------------------------------------------------
# MuJoCo, dm_control and HumanoidBench, through make_humanoid_env (action repeat 2)
# --------------------------------------------------------------------------------------------------------------------


def _run_single(env, actions) -> list:
    """Per agent step: outputs and info; an episode end is followed by env.reset() (no seed) and its outputs."""
    records = []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        records.append({"obs": obs, "reward": reward, "terminated": terminated, "truncated": truncated})
        records[-1]["info"] = _without_wall_time(info)
        if terminated or truncated:
            obs, info = env.reset()
            records.append({"reset_obs": obs, "reset_info": _without_wall_time(info)})
    return records


_HB = pytest.mark.skipif(not HAS_HUMANOID_BENCH, reason=NO_HUMANOID_BENCH)


@pytest.mark.parametrize(
    ("env_id", "k_steps", "m_steps", "reset_fresh"),
    [
        ("Humanoid-v5", 40, 60, True),  # falls within ~20 agent steps: terminations and noisy resets on both sides
        ("dm_control/cartpole-swingup-v0", 480, 60, False),  # 1000-step limit = 500 agent steps: truncation after
        ("dm_control/humanoid-run-v0", 30, 30, True),  # contacts: constraint rows must be rebuilt on restore
        pytest.param("h1-walk-v0", 60, 60, True, marks=_HB),  # a random H1 falls: terminations on both sides
        pytest.param("h1hand-walk-v0", 40, 40, True, marks=_HB),
    ],
)
def test_continuous_control_resume_is_bit_exact(env_id, k_steps, m_steps, reset_fresh):
    env = make_humanoid_env(env_id, seed=3, action_repeat=2)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(k_steps + m_steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=5)
    before = _run_single(env, actions[:k_steps])
    state = _round_trip(get_env_state(env))
    assert state["exact"]
    expected = _run_single(env, actions[k_steps:])
    expected_samples = env.action_space.sample()

    fresh = make_humanoid_env(env_id, seed=3, action_repeat=2)
    if reset_fresh:
        fresh.reset(seed=123)
        _run_single(fresh, actions[:9])
    assert set_env_state(fresh, state) is True
    got = _run_single(fresh, actions[k_steps:])
    _assert_same(expected, got)
    # The action space's RNG came back too (agents draw warm-up actions from it).
    _assert_same(expected_samples, fresh.action_space.sample())

    resets_before = sum("reset_obs" in r for r in before)
    resets_after = sum("reset_obs" in r for r in expected)
    if env_id in ("Humanoid-v5", "h1-walk-v0"):
        assert resets_before >= 1 and resets_after >= 1, (resets_before, resets_after)
        assert any("episode" in r["info"] for r in expected if "info" in r)
    if env_id == "dm_control/cartpole-swingup-v0":
        assert resets_after == 1 and any(r.get("truncated") for r in expected), "no truncation"
    env.close()
    fresh.close()


@_HB
@pytest.mark.parametrize("task", ["maze", "reach"])
def test_humanoid_bench_task_fields_are_restored(task):
    """Maze's stage and direction, Reach's goal: task fields that change during an episode come back."""
    env = make_humanoid_env(f"h1-{task}-v0", seed=0, action_repeat=1)
    env.reset(seed=0)
    base = env.unwrapped
    if task == "maze":
        base.task.maze_stage, base.task.move_direction = 2, np.array([0, 1, 0])
    state = _round_trip(get_env_state(env))
    fresh = make_humanoid_env(f"h1-{task}-v0", seed=0, action_repeat=1)
    fresh.reset(seed=1)
    assert set_env_state(fresh, state)
    for name in env_state.HUMANOID_BENCH_TASK_FIELDS[type(base.task).__name__]:
        _assert_same(getattr(base.task, name), getattr(fresh.unwrapped.task, name))
    action = np.zeros(env.action_space.shape, np.float32)
    _assert_same(_run_single(env, [action] * 5), _run_single(fresh, [action] * 5))


_CHILD = """
import pickle, sys, numpy as np, torch
from fire_rl.envs.env_state import get_env_state, set_env_state
from fire_rl.envs.humanoid import make_humanoid_env
env_id, path, resume, n = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
env = make_humanoid_env(env_id, seed=3, action_repeat=2)
actions = np.random.default_rng(0).uniform(-1, 1, size=(2 * n, *env.action_space.shape)).astype(np.float32)
if resume:
    assert set_env_state(env, torch.load(path, weights_only=False))
    obs = [env.step(a)[0] for a in actions[n:]]
    pickle.dump(obs, open(path + ".obs", "wb"))
else:
    env.reset(seed=5)
    [env.step(a) for a in actions[:n]]
    torch.save(get_env_state(env), path)
"""


@pytest.mark.parametrize("env_id", ["Humanoid-v5", pytest.param("h1-walk-v0", marks=_HB)])
def test_resume_in_a_new_process(tmp_path, env_id):
    """N steps, checkpoint, new process, N more == 2N straight (episode ends are inside the 2N, autoreset-free)."""
    import pickle

    n, path = 15, str(tmp_path / "env.pt")
    for resume in ("0", "1"):
        subprocess.run([sys.executable, "-c", _CHILD, env_id, path, resume, str(n)], check=True)
    env = make_humanoid_env(env_id, seed=3, action_repeat=2)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(2 * n, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=5)
    straight = [env.step(a)[0] for a in actions]
    with open(path + ".obs", "rb") as f:
        _assert_same(straight[n:], pickle.load(f))


# --------------------------------------------------------------------------------------------------------------------
# SyncVectorEnv and its vector wrappers, both autoreset modes
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [gym.vector.AutoresetMode.SAME_STEP, gym.vector.AutoresetMode.NEXT_STEP])
def test_sync_vector_env_resumes_exactly(mode):
    def make():
        fns = [lambda: gym.make("InvertedPendulum-v5") for _ in range(2)]
        return gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv(fns, autoreset_mode=mode))

    envs = make()
    actions = np.random.default_rng(1).uniform(-3, 3, size=(120, 2, 1))
    envs.reset(seed=11)
    before = _run_vector(envs, actions[:60], ram=False)
    state = _round_trip(get_env_state(envs))
    expected = _run_vector(envs, actions[60:], ram=False)
    expected_samples = envs.action_space.sample()

    fresh = make()  # never reset: set_env_state also brings the reset flags
    assert set_env_state(fresh, state)
    _assert_same(expected, _run_vector(fresh, actions[60:], ram=False))
    _assert_same(expected_samples, fresh.action_space.sample())
    for part in (before, expected):
        assert np.all(np.sum([r["terminations"] | r["truncations"] for r in part], axis=0) >= 1)


# --------------------------------------------------------------------------------------------------------------------
# The private fields env_state reads exist in the installed gymnasium (and ale-py, shimmy, dm_control)
# --------------------------------------------------------------------------------------------------------------------


def test_fields_env_state_reads_exist_on_real_envs(tmp_path):
    """Every object of real envs of every kind env_state saves has a protocol, and every attribute it declares to read
    (WRAPPER_FIELDS, _BASE_ENVS, SPACE_FIELDS) exists on it: an upgrade that renames one fails here, naming it."""
    envs = [
        _atari("cleanrl"),  # AtariEnv, AtariPreprocessing, FrameStackObservation, SyncVectorEnv, ...
        _atari("fire-paper", 1, sticky_actions="frame"),  # StickyAction
        make_humanoid_env("Hopper-v5", seed=0),  # MujocoEnv, TimeLimit, RescaleAction, TransformAction, ...
        make_humanoid_env("dm_control/cartpole-swingup-v0", seed=0),  # shimmy and dm_control, FlattenObservation
        gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv([lambda: gym.make("Hopper-v5")])),
    ]
    if HAS_MOVIEPY := importlib.util.find_spec("moviepy") is not None:
        envs.append(gym.wrappers.RecordVideo(gym.make("CartPole-v1", render_mode="rgb_array"), str(tmp_path)))
    objects = []
    for env in envs:
        env.reset(seed=0)
        env.step(env.action_space.sample())
        objects += [obj for chain in env_state._chains(env) for obj in chain]
    for obj in objects:
        name, version = env_state._type_name(obj), f"gymnasium {gym.__version__}"
        assert (protocol := env_state._protocol(obj)) is not None, f"{version}: env_state has no protocol for {name}"
        missing = env_state._missing_fields(obj, protocol[2])
        assert not missing, f"{version}: {name} lacks {missing}, which env_state reads"
    unseen = [t for t, fields in env_state.WRAPPER_FIELDS.items() if fields and t not in set(map(type, objects))]
    assert unseen == ([] if HAS_MOVIEPY else [gym.wrappers.RecordVideo]), unseen
    for module, name, *_ in env_state._BASE_ENVS:
        assert any(isinstance(obj, getattr(sys.modules[module], name)) for obj in objects), name
    for env in envs:
        env.close()


def test_a_missing_field_gives_an_inexact_state_naming_it():
    env = gym.make("Hopper-v5")
    env.reset(seed=0)
    del env.env._has_reset  # TimeLimit(OrderEnforcing(...)): OrderEnforcing's
    with pytest.warns(UserWarning, match=rf"lacks \['_has_reset'\].*installed: {gym.__version__}"):
        assert get_env_state(env)["exact"] is False
    env.close()


# --------------------------------------------------------------------------------------------------------------------
# Envs without a protocol: inexact state, one warning, set_env_state() False; structure mismatches raise
# --------------------------------------------------------------------------------------------------------------------


class _LockedEnv(gym.Env):
    """A custom env holding an unpicklable object; env_state has no protocol for it."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self):
        self.lock = threading.Lock()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_env_without_protocol_gives_an_inexact_checkpointable_state():
    env = gym.wrappers.TimeLimit(_LockedEnv(), max_episode_steps=10)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match=r"_LockedEnv.*no state protocol.*restarted") as record:
        state = get_env_state(env)
        get_env_state(env)  # warned once only
    assert len(record) == 1
    assert state["exact"] is False and state["env"].endswith("TimeLimit") and "_LockedEnv" in state["reason"]
    state = _round_trip(state)  # checkpointable: the lock is not in it
    fresh = gym.wrappers.TimeLimit(_LockedEnv(), max_episode_steps=10)
    with pytest.warns(UserWarning, match=r"inexact.*must be reset.*lost") as record:
        assert set_env_state(fresh, state) is False
        assert set_env_state(fresh, state) is False
    assert len(record) == 1


def test_ale_with_its_own_sticky_actions_is_inexact():
    env = gym.make(ATARI_ID)  # repeat_action_probability 0.25 inside ALE: the repeated action is hidden
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="repeats actions with probability 0.25"):
        state = get_env_state(env)
    assert not state["exact"]
    with pytest.warns(UserWarning, match="inexact"):
        assert set_env_state(env, state) is False
    env.close()


def test_async_vector_env_is_inexact():
    envs = gym.vector.AsyncVectorEnv([lambda: gym.make("CartPole-v1")])
    try:
        with pytest.warns(UserWarning, match="AsyncVectorEnv"):
            state = get_env_state(envs)
        assert not state["exact"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert set_env_state(envs, state) is False
    finally:
        envs.close()


def test_state_that_does_not_fit_is_refused():
    cleanrl, paper = _atari("cleanrl", 1), _atari("fire-paper", 1)
    cleanrl.reset(seed=0)
    paper.reset(seed=0)
    state = get_env_state(cleanrl)
    with pytest.raises(ValueError, match="another env or wrapper stack"):
        set_env_state(paper, state)  # no life-loss and fire-reset wrappers in "fire-paper"
    two = _atari("cleanrl", 2)
    with pytest.raises(ValueError, match="another env or wrapper stack"):
        set_env_state(two, state)
    single = gym.make("Humanoid-v5")
    with pytest.raises(ValueError, match="another env or wrapper stack"):
        set_env_state(single, state)
    with pytest.raises(ValueError, match="format"):
        set_env_state(single, {"envs": []})
    with pytest.raises(ValueError, match="version"):
        set_env_state(single, {**get_env_state(single), "version": 0})
    with pytest.raises(ValueError, match="env must be"):
        get_env_state("CartPole-v1")
    for envs in (cleanrl, paper, two, single):
        envs.close()
