"""Exact environment-state checkpoints: `get_env_state` and `set_env_state` (issue 6, bit-exact resume).

The agents checkpoint networks, optimizers, RNGs and the replay buffer; this module adds the environments, so that
N steps, a checkpoint, a new process and N more steps give the same observations, rewards, terminations,
truncations and episode statistics as 2N steps in one go.

Why not pickle: gymnasium wrappers are ``EzPickle``/``RecordConstructorArgs`` objects whose unpickling re-runs the
constructors (frame stacks, counters and RNGs are lost), and pickling an ``AtariEnv`` does not keep the emulator.
Instead the caller rebuilds its env with the SAME factory call (``make_atari_env(...)`` / ``make_humanoid_env(...)``),
optionally resets it, and calls ``set_env_state(env, state)``: the saved values are written back into that fresh
object, wrapper by wrapper.

What is saved, per object of the wrapper chain (``env``, ``env.env``, ... ``env.unwrapped``; for a `SyncVectorEnv` its
vector wrappers, itself and each sub-env's chain), from its instance ``__dict__``, by this rule:

1. Skipped (references or constructor-only, rebuilt by the factory): ``env``, ``spec``, ``_cached_spec``,
   ``metadata``, ``_metadata``, ``_saved_kwargs``, ``_ezpickle_args``, ``_ezpickle_kwargs``; `SyncVectorEnv`'s
   ``env_fns`` and ``envs`` (the sub-envs are walked separately); the per-type entries of `_SKIP`.
2. Callables (functions, ufuncs, lambdas, classes, objects with ``__call__``): treated as constructor arguments
   (``TransformReward.func``, ``RescaleAction.func``) and skipped. A callable that carries state of its own is not
   captured: this is the one part of the rule that trusts the wrapper.
3. Spaces (`gymnasium.spaces.Space`): the space itself is the factory's; only its RNG (``space._np_random``, and those
   of its subspaces) is saved, because agents draw warm-up actions with ``action_space.sample()``.
4. RNGs: ``np.random.Generator`` (its ``bit_generator.state``) and ``np.random.RandomState`` (``get_state``). On restore
   they are written into the existing generator object when it has the same kind, so objects that share it stay
   shared.
5. Plain data, deep-copied with one memo per call (aliasing inside the state is kept): None, bool, int, float,
   complex, str, bytes, numpy arrays and scalars, numpy dtypes, enum members, and lists, tuples, deques (with their
   ``maxlen``), sets and dicts of these. Arrays are restored in place when shape and dtype agree.
6. Special attributes with their own capture (`_SPECIAL`): the ALE emulator, MuJoCo's ``MjData``, dm_control's
   environment/task/physics, and `RecordEpisodeStatistics`' wall-clock start times (saved as elapsed seconds, so the
   ``"t"`` of an episode that spans the checkpoint keeps counting from where it was).
7. Anything else raises `NotImplementedError` naming the class, the attribute and its type: an env whose state this
   module cannot see is refused, never captured incompletely.

Base environments:
    ALE (``ale_py.env.AtariEnv``): ``ale.cloneState(include_rng=True).serialize()`` (emulator, RAM, frame counters,
        the ALE RNG that draws sticky actions) plus the env's Python fields (``_np_random``, which draws no-op starts).
        ALE keeps the action that sticky actions repeat outside its state (ale-py 0.12.1, ``StellaEnvironment::
        m_player_a_action``) and offers no way to read or set it; only a game reset sets it (to NOOP). So when
        ``repeat_action_probability > 0``, `get_env_state` resets the game and restores the cloned state in the captured
        env, and `set_env_state` does the same: both sides continue with NOOP as the repeated action. A run that
        checkpoints is then bit-identical to its resumed copy; it differs from a run that never checkpoints only in
        that hidden action (with probability p the first frame after a checkpoint repeats NOOP instead of the last
        action). Continuous-action ALE envs with sticky actions (the paddle strength is hidden too) raise
        `NotImplementedError`. Without sticky actions capture has no side effect.
    gymnasium MuJoCo (``MujocoEnv``): ``mj_getState(mjSTATE_INTEGRATION)`` (time, qpos, qvel, act, warm start, ctrl,
        applied forces, mocap, user data, plugin state) plus every model-sized ``MjData`` array (positions, inertias,
        velocities, forces, sensor data ...), and the warning counters. Restore: ``mj_setState``, ``mj_forward`` (which
        rebuilds contacts and constraint rows for the current state), then the saved arrays are written back, because
        after ``mj_step`` derived quantities lag one substep behind qpos and envs read them before the next step
        (Humanoid-v5's centre of mass). Arena-allocated data (contacts, constraint rows, islands) are rebuilt by
        MuJoCo before use and are not saved. The model (``MjModel``) is the factory's; a model changed at run time
        (domain randomisation) is not captured, and a model of another structure is refused by its signature.
    dm_control through shimmy (``DmControlCompatibilityV0`` over ``dm_control.rl.control.Environment``): the
        environment's step count and ``_reset_next_step``, the task's fields (its ``_random`` RandomState draws the
        initial states), the physics' warning arrays and its ``MjData`` as above. Composer environments raise
        `NotImplementedError`.
    Any other env whose attributes all fall under rules 1-5 (pure-Python envs such as CartPole) is captured exactly by
    the generic rule. HumanoidBench envs hold task and robot objects and raise `NotImplementedError`.

Vector envs: `gymnasium.vector.SyncVectorEnv` (and vector wrappers over it) is supported: its per-step arrays
(``_env_obs``, ``_observations``, ``_rewards``, ``_terminations``, ``_truncations``, ``_autoreset_envs``; the last one
matters for ``AutoresetMode.NEXT_STEP``, none of them for SAME_STEP) and each sub-env. `AsyncVectorEnv` keeps its
sub-envs in worker processes and raises `NotImplementedError` (build with ``vector="sync"`` to checkpoint); so do other
vector envs (ale-py's C++ ``AtariVectorEnv``).

The state is a dict of dicts, lists, numpy arrays, bytes, ints, floats, strings, deques and enum members: it goes
through ``pickle`` and ``torch.save``/``torch.load(weights_only=False)``. It is tied to the installed versions of
ale-py and mujoco (the emulator and state layouts), like any emulator snapshot.

Known limit (ale-py 0.12.1): the TIA's "partial frame" flag is not serialised (fixed upstream in ale-py commit a9a043e,
after 0.12.1, for Q*bert and Tetris), so a restore taken right after a frame that ended without VSYNC can drift. Not
seen here: 6 checkpoints each of Breakout, Q*bert, Tetris, Pong, Asterix, BeamRider, DemonAttack and Montezuma's
Revenge, both presets, gave identical observations, rewards, flags and RAM for 150 steps after the restore.
"""

from __future__ import annotations

import copy
import enum
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics
from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorRecordEpisodeStatistics

__all__ = ["FORMAT", "VERSION", "get_env_state", "set_env_state"]

FORMAT = "fire_rl-env-state"
VERSION = 1

_SKIP_ALWAYS = frozenset(
    {"env", "spec", "_cached_spec", "metadata", "_metadata", "_saved_kwargs", "_ezpickle_args", "_ezpickle_kwargs"}
)

# MjData arrays never copied back: plugin_data holds C pointers of this process.
_MJDATA_NEVER = frozenset({"plugin_data"})
_MJDATA_DTYPES = frozenset(np.dtype(t) for t in (np.float64, np.float32, np.int32, np.uint8, np.bool_))
_mjdata_fields_cache: dict[tuple[int, int, int, int], tuple[str, ...]] = {}


@dataclass(frozen=True)
class _Special:
    """How one attribute of one class is saved and written back."""

    capture: Callable[[Any, Any, dict], Any]  # (owner, value, deepcopy memo) -> picklable
    restore: Callable[[Any, Any], None]  # (owner, saved) -> None, in place


# --------------------------------------------------------------------------------------------------------------------
# Values: classification, RNGs, spaces
# --------------------------------------------------------------------------------------------------------------------


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, bytearray)):
        return True
    if isinstance(value, (np.generic, np.dtype, enum.Enum)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype != object or all(_is_plain(v) for v in value.flat)
    if isinstance(value, (list, tuple, deque, set, frozenset)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


def _kind(value: Any) -> str | None:
    """Rule 3-5 and 2 of the module docstring: "space", "rng", "plain", "callable", or None (not capturable)."""
    if isinstance(value, gym.spaces.Space):
        return "space"
    if isinstance(value, (np.random.Generator, np.random.RandomState)):
        return "rng"
    if _is_plain(value):
        return "plain"
    if callable(value):
        return "callable"
    return None


def _rng_state(rng: np.random.Generator | np.random.RandomState) -> dict[str, Any]:
    if isinstance(rng, np.random.Generator):
        return {"kind": "Generator", "state": copy.deepcopy(rng.bit_generator.state)}
    return {"kind": "RandomState", "state": rng.get_state(legacy=False)}


def _bit_generator(name: str) -> np.random.BitGenerator:
    cls = getattr(np.random, name, None)
    if not (isinstance(cls, type) and issubclass(cls, np.random.BitGenerator)):
        raise ValueError(f"saved RNG uses bit generator {name!r}, which numpy does not have")
    return cls()


def _restore_rng(current: Any, saved: dict[str, Any]) -> np.random.Generator | np.random.RandomState:
    """Write `saved` into `current` when it is a generator of the same kind; else build one."""
    state = saved["state"]
    name = state["bit_generator"]
    if saved["kind"] == "Generator":
        if isinstance(current, np.random.Generator) and type(current.bit_generator).__name__ == name:
            current.bit_generator.state = state
            return current
        rng = np.random.Generator(_bit_generator(name))
        rng.bit_generator.state = state
        return rng
    if saved["kind"] == "RandomState":
        if not isinstance(current, np.random.RandomState):
            current = np.random.RandomState(_bit_generator(name))
        current.set_state(state)
        return current
    raise ValueError(f"unknown saved RNG kind {saved['kind']!r}; allowed: 'Generator', 'RandomState'")


def _subspaces(space: gym.spaces.Space) -> dict[Any, gym.spaces.Space]:
    if isinstance(space, gym.spaces.Dict):
        return dict(space.spaces)
    if isinstance(space, (gym.spaces.Tuple, gym.spaces.OneOf)):
        return dict(enumerate(space.spaces))
    if isinstance(space, gym.spaces.Sequence):
        return {"feature_space": space.feature_space}
    if isinstance(space, gym.spaces.Graph):
        return {k: s for k, s in (("node_space", space.node_space), ("edge_space", space.edge_space)) if s is not None}
    return {}


def _space_state(space: gym.spaces.Space) -> dict[str, Any]:
    rng = space._np_random
    return {
        "rng": None if rng is None else _rng_state(rng),
        "subspaces": {key: _space_state(sub) for key, sub in _subspaces(space).items()},
    }


def _restore_space(space: gym.spaces.Space, saved: dict[str, Any], where: str) -> None:
    space._np_random = None if saved["rng"] is None else _restore_rng(space._np_random, saved["rng"])
    subspaces = _subspaces(space)
    if set(subspaces) != set(saved["subspaces"]):
        raise ValueError(
            f"{where}: space {space} has subspaces {list(subspaces)}, the state {list(saved['subspaces'])}"
        )
    for key, sub in subspaces.items():
        _restore_space(sub, saved["subspaces"][key], f"{where}[{key!r}]")


# --------------------------------------------------------------------------------------------------------------------
# Special attributes
# --------------------------------------------------------------------------------------------------------------------


def _elapsed_since(owner: Any, start: Any, memo: dict) -> Any:
    return time.perf_counter() - np.asarray(start) if isinstance(start, np.ndarray) else time.perf_counter() - start


def _restore_start_time(name: str) -> Callable[[Any, Any], None]:
    def restore(owner: Any, elapsed: Any) -> None:
        setattr(owner, name, time.perf_counter() - elapsed)

    return restore


def _ale_capture(env: Any, ale: Any, memo: dict) -> dict[str, Any]:
    p = float(ale.getFloat("repeat_action_probability"))
    if p > 0 and env.continuous:
        raise NotImplementedError(
            f"{_type_name(env)} with continuous=True and repeat_action_probability={p}: ALE keeps the repeated paddle "
            "strength outside its state, so the env cannot be restored exactly"
        )
    state = ale.cloneState(include_rng=True)
    if p > 0:
        # Sets the hidden repeated action to NOOP (module docstring, ALE); the emulator, RNG and counters come back.
        ale.reset_game()
        ale.restoreState(state)
    return {"ale_state": state.serialize(), "repeat_action_probability": p}


def _ale_restore(env: Any, saved: dict[str, Any]) -> None:
    import ale_py

    ale = env.ale
    p = float(ale.getFloat("repeat_action_probability"))
    if p != saved["repeat_action_probability"]:
        raise ValueError(
            f"the state is from an ALE env with repeat_action_probability={saved['repeat_action_probability']}, "
            f"this env has {p}: rebuild the env with the same factory call"
        )
    state = ale_py.ALEState(saved["ale_state"])
    if p > 0:
        ale.reset_game()
    ale.restoreState(state)


def _mjdata_fields(data: Any) -> tuple[str, ...]:
    """Names of the model-sized arrays of `data` (not arena-allocated): same shape in a fresh MjData, non-empty."""
    import mujoco

    model = data.model
    key = (int(model.signature), model.nq, model.nv, model.nbody)
    if key not in _mjdata_fields_cache:
        # Arena arrays (contacts, constraint rows, islands) are empty in a fresh MjData, model-sized ones are not.
        fresh = mujoco.MjData(model)
        names = []
        for name in dir(data):
            if name.startswith("_") or name in _MJDATA_NEVER:
                continue
            live = getattr(data, name)
            if not isinstance(live, np.ndarray) or live.flags.owndata or live.size == 0:
                continue
            ref = getattr(fresh, name, None)
            if isinstance(ref, np.ndarray) and ref.shape == live.shape and live.dtype in _MJDATA_DTYPES:
                names.append(name)
        _mjdata_fields_cache[key] = tuple(names)
    return _mjdata_fields_cache[key]


def _mjdata_capture(data: Any) -> dict[str, Any]:
    import mujoco

    model = data.model
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    integration = np.empty(mujoco.mj_stateSize(model, spec), dtype=np.float64)
    mujoco.mj_getState(model, data, integration, spec)
    return {
        "signature": int(model.signature),
        "integration": integration,
        "arrays": {name: np.array(getattr(data, name)) for name in _mjdata_fields(data)},
        "warning_number": np.array(data.warning.number),
        "warning_lastinfo": np.array(data.warning.lastinfo),
    }


def _mjdata_restore(data: Any, saved: dict[str, Any]) -> None:
    import mujoco

    model = data.model
    if int(model.signature) != saved["signature"]:
        raise ValueError(
            f"the state is from a MuJoCo model with signature {saved['signature']}, this env's model has "
            f"{int(model.signature)}: rebuild the env with the same factory call"
        )
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    if saved["integration"].shape != (mujoco.mj_stateSize(model, spec),):
        raise ValueError(
            f"saved MuJoCo integration state has shape {saved['integration'].shape}, this model needs "
            f"({mujoco.mj_stateSize(model, spec)},)"
        )
    mujoco.mj_setState(model, data, saved["integration"], spec)
    mujoco.mj_forward(model, data)
    for name, value in saved["arrays"].items():
        target = getattr(data, name, None)
        if not isinstance(target, np.ndarray) or target.shape != value.shape:
            raise ValueError(f"saved MjData.{name} has shape {value.shape}, this env's has {np.shape(target)}")
        target[...] = value
    data.warning.number[...] = saved["warning_number"]
    data.warning.lastinfo[...] = saved["warning_lastinfo"]


def _dm_control_env_capture(owner: Any, dm_env: Any, memo: dict) -> dict[str, Any]:
    control = sys.modules.get("dm_control.rl.control")
    if control is None or type(dm_env) is not control.Environment:
        raise NotImplementedError(
            f"{_type_name(owner)} wraps a {_type_name(dm_env)}; only dm_control suite environments "
            "(dm_control.rl.control.Environment) can be checkpointed, not composer ones"
        )
    return _capture_object(dm_env, memo)


def _nested(attr: str) -> _Special:
    """An attribute holding an object that is captured by the same rules (dm_control's task and physics)."""
    return _Special(
        capture=lambda owner, value, memo: _capture_object(value, memo),
        restore=lambda owner, saved: _restore_object(getattr(owner, attr), saved),
    )


def _rules(obj: Any) -> tuple[frozenset[str], dict[str, _Special]]:
    """Skipped names and special attributes of `obj`'s class (rules 1 and 6 of the module docstring)."""
    skip = set(_SKIP_ALWAYS)
    special: dict[str, _Special] = {}
    if isinstance(obj, gym.vector.SyncVectorEnv):
        skip |= {"env_fns", "envs"}
    if isinstance(obj, RecordEpisodeStatistics):
        special["episode_start_time"] = _Special(_elapsed_since, _restore_start_time("episode_start_time"))
    if isinstance(obj, VectorRecordEpisodeStatistics):
        special["episode_start_times"] = _Special(_elapsed_since, _restore_start_time("episode_start_times"))
    ale_env = sys.modules.get("ale_py.env")
    if ale_env is not None and isinstance(obj, ale_env.AtariEnv):
        skip |= {"_action_set"}  # ale_py.Action members, fixed by the game and mode
        special["ale"] = _Special(_ale_capture, _ale_restore)
    mujoco_env = sys.modules.get("gymnasium.envs.mujoco.mujoco_env")
    if mujoco_env is not None and isinstance(obj, mujoco_env.MujocoEnv):
        skip |= {"model", "mujoco_renderer"}
        special["data"] = _Special(
            capture=lambda owner, data, memo: _mjdata_capture(data),
            restore=lambda owner, saved: _mjdata_restore(owner.data, saved),
        )
    shimmy_dm = sys.modules.get("shimmy.dm_control_compatibility")
    if shimmy_dm is not None and isinstance(obj, shimmy_dm.DmControlCompatibilityV0):
        skip |= {"viewer"}
        special["_env"] = _Special(
            capture=_dm_control_env_capture, restore=lambda owner, saved: _restore_object(owner._env, saved)
        )
    control = sys.modules.get("dm_control.rl.control")
    if control is not None and type(obj) is control.Environment:
        special["_task"] = _nested("_task")
        special["_physics"] = _nested("_physics")
    engine = sys.modules.get("dm_control.mujoco.engine")
    if engine is not None and isinstance(obj, engine.Physics):
        skip |= {"_contexts_lock", "_named"}  # a lock, and index views into the same MjData
        special["_data"] = _Special(
            capture=lambda owner, data, memo: _mjdata_capture(data.ptr),
            restore=lambda owner, saved: _mjdata_restore(owner.data.ptr, saved),
        )
    return frozenset(skip), special


# --------------------------------------------------------------------------------------------------------------------
# Objects and chains
# --------------------------------------------------------------------------------------------------------------------


def _type_name(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _classify(obj: Any, skip: frozenset[str], special: dict[str, _Special]) -> dict[str, str]:
    """Kind of every instance attribute of `obj` that is neither skipped nor special; raises on rule 7."""
    kinds = {}
    for name, value in vars(obj).items():
        if name in skip or name in special:
            continue
        kind = _kind(value)
        if kind is None:
            raise NotImplementedError(
                f"cannot capture the state of {_type_name(obj)}: its attribute {name!r} is a {_type_name(value)}, "
                "which is neither plain data, an RNG, a space nor a callable, and fire_rl.envs.env_state has no rule "
                "for it"
            )
        kinds[name] = kind
    return kinds


def _capture_object(obj: Any, memo: dict) -> dict[str, Any]:
    skip, special = _rules(obj)
    kinds = _classify(obj, skip, special)
    attrs = vars(obj)
    return {
        "type": _type_name(obj),
        "attrs": {n: copy.deepcopy(attrs[n], memo) for n, k in kinds.items() if k == "plain"},
        "rngs": {n: _rng_state(attrs[n]) for n, k in kinds.items() if k == "rng"},
        "spaces": {n: _space_state(attrs[n]) for n, k in kinds.items() if k == "space"},
        "special": {n: s.capture(obj, attrs[n], memo) for n, s in special.items() if n in attrs},
    }


def _restore_object(obj: Any, saved: dict[str, Any]) -> None:
    where = _type_name(obj)
    if saved["type"] != where:
        raise ValueError(f"the state holds a {saved['type']} where this env has a {where}")
    skip, special = _rules(obj)
    kinds = _classify(obj, skip, special)
    attrs = vars(obj)
    missing_special = {n for n in special if n in attrs} ^ set(saved["special"])
    if missing_special:
        raise ValueError(f"{where}: special attributes {sorted(missing_special)} are in only one of state and env")
    for name in saved["spaces"]:
        if kinds.get(name) != "space":
            raise ValueError(f"{where}: the state has a space {name!r}, this env has {type(attrs.get(name)).__name__}")
    # Fields the source did not have (e.g. set by a later reset) go, so the object mirrors the source exactly.
    for name, kind in kinds.items():
        if kind in ("plain", "rng") and name not in saved["attrs"] and name not in saved["rngs"]:
            delattr(obj, name)
    for name, value in saved["attrs"].items():
        current = attrs.get(name)
        if (
            isinstance(current, np.ndarray)
            and isinstance(value, np.ndarray)
            and current.shape == value.shape
            and current.dtype == value.dtype
            and current.flags.writeable
        ):
            current[...] = value
        else:
            setattr(obj, name, value)
    for name, value in saved["rngs"].items():
        setattr(obj, name, _restore_rng(attrs.get(name), value))
    for name, value in saved["spaces"].items():
        _restore_space(attrs[name], value, f"{where}.{name}")
    for name, value in saved["special"].items():
        special[name].restore(obj, value)


def _chain(env: Any, wrapper_type: type) -> list[Any]:
    """`env`, `env.env`, ... down to the innermost object that is not a `wrapper_type`."""
    layers = [env]
    while isinstance(layers[-1], wrapper_type):
        layers.append(layers[-1].env)
    return layers


def _vector_base(env: gym.vector.VectorEnv) -> tuple[list[Any], gym.vector.SyncVectorEnv]:
    layers = _chain(env, gym.vector.VectorWrapper)
    base = layers[-1]
    if isinstance(base, gym.vector.AsyncVectorEnv):
        raise NotImplementedError(
            "AsyncVectorEnv keeps its sub-envs in worker processes, whose state cannot be captured from here; build "
            "the env with vector='sync' (gymnasium.vector.SyncVectorEnv) to checkpoint it"
        )
    if not isinstance(base, gym.vector.SyncVectorEnv):
        raise NotImplementedError(
            f"cannot capture the state of vector env {_type_name(base)}: only gymnasium.vector.SyncVectorEnv (and "
            "vector wrappers over it) is supported"
        )
    return layers, base


def _types(layers: list[Any]) -> list[str]:
    return [_type_name(layer) for layer in layers]


def get_env_state(env: gym.Env | gym.vector.VectorEnv) -> dict[str, Any]:
    """Everything needed to continue `env` bit for bit in a fresh env built by the same factory call.

    Args:
        env: a `gym.Env` wrapper chain (``make_humanoid_env``) or a `gymnasium.vector.SyncVectorEnv`, possibly under
            vector wrappers (``make_atari_env(..., vector="sync")``).

    Returns:
        A picklable dict (``pickle``, ``torch.save``; load with ``torch.load(weights_only=False)``):
        ``{"format": FORMAT, "version": VERSION, "kind": "env" | "vector", "vector": [layer, ...] | None,
        "envs": [[layer, ...], ...]}``, layers outermost first, each ``{"type", "attrs", "rngs", "spaces",
        "special"}`` (module docstring, rules 1-7). Pickled size, measured: about 200 KB per Atari env of
        `make_atari_env` (AtariPreprocessing's two 210x160 frames 67 KB, the 4-frame stack twice 57 KB, the vector
        env's two copies of the stacked observation 57 KB, the emulator snapshot 14 KB); Humanoid-v5 38 KB,
        dm_control cartpole 12 KB, dm_control humanoid-run 51 KB (with action repeat 2).

    Side effect: only for ALE envs with sticky actions, which continue with NOOP as the hidden repeated action
    (module docstring, "ALE"); everything else is read only.

    Raises:
        ValueError: `env` is neither a `gym.Env` nor a `gym.vector.VectorEnv`.
        NotImplementedError: an `AsyncVectorEnv` or another non-sync vector env; a wrapper or base env with an
            attribute no rule covers (the message names the class, attribute and type); a dm_control composer env; a
            continuous-action ALE env with sticky actions.
    """
    memo: dict = {}
    if isinstance(env, gym.vector.VectorEnv):
        layers, base = _vector_base(env)
        subenvs = [[_capture_object(layer, memo) for layer in _chain(sub, gym.Wrapper)] for sub in base.envs]
        vector = [_capture_object(layer, memo) for layer in layers]
        return {"format": FORMAT, "version": VERSION, "kind": "vector", "vector": vector, "envs": subenvs}
    if isinstance(env, gym.Env):
        layers = [_capture_object(layer, memo) for layer in _chain(env, gym.Wrapper)]
        return {"format": FORMAT, "version": VERSION, "kind": "env", "vector": None, "envs": [layers]}
    raise ValueError(f"env must be a gymnasium Env or VectorEnv, got {type(env).__name__}: {env!r}")


def set_env_state(env: gym.Env | gym.vector.VectorEnv, state: dict[str, Any]) -> None:
    """Write a `get_env_state` state into `env`, built by the same factory call (same id, preset, wrappers, options).

    The env may have been reset (with any seed) or stepped before; afterwards it continues exactly as the captured env
    did from the moment of capture (module docstring). `state` is not modified and can be restored again.

    Args:
        env: the fresh env; the same kind (single or vector) and the same wrapper types in the same order as the
            captured one, and for a vector env the same number of sub-envs.
        state: a dict returned by `get_env_state` (possibly after a pickle or torch.save round trip).

    Raises:
        ValueError: `state` is not such a dict (format or version), or it does not fit `env` (kind, number of
            sub-envs, wrapper types, ALE sticky-action probability, MuJoCo model signature); the first three are
            checked before anything is changed, the last two while restoring (rebuild the env before retrying).
        NotImplementedError: `env` is an env `get_env_state` refuses.
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"state must be a dict returned by get_env_state (format {FORMAT!r}), got {type(state)}")
    if state.get("version") != VERSION:
        raise ValueError(f"state has version {state.get('version')!r}; this fire_rl reads version {VERSION}")
    if isinstance(env, gym.vector.VectorEnv):
        kind = "vector"
        layers, base = _vector_base(env)
        chains = [_chain(sub, gym.Wrapper) for sub in base.envs]
    elif isinstance(env, gym.Env):
        kind, layers, chains = "env", [], [_chain(env, gym.Wrapper)]
    else:
        raise ValueError(f"env must be a gymnasium Env or VectorEnv, got {type(env).__name__}: {env!r}")
    if state.get("kind") != kind:
        raise ValueError(f"the state is of a {state.get('kind')!r} env, env is a {kind!r} env")
    if len(state["envs"]) != len(chains):
        raise ValueError(f"the state has {len(state['envs'])} sub-envs, env has {len(chains)}")
    saved_types = [[layer["type"] for layer in chain] for chain in state["envs"]]
    if state["vector"] is not None:
        saved_types.append([layer["type"] for layer in state["vector"]])
    env_types = [_types(chain) for chain in chains] + ([_types(layers)] if kind == "vector" else [])
    if saved_types != env_types:
        raise ValueError(
            f"the state's wrapper chain(s) {saved_types} differ from env's {env_types}: rebuild the env with the same "
            "factory call as the one that was captured"
        )
    state = copy.deepcopy(state)
    for chain, saved_chain in zip(chains, state["envs"]):
        for layer, saved in zip(chain, saved_chain):
            _restore_object(layer, saved)
    for layer, saved in zip(layers, state["vector"] or []):
        _restore_object(layer, saved)
