"""Continuous-control environments for SAC + SimBa: HumanoidBench, with gymnasium MuJoCo and dm_control stand-ins.

`make_humanoid_env` builds one environment with the wrapper stack written out in order:

    base env (HumanoidBench / gymnasium MuJoCo / dm_control through shimmy), TimeLimit in env steps
    → FlattenObservation       (only if the observation is not a 1-D Box, e.g. dm_control's dict)
    → RescaleAction(−1, 1)     (in the inner action dtype)
    → TransformAction          (a float32 Box(−1, 1) action space; RescaleAction takes float32 actions as they are)
    → DtypeObservation(float32)
    → [RecordVideo]
    → RecordEpisodeStatistics  (episodic return and length in env steps of the underlying task)
    → ActionRepeat(k)          (one agent step = k env steps, rewards summed)

Units: an *env step* is one step of the underlying task (HumanoidBench: 50 Hz); an *agent step* is one call of the
returned env's `step`, up to `action_repeat` env steps (info ``"env_steps"``: fewer at an episode end). Time limits
(1000 for Humanoid-v5, dm_control and HumanoidBench locomotion) count env steps: 500 agent steps at action repeat 2.

Ids: gymnasium MuJoCo (``Humanoid-v5``, the default stand-in, ``Hopper-v5``, ...; ``gymnasium[mujoco]``); dm_control
through shimmy (``dm_control/humanoid-run-v0``, ...); HumanoidBench ``{robot}-{task}-v0`` (``h1-walk-v0``, ...) when
``humanoid_bench`` is installed (`HUMANOID_BENCH_INSTALL`). The adapter runs HumanoidBench under gymnasium 1.x and
mujoco 3.17 (upstream pins gymnasium 0.29.1 and mujoco 3.1.6): a stand-in for its unused top-level ``import jax``, the
fields the current mujoco lacks dropped from its vendored dm_control field-size table, ``render_mode=None`` unless a
video is wanted, and rendering through gymnasium 1.x's ``MujocoRenderer.render(render_mode)``. Its task object is
``env.unwrapped.task``. Rendering headless (``capture_video=True``) needs ``MUJOCO_GL=egl`` or ``osmesa``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import re
import sys
import types
import warnings
from pathlib import Path
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

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


class _Stateless:
    """An empty `fire_rl.envs.env_state` protocol: the wrapper keeps nothing between steps."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ActionRepeat(_Stateless, gym.Wrapper):
    """Repeat each action `repeat` (≥ 1) times, summing the rewards; stop early at termination or truncation.

    One `step` is one *agent step*: the last observation, the summed reward (float), the last flags, and the last inner
    info plus ``"env_steps"`` (int, the env steps taken). SimBa's ``RepeatAction`` (github.com/SonyResearch/simba @
    4e83770, scale_rl/envs/wrappers/repeat_action.py); gymnasium ≥ 1.3's ``RepeatAction`` lacks the step count.
    """

    def __init__(self, env: gym.Env, repeat: int) -> None:
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
        return obs, total_reward, bool(terminated), bool(truncated), {**info, "env_steps": env_steps}


class _HumanoidBenchRender(_Stateless, gym.Wrapper):
    """Render HumanoidBench under gymnasium 1.x: its ``Task.render`` calls gymnasium 0.29's
    ``MujocoRenderer.render(mode, camera_id, camera_name)``; 1.x takes the render mode only."""

    def render(self) -> Any:
        base = self.env.unwrapped
        return base.mujoco_renderer.render(base.render_mode)


def is_humanoid_bench_id(env_id: str) -> bool:
    """True for ids of the form ``{robot}-{task}-v0`` with a HumanoidBench robot (`HUMANOID_BENCH_ROBOTS`)."""
    match = _HB_ID.match(env_id)
    return match is not None and match["robot"] in HUMANOID_BENCH_ROBOTS


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


def _register_dm_control_ids() -> None:
    """Import shimmy, which registers the ``dm_control/...`` ids, if installed. dm_control's renderer probes GLFW at
    import and, without a display, warns twice on stderr; no window is ever opened here, so that warning is dropped."""
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*DISPLAY")
        importlib.import_module("shimmy")


def _unknown_id_error(env_id: str) -> ValueError:
    _register_dm_control_ids()  # the mistyped dm_control ids' neighbours
    hb_ids = [f"{robot}-{task}-v0" for robot in HUMANOID_BENCH_ROBOTS for task in HUMANOID_BENCH_TASKS]
    close = difflib.get_close_matches(env_id, [k for k in gym.registry if "ALE/" not in k] + hb_ids, n=5, cutoff=0.6)
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
        action_repeat: env steps per agent step (SimBa: 2).
        capture_video: record episodes to ``<run_dir>/videos`` (gymnasium's RecordVideo schedule); needs `run_dir`.

    Returns:
        A `gym.Env` with a 1-D float32 `Box` observation space and a float32 `Box` action space in [−1, 1].

    Raises:
        ValueError: `action_repeat` not an int ≥ 1, `seed` not an int ≥ 0, `capture_video` without `run_dir`, an unknown
            id (the message lists close matches), or an environment whose action space is not a bounded Box
            (e.g. ``CartPole-v1``) or whose observation space cannot be flattened to a Box.
        ImportError: a HumanoidBench id while ``humanoid_bench`` is not installed (the message says how to install
            it), or a missing dependency of it; `capture_video` without moviepy.
    """
    for name, value, low in (("action_repeat", action_repeat, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if capture_video and run_dir is None:
        raise ValueError("capture_video=True needs run_dir (videos go to <run_dir>/videos), got run_dir=None")
    if capture_video and importlib.util.find_spec("moviepy") is None:
        raise ImportError("capture_video=True needs moviepy, which gymnasium's RecordVideo uses: pip install moviepy")

    render_mode = "rgb_array" if capture_video else None
    if is_humanoid_bench_id(env_id):
        if _HB_ID.match(env_id)["task"] not in HUMANOID_BENCH_TASKS:
            raise _unknown_id_error(env_id)
        _import_humanoid_bench()
    elif env_id.startswith("dm_control/"):
        _register_dm_control_ids()
    if env_id not in gym.registry:
        raise _unknown_id_error(env_id)
    env = gym.make(env_id, render_mode=render_mode)
    if is_humanoid_bench_id(env_id):
        env = _HumanoidBenchRender(env)

    action_space, obs_space = env.action_space, env.observation_space
    if not isinstance(action_space, gym.spaces.Box) or not np.isfinite([action_space.low, action_space.high]).all():
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
    env = gym.wrappers.TransformAction(env, lambda action: action, gym.spaces.Box(-1.0, 1.0, unit.shape, np.float32))
    env = gym.wrappers.DtypeObservation(env, np.float32)
    if capture_video:
        env = gym.wrappers.RecordVideo(env, str(Path(run_dir) / "videos"))
    env = gym.wrappers.RecordEpisodeStatistics(env)
    env = ActionRepeat(env, action_repeat)
    env.action_space.seed(int(seed))
    env.observation_space.seed(int(seed))
    return env
