"""Soft Weight Rescaling: the EMA of norms, Theorem 1's proportionality where it holds (ReLU MLPs, the Nature CNN,
the part after the last normalisation layer, each SimBa segment) and where it does not (a whole SimBa critic), the
running product on biases, untouched optimizer state, re-init, checkpoints and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fire_rl.networks import QNetwork, SimbaCritic
from fire_rl.regularizers import SoftWeightRescaling

DTYPES = [torch.float32, torch.float64]


def tol(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-11, "atol": 1e-12}


def mlp(bias: bool = True, norm: bool = False, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Sequential:
    """Linear-ReLU-Linear-[LayerNorm(ε=0)]-ReLU-Linear with nonzero biases (so that bias handling shows)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(7, 16, bias=bias), nn.ReLU(), nn.Linear(16, 12, bias=bias)]
    if norm:
        # ε = 0 makes LayerNorm exactly scale invariant, so proportionality can be checked to rounding error.
        layers.append(nn.LayerNorm(12, eps=0.0))
    layers += [nn.ReLU(), nn.Linear(12, 3, bias=bias)]
    net = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    return net


def drift_(network: nn.Module, seed: int = 1) -> None:
    """Move the weights away from their initial norms, each layer by its own factor in [0.5, 2], as training does."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            scale = 0.5 + 1.5 * torch.rand((), generator=gen).item()
            p.mul_(scale).add_(0.05 * torch.randn(p.shape, generator=gen).to(p.dtype))


def expected_factors(swr: SoftWeightRescaling, lam: float) -> torch.Tensor:
    """c_l from the paper's formula, computed here in float64 from the weights themselves."""
    norms = torch.stack([w.detach().double().norm() for w in swr.weights])
    return (lam * swr.init_norms.double() + (1 - lam) * norms) / norms


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [1e-3, 0.3, 1.0])
def test_norms_follow_the_ema(dtype, lam):
    net = SimbaCritic(5, 2, hidden=16, num_blocks=2).to(dtype)
    swr = SoftWeightRescaling(net, lam=lam)
    n0 = swr.init_norms.clone()
    for step in range(3):
        drift_(net, seed=step)
        before = torch.stack([w.detach().double().norm() for w in swr.weights])
        swr.step()
        after = torch.stack([w.detach().double().norm() for w in swr.weights])
        torch.testing.assert_close(after, lam * n0.double() + (1 - lam) * before, **tol(dtype))
        torch.testing.assert_close(swr.last_norms.double(), after, **tol(dtype))
    if lam == 1.0:
        torch.testing.assert_close(after, n0.double(), **tol(dtype))


def test_lam_zero_changes_nothing():
    net = mlp()
    drift_(net)
    before = [p.detach().clone() for p in net.parameters()]
    SoftWeightRescaling(net, lam=0.0).step()
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p, b)


@pytest.mark.parametrize("bias", [False, True])
def test_theorem1_relu_mlp_output_scales_by_the_product(bias):
    net = mlp(bias=bias)
    swr = SoftWeightRescaling(net, lam=0.4)
    drift_(net)
    x = torch.randn(32, 7, dtype=torch.float64)
    y0 = net(x).detach()
    c = expected_factors(swr, 0.4)
    swr.step()
    torch.testing.assert_close(net(x).detach(), c.prod() * y0, rtol=1e-11, atol=1e-12)
    assert abs(c.prod().item() - 1.0) > 1e-3, "the factors must differ from 1 for the test to mean anything"


def test_theorem1_nature_cnn():
    torch.manual_seed(0)
    net = QNetwork(6).double()
    swr = SoftWeightRescaling(net, lam=0.2)
    drift_(net)
    x = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    y0 = net(x).detach()
    c = expected_factors(swr, 0.2)
    swr.step()
    torch.testing.assert_close(net(x).detach(), c.prod() * y0, rtol=1e-10, atol=1e-12)


def test_running_product_restarts_at_the_last_norm_layer():
    """Linear, ReLU, Linear, LayerNorm, ReLU, Linear: the output scales by c_LN·c_out only, whatever came before."""
    net = mlp(norm=True)
    swr = SoftWeightRescaling(net, lam=0.4)
    drift_(net)
    x = torch.randn(32, 7, dtype=torch.float64)
    y0 = net(x).detach()
    c = dict(zip(swr.names, expected_factors(swr, 0.4)))
    swr.step()
    torch.testing.assert_close(net(x).detach(), c["3"] * c["5"] * y0, rtol=1e-10, atol=1e-12)
    assert abs((c["0"] * c["2"]).item() - 1.0) > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
def test_biases_follow_the_running_product(dtype):
    net = SimbaCritic(5, 2, hidden=16, num_blocks=2).to(dtype)
    swr = SoftWeightRescaling(net, lam=0.3)
    drift_(net)
    modules = dict(net.named_modules())
    biases = {n: modules[n].bias.detach().double().clone() for n in swr.names}
    c = dict(zip(swr.names, expected_factors(swr, 0.3)))
    swr.step()
    # Segments start at a LayerNorm: [encoder.0], [norm, fc1, fc2] per block, [final norm, head].
    products = {"encoder.0": c["encoder.0"], "encoder.3": c["encoder.3"], "head.0": c["encoder.3"] * c["head.0"]}
    for b in ("encoder.1", "encoder.2"):
        products[f"{b}.norm"] = c[f"{b}.norm"]
        products[f"{b}.fc1"] = c[f"{b}.norm"] * c[f"{b}.fc1"]
        products[f"{b}.fc2"] = c[f"{b}.norm"] * c[f"{b}.fc1"] * c[f"{b}.fc2"]
    assert set(products) == set(swr.names)
    for name, product in products.items():
        torch.testing.assert_close(modules[name].bias.detach().double(), product * biases[name], **tol(dtype))


def test_simba_segments_scale_exactly_but_the_critic_is_not_proportional():
    torch.manual_seed(0)
    net = SimbaCritic(5, 2, hidden=16, num_blocks=2).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.bias.normal_(0.0, 0.3)
    swr = SoftWeightRescaling(net, lam=0.3)
    drift_(net)
    obs, act = torch.randn(64, 5, dtype=torch.float64), torch.randn(64, 2, dtype=torch.float64)
    x = torch.randn(64, 16, dtype=torch.float64)
    enc, blocks, final_norm, head = net.encoder[0], [net.encoder[1], net.encoder[2]], net.encoder[3], net.head[0]

    def branch(block, x):
        return block.fc2(block.act(block.fc1(block.norm(x))))

    before = {
        "input": enc(torch.cat((obs, act), -1)).detach(),
        "branches": [branch(b, x).detach() for b in blocks],
        "head": head(final_norm(x)).detach(),
        "q": net(obs, act).detach(),
    }
    c = dict(zip(swr.names, expected_factors(swr, 0.3)))
    swr.step()
    opts = {"rtol": 1e-10, "atol": 1e-12}
    torch.testing.assert_close(enc(torch.cat((obs, act), -1)).detach(), c["encoder.0"] * before["input"], **opts)
    for k, b in enumerate(blocks):
        p = c[f"encoder.{k + 1}.norm"] * c[f"encoder.{k + 1}.fc1"] * c[f"encoder.{k + 1}.fc2"]
        torch.testing.assert_close(branch(b, x).detach(), p * before["branches"][k], **opts)
    torch.testing.assert_close(head(final_norm(x)).detach(), c["encoder.3"] * c["head.0"] * before["head"], **opts)
    # The residual sums mix paths rescaled by different factors: no single constant relates old and new Q-values.
    ratio = net(obs, act).detach() / before["q"]
    assert ratio.std() > 1e-3 * ratio.abs().mean()


def test_optimizer_state_is_untouched():
    net = mlp(dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    swr = SoftWeightRescaling(net, lam=0.5)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 7)).square().mean().backward()
        opt.step()
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    drift_(net)
    swr.step()
    for p, s in opt.state.items():
        for k, v in s.items():
            assert torch.equal(v, state[id(p)][k]), k


def test_reinit_makes_current_norms_the_reference():
    net = mlp()
    swr = SoftWeightRescaling(net, lam=1.0)
    drift_(net)
    current = torch.stack([w.detach().norm() for w in swr.weights])
    assert not torch.allclose(swr.init_norms, current)
    swr.reinit()
    torch.testing.assert_close(swr.init_norms, current, rtol=1e-12, atol=0.0)
    before = [p.detach().clone() for p in net.parameters()]
    swr.step()  # λ = 1 pulls to the stored norms, which are now the current ones: nothing moves
    for p, b in zip(net.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=1e-12, atol=1e-14)


def test_state_dict_round_trip_and_mismatch():
    net = mlp()
    swr = SoftWeightRescaling(net, lam=0.1)
    drift_(net)
    swr.reinit()
    state = swr.state_dict()
    fresh = SoftWeightRescaling(mlp(seed=5), lam=0.1)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.init_norms, swr.init_norms)
    with pytest.raises(ValueError, match="layers"):
        SoftWeightRescaling(mlp(norm=True), lam=0.1).load_state_dict(state)


def test_log_scalars_and_zero_weight():
    net = mlp()
    with torch.no_grad():
        net[2].weight.zero_()
    swr = SoftWeightRescaling(net, lam=0.5)
    drift_(net)
    with torch.no_grad():
        net[2].weight.zero_()
    swr.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    logs = swr.log_scalars()
    assert set(logs) == {f"swr/{n}/{k}" for n in ("0", "2", "4") for k in ("norm", "ratio", "factor")}
    assert logs["swr/2/factor"] == 1.0 and logs["swr/2/norm"] == 0.0
    assert math.isclose(logs["swr/0/norm"], net[0].weight.norm().item(), rel_tol=1e-9)
    assert math.isclose(logs["swr/0/ratio"], logs["swr/0/norm"] / swr.init_norms[0].item(), rel_tol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -0.1}, "lam"),
        ({"lam": 1.5}, "lam"),
        ({"lam": True}, "lam"),
        ({"lam": math.nan}, "lam"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftWeightRescaling(mlp(), **kwargs)


def test_a_network_that_is_not_a_module_is_refused():
    with pytest.raises(ValueError, match="network must be a torch.nn.Module, got OrderedDict"):
        SoftWeightRescaling(mlp().state_dict())
