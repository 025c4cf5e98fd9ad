"""--compile and --cudagraphs: the compiled updates compute what the eager ones do, through every reset, and a compiled
run resumes exactly. The captured path (--cudagraphs) has the same parity test against the eager update on CUDA, run
where a device exists (scripts/gpu_check.sh); CI runs the --compile cases on CPU.

Tolerance: inductor fuses the elementwise ops of the loss, the backward and Adam into C++ (CPU) or Triton (CUDA) kernels
and may reorder their floating-point sums, so compiled and eager parameters differ by float32 rounding, which Adam's
normalised steps carry on: a parameter whose gradient is nearly zero moves by up to the learning rate per update
whatever its rounding, so the bound scales with the learning rate. At the agents' 1e-4, 20 updates across a reset: at
most 3e-6 measured, bound 2e-5. After a fresh Adam (paper-dqn's injection; ReDo's zeroed moments of recycled units) the
first step is ±lr for each such parameter (m/√v = g/|g|), so rounding-level gradients move by lr either way: 1.4e-4 (pi)
and 3.9e-4 (redo) measured, bounds 3·lr and 5·lr; the Q-values then differ by 4.2e-4 and 1.6e-3 relative (bounds 1e-3
and 5e-3), otherwise by at most 1e-5 (bound 1e-4). Random draws are the eager ones (inductor's ``fallback_random``). One
compile per network family: the test reuses it across the reset methods (values changed in place keep the compiled code;
plasticity injection's new structure recompiles).
"""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from agent_utils import HUMANOID_BENCH, ROOT, checkpoint, load_agent, reset_events, run_agent
from test_resume import DQN, SAC, assert_same, straight_and_resumed

from fire_rl.buffers import ReplayBatch
from fire_rl.networks import QNetwork, RSNorm, SimbaActor, SimbaCritic
from fire_rl.regularizers import Regularizer
from fire_rl.runtime import compiled, warm_up
from fire_rl.scheduler import ResetConfig, ResetScheduler

METHODS = ["fire", "sp", "full", "pi", "redo"]
UPDATES, RESET_AT = 20, 10
LR = 1e-4
TOL = {
    "pi": (3 * LR, 1e-3),
    "redo": (5 * LR, 5e-3),
}  # (parameters, Q-values relative); else (2e-5, 1e-4): the module docstring


def max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# --compile on CPU (what CI runs); --cudagraphs, the captured path, on CUDA only: each against the eager update on its
# device.
MODES = {"compile": ("cpu", False), "cudagraphs": ("cuda", True)}


def dqn_batches(seed: int, device: torch.device | str = "cpu") -> list[ReplayBatch]:
    """`UPDATES` random DQN batches of 8 transitions (4 actions, one done in ten)."""
    g = torch.Generator().manual_seed(seed)
    batches = [
        ReplayBatch(
            torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=g),
            torch.randint(0, 4, (8,), generator=g),
            torch.randn(8, generator=g),
            torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=g),
            (torch.rand(8, generator=g) < 0.1).float(),
        )  # fmt: skip
        for _ in range(UPDATES)
    ]
    return [ReplayBatch(*(t.to(device) for t in batch)) for batch in batches]


@pytest.fixture(scope="module")
def dqn():
    """The agent module and its update compiled once per mode (compiling happens at the first call)."""
    module = load_agent("dqn_atari")
    return module, {mode: compiled(module.update, True, graphs) for mode, (_, graphs) in MODES.items()}


@pytest.mark.parametrize("mode", ["compile", pytest.param("cudagraphs", marks=CUDA)])
@pytest.mark.parametrize("method", METHODS)
def test_compiled_dqn_update_equals_eager_through_a_reset(dqn, method, mode):
    module, update_fns = dqn
    device, update_fn = torch.device(MODES[mode][0]), update_fns[mode]
    batches = dqn_batches(seed=0, device=device)
    runs = []
    for update in (module.update, update_fn):
        torch.manual_seed(0)
        q, target = QNetwork(4).to(device), QNetwork(4).to(device)
        target.load_state_dict(q.state_dict())
        optimizer = torch.optim.Adam(q.parameters(), lr=LR)
        scheduler = ResetScheduler(ResetConfig(reset=method, reset_recipe="paper-dqn", reset_at=(RESET_AT,)))
        scheduler.add_network("q", q, target=target, optimizer=optimizer, probe=lambda: (batches[0].observations,))
        for i, data in enumerate(batches):
            update(q, target, optimizer, Regularizer("none"), data, 0.99, "huber", False)
            scheduler.step(i + 1, i + 1)  # in place; injection rebuilds the optimizer in place too
        runs.append((q, target))
    (q_eager, target_eager), (q_compiled, target_compiled) = runs
    tol, q_tol = TOL.get(method, (2e-5, 1e-4))
    assert max_difference(q_eager, q_compiled) < tol and max_difference(target_eager, target_compiled) < tol
    with torch.no_grad():
        eager, fast = q_eager(batches[0].observations), q_compiled(batches[0].observations)
    assert float((eager - fast).abs().max() / eager.abs().max()) < q_tol


@pytest.mark.parametrize("kind", ["swr", "l2init", "parseval"])
def test_the_per_step_methods_run_inside_the_compiled_update(dqn, kind):
    # SWR's rescaling after the optimizer step and the L2-init and Parseval loss terms are part of the compiled update:
    # the same values as eager within the module docstring's bound, across a FIRE reset (SWR + re-init re-reads its
    # norms there).
    module, update_fns = dqn
    batches = dqn_batches(seed=1)
    runs = []
    for update in (module.update, update_fns["compile"]):
        torch.manual_seed(0)
        q, target = QNetwork(4), QNetwork(4)
        target.load_state_dict(q.state_dict())
        optimizer = torch.optim.Adam(q.parameters(), lr=LR)
        scheduler = ResetScheduler(ResetConfig(reset="fire", reset_recipe="paper-dqn", reset_at=(RESET_AT,)))
        scheduler.add_network("q", q, target=target, optimizer=optimizer)
        regularizer = Regularizer(kind, swr_lambda=0.1, swr_reinit=True, l2init_lambda=1.0, parseval_lambda=1e-2)
        regularizer.add_network("q", q, scheduler.theta0("q"))
        norms = []
        for i, data in enumerate(batches):
            update(q, target, optimizer, regularizer, data, 0.99, "huber", False)
            if scheduler.step(i + 1, i + 1) is not None:
                regularizer.on_reset()
            norms.append(float(sum(p.detach().norm() ** 2 for p in q.parameters())))
        runs.append((q, norms))
    (q_eager, norms_eager), (q_compiled, norms_compiled) = runs
    assert max_difference(q_eager, q_compiled) < 2e-5
    assert np.allclose(norms_eager, norms_compiled, rtol=1e-5)
    assert len(set(norms_eager)) == UPDATES  # the parameters moved at every update


def test_compiled_sac_update_equals_eager_through_a_reset():
    module = load_agent("sac_simba")
    args = module.Args(actor_hidden=16, critic_hidden=16, critic_blocks=1, learning_starts=0, batch_size=8)
    g = torch.Generator().manual_seed(0)
    batches = [ReplayBatch(torch.randn(8, 6, generator=g), torch.rand(8, 2, generator=g) * 2 - 1,
                           torch.randn(8, generator=g), torch.randn(8, 6, generator=g), torch.zeros(8))
               for _ in range(UPDATES)]  # fmt: skip
    update_fn = compiled(module.update, compile=True, cudagraphs=False)
    runs = []
    for update in (module.update, update_fn):
        torch.manual_seed(0)
        actor = SimbaActor(6, 2, args.actor_hidden, args.actor_blocks)
        critics = [SimbaCritic(6, 2, args.critic_hidden, args.critic_blocks) for _ in range(4)]
        critics[2].load_state_dict(critics[0].state_dict())
        critics[3].load_state_dict(critics[1].state_dict())
        log_alpha = torch.tensor(0.01).log().requires_grad_()
        opts = (torch.optim.AdamW(actor.parameters(), lr=LR),
                torch.optim.AdamW([*critics[0].parameters(), *critics[1].parameters()], lr=LR),
                torch.optim.AdamW([log_alpha], lr=LR))  # fmt: skip
        scheduler = ResetScheduler(ResetConfig(reset="fire", reset_recipe="paper-sac", reset_at=(RESET_AT,)))
        scheduler.add_network("actor", actor, optimizer=opts[0])
        for name, i in (("qf1", 0), ("qf2", 1)):
            scheduler.add_network(name, critics[i], target=critics[i + 2], optimizer=opts[1])
        scheduler.add_temperature(log_alpha, opts[2])
        rsnorm = RSNorm(6)
        for i, data in enumerate(batches):  # the actor's samples draw from torch's RNG: the same draws both times
            update(actor, *critics, rsnorm, log_alpha, opts, Regularizer("none"), data, args, -1.0, True)
            scheduler.step(i + 1, i + 1)
        runs.append((actor, *critics))
    for eager, fast in zip(*runs, strict=True):  # paper-sac's fresh AdamW after the reset
        assert max_difference(eager, fast) < 3 * LR


def test_warm_up_puts_every_value_back():
    torch.manual_seed(0)
    q, target = QNetwork(4), QNetwork(4)
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-3)
    module = load_agent("dqn_atari")
    data = ReplayBatch(torch.zeros(4, 4, 84, 84, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64),
                       torch.ones(4), torch.zeros(4, 4, 84, 84, dtype=torch.uint8), torch.zeros(4))  # fmt: skip
    before, ptrs, rng = copy.deepcopy(q.state_dict()), [p.data_ptr() for p in q.parameters()], torch.get_rng_state()
    warm_up(module.update, q, target, optimizer, Regularizer("none"), data, 0.99, "mse", False,
            state={"q": q, "target": target, "optimizer": optimizer})  # fmt: skip
    assert all(torch.equal(v, before[k]) for k, v in q.state_dict().items())
    assert [p.data_ptr() for p in q.parameters()] == ptrs and torch.equal(torch.get_rng_state(), rng)
    assert optimizer.state and not any(v.any() for st in optimizer.state.values() for v in st.values()), "fresh Adam"
    assert all(p.grad is None for p in q.parameters())
    warm_up(torch.rand, 3, state={})  # a step that draws: the RNG is put back
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="compiling the update failed .*drop --compile"):
        warm_up(lambda: 1 / 0, state={"q": q})
    with pytest.raises(ValueError, match="must not have a state yet"):  # the warm-up precedes the first update
        warm_up(module.update, state={"optimizer": optimizer})


@pytest.mark.slow
@pytest.mark.parametrize(
    "agent, flags",
    [("dqn_atari", [*DQN, "--reset", "fire"]),
     pytest.param("sac_simba", [*SAC, "--env-id", "h1-walk-v0", "--reset", "fire"], marks=HUMANOID_BENCH)],
    ids=["dqn-breakout", "sac-h1-walk"],
)  # fmt: skip
def test_a_compiled_run_resumes_exactly(tmp_path, agent, flags):
    # A compiled run stopped (--stop-at) and resumed as its stop message says equals the compiled run straight through,
    # bit for bit, across a reset: a compiled update is deterministic on CPU and a resume recompiles the same code.
    straight, resumed = straight_and_resumed(tmp_path, agent, [*flags, "--compile"], 100)
    a, b = checkpoint(straight), checkpoint(resumed)
    assert a["global_step"] == b["global_step"] >= 200 and a["update_step"] == b["update_step"] > 0
    assert len(reset_events(straight)) >= 2
    assert_same(a, b)


def test_graph_flags_are_refused_where_they_cannot_run(tmp_path):
    for flags, said in ((["--cudagraphs"], "--cudagraphs captures CUDA graphs"),
                        (["--compile", "--overlap"], "--overlap with --compile")):  # fmt: skip
        if flags == ["--cudagraphs"] and torch.cuda.is_available():
            continue
        proc = run_agent("dqn_atari", *flags, "--run-dir", str(tmp_path / "run"), check=False, timeout=120)
        assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_gpu_check_refuses_a_machine_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: scripts/gpu_check.sh would run for real")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHON=sys.executable))  # fmt: skip
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr, proc.stderr


@CUDA
@pytest.mark.parametrize("on_device", [False, True], ids=["host-memory", "device-memory"])
def test_cuda_updates_and_sampling_never_sync_the_host(on_device):
    from fire_rl.buffers import AtariReplayBuffer

    module = load_agent("dqn_atari")
    device = torch.device("cuda")
    q, target = QNetwork(4).to(device), QNetwork(4).to(device)
    optimizer = torch.optim.Adam(q.parameters(), lr=1e-4, fused=True)
    rb = AtariReplayBuffer(2_000, 1, device=device, seed=0, on_device=on_device)  # --buffer-device or not
    obs, zeros = np.full((1, 4, 84, 84), 7, dtype=np.uint8), np.zeros(1)  # one repeated frame: each stack continues
    for _ in range(1_000):
        rb.add(obs, obs, zeros.astype(np.int64), zeros, zeros.astype(bool), zeros.astype(bool))
    for step_fn in (module.update, compiled(module.update, compile=True, cudagraphs=True)):
        for _ in range(3):  # compiling and capturing synchronise; the updates after them must not
            step_fn(q, target, optimizer, Regularizer("none"), rb.sample(32), 0.99, "huber", False)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(300):
                step_fn(q, target, optimizer, Regularizer("none"), rb.sample(32), 0.99, "huber", False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
