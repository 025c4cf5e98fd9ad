"""Plasticity metrics against closed forms and independent references (SVD, per-position loops, hand-built layers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fire_rl.metrics import (
    dfi,
    dormant_ratio,
    dormant_scores,
    feature_norm,
    frozen_subtrees,
    grad_norm,
    plasticity_metrics,
    relative_sfe,
    sfe,
    srank,
    weight_norms,
)
from fire_rl.networks import QNetwork
from fire_rl.polar import fire_scale
from fire_rl.resets import capture_theta0, inject_plasticity

DTYPES = [torch.float32, torch.float64]
ATOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def semi_orthogonal(d_out: int, d_in: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """(d_out, d_in) with orthonormal rows (wide) or columns (tall), from the QR of a Gaussian in float64."""
    tall = max(d_out, d_in), min(d_out, d_in)
    q, _ = torch.linalg.qr(torch.randn(*tall, generator=gen, dtype=torch.float64))
    return (q if d_out >= d_in else q.T).to(dtype)


def svd_dfi(weight: torch.Tensor, c: float) -> float:
    """Σ (σ²/c² − 1)² over the singular values of every (C_out, C_in) slice, in float64."""
    w = weight.double()
    slices = [w] if w.dim() == 2 else [w[:, :, i, j] for i in range(w.shape[2]) for j in range(w.shape[3])]
    return sum(float(((torch.linalg.svdvals(s) ** 2 / c**2 - 1) ** 2).sum()) for s in slices)


def all_hooks(network: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in network.modules())


# ---------------------------------------------------------------- DfI


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 8), (5, 12), (12, 5)])
def test_dfi_of_orthogonal_and_fire_scaled_linear_is_zero(shape, dtype):
    gen = torch.Generator().manual_seed(0)
    q = semi_orthogonal(*shape, dtype, gen)
    c = fire_scale(shape)
    assert float(dfi(q, scale="none")) == pytest.approx(0.0, abs=ATOL[dtype])
    assert float(dfi(c * q)) == pytest.approx(0.0, abs=ATOL[dtype])
    # The smaller Gram of c·Q is c²·I, so without FIRE's scale the deviation is (c² − 1)² per diagonal entry.
    expected = (c**2 - 1) ** 2 * min(shape)
    assert float(dfi(c * q, scale="none")) == pytest.approx(expected, rel=1e-5, abs=ATOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (4, 8, 2, 3), (6, 6, 1, 1)])
def test_dfi_of_conv_with_scaled_orthogonal_slices_is_zero(shape, dtype):
    gen = torch.Generator().manual_seed(1)
    c_out, c_in, kh, kw = shape
    w = torch.empty(shape, dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            w[:, :, i, j] = semi_orthogonal(c_out, c_in, dtype, gen)
    w *= fire_scale(shape)
    assert float(dfi(w)) == pytest.approx(0.0, abs=ATOL[dtype])
    if kh * kw > 1 and c_out > c_in:
        # DfI is per kernel position: tall slices read as one (C_out, C_in·k·k) matrix are far from an isometry.
        assert float(dfi(w.reshape(c_out, -1))) > 0.1


def test_dfi_hand_computed():
    # W = [[1,0,0],[0,2,0]], c = √(2/3): (W/c)(W/c)ᵀ = 1.5·diag(1, 4) = diag(1.5, 6), so G − I = diag(0.5, 5).
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    assert float(dfi(w)) == pytest.approx(0.25 + 25.0, rel=1e-12)
    assert float(dfi(w, normalized=True)) == pytest.approx(25.25 / 2, rel=1e-12)
    assert float(dfi(w, scale="none")) == pytest.approx(9.0, rel=1e-12)
    # WᵀW of [[1,1],[0,1]] is [[1,1],[1,2]]: G − I = [[0,1],[1,1]], squared norm 3.
    shear = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert float(dfi(shear)) == pytest.approx(3.0, rel=1e-6)
    assert float(dfi(torch.zeros(3, 7), normalized=True)) == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 40), (40, 16), (9, 9), (8, 4, 3, 3), (3, 5, 2, 2)])
@pytest.mark.parametrize("scale", ["muon", "none", 0.7])
def test_dfi_matches_svd_reference(shape, dtype, scale):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype) / math.sqrt(shape[1])
    c = fire_scale(shape) if scale == "muon" else (1.0 if scale == "none" else scale)
    expected = svd_dfi(w, c)
    got = dfi(w, scale=scale)
    assert got.dim() == 0 and got.dtype == dtype
    assert float(got) == pytest.approx(expected, rel=1e-4 if dtype == torch.float32 else 1e-10)
    n = min(shape[:2]) * (shape[2] * shape[3] if len(shape) == 4 else 1)
    assert float(dfi(w, scale=scale, normalized=True)) == pytest.approx(expected / n, rel=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (4, 8, 2, 3), (5, 5, 4, 1)])
def test_batched_conv_dfi_equals_per_position_loop(shape, dtype):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    c = fire_scale(shape)
    c_out, c_in, kh, kw = shape
    total = torch.zeros((), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            s = w[:, :, i, j] / c
            g = s @ s.T if c_out <= c_in else s.T @ s
            total += ((g - torch.eye(min(c_out, c_in), dtype=dtype)) ** 2).sum()
    assert float(dfi(w)) == pytest.approx(float(total), rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_dfi_numeric_scale_half_precision_and_no_graph():
    w = nn.Parameter(torch.randn(6, 10, generator=torch.Generator().manual_seed(4)))
    assert float(dfi(w, scale=2.0)) == pytest.approx(float(dfi(w.detach() / 2, scale="none")), rel=1e-6)
    out = dfi(w)
    assert not out.requires_grad
    half = dfi(w.detach().to(torch.bfloat16))
    assert half.dtype == torch.float32
    assert float(half) == pytest.approx(float(dfi(w.detach().to(torch.bfloat16).float())), rel=1e-6)


@pytest.mark.parametrize(
    ("weight", "scale", "match"),
    [
        (torch.ones(3, 4, 5), "muon", "weight"),
        (torch.ones(4), "muon", "weight"),
        (torch.ones(3, 4, dtype=torch.int64), "muon", "weight"),
        (torch.ones(0, 4), "muon", "weight"),
        (torch.ones(3, 4), "polar", "scale"),
        (torch.ones(3, 4), 0.0, "scale"),
        (torch.ones(3, 4), -1.0, "scale"),
        (torch.ones(3, 4), math.nan, "scale"),
        (torch.ones(3, 4), True, "scale"),
    ],
)
def test_dfi_rejects_bad_input(weight, scale, match):
    with pytest.raises(ValueError, match=match):
        dfi(weight, scale=scale)


# ---------------------------------------------------------------- SFE


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (6, 6)])
def test_sfe_of_polar_factor_matches_singular_values(shape, dtype):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    polar = u @ vh
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    assert float(sfe(w, polar)) == pytest.approx(float(((s - 1) ** 2).sum()), rel=rtol)
    assert float(relative_sfe(w, polar)) == pytest.approx(float(((s - 1) ** 2).sum() / (s**2).sum()), rel=rtol)
    assert sfe(w, polar).dtype == dtype


def test_relative_sfe_of_zero_weight_and_errors():
    z = torch.zeros(3, 4)
    assert float(relative_sfe(z, z)) == 0.0
    assert float(relative_sfe(z, torch.eye(3, 4))) == math.inf
    assert float(relative_sfe(2 * torch.eye(3, 4), torch.eye(3, 4))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="same shape"):
        sfe(torch.zeros(3, 4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="w_new"):
        relative_sfe(torch.zeros(3), torch.zeros(3, dtype=torch.int32))


# ---------------------------------------------------------------- srank


def closed_form_srank(sigma: list[float], delta: float) -> int:
    total = sum(sigma)
    partial = 0.0
    for k, s in enumerate(sigma, start=1):
        partial += s
        if partial >= (1 - delta) * total:
            return k
    raise AssertionError("unreachable: the full sum reaches the threshold")


def with_spectrum(sigma: list[float], b: int, d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    u = semi_orthogonal(b, len(sigma), torch.float64, gen)
    v = semi_orthogonal(len(sigma), d, torch.float64, gen)
    return (u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v).to(dtype)


GEOMETRIC = [0.5**i for i in range(12)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("sigma", "delta", "expected"),
    [
        ([4.0, 3.0, 2.0, 1.0], 0.01, 4),
        ([4.0, 3.0, 2.0, 1.0], 0.05, 4),
        ([4.0, 3.0, 2.0, 1.0], 0.15, 3),
        ([4.0, 3.0, 2.0, 1.0], 0.35, 2),
        ([4.0, 3.0, 2.0, 1.0], 0.65, 1),
        # Σ_{i<k} 2^-i ≥ 0.99·Σ_{i<12} 2^-i  ⇔  2^-k ≤ 0.01 + 0.99·2^-12  ⇔  k ≥ 6.61.
        (GEOMETRIC, 0.01, 7),
        ([1.0] * 10 + [1e-3] * 10, 0.01, 10),
    ],
)
def test_srank_on_constructed_spectrum(sigma, delta, expected, dtype):
    assert closed_form_srank(sigma, delta) == expected
    features = with_spectrum(sigma, 32, 24, dtype, seed=6)
    got = srank(features, delta=delta)
    assert got.dim() == 0 and got.dtype == torch.int64
    assert int(got) == expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", [1, 3, 8])
def test_srank_of_rank_r_product_is_at_most_r(r, dtype):
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(64, r, generator=gen, dtype=dtype) @ torch.randn(r, 32, generator=gen, dtype=dtype)
    k = int(srank(features))
    assert 1 <= k <= r
    sigma = torch.linalg.svdvals(features.double()).tolist()
    assert k == closed_form_srank(sigma, 0.01)


def test_srank_zero_features_integer_input_and_errors():
    assert int(srank(torch.zeros(16, 8))) == 0
    # σ = (2, 2, 2, 2), exactly representable: the partial sum 6 meets 0.75·8 at k = 3, and meeting counts (≥).
    assert int(srank(2 * torch.eye(4), delta=0.25)) == 3
    assert int(srank(torch.ones(5, 3, dtype=torch.int64))) == 1
    for bad in (torch.ones(4), torch.ones(2, 3, 4)):
        with pytest.raises(ValueError, match="features"):
            srank(bad)
    for delta in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="delta"):
            srank(torch.ones(3, 3), delta=delta)


# ---------------------------------------------------------------- norms


def test_feature_weight_and_grad_norms():
    features = torch.tensor([[3.0, 4.0], [0.0, 0.0], [6.0, 8.0]])
    assert float(feature_norm(features)) == pytest.approx(5.0)
    assert float(feature_norm(features.reshape(3, 1, 2, 1))) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="features"):
        feature_norm(torch.ones(0, 3))

    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.LayerNorm(5))
    norms = weight_norms(net)
    assert list(norms) == ["0", "3"]
    for name in ("0", "3"):
        reference = math.sqrt(sum(v * v for v in net[int(name)].weight.detach().flatten().tolist()))
        assert float(norms[name]) == pytest.approx(reference, rel=1e-6)

    assert float(grad_norm(net)) == 0.0
    net(torch.randn(4, 2, 6, 6)).square().sum().backward()
    net[4].weight.grad = None  # a parameter without gradient is skipped, as in clip_grad_norm_
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    reference = torch.nn.utils.get_total_norm(grads)
    assert float(grad_norm(net)) == pytest.approx(float(reference), rel=1e-6)
    with pytest.raises(ValueError, match="network"):
        grad_norm(3)


# ---------------------------------------------------------------- dormant ratio


def constant_mlp(biases1: list[float], biases2: list[float], d_in: int = 3) -> nn.Sequential:
    """Zero weights: hidden unit i outputs relu(bias_i) for every input, so E|h_i| is known exactly."""
    net = nn.Sequential(nn.Linear(d_in, len(biases1)), nn.ReLU(), nn.Linear(len(biases1), len(biases2)), nn.ReLU())
    net.append(nn.Linear(len(biases2), 1))
    with torch.no_grad():
        for layer, b in ((net[0], biases1), (net[2], biases2)):
            layer.weight.zero_()
            layer.bias.copy_(torch.tensor(b))
    return net


# Activations relu(b1) = [0, 0.01, 0.1, 1, 2, 0], mean 3.11/6: scores [0, 0.0193, 0.193, 1.93, 3.86, 0].
B1 = [0.0, 0.01, 0.1, 1.0, 2.0, -5.0]


@pytest.mark.parametrize(("tau", "n_dormant"), [(0.0, 2), (0.025, 3), (0.1, 3), (0.2, 4), (2.0, 5), (10.0, 6)])
def test_dormant_ratio_threshold_on_known_scores(tau, n_dormant):
    net = constant_mlp(B1, [1.0, 1.0])
    out = dormant_ratio(net, torch.randn(7, 3), tau=tau)
    assert set(out) == {"1", "3", "overall"}
    assert float(out["1"]) == pytest.approx(n_dormant / 6)
    assert float(out["3"]) == (1.0 if tau >= 1.0 else 0.0)
    expected_scores = torch.tensor([max(b, 0.0) for b in B1]) / (3.11 / 6)
    torch.testing.assert_close(dormant_scores(net, torch.randn(2, 3))["1"], expected_scores)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dormant_ratio_overall_counts_neurons_not_layers(dtype):
    # Conv channels constant relu([1, 0, -1, 3]) (2 of 4 dormant), then 6 linear units with one dead: overall 3/10.
    conv = nn.Conv2d(2, 4, 3)
    fc = nn.Linear(4 * 3 * 3, 6)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([1.0, 0.0, -1.0, 3.0]))
        fc.weight.zero_()
        fc.bias.copy_(torch.tensor([-1.0, 1.0, 2.0, 1.0, 1.0, 1.0]))
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), fc, nn.ReLU(), nn.Linear(6, 2)).to(dtype)
    out = dormant_ratio(net, torch.randn(5, 2, 5, 5, dtype=dtype))
    assert float(out["1"]) == pytest.approx(0.5)
    assert float(out["4"]) == pytest.approx(1 / 6)
    assert float(out["overall"]) == pytest.approx(0.3)
    assert out["overall"].dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_dormant_scores_of_random_conv_net_match_direct_computation(dtype):
    torch.manual_seed(9)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10), nn.ReLU())
    net = net.to(dtype)
    x = torch.randn(6, 3, 9, 9, dtype=dtype)
    with torch.no_grad():
        h1 = torch.relu(net[0](x))  # (B, C, H, W): expectation over batch and positions
        h2 = torch.relu(net[3](h1.flatten(1)))
    e1, e2 = h1.abs().mean(dim=(0, 2, 3)), h2.abs().mean(dim=0)
    scores = dormant_scores(net, x)
    torch.testing.assert_close(scores["1"], e1 / e1.mean())
    torch.testing.assert_close(scores["4"], e2 / e2.mean())


def test_dead_rows_with_random_inputs_and_all_dead_layer():
    torch.manual_seed(10)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.mul_(0.1)
        net[0].bias.fill_(10.0)
        net[0].weight[[2, 5]] = 0.0
        net[0].bias[[2, 5]] = -1.0
    assert float(dormant_ratio(net, torch.rand(32, 5))["overall"]) == pytest.approx(2 / 8)
    with torch.no_grad():
        net[0].bias.fill_(-1e9)
    assert float(dormant_ratio(net, torch.rand(32, 5), tau=0.0)["1"]) == 1.0


class ModeProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, obs, action):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return self.act(self.fc(obs + action))


@pytest.mark.parametrize("eval_mode", [True, False])
def test_modes_restored_hooks_removed_and_no_grad(eval_mode):
    net = nn.Sequential(ModeProbe(), nn.Linear(4, 2))
    net.train()
    net[1].eval()
    x = (torch.randn(3, 4), torch.randn(3, 4))
    dormant_ratio(net[0], x, eval_mode=eval_mode)
    plasticity_metrics(net[0], x, eval_mode=eval_mode)
    assert net[0].seen == [(not eval_mode, False)] * 2
    assert net.training and net[0].training and net[0].fc.training and not net[1].training
    assert all_hooks(net) == 0
    assert all(p.grad is None for p in net.parameters())


def test_hooks_removed_when_forward_or_hook_raises():
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    net.eval()
    with pytest.raises(RuntimeError):
        dormant_ratio(net, torch.randn(2, 5))
    with pytest.raises(RuntimeError):
        plasticity_metrics(net, torch.randn(2, 5))
    with pytest.raises(ValueError, match="activation module"):
        dormant_ratio(net, torch.randn(4))  # an unbatched (3,) activation
    assert all_hooks(net) == 0
    assert not net.training


class SharedActivation(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.out(self.act(self.fc2(self.act(self.fc1(x)))))


def test_layer_selection_and_repeated_calls():
    net = SharedActivation()
    out = dormant_ratio(net, torch.randn(8, 3))
    assert set(out) == {"act#0", "act#1", "overall"}
    scores = dormant_scores(net, torch.randn(8, 3), layers=["fc1"])
    assert list(scores) == ["fc1"] and scores["fc1"].shape == (4,)
    with pytest.raises(ValueError, match="layers"):
        dormant_ratio(net, torch.randn(8, 3), layers=["nope"])
    net.unused = nn.ReLU()  # a ReLU the forward never calls: skipped by default, an error when asked for
    assert set(dormant_ratio(net, torch.randn(8, 3))) == {"act#0", "act#1", "overall"}
    with pytest.raises(ValueError, match="not called"):
        dormant_ratio(net, torch.randn(8, 3), layers=["act", "unused"])
    with pytest.raises(ValueError, match="no nn.ReLU"):
        dormant_ratio(nn.Sequential(nn.Linear(3, 1), nn.Tanh()), torch.randn(8, 3))
    for tau in (-0.1, math.nan, "0.1"):
        with pytest.raises(ValueError, match="tau"):
            dormant_ratio(net, torch.randn(8, 3), tau=tau)
    with pytest.raises(ValueError, match="inputs"):
        dormant_ratio(net, [[1.0, 2.0, 3.0]])


# ---------------------------------------------------------------- plasticity_metrics


class TinyQNet(nn.Module):
    """A scaled-down Nature CNN: encoder convs with ReLUs, then head fc1 (ReLU) and fc2."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(4, 8, 4, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.encoder(x / 255.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_plasticity_metrics_agrees_with_the_single_metrics(dtype):
    torch.manual_seed(11)
    net = TinyQNet().to(dtype)
    x = torch.randint(0, 256, (24, 4, 14, 14)).to(dtype)
    out = plasticity_metrics(net, x, tau=0.1, delta=0.05)
    layers = ["encoder.0", "encoder.2", "head.0", "head.2"]
    acts = ["encoder.1", "encoder.3", "head.1"]
    expected_keys = (
        {f"dfi/{n}" for n in layers}
        | {f"weight_norm/{n}" for n in layers}
        | {f"dormant/{n}" for n in acts}
        | {"dfi_normalized_mean", "dormant", "srank", "feature_norm", "weight_norm", "grad_norm"}
    )
    assert set(out) == expected_keys
    assert math.isnan(out["grad_norm"]), "no parameter holds a gradient yet"
    assert all(isinstance(v, float) for v in out.values())
    modules = dict(net.named_modules())
    rel = 1e-5 if dtype == torch.float32 else 1e-12
    for n in layers:
        assert out[f"dfi/{n}"] == pytest.approx(float(dfi(modules[n].weight)), rel=rel)
        assert out[f"weight_norm/{n}"] == pytest.approx(float(weight_norms(net)[n]), rel=rel)
    mean_normalized = sum(float(dfi(modules[n].weight, normalized=True)) for n in layers) / len(layers)
    assert out["dfi_normalized_mean"] == pytest.approx(mean_normalized, rel=rel)
    ratios = dormant_ratio(net, x, tau=0.1)
    for n in acts:
        assert out[f"dormant/{n}"] == pytest.approx(float(ratios[n]))
    assert out["dormant"] == pytest.approx(float(ratios["overall"]))
    with torch.no_grad():
        phi = net.head[1](net.head[0](net.encoder(x / 255.0)))  # (B, 16), the input of the last Linear
    assert out["srank"] == int(srank(phi, delta=0.05))
    assert out["feature_norm"] == pytest.approx(float(feature_norm(phi)), rel=rel)
    total = math.sqrt(sum(float(v) ** 2 for v in weight_norms(net).values()))
    assert out["weight_norm"] == pytest.approx(total, rel=rel)
    net(x).square().mean().backward()
    assert plasticity_metrics(net, x)["grad_norm"] == pytest.approx(float(grad_norm(net)), rel=rel)


def test_plasticity_metrics_without_relu_and_with_another_dfi_scale():
    """A SimBa network with no residual block has no ReLU (SAC with --actor-blocks 0): no dormant ratio (NaN), the
    rest as usual; DfI follows the FIRE scale rule it is given."""
    torch.manual_seed(14)
    net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    out = plasticity_metrics(net, torch.randn(16, 6))
    assert math.isnan(out["dormant"]) and not any(k.startswith("dormant/") for k in out)
    assert out["srank"] >= 1 and math.isfinite(out["feature_norm"])
    cnn = TinyQNet()
    x = torch.rand(8, 4, 14, 14) * 255
    iso = plasticity_metrics(cnn, x, dfi_scale="isometry")
    assert iso["dfi/encoder.0"] == pytest.approx(float(dfi(cnn.encoder[0].weight, scale="isometry")), rel=1e-5)
    assert iso["dfi/head.0"] == pytest.approx(plasticity_metrics(cnn, x)["dfi/head.0"], rel=1e-6)
    with pytest.raises(ValueError, match="dfi_scale"):
        plasticity_metrics(cnn, x, dfi_scale="bogus")


def test_plasticity_metrics_syncs_once(monkeypatch):
    # Every tensor-to-Python conversion goes through one of these; only the final tolist may run.
    calls: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    torch.manual_seed(12)
    plasticity_metrics(TinyQNet(), torch.rand(8, 4, 14, 14) * 255)
    monkeypatch.undo()
    assert calls == ["tolist"]


def test_plasticity_metrics_nan_features_feature_layer_and_errors():
    torch.manual_seed(13)
    net = TinyQNet()
    with torch.no_grad():
        net.head[0].weight[0, 0] = math.nan
    out = plasticity_metrics(net, torch.rand(8, 4, 14, 14))
    assert math.isnan(out["srank"]) and math.isnan(out["feature_norm"])

    net = TinyQNet()
    x = torch.rand(8, 4, 14, 14)
    out = plasticity_metrics(net, x, feature_layer="head.0")
    with torch.no_grad():
        flat = net.encoder(x / 255.0)  # (B, 128), the input of head.0
    assert out["srank"] == int(srank(flat))
    with pytest.raises(ValueError, match="feature_layer"):
        plasticity_metrics(net, x, feature_layer="head.9")
    with pytest.raises(ValueError, match="delta"):
        plasticity_metrics(net, x, delta=1.5)
    with pytest.raises(ValueError, match="no nn.Linear"):
        plasticity_metrics(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="network"):
        plasticity_metrics("net", x)


def test_after_injection_the_diagnostics_measure_the_trainable_head():
    # The old head and its frozen copy never train: srank is of the features entering the trainable head's last
    # Linear (head.new.2), and the dormant ratio counts the trainable path's ReLUs only.
    torch.manual_seed(0)
    q = QNetwork(4)
    theta0 = capture_theta0(q)
    x = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8)
    inject_plasticity(q, theta0=theta0, toward="random")
    with torch.no_grad():  # make the frozen copy's features differ from the trainable head's
        q.head.new[0].weight.mul_(3.0)
    assert frozen_subtrees(q) == ("head.old", "head.new_frozen")
    metrics = plasticity_metrics(q, x)
    assert {k for k in metrics if k.startswith("dormant/")} == {f"dormant/encoder.{i}" for i in (1, 3, 5)} | {
        "dormant/head.new.1"}  # fmt: skip
    assert metrics["srank"] == plasticity_metrics(q, x, feature_layer="head.new.2")["srank"]
    assert metrics["feature_norm"] != plasticity_metrics(q, x, feature_layer="head.new_frozen.2")["feature_norm"]
    assert frozen_subtrees(q.requires_grad_(False)) == (), "a wholly frozen network (a target) is measured whole"
