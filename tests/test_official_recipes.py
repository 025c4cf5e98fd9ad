"""The paper recipes against the official FIRE code, parameter by parameter.

Each reference below re-implements, in PyTorch and as literally as possible, what github.com/isaac7778/FIRE @ c37a0ac
does: the DQN half from rl/dqn/cleanrl/dqn_atari_resume.py (``apply_fire``, ``apply_srdqn``, ``apply_full_reset``, the
``pi`` branch with ``PlasticityInjectedQNetwork``), the SAC half (JAX) from rl/sac/scale_rl/agents/simba/projection.py
(``orthogonalize_via_newton_schulz``, ``orthogonal_project_layer``) and simba_agent.py
(``_orthogonally_project_network``, ``_snp_network``, ``_init_network``, where the "new" networks come from the same
seed, i.e. θ₀). The scheduler runs
the recipe on one copy of the networks, the reference on another, and every parameter (online and target), optimizer
state and the temperature are compared.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from fire_rl.metrics import dormant_scores
from fire_rl.networks import QNetwork, SimbaActor, SimbaCritic
from fire_rl.resets import InjectedHead, capture_theta0, find_neuron_pairs, polar
from fire_rl.scheduler import ResetConfig, ResetScheduler

# ---- DQN (Nature CNN) ------------------------------------------------------------------------------------------------


def official_newton_schulz(matrix: torch.Tensor, num_iters: int = 10) -> torch.Tensor:
    """``apply_fire.newton_schulz`` of dqn_atari_resume.py, line for line."""
    a, b = (1.5, -0.5)
    do_transpose = matrix.size(1) > matrix.size(0)
    X = matrix
    if do_transpose:
        X = X.T
    X = X / X.norm()
    for _ in range(num_iters):
        A = X.T @ X
        X = a * X + b * X @ A
    if do_transpose:
        X = X.T
    return X


@torch.no_grad()
def official_apply_fire(q: nn.Module, target: nn.Module, init: nn.Module) -> None:
    for m_q, m_target, m_init in zip(q.modules(), target.modules(), init.modules(), strict=True):
        if isinstance(m_q, nn.Linear):
            m_q.weight.copy_(m_init.weight)
            m_target.weight.copy_(m_init.weight)
            m_q.bias.copy_(m_init.bias)
            m_target.bias.copy_(m_init.bias)
        elif isinstance(m_q, nn.Conv2d):
            weight_matrix = m_q.weight.detach().clone()
            ortho = torch.zeros_like(weight_matrix)
            for i in range(weight_matrix.shape[2]):
                for j in range(weight_matrix.shape[3]):
                    ortho[:, :, i, j] = official_newton_schulz(weight_matrix[:, :, i, j], num_iters=10)
            kernel_size = weight_matrix.shape[2] * weight_matrix.shape[3]
            ortho *= np.sqrt(weight_matrix.shape[0] / weight_matrix.shape[1]) / kernel_size
            m_q.weight.copy_(ortho)
            m_target.weight.copy_(m_q.weight)  # the target's conv biases keep their own values


@torch.no_grad()
def official_apply_srdqn(q: nn.Module, target: nn.Module, init: nn.Module) -> None:
    for m_q, m_target, m_init in zip(q.modules(), target.modules(), init.modules(), strict=True):
        if isinstance(m_q, nn.Linear):
            for name in ("weight", "bias"):
                getattr(m_q, name).copy_(getattr(m_init, name))
                getattr(m_target, name).copy_(getattr(m_init, name))
        elif isinstance(m_q, nn.Conv2d):
            for name in ("weight", "bias"):
                getattr(m_q, name).mul_(0.2).add_(getattr(m_init, name), alpha=0.8)
                getattr(m_target, name).mul_(0.2).add_(getattr(m_init, name), alpha=0.8)  # the target's own values


@torch.no_grad()
def official_apply_full_reset(q: nn.Module, target: nn.Module, init: nn.Module) -> None:
    for m_q, m_target, m_init in zip(q.modules(), target.modules(), init.modules(), strict=True):
        if isinstance(m_q, (nn.Linear, nn.Conv2d)):
            for name in ("weight", "bias"):
                getattr(m_q, name).copy_(getattr(m_init, name))
                getattr(m_target, name).copy_(getattr(m_init, name))


def _batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=g) for _ in range(n)]


def _train(q: nn.Module, opt: torch.optim.Optimizer, batches) -> None:
    for x in batches:
        loss = q(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def trained_dqn(method: str):
    """Online, target (an older copy: they differ) and Adam after a few updates, and the scheduler's twin copies."""
    torch.manual_seed(0)
    q = QNetwork(4, init="xavier")
    init = copy.deepcopy(q)
    target = copy.deepcopy(q)
    opt = torch.optim.Adam(q.parameters(), lr=1e-3, eps=1.5e-4)
    sched = ResetScheduler(ResetConfig(reset=method, reset_recipe="paper-dqn", reset_at=(100,)))
    sched.add_network("q", q, target=target, optimizer=opt)
    sched.check()
    _train(q, opt, _batches(3, seed=1))
    target.load_state_dict(q.state_dict())  # a hard target update
    _train(q, opt, _batches(2, seed=2))
    return q, target, opt, init, sched


def _assert_same(ours: nn.Module, reference: nn.Module, what: str, **tol) -> None:
    for (name, a), b in zip(ours.named_parameters(), reference.parameters(), strict=True):
        if tol:
            torch.testing.assert_close(a, b, **tol, msg=lambda m, n=name: f"{what} {n}: {m}")
        else:
            assert torch.equal(a, b), f"{what} {name}"


def test_paper_dqn_fire_matches_official_apply_fire():
    """Item 5: FIRE on the conv weights, Linears of both networks := θ₀, and the target receives only the conv
    weights, keeping its own conv biases; Adam's state is untouched."""
    q, target, opt, init, sched = trained_dqn("fire")
    ref_q, ref_target = copy.deepcopy(q), copy.deepcopy(target)
    moments = {k: {s: v.clone() for s, v in st.items()} for k, st in enumerate(opt.state.values())}
    official_apply_fire(ref_q, ref_target, init)
    sched.apply(100, 5)
    # Linears and the target's conv biases are copies: bit-identical.
    for (name, a), b in zip(q.named_parameters(), ref_q.parameters(), strict=True):
        if name.startswith("head") or name.endswith("bias"):
            assert torch.equal(a, b), name
    for (name, a), b in zip(target.named_parameters(), ref_target.parameters(), strict=True):
        if name.startswith("head") or name.endswith("bias"):
            assert torch.equal(a, b), f"target {name}"
    # Conv weights: the same 10 cubic steps, ordered differently (our wide orientation, max-abs pre-scaling); the
    # results agree to float32 rounding (measured: max |difference| 3e-8 on entries up to 0.04).
    _assert_same(q, ref_q, "online", atol=1e-7, rtol=1e-5)
    _assert_same(target, ref_target, "target", atol=1e-7, rtol=1e-5)
    for conv_q, conv_t in zip(q.encoder, target.encoder, strict=True):
        if isinstance(conv_q, nn.Conv2d):
            assert torch.equal(conv_t.weight, conv_q.weight), "target conv weight := the online FIRE result"
            assert not torch.equal(conv_t.bias, conv_q.bias), "the target keeps its own conv biases"
    for k, st in enumerate(opt.state.values()):
        for s, v in st.items():
            assert torch.equal(v, moments[k][s]), "Adam state kept"


def test_paper_dqn_sp_matches_official_apply_srdqn():
    """Item 5: convs of online AND target shrunk toward θ₀ on their own values (0.2·θ + 0.8·θ₀), Linears := θ₀."""
    q, target, opt, init, sched = trained_dqn("sp")
    ref_q, ref_target = copy.deepcopy(q), copy.deepcopy(target)
    official_apply_srdqn(ref_q, ref_target, init)
    sched.apply(100, 5)
    _assert_same(q, ref_q, "online")
    _assert_same(target, ref_target, "target")
    assert not torch.equal(q.encoder[0].weight, target.encoder[0].weight), "the target was shrunk on its own values"


def test_paper_dqn_full_matches_official_apply_full_reset():
    q, target, opt, init, sched = trained_dqn("full")
    ref_q, ref_target = copy.deepcopy(q), copy.deepcopy(target)
    official_apply_full_reset(ref_q, ref_target, init)
    sched.apply(100, 5)
    _assert_same(q, ref_q, "online")
    _assert_same(target, ref_target, "target")


def test_paper_dqn_injection_matches_the_official_pi_branch():
    """Item 4: the target is injected with its own weights (``PlasticityInjectedQNetwork(old_q_network=target)``), so
    its output does not change, and Adam is rebuilt from scratch over the new parameter set (``optim.Adam(...)``)."""
    q, target, opt, init, sched = trained_dqn("pi")
    x = _batches(1, seed=3)[0]
    with torch.no_grad():
        q_before, target_before = q(x), target(x)
    target_head = {n: p.clone() for n, p in target.head.named_parameters()}
    target_encoder = {n: p.clone() for n, p in target.encoder.named_parameters()}
    sched.apply(100, 5)
    assert isinstance(target.head, InjectedHead)
    with torch.no_grad():
        torch.testing.assert_close(q(x), q_before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(target(x), target_before, atol=1e-5, rtol=1e-5)
    for n, p in target.head.old.named_parameters():
        assert torch.equal(p, target_head[n]), f"target old head {n}: its own"
    for n, p in target.encoder.named_parameters():
        assert torch.equal(p, target_encoder[n]), f"target encoder {n}: its own"
    init_head = dict(init.head.named_parameters())
    for net in (q, target):
        for part in (net.head.new, net.head.new_frozen):
            for n, p in part.named_parameters():
                assert torch.equal(p, init_head[n]), "new heads := θ₀ (copies of init_q_network's head)"
    assert _fresh(opt), "a fresh Adam: zero moments (in place), also for the encoder"
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in q.parameters() if p.requires_grad}
    _train(q, opt, _batches(1, seed=4))


# ---- SAC (SimBa) -----------------------------------------------------------------------------------------------------


def official_jax_newton_schulz(x: torch.Tensor, ns_steps: int = 10, eps: float = 1e-8) -> torch.Tensor:
    """``orthogonalize_via_newton_schulz`` of projection.py with its default coefficients (1.5, −0.5, 0), in torch."""
    coeffs = (1.5, -0.5, 0.0)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (torch.linalg.norm(x) + eps)
    for _ in range(ns_steps):
        a = x @ x.T
        b = coeffs[1] * a + coeffs[2] * a @ a
        x = coeffs[0] * x + b @ x
    return x.T if transposed else x


def official_project_dense(weight: torch.Tensor) -> torch.Tensor:
    """``orthogonal_project_layer`` (scaler "muon") on a Dense kernel; Flax kernels are (d_in, d_out) = weightᵀ."""
    kernel = weight.T
    d_in, d_out = kernel.shape
    return (math.sqrt(d_out / d_in) * official_jax_newton_schulz(kernel)).T


def sac_setup(method: str, act_dim: int = 6, **cfg):
    torch.manual_seed(0)
    actor = SimbaActor(11, act_dim, hidden=32)
    qf1, qf2 = SimbaCritic(11, act_dim, hidden=48), SimbaCritic(11, act_dim, hidden=48)
    qf1_t, qf2_t = copy.deepcopy(qf1), copy.deepcopy(qf2)
    theta0 = {n: capture_theta0(m) for n, m in (("actor", actor), ("qf1", qf1), ("qf2", qf2))}
    a_opt = torch.optim.AdamW(actor.parameters(), lr=1e-3, weight_decay=1e-2)
    q_opt = torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()], lr=1e-3, weight_decay=1e-2)
    log_alpha = torch.tensor(0.01).log().requires_grad_()
    alpha_opt = torch.optim.AdamW([log_alpha], lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(7)
    obs, act = torch.randn(64, 11, generator=g), torch.rand(64, act_dim, generator=g) * 2 - 1
    sched = ResetScheduler(ResetConfig(reset=method, reset_recipe="paper-sac", reset_at=(10,), **cfg))
    sched.add_network("actor", actor, optimizer=a_opt, probe=lambda: (obs,))
    sched.add_network("qf1", qf1, target=qf1_t, optimizer=q_opt, probe=lambda: (obs, act))
    sched.add_network("qf2", qf2, target=qf2_t, optimizer=q_opt, probe=lambda: (obs, act))
    sched.add_temperature(log_alpha, alpha_opt)
    sched.check()
    for _ in range(3):
        for opt, loss in [
            (q_opt, (qf1(obs, act) - 1).pow(2).mean() + (qf2(obs, act) + 1).pow(2).mean()),
            (a_opt, actor(obs)[0].sub(0.5).pow(2).mean() + actor(obs)[1].pow(2).mean()),
            (alpha_opt, log_alpha * 3),
        ]:
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            for online, tgt in ((qf1, qf1_t), (qf2, qf2_t)):
                for p_t, p in zip(tgt.parameters(), online.parameters(), strict=True):
                    p_t.lerp_(p, 0.005)
    nets = {"actor": actor, "qf1": qf1, "qf2": qf2}
    return sched, nets, {"qf1": qf1_t, "qf2": qf2_t}, theta0, (a_opt, q_opt, alpha_opt), log_alpha, (obs, act)


def _fresh(opt) -> bool:
    """A fresh optimizer's state: none, or every tensor zeroed in place (the scheduler keeps the storage; the next step
    is then exactly a new optimizer's, tests/test_scheduler.py)."""
    return not any(v.any() for st in opt.state.values() for v in st.values())


def _assert_fresh_optimizers_and_temperature(opts, log_alpha) -> None:
    assert all(_fresh(opt) for opt in opts), "official: new Trainers, fresh optimizer states"
    assert torch.equal(log_alpha.detach(), torch.tensor(0.01).log()), "official: temperature re-initialised"


def test_paper_sac_fire_orthogonalises_each_dense_layer_as_the_official_code():
    """Item 2: every Linear (the actor's mean and log-std heads as two layers, scale √(A/h) each) is the official
    projection of its own kernel; biases and LayerNorms keep their trained values; targets := projected critics."""
    sched, nets, targets, theta0, opts, log_alpha, _ = sac_setup("fire")
    before = {n: {k: p.detach().clone() for k, p in net.named_parameters()} for n, net in nets.items()}
    sched.apply(10, 20)
    for name, net in nets.items():
        for layer_name, m in net.named_modules():
            if isinstance(m, nn.Linear):
                expected = official_project_dense(before[name][f"{layer_name}.weight"])
                # Float32 rounding only (measured: relative Frobenius difference ≤ 2.5e-7 on every layer).
                torch.testing.assert_close(m.weight, expected, atol=1e-6, rtol=1e-5, msg=f"{name} {layer_name}")
        for layer_name, m in net.named_modules():
            kept = [m.bias] if isinstance(m, nn.Linear) else list(m.parameters()) if isinstance(m, nn.LayerNorm) else []
            for pname, p in m.named_parameters(recurse=False):
                if any(p is q for q in kept):
                    assert torch.equal(p, before[name][f"{layer_name}.{pname}"]), f"{name} {layer_name}.{pname} kept"
    head = nets["actor"].head[-1]
    A, h = head.mean.weight.shape
    # ‖√(A/h)·UVᵀ‖²_F = A·(A/h) for each head; one stacked (2A × h) head would give 2A·(2A/h), four times more.
    assert float(head.mean.weight.detach().norm()) ** 2 == pytest.approx(A * A / h, rel=1e-3)
    for name, tgt in targets.items():
        _assert_same(tgt, nets[name], f"{name} target")
    _assert_fresh_optimizers_and_temperature(opts, log_alpha)


def test_one_stacked_actor_head_would_differ_from_the_official_projection():
    """The deviation item 2 removed: orthogonalising mean and log-std as one (2A × h) matrix with √(2A/h) is about
    47% away from the official per-head result for h1's A = 19, h = 128 (and √2 larger in norm)."""
    torch.manual_seed(1)
    A, h = 19, 128
    w = torch.randn(2 * A, h) / math.sqrt(h)
    official = torch.cat([official_project_dense(block) for block in w.split(A)])
    stacked = math.sqrt(2 * A / h) * polar(w)
    rel = float((stacked - official).norm() / official.norm())
    assert 0.4 < rel < 0.55
    assert float(stacked.norm() / official.norm()) == pytest.approx(math.sqrt(2), rel=1e-3)


@pytest.mark.parametrize("method", ["sp", "full"])
def test_paper_sac_sp_and_full_act_on_every_parameter(method):
    """Item 3: official S&P is ``original*(1-0.8) + new*0.8`` over the whole parameter tree (LayerNorm γ, β included),
    official full reset re-creates every parameter from the seed (θ₀); targets := the new critics."""
    sched, nets, targets, theta0, opts, log_alpha, _ = sac_setup(method)
    with torch.no_grad():  # LayerNorms trained away from (1, 0), so that keeping them would show
        for net in nets.values():
            for m in net.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.add_(0.3)
                    m.bias.add_(-0.2)
    before = {n: {k: p.detach().clone() for k, p in net.named_parameters()} for n, net in nets.items()}
    sched.apply(10, 20)
    shrink = 0.8
    for name, net in nets.items():
        for k, p in net.named_parameters():
            new = theta0[name][k]
            expected = new.clone() if method == "full" else before[name][k] * (1.0 - shrink) + new * shrink
            if method == "full":
                assert torch.equal(p, expected), f"{name} {k}"
            else:
                where = f"{name} {k}"
                torch.testing.assert_close(p, expected, atol=1e-7, rtol=2e-7, msg=lambda m, w=where: f"{w}: {m}")
    for name, tgt in targets.items():
        _assert_same(tgt, nets[name], f"{name} target")
    _assert_fresh_optimizers_and_temperature(opts, log_alpha)


def test_paper_sac_redo_keeps_optimizers_and_temperature():
    """Item 1: ReDo zeroes only the Adam moments of the weights it recycles (Sokar et al. 2023; dopamine's
    weight_recyclers.py resets mu and nu of those weights): every other moment, every step count, the temperature and
    its optimizer are kept, also under paper-sac."""
    sched, nets, targets, theta0, opts, log_alpha, (obs, act) = sac_setup("redo")
    a_opt, q_opt, alpha_opt = opts
    with torch.no_grad():  # silence a few units of each residual block: they become dormant
        for net in nets.values():
            for m in net.modules():
                if hasattr(m, "fc1"):
                    m.fc1.weight[:3].zero_()
                    m.fc1.bias[:3].fill_(-1.0)
    state_before = {id(p): {k: v.clone() for k, v in st.items()} for opt in opts for p, st in opt.state.items()}
    log_alpha_before = log_alpha.detach().clone()
    # The reference: which rows/columns ReDo recycles, from the dormant scores on the probe batches (τ = 0.1).
    expected_zero: dict[int, torch.Tensor] = {}
    for name, net in nets.items():
        inputs = (obs,) if name == "actor" else (obs, act)
        scores = dormant_scores(net, inputs)
        modules = dict(net.named_modules())
        for pair in find_neuron_pairs(net, inputs):
            dormant = scores[pair.activation] <= 0.1
            producer, consumer = modules[pair.producer], modules[pair.consumer]
            expected_zero[id(producer.weight)] = dormant.view(-1, 1).expand_as(producer.weight)
            expected_zero[id(consumer.weight)] = dormant.view(1, -1).expand_as(consumer.weight)
    assert sum(int(mask.any()) for mask in expected_zero.values()) >= 6, "every network recycles something"
    sched.apply(10, 20)
    for opt in opts:
        for p, st in opt.state.items():
            for k, v in st.items():
                old = state_before[id(p)][k]
                if k == "step" or id(p) not in expected_zero:
                    assert torch.equal(v, old), f"{k} kept"
                else:
                    assert torch.equal(v, torch.where(expected_zero[id(p)], torch.zeros_like(old), old)), k
    assert len(alpha_opt.state) == 1 and torch.equal(log_alpha.detach(), log_alpha_before), "temperature kept"
    assert sched.config.optimizer_policy() == "keep" and sched.config.temperature_policy() == "keep"
