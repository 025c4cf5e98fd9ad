"""Replay buffers against real ALE stacks and an independent frame-stack reference (fire_rl/buffers.py)."""

from __future__ import annotations

import collections
import hashlib
import io

import numpy as np
import pytest
import torch

from fire_rl.buffers import AtariReplayBuffer, ReplayBatch, ReplayBuffer
from fire_rl.envs.atari import make_atari_env, real_next_obs


def _key(obs, action, reward, next_obs, done) -> bytes:
    """A digest of one transition (the stacks byte for byte)."""
    h = hashlib.blake2b(digest_size=16)
    for part in (np.ascontiguousarray(obs), np.ascontiguousarray(next_obs)):
        h.update(part.tobytes())
    h.update(np.int64(action).tobytes() + np.float32(reward).tobytes() + np.float32(done).tobytes())
    return h.digest()


def _sampled_keys(rb: AtariReplayBuffer | ReplayBuffer, draws: int, batch: int = 512) -> list[bytes]:
    keys = []
    batch = min(batch, len(rb))
    for _ in range(-(-draws // batch)):
        b = rb.sample(batch)
        obs, nxt = b.observations.numpy(), b.next_observations.numpy()
        for j in range(batch):
            keys.append(_key(obs[j], b.actions[j].item(), b.rewards[j].item(), nxt[j], b.dones[j].item()))
    return keys


class Recording(collections.namedtuple("Recording", "preset steps num_envs")):
    """`steps`: per vector step (obs, real_next_obs, actions, rewards, terminated, truncated, next_obs from step)."""


def _record(preset: str, max_episode_steps: int, num_steps: int, num_envs: int = 2, seed: int = 0) -> Recording:
    envs = make_atari_env("ALE/Breakout-v5", num_envs, seed, preset=preset, max_episode_steps=max_episode_steps)
    obs, _ = envs.reset(seed=seed)
    steps = []
    for _ in range(num_steps):
        actions = envs.action_space.sample()
        next_obs, rewards, term, trunc, infos = envs.step(actions)
        real = real_next_obs(next_obs, infos, term, trunc)
        steps.append((obs, real, actions, rewards, term, trunc, next_obs))
        obs = next_obs
    envs.close()
    return Recording(preset, steps, num_envs)


@pytest.fixture(scope="module", params=[("cleanrl", 50), ("fire-paper", 60)], ids=["cleanrl", "fire-paper"])
def recording(request) -> Recording:
    preset, cap = request.param
    return _record(preset, cap, num_steps=260)


def _transitions(rec: Recording, start: int = 0) -> dict[bytes, list[tuple[int, int, bool, bool]]]:
    """key -> [(env, step, terminated, truncated)] of every recorded transition from vector step `start` on."""
    out: dict[bytes, list] = collections.defaultdict(list)
    for t, (obs, real, actions, rewards, term, trunc, _) in enumerate(rec.steps[start:], start):
        for e in range(rec.num_envs):
            out[_key(obs[e], actions[e], rewards[e], real[e], float(term[e]))].append((e, t, term[e], trunc[e]))
    return out


def _fill(rb: AtariReplayBuffer, rec: Recording, start: int = 0) -> None:
    for obs, real, actions, rewards, term, trunc, _ in rec.steps[start:]:
        rb.add(obs, real, actions, rewards, term, trunc)


def test_recording_crosses_episode_ends(recording):
    term = np.array([s[4] for s in recording.steps])
    trunc = np.array([s[5] for s in recording.steps])
    assert trunc.sum() >= 2, "the time limit must truncate some episodes"
    if recording.preset == "cleanrl":
        assert term.sum() >= 2, "life losses must end some cleanrl training episodes"
    for _, real, _, _, term_t, trunc_t, reset_obs in recording.steps:
        for e in np.flatnonzero(term_t | trunc_t):
            # The real final observation is not the next episode's first one, so storing the wrong one shows.
            assert not np.array_equal(real[e], reset_obs[e])
            assert (reset_obs[e] == reset_obs[e, :1]).all(), "a new episode's stack is 4 copies of its first frame"


def test_every_sample_is_a_real_transition_and_all_are_sampled(recording):
    rb = AtariReplayBuffer(10_000, recording.num_envs, seed=1)
    _fill(rb, recording)
    expected = _transitions(recording)
    last = recording.steps[-1]
    open_keys = {
        _key(last[0][e], last[2][e], last[3][e], last[1][e], float(last[4][e]))
        for e in range(recording.num_envs)
        if not (last[4][e] or last[5][e])
    }
    assert len(rb) == len(recording.steps) * recording.num_envs - len(open_keys)
    seen = _sampled_keys(rb, draws=10_240)
    assert set(seen) <= set(expected), "a sampled transition differs from every transition the env produced"
    assert set(expected) - open_keys <= set(seen), "some stored transitions are never sampled"
    truncated = [info for k in set(seen) for info in expected[k] if info[3]]
    assert truncated, "truncated transitions (next_obs = the real final obs) must be among the samples"


def test_dones_are_terminations_only(recording):
    rb = AtariReplayBuffer(10_000, recording.num_envs, seed=2)
    _fill(rb, recording)
    expected = _transitions(recording)
    batch = rb.sample(len(rb))
    flags = set()
    for j in range(len(rb)):
        key = _key(
            batch.observations[j].numpy(),
            batch.actions[j].item(),
            batch.rewards[j].item(),
            batch.next_observations[j].numpy(),
            batch.dones[j].item(),
        )
        assert key in expected, "the sampled transition (dones included) was never produced by the env"
        flags.update((bool(term), bool(trunc)) for _, _, term, trunc in expected[key])
    assert (False, True) in flags, "truncated transitions (dones = 0) must be sampled"
    if recording.preset == "cleanrl":
        assert (True, False) in flags, "terminated transitions (dones = 1) must be sampled"


def test_ring_overwrite_keeps_correct_stacks(recording):
    slots = 48
    rb = AtariReplayBuffer(recording.num_envs * slots, recording.num_envs, seed=3)
    _fill(rb, recording)
    assert 0.75 * rb.capacity <= len(rb) <= rb.capacity
    expected = _transitions(recording)
    seen = set(_sampled_keys(rb, draws=4096))
    assert seen <= set(expected)
    last_step = len(recording.steps) - 1
    for key in seen:
        # One slot per step plus one per episode end: nothing older than `slots` steps survives.
        assert any(t > last_step - slots for _, t, _, _ in expected[key])
    recent = _transitions(recording, start=last_step - 30)
    recent_closed = {
        k for k, infos in recent.items() if any(t < last_step or info_t or info_r for _, t, info_t, info_r in infos)
    }
    assert recent_closed <= seen, "recent transitions must survive the overwrite"


def test_buffer_started_mid_episode(recording):
    rb = AtariReplayBuffer(10_000, recording.num_envs, seed=4)
    # A few steps into the first episodes, where the stacks hold distinct frames (Breakout's first frames are static,
    # for how many steps depends on the preset's reset wrappers).
    start = next(t for t in range(1, 30) if not (recording.steps[t][0][0] == recording.steps[t][0][0, :1]).all())
    assert not any(recording.steps[t][4].any() or recording.steps[t][5].any() for t in range(start)), "mid-episode"
    _fill(rb, recording, start=start)
    last = recording.steps[-1]
    open_envs = sum(not (last[4][e] or last[5][e]) for e in range(recording.num_envs))
    assert len(rb) == (len(recording.steps) - start) * recording.num_envs - open_envs
    seen = set(_sampled_keys(rb, draws=12 * len(rb)))
    expected = _transitions(recording, start=start)
    assert seen <= set(expected)
    assert len(seen) >= len(expected) - open_envs


def _synthetic_stream(num_envs: int, frame_stack: int, steps: int, seed: int):
    """Episodes of random lengths whose frames are unique ids; stacks made with a deque as FrameStackObservation."""
    rng = np.random.default_rng(seed)
    counter = iter(range(1, 1 << 30))

    def frame() -> np.ndarray:
        return np.frombuffer(np.uint32(next(counter)).tobytes(), dtype=np.uint8).reshape(2, 2)

    def fresh() -> collections.deque:
        first = frame()
        return collections.deque([first] * frame_stack, maxlen=frame_stack)

    queues = [fresh() for _ in range(num_envs)]
    for _ in range(steps):
        obs = np.stack([np.stack(q) for q in queues])
        end = rng.random(num_envs)
        term, trunc = end < 0.08, (end >= 0.08) & (end < 0.14)
        real = np.empty_like(obs)
        for e, q in enumerate(queues):
            q.append(frame())
            real[e] = np.stack(q)
            if term[e] or trunc[e]:
                queues[e] = fresh()
        actions = rng.integers(0, 18, size=num_envs)
        rewards = rng.normal(size=num_envs).astype(np.float32)
        yield obs, real, actions, rewards, term, trunc


@pytest.mark.parametrize("frame_stack", [1, 2, 4])
@pytest.mark.parametrize("num_envs", [1, 3])
@pytest.mark.parametrize("slots_per_env", [12, 1000])
@pytest.mark.parametrize("start", [0, 3], ids=["fresh", "mid-episode"])
def test_synthetic_stacks_match_reference(frame_stack, num_envs, slots_per_env, start):
    rb = AtariReplayBuffer(slots_per_env * num_envs, num_envs, frame_shape=(2, 2), frame_stack=frame_stack, seed=0)
    window: list[set[bytes]] = []
    everything: set[bytes] = set()
    stream = list(_synthetic_stream(num_envs, frame_stack, 200 + start, seed=frame_stack))[start:]
    for obs, real, actions, rewards, term, trunc in stream:
        rb.add(obs, real, actions, rewards, term, trunc)
        keys = {_key(obs[e], actions[e], rewards[e], real[e], float(term[e])) for e in range(num_envs)}
        window.append(keys)
        everything |= keys
    seen = set(_sampled_keys(rb, draws=12 * len(rb)))
    assert seen <= everything
    if slots_per_env >= 1000:
        assert len(rb) == 200 * num_envs - sum(not (term[e] or trunc[e]) for e in range(num_envs))
        assert len(seen) == len(rb)
    else:
        assert len(rb) <= slots_per_env * num_envs
        assert seen <= set().union(*window[-slots_per_env:])


def test_memory_bytes():
    one_million = AtariReplayBuffer.memory_bytes(1_000_000)
    assert abs(one_million - 1_000_000 * 84 * 84) <= 0.10 * 1_000_000 * 84 * 84
    rb = AtariReplayBuffer(1_001, 4, seed=0)
    allocated = sum(
        a.nbytes for a in (rb.frames, rb.actions, rb.rewards, rb.terminated, rb.truncated, rb.is_transition, rb.offset)
    )
    assert AtariReplayBuffer.memory_bytes(1_001, 4) == allocated
    vb = ReplayBuffer(100, (17,), (6,))
    arrays = (vb.observations, vb.next_observations, vb.actions, vb.rewards, vb.terminated, vb.truncated)
    assert ReplayBuffer.memory_bytes(100, (17,), (6,)) == sum(a.nbytes for a in arrays)


def _fill_synthetic(rb: AtariReplayBuffer, steps: int, seed: int) -> None:
    for obs, real, actions, rewards, term, trunc in _synthetic_stream(rb.num_envs, rb.frame_stack, steps, seed):
        rb.add(obs, real, actions, rewards, term, trunc)


def _assert_same(a: ReplayBatch, b: ReplayBatch) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_sampling_reproducible_and_seed_dependent():
    batches = []
    for seed in (7, 7, 8):
        rb = AtariReplayBuffer(400, 2, frame_shape=(2, 2), seed=seed)
        _fill_synthetic(rb, 150, seed=0)
        batches.append(rb.sample(64))
    _assert_same(batches[0], batches[1])
    assert not torch.equal(batches[0].actions, batches[2].actions) or not torch.equal(
        batches[0].observations, batches[2].observations
    )


def test_channels_last_sampling_gives_the_same_batches(recording):
    # Same seed, same stream: the layouts must hold the same values, drawn in the same order.
    plain = AtariReplayBuffer(10_000, recording.num_envs, seed=3)
    fast = AtariReplayBuffer(10_000, recording.num_envs, seed=3, channels_last=True)
    _fill(plain, recording)
    _fill(fast, recording)
    for _ in range(3):
        a, b = plain.sample(64), fast.sample(64)
        for field in a._fields:
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        for obs in (b.observations, b.next_observations):
            assert obs.shape == (64, 4, 84, 84) and obs.is_contiguous(memory_format=torch.channels_last)
            assert not obs.is_contiguous()


def test_sample_dtypes_and_shapes():
    rb = AtariReplayBuffer(400, 2, seed=0)
    stream = _synthetic_stream(2, 4, 30, seed=0)
    for obs, real, actions, rewards, term, trunc in stream:
        big = np.repeat(np.repeat(obs, 42, axis=2), 42, axis=3)
        big_real = np.repeat(np.repeat(real, 42, axis=2), 42, axis=3)
        rb.add(big, big_real, actions, rewards, term, trunc)
    b = rb.sample(32)
    assert b.observations.shape == (32, 4, 84, 84) and b.observations.dtype == torch.uint8
    assert b.next_observations.shape == (32, 4, 84, 84) and b.next_observations.dtype == torch.uint8
    assert b.actions.shape == (32,) and b.actions.dtype == torch.int64
    assert b.rewards.shape == (32,) and b.rewards.dtype == torch.float32
    assert b.dones.shape == (32,) and b.dones.dtype == torch.float32
    assert set(b.dones.tolist()) <= {0.0, 1.0}


def test_state_dict_round_trip():
    rb = AtariReplayBuffer(60, 2, frame_shape=(2, 2), seed=5)
    _fill_synthetic(rb, 80, seed=1)  # wrapped around
    rb.sample(16)  # the generator has moved
    blob = io.BytesIO()
    torch.save(rb.state_dict(), blob)
    blob.seek(0)
    clone = AtariReplayBuffer(60, 2, frame_shape=(2, 2), seed=123)
    clone.load_state_dict(torch.load(blob, weights_only=True))
    assert len(clone) == len(rb)
    _assert_same(rb.sample(32), clone.sample(32))
    # Both go on identically: adding continues the open episodes.
    more = list(_synthetic_stream(2, 4, 100, seed=1))[80:]
    for buf in (rb, clone):
        for step in more:
            buf.add(*step)
    _assert_same(rb.sample(32), clone.sample(32))
    with pytest.raises(ValueError, match="capacity"):
        AtariReplayBuffer(64, 2, frame_shape=(2, 2)).load_state_dict(rb.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"capacity": 0, "num_envs": 1}, "capacity"),
        ({"capacity": 9, "num_envs": 2}, "capacity"),
        ({"capacity": 100, "num_envs": 0}, "num_envs"),
        ({"capacity": 100, "num_envs": 1, "frame_stack": 0}, "frame_stack"),
        ({"capacity": 100, "num_envs": 1, "frame_shape": (84,)}, "frame_shape"),
        ({"capacity": 100, "num_envs": 1, "device": "nonsense"}, "device"),
    ],
)
def test_atari_buffer_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AtariReplayBuffer(**kwargs)


def test_atari_buffer_bad_add_and_sample():
    rb = AtariReplayBuffer(100, 2, frame_shape=(2, 2))
    obs = np.zeros((2, 4, 2, 2), np.uint8)
    ok = {"actions": np.zeros(2, np.int64), "rewards": np.zeros(2), "terminated": np.zeros(2, bool)}
    ok["truncated"] = np.zeros(2, bool)
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 4, 2, 2\), got shape \(1, 4, 2, 2\)"):
        rb.add(obs[:1], obs, **ok)
    with pytest.raises(ValueError, match="next_obs must have dtype uint8, got dtype float32"):
        rb.add(obs, obs.astype(np.float32), **ok)
    with pytest.raises(ValueError, match="actions must have dtype an integer type, got dtype float64"):
        rb.add(obs, obs, **{**ok, "actions": np.zeros(2)})
    with pytest.raises(ValueError, match="terminated must have dtype bool, got dtype int64"):
        rb.add(obs, obs, **{**ok, "terminated": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match=r"batch_size 1 exceeds the 0 transitions"):
        rb.sample(1)
    next_obs = obs.copy()
    next_obs[:, -1] = 9
    rb.add(obs, next_obs, **ok)
    rb.add(next_obs, next_obs, **ok)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        rb.sample(0)
    with pytest.raises(ValueError, match=r"batch_size 3 exceeds the 2 transitions"):
        rb.sample(3)
    with pytest.raises(ValueError, match=r"obs\[0\] does not continue"):
        rb.add(obs + 1, obs, **ok)


@pytest.mark.parametrize("obs_shape", [(3,), (2, 5)])
@pytest.mark.parametrize("obs_dtype", [np.float32, np.float64])
def test_vector_buffer_rows_and_wrap(obs_shape, obs_dtype):
    capacity, n = 50, 3
    rb = ReplayBuffer(capacity, obs_shape, (4,), device="cpu", seed=0)
    rng = np.random.default_rng(0)
    rows = []
    for t in range(30):  # 90 transitions: wraps
        obs = rng.normal(size=(n, *obs_shape)).astype(obs_dtype)
        next_obs = rng.normal(size=(n, *obs_shape)).astype(obs_dtype)
        actions = rng.uniform(-1, 1, size=(n, 4)).astype(np.float32)
        rewards = rng.normal(size=n)
        term, trunc = rng.random(n) < 0.2, rng.random(n) < 0.2
        rb.add(obs, next_obs, actions, rewards, term, trunc)
        for e in range(n):
            rows.append((t * n + e, obs[e], next_obs[e], actions[e], rewards[e], term[e]))
    assert len(rb) == capacity
    live = {
        _key(o.astype(np.float32), 0, np.float32(r), no.astype(np.float32), float(d)) + a.tobytes()
        for i, o, no, a, r, d in rows
        if i >= len(rows) - capacity
    }
    got = set()
    for _ in range(8):
        b = rb.sample(capacity)
        assert b.observations.dtype == torch.float32 and b.observations.shape == (capacity, *obs_shape)
        assert b.actions.shape == (capacity, 4) and b.dones.dtype == torch.float32
        got |= {
            _key(b.observations[j].numpy(), 0, b.rewards[j].item(), b.next_observations[j].numpy(), b.dones[j].item())
            + b.actions[j].numpy().tobytes()
            for j in range(capacity)
        }
    assert got <= live
    assert len(got) > 0.9 * capacity


def test_vector_buffer_reproducible_state_dict_and_errors():
    def filled(seed):
        rb = ReplayBuffer(20, (3,), (2,), seed=seed)
        rng = np.random.default_rng(1)
        for _ in range(9):
            rb.add(
                rng.normal(size=(3, 3)),
                rng.normal(size=(3, 3)),
                rng.normal(size=(3, 2)),
                rng.normal(size=3),
                rng.random(3) < 0.5,
                np.zeros(3, bool),
            )
        return rb

    a, b = filled(3), filled(3)
    _assert_same(a.sample(10), b.sample(10))
    blob = io.BytesIO()
    torch.save(a.state_dict(), blob)
    blob.seek(0)
    c = ReplayBuffer(20, (3,), (2,), seed=99)
    c.load_state_dict(torch.load(blob, weights_only=True))
    _assert_same(a.sample(10), c.sample(10))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, (3,), (2,))
    with pytest.raises(ValueError, match="obs_shape"):
        ReplayBuffer(10, (), (2,))
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 3\), got shape \(2, 4\)"):
        c.add(np.zeros((2, 4)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool))
    with pytest.raises(ValueError, match="actions must have dtype a floating type, got dtype int64"):
        c.add(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2), np.int64), np.zeros(2), np.zeros(2, bool),
              np.zeros(2, bool))  # fmt: skip
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got -1"):
        c.sample(-1)
    with pytest.raises(ValueError, match="batch_size 21 exceeds"):
        c.sample(21)


def _saved(rb) -> dict:
    blob = io.BytesIO()
    torch.save(rb.state_dict(), blob)
    blob.seek(0)
    return torch.load(blob, weights_only=True)


def _vector_steps(steps: int, n: int = 3, seed: int = 1) -> list[tuple]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), rng.normal(size=n),
             rng.random(n) < 0.3, rng.random(n) < 0.1) for _ in range(steps)]  # fmt: skip


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_atari_memory_on_the_device_gives_the_same_batches(recording, device, channels_last):
    # on_device moves the frames, not the draws: the same batches as host memory, in the same layout, and checkpoints
    # that load into either kind (a run may resume with or without --buffer-device).
    host = AtariReplayBuffer(10_000, recording.num_envs, device=device, seed=3, channels_last=channels_last)
    dev = AtariReplayBuffer(10_000, recording.num_envs, device=device, seed=3, channels_last=channels_last,
                            on_device=True)  # fmt: skip
    assert isinstance(dev.frames, torch.Tensor) and dev.frames.device.type == device
    half = len(recording.steps) // 2
    _fill(host, recording)
    for obs, real, actions, rewards, term, trunc, _ in recording.steps[:half]:
        dev.add(obs, real, actions, rewards, term, trunc)
    swapped = AtariReplayBuffer(10_000, recording.num_envs, device=device, seed=0, channels_last=channels_last)
    swapped.load_state_dict(_saved(dev))  # device memory -> host memory, mid-episode
    back = AtariReplayBuffer(10_000, recording.num_envs, device=device, seed=0, channels_last=channels_last,
                             on_device=True)  # fmt: skip
    for rb in (dev, swapped):
        _fill(rb, recording, start=half)
    back.load_state_dict(_saved(swapped))  # and back
    assert len(host) == len(dev) == len(swapped) == len(back)
    for _ in range(3):
        batches = [rb.sample(64) for rb in (host, dev, swapped, back)]
        for b in batches[1:]:
            _assert_same(batches[0], b)
        for obs in (batches[1].observations, batches[1].next_observations):
            assert obs.device.type == device and obs.shape == (64, 4, 84, 84)
            assert obs.is_contiguous(memory_format=torch.channels_last) == channels_last
    # The continuity check reads the host copy of the newest frames, also after a load: a stack that does not continue
    # the open episodes is refused.
    obs, real, actions, rewards, term, trunc, _ = recording.steps[0]
    for rb in (dev, back):
        assert rb.episode_open.any()
        with pytest.raises(ValueError, match="does not continue"):
            rb.add(obs * 0 + 1, real, actions, rewards, term, trunc)


@pytest.mark.parametrize("device", DEVICES)
def test_vector_memory_on_the_device_gives_the_same_batches(device):
    steps = _vector_steps(12)  # 36 transitions into 20 slots: wraps
    host = ReplayBuffer(20, (3,), (2,), device=device, seed=4)
    dev = ReplayBuffer(20, (3,), (2,), device=device, seed=4, on_device=True)
    assert isinstance(dev.observations, torch.Tensor) and dev.terminated.dtype == torch.bool
    for step in steps:
        host.add(*step)
        dev.add(*step)
    swapped = ReplayBuffer(20, (3,), (2,), device=device, seed=0)
    swapped.load_state_dict(_saved(dev))
    back = ReplayBuffer(20, (3,), (2,), device=device, seed=0, on_device=True)
    back.load_state_dict(_saved(swapped))
    for _ in range(3):
        batches = [rb.sample(16) for rb in (host, dev, swapped, back)]
        for b in batches[1:]:
            _assert_same(batches[0], b)
        assert all(t.device.type == device for t in batches[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("on_device", [False, True], ids=["host-memory", "device-memory"])
def test_cuda_adding_and_sampling_never_sync_the_host(on_device):
    atari = AtariReplayBuffer(400, 2, frame_shape=(2, 2), device="cuda", seed=11, on_device=on_device)
    vector = ReplayBuffer(50, (3,), (2,), device="cuda", seed=11, on_device=on_device)
    stream, steps = list(_synthetic_stream(2, 4, 150, seed=2)), _vector_steps(60)
    for step in stream[:100]:
        atari.add(*step)
    for step in steps[:30]:
        vector.add(*step)
    reference = AtariReplayBuffer(400, 2, frame_shape=(2, 2), seed=11)  # host memory, CPU tensors
    for step in stream[:100]:
        reference.add(*step)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in stream[100:]:
            atari.add(*step)
        for step in steps[30:]:
            vector.add(*step)
        batches = [atari.sample(64) for _ in range(20)] + [vector.sample(16) for _ in range(20)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for step in stream[100:]:
        reference.add(*step)
    assert all(t.device.type == "cuda" for b in batches for t in b)
    for _ in range(20):  # the same draws as the host-memory buffer on the CPU
        reference.sample(64)
    _assert_same(reference.sample(64), ReplayBatch(*(t.cpu() for t in atari.sample(64))))


@pytest.mark.parametrize("frame_stack", [1, 4])
def test_truncate_open_episodes_lets_new_games_start_without_joining_stacks(frame_stack):
    # A resume without exact env state restarts the games: the buffer's open episodes end as truncated at their last
    # transition, and the new games' stacks never reach into the old ones.
    num_envs = 3
    old = list(_synthetic_stream(num_envs, frame_stack, 40, seed=5))
    new = list(_synthetic_stream(num_envs, frame_stack, 40, seed=6))
    for step in new:  # other frames than the old games' (the ids' high byte)
        step[0][..., 1, 1] = step[1][..., 1, 1] = 1
    rb = AtariReplayBuffer(10_000, num_envs, frame_shape=(2, 2), frame_stack=frame_stack, seed=0)
    everything: set[bytes] = set()
    for obs, real, actions, rewards, term, trunc in old:
        rb.add(obs, real, actions, rewards, term, trunc)
        everything |= {_key(obs[e], actions[e], rewards[e], real[e], float(term[e])) for e in range(num_envs)}
    open_envs = int(rb.episode_open.sum())
    assert open_envs > 0, "the test needs an episode left open"
    if frame_stack > 1:
        with pytest.raises(ValueError, match="does not continue"):
            rb.add(*new[0])
    rb.truncate_open_episodes(old[-1][1])
    assert not rb.episode_open.any()
    for obs, real, actions, rewards, term, trunc in new:
        rb.add(obs, real, actions, rewards, term, trunc)
        everything |= {_key(obs[e], actions[e], rewards[e], real[e], float(term[e])) for e in range(num_envs)}
    assert len(rb) == 2 * 40 * num_envs - int(rb.episode_open.sum())
    seen = set(_sampled_keys(rb, draws=12 * len(rb)))
    assert seen <= everything and len(seen) == len(rb)
