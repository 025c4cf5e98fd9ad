"""fire_rl.networks: Nature CNN, SimBa actor/critic, RSNorm, checked against closed forms and torch.distributions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, TransformedDistribution
from torch.distributions.transforms import TanhTransform

from fire_rl.networks import (
    QNetwork,
    RSNorm,
    SimbaActor,
    SimbaBlock,
    SimbaCritic,
    SimbaEncoder,
    he_normal_,
    update_target_,
)
from fire_rl.resets.common import fresh_draw, select_layers


def _params(net):
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def _nature_param_count(n_actions, in_channels=4):
    conv = [(in_channels, 32, 8), (32, 64, 4), (64, 64, 3)]
    n = sum(cin * cout * k * k + cout for cin, cout, k in conv)
    return n + (3136 * 512 + 512) + (512 * n_actions + n_actions)


# ---------------------------------------------------------------------------------------------------------------- DQN


@pytest.mark.parametrize("n_actions", [4, 6, 18])
def test_qnetwork_param_count_and_shapes(n_actions):
    net = QNetwork(n_actions)
    assert sum(p.numel() for p in net.parameters()) == _nature_param_count(n_actions)
    if n_actions == 4:
        assert _nature_param_count(4) == 1_686_180
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    feats = net.encoder(x.float() / 255)
    assert feats.shape == (3, 3136) == (3, QNetwork.FEATURE_DIM)
    q = net(x)
    assert q.shape == (3, n_actions) and q.dtype == torch.float32
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 4
    assert [n for n, _ in select_layers(net, roles=["head"]).items()] == ["head.0", "head.2"]


def test_qnetwork_divides_by_255():
    torch.manual_seed(0)
    net = QNetwork(5, in_channels=2)
    x = torch.randint(0, 256, (2, 2, 84, 84), dtype=torch.uint8)
    h = x.double() / 255.0
    net64 = QNetwork(5, in_channels=2).double()
    net64.load_state_dict(net.state_dict())
    for layer in list(net64.encoder) + list(net64.head):
        h = layer(h)
    torch.testing.assert_close(net(x).double(), h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_qnetwork_leaves_a_float_input_untouched(channels_last):
    # The input is scaled in place after its copy: a float batch already in the parameters' dtype must not be the
    # tensor scaled.
    net = QNetwork(3).to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    x = torch.randint(0, 256, (2, 4, 84, 84)).float()
    before = x.clone()
    torch.testing.assert_close(net(x), net(x.to(torch.uint8)), rtol=0, atol=0)
    assert torch.equal(x, before)


def test_qnetwork_xavier_init():
    torch.manual_seed(1)
    net = QNetwork(6, init="xavier")
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound
            if m.weight.numel() > 10_000:  # the std of U(-b, b) is b/√3
                assert abs(m.weight.std().item() - bound / math.sqrt(3)) < 0.03 * bound
    default = QNetwork(6, init="pytorch")
    assert all(torch.count_nonzero(m.bias) > 0 for m in default.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("init", ["pytorch", "xavier"])
def test_qnetwork_init_weights_reproducible(init):
    net = QNetwork(4, init=init)
    before = _params(net)
    torch.manual_seed(123)
    net.init_weights()
    first = _params(net)
    torch.manual_seed(123)
    net.init_weights()
    second = _params(net)
    for k in before:
        assert torch.equal(first[k], second[k])
        if k.endswith("weight"):
            assert not torch.equal(first[k], before[k])


def test_qnetwork_channels_last_matches():
    torch.manual_seed(2)
    net = QNetwork(4, init="xavier")
    x = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    ref = net(x)
    fast = QNetwork(4)
    fast.load_state_dict(net.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    assert fast.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"n_actions": 0}, "n_actions"), ({"n_actions": 4, "in_channels": -1}, "in_channels"),
     ({"n_actions": 4, "init": "he"}, "'he'")],
)  # fmt: skip
def test_qnetwork_bad_args(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        QNetwork(**kwargs)


def test_qnetwork_rejects_unbatched():
    with pytest.raises(ValueError, match=r"\(4, 84, 84\)"):
        QNetwork(4)(torch.zeros(4, 84, 84, dtype=torch.uint8))


# -------------------------------------------------------------------------------------------------------------- SimBa


def test_simba_block_structure_and_forward():
    torch.manual_seed(3)
    h = 16
    block = SimbaBlock(h)
    assert block.norm.eps == 1e-6 and block.norm.normalized_shape == (h,)
    assert block.fc1.weight.shape == (4 * h, h) and block.fc2.weight.shape == (h, 4 * h)
    assert isinstance(block.act, nn.ReLU)
    assert torch.count_nonzero(block.fc1.bias) == 0 and torch.count_nonzero(block.fc2.bias) == 0
    with torch.no_grad():  # non-trivial affine LayerNorm so the reference exercises it
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(5, h, dtype=torch.float64)
    block = block.double()
    ref = x + F.linear(
        torch.clamp(F.linear(F.layer_norm(x, (h,), block.norm.weight, block.norm.bias, 1e-6), block.fc1.weight), min=0),
        block.fc2.weight,
    )
    torch.testing.assert_close(block(x), ref)
    with torch.no_grad():
        block.fc2.weight.zero_()
    torch.testing.assert_close(block(x), x)  # the residual path is the identity


@pytest.mark.parametrize(("d_out", "d_in"), [(512, 128), (128, 512), (2048, 512)])
def test_he_normal_matches_flax(d_out, d_in):
    torch.manual_seed(4)
    w = he_normal_(torch.empty(d_out, d_in))
    std = math.sqrt(2.0 / d_in)
    assert abs(w.std().item() - std) < 0.02 * std
    assert abs(w.mean().item()) < 0.02 * std
    scale = std / 0.87962566103423978  # Flax draws scale·Z, Z standard normal truncated to [-2, 2]
    assert w.abs().max().item() <= 2.0 * scale * (1 + 1e-6)

    # mass beyond 2·std: closed form for the truncated law (≈3.5%), versus 4.55% for kaiming_normal_'s normal
    def phi(z):
        return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

    expected = (phi(2.0) - phi(2.0 * std / scale)) / (phi(2.0) - 0.5)
    assert abs((w.abs() > 2.0 * std).double().mean().item() - expected) < 0.004


def _assert_orthogonal(w, gain=1.0):
    w = w.detach().double()
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T  # the smaller Gram matrix
    torch.testing.assert_close(gram, gain**2 * torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("obs_dim", "act_dim", "hidden"), [(10, 3, 32), (300, 7, 64), (51, 19, 128)])
def test_simba_inits(obs_dim, act_dim, hidden):
    torch.manual_seed(5)
    actor = SimbaActor(obs_dim, act_dim, hidden=hidden)
    critic = SimbaCritic(obs_dim, act_dim, hidden=hidden, num_blocks=2)
    for net, outputs in ((actor, (actor.head[-1].mean, actor.head[-1].log_std)), (critic, (critic.head[-1],))):
        _assert_orthogonal(net.encoder[0].weight)
        for out in outputs:  # the reference's output Dense layers, each orthogonal on its own
            _assert_orthogonal(out.weight)
        for m in net.modules():
            if isinstance(m, nn.Linear):
                assert torch.count_nonzero(m.bias) == 0
            if isinstance(m, nn.LayerNorm):
                assert m.eps == 1e-6 and torch.all(m.weight == 1) and torch.all(m.bias == 0)
            if isinstance(m, SimbaBlock):
                assert m.fc1.out_features == 4 * hidden and m.fc2.in_features == 4 * hidden
    assert critic.encoder[0].in_features == obs_dim + act_dim
    assert isinstance(actor.encoder[-1], nn.LayerNorm) and len(actor.encoder) == 1 + 1 + 1
    assert len(critic.encoder) == 1 + 2 + 1
    assert sum(isinstance(m, nn.ReLU) for m in critic.modules()) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_actor_log_std_range_and_mapping(dtype):
    torch.manual_seed(6)
    actor = SimbaActor(8, 3, hidden=32, log_std_min=-5.0, log_std_max=1.0).to(dtype)
    with torch.no_grad():
        actor.head[-1].log_std.weight.mul_(50.0)  # push raw outputs into tanh's saturated ends
    obs = 10 * torch.randn(64, 8, dtype=dtype)
    mean, log_std = actor(obs)
    assert mean.shape == log_std.shape == (64, 3) and mean.dtype == dtype
    assert log_std.min() >= -5.0 and log_std.max() <= 1.0
    assert log_std.min() < -4.9 and log_std.max() > 0.9
    raw = actor.head(actor.encoder(obs))
    torch.testing.assert_close(mean, raw[:, :3])
    torch.testing.assert_close(log_std, -5.0 + 0.5 * 6.0 * (torch.tanh(raw[:, 3:]) + 1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_actor_sample_log_prob_matches_torch_distributions(dtype):
    torch.manual_seed(7)
    actor = SimbaActor(6, 4, hidden=16).to(dtype)
    obs = torch.randn(256, 6, dtype=dtype)
    action, log_prob, det = actor.sample(obs, generator=torch.Generator().manual_seed(11))
    assert action.shape == (256, 4) and log_prob.shape == (256,) and det.shape == (256, 4)
    assert action.dtype == log_prob.dtype == dtype
    assert action.abs().max() <= 1 and action.requires_grad  # ±1 exactly only where tanh saturates in floating point
    mean, log_std = actor(obs)
    torch.testing.assert_close(det, torch.tanh(mean))
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(11), dtype=dtype)
    u = mean + log_std.exp() * noise
    tanh = TanhTransform(cache_size=1)
    dist = Independent(TransformedDistribution(Normal(mean, log_std.exp()), [tanh]), 1)
    a_ref = tanh(u)  # caches u, so log_prob needs no atanh of a saturated action
    tol = {"rtol": 1e-4, "atol": 1e-3} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-8}
    torch.testing.assert_close(action, a_ref)
    torch.testing.assert_close(log_prob, dist.log_prob(a_ref), **tol)
    again, _, _ = actor.sample(obs, generator=torch.Generator().manual_seed(11))
    assert torch.equal(again, action)


def test_actor_sample_stable_when_saturated():
    torch.manual_seed(8)
    actor = SimbaActor(4, 2, hidden=16).double()
    with torch.no_grad():
        actor.head[-1].mean.weight.mul_(1e3)  # |mean| in the hundreds: tanh(u) == ±1 in floating point
    _, log_prob, det = actor.sample(torch.randn(32, 4, dtype=torch.float64))
    assert torch.isfinite(log_prob).all()
    assert (det.abs() == 1).any()


def test_critic_shapes():
    torch.manual_seed(9)
    critic = SimbaCritic(11, 3, hidden=32, num_blocks=2)
    q = critic(torch.randn(7, 11), torch.rand(7, 3) * 2 - 1)
    assert q.shape == (7,) and q.dtype == torch.float32


@pytest.mark.parametrize("cls", [SimbaActor, SimbaCritic])
def test_head_blocks_moves_last_block_into_head(cls):
    torch.manual_seed(10)
    plain = cls(9, 2, hidden=16, num_blocks=2)
    split = cls(9, 2, hidden=16, num_blocks=2, head_blocks=1)
    outputs = ["mean", "log_std"] if cls is SimbaActor else [""]
    assert [n for n in select_layers(split, roles=["head"])] == ["head.0.fc1", "head.0.fc2"] + [
        f"head.2.{o}".rstrip(".") for o in outputs
    ]
    assert [n for n in select_layers(plain, roles=["head"])] == [f"head.0.{o}".rstrip(".") for o in outputs]
    assert isinstance(split.head[1], nn.LayerNorm) and not isinstance(split.encoder[-1], nn.LayerNorm)
    renamed = {"encoder.2.": "head.0.", "encoder.3.": "head.1.", "head.0.": "head.2."}
    state = {}
    for key, value in plain.state_dict().items():
        for old, new in renamed.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        state[key] = value
    split.load_state_dict(state)
    args = (torch.randn(5, 9),) if cls is SimbaActor else (torch.randn(5, 9), torch.rand(5, 2))
    out_plain, out_split = plain(*args), split(*args)
    if cls is SimbaCritic:
        out_plain, out_split = (out_plain,), (out_split,)
    for a, b in zip(out_plain, out_split, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [SimbaActor, SimbaCritic])
def test_simba_init_weights_reproducible_and_fresh_draw(cls):
    net = cls(12, 3, hidden=16, num_blocks=2, head_blocks=1)
    before = _params(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(2.0)
    torch.manual_seed(321)
    net.init_weights()
    first = _params(net)
    torch.manual_seed(321)
    net.init_weights()
    for k, v in _params(net).items():
        assert torch.equal(v, first[k])
        if k.endswith("weight") and "norm" not in k and not k.startswith("head.1"):
            assert not torch.equal(v, before[k]), k
        if "norm" in k or k.startswith("head.1"):  # LayerNorm back to scale 1, shift 0
            assert torch.all(v == (1.0 if k.endswith("weight") else 0.0)), k
    out = "head.2.mean" if cls is SimbaActor else "head.2"
    draw = fresh_draw(net, ["encoder.0", out])
    assert set(draw) == {"encoder.0.weight", "encoder.0.bias", f"{out}.weight", f"{out}.bias"}
    _assert_orthogonal(draw["encoder.0.weight"])
    _assert_orthogonal(draw[f"{out}.weight"])


@pytest.mark.parametrize(
    ("cls", "kwargs", "needle"),
    [
        (SimbaActor, {"hidden": 0}, "hidden.*0"),
        (SimbaActor, {"num_blocks": -1}, "num_blocks.*-1"),
        (SimbaActor, {"log_std_min": 2.0, "log_std_max": 2.0}, "log_std_min"),
        (SimbaCritic, {"hidden": -4}, "hidden.*-4"),
        (SimbaCritic, {"num_blocks": 1, "head_blocks": 2}, "head_blocks.*2"),
        (SimbaCritic, {"head_blocks": -1}, "head_blocks.*-1"),
    ],
)
def test_simba_bad_args(cls, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        cls(5, 2, **kwargs)
    with pytest.raises(ValueError, match="act_dim.*0"):
        cls(5, 0)
    with pytest.raises(ValueError, match="num_blocks.*-2"):
        SimbaEncoder(5, 8, -2)


# ------------------------------------------------------------------------------------------------------------- RSNorm


def _prior_closed_form(data, count0=1e-4):
    """Mean and variance of the data pooled with a pseudo-sample of weight count0, mean 0, variance 1."""
    n = data.shape[0]
    m, v = data.mean(axis=0), data.var(axis=0)
    total = n + count0
    return n * m / total, (count0 * 1.0 + n * v + m**2 * count0 * n / total) / total


@pytest.mark.parametrize("shape", [(5,), (3, 2)])
def test_rsnorm_matches_numpy(shape):
    rng = np.random.default_rng(0)
    norm = RSNorm(shape)
    chunks = [3.0 + 2.0 * rng.standard_normal((b, *shape)) for b in (1, 7, 32, 2, 58)]
    for chunk in chunks:
        norm.update(chunk if len(chunk) > 1 else chunk[0])  # a single unbatched observation too
    data = np.concatenate(chunks)
    mean, var = _prior_closed_form(data)
    np.testing.assert_allclose(norm.mean.numpy(), mean, rtol=1e-12)
    np.testing.assert_allclose(norm.var.numpy(), var, rtol=1e-12)
    assert norm.count.item() == pytest.approx(100 + 1e-4, rel=1e-15)
    # the prior's effect: relative 1e-4/n on the mean, ~1e-4(1 + mean²)/n on the variance
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(axis=0), rtol=2e-6)
    np.testing.assert_allclose(norm.var.numpy(), data.var(axis=0), rtol=2e-5)

    obs = torch.as_tensor(rng.standard_normal((4, *shape)), dtype=torch.float32)
    snapshot = {k: v.clone() for k, v in norm.state_dict().items()}
    out = norm(obs)
    assert out.dtype == torch.float32 and out.shape == obs.shape
    np.testing.assert_allclose(out.numpy(), (obs.numpy() - mean) / np.sqrt(var + 1e-8), rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, norm.state_dict()[k]) for k, v in snapshot.items())  # forward never updates

    clone = RSNorm(shape)
    clone.load_state_dict(norm.state_dict())
    assert torch.equal(clone(obs), out)


def test_rsnorm_bad_input():
    with pytest.raises(ValueError, match="eps"):
        RSNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        RSNorm((3, 0))
    norm = RSNorm(3)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        norm.update(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        norm.update(np.zeros((0, 3)))


@pytest.mark.parametrize("tau", [1.0, 0.005, 0.5])
def test_update_target_is_polyak_averaging(tau):
    torch.manual_seed(0)
    online, target = SimbaCritic(5, 2, hidden=8), SimbaCritic(5, 2, hidden=8)
    before = [p.detach().clone() for p in target.parameters()]
    update_target_(target, online, tau)
    for t, o, b in zip(target.parameters(), online.parameters(), before):
        if tau == 1.0:
            assert torch.equal(t, o), "tau = 1 is an exact hard copy"
        else:
            torch.testing.assert_close(t, tau * o + (1 - tau) * b)
