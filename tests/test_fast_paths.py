"""Every fast path of the agents against the eager reference: the same update, to float rounding.

The agents' `update` functions are imported from the agent files themselves, so the test exercises the code that runs.
"""

import copy

import torch
from agent_utils import load_agent

from fire_rl.buffers import ReplayBatch
from fire_rl.networks import QNetwork, RSNorm, SimbaActor, SimbaCritic
from fire_rl.regularizers import Regularizer
from fire_rl.resets import capture_theta0, inject_plasticity


def dqn_batch(n_actions=4, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=g)
    next_obs = torch.randint(0, 256, (batch, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, n_actions, (batch,), generator=g)
    rewards = torch.randn(batch, generator=g)
    dones = (torch.rand(batch, generator=g) < 0.1).float()
    return ReplayBatch(obs, actions, rewards, next_obs, dones)


def dqn_pair(channels_last: bool, fused: bool, lr: float):
    torch.manual_seed(0)
    q, t = QNetwork(4, init="xavier"), QNetwork(4, init="xavier")
    t.load_state_dict(q.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    q, t = q.to(memory_format=fmt), t.to(memory_format=fmt)
    return q, t, torch.optim.Adam(q.parameters(), lr=lr, fused=fused or None)


def test_dqn_fused_adam_matches_eager():
    dqn = load_agent("dqn_atari")
    (ref_q, ref_t, ref_opt), (q, t, opt) = dqn_pair(False, False, 1e-3), dqn_pair(False, True, 1e-3)
    for step in range(3):
        data = dqn_batch(seed=step)
        a = dqn.update(ref_q, ref_t, ref_opt, Regularizer(), data, 0.99, "huber", False)
        b = dqn.update(q, t, opt, Regularizer(), data, 0.99, "huber", False)
        torch.testing.assert_close(a["td_loss"], b["td_loss"], rtol=1e-5, atol=1e-7)
    for (name, p), p_fast in zip(ref_q.named_parameters(), q.parameters()):
        # atol is 1% of one Adam step (lr 1e-3): rounding differences are amplified where gradients are tiny.
        torch.testing.assert_close(p, p_fast, rtol=1e-5, atol=1e-5, msg=f"{name}: fused Adam differs from eager")


def test_dqn_channels_last_matches_eager():
    # Adam normalises each element's step, so rounding noise in near-zero gradients becomes a full lr-sized step:
    # the layouts are compared on the loss and the gradients of the same update (lr = 0 keeps the weights equal).
    dqn = load_agent("dqn_atari")
    (ref_q, ref_t, ref_opt), (q, t, opt) = dqn_pair(False, False, 0.0), dqn_pair(True, True, 0.0)
    data = dqn_batch()
    a = dqn.update(ref_q, ref_t, ref_opt, Regularizer(), data, 0.99, "huber", False)
    b = dqn.update(q, t, opt, Regularizer(), data, 0.99, "huber", False)
    torch.testing.assert_close(a["td_loss"], b["td_loss"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a["q_values"], b["q_values"], rtol=1e-5, atol=1e-7)
    for (name, p), p_fast in zip(ref_q.named_parameters(), q.parameters()):
        torch.testing.assert_close(p.grad, p_fast.grad, rtol=1e-3, atol=1e-6, msg=f"{name}.grad differs")


def test_sac_fused_adamw_matches_eager():
    sac = load_agent("sac_simba")
    args = sac.Args(batch_size=32)
    torch.manual_seed(0)
    nets = [SimbaActor(6, 2, hidden=16), SimbaCritic(6, 2, hidden=32), SimbaCritic(6, 2, hidden=32)]
    nets += [copy.deepcopy(nets[1]), copy.deepcopy(nets[2])]
    rsnorm = RSNorm(6)
    rsnorm.update(torch.randn(100, 6))
    results = []
    for fused in (None, True):
        actor, qf1, qf2, qf1_t, qf2_t = copy.deepcopy(nets)
        log_alpha = torch.tensor(0.01).log().requires_grad_()
        optimizers = (
            torch.optim.AdamW(actor.parameters(), lr=1e-3, weight_decay=1e-2, fused=fused),
            torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()], lr=1e-3, weight_decay=1e-2, fused=fused),
            torch.optim.AdamW([log_alpha], lr=1e-3, weight_decay=0.0, fused=fused),
        )
        g = torch.Generator().manual_seed(1)
        torch.manual_seed(2)
        for _ in range(3):
            obs, actions = torch.randn(32, 6, generator=g), torch.rand(32, 2, generator=g) * 2 - 1
            data = ReplayBatch(
                obs, actions, torch.randn(32, generator=g), torch.randn(32, 6, generator=g), torch.zeros(32)
            )
            sac.update(actor, qf1, qf2, qf1_t, qf2_t, rsnorm, log_alpha, optimizers, Regularizer(), data, args, -1.0)
        results.append([*actor.parameters(), *qf1.parameters(), *qf2_t.parameters(), log_alpha])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sac_update_keeps_injected_heads_frozen():
    sac = load_agent("sac_simba")
    args = sac.Args(batch_size=16)
    torch.manual_seed(0)
    actor, qf1, qf2 = SimbaActor(6, 2, hidden=8), SimbaCritic(6, 2, hidden=8), SimbaCritic(6, 2, hidden=8)
    for q in (qf1, qf2):
        inject_plasticity(q, "head", theta0=capture_theta0(q))
    qf1_t, qf2_t = copy.deepcopy(qf1), copy.deepcopy(qf2)
    frozen = {id(p): p.detach().clone() for q in (qf1, qf2) for p in q.parameters() if not p.requires_grad}
    assert frozen
    rsnorm = RSNorm(6)
    log_alpha = torch.tensor(0.01).log().requires_grad_()
    trainable = [p for q in (qf1, qf2) for p in q.parameters() if p.requires_grad]
    optimizers = (torch.optim.AdamW(actor.parameters()), torch.optim.AdamW(trainable), torch.optim.AdamW([log_alpha]))
    data = ReplayBatch(torch.randn(16, 6), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 6),
                       torch.zeros(16))  # fmt: skip
    for _ in range(2):
        sac.update(actor, qf1, qf2, qf1_t, qf2_t, rsnorm, log_alpha, optimizers, Regularizer(), data, args, -1.0)
    for q in (qf1, qf2):
        for p in q.parameters():
            if id(p) in frozen:
                assert not p.requires_grad and torch.equal(p, frozen[id(p)]), "a frozen head was unfrozen or moved"
