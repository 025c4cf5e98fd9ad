"""Reset methods on real networks: FIRE's conv and scale rules against SVD, S&P and full-reset formulas, plasticity
injection's function preservation, gradients and state-dict round trip, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fire_rl.polar import fire_scale, polar
from fire_rl.resets import (
    InjectedHead,
    capture_theta0,
    fire_,
    fresh_draw,
    full_reset_,
    inject_plasticity,
    injection_depth,
    rebuild_injections,
    select_layers,
    shrink_perturb_,
)


class NatureCNN(nn.Module):
    """Nature-CNN Q-network (Mnih et al. 2015), built here so that these tests do not depend on `fire_rl.networks`."""

    def __init__(self, n_actions: int = 6) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, n_actions))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x / 255.0))


class NormMLP(nn.Module):
    """A small SimBa-like MLP with LayerNorms and an `init_weights` that indexes its head (as SimBa's does)."""

    def __init__(self, d_in: int = 10, hidden: int = 24, d_out: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, hidden)
        )
        self.head = nn.Sequential(
            nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, d_out)
        )
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.normal_(m.bias, std=0.1)  # nonzero so that bias handling is visible
            elif isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, 0.1)
                nn.init.normal_(m.bias, 0.0, 0.1)
        nn.init.orthogonal_(self.head[-1].weight, gain=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def perturb_(network: nn.Module, seed: int = 0) -> None:
    """Move every parameter away from θ₀, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in network.named_parameters()}


def svd_polar(w: torch.Tensor) -> torch.Tensor:
    u, _, vh = np.linalg.svd(w.detach().double().numpy(), full_matrices=False)
    return torch.from_numpy(u @ vh)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture
def cnn() -> NatureCNN:
    torch.manual_seed(0)
    net = NatureCNN()
    perturb_(net)
    return net


# ---- FIRE-------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", ["muon", "isometry", "none"])
def test_fire_conv_rule_against_svd(cnn, scale, device):
    cnn.to(device)
    before = {k: v.cpu() for k, v in snapshot(cnn).items()}
    layers = select_layers(cnn, kinds=["conv"])
    report = fire_(cnn, layers, method="svd", scale=scale)
    cnn.cpu()
    for name, conv in layers.items():
        w_old, w_new = before[f"{name}.weight"], conv.weight.detach()
        c = fire_scale(w_old.shape, scale)
        c_out, c_in, kh, kw = w_old.shape
        rule = {"muon": kh * kw, "isometry": math.sqrt(kh * kw)}
        assert c == (math.sqrt(c_out / c_in) / rule[scale] if scale in rule else 1.0)
        for i in range(kh):
            for j in range(kw):
                expected = c * svd_polar(w_old[:, :, i, j])
                torch.testing.assert_close(w_new[:, :, i, j].double(), expected, atol=2e-6 * max(c, 1.0), rtol=0)
                s = w_new[:, :, i, j].double() / c
                gram = s.T @ s if c_out >= c_in else s @ s.T  # the smaller Gram matrix is the identity
                torch.testing.assert_close(gram, torch.eye(min(c_out, c_in), dtype=torch.float64), atol=1e-5, rtol=0)
    # Biases and the linear layers are untouched, bit for bit.
    for n, p in cnn.named_parameters():
        if not (n.startswith("encoder") and n.endswith("weight")):
            assert torch.equal(p, before[n]), n
    assert [id(p) for p in report.changed] == [id(m.weight) for m in layers.values()]


def _trained_like(c_out: int, c_in: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """A smooth kernel: one (C_out × C_in) pattern under a positive spatial profile, plus 5% noise, so that the
    positions' slices (and their polar factors) are strongly aligned, as in trained convs."""
    base = torch.randn(c_out, c_in, 1, 1, generator=gen)
    ramp = torch.linspace(0.5, 1.5, k)
    profile = (ramp.view(k, 1) * ramp.flip(0).view(1, k)).view(1, 1, k, k)
    return base * profile + 0.05 * torch.randn(c_out, c_in, k, k, generator=gen)


@pytest.mark.parametrize(
    ("c_out", "c_in", "k"),
    [(32, 64, 3), (64, 64, 3), (32, 4, 8), (64, 32, 4), (64, 2, 2), (48, 3, 2)],
    ids=["Cout<Cin", "Cout=Cin", "nature-conv1", "nature-conv2", "Cout>Cin*P", "Cout>Cin*P-b"],
)
@pytest.mark.parametrize("kernel", ["random", "trained-like"])
def test_fire_isometry_scale_singular_values_of_the_unfolded_conv(c_out, c_in, k, kernel):
    """Item 12: with ``scale="isometry"`` the unfolded conv W_u (C_out × C_in·k·k) has the singular values derived in
    `fire_scale`: all √(C_out/C_in) when C_out ≤ C_in; RMS 1 and σ_max ≤ √(C_out/C_in) when C_in < C_out < C_in·P;
    RMS √(C_out/(C_in·P)) when C_out ≥ C_in·P (P = k·k). ``"muon"`` is the same divided by √P.

    Tolerance: the slices come from the exact (float64 SVD) polar factor stored in float32, so each slice's singular
    values are 1 within the reported residual r (~1e-7); every identity above is a sum of the slices' Gram matrices,
    off by a relative 2r at most, plus the float32 SVD of W_u (~1e-6 relative): 1e-5 covers both with margin."""
    gen = torch.Generator().manual_seed(c_out * 1000 + c_in * 10 + k)
    weight = torch.randn(c_out, c_in, k, k, generator=gen) if kernel == "random" else _trained_like(c_out, c_in, k, gen)
    P = k * k
    results = {}
    for scale in ("isometry", "muon"):
        conv = nn.Conv2d(c_in, c_out, k)
        with torch.no_grad():
            conv.weight.copy_(weight)
        report = fire_(nn.Sequential(conv), ["0"], method="svd", scale=scale)
        assert report.layers[0].residual < 1e-5
        sigma = torch.linalg.svdvals(conv.weight.detach().double().reshape(c_out, -1))  # s = min(C_out, C_in·P)
        results[scale] = sigma
    sigma = results["isometry"]
    rms = float(sigma.square().mean().sqrt())
    tol = 1e-5
    if c_out <= c_in:
        torch.testing.assert_close(sigma, torch.full_like(sigma, math.sqrt(c_out / c_in)), atol=0, rtol=tol)
    elif c_out < c_in * P:
        assert rms == pytest.approx(1.0, rel=tol)
        assert float(sigma.max()) <= math.sqrt(c_out / c_in) * (1 + tol)
        if kernel == "trained-like":  # aligned slices: the energy sits in C_in directions, near c·√P each
            assert float(sigma[c_in - 1]) > 0.9 * math.sqrt(c_out / c_in) and float(sigma[c_in]) < 0.5
    else:
        assert rms == pytest.approx(math.sqrt(c_out / (c_in * P)), rel=tol)
        assert float(sigma.max()) <= math.sqrt(c_out / c_in) * (1 + tol)
    torch.testing.assert_close(results["muon"], sigma / math.sqrt(P), atol=1e-7, rtol=tol)


def _strided_conv_gain(weight: torch.Tensor, stride: int, in_shape: tuple[int, int, int], iters: int = 100) -> float:
    """Spectral norm of the strided convolution x ↦ conv2d(x, W) on inputs of `in_shape` (power iteration on AᵀA)."""
    w = weight.detach().double()
    x = torch.randn(1, *in_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(iters):
        y = torch.nn.functional.conv2d(x, w, stride=stride)
        x = torch.nn.grad.conv2d_input(x.shape, w, y, stride=stride)
        x = x / x.norm()
    return float(torch.nn.functional.conv2d(x, w, stride=stride).norm())


def test_fire_scale_muon_conv_operator_gains():
    """Item 12: the official rule leaves the Nature CNN's strided convs with operator gains of about 0.22, 0.40 and
    0.59 (spectral norm on the 84×84 input), against about 1 at PyTorch's default init; ``"isometry"`` multiplies
    them by √(k·k) = 8, 4, 3."""
    from fire_rl.networks import QNetwork

    in_shapes = {"encoder.0": (4, 84, 84), "encoder.2": (32, 20, 20), "encoder.4": (64, 9, 9)}
    gains = {}
    for scale in ("init", "muon", "isometry"):
        torch.manual_seed(0)
        net = QNetwork(6)
        convs = select_layers(net, kinds=["conv"])
        if scale != "init":
            fire_(net, convs, scale=scale, measure=False)
        gains[scale] = [_strided_conv_gain(m.weight, m.stride[0], in_shapes[n]) for n, m in convs.items()]
    assert all(0.9 < g < 1.25 for g in gains["init"]), gains["init"]
    for g, expected in zip(gains["muon"], (0.22, 0.40, 0.59), strict=True):
        assert g == pytest.approx(expected, abs=0.02), gains["muon"]
    for g_iso, g_muon, k in zip(gains["isometry"], gains["muon"], (8, 4, 3), strict=True):
        assert g_iso == pytest.approx(k * g_muon, rel=1e-3)


def test_fire_newton_schulz_equals_per_position_loop(cnn):
    """The batched kernel call equals the official per-position loop (k_h·k_w separate polar calls)."""
    before = snapshot(cnn)
    layers = select_layers(cnn, kinds=["conv"])
    fire_(cnn, layers, measure=False)
    for name, conv in layers.items():
        w_old = before[f"{name}.weight"]
        expected = torch.zeros_like(w_old)
        for i in range(w_old.shape[2]):
            for j in range(w_old.shape[3]):
                expected[:, :, i, j] = polar(w_old[:, :, i, j], steps=10)
        torch.testing.assert_close(conv.weight, expected * fire_scale(w_old.shape), atol=1e-6, rtol=0)


def test_fire_linear_and_norm_layers():
    torch.manual_seed(1)
    net = NormMLP()
    perturb_(net)
    before = snapshot(net)
    layers = select_layers(net)
    report = fire_(net, list(layers), tol=1e-5, method="polar_express")
    for name, lin in layers.items():
        w_old = before[f"{name}.weight"]
        c = math.sqrt(w_old.shape[0] / w_old.shape[1])
        torch.testing.assert_close(lin.weight.double(), c * svd_polar(w_old), atol=1e-4, rtol=0)
    for n, p in net.named_parameters():
        if not n.endswith("weight") or not isinstance(dict(net.named_modules())[n.rsplit(".", 1)[0]], nn.Linear):
            assert torch.equal(p, before[n]), n  # biases and LayerNorm γ, β
    for lr in report.layers:
        w_old, w_new = before[f"{lr.name}.weight"], dict(net.named_modules())[lr.name].weight.detach()
        assert lr.op == "fire" and lr.residual <= 1e-5 and lr.dfi_after < 1e-8 and lr.seconds >= 0
        assert lr.sfe == pytest.approx(float((w_old - w_new).double().square().sum()), rel=1e-5)
        assert lr.rel_sfe == pytest.approx(lr.sfe / float(w_old.double().square().sum()), rel=1e-5)
        assert lr.dfi_before > 1e-3
    summary = report.summary()
    assert summary["sfe_total"] == pytest.approx(sum(lr.sfe for lr in report.layers))


def test_fire_whole_nature_cnn_paper_default(cnn):
    """Default: 10 cubic steps; conv slices and the thin 3136→512 layer come out nearly orthogonal, the residual says
    how nearly, and the report covers every layer."""
    report = fire_(cnn, select_layers(cnn))
    assert [lr.name for lr in report.layers] == ["encoder.0", "encoder.2", "encoder.4", "head.0", "head.2"]
    fc = cnn.head[0].weight.detach().double() / fire_scale((512, 3136))
    sigma = torch.linalg.svdvals(fc)
    assert report.layers[3].residual == pytest.approx(float((sigma - 1).abs().max()), abs=1e-5)
    assert all(math.isfinite(lr.residual) and lr.residual < 1.0 for lr in report.layers)


# ---- Shrink & Perturb, full reset-------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.8, 1.0])
@pytest.mark.parametrize("kinds", [None, ["linear", "norm"]])
def test_shrink_perturb_toward_init(alpha, kinds):
    torch.manual_seed(2)
    net = NormMLP()
    theta0 = capture_theta0(net)
    perturb_(net)
    before = snapshot(net)
    layers = select_layers(net, kinds=kinds, roles=["encoder"])
    assert any(isinstance(m, nn.LayerNorm) for m in layers.values()) == (kinds is not None)
    report = shrink_perturb_(net, layers, theta0, alpha=alpha)
    for n, p in net.named_parameters():
        layer, pname = n.rsplit(".", 1)
        if layer in layers:
            torch.testing.assert_close(p, alpha * before[n] + (1 - alpha) * theta0[n], atol=1e-7, rtol=3e-7)
        else:
            assert torch.equal(p, before[n]), n
    if alpha == 1.0:
        assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())
    if alpha == 0.0:  # a full reset: θ₀ exactly
        assert all(torch.equal(p, theta0[n]) for n, p in net.named_parameters() if n.rsplit(".", 1)[0] in layers)
    expected_changed = [p for m in layers.values() for p in m.parameters()]
    assert {id(p) for p in report.changed} == {id(p) for p in expected_changed}
    norm_reports = [lr for lr in report.layers if isinstance(layers[lr.name], nn.LayerNorm)]
    assert all(math.isnan(lr.dfi_before) and math.isfinite(lr.sfe) for lr in norm_reports)


def test_shrink_perturb_toward_random_is_seeded():
    torch.manual_seed(3)
    net = NormMLP()
    perturb_(net)
    before = snapshot(net)
    names = ["encoder.0", "head.1"]
    torch.manual_seed(123)
    drawn = fresh_draw(net, names)
    torch.manual_seed(123)
    shrink_perturb_(net, names, None, alpha=0.8, toward="random")
    result = snapshot(net)
    for name in names:
        for pname in ("weight", "bias"):
            key = f"{name}.{pname}"
            torch.testing.assert_close(result[key], 0.8 * before[key] + 0.2 * drawn[key], atol=1e-7, rtol=0)
            assert not torch.equal(drawn[key], before[key])
    # Same seed, same draw; another seed, another draw.
    for seed, same in ((123, True), (7, False)):
        other = NormMLP()
        other.load_state_dict({k: v for k, v in before.items()}, strict=False)
        torch.manual_seed(seed)
        shrink_perturb_(other, names, None, alpha=0.8, toward="random")
        assert torch.equal(other.head[1].weight, net.head[1].weight) is same


@pytest.mark.parametrize("toward", ["init", "random"])
def test_full_reset(toward):
    torch.manual_seed(4)
    net = NormMLP()
    theta0 = capture_theta0(net)
    perturb_(net)
    before = snapshot(net)
    layers = select_layers(net, roles=["head"])
    torch.manual_seed(99)
    expected = theta0 if toward == "init" else fresh_draw(net, list(layers))
    torch.manual_seed(99)
    report = full_reset_(net, layers, theta0, toward=toward)
    for n, p in net.named_parameters():
        if n.rsplit(".", 1)[0] in layers:
            assert torch.equal(p, expected[n]), n
        else:
            assert torch.equal(p, before[n]), n  # encoder and the head's LayerNorm
    assert len(report.changed) == 2 * len(layers)
    assert all(lr.op == "full" and lr.sfe > 0 for lr in report.layers)


def test_full_reset_random_uses_network_init():
    """A fresh draw follows the network's own `init_weights` (the head's last layer is orthogonal with gain 0.5)."""
    torch.manual_seed(5)
    net = NormMLP()
    perturb_(net)
    full_reset_(net, ["head.3"], None, toward="random")
    w = net.head[3].weight.detach().double()
    torch.testing.assert_close(w @ w.T, 0.25 * torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)


# ---- plasticity injection---------------------------------------------------------------------------------------------


def trainable_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def test_injection_preserves_output_and_routes_gradients(cnn):
    theta0 = capture_theta0(cnn)
    perturb_(cnn, seed=1)
    x = torch.randint(0, 256, (4, 4, 84, 84), generator=torch.Generator().manual_seed(0)).float()
    out_before = cnn(x)
    n_trainable = trainable_count(cnn)
    old_head = cnn.head
    report = inject_plasticity(cnn, "head", theta0=theta0)
    assert isinstance(cnn.head, InjectedHead) and cnn.head.old is old_head
    torch.testing.assert_close(cnn(x), out_before, atol=1e-6, rtol=0)
    assert trainable_count(cnn) == n_trainable
    # New heads start at θ₀ of the head.
    for pname, p in cnn.head.new.named_parameters():
        assert torch.equal(p, theta0[f"head.{pname}"])
        assert torch.equal(dict(cnn.head.new_frozen.named_parameters())[pname], p)
    assert report.changed == [] and [lr.name for lr in report.layers] == ["head.new.0", "head.new.2"]

    cnn(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cnn.head.new.parameters())
    assert all(p.grad is not None for p in cnn.encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in cnn.head.old.parameters())
    assert all(p.grad is None and not p.requires_grad for p in cnn.head.new_frozen.parameters())


def test_injection_nests_and_trains():
    torch.manual_seed(6)
    net = NormMLP()
    theta0 = capture_theta0(net)
    perturb_(net)
    x = torch.randn(16, 10, generator=torch.Generator().manual_seed(1))
    n_trainable = trainable_count(net)
    for depth in (1, 2):
        out = net(x).detach()
        inject_plasticity(net, theta0=theta0, toward="init")
        torch.testing.assert_close(net(x), out, atol=1e-6, rtol=0)
        assert injection_depth(net) == depth and trainable_count(net) == n_trainable
        # The optimizer is rebuilt with the trainable parameters; a step moves the output through the new head.
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
        frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
        net(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        assert not torch.allclose(net(x), out)
        assert all(torch.equal(p, frozen[n]) for n, p in net.named_parameters() if n in frozen)
    assert isinstance(net.head.old, InjectedHead) and not isinstance(net.head.new, InjectedHead)
    assert {n for n, _ in net.head.new.named_parameters()} == {n for n, _ in net.head.old.old.named_parameters()}


def test_injection_toward_random_follows_network_init():
    torch.manual_seed(7)
    net = NormMLP()
    theta0 = capture_theta0(net)
    perturb_(net)
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(2))
    out = net(x).detach()
    torch.manual_seed(42)
    inject_plasticity(net, toward="random")
    torch.testing.assert_close(net(x), out, atol=1e-6, rtol=0)
    w = net.head.new[3].weight.detach().double()
    torch.testing.assert_close(w @ w.T, 0.25 * torch.eye(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert not torch.equal(net.head.new[3].weight, theta0["head.3.weight"])
    # Reproducible under the seed.
    torch.manual_seed(8)
    twin = NormMLP()
    twin.load_state_dict(net.head.old.state_dict(prefix="head.") | net.encoder.state_dict(prefix="encoder."))
    torch.manual_seed(42)
    inject_plasticity(twin, toward="random")
    assert torch.equal(twin.head.new[3].weight, net.head.new[3].weight)


@pytest.mark.parametrize("how", ["rebuild", "reinject"])
def test_injected_state_dict_loads_into_fresh_network(how):
    torch.manual_seed(9)
    net = NormMLP()
    theta0 = capture_theta0(net)
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(3))
    for seed in (1, 2):
        perturb_(net, seed=seed)
        inject_plasticity(net, theta0=theta0)
    perturb_(net, seed=3)
    state = net.state_dict()
    assert injection_depth(net) == 2

    torch.manual_seed(10)
    fresh = NormMLP()
    if how == "rebuild":
        rebuild_injections(fresh, injection_depth(net))
    else:
        for _ in range(2):
            inject_plasticity(fresh, theta0=capture_theta0(NormMLP()))
    fresh.load_state_dict(state)  # strict
    torch.testing.assert_close(fresh(x), net(x), atol=0, rtol=0)
    assert {n: p.requires_grad for n, p in fresh.named_parameters()} == {
        n: p.requires_grad for n, p in net.named_parameters()
    }
    assert trainable_count(fresh) == trainable_count(NormMLP())


# ---- bad input--------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [-0.1, 1.5, math.nan, True, "0.5"])
def test_shrink_perturb_bad_alpha(alpha):
    net = NormMLP()
    before = snapshot(net)
    with pytest.raises(ValueError, match=f"alpha.*{alpha!r}"):
        shrink_perturb_(net, ["head.1"], capture_theta0(net), alpha=alpha)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda net, t0: fire_(net, ["head.1"], method="qr"), "'qr'"),
        (lambda net, t0: fire_(net, ["head.1"], scale="xavier"), "'xavier'"),
        (lambda net, t0: fire_(net, ["head.1"], steps=0), "steps.*0"),
        (lambda net, t0: fire_(net, ["head.9"]), "'head.9'.*available layers: encoder.0"),
        (lambda net, t0: fire_(net, ["head.0"]), "'head.0' is a LayerNorm"),
        (lambda net, t0: fire_(net, []), "empty"),
        (lambda net, t0: fire_(net, select_layers(NormMLP())), "another network"),
        (lambda net, t0: shrink_perturb_(net, ["head.1"], t0, alpha=0.5, toward="zero"), "'zero'"),
        (lambda net, t0: shrink_perturb_(net, ["head.1"], None, alpha=0.5), "theta0"),
        (lambda net, t0: full_reset_(net, ["head.1"], t0, toward="fresh"), "'fresh'"),
        (lambda net, t0: full_reset_(net, ["head.1"], {"x": torch.ones(1)}), r"\['head.1.weight', 'head.1.bias'\]"),
        (lambda net, t0: full_reset_(net, ["nope"], t0), "'nope'"),
        (lambda net, t0: inject_plasticity(net, "tail", theta0=t0), "'tail'.*children are \\['encoder', 'head'\\]"),
        (lambda net, t0: inject_plasticity(net, theta0=t0, toward="old"), "'old'"),
        (lambda net, t0: inject_plasticity(net), "theta0"),
        (lambda net, t0: rebuild_injections(net, -1), "-1"),
        (lambda net, t0: inject_plasticity(net.state_dict(), theta0=t0), "network must be a torch.nn.Module"),
        (lambda net, t0: full_reset_(net, net, t0), "list of layer names, got NormMLP$"),
    ],
)
def test_bad_input_raises_before_any_change(call, match):
    torch.manual_seed(11)
    net = NormMLP()
    theta0 = capture_theta0(net)
    perturb_(net)
    before = snapshot(net)
    with pytest.raises(ValueError, match=match):
        call(net, theta0)
    assert isinstance(net.head, nn.Sequential)
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


def test_fire_on_zero_weight_is_finite():
    net = NormMLP()
    with torch.no_grad():
        net.head[1].weight.zero_()
    report = fire_(net, ["head.1"])
    assert torch.equal(net.head[1].weight, torch.zeros_like(net.head[1].weight))
    assert report.layers[0].residual == 1.0 and report.layers[0].sfe == 0.0
