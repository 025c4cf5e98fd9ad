"""Replay buffers: Atari (one uint8 frame per env step, stacks rebuilt at sampling) and vector observations.

Both take transitions from a vector env of N games, ``add(obs, next_obs, actions, rewards, terminated, truncated)``
with ``next_obs`` the REAL next observation (the final one where an episode ended; `fire_rl.envs.atari.real_next_obs`),
and return a `ReplayBatch` whose ``dones`` are the terminations only (a truncated episode bootstraps). Sampling draws
with the buffer's own seeded `numpy.random.Generator` (checkpointed in `state_dict`), gathers with `np.take` (faster
than torch's fancy indexing on CPU) and makes one host-to-device copy per field. With ``on_device`` the memory lives
on the device and batches are gathered there (the same batches); either way nothing in `add` or `sample` waits for
the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from fire_rl.validation import check_range, range_error


class ReplayBatch(NamedTuple):
    """A minibatch of B transitions, every tensor on the buffer's device.

    Attributes:
        observations: ``(B, 4, 84, 84) uint8`` (Atari) or ``(B, obs_dim) float32`` (vectors).
        actions: ``(B,) int64`` (Atari) or ``(B, act_dim) float32`` (vectors).
        rewards: ``(B,) float32``, as given to ``add`` (clipped or not is the env's business).
        next_observations: like ``observations``; the real final observation for the last transition of an episode.
        dones: ``(B,) float32``, 1.0 where the episode terminated at this transition (NOT where it was truncated), for
            the bootstrap mask ``reward + gamma * (1 - done) * max_a Q(next_obs, a)``.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor


def _check_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from e


def _check_array(name: str, value: Any, shape: tuple[int, ...], kind: str | type, dtype_text: str) -> np.ndarray:
    """`value` as a numpy array, checked against `shape` and a dtype: numpy ``dtype.kind`` letters, or one type."""
    array = np.asarray(value)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {array.shape}")
    if array.dtype != kind if isinstance(kind, type) else array.dtype.kind not in kind:
        raise ValueError(f"{name} must have dtype {dtype_text}, got dtype {array.dtype}")
    return array


def _torch_dtype(dtype: np.dtype | type) -> torch.dtype:
    """The torch dtype of numpy's `dtype` (``np.float32`` -> ``torch.float32``, ``bool`` -> ``torch.bool``)."""
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _tensors(buffer: Any, names: Sequence[str], index: Any) -> dict[str, torch.Tensor]:
    """CPU copies of `buffer`'s arrays `names` (numpy arrays, or tensors with ``on_device``) at `index`."""
    out = {}
    for k in names:
        value = getattr(buffer, k)[index]
        out[k] = value.cpu().clone() if isinstance(value, torch.Tensor) else torch.from_numpy(value.copy())
    return out


def _load(buffer: Any, state: dict[str, Any], config: Sequence[str], arrays: Sequence[str]) -> None:
    """Check `config` against `buffer`'s, copy each saved array into the leading block of its own, restore the rng."""
    for key in config:
        if tuple(np.atleast_1d(state[key])) != tuple(np.atleast_1d(getattr(buffer, key))):
            raise ValueError(f"state_dict has {key}={state[key]!r}, this buffer {getattr(buffer, key)!r}")
    for key in arrays:
        value, target = np.asarray(state[key]), getattr(buffer, key)
        block = tuple(slice(0, d) for d in value.shape)
        target[block] = torch.from_numpy(value).to(target.device) if isinstance(target, torch.Tensor) else value
    buffer.rng.bit_generator.state = state["rng"]


class _HostToDevice:
    """Moves host arrays to the buffer's device. CPU: the host tensor itself. CUDA: each array is written into a fresh
    pinned host tensor and copied with ``non_blocking=True``; PyTorch's caching host allocator records the copy's
    event and hands the block out again only after the copy has completed, so the host never waits for the GPU (no
    sync) and no later gather overwrites data in flight. Other devices: a plain ``.to(device)``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pinned = device.type == "cuda"

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
        """An uninitialised host tensor to gather into through its ``.numpy()`` view (pinned on CUDA)."""
        return torch.empty(shape, dtype=_torch_dtype(dtype), pin_memory=self.pinned)

    def to_device(self, host: torch.Tensor) -> torch.Tensor:
        """`host` (from `host`) on the device, without a host sync."""
        return host if self.device.type == "cpu" else host.to(self.device, non_blocking=self.pinned)

    def put(self, array: np.ndarray) -> torch.Tensor:
        """A copy of `array` on the device, without a host sync."""
        host = self.host(array.shape, array.dtype)
        host.numpy()[...] = array
        return self.to_device(host)


class AtariReplayBuffer:
    """Replay memory for stacked Atari frames that stores one ``(84, 84) uint8`` frame per env step (a 1M buffer holds
    about 7 GB instead of CleanRL's 28 GB of whole stacks).

    Each of the N envs has a ring of ``S = ceil(capacity / N)`` frame slots. A transition takes one slot: the newest
    frame of its observation, its action, reward, flags and offset in the episode (capped at ``frame_stack - 1``).
    At sampling, the observation of slot ``p`` is frames ``p-3 .. p``, positions before the episode's first slot
    repeating the first frame (gymnasium's ``FrameStackObservation(padding_type="reset")``), and the next observation
    the stack of slot ``p + 1``. An episode's end writes the real final observation's newest frame into an extra slot
    holding no transition, so a full buffer holds ``capacity - (episode ends in it)`` transitions; frames of two
    episodes are never mixed. A first ``add`` caught mid-episode stores the stack's older frames in up to
    ``frame_stack - 1`` extra slots. Sampling is uniform (by rejection) over the transitions whose slot, stack and next
    slot are in the ring (the newest transition of an open episode waits for the next ``add``).

    Args:
        capacity: frame slots, all envs together (≈ transitions, see above); in env steps.
        num_envs: N, the number of envs of the vector env feeding ``add``.
        frame_shape: ``(H, W)`` of one frame.
        frame_stack: frames per observation (4 in DQN).
        device: where `sample` puts its tensors.
        seed: seed of the buffer's sampling generator (``numpy.random.default_rng(seed)``).
        channels_last: gather the stacks straight into the channels_last layout a channels_last `QNetwork` computes
            in (strides ``(4·H·W, 1, 4·W, 4)``): the same values, and the network's uint8 layout copy becomes a no-op,
            for a slower gather (scripts/bench.py times the channels_last update: ``dqn.update.variants``).
        on_device: keep the frames in `device`'s memory (a GPU's) and gather the stacks there, instead of in host
            memory with one copy of every batch's stacks to `device`. The per-slot data (16 bytes) stays on the host,
            where the transitions are drawn with the same generator: the same batches either way. New frames travel
            once, at ``add``; a batch's stack indices, actions, rewards and flags through pinned memory, no sync.

    Raises:
        ValueError: ``capacity < num_envs * (frame_stack + 1)`` (an env's ring must hold one episode start and its
            final frame), ``num_envs < 1``, ``frame_stack < 1``, a bad `frame_shape` or `device`.
    """

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        frame_shape: Sequence[int] = (84, 84),
        frame_stack: int = 4,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        channels_last: bool = False,
        on_device: bool = False,
    ):
        num_envs = check_range("num_envs", num_envs, 1, integer=True)
        frame_stack = check_range("frame_stack", frame_stack, 1, integer=True)
        capacity = check_range("capacity", capacity, 1, integer=True)
        if capacity < num_envs * (frame_stack + 1):
            raise ValueError(
                f"capacity must be >= num_envs * (frame_stack + 1) = {num_envs * (frame_stack + 1)} slots, "
                f"got {capacity}"
            )
        frame_shape = tuple(frame_shape)
        if len(frame_shape) != 2 or any(range_error(d, 1, integer=True) for d in frame_shape):
            raise ValueError(f"frame_shape must be (H, W) with positive integers, got {frame_shape!r}")
        self.capacity = capacity
        self.num_envs = num_envs
        self.frame_shape = tuple(int(d) for d in frame_shape)
        self.frame_stack = frame_stack
        self.device = _check_device(device)
        self.channels_last = bool(channels_last)
        self.on_device = bool(on_device)
        self.slots_per_env = math.ceil(capacity / num_envs)

        n, s = num_envs, self.slots_per_env
        # np.empty: the OS commits the frames' pages only as they are written.
        self.frames = (
            torch.empty((n, s, *self.frame_shape), dtype=torch.uint8, device=self.device)
            if self.on_device
            else np.empty((n, s, *self.frame_shape), dtype=np.uint8)
        )
        self.actions = np.zeros((n, s), dtype=np.int64)
        self.rewards = np.zeros((n, s), dtype=np.float32)
        self.terminated = np.zeros((n, s), dtype=bool)
        self.truncated = np.zeros((n, s), dtype=bool)
        self.is_transition = np.zeros((n, s), dtype=bool)
        self.offset = np.zeros((n, s), dtype=np.uint8)
        self.pos = np.zeros(n, dtype=np.int64)  # slots ever written per env; the next write goes to pos % S
        self.episode_open = np.zeros(n, dtype=bool)  # the next add continues this env's episode
        self.num_transitions = np.zeros(n, dtype=np.int64)  # transition slots in the ring, per env
        self.rng = np.random.default_rng(seed)
        self._frames_flat = self.frames.reshape(n * s, *self.frame_shape)
        self._transfer = _HostToDevice(self.device)
        # on_device: each env's newest stored frame, kept on the host for `add`'s check, and the frames `_write` queued
        # as (flat slot, frame) for one transfer at the end of the `add`.
        self._newest = np.zeros((n, *self.frame_shape), dtype=np.uint8) if self.on_device else None
        self._pending: list[tuple[int, np.ndarray]] = []
        # Lags of the stacked frames, oldest first.
        self._lags = np.arange(frame_stack - 1, -1, -1, dtype=np.int64)

    # Bytes per slot besides the frame: action int64, reward float32, terminated, truncated, is_transition, offset.
    _SLOT_METADATA_BYTES = 8 + 4 + 1 + 1 + 1 + 1

    @staticmethod
    def memory_bytes(capacity: int, num_envs: int = 1, frame_shape: Sequence[int] = (84, 84)) -> int:
        """Bytes the buffer allocates, without allocating: ``num_envs * ceil(capacity / num_envs) * (H * W + 16)``, one
        uint8 frame and 16 bytes of per-slot data (7.07e9 for 1M slots of 84x84); ValueError for `capacity` or
        `num_envs` < 1."""
        capacity = check_range("capacity", capacity, 1, integer=True)
        num_envs = check_range("num_envs", num_envs, 1, integer=True)
        slots = num_envs * math.ceil(capacity / num_envs)
        return slots * (int(np.prod(frame_shape)) + AtariReplayBuffer._SLOT_METADATA_BYTES)

    def __len__(self) -> int:
        """The number of transitions `sample` can draw."""
        s, k = self.slots_per_env, self.frame_stack
        count = int(self.num_transitions.sum()) - int(self.episode_open.sum())
        oldest = np.maximum(self.pos - s, 0)
        # Only the first k - 1 retained slots of an env can have a stack reaching into overwritten slots.
        for e in np.flatnonzero(self.pos > s):
            for q in range(oldest[e], min(oldest[e] + k - 1, self.pos[e])):
                slot = q % s
                if self.is_transition[e, slot] and q - int(self.offset[e, slot]) < oldest[e]:
                    count -= 1
        return count

    def _write(self, env: int, frame: np.ndarray, offset: int, transition: bool) -> int:
        """Write one slot of env `env`; returns its ring index."""
        slot = int(self.pos[env] % self.slots_per_env)
        if self.pos[env] >= self.slots_per_env and self.is_transition[env, slot]:
            self.num_transitions[env] -= 1
        if self.on_device:
            self._pending.append((env * self.slots_per_env + slot, frame))
            self._newest[env] = frame
        else:
            self.frames[env, slot] = frame
        self.offset[env, slot] = offset
        self.is_transition[env, slot] = transition
        self.terminated[env, slot] = False
        self.truncated[env, slot] = False
        self.num_transitions[env] += transition
        self.pos[env] += 1
        return slot

    def _flush(self) -> None:
        """on_device: copy the frames `_write` queued into their slots, one transfer for the whole ``add``."""
        if self._pending:
            slots, frames = zip(*self._pending, strict=True)
            t = self._transfer
            self._frames_flat.index_copy_(0, t.put(np.array(slots, dtype=np.int64)), t.put(np.stack(frames)))
            self._pending.clear()

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store one vector step: N transitions, one per env.

        Args:
            obs: ``(N, 4, 84, 84) uint8``, the observations the actions were taken in.
            next_obs: ``(N, 4, 84, 84) uint8``, the REAL next observations (final observation where an episode ended).
            actions: ``(N,)`` integers.
            rewards: ``(N,)`` floats (stored as float32).
            terminated, truncated: ``(N,) bool``; an env whose episode ended (either flag) starts a new episode at its
                next ``add``, whose `obs` must then be the new episode's first stack.

        Raises:
            ValueError: a wrong shape or dtype (the message names the argument), or `obs` of an env that does not
                continue its previous `next_obs` (the previous step's ``next_obs`` was not this step's ``obs``).
        """
        n, k = self.num_envs, self.frame_stack
        stack_shape = (n, k, *self.frame_shape)
        obs = _check_array("obs", obs, stack_shape, np.uint8, "uint8")
        next_obs = _check_array("next_obs", next_obs, stack_shape, np.uint8, "uint8")
        actions = _check_array("actions", actions, (n,), "iu", "an integer type")
        rewards = _check_array("rewards", rewards, (n,), "fiu", "a real type")
        terminated = _check_array("terminated", terminated, (n,), "b", "bool")
        truncated = _check_array("truncated", truncated, (n,), "b", "bool")
        for e in range(n):
            if self.episode_open[e] and k > 1:
                newest = self._newest[e] if self.on_device else self.frames[e, (self.pos[e] - 1) % self.slots_per_env]
                if not np.array_equal(obs[e, -2], newest):
                    raise ValueError(
                        f"obs[{e}] does not continue env {e}'s previous next_obs (its second-newest frame differs "
                        "from the newest frame stored): pass the previous step's next_obs as obs"
                    )

        s = self.slots_per_env
        for e in range(n):
            if self.episode_open[e]:
                offset = min(int(self.offset[e, (self.pos[e] - 1) % s]) + 1, k - 1)
            else:
                # A fresh episode's stack is k copies of its first frame; a stack caught mid-episode also holds
                # older frames, which get slots of their own (leading repeats collapse into the padding rule).
                first_new = 0
                while first_new < k - 1 and np.array_equal(obs[e, first_new + 1], obs[e, 0]):
                    first_new += 1
                for offset, j in enumerate(range(first_new, k - 1)):
                    self._write(e, obs[e, j], offset, transition=False)
                offset = k - 1 - first_new
            slot = self._write(e, obs[e, -1], offset, transition=True)
            self.actions[e, slot] = actions[e]
            self.rewards[e, slot] = rewards[e]
            self.terminated[e, slot] = terminated[e]
            self.truncated[e, slot] = truncated[e]
            ended = bool(terminated[e] or truncated[e])
            if ended:
                self._write(e, next_obs[e, -1], min(offset + 1, k - 1), transition=False)
            self.episode_open[e] = not ended
        self._flush()

    def truncate_open_episodes(self, next_obs: np.ndarray) -> None:
        """End every env's open episode as truncated at its last transition, whose real next observation is
        ``next_obs`` ``(N, 4, 84, 84) uint8``: for a resume whose envs restart their games (no exact env state), so
        that no frame stack joins the old game to the new one and the next ``add`` may start a new episode."""
        for e in np.flatnonzero(self.episode_open):
            last = int((self.pos[e] - 1) % self.slots_per_env)
            self.truncated[e, last] = True
            self._write(e, next_obs[e, -1], min(int(self.offset[e, last]) + 1, self.frame_stack - 1), transition=False)
            self.episode_open[e] = False
        self._flush()

    def _draw(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Env indices and absolute slot positions of `batch_size` valid transitions, uniformly."""
        s = self.slots_per_env
        filled = np.minimum(self.pos, s)
        oldest = self.pos - filled
        ends = np.cumsum(filled)
        env = np.empty(batch_size, dtype=np.int64)
        position = np.empty(batch_size, dtype=np.int64)
        todo = np.arange(batch_size)
        while todo.size:
            u = rng.integers(0, ends[-1], size=todo.size)
            e = np.searchsorted(ends, u, side="right")
            p = oldest[e] + u - (ends[e] - filled[e])
            slot = p % s
            valid = self.is_transition[e, slot] & (p <= self.pos[e] - 2) & (p - self.offset[e, slot] >= oldest[e])
            env[todo[valid]] = e[valid]
            position[todo[valid]] = p[valid]
            todo = todo[~valid]
        return env, position

    def _stack_index(self, env: np.ndarray, position: np.ndarray) -> np.ndarray:
        """``(B, frame_stack)`` flat indices into the frames of the stack ending at each position."""
        s = self.slots_per_env
        offset = self.offset[env, position % s].astype(np.int64)
        positions = position[:, None] - np.minimum(self._lags[None, :], offset[:, None])
        return env[:, None] * s + positions % s

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> ReplayBatch:
        """Draw `batch_size` transitions uniformly (with replacement) from the valid stored ones, with `rng` or the
        buffer's own generator (diagnostics pass their own, so they never change the training batches).

        Returns:
            `ReplayBatch` on the buffer's device: observations and next_observations ``(B, 4, 84, 84) uint8``, actions
            ``(B,) int64``, rewards ``(B,) float32``, dones ``(B,) float32`` (terminated, not truncated).

        Raises:
            ValueError: `batch_size` < 1 or larger than ``len(self)``.
        """
        batch_size, stored = check_range("batch_size", batch_size, 1, integer=True), len(self)
        if batch_size > stored:
            raise ValueError(f"batch_size {batch_size} exceeds the {stored} transitions the buffer can sample")
        return self._gather(*self._draw(batch_size, self.rng if rng is None else rng))

    def example_batch(self, batch_size: int) -> ReplayBatch:
        """A batch laid out exactly as `sample` returns it (shapes, dtypes, strides, device), with whatever the first
        slots hold: what compiling the update needs before any data (fire_rl.runtime.warm_up)."""
        zeros = np.zeros(check_range("batch_size", batch_size, 1, integer=True), dtype=np.int64)
        return self._gather(zeros, zeros)

    def _gather(self, env: np.ndarray, position: np.ndarray) -> ReplayBatch:
        """The transitions at (env, absolute slot position), (B,) int64 each, as a `ReplayBatch`."""
        batch_size = len(env)
        slot = position % self.slots_per_env
        stack_shape = (batch_size, self.frame_stack, *self.frame_shape)

        t = self._transfer
        out = {}
        index = np.stack([self._stack_index(env, position), self._stack_index(env, position + 1)])  # (2, B, stack)
        if self.on_device:  # gathered on the device: (2, B, stack, H, W), or (2, B, H, W, stack) for channels_last
            stacks = self._frames_flat.index_select(0, t.put(index).view(-1)).view(*index.shape, *self.frame_shape)
            if self.channels_last:
                stacks = stacks.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
            out["observations"], out["next_observations"] = stacks.unbind(0)
        else:
            for name, stack_index in zip(("observations", "next_observations"), index, strict=True):
                if self.channels_last:  # (B, H, W, stack) in memory, seen as (B, stack, H, W)
                    host = t.host((batch_size, *self.frame_shape, self.frame_stack), np.dtype(np.uint8))
                    for k in range(self.frame_stack):
                        host.numpy()[..., k] = self._frames_flat[stack_index[:, k]]
                    out[name] = t.to_device(host).permute(0, 3, 1, 2)
                else:
                    host = t.host(stack_shape, np.dtype(np.uint8))
                    np.take(self._frames_flat, stack_index, axis=0, out=host.numpy(), mode="clip")
                    out[name] = t.to_device(host)
        for name, source in (("actions", self.actions), ("rewards", self.rewards)):
            host = t.host((batch_size,), source.dtype)
            np.take(source.reshape(-1), env * self.slots_per_env + slot, out=host.numpy(), mode="clip")
            out[name] = t.to_device(host)
        out["dones"] = t.put(self.terminated[env, slot].astype(np.float32))
        return ReplayBatch(**out)

    _CONFIG = ("capacity", "num_envs", "frame_shape", "frame_stack")
    _SLOTS = ("frames", "actions", "rewards", "terminated", "truncated", "is_transition", "offset")
    _COUNTERS = ("pos", "episode_open", "num_transitions")

    def state_dict(self) -> dict[str, Any]:
        """Contents (filled slots only, as CPU tensors), counters and generator state, for an opt-in checkpoint;
        loads with ``torch.load(..., weights_only=True)``."""
        filled = int(min(self.pos.max(), self.slots_per_env))
        config = {k: getattr(self, k) for k in self._CONFIG}
        arrays = _tensors(self, self._SLOTS, np.s_[:, :filled]) | _tensors(self, self._COUNTERS, np.s_[:])
        return config | arrays | {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if the buffer's configuration differs."""
        _load(self, state, self._CONFIG, self._SLOTS + self._COUNTERS)
        if self.on_device:
            for e in np.flatnonzero(self.pos):
                self._newest[e] = self.frames[e, (self.pos[e] - 1) % self.slots_per_env].cpu().numpy()


class ReplayBuffer:
    """Replay memory for vector observations and continuous actions (the SAC agent), one ring over all envs.

    Stores raw observations (normalisation such as SimBa's RSNorm is the agent's, at sampling time) and the real
    next observation of every transition explicitly (vectors are small), so truncation needs no special slot.

    Args:
        capacity: transitions (env steps), all envs together.
        obs_shape: shape of one observation, e.g. ``(obs_dim,)``.
        action_shape: shape of one action, e.g. ``(act_dim,)``.
        device: where `sample` puts its tensors.
        seed: seed of the sampling generator.
        on_device: keep the transitions in `device`'s memory (a GPU's) and gather batches there; the indices are drawn
            on the host with the same generator (the same batches either way) and copied through pinned memory, no sync.

    Raises:
        ValueError: capacity < 1, an empty or non-positive shape, a bad device.
    """

    _CONFIG = ("capacity", "obs_shape", "action_shape")
    _ARRAYS = ("observations", "next_observations", "actions", "rewards", "terminated", "truncated")
    _DTYPES = dict(zip(_ARRAYS, (np.float32, np.float32, np.float32, np.float32, np.bool_, np.bool_), strict=True))

    def __init__(
        self,
        capacity: int,
        obs_shape: Sequence[int],
        action_shape: Sequence[int],
        device: str | torch.device = "cpu",
        seed: int | None = None,
        on_device: bool = False,
    ):
        self.capacity = check_range("capacity", capacity, 1, integer=True)
        self.obs_shape = self._check_shape("obs_shape", obs_shape)
        self.action_shape = self._check_shape("action_shape", action_shape)
        self.device = _check_device(device)
        self.on_device = bool(on_device)
        c = self.capacity
        shapes = (self.obs_shape, self.obs_shape, self.action_shape, (), (), ())
        for name, shape in zip(self._ARRAYS, shapes, strict=True):
            size, dtype = (c, *shape), self._DTYPES[name]
            if on_device:
                setattr(self, name, torch.zeros(size, dtype=_torch_dtype(dtype), device=self.device))
            else:
                setattr(self, name, np.zeros(size, dtype))
        self.pos = 0  # transitions ever added; the next goes to pos % capacity
        self.rng = np.random.default_rng(seed)
        self._transfer = _HostToDevice(self.device)

    @staticmethod
    def _check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
        try:
            out = tuple(int(d) for d in shape)
        except TypeError as e:
            raise ValueError(f"{name} must be a tuple of positive integers, got {shape!r}") from e
        if not out or min(out) < 1:
            raise ValueError(f"{name} must be a non-empty tuple of positive integers, got {shape!r}")
        return out

    @staticmethod
    def memory_bytes(capacity: int, obs_shape: Sequence[int], action_shape: Sequence[int]) -> int:
        """Bytes the buffer allocates: ``capacity * (8 * obs_dim + 4 * act_dim + 6)`` (obs and next_obs, actions and
        reward float32, two flags); ValueError for `capacity` < 1."""
        capacity = check_range("capacity", capacity, 1, integer=True)
        return capacity * (8 * int(np.prod(obs_shape)) + 4 * int(np.prod(action_shape)) + 4 + 2)

    def __len__(self) -> int:
        """The number of stored transitions (all can be sampled)."""
        return min(self.pos, self.capacity)

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Store N transitions, one per env.

        Args:
            obs, next_obs: ``(N, *obs_shape)`` floats (stored as float32); next_obs is the REAL next observation.
            actions: ``(N, *action_shape)`` floats (stored as float32).
            rewards: ``(N,)`` reals.
            terminated, truncated: ``(N,) bool``.

        Raises:
            ValueError: a wrong shape or dtype (the message names the argument), or N > capacity.
        """
        obs = np.asarray(obs)
        if obs.ndim != len(self.obs_shape) + 1:
            raise ValueError(f"obs must have shape (N, *{self.obs_shape}), got shape {obs.shape}")
        n = obs.shape[0]
        if n > self.capacity:
            raise ValueError(f"cannot add {n} transitions at once to a buffer of capacity {self.capacity}")
        obs = _check_array("obs", obs, (n, *self.obs_shape), "f", "a floating type")
        next_obs = _check_array("next_obs", next_obs, (n, *self.obs_shape), "f", "a floating type")
        actions = _check_array("actions", actions, (n, *self.action_shape), "f", "a floating type")
        rewards = _check_array("rewards", rewards, (n,), "fiu", "a real type")
        terminated = _check_array("terminated", terminated, (n,), "b", "bool")
        truncated = _check_array("truncated", truncated, (n,), "b", "bool")
        index = (self.pos + np.arange(n)) % self.capacity
        values = (obs, next_obs, actions, rewards, terminated, truncated)
        if self.on_device:
            t, device_index = self._transfer, self._transfer.put(index)
            for name, value in zip(self._ARRAYS, values, strict=True):
                getattr(self, name).index_copy_(0, device_index, t.put(value.astype(self._DTYPES[name], copy=False)))
        else:
            for name, value in zip(self._ARRAYS, values, strict=True):
                getattr(self, name)[index] = value
        self.pos += n

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> ReplayBatch:
        """Draw `batch_size` transitions uniformly (with replacement), with `rng` or the buffer's own generator.

        Returns:
            `ReplayBatch` on the buffer's device: observations and next_observations ``(B, *obs_shape) float32``,
            actions ``(B, *action_shape) float32``, rewards ``(B,) float32``, dones ``(B,) float32`` (terminated).

        Raises:
            ValueError: `batch_size` < 1 or larger than ``len(self)``.
        """
        batch_size = check_range("batch_size", batch_size, 1, integer=True)
        if batch_size > len(self):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(self)} transitions stored")
        return self._gather((self.rng if rng is None else rng).integers(0, len(self), size=batch_size))

    def example_batch(self, batch_size: int) -> ReplayBatch:
        """A batch laid out exactly as `sample` returns it, with whatever the first slot holds (for compiling)."""
        return self._gather(np.zeros(check_range("batch_size", batch_size, 1, integer=True), dtype=np.int64))

    def _gather(self, index: np.ndarray) -> ReplayBatch:
        """The transitions at `index`, (B,) int64, as a `ReplayBatch`."""
        batch_size = len(index)
        t = self._transfer
        names = ("observations", "actions", "rewards", "next_observations")
        if self.on_device:
            device_index = t.put(index)
            out = {name: getattr(self, name).index_select(0, device_index) for name in names}
            out["dones"] = self.terminated.index_select(0, device_index).float()
            return ReplayBatch(**out)
        out = {}
        for name in names:
            source = getattr(self, name)
            host = t.host((batch_size, *source.shape[1:]), source.dtype)
            np.take(source, index, axis=0, out=host.numpy(), mode="clip")
            out[name] = t.to_device(host)
        out["dones"] = t.put(self.terminated[index].astype(np.float32))
        return ReplayBatch(**out)

    def state_dict(self) -> dict[str, Any]:
        """Contents (filled part only, as CPU tensors), pointer and generator state; loads with weights_only=True."""
        state = {k: getattr(self, k) for k in self._CONFIG} | _tensors(self, self._ARRAYS, np.s_[: len(self)])
        return state | {"pos": self.pos, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; ValueError if the buffer's configuration differs."""
        _load(self, state, self._CONFIG, self._ARRAYS)
        self.pos = int(state["pos"])
