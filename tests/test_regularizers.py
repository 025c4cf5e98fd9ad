"""L2-init and Parseval losses against their formulas written out here (loss values and autograd gradients), their
default parameter/layer selections, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fire_rl.networks import QNetwork, SimbaCritic
from fire_rl.regularizers import Regularizer, l2_init_loss, parseval_layers, parseval_loss
from fire_rl.resets import capture_theta0


def drift_(network: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen).to(p.dtype))


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params, allow_unused=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l2_init_matches_the_formula_and_its_gradient(dtype):
    torch.manual_seed(0)
    net = SimbaCritic(5, 2, hidden=8, num_blocks=1).to(dtype)
    theta0 = capture_theta0(net)
    drift_(net)
    params = dict(net.named_parameters())
    loss = l2_init_loss(net, theta0, lam=0.3)
    explicit = 0.3 * sum(((p - theta0[n]) ** 2).sum() for n, p in params.items())
    opts = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(loss, explicit, **opts)
    for g, g_ref, (n, p) in zip(
        grads(loss, list(params.values())), grads(explicit, list(params.values())), params.items()
    ):
        torch.testing.assert_close(g, g_ref, **opts)
        torch.testing.assert_close(g, 0.6 * (p - theta0[n]).detach(), **opts)
        assert g.abs().sum() > 0


def test_l2_init_at_theta0_is_zero_with_zero_gradient():
    net = SimbaCritic(5, 2, hidden=8, num_blocks=1)
    theta0 = capture_theta0(net)
    loss = l2_init_loss(net, theta0)
    assert loss.item() == 0.0
    for g in grads(loss, list(net.parameters())):
        assert torch.equal(g, torch.zeros_like(g))  # not NaN: the norm's gradient at 0


def test_l2_init_skips_frozen_parameters():
    torch.manual_seed(0)
    net = SimbaCritic(5, 2, hidden=8, num_blocks=1)
    theta0 = capture_theta0(net)
    drift_(net)
    params = dict(net.named_parameters())
    expected = sum(((params[k] - theta0[k]) ** 2).sum() for k in ("head.0.weight", "head.0.bias"))
    net.encoder.requires_grad_(False)
    trainable = l2_init_loss(net, theta0)
    torch.testing.assert_close(trainable, expected)


def explicit_parseval(weights: list[torch.Tensor], s: float) -> torch.Tensor:
    """Σ ‖W Wᵀ − s·I‖²_F with W (d_out, d_in), conv kernels unfolded to (C_out, C_in·k·k): the formula as written."""
    total = 0.0
    for w in weights:
        w2 = w.reshape(w.shape[0], -1)
        total = total + (w2 @ w2.T - s * torch.eye(w2.shape[0], dtype=w.dtype)).pow(2).sum()
    return total


class Shapes(nn.Module):
    """Layers of every kind of shape: tall, wide, square Linears (two of equal shape: one batched matmul), a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3)
        self.tall = nn.Linear(4, 9)
        self.wide = nn.Linear(9, 6)
        self.square1 = nn.Linear(6, 6)
        self.square2 = nn.Linear(6, 6)
        self.out = nn.Linear(6, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("s", [1.0, 2.0])
def test_parseval_matches_the_formula_and_its_gradient(dtype, s):
    torch.manual_seed(0)
    net = Shapes().to(dtype)
    chosen = parseval_layers(net)
    assert list(chosen) == ["conv", "tall", "wide", "square1", "square2"]  # all but the last Linear
    weights = [m.weight for m in chosen.values()]
    loss = parseval_loss(net, s=s, lam=0.01)
    explicit = 0.01 * explicit_parseval(weights, s)
    opts = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(loss, explicit, **opts)
    for g, g_ref in zip(grads(loss, weights), grads(explicit, weights)):
        torch.testing.assert_close(g, g_ref, **opts)
        assert g.abs().sum() > 0
    assert grads(loss, [net.out.weight])[0] is None  # the output layer is not regularised


def test_parseval_of_an_exact_tight_frame_is_the_rank_floor():
    """A wide W with orthogonal rows of norm √s scores 0; a tall one can reach s²·(d_out − d_in) at best."""
    wide = nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 1)).double()
    tall = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1)).double()
    with torch.no_grad():
        nn.init.orthogonal_(wide[0].weight, gain=2.0**0.5)
        nn.init.orthogonal_(tall[0].weight, gain=2.0**0.5)
    torch.testing.assert_close(parseval_loss(wide), torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(parseval_loss(tall), torch.tensor(4.0 * 4, dtype=torch.float64))


def test_parseval_default_layers_of_the_agents_networks():
    assert list(parseval_layers(QNetwork(6))) == ["encoder.0", "encoder.2", "encoder.4", "head.0"]
    critic = SimbaCritic(5, 2, hidden=8, num_blocks=2)
    assert list(parseval_layers(critic)) == [
        "encoder.0",
        "encoder.1.fc1",
        "encoder.1.fc2",
        "encoder.2.fc1",
        "encoder.2.fc2",
    ]
    loss = parseval_loss(critic)
    explicit = explicit_parseval([m.weight for m in parseval_layers(critic).values()], 2.0)
    torch.testing.assert_close(loss, explicit, rtol=1e-5, atol=1e-4)


def test_bad_input():
    net = SimbaCritic(5, 2, hidden=8, num_blocks=1)
    theta0 = capture_theta0(net)
    with pytest.raises(ValueError, match="lam"):
        l2_init_loss(net, theta0, lam=-1.0)
    with pytest.raises(ValueError, match="theta0 has no entry"):
        l2_init_loss(net, {k: v for k, v in theta0.items() if k != "head.0.bias"})
    with pytest.raises(ValueError, match="shape"):
        l2_init_loss(net, {**theta0, "head.0.bias": torch.zeros(3)})
    for s in (0.0, -2.0, float("inf"), True):
        with pytest.raises(ValueError, match="s must"):
            parseval_loss(net, s=s)
    with pytest.raises(ValueError, match="lam"):
        parseval_loss(net, lam=float("nan"))
    with pytest.raises(ValueError, match="besides its output layer"):
        parseval_loss(nn.Sequential(nn.Linear(3, 2)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"swr_lambda": math.nan}, "swr_lambda"),
        ({"swr_lambda": 1.5}, "swr_lambda"),
        ({"l2init_lambda": math.inf}, "l2init_lambda"),
        ({"l2init_lambda": -1e-3}, "l2init_lambda"),
        ({"parseval_lambda": math.nan}, "parseval_lambda"),
        ({"parseval_s": 0.0}, "parseval_s"),
        ({"parseval_s": math.inf}, "parseval_s"),
    ],
)
def test_regularizer_refuses_a_non_finite_or_out_of_range_coefficient(kwargs, name):
    with pytest.raises(ValueError, match=f"{name} must"):
        Regularizer("swr", **kwargs)
