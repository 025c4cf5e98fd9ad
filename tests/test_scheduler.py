"""The reset scheduler on real networks and real optimizers: timing, recipes, targets, optimizer state, checkpoints."""

import copy
import json
import math
from dataclasses import dataclass, fields

import pytest
import torch

from fire_rl.cli import PlasticityArgs, RunArgs
from fire_rl.networks import QNetwork, SimbaActor, SimbaCritic
from fire_rl.polar import FIRE_SCALES, fire_scale, polar
from fire_rl.polar import METHODS as POLAR_METHODS
from fire_rl.resets import InjectedHead, capture_theta0
from fire_rl.scheduler import CHOICES, ResetConfig, ResetScheduler


def make_dqn(method="fire", n_actions=4, **cfg):
    torch.manual_seed(0)
    q = QNetwork(n_actions, init="xavier")
    target = QNetwork(n_actions, init="xavier")
    target.load_state_dict(q.state_dict())
    opt = torch.optim.Adam(q.parameters(), lr=1e-3)
    cfg.setdefault("reset_at", (100,))
    cfg.setdefault("reset_recipe", "paper-dqn")
    sched = ResetScheduler(ResetConfig(reset=method, **cfg))
    sched.add_network("q", q, target=target, optimizer=opt)
    return q, target, opt, sched


def train_steps(q, opt, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=g)
        loss = q(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("jump", [1, 4, 7])
def test_events_fire_once_when_crossed(jump):
    cfg = ResetConfig(reset="full", reset_recipe="custom", reset_at=(50, 120), reset_every=100, reset_stop=350)
    q = QNetwork(4)
    sched = ResetScheduler(cfg)
    sched.add_network("q", q)
    fired = []
    step = 0
    while step < 500:
        step += jump
        if sched.step(step, step) is not None:
            fired.append(step)
    points = [50, 100, 120, 200, 300]
    expected = sorted({min(s for s in range(jump, 501, jump) if s >= p) for p in points})
    assert fired == expected
    covered = [p for e in sched.events for p in e.points]
    assert covered == points, "every scheduled point is recorded exactly once"


def test_schedule_window_and_validation():
    sched = ResetScheduler(
        ResetConfig(reset="full", reset_recipe="custom", reset_every=100, reset_start=250, reset_stop=500)
    )
    sched.add_network("q", QNetwork(4))
    assert [s for s in range(0, 1001, 50) if sched.step(s, s) is not None] == [300, 400, 500]
    with pytest.raises(ValueError, match="beyond total_timesteps"):
        ResetScheduler(ResetConfig(reset="fire", reset_at=(2000,)), total_steps=1000)
    for bad, match in [
        (dict(reset="nope", reset_at=(1,)), "--reset='nope'"),
        (dict(reset="fire"), "no schedule"),
        (dict(reset="sp", reset_at=(1,), sp_alpha=1.5), "--sp-alpha=1.5"),
        (dict(reset="fire", reset_at=(0,)), r"an integer in \[1, 2\*\*53\]"),
        (dict(reset="fire", reset_at=(5,), reset_start=3, reset_stop=2), "--reset-stop=2: must be >= --reset-start=3"),
        (dict(reset="fire", reset_at=(5,), reset_every=2**60), "--reset-every"),
        (dict(reset="fire", reset_at=(5,), reset_target="moved"), "--reset-target='moved'"),
        (dict(reset="fire", reset_at=(5,), reset_optimizer="zero"), "--reset-optimizer='zero'"),
    ]:
        with pytest.raises(ValueError, match=match):
            ResetConfig(**bad)


def test_paper_dqn_fire_recipe():
    q, target, opt, sched = make_dqn("fire")
    theta0 = {k: v.clone() for k, v in sched.theta0("q").items()}
    train_steps(q, opt)
    moments_before = {id(p): opt.state[p]["exp_avg"].clone() for p in q.parameters()}
    conv_biases = {n: p.detach().clone() for n, p in q.named_parameters() if n.startswith("encoder") and "bias" in n}
    event = sched.step(100, 25)
    assert event is not None and event.method == "fire"
    for name, m in q.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            c = fire_scale(m.weight.shape)
            slices = (m.weight / c).permute(2, 3, 0, 1).reshape(-1, *m.weight.shape[:2]).double()
            small = slices if slices.shape[-2] <= slices.shape[-1] else slices.mT
            gram = small @ small.mT
            eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
            # 10 Newton-Schulz steps orthogonalise the thin slices of conv 1 (32 x 4) fully but leave small singular
            # values of the square 64 x 64 slices short of 1 (test_fire_conv_equals_polar checks those exactly).
            bound = 1e-3 if name == "encoder.0" else 1.0
            assert torch.isfinite(gram).all() and (gram - eye).abs().max() < bound, name
        if isinstance(m, torch.nn.Linear):
            assert torch.equal(m.weight, theta0[f"{name}.weight"]) and torch.equal(m.bias, theta0[f"{name}.bias"])
    for n, b in conv_biases.items():
        assert torch.equal(dict(q.named_parameters())[n], b), "FIRE leaves biases alone"
    for (n, a), b in zip(q.state_dict().items(), target.state_dict().values()):
        if not (n.startswith("encoder") and n.endswith("bias")):
            assert torch.equal(a, b), f"target {n} := online after the reset"
    for p in q.parameters():
        assert torch.equal(opt.state[p]["exp_avg"], moments_before[id(p)]), "paper-dqn keeps Adam's state"


def test_fire_conv_equals_polar_of_trained_slices():
    q, _, opt, sched = make_dqn("fire", polar_method="svd")
    train_steps(q, opt)
    conv = q.encoder[0]
    w = conv.weight.detach().clone()
    sched.apply(100, 0)
    slices = w.permute(2, 3, 0, 1).double()  # (kh, kw, C_out, C_in)
    expected = polar(slices, method="svd").permute(2, 3, 0, 1) * fire_scale(w.shape)
    torch.testing.assert_close(conv.weight.double(), expected, atol=1e-5, rtol=1e-5)


def test_reset_changed_zeroes_only_changed_moments():
    q, target, opt, sched = make_dqn(
        "fire", reset_recipe="custom", reset_kinds=("linear",), reset_optimizer="reset-changed"
    )
    train_steps(q, opt)
    sched.apply(100, 0)
    for name, p in q.named_parameters():
        moments = opt.state[p]["exp_avg"]
        if name.startswith("head") and name.endswith("weight"):
            assert torch.count_nonzero(moments) == 0 and float(opt.state[p]["step"]) == 0
        else:
            assert torch.count_nonzero(moments) > 0, f"{name} was not changed; its moments must stay"


def test_rebuild_and_same_target_policies():
    q, target, opt, sched = make_dqn(
        "sp", reset_recipe="custom", reset_optimizer="rebuild", reset_target="same", sp_alpha=0.5
    )
    train_steps(q, opt)
    target_before = {k: v.clone() for k, v in target.state_dict().items()}
    online_before = {k: v.clone() for k, v in q.state_dict().items()}
    theta0 = sched.theta0("q")
    storage = [v.data_ptr() for st in opt.state.values() for v in st.values()]
    sched.apply(100, 0)
    for k in theta0:
        torch.testing.assert_close(q.state_dict()[k], 0.5 * online_before[k] + 0.5 * theta0[k])
        torch.testing.assert_close(target.state_dict()[k], 0.5 * target_before[k] + 0.5 * theta0[k])
    # A fresh optimizer's state, zeroed in place (a captured CUDA graph keeps reading the same tensors): the next step
    # is exactly that of a new Adam.
    assert [v.data_ptr() for st in opt.state.values() for v in st.values()] == storage
    assert not any(v.any() for st in opt.state.values() for v in st.values())
    fresh_q = copy.deepcopy(q)
    fresh = torch.optim.Adam(fresh_q.parameters(), lr=1e-3)
    train_steps(q, opt, n=2)
    train_steps(fresh_q, fresh, n=2)
    for a, b in zip(q.parameters(), fresh_q.parameters(), strict=True):
        assert torch.equal(a, b)


def test_plasticity_injection_through_scheduler():
    q, target, opt, sched = make_dqn("pi", reset_recipe="custom")
    train_steps(q, opt)
    x = torch.randint(0, 256, (16, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        before = q(x)
    n_trainable = sum(p.numel() for p in q.parameters() if p.requires_grad)
    sched.apply(100, 0)
    assert isinstance(q.head, InjectedHead) and isinstance(target.head, InjectedHead)
    with torch.no_grad():
        torch.testing.assert_close(q(x), before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(target(x), q(x))  # custom: target := online
    assert all(len(opt.state[p]) for p in q.encoder.parameters()), "custom keeps the encoder's Adam moments"
    trainable = [p for p in q.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == n_trainable
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in trainable}
    assert all(id(p) in {id(t) for t in trainable} for p in opt.state), "no stale optimizer state"
    train_steps(q, opt, n=1)


def test_state_dict_round_trip_with_injection(tmp_path):
    q, target, opt, sched = make_dqn("pi", reset_at=(100, 200))
    sched.events_path = tmp_path / "resets.jsonl"
    train_steps(q, opt)
    sched.step(150, 10)
    state = sched.state_dict()
    net_state, target_state, opt_state = q.state_dict(), target.state_dict(), opt.state_dict()
    sched.step(250, 20)  # a killed run may log an event after its checkpoint
    assert len((tmp_path / "resets.jsonl").read_text().splitlines()) == 2

    q2, target2, opt2, sched2 = make_dqn("pi", reset_at=(100, 200))
    sched2.events_path = tmp_path / "resets.jsonl"
    sched2.load_state_dict(state)
    q2.load_state_dict(net_state)
    target2.load_state_dict(target_state)
    opt2.load_state_dict(opt_state)
    lines = (tmp_path / "resets.jsonl").read_text().splitlines()
    assert [json.loads(line)["global_step"] for line in lines] == [150], "events after the checkpoint are superseded"
    assert sched2.step(180, 15) is None
    assert sched2.step(200, 16) is not None
    assert [e.global_step for e in sched2.events] == [150, 200]


def test_paper_sac_recipe_resets_optimizers_and_temperature():
    torch.manual_seed(0)
    actor, qf1, qf2 = SimbaActor(6, 2, hidden=16), SimbaCritic(6, 2, hidden=16), SimbaCritic(6, 2, hidden=16)
    qf1_t, qf2_t = SimbaCritic(6, 2, hidden=16), SimbaCritic(6, 2, hidden=16)
    q_opt = torch.optim.AdamW(list(qf1.parameters()) + list(qf2.parameters()), lr=1e-3)
    a_opt = torch.optim.AdamW(actor.parameters(), lr=1e-3)
    log_alpha = torch.tensor(0.01).log().requires_grad_()
    alpha_opt = torch.optim.AdamW([log_alpha], lr=1e-3)
    sched = ResetScheduler(ResetConfig(reset="fire", reset_recipe="paper-sac", reset_at=(10,)))
    sched.add_network("actor", actor, optimizer=a_opt)
    sched.add_network("qf1", qf1, target=qf1_t, optimizer=q_opt)
    sched.add_network("qf2", qf2, target=qf2_t, optimizer=q_opt)
    sched.add_temperature(log_alpha, alpha_opt)
    obs, act = torch.randn(32, 6), torch.rand(32, 2) * 2 - 1
    for opt, loss in [(q_opt, (qf1(obs, act) + qf2(obs, act)).pow(2).mean()), (a_opt, actor(obs)[0].pow(2).mean())]:
        opt.zero_grad()
        loss.backward()
        opt.step()
    (log_alpha * 3).backward()
    alpha_opt.step()
    sched.step(10, 20)
    # Fresh optimizers: every state zeroed in place (what an empty state amounts to at the next step)
    assert not any(v.any() for o in (q_opt, a_opt, alpha_opt) for st in o.state.values() for v in st.values())
    assert torch.equal(log_alpha.detach(), torch.tensor(0.01).log())
    for online, tgt in [(qf1, qf1_t), (qf2, qf2_t)]:
        for a, b in zip(online.state_dict().values(), tgt.state_dict().values()):
            assert torch.equal(a, b)
    ln_params = [p for m in actor.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()]
    assert ln_params and all(torch.isfinite(p).all() for p in ln_params)


def test_nan_from_a_reset_is_named():
    q, _, _, sched = make_dqn("fire", reset_recipe="custom", reset_kinds=("linear",))
    with torch.no_grad():
        q.head[0].weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="head"):
        sched.apply(100, 0)


def test_theta0_is_captured_at_registration():
    q = QNetwork(4)
    theta0 = capture_theta0(q)
    sched = ResetScheduler(ResetConfig(reset="full", reset_recipe="custom", reset_at=(10,)))
    sched.add_network("q", q)
    for k, v in theta0.items():
        assert torch.equal(sched.theta0("q")[k], v)


# ---- every selection resolves at start-up ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "needles"),
    [
        (dict(reset_recipe="custom", reset_kinds=("lstm",)), ["--reset-kinds=('lstm',)", "linear", "conv", "norm"]),
        (dict(reset_recipe="custom", reset_roles=("bogus",)), ["--reset-roles", "bogus", "encoder", "head"]),
        (dict(reset_recipe="paper-dqn", reset_kinds=("conv",)), ["--reset-kinds", "custom"]),
        (dict(reset="pi", reset_recipe="custom", reset_roles=("head",)), ["--reset-roles", "do not apply"]),
        (dict(reset="redo", reset_recipe="custom", reset_names=("head.*",)), ["--reset-names", "do not apply"]),
        (dict(reset_recipe="custom", reset_kinds=("norm",)), ["norm", "sp and full"]),
        (dict(reset="sp", sp_alpha=math.nan), ["--sp-alpha=nan"]),
        (dict(reset="sp", sp_alpha=-0.1), ["--sp-alpha=-0.1"]),
        (dict(reset="redo", redo_tau=math.inf), ["--redo-tau=inf"]),
        (dict(reset="redo", redo_tau=-1.0), ["--redo-tau=-1.0"]),
        (dict(ns_tol=math.nan), ["--ns-tol=nan"]),
        (dict(ns_tol=0.0), ["--ns-tol=0.0"]),
        (dict(ns_steps=0), ["--ns-steps=0"]),
        (dict(fire_scale="iso"), ["--fire-scale='iso'", "isometry"]),
        (dict(reset_every=-5, reset_at=()), ["--reset-every=-5"]),
        (dict(reset_start=10, reset_stop=5), ["--reset-stop=5", "--reset-start=10"]),
    ],
)
def test_config_refuses_bad_values_naming_them(cfg, needles):
    cfg = {"reset": "fire", "reset_at": (10,), **cfg}
    with pytest.raises(ValueError) as info:
        ResetConfig(**cfg)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_choices_are_the_literals_the_kernels_accept():
    assert CHOICES["polar_method"] == POLAR_METHODS and CHOICES["fire_scale"] == FIRE_SCALES
    assert set(CHOICES) == {
        "reset", "reset_recipe", "reset_target", "reset_optimizer", "reset_temperature", "fire_scale", "polar_method",
        "reset_toward",
    }  # fmt: skip
    cfg = ResetConfig(reset="fire", reset_recipe="paper-sac", reset_at=(5,))
    assert (cfg.target_policy(), cfg.optimizer_policy(), cfg.temperature_policy()) == ("copy", "rebuild", "reset")


def test_the_agents_flags_are_the_config():
    """PlasticityArgs inherits ResetConfig: the flags are its fields, validated by it once, in `check`."""

    @dataclass
    class Args(PlasticityArgs, RunArgs):
        total_timesteps: int = 1_000
        learning_starts: int = 0
        buffer_size: int = 100
        batch_size: int = 32

    declared = [f.name for f in fields(ResetConfig)]
    assert [f.name for f in fields(Args) if f.name in declared] == declared
    args = Args(reset="fire")  # no schedule: `check` gives the FIRE paper's, the midpoint
    args.check()
    cfg = args.reset_config()
    assert type(cfg) is ResetConfig and (cfg.reset, cfg.reset_at, cfg.reset_target) == ("fire", (500,), "recipe")
    with pytest.raises(ValueError, match=r"--reset-kinds=\('lstm',\)"):
        Args(reset="fire", reset_recipe="custom", reset_kinds=("lstm",)).check()
    with pytest.raises(ValueError, match=r"--reset-at=\[2000\]: \[2000\] lies beyond total_timesteps=1000"):
        Args(reset="fire", reset_at=(2_000,)).check()


def sac_networks(blocks: int = 1, hidden: int = 16):
    torch.manual_seed(0)
    actor = SimbaActor(6, 2, hidden=hidden, num_blocks=blocks)
    qf1, qf2 = SimbaCritic(6, 2, hidden=hidden, num_blocks=blocks), SimbaCritic(6, 2, hidden=hidden, num_blocks=blocks)
    targets = (SimbaCritic(6, 2, hidden=hidden, num_blocks=blocks), SimbaCritic(6, 2, hidden=hidden, num_blocks=blocks))
    for t, q in zip(targets, (qf1, qf2), strict=True):
        t.load_state_dict(q.state_dict())
    return actor, qf1, qf2, targets


def sac_scheduler(cfg: ResetConfig, blocks: int = 1):
    actor, qf1, qf2, (qf1_t, qf2_t) = sac_networks(blocks)
    obs, act = torch.randn(32, 6), torch.rand(32, 2) * 2 - 1
    sched = ResetScheduler(cfg)
    sched.add_network("actor", actor, optimizer=torch.optim.AdamW(actor.parameters()), probe=lambda: (obs,))
    q_opt = torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()])
    sched.add_network("qf1", qf1, target=qf1_t, optimizer=q_opt, probe=lambda: (obs, act))
    sched.add_network("qf2", qf2, target=qf2_t, optimizer=q_opt, probe=lambda: (obs, act))
    log_alpha = torch.zeros((), requires_grad=True)
    sched.add_temperature(log_alpha, torch.optim.AdamW([log_alpha]))
    return sched, (actor, qf1, qf2), (obs, act)


@pytest.mark.parametrize(
    ("agent", "cfg", "needle"),
    [
        ("dqn", dict(reset_kinds=("norm",), reset="sp"), "--reset-kinds norm selects no layer of network 'q'"),
        ("sac", dict(reset_kinds=("conv",)), "--reset-kinds conv selects no layer of network 'actor'"),
        ("dqn", dict(reset_names=("nonexistent.*",)), "--reset-names 'nonexistent.*' matches no layer of network 'q'"),
        (
            "dqn",
            dict(reset_kinds=("conv",), reset_roles=("head",)),
            "--reset-kinds conv --reset-roles head together select no",
        ),
        ("sac", dict(reset_names=("encoder.2.*",)), "--reset-names 'encoder.2.*' matches no layer of network 'actor'"),
    ],
)
def test_check_refuses_a_selection_that_selects_no_layer(agent, cfg, needle):
    """Issue 15: these used to train, write checkpoints, and raise at the first reset step."""
    cfg = ResetConfig(**{"reset": "fire", "reset_recipe": "custom", "reset_at": (100,), **cfg})
    if agent == "dqn":
        sched = ResetScheduler(cfg)
        sched.add_network("q", QNetwork(4))
    else:
        sched, _, _ = sac_scheduler(cfg)
    with pytest.raises(ValueError, match="its layers: ") as info:
        sched.check()
    assert needle in str(info.value)


@pytest.mark.parametrize("method", ["fire", "sp", "full", "pi", "redo"])
@pytest.mark.parametrize("recipe", ["paper", "custom"])
def test_check_accepts_every_recipe_on_the_agents_networks(method, recipe):
    q, _, _, sched = make_dqn(method, reset_recipe="paper-dqn" if recipe == "paper" else "custom")
    sched.check()
    cfg = ResetConfig(reset=method, reset_recipe="paper-sac" if recipe == "paper" else "custom", reset_at=(10,))
    sac, _, _ = sac_scheduler(cfg)
    sac.check()
    assert ResetScheduler(ResetConfig()).check() is None, "no method: nothing to check"


def test_sac_without_residual_blocks():
    """--actor-blocks 0 --critic-blocks 0: the networks have no ReLU, which made the metrics around every reset raise
    (plasticity_metrics' dormant ratio) at the reset step. Now FIRE, S&P, full and injection run (dormant ratio NaN),
    and ReDo, which has nothing to recycle, is refused at start-up."""
    for method in ("pi", "fire", "sp", "full"):
        sched, nets, (obs, act) = sac_scheduler(
            ResetConfig(reset=method, reset_recipe="paper-sac", reset_at=(10,)), blocks=0
        )
        sched.check()
        event = sched.step(10, 20)
        assert event is not None and math.isnan(event.scalars["actor/dormant_before"])
        assert math.isfinite(event.scalars["qf1/srank_after"])
        nets[0].sample(obs)
    sched, _, _ = sac_scheduler(ResetConfig(reset="redo", reset_recipe="paper-sac", reset_at=(10,)), blocks=0)
    with pytest.raises(ValueError, match="--reset redo: network 'actor' .* no nn.ReLU"):
        sched.check()


def test_check_refuses_a_rebuild_of_a_multi_group_optimizer():
    q = QNetwork(4)
    opt = torch.optim.Adam([{"params": q.encoder.parameters()}, {"params": q.head.parameters(), "lr": 1e-5}])
    sched = ResetScheduler(ResetConfig(reset="fire", reset_recipe="paper-sac", reset_at=(10,)))
    sched.add_network("q", q, optimizer=opt)
    with pytest.raises(ValueError, match="2 parameter groups"):
        sched.check()


@pytest.mark.parametrize("method", ["full", "sp"])
def test_same_target_policy_replays_the_online_fresh_draw(method):
    """paper-dqn applies S&P and full resets to the target's own weights; toward a fresh draw, the target gets the
    online network's draw (a full reset leaves the two equal)."""
    q, target, opt, sched = make_dqn(method, reset_toward="random", sp_alpha=0.5)
    train_steps(q, opt)
    target_before = {k: v.clone() for k, v in target.state_dict().items()}
    online_before = {k: v.clone() for k, v in q.state_dict().items()}
    sched.apply(100, 0)
    for k, v in q.state_dict().items():
        if method == "full":
            assert torch.equal(target.state_dict()[k], v), k
        elif k.startswith("encoder"):  # θ_new = 2·θ − θ_old for α = 0.5, the same draw on both sides
            torch.testing.assert_close(
                2 * target.state_dict()[k] - target_before[k], 2 * v - online_before[k], atol=1e-6, rtol=1e-5
            )


def _storage(*objects) -> list[int]:
    """data_ptr of every parameter and buffer of the modules, every tensor of the optimizers' states, and tensors."""
    out = []
    for o in objects:
        if isinstance(o, torch.nn.Module):
            out += [t.data_ptr() for t in (*o.parameters(), *o.buffers())]
        elif isinstance(o, torch.optim.Optimizer):
            out += [v.data_ptr() for st in o.state.values() for v in st.values() if torch.is_tensor(v)]
        else:
            out.append(o.data_ptr())
    return out


@pytest.mark.parametrize("method", ["fire", "sp", "full", "redo"])
def test_resets_keep_every_tensors_storage(method):
    # A captured CUDA graph replays fixed addresses: a reset must write into the same storage (networks, targets,
    # optimizer states, the temperature), under both official recipes. Plasticity injection adds parameters (the agents
    # recompile and re-capture) and is exempt.
    q, target, opt, sched = make_dqn(method, reset_every=0 if method != "redo" else 100, reset_at=(100,))
    train_steps(q, opt)
    x = torch.randint(0, 256, (32, 4, 84, 84), dtype=torch.uint8)
    sched.entries["q"].probe = lambda: (x,)
    before = _storage(q, target, opt)
    assert sched.step(100, 3) is not None
    assert _storage(q, target, opt) == before

    torch.manual_seed(0)
    actor, qf1, qf2, qf1_t, qf2_t = SimbaActor(6, 2, hidden=16), *(SimbaCritic(6, 2, hidden=16) for _ in range(4))
    a_opt, q_opt = torch.optim.AdamW(actor.parameters()), torch.optim.AdamW([*qf1.parameters(), *qf2.parameters()])
    log_alpha = torch.tensor(0.01).log().requires_grad_()
    alpha_opt = torch.optim.AdamW([log_alpha])
    sched = ResetScheduler(ResetConfig(reset=method, reset_recipe="paper-sac", reset_at=(10,)))
    obs, act = torch.randn(32, 6), torch.rand(32, 2) * 2 - 1
    sched.add_network("actor", actor, optimizer=a_opt, probe=lambda: (obs,))
    sched.add_network("qf1", qf1, target=qf1_t, optimizer=q_opt, probe=lambda: (obs, act))
    sched.add_network("qf2", qf2, target=qf2_t, optimizer=q_opt, probe=lambda: (obs, act))
    sched.add_temperature(log_alpha, alpha_opt)
    for o, loss in [(q_opt, (qf1(obs, act) + qf2(obs, act)).pow(2).mean()), (a_opt, actor(obs)[0].pow(2).mean()),
                    (alpha_opt, log_alpha * 3)]:  # fmt: skip
        o.zero_grad()
        loss.backward()
        o.step()
    before = _storage(actor, qf1, qf2, qf1_t, qf2_t, a_opt, q_opt, alpha_opt, log_alpha)
    assert sched.step(10, 1) is not None
    assert _storage(actor, qf1, qf2, qf1_t, qf2_t, a_opt, q_opt, alpha_opt, log_alpha) == before
