"""Environment state for checkpoints: `get_env_state` and `set_env_state`, one explicit protocol per object type.

A run that checkpoints its envs and resumes in a new process continues as if it had never stopped (N steps, checkpoint,
new process, N more steps give the outputs of 2N steps, bit for bit on CPU). Pickling cannot do it (wrappers re-run
their constructors on unpickling, an ``AtariEnv`` pickles without its emulator), so the caller rebuilds the env with the
SAME factory call and `set_env_state` writes the saved values into it, object by object along ``env``, ``env.env``, ...
``env.unwrapped`` (a `SyncVectorEnv`: its vector wrappers, itself, each sub-env's chain), with the first protocol that
applies, plus the RNGs of each object's spaces (agents sample warm-up actions from them):

1. its own ``state_dict()`` / ``load_state_dict(state)``: fire_rl's wrappers;
2. `WRAPPER_FIELDS`: what each gymnasium wrapper (and `SyncVectorEnv`) keeps between steps, by exact type;
3. a base env:
   - ALE (``ale_py.env.AtariEnv``): ``ALEInterface.cloneState(include_rng=True)`` / ``restoreState`` and
     ``np_random``; not with ALE's own sticky actions, whose repeated action ale-py 0.12.1 keeps outside ``ALEState``;
   - gymnasium MuJoCo (``MujocoEnv``): the MuJoCo state below and ``np_random``;
   - HumanoidBench (``HumanoidEnv``): the same plus the fields its task changes in an episode
     (`HUMANOID_BENCH_TASK_FIELDS`; SitHard and Reach also draw from numpy's global RNG, which checkpoints hold);
   - dm_control suite envs through shimmy: ``_step_count``, ``_reset_next_step``, the task's ``_random`` and the
     physics' MuJoCo state.
   MuJoCo state: ``mj_getState(mjSTATE_INTEGRATION)``, restored by ``mj_setState`` and ``mj_forward`` (rebuilding
   contacts), then every model-sized MjData array written back (after ``mj_step`` derived quantities lag a substep
   behind qpos, and envs read them, e.g. Humanoid-v5's centre of mass), and `MJMODEL_EPISODE_FIELDS`.
   https://mujoco.readthedocs.io/en/stable/APIreference/APIfunctions.html#mj-getstate

Any other object (``AsyncVectorEnv``, ale-py's ``AtariVectorEnv``, unknown envs and wrappers), or one without an
attribute its protocol reads (`WRAPPER_FIELDS`, `_BASE_ENVS`, `SPACE_FIELDS`: private fields of gymnasium 1.4, ale-py,
shimmy and dm_control, checked on real envs by tests/test_env_state.py), makes the state inexact: `get_env_state`
warns once (naming the missing attributes), `set_env_state` returns False and the caller resets its envs. States are
dicts of lists, numpy arrays, bytes and scalars (``torch.save``, ``torch.load(weights_only=False)``), tied to the
installed ale-py and mujoco.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["FORMAT", "VERSION", "get_env_state", "set_env_state"]

FORMAT = "fire_rl-env-state"
VERSION = 2

# gymnasium 1.4's sources: what each object keeps between steps. Wall-clock starts are saved as elapsed seconds.
_W = gym.wrappers
WRAPPER_FIELDS: dict[type, tuple[str, ...]] = {
    _W.PassiveEnvChecker: ("checked_reset", "checked_step", "checked_render", "checked_data_reuse", "_previous_data"),
    _W.OrderEnforcing: ("_has_reset",),
    _W.TimeLimit: ("_elapsed_steps",),
    _W.RecordEpisodeStatistics: ("episode_count", "episode_start_time", "episode_returns", "episode_lengths",
                                 "time_queue", "return_queue", "length_queue"),
    _W.AtariPreprocessing: ("obs_buffer", "lives", "game_over"),
    _W.StickyAction: ("last_action", "is_sticky_actions", "num_repeats", "repeats_taken"),
    _W.FrameStackObservation: ("obs_queue", "padding_value"),
    _W.RecordVideo: ("episode_id", "step_id"),  # the schedule; a video being recorded at the checkpoint is cut
    _W.TransformReward: (), _W.RescaleAction: (), _W.TransformAction: (), _W.DtypeObservation: (),
    _W.FlattenObservation: (),
    gym.vector.SyncVectorEnv: ("_env_obs", "_observations", "_rewards", "_terminations", "_truncations",
                               "_autoreset_envs"),
    _W.vector.RecordEpisodeStatistics: ("episode_count", "episode_start_times", "episode_returns", "episode_lengths",
                                        "prev_dones", "time_queue", "return_queue", "length_queue"),
}  # fmt: skip
_CLOCK_FIELDS = ("episode_start_time", "episode_start_times")

# humanoid_bench/envs/*.py @ 791405f: what a locomotion task assigns after its constructor (Hurdle's and Maze's wall
# ids are recomputed before each use). Tasks not listed (manipulation) have no protocol.
HUMANOID_BENCH_TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "Walk": (), "Stand": (), "Run": (), "Crawl": (), "Hurdle": (), "Stair": (), "Slide": (), "Sit": (), "SitHard": (),
    "BalanceSimple": (), "BalanceHard": (), "Pole": (), "Maze": ("maze_stage", "move_direction"), "Reach": ("goal",),
}  # fmt: skip

# MjModel fields tasks edit per episode: dm_control suite (finger, fish, reacher, stacker, swimmer, quadruped terrain)
# and HumanoidBench (maze colours, bookshelf and cube bodies).
MJMODEL_EPISODE_FIELDS = ("body_pos", "body_quat", "geom_pos", "geom_size", "geom_rgba", "site_pos", "site_size",
                          "site_rgba", "light_pos", "dof_damping", "hfield_data")  # fmt: skip
# Model-sized MjData arrays not saved: C pointers of this process; BVH flags only drawn, rebuilt by collision.
_MJDATA_SKIP = ("plugin_data", "bvh_active")

_warned: set[tuple[str, str]] = set()
_mjdata_fields_cache: dict[int, tuple[str, ...]] = {}


class _NoProtocol(Exception):
    """An object whose state cannot be saved exactly; the message says why."""


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _warn_once(key: tuple[str, str], message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def _rng_get(rng: np.random.Generator | np.random.RandomState | None) -> dict[str, Any] | None:
    if isinstance(rng, np.random.RandomState):
        return {"kind": "RandomState", "state": rng.get_state(legacy=False)}
    return None if rng is None else {"kind": "Generator", "state": copy.deepcopy(rng.bit_generator.state)}


def _rng_set(rng: Any, saved: dict[str, Any] | None) -> Any:
    """`rng` with the saved state written into it (the same object when kinds agree, so sharers stay shared)."""
    if saved is None:
        return None
    kind = np.random.RandomState if saved["kind"] == "RandomState" else np.random.Generator
    rng = rng if isinstance(rng, kind) else kind(getattr(np.random, saved["state"]["bit_generator"])())
    if kind is np.random.RandomState:
        rng.set_state(saved["state"])
    else:
        rng.bit_generator.state = saved["state"]
    return rng


def _spaces(obj: Any) -> list[gym.spaces.Space]:
    """The action and observation spaces of `obj` (single ones too for a vector env), with Dict/Tuple subspaces."""
    names = ("action_space", "observation_space")
    names += ("single_action_space", "single_observation_space") if isinstance(obj, gym.vector.VectorEnv) else ()
    spaces, out = [getattr(obj, name) for name in names], []
    while spaces:
        out.append(space := spaces.pop())
        spaces += list(space.spaces.values()) if isinstance(space, gym.spaces.Dict) else []
        spaces += list(space.spaces) if isinstance(space, gym.spaces.Tuple) else []
    return out


def _mujoco_get(model: Any, data: Any) -> dict[str, Any]:
    import mujoco

    if int(model.signature) not in _mjdata_fields_cache:  # the arrays a fresh MjData has with the same shape
        fresh = mujoco.MjData(model)
        _mjdata_fields_cache[int(model.signature)] = tuple(
            name for name in dir(fresh) if not name.startswith("_") and name not in _MJDATA_SKIP
            and isinstance(live := getattr(data, name), np.ndarray) and live.size > 0
            and not live.flags.owndata  # a view into MjData's buffer, not a copy made on access
            and getattr(fresh, name).shape == live.shape
        )  # fmt: skip
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    integration = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
    mujoco.mj_getState(model, data, integration, spec)
    return {
        "signature": int(model.signature),
        "integration": integration,
        "data": {name: np.array(getattr(data, name)) for name in _mjdata_fields_cache[int(model.signature)]},
        "model": {name: np.array(getattr(model, name)) for name in MJMODEL_EPISODE_FIELDS if hasattr(model, name)},
        "warning": (np.array(data.warning.number), np.array(data.warning.lastinfo)),
    }


def _mujoco_set(model: Any, data: Any, saved: dict[str, Any]) -> None:
    import mujoco

    if int(model.signature) != saved["signature"]:
        raise ValueError(
            f"the state is of a MuJoCo model with signature {saved['signature']}, this env's model has "
            f"{int(model.signature)}: rebuild the env with the same factory call"
        )
    for name, value in saved["model"].items():
        getattr(model, name)[...] = value
    mujoco.mj_setState(model, data, saved["integration"], mujoco.mjtState.mjSTATE_INTEGRATION)
    mujoco.mj_forward(model, data)
    for name, value in saved["data"].items():
        getattr(data, name)[...] = value
    data.warning.number[...], data.warning.lastinfo[...] = saved["warning"]


def _ale_get(env: Any) -> dict[str, Any]:
    if (p := float(env.ale.getFloat("repeat_action_probability"))) > 0:
        raise _NoProtocol(f"its ALE repeats actions with probability {p} and keeps the repeated one outside its state")
    return {"ale": env.ale.cloneState(include_rng=True).serialize(), "np_random": _rng_get(env._np_random)}


def _ale_set(env: Any, saved: dict[str, Any]) -> None:
    import ale_py

    env.ale.restoreState(ale_py.ALEState(saved["ale"]))
    env._np_random = _rng_set(env._np_random, saved["np_random"])


def _mujoco_env_get(env: Any) -> dict[str, Any]:
    state = {"mujoco": _mujoco_get(env.model, env.data), "np_random": _rng_get(env._np_random)}
    if type(env).__module__.startswith("gymnasium.envs.mujoco."):  # v5 envs keep nothing else between steps
        return state
    if _type_name(env) != "humanoid_bench.env.HumanoidEnv":
        raise _NoProtocol("a MujocoEnv outside gymnasium and HumanoidBench may keep more state than MuJoCo's")
    fields = HUMANOID_BENCH_TASK_FIELDS.get(type(env.task).__name__)
    if fields is None or not type(env.task).__module__.startswith("humanoid_bench."):
        raise _NoProtocol(f"its task {_type_name(env.task)} is not in HUMANOID_BENCH_TASK_FIELDS")
    return {**state, "task": {name: copy.deepcopy(getattr(env.task, name)) for name in fields}}


def _mujoco_env_set(env: Any, saved: dict[str, Any]) -> None:
    _mujoco_set(env.model, env.data, saved["mujoco"])
    env._np_random = _rng_set(env._np_random, saved["np_random"])
    for name, value in saved.get("task", {}).items():
        setattr(env.task, name, copy.deepcopy(value))


def _dm_control_get(env: Any) -> dict[str, Any]:
    control, dm_env = sys.modules.get("dm_control.rl.control"), env._env
    if control is None or type(dm_env) is not control.Environment:
        raise _NoProtocol(f"it wraps a {_type_name(dm_env)}, not a dm_control suite environment")
    return {
        "step_count": dm_env._step_count,
        "reset_next_step": dm_env._reset_next_step,
        "task_random": _rng_get(dm_env.task._random),
        "mujoco": _mujoco_get(dm_env.physics.model.ptr, dm_env.physics.data.ptr),
    }


def _dm_control_set(env: Any, saved: dict[str, Any]) -> None:
    dm_env = env._env
    dm_env._step_count, dm_env._reset_next_step = saved["step_count"], saved["reset_next_step"]
    dm_env.task._random = _rng_set(dm_env.task._random, saved["task_random"])
    _mujoco_set(dm_env.physics.model.ptr, dm_env.physics.data.ptr, saved["mujoco"])


# (module, class, the attributes get and set read (dotted: nested), get, set); the classes' packages are imported
# only by envs that use them.
_BASE_ENVS = (
    ("ale_py.env", "AtariEnv", ("ale", "_np_random"), _ale_get, _ale_set),
    ("gymnasium.envs.mujoco.mujoco_env", "MujocoEnv", ("model", "data", "_np_random"),  # and HumanoidBench's
     _mujoco_env_get, _mujoco_env_set),
    ("shimmy.dm_control_compatibility", "DmControlCompatibilityV0", ("_env._step_count", "_env._reset_next_step",
     "_env.task._random", "_env.physics.model.ptr", "_env.physics.data.ptr"), _dm_control_get, _dm_control_set),
)  # fmt: skip
SPACE_FIELDS = ("_np_random",)  # read from every space of every object


def _fields_get(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    state, now = copy.deepcopy({name: getattr(obj, name) for name in fields}), time.perf_counter()
    return {name: now - value if name in _CLOCK_FIELDS else value for name, value in state.items()}


def _fields_set(obj: Any, saved: dict[str, Any]) -> None:
    now = time.perf_counter()
    for name, value in copy.deepcopy(saved).items():
        setattr(obj, name, now - value if name in _CLOCK_FIELDS else value)


def _protocol(obj: Any) -> tuple[Callable[[Any], Any], Callable[[Any, Any], None], tuple[str, ...]] | None:
    """(get, set, the attributes they read besides the spaces') of `obj`, in the order of the module docstring; None
    when it has none."""
    if callable(getattr(type(obj), "state_dict", None)) and callable(getattr(type(obj), "load_state_dict", None)):
        return type(obj).state_dict, type(obj).load_state_dict, ()
    if type(obj) in WRAPPER_FIELDS:
        return (lambda o: _fields_get(o, WRAPPER_FIELDS[type(o)])), _fields_set, WRAPPER_FIELDS[type(obj)]
    for module, name, fields, get, set_ in _BASE_ENVS:
        if isinstance(obj, getattr(sys.modules.get(module), name, ())):
            return get, set_, fields
    return None


def _missing_fields(obj: Any, fields: tuple[str, ...]) -> list[str]:
    """The `fields` (dotted: nested attributes) that `obj` lacks, then those its spaces lack (``space[i].name``)."""

    def has(target: Any, dotted: str) -> bool:
        for name in dotted.split("."):
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True

    spaces = [f"space[{i}].{name}" for i, sp in enumerate(_spaces(obj)) for name in SPACE_FIELDS if not has(sp, name)]
    return [name for name in fields if not has(obj, name)] + spaces


def _chains(env: Any) -> list[list[Any]]:
    """The objects of `env`, outermost first: one chain for an Env; the vector chain, then each sub-env's."""
    if not isinstance(env, (gym.Env, gym.vector.VectorEnv)):
        raise ValueError(f"env must be a gymnasium Env or VectorEnv, got {type(env).__name__}: {env!r}")
    chain = [env]
    while isinstance(chain[-1], (gym.Wrapper, gym.vector.VectorWrapper)):
        chain.append(chain[-1].env)
    subenvs = chain[-1].envs if isinstance(chain[-1], gym.vector.SyncVectorEnv) else []
    return [chain] + [_chains(sub)[0] for sub in subenvs]


def get_env_state(env: gym.Env | gym.vector.VectorEnv) -> dict[str, Any]:
    """What a fresh env built by the same factory call needs to continue exactly as `env` (module docstring).

    Never raises because of what `env` holds, and changes nothing in it: an object without a protocol makes the state
    inexact, with one warning per type (a resumed run restarts the unfinished episodes).

    Returns:
        ``{"format", "version", "env": outermost type, "exact": bool, "structure": [[type, ...], ...] per chain,
        "layers": [{"state", "spaces"}, ...] in chain order or None, "reason": None or why inexact}``.

    Raises:
        ValueError: `env` is neither a gymnasium Env nor a VectorEnv.
    """
    chains = _chains(env)
    state = {"format": FORMAT, "version": VERSION, "env": _type_name(env)}
    state["structure"] = [[_type_name(obj) for obj in chain] for chain in chains]
    layers = []
    for obj in (obj for chain in chains for obj in chain):
        try:
            if (protocol := _protocol(obj)) is None:
                raise _NoProtocol("fire_rl.envs.env_state has no state protocol for it")
            if missing := _missing_fields(obj, protocol[2]):
                raise _NoProtocol(f"it lacks {missing}, which fire_rl.envs.env_state reads (written for gymnasium 1.4, "
                                  f"installed: {gym.__version__})")  # fmt: skip
            layers.append({"state": protocol[0](obj), "spaces": [_rng_get(sp._np_random) for sp in _spaces(obj)]})
        except _NoProtocol as err:
            reason = f"{_type_name(obj)}: {err}"
            _warn_once(
                ("get", _type_name(obj)),
                f"env {_type_name(env)} cannot be checkpointed exactly ({reason}). Its checkpoints hold no env state: "
                "on resume its unfinished episodes will be restarted (the envs are reset).",
            )
            return {**state, "exact": False, "layers": None, "reason": reason}
    return {**state, "exact": True, "layers": layers, "reason": None}


def set_env_state(env: gym.Env | gym.vector.VectorEnv, state: dict[str, Any]) -> bool:
    """Write a `get_env_state` state into `env`, built by the same factory call (id, preset, wrappers, sizes).

    `env` may have been reset or stepped before; `state` is not modified and can be restored again.

    Returns:
        True: `env` now continues exactly as the captured env did. False: the state is inexact, nothing was written,
        one warning per env type says so, and the caller must reset `env` (``obs, _ = env.reset(seed=...)``);
        unfinished episodes are lost.

    Raises:
        ValueError: `state` is not a `get_env_state` dict of this version, or is of another env or wrapper stack (type
            names or number of sub-envs differ), both checked before anything is written; a MuJoCo model of another
            signature while writing (rebuild the env before retrying).
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"state must be a dict returned by get_env_state (format {FORMAT!r}), got {type(state)}")
    if state.get("version") != VERSION:
        raise ValueError(f"state has version {state.get('version')!r}; this fire_rl reads version {VERSION}")
    chains = _chains(env)
    structure = [[_type_name(obj) for obj in chain] for chain in chains]
    if state["structure"] != structure:
        raise ValueError(
            f"the state is of another env or wrapper stack: saved {state['structure']}, this env {structure}; "
            "rebuild the env with the same factory call (id, preset, wrappers, number of envs) as the saved one"
        )
    if not state["exact"]:
        _warn_once(
            ("set", state["env"]),
            f"the saved state of env {state['env']} is inexact ({state['reason']}): the env must be reset, and its "
            "unfinished episodes are lost.",
        )
        return False
    for obj, saved in zip((obj for chain in chains for obj in chain), state["layers"]):
        _protocol(obj)[1](obj, saved["state"])
        for space, rng in zip(_spaces(obj), saved["spaces"]):
            space._np_random = _rng_set(space._np_random, rng)
    return True
