"""ReDo on real networks: neurons built to be dormant are recycled (fresh incoming rows, zero bias, zero outgoing
columns), everything else stays bit-identical, Adam moments are zeroed on exactly those rows/columns, the pairing
through the Nature CNN's Flatten and SimBa's blocks, the report, and architectures that must be refused."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fire_rl.networks import QNetwork, SimbaCritic
from fire_rl.resets.common import fresh_draw
from fire_rl.resets.redo import NeuronPair, find_neuron_pairs, redo_


def kill_(layer: nn.Module, units: list[int]) -> None:
    """Make `units` of a Linear/Conv2d dormant after its ReLU: zero incoming weights and a negative bias."""
    with torch.no_grad():
        layer.weight[units] = 0.0
        layer.bias[units] = -1.0


def reference_dormant(activations: torch.Tensor, tau: float) -> torch.Tensor:
    """τ-dormant mask from a (B, n) or (B, C, H, W) post-ReLU activation, computed here without fire_rl."""
    a = activations.abs().double()
    per_unit = a.mean(dim=0) if a.dim() == 2 else a.mean(dim=(0, 2, 3))
    return per_unit / per_unit.mean() <= tau


def snapshot(network: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in network.named_parameters()}


def check_recycled(network, before, fresh, producer, consumer, mask, spatial=1) -> None:
    """Rows of `mask` fresh, their bias 0, their outgoing columns 0, every other element bit-identical."""
    w, b = dict(network.named_parameters())[f"{producer}.weight"], dict(network.named_parameters())[f"{producer}.bias"]
    assert torch.equal(w[mask], fresh[f"{producer}.weight"][mask])
    assert torch.equal(w[~mask], before[f"{producer}.weight"][~mask])
    assert torch.all(b[mask] == 0) and torch.equal(b[~mask], before[f"{producer}.bias"][~mask])
    out = dict(network.named_parameters())[f"{consumer}.weight"]
    cols = mask.repeat_interleave(spatial)
    assert torch.all(out[:, cols] == 0)
    assert torch.equal(out[:, ~cols], before[f"{consumer}.weight"][:, ~cols])


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_mlp_built_dormant_units_are_recycled_and_nothing_else_changes(tau):
    torch.manual_seed(0)
    net = MLP()
    kill_(net.encoder[0], [2, 7])
    kill_(net.encoder[2], [0, 5, 9])
    x = torch.randn(64, 8)
    with torch.no_grad():
        h1 = F.relu(net.encoder[0](x))
        h2 = F.relu(net.encoder[2](h1))
    masks = {"encoder.0": reference_dormant(h1, tau), "encoder.2": reference_dormant(h2, tau)}
    assert masks["encoder.0"][[2, 7]].all() and masks["encoder.2"][[0, 5, 9]].all()
    before = snapshot(net)
    torch.manual_seed(1)
    fresh = fresh_draw(copy.deepcopy(net), ["encoder.0", "encoder.2"])
    torch.manual_seed(1)
    report = redo_(net, x, tau=tau)

    # encoder.2 is both a producer and the consumer of encoder.0's units: check rows and columns separately.
    params = dict(net.named_parameters())
    m0, m2 = masks["encoder.0"], masks["encoder.2"]
    assert torch.equal(params["encoder.0.weight"][m0], fresh["encoder.0.weight"][m0])
    assert torch.equal(params["encoder.0.weight"][~m0], before["encoder.0.weight"][~m0])
    assert torch.all(params["encoder.0.bias"][m0] == 0)
    assert torch.equal(params["encoder.0.bias"][~m0], before["encoder.0.bias"][~m0])
    w2 = params["encoder.2.weight"]
    assert torch.all(w2[:, m0] == 0)
    assert torch.equal(w2[m2][:, ~m0], fresh["encoder.2.weight"][m2][:, ~m0])
    assert torch.equal(w2[~m2][:, ~m0], before["encoder.2.weight"][~m2][:, ~m0])
    assert torch.all(params["encoder.2.bias"][m2] == 0)
    assert torch.all(params["head.weight"][:, m2] == 0)
    assert torch.equal(params["head.weight"][:, ~m2], before["head.weight"][:, ~m2])
    assert torch.equal(params["head.bias"], before["head.bias"])

    counts = {lr.name: lr.recycled for lr in report.layers}
    assert counts == {"encoder.0": float(m0.sum()), "encoder.2": float(m2.sum())}
    assert report.summary()["encoder.0/recycled"] == float(m0.sum())
    changed = {id(p) for p in report.changed}
    assert changed == {
        id(params[k])
        for k in ("encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias", "head.weight")
    }
    assert len(report.changed) == len(changed)
    # After recycling the built units are alive again (fresh rows, zero bias).
    with torch.no_grad():
        assert (F.relu(net.encoder[0](x))[:, [2, 7]].abs().mean(0) > 0).all()


def test_adam_moments_zeroed_on_exactly_the_recycled_rows_and_columns():
    torch.manual_seed(0)
    net = MLP()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(64, 8)
    for _ in range(3):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    kill_(net.encoder[2], [1, 4])
    with torch.no_grad():
        h2 = F.relu(net.encoder[2](F.relu(net.encoder[0](x))))
    mask = reference_dormant(h2, 0.0)
    assert mask[[1, 4]].all()
    state = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in net.named_parameters()}
    redo_(net, x, tau=0.0, optimizer=opt, layers=["encoder.2"])
    params = dict(net.named_parameters())
    for key in ("exp_avg", "exp_avg_sq"):
        rows = opt.state[params["encoder.2.weight"]][key]
        assert torch.all(rows[mask] == 0) and torch.equal(rows[~mask], state["encoder.2.weight"][key][~mask])
        cols = opt.state[params["head.weight"]][key]
        assert torch.all(cols[:, mask] == 0) and torch.equal(cols[:, ~mask], state["head.weight"][key][:, ~mask])
    for name, p in params.items():
        assert torch.equal(opt.state[p]["step"], state[name]["step"])
        if name not in ("encoder.2.weight", "head.weight"):
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(opt.state[p][key], state[name][key]), (name, key)


def test_nature_cnn_conv_channels_and_flatten_pairing():
    torch.manual_seed(0)
    net = QNetwork(6)
    x = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    pairs = find_neuron_pairs(net, x)
    assert pairs == [
        NeuronPair("encoder.0", "encoder.1", "encoder.2", 1),
        NeuronPair("encoder.2", "encoder.3", "encoder.4", 1),
        NeuronPair("encoder.4", "encoder.5", "head.0", 49),
        NeuronPair("head.0", "head.1", "head.2", 1),
    ]
    kill_(net.encoder[0], [3])
    kill_(net.encoder[4], [5, 60])
    with torch.no_grad():
        h = F.relu(net.encoder[0](x.float() / 255.0))
        h3 = F.relu(net.encoder[4](F.relu(net.encoder[2](h))))
    mask3 = reference_dormant(h3, 0.0)
    assert mask3[[5, 60]].all()
    before = snapshot(net)
    torch.manual_seed(3)
    fresh = fresh_draw(copy.deepcopy(net), ["encoder.4"])
    torch.manual_seed(3)
    report = redo_(net, x, tau=0.0, layers=["encoder.0", "encoder.4"])
    check_recycled(net, before, fresh, "encoder.4", "head.0", mask3, spatial=49)
    head_w = net.head[0].weight
    assert torch.all(head_w[:, 5 * 49 : 6 * 49] == 0) and torch.all(head_w[:, 60 * 49 : 61 * 49] == 0)
    alive = (~mask3).nonzero().flatten()[0].item()  # a live channel: its 49 columns are the old ones
    assert torch.equal(
        head_w[:, alive * 49 : (alive + 1) * 49], before["head.0.weight"][:, alive * 49 : (alive + 1) * 49]
    )
    assert torch.all(net.encoder[2].weight[:, 3] == 0)  # conv → conv: input channel 3 of the next conv
    assert torch.all(net.encoder[0].weight[3] != before["encoder.0.weight"][3])
    assert {lr.name: lr.recycled for lr in report.layers}["encoder.4"] == float(mask3.sum())
    for name in ("head.0.bias", "head.2.weight", "head.2.bias"):
        assert torch.equal(dict(net.named_parameters())[name], before[name])


def test_simba_critic_block_units():
    torch.manual_seed(0)
    net = SimbaCritic(6, 2, hidden=16, num_blocks=2)
    obs, act = torch.randn(32, 6), torch.randn(32, 2)
    assert [(p.producer, p.consumer) for p in find_neuron_pairs(net, (obs, act))] == [
        ("encoder.1.fc1", "encoder.1.fc2"),
        ("encoder.2.fc1", "encoder.2.fc2"),
    ]
    kill_(net.encoder[1].fc1, [0, 11, 40])
    acts = {}
    hook = net.encoder[1].act.register_forward_hook(lambda m, a, out: acts.update(h=out.detach().clone()))
    with torch.no_grad():
        net(obs, act)
    hook.remove()
    mask = reference_dormant(acts["h"], 0.0)
    assert mask[[0, 11, 40]].all()
    before = snapshot(net)
    torch.manual_seed(2)
    fresh = fresh_draw(copy.deepcopy(net), ["encoder.1.fc1"])
    torch.manual_seed(2)
    redo_(net, (obs, act), tau=0.0, layers=["encoder.1.fc1"])
    check_recycled(net, before, fresh, "encoder.1.fc1", "encoder.1.fc2", mask)
    for name, p in net.named_parameters():
        if not name.startswith(("encoder.1.fc1", "encoder.1.fc2")):
            assert torch.equal(p, before[name]), name


class FedByNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.act = nn.ReLU()
        self.b = nn.Linear(8, 8)
        self.act2 = nn.ReLU()
        self.out = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act2(self.b(self.act(self.norm(self.a(x))))))


class ReluOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.a(x))


class FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


class ViewInsteadOfFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).view(x.shape[0], -1))


@pytest.mark.parametrize(
    "net, x, match",
    [
        (FedByNorm(), torch.randn(4, 4), "fed by the LayerNorm 'norm'"),
        (ReluOutput(), torch.randn(4, 4), "read by no layer"),
        (FunctionalRelu(), torch.randn(4, 4), "no nn.ReLU"),
        (ViewInsteadOfFlatten(), torch.randn(4, 1, 6, 6), "read by no layer"),
    ],
)
def test_unsupported_architectures_raise(net, x, match):
    before = snapshot(net)
    with pytest.raises(ValueError, match=match):
        redo_(net, x)
    for name, p in net.named_parameters():
        assert torch.equal(p, before[name])


def test_selecting_a_pairable_producer_skips_unpairable_activations():
    torch.manual_seed(0)
    net = FedByNorm()
    kill_(net.b, [1])
    report = redo_(net, torch.randn(16, 4), tau=0.0, layers=["b"])
    assert [lr.name for lr in report.layers] == ["b"] and report.layers[0].recycled >= 1
    assert torch.all(net.out.weight[:, 1] == 0)


def test_bad_input_raises_before_any_change():
    torch.manual_seed(0)
    net = MLP()
    x = torch.randn(8, 8)
    before = snapshot(net)
    other = torch.optim.Adam(MLP().parameters())
    cases = [
        ({"tau": -0.1}, "tau"),
        ({"tau": float("nan")}, "tau"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"layers": ["head"]}, "not recyclable producers"),
        ({"layers": ["encoder.1"]}, "ReLU"),
        ({"optimizer": other}, "does not hold"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            redo_(net, x, **kwargs)
    with pytest.raises(ValueError, match="inputs"):
        redo_(net, "not a tensor")
    for name, p in net.named_parameters():
        assert torch.equal(p, before[name])
