"""--branch-from: a new run that starts from another run's checkpoint and differs from it only by its reset (the FIRE
paper's protocol: one pretraining, one branch per method)."""

import hashlib
import json
import shutil

import pytest
import torch
from agent_utils import checkpoint, load_agent, reset_events, run_agent, scalars
from test_resume import assert_same

# epsilon = 1: every action is random, so branches that differ only in their networks play the same games.
SOURCE = ["--env-id", "ALE/Breakout-v5", "--learning-starts", "100", "--buffer-size", "1000", "--metrics-every", "0",
          "--checkpoint-every", "0", "--start-e", "1", "--end-e", "1", "--save-buffer"]  # fmt: skip


def test_branches_start_from_the_checkpoint_and_differ_only_by_their_reset(tmp_path):
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--total-timesteps", "200", "--run-dir", str(source))
    resumed = tmp_path / "resumed"
    shutil.copytree(source, resumed, ignore=shutil.ignore_patterns(".lock"))
    run_agent("dqn_atari", "--resume", str(resumed), "--total-timesteps", "280")
    none, fire = tmp_path / "none", tmp_path / "fire"
    run_agent("dqn_atari", "--branch-from", str(source), "--total-timesteps", "280", "--run-dir", str(none))
    run_agent("dqn_atari", "--branch-from", str(source / "checkpoint.pt"), "--total-timesteps", "280", "--reset",
              "fire", "--reset-at-start", "--run-dir", str(fire))  # fmt: skip

    # With the source's seed a branch without a reset is the source continued, bit for bit.
    a, b, c = checkpoint(resumed), checkpoint(none), checkpoint(fire)
    assert_same(a, b)
    # The FIRE branch: one reset, at the branch point; the same games, buffer and counters; other networks.
    assert [e["global_step"] for e in reset_events(fire)] == [200] and not reset_events(none)
    for key in ("global_step", "update_step", "obs", "buffer", "exploration_rng", "replay_ratio"):
        assert_same(b[key], c[key], key)
    assert not torch.equal(b["q_network"]["encoder.0.weight"], c["q_network"]["encoder.0.weight"])

    history = json.loads((fire / "config.json").read_text())["history"]
    assert [h["mode"] for h in history] == ["branch"]
    sha256 = hashlib.sha256((source / "checkpoint.pt").read_bytes()).hexdigest()
    assert history[0]["source"]["sha256"] == sha256 and history[0]["source"]["env_step"] == 200
    assert history[0]["source"]["total_timesteps"] == 200, "the source's planned end, where aggregate lines it up"
    assert (source / "result.json").exists() and checkpoint(source)["global_step"] == 200, "the source is untouched"


def test_a_branch_of_its_own_seed_draws_its_own_samples(tmp_path):
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--total-timesteps", "200", "--run-dir", str(source))
    for seed in ("1", "2"):
        run_agent("dqn_atari", "--branch-from", str(source), "--total-timesteps", "240", "--seed", seed,
                  "--run-dir", str(tmp_path / seed))  # fmt: skip
    a, b = checkpoint(tmp_path / "1"), checkpoint(tmp_path / "2")
    assert a["global_step"] == b["global_step"] == 240
    assert not torch.equal(a["q_network"]["encoder.0.weight"], b["q_network"]["encoder.0.weight"])


def test_branch_refusals(tmp_path):
    plain = tmp_path / "plain"
    run_agent("dqn_atari", *SOURCE[:-1], "--total-timesteps", "120", "--run-dir", str(plain))
    proc = run_agent("dqn_atari", "--branch-from", str(plain), "--run-dir", str(tmp_path / "b"), check=False)
    assert proc.returncode == 2 and "--save-buffer" in proc.stderr, proc.stderr
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--total-timesteps", "120", "--run-dir", str(source))
    for flags, named in [(["--buffer-size", "2000"], "--buffer-size"), (["--learning-rate", "0.1"], "--learning-rate"),
                         (["--resume", str(source)], "--resume")]:  # fmt: skip
        proc = run_agent("dqn_atari", "--branch-from", str(source), "--run-dir", str(tmp_path / "b"), *flags,
                         check=False)  # fmt: skip
        assert proc.returncode == 2 and named in proc.stderr, (flags, proc.stderr)
    assert not (tmp_path / "b").exists()
    proc = run_agent("dqn_atari", *SOURCE, "--reset", "fire", "--reset-at-start", "--run-dir", str(tmp_path / "c"),
                     check=False)  # fmt: skip
    assert proc.returncode == 2 and "--branch-from" in proc.stderr


def test_an_overlap_branch_injects_and_acts_with_the_new_network(tmp_path):
    # --overlap's actor must take the branch's own network: plasticity injection at the branch point
    # changes it.
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--overlap", "--total-timesteps", "200", "--run-dir", str(source))
    branch = tmp_path / "pi"
    run_agent("dqn_atari", "--branch-from", str(source), "--total-timesteps", "240", "--reset", "pi",
              "--reset-at-start", "--run-dir", str(branch))  # fmt: skip
    ckpt = checkpoint(branch)
    assert [e["global_step"] for e in reset_events(branch)] == [200]
    assert ckpt["actor"].keys() == ckpt["q_network"].keys(), "the actor has the injected structure"


def test_reset_at_start_without_a_reset_leaves_the_regularizer_alone(tmp_path):
    # --reset none --reset-at-start resets nothing, so SWR's re-init (on_reset) must not run either: the branch is the
    # plain branch, bit for bit.
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--regularizer", "swr", "--swr-reinit", "--total-timesteps", "200", "--run-dir",
              str(source))  # fmt: skip
    plain, at_start = tmp_path / "plain", tmp_path / "at_start"
    run_agent("dqn_atari", "--branch-from", str(source), "--total-timesteps", "240", "--run-dir", str(plain))
    run_agent("dqn_atari", "--branch-from", str(source), "--total-timesteps", "240", "--reset-at-start", "--run-dir",
              str(at_start))  # fmt: skip
    a, b = checkpoint(plain), checkpoint(at_start)
    assert not reset_events(at_start)
    for key in ("regularizer", "q_network", "optimizer"):
        assert_same(a[key], b[key], key)


def test_a_branch_keeps_its_sources_past_resets_and_never_its_schedule(tmp_path):
    # The source resets at 100 and plans one at 250; the branch starts from its checkpoint at 200 (checkpoint.prev.pt).
    source = tmp_path / "source"
    run_agent("dqn_atari", *SOURCE, "--total-timesteps", "300", "--checkpoint-every", "100", "--reset", "sp",
              "--reset-at", "100", "250", "--run-dir", str(source))  # fmt: skip
    branch_point = source / "checkpoint.prev.pt"
    assert checkpoint(source)["global_step"] == 300 and [e["global_step"] for e in reset_events(source)] == [100, 250]
    at_start, midpoint = tmp_path / "at_start", tmp_path / "midpoint"
    run_agent("dqn_atari", "--branch-from", str(branch_point), "--reset", "sp", "--reset-at-start",
              "--total-timesteps", "400", "--run-dir", str(at_start))  # fmt: skip
    run_agent("dqn_atari", "--branch-from", str(branch_point), "--reset", "fire", "--total-timesteps", "400",
              "--run-dir", str(midpoint))  # fmt: skip
    # Its own schedule only: the branch point, or the midpoint of its own span (200 to 400), never the source's 250.
    assert [e["global_step"] for e in reset_events(at_start)] == [100, 200]
    assert [e["global_step"] for e in reset_events(midpoint)] == [100, 300]
    for run_dir in (at_start, midpoint):
        result = json.loads((run_dir / "result.json").read_text())
        assert result["resets"] == 1 and result["inherited_resets"] == [100], result
    # A branch's reset before its branch point is refused.
    proc = run_agent("dqn_atari", "--branch-from", str(branch_point), "--reset", "fire", "--reset-at", "150",
                     "--run-dir", str(tmp_path / "early"), check=False)  # fmt: skip
    assert proc.returncode == 2 and "before the branch point" in proc.stderr, proc.stderr


def test_stop_at_keeps_the_whole_runs_schedules_in_the_pretraining_and_its_branches(tmp_path):
    # The official protocol trains with its full total and branches at a step inside it: epsilon at the branch point
    # is the full run's, not that of a run whose total is the branch point.
    flags = ["--env-id", "ALE/Breakout-v5", "--total-timesteps", "600", "--exploration-fraction", "0.5",
             "--learning-starts", "100", "--buffer-size", "1000", "--replay-ratio", "1", "--metrics-every", "0",
             "--checkpoint-every", "0"]  # fmt: skip
    dqn = load_agent("dqn_atari")
    full = dqn.Args(total_timesteps=600, exploration_fraction=0.5, learning_starts=100, buffer_size=1000)
    source, branch = tmp_path / "source", tmp_path / "branch"
    run_agent("dqn_atari", *flags, "--stop-at", "200", "--save-buffer", "--run-dir", str(source))
    result = json.loads((source / "result.json").read_text())
    assert result["stopped_at"] == result["global_step"] == 200 and result["finished"] is False
    run_agent("dqn_atari", "--branch-from", str(source), "--reset", "fire", "--reset-at-start", "--stop-at", "400",
              "--run-dir", str(branch))  # fmt: skip
    for run_dir, steps in ((source, [200]), (branch, [300, 400])):
        logged = dict(scalars(run_dir)["charts/epsilon"])
        assert sorted(logged) == steps, logged
        for step in steps:  # logged at `step`, the epsilon of the action taken at step - 1
            assert logged[step] == pytest.approx(dqn.epsilon_at(full, step - 1)), (run_dir.name, step)
    assert dqn.epsilon_at(full, 200) > 0.3, "the full run's epsilon, far from end_e at the branch point"
    assert json.loads((branch / "result.json").read_text())["stopped_at"] == 400
    run_agent("dqn_atari", "--resume", str(source))  # continues toward its total, as the stop message says
    result = json.loads((source / "result.json").read_text())
    assert result["finished"] and result["global_step"] == 600 and "stopped_at" not in result


def test_a_branch_may_change_its_replay_ratio_without_a_burst_of_updates(tmp_path):
    source, branch = tmp_path / "source", tmp_path / "rr1"
    run_agent("dqn_atari", *SOURCE, "--total-timesteps", "200", "--run-dir", str(source))  # replay ratio 0.25
    run_agent("dqn_atari", "--branch-from", str(source), "--replay-ratio", "1", "--total-timesteps", "240",
              "--run-dir", str(branch))  # fmt: skip
    before, after = checkpoint(source), checkpoint(branch)
    # The fractional credit restarts at the branch point: 40 env steps at ratio 1 are 40 updates, not the source's
    # 100 learning env steps re-credited at the new ratio.
    assert after["update_step"] - before["update_step"] == 40, (before["update_step"], after["update_step"])
