"""SAC + SimBa on real MuJoCo (Humanoid-v5), end to end: a subprocess, tensorboard event files, checkpoints."""

import copy
import json
import math
import signal

import pytest
import torch
from agent_utils import HUMANOID_BENCH, checkpoint, load_agent, reset_events, run_agent, scalars, start_agent, wait_for

# Small widths and a few hundred env steps that cross learning_starts; the reset comes at the very end, so a run with
# a reset and one without follow the same trajectory up to it.
SHORT = ["--env-id", "Humanoid-v5", "--total-timesteps", "300", "--learning-starts", "150", "--batch-size", "32",
         "--buffer-size", "1000", "--actor-hidden", "16", "--critic-hidden", "32", "--metrics-every", "200",
         "--eval-every", "0", "--checkpoint-every", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sac") / "none"
    run_agent("sac_simba", *SHORT, "--run-dir", str(run_dir))
    return run_dir


@pytest.mark.parametrize("method", ["fire", "sp", "full", "pi"])
def test_paper_sac_resets_end_to_end(tmp_path, baseline, method):
    run_dir = tmp_path / method
    run_agent("sac_simba", *SHORT, "--reset", method, "--reset-at", "300", "--run-dir", str(run_dir))
    tags = scalars(run_dir)
    for tag in ["losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "losses/alpha", "losses/alpha_loss",
                "charts/SPS", "charts/episodic_return", "reset/event", "plasticity/actor/srank"]:  # fmt: skip
        assert tag in tags, f"missing tag {tag}; have {sorted(tags)}"
    events = reset_events(run_dir)
    assert len(events) == 1 and events[0]["method"] == method
    ckpt, ref = checkpoint(run_dir), checkpoint(baseline)
    assert ckpt["global_step"] == ref["global_step"] and ckpt["update_step"] == ref["update_step"]
    for name in ["mean", "var", "count"]:
        assert torch.equal(ckpt["rsnorm"][name], ref["rsnorm"][name]), "RSNorm statistics are kept by a reset"
    for opt in ["actor_optimizer", "q_optimizer", "alpha_optimizer"]:
        state = ckpt[opt]["state"].values()  # a fresh optimizer's state: zeroed in place, no step taken since
        assert not any(v.any() for st in state for v in st.values()), "paper-sac: fresh optimizers (and temperature)"
    assert math.isclose(float(ckpt["log_alpha"]), math.log(0.01), rel_tol=1e-6), "temperature back to its init"
    for q in ["qf1", "qf2"]:
        for key, value in ckpt[q].items():
            assert torch.equal(value, ckpt[f"{q}_target"][key]), f"{q}_target.{key} != {q}.{key} after the reset"
    changes = {k: v for k, v in events[0]["scalars"].items() if k.endswith("output_change")}
    assert set(changes) == {"actor/output_change", "qf1/output_change", "qf2/output_change"}
    if method == "pi":
        assert max(changes.values()) < 1e-4, f"plasticity injection changed actions/Q-values: {changes}"
    else:
        assert min(changes.values()) > 1e-3, f"a {method} reset left outputs unchanged: {changes}"


def test_bad_input(tmp_path):
    for flags, message in [
        (["--env-id", "CartPole-v1"], "CartPole-v1"),
        (["--env-id", "NoSuchEnv-v9"], "NoSuchEnv-v9"),
        (["--env-id", "h1-nosuchtask-v0"], "h1-nosuchtask-v0"),
        (["--replay-ratio", "-1"], "--replay-ratio=-1"),
        (["--critic-hidden", "0"], "--critic-hidden=0"),
    ]:
        run_dir = tmp_path / "run"
        proc = run_agent("sac_simba", "--run-dir", str(run_dir), *flags, check=False, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, (flags, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert not run_dir.exists()


@pytest.mark.parametrize("regularizer", ["swr", "parseval"])
def test_redo_and_regularizers_end_to_end(tmp_path, regularizer):
    run_dir = tmp_path / regularizer
    run_agent("sac_simba", *SHORT, "--reset", "redo", "--reset-every", "200", "--regularizer", regularizer,
              "--run-dir", str(run_dir))  # fmt: skip
    events = reset_events(run_dir)
    assert [e["method"] for e in events] == ["redo"]
    assert any(k.endswith("/recycled") for k in events[0]["scalars"])
    tags = scalars(run_dir)
    assert "losses/qf1_loss" in tags
    if regularizer == "swr":
        assert any(t.startswith("swr/qf1/") for t in tags) and any(t.startswith("swr/actor/") for t in tags)


@HUMANOID_BENCH
@pytest.mark.parametrize("env_id", ["h1-walk-v0", "h1hand-walk-v0"])
def test_humanoid_bench_run_checkpoints_stops_and_resumes(tmp_path, env_id):
    # main crashed at the first checkpoint of every HumanoidBench run (its env state could not be captured).
    run_dir = tmp_path / "run"
    proc = start_agent("sac_simba", "--env-id", env_id, "--reset", "fire", "--total-timesteps", "1000",
                       "--learning-starts", "200", "--reset-at", "400", "--actor-hidden", "32", "--critic-hidden",
                       "64", "--batch-size", "32", "--checkpoint-every", "200", "--eval-every", "0",
                       "--metrics-every", "0", "--run-dir", str(run_dir))  # fmt: skip
    wait_for(run_dir / "checkpoint.pt", proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 143, out
    assert 200 <= checkpoint(run_dir)["global_step"] < 1000
    run_agent("sac_simba", "--resume", str(run_dir))  # no other flag, as the stop message says
    result = json.loads((run_dir / "result.json").read_text())
    # An agent step is 2 env steps (action repeat 2), 1 when an episode ends on the first: the run ends at 1000 or 1001.
    assert checkpoint(run_dir)["global_step"] == result["global_step"] in (1000, 1001) and result["finished"]
    events = reset_events(run_dir)  # an agent step is 2 env steps, 1 when an episode ends inside it
    assert len(events) == 1 and 400 <= events[0]["global_step"] <= 401


def test_without_clipped_double_q_qf1_alone_is_used_and_trained():
    # SimBa's critic_use_cdq=False (dm_control): with two identical critics the min is qf1 itself, so qf1 must follow
    # the same trajectory with and without CDQ, while without it qf2 and its target stay as built.
    from fire_rl.buffers import ReplayBatch
    from fire_rl.networks import RSNorm, SimbaActor, SimbaCritic
    from fire_rl.regularizers import Regularizer

    sac = load_agent("sac_simba")
    torch.manual_seed(0)
    actor, qf1 = SimbaActor(6, 2, hidden=16), SimbaCritic(6, 2, hidden=32)
    g = torch.Generator().manual_seed(1)
    data = ReplayBatch(torch.randn(32, 6, generator=g), torch.rand(32, 2, generator=g) * 2 - 1,
                       torch.randn(32, generator=g), torch.randn(32, 6, generator=g), torch.zeros(32))  # fmt: skip
    results = {}
    for cdq in (True, False):
        nets = [copy.deepcopy(n) for n in (actor, qf1, qf1, qf1, qf1)]  # qf2, the targets: copies of qf1
        a, q1, q2, q1_t, q2_t = nets
        log_alpha = torch.tensor(0.01).log().requires_grad_()
        optimizers = (torch.optim.AdamW(a.parameters()), torch.optim.AdamW([*q1.parameters(), *q2.parameters()]),
                      torch.optim.AdamW([log_alpha]))  # fmt: skip
        torch.manual_seed(2)
        for _ in range(3):
            stats = sac.update(a, q1, q2, q1_t, q2_t, RSNorm(6), log_alpha, optimizers, Regularizer(), data,
                               sac.Args(), -1.0, cdq)  # fmt: skip
        results[cdq] = nets, stats
    (with_cdq, _), (without, stats) = results[True], results[False]
    assert "qf2_loss" not in stats and "qf1_loss" in stats
    for name in ("actor", "qf1", "qf1_target"):
        i = ("actor", "qf1", "qf2", "qf1_target", "qf2_target").index(name)
        for p, p_ref in zip(without[i].parameters(), with_cdq[i].parameters()):
            assert torch.equal(p, p_ref), f"{name} differs without CDQ though min(qf1, qf1) = qf1"
    for i in (2, 4):
        for p, p0 in zip(without[i].parameters(), qf1.parameters()):
            assert torch.equal(p, p0), "qf2 and its target must stay as built without CDQ"
    assert any(not torch.equal(p, p0) for p, p0 in zip(without[1].parameters(), qf1.parameters()))
