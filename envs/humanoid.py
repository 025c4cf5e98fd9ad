"""Continuous-control environments for SAC + SimBa: HumanoidBench, with gymnasium MuJoCo and dm_control stand-ins.

`make_humanoid_env` builds one environment with the wrapper stack written out in order:

    base env (HumanoidBench / gymnasium MuJoCo / dm_control through shimmy), TimeLimit in env steps
    → FlattenObservation (only if the observation is not a 1-D Box, e.g. dm_control's dict)
    → RescaleAction(−1, 1)
    → Float32Spaces             (float32 observations and action space; actions cast back to the inner dtype)
    → [RecordVideo]
    → RecordEpisodeStatistics   (episodic return and length in env steps of the underlying task)
    → ActionRepeat(k)           (one agent step = k env steps, rewards summed)

Units: an *env step* is one step of the underlying task (HumanoidBench: 50 Hz); an *agent step* is one
call of the returned env's `step`, i.e. up to `action_repeat` env steps. The episode time limit (1000 for Humanoid-v5,
dm_control and HumanoidBench locomotion) counts env steps, so with action_repeat 2 an episode lasts 500 agent steps.
Each agent step's info carries ``"env_steps"``, the env steps it took (fewer than action_repeat at an episode end).

Ids:
- gymnasium MuJoCo: ``Humanoid-v5`` (the default stand-in), ``Hopper-v5``, ``HalfCheetah-v5``, ... (needs
  ``gymnasium[mujoco]``).
- dm_control through shimmy: ``dm_control/humanoid-run-v0``, ``dm_control/cartpole-swingup-v0``, ...
- HumanoidBench: ``{robot}-{task}-v0`` (``h1-walk-v0``, ``h1hand-walk-v0``, ...), when ``humanoid_bench`` is installed
  (from its git repository, see `HUMANOID_BENCH_INSTALL`). The adapter runs it under gymnasium 1.x and mujoco 3.17
  (upstream pins gymnasium 0.29.1 and mujoco 3.1.6): it supplies a stand-in for its unused top-level ``import jax``,
  drops the fields the current mujoco no longer has from its vendored dm_control field-size table, builds it with
  ``render_mode=None`` unless a video is wanted, and renders through the gymnasium 1.x
  ``MujocoRenderer.render(render_mode)`` signature. Its task object is ``env.unwrapped.task`` (gymnasium 1.x forwards
  no attributes through wrappers).

Rendering headless (``capture_video=True``) needs ``MUJOCO_GL=egl`` or ``osmesa`` in the environment.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

__all__ = [
    "HUMANOID_BENCH_INSTALL",
    "HUMANOID_BENCH_ROBOTS",
    "HUMANOID_BENCH_TASKS",
    "ActionRepeat",
    "Float32Spaces",
    "is_humanoid_bench_id",
    "make_humanoid_env",
]

# Robots and tasks that humanoid_bench registers (humanoid_bench/env.py: ROBOTS, TASKS, at commit 791405f), kept here
# so that ids can be validated without the package.
HUMANOID_BENCH_ROBOTS = ("h1", "h1hand", "h1simplehand", "h1strong", "h1touch", "g1")
HUMANOID_BENCH_TASKS = (
    # locomotion
    "walk", "stand", "run", "reach", "hurdle", "crawl", "maze", "sit_simple", "sit_hard", "balance_simple",
    "balance_hard", "stair", "slide", "pole",
    # whole-body manipulation
    "push", "cabinet", "highbar_simple", "highbar_hard", "door", "truck", "cube", "bookshelf_simple", "bookshelf_hard",
    "basketball", "window", "spoon", "kitchen", "package", "powerlift", "room", "insert_small", "insert_normal",
)  # fmt: skip
_HB_ID = re.compile(r"^(?P<robot>[a-z0-9]+)-(?P<task>[a-z_]+)-v0$")

HUMANOID_BENCH_INSTALL = (
    "HumanoidBench is not on the package index; install it from its git repository, editable and without its pinned "
    "dependencies (it pins gymnasium 0.29.1, mujoco 3.1.6, dm_control 1.0.20 and torch 2.3.1, which would break "
    "ale-py and this environment):\n"
    "    git clone https://github.com/carlosferrazza/humanoid-bench\n"
    "    pip install --no-deps -e ./humanoid-bench\n"
    "A non-editable install (pip install --no-deps git+https://github.com/carlosferrazza/humanoid-bench) is NOT "
    "enough: its setup.py ships neither the envs/ and dmc_deps/ subpackages (no __init__.py) nor the XML assets. "
    "Everything else it needs comes with fire_rl: gymnasium[mujoco] (imageio, packaging), mujoco>=3.1,<4, dm_control, "
    "torch. jax is optional: fire_rl supplies a stand-in for humanoid_bench's unused top-level `import jax` (install "
    "'jax[cpu]' only for its mjx/flax tools). Uninstall with `pip uninstall humanoid-bench`."
)


# --------------------------------------------------------------------------------------------------------------------
# Wrappers
# --------------------------------------------------------------------------------------------------------------------


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times, summing the rewards; stop early at termination or truncation.

    One call of `step` is one *agent step* of up to `repeat` env steps. Returns the last observation, the summed
    reward (float), the last terminated/truncated flags, and the last inner step's info plus ``"env_steps"`` (int, the
    env steps taken). RecordEpisodeStatistics belongs below this wrapper, so that its episode length and return are in
    env steps; its ``"episode"`` entry arrives in the info of the episode's last agent step. Source: SimBa's
    ``RepeatAction`` (github.com/SonyResearch/simba @ 4e83770, scale_rl/envs/wrappers/repeat_action.py); gymnasium
    ≥ 1.3 has the same as ``RepeatAction`` without the step count.

    Raises:
        ValueError: `repeat` not an int ≥ 1.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
        if isinstance(repeat, bool) or not isinstance(repeat, (int, np.integer)) or repeat < 1:
            raise ValueError(f"action_repeat must be an int >= 1, got {repeat!r}")
        super().__init__(env)
        self.repeat = int(repeat)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        total_reward, env_steps = 0.0, 0
        while env_steps < self.repeat:
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += float(reward)
            env_steps += 1
            if terminated or truncated:
                break
        info = dict(info)
        info["env_steps"] = env_steps
        return obs, total_reward, bool(terminated), bool(truncated), info

    def state_dict(self) -> dict[str, Any]:
        """Empty: the repeat count is the factory's, and nothing carries over between agent steps."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Float32Spaces(gym.Wrapper):
    """Present a 1-D Box observation space and a Box action space, both float32, whatever the inner dtypes.

    Observations are cast to float32 (HumanoidBench, MuJoCo and dm_control return float64); actions are cast back to
    the inner action dtype before stepping. Bounds keep their values (infinite bounds stay infinite).

    Raises:
        ValueError: an inner observation or action space that is not a Box.
    """

    def __init__(self, env: gym.Env) -> None:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box) or not isinstance(act_space, gym.spaces.Box):
            raise ValueError(f"Float32Spaces needs Box spaces, got observation {obs_space} and action {act_space}")
        super().__init__(env)
        self._inner_action_dtype = act_space.dtype
        self.observation_space = _float32_box(obs_space)
        self.action_space = _float32_box(act_space)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return np.asarray(obs, dtype=np.float32), info

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, dtype=self._inner_action_dtype))
        return np.asarray(obs, dtype=np.float32), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        """Empty: the spaces are the factory's (their RNGs are saved with every layer's spaces)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def _float32_box(space: gym.spaces.Box) -> gym.spaces.Box:
    return gym.spaces.Box(
        low=space.low.astype(np.float32), high=space.high.astype(np.float32), shape=space.shape, dtype=np.float32
    )


class _HumanoidBenchRender(gym.Wrapper):
    """Render HumanoidBench under gymnasium 1.x.

    Its ``Task.render`` calls the gymnasium 0.29 ``MujocoRenderer.render(mode, camera_id, camera_name)``; gymnasium 1.x
    takes the render mode only (the camera is fixed when the renderer is built). Holds no state.
    """

    def render(self) -> Any:
        base = self.env.unwrapped
        return base.mujoco_renderer.render(base.render_mode)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# --------------------------------------------------------------------------------------------------------------------
# HumanoidBench adapter
# --------------------------------------------------------------------------------------------------------------------


def is_humanoid_bench_id(env_id: str) -> bool:
    """True for ids of the form ``{robot}-{task}-v0`` with a HumanoidBench robot (`HUMANOID_BENCH_ROBOTS`)."""
    match = _HB_ID.match(env_id)
    return match is not None and match["robot"] in HUMANOID_BENCH_ROBOTS


def _humanoid_bench_ids() -> list[str]:
    return [f"{robot}-{task}-v0" for robot in HUMANOID_BENCH_ROBOTS for task in HUMANOID_BENCH_TASKS]


class _JaxStandIn(types.ModuleType):
    """Placeholder for jax while humanoid_bench is imported; any use raises ImportError."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(
            f"jax is not installed (humanoid_bench touched jax.{name}); fire_rl only supplied a stand-in for "
            "humanoid_bench's unused top-level import. Install 'jax[cpu]' to use humanoid_bench's mjx/flax tools."
        )


def _import_humanoid_bench() -> types.ModuleType:
    """Import humanoid_bench (registering its ids with gymnasium) and adapt it to the installed stack.

    Raises:
        ImportError: humanoid_bench or a dependency is missing; the message says how to install it.
    """
    if "humanoid_bench" not in sys.modules:
        if importlib.util.find_spec("humanoid_bench") is None:
            raise ImportError(f"humanoid_bench is not installed. {HUMANOID_BENCH_INSTALL}")
        for dep in ("imageio", "packaging"):  # gymnasium.envs.mujoco needs them (the gymnasium[mujoco] extra)
            if importlib.util.find_spec(dep) is None:
                raise ImportError(f"HumanoidBench needs {dep!r}: pip install 'gymnasium[mujoco]'")
        # humanoid_bench/mjx/flax_to_torch.py runs `import jax.numpy` at import time although the envs never call
        # jax; the stand-in lives only for the import, so nothing else mistakes it for jax.
        stand_in = None
        if importlib.util.find_spec("jax") is None:
            stand_in = _JaxStandIn("jax")
            stand_in.numpy = _JaxStandIn("jax.numpy")
            sys.modules["jax"], sys.modules["jax.numpy"] = stand_in, stand_in.numpy
        try:
            importlib.import_module("humanoid_bench")
        except ImportError as err:
            raise ImportError(f"importing humanoid_bench failed: {err}. {HUMANOID_BENCH_INSTALL}") from err
        finally:
            if stand_in is not None:
                for name, module in (("jax", stand_in), ("jax.numpy", stand_in.numpy)):
                    if sys.modules.get(name) is module:
                        del sys.modules[name]
    _drop_missing_mujoco_fields()
    return sys.modules["humanoid_bench"]


def _drop_missing_mujoco_fields() -> None:
    """Remove the fields the installed mujoco lacks from humanoid_bench's vendored field-size table.

    The table (humanoid_bench/dmc_deps/dmc_sizes.py) was generated for mujoco 3.1.6; its named-indexing set-up calls
    getattr on every listed field and fails on newer mujoco (``'MjModel' object has no attribute 'flex_evpair'``).
    The envs read only fields that still exist (xpos, site_xpos, geom_xpos, qpos, sensordata, ...).
    Idempotent; edits the imported module's dict in place.
    """
    import mujoco

    sizes = importlib.import_module("humanoid_bench.dmc_deps.dmc_sizes")
    for struct_name, cls in (("mjmodel", mujoco.MjModel), ("mjdata", mujoco.MjData)):
        table = sizes.array_sizes.get(struct_name, {})
        for field in [f for f in table if not hasattr(cls, f)]:
            del table[field]


# --------------------------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------------------------


def _register_shimmy() -> None:
    """Register the dm_control ids (``dm_control/...``) with gymnasium; importing shimmy does it."""
    try:
        importlib.import_module("shimmy")
    except ImportError:  # dm_control ids then count as unknown, with a hint in the error
        pass


def _unknown_id_error(env_id: str) -> ValueError:
    _register_shimmy()  # so that a mistyped dm_control id finds its neighbours too
    candidates = [k for k in gym.registry if "ALE/" not in k] + _humanoid_bench_ids()
    close = difflib.get_close_matches(env_id, candidates, n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return ValueError(
        f"env_id {env_id!r} is not a known environment{hint} Allowed: gymnasium MuJoCo ids ('Humanoid-v5', "
        "'Hopper-v5', ...), dm_control ids through shimmy ('dm_control/humanoid-run-v0', ...), and HumanoidBench ids "
        "'{robot}-{task}-v0' ('h1-walk-v0', ...)."
    )


def make_humanoid_env(
    env_id: str,
    seed: int,
    action_repeat: int = 2,
    capture_video: bool = False,
    run_dir: str | Path | None = None,
) -> gym.Env:
    """One continuous-control environment for SAC, wrapped as in the module docstring.

    Args:
        env_id: a gymnasium MuJoCo, dm_control (``dm_control/<domain>-<task>-v0``) or HumanoidBench
            (``{robot}-{task}-v0``) id.
        seed: seeds the action and observation spaces; seed the dynamics with the first ``env.reset(seed=seed)``
            (CleanRL's convention).
        action_repeat: env steps per agent step (SimBa: 2), ≥ 1.
        capture_video: record episodes to ``<run_dir>/videos`` (gymnasium's RecordVideo episode schedule); needs
            `run_dir` and a headless GL backend (``MUJOCO_GL=egl``).
        run_dir: the run directory, for videos.

    Returns:
        A `gym.Env` with a 1-D float32 `Box` observation space and a `Box` action space in [−1, 1] (float32).

    Raises:
        ValueError: `action_repeat` not an int ≥ 1, `seed` not an int, `capture_video` without `run_dir`, an unknown
            id (the message lists close matches), or an environment whose action space is not a bounded Box
            (e.g. ``CartPole-v1``) or whose observation space cannot be flattened to a Box.
        ImportError: a HumanoidBench id while ``humanoid_bench`` is not installed (the message says how to install
            it), or a missing dependency of it; `capture_video` without moviepy.
    """
    if isinstance(action_repeat, bool) or not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
        raise ValueError(f"action_repeat must be an int >= 1, got {action_repeat!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if not isinstance(env_id, str):
        raise ValueError(f"env_id must be a str, got {env_id!r}")
    if capture_video and run_dir is None:
        raise ValueError("capture_video=True needs run_dir (videos go to <run_dir>/videos), got run_dir=None")
    if capture_video and importlib.util.find_spec("moviepy") is None:
        raise ImportError("capture_video=True needs moviepy, which gymnasium's RecordVideo uses: pip install moviepy")

    render_mode = "rgb_array" if capture_video else None
    if is_humanoid_bench_id(env_id):
        match = _HB_ID.match(env_id)
        if match["task"] not in HUMANOID_BENCH_TASKS:
            raise _unknown_id_error(env_id)
        _import_humanoid_bench()
        if env_id not in gym.registry:
            raise _unknown_id_error(env_id)
        env = gym.make(env_id, render_mode=render_mode)
        env = _HumanoidBenchRender(env)
    else:
        if env_id.startswith("dm_control/"):
            _register_shimmy()
        if env_id not in gym.registry:
            raise _unknown_id_error(env_id)
        env = gym.make(env_id, render_mode=render_mode)

    action_space, obs_space = env.action_space, env.observation_space
    if not isinstance(action_space, gym.spaces.Box) or not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        env.close()
        raise ValueError(
            f"env_id {env_id!r} has action space {action_space}; allowed: a bounded continuous Box (SAC rescales "
            "actions to [-1, 1])"
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        try:
            env = gym.wrappers.FlattenObservation(env)
        except (NotImplementedError, TypeError, ValueError) as err:
            env.close()
            raise ValueError(f"env_id {env_id!r} has observation space {obs_space}, which cannot be flattened") from err
    # Bounds in the action dtype: Python floats would make gymnasium build a float64 Box and warn about the cast.
    unit = np.ones(action_space.shape, dtype=action_space.dtype)
    env = gym.wrappers.RescaleAction(env, min_action=-unit, max_action=unit)
    env = Float32Spaces(env)
    if capture_video:
        env = gym.wrappers.RecordVideo(env, str(Path(run_dir) / "videos"))
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = ActionRepeat(env, action_repeat)

    env.action_space.seed(int(seed))
    env.observation_space.seed(int(seed))
    return env
