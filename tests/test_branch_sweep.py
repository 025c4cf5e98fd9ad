"""scripts/ablate.py --branch-at: per (env id, replay ratio, seed) one pretraining, then a branch per method from its
checkpoint; then scripts/aggregate.py and scripts/plot.py on the sweep.

A stand-in agent checks the dependencies (a branch never starts before its pretraining finished, nor after it failed;
a resumed branch drops --branch-from) on both backends; the end-to-end test runs `agents/dqn_atari.py` on
ALE/Breakout-v5: a pretraining to env step 250 (Breakout's first game under seed 0 ends at step 233, so the window
before the branch point holds a game), branches to 500, learning from step 100.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ablate import GAME, attempts, run_cli
from test_aggregate import load_script

BRANCH_AT, TOTAL = 250, 500
TINY = ["--learning-starts", "100", "--buffer-size", "1000", "--metrics-every", "0", "--checkpoint-every", "0",
        "--batch-size", "8", "--total-timesteps", str(TOTAL)]  # fmt: skip
BACKENDS = ["local", pytest.param("ray", marks=pytest.mark.slow)]

# A stand-in agent. Its env id ``stub-<p>-<b>``: the pretraining (``--save-buffer``) exits with code p on every attempt
# (0: finishes), a branch with code b on its first attempt only, after writing a checkpoint (so the retry resumes).
STUB = """
import json, sys
from pathlib import Path
argv = sys.argv[1:]
run_dir = Path(argv[argv.index("--run-dir") + 1])
pre_code, branch_code = (int(c) for c in argv[argv.index("--env-id") + 1].split("-")[1:])
if "--branch-from" in argv:
    assert (Path(argv[argv.index("--branch-from") + 1]) / "result.json").is_file(), "the pretraining has not finished"
run_dir.mkdir(parents=True, exist_ok=True)
tries = len(list(run_dir.glob("try*"))) + 1
(run_dir / f"try{tries}").write_text(json.dumps(argv))
code = pre_code if "--save-buffer" in argv else branch_code if tries == 1 else 0
if code:
    (run_dir / "checkpoint.pt").write_text("")
    print(f"error: attempt {tries} exits {code}", file=sys.stderr)
    sys.exit(code)
(run_dir / "result.json").write_text(json.dumps({"finished": True}))
"""


def names(env: str, rr: str, step: int) -> tuple[str, str, str]:
    """The pretraining's and the two branches' (none, fire) run names of one cell (seed 0)."""
    return tuple(f"{env}__{m}__rr{rr}__s0__b{step}" for m in ("pre", "none", "fire"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_branches_wait_for_their_pretraining_and_fail_with_it(tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is the optional extra: pip install -e '.[ray]'")
    agent, out = tmp_path / "stub_agent.py", tmp_path / "sweep"
    agent.write_text(STUB)
    args = ["--agent", str(agent), "--env-ids", "stub-0-3", "stub-2-0", "stub-3-0", "--methods", "none", "fire"]
    args += ["--replay-ratios", "1", "--branch-at", "100", "--out", str(out), "--backend", backend, "--workers", "2"]
    proc = run_cli(*args, "--max-retries", "1", "--", "--total-timesteps", "200")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "9 runs in the grid" in proc.stdout and "sweep done: 6 failed, 3 finished" in proc.stdout

    def ends(name: str) -> list[tuple]:
        return [(e["status"], e["exit_code"], e.get("after")) for e in attempts(out, "end", name)]

    # The pretraining finished; each branch failed once (exit 3), then resumed from its checkpoint: --resume, and no
    # --branch-from (the agent takes one of the two).
    pre, *branches = names("stub-0-3", "1", 100)
    assert ends(pre) == [("finished", 0, None)] and "after" not in attempts(out, "start", pre)[0]
    for branch in branches:
        assert ends(branch) == [("failed", 3, pre), ("finished", 0, pre)]
        first, second = (r["command"] for r in attempts(out, "start", branch))
        assert first[first.index("--branch-from") + 1] == str(out / pre)
        assert "--branch-from" not in second and second[-2:] == ["--resume", str(out / branch)]
        assert min(r["time"] for r in attempts(out, "start", branch)) >= attempts(out, "end", pre)[0]["time"]
    # A pretraining refused (exit 2, once) or failing past its retries: its branches never start, failed with why.
    for env, pre_ends in (("stub-2-0", [("failed", 2, None)]), ("stub-3-0", [("failed", 3, None)] * 2)):
        pre, *branches = names(env, "1", 100)
        assert ends(pre) == pre_ends
        for branch in branches:
            assert ends(branch) == [("failed", None, pre)] and attempts(out, "start", branch) == []
            error = attempts(out, "end", branch)[0]["error"]
            assert error == f"not started: its pretraining {pre} did not finish (failed)"
            assert not (out / branch).exists()


def check_branch(out: Path, name: str, pre: str, method: str) -> None:
    """A finished branch of the sweep: from the pretraining's checkpoint at BRANCH_AT, to TOTAL, its reset at the
    branch point (none for method none)."""
    config = json.loads((out / name / "config.json").read_text())
    assert (config["reset"], config["branch_from"], config["seed"]) == (method, str(out / pre), 0)
    source = config["history"][0]["source"]
    assert config["history"][0]["mode"] == "branch" and source["env_step"] == BRANCH_AT
    assert source["sha256"] == hashlib.sha256((out / pre / "checkpoint.pt").read_bytes()).hexdigest()
    assert json.loads((out / name / "result.json").read_text())["global_step"] == TOTAL
    path = out / name / "resets.jsonl"
    resets = [json.loads(line)["global_step"] for line in path.read_text().splitlines()] if path.is_file() else []
    assert resets == ([] if method == "none" else [BRANCH_AT])


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_branch_sweep_real_dqn_then_aggregate_and_plot(tmp_path, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="Ray is the optional extra: pip install -e '.[ray]'")
    out, (pre, none, fire) = tmp_path / "sweep", names("ALE-Breakout-v5", "0.25", BRANCH_AT)
    args = ["--env-ids", GAME, "--methods", "none", "fire", "--replay-ratios", "0.25", "--seeds", "0"]
    args += ["--branch-at", str(BRANCH_AT), "--out", str(out), "--backend", backend, "--workers", "2"]
    args += ["--max-retries", "0", "--", *TINY]
    first = run_cli(*args)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    assert "3 runs in the grid: 0 finished, 3 to run" in first.stdout and "sweep done: 3 finished" in first.stdout

    # The dependency: the pretraining ran first, alone; each branch names it and starts from its checkpoint.
    (pre_start,), (pre_end,) = attempts(out, "start", pre), attempts(out, "end", pre)
    assert "after" not in pre_start
    assert pre_start["command"][-3:] == ["--stop-at", str(BRANCH_AT), "--save-buffer"]
    result = json.loads((out / pre / "result.json").read_text())
    assert result["global_step"] == result["stopped_at"] == BRANCH_AT and not result["finished"]
    for name, method in ((none, "none"), (fire, "fire")):
        (start,), (end,) = attempts(out, "start", name), attempts(out, "end", name)
        assert start["after"] == end["after"] == pre and start["time"] >= pre_end["time"]
        assert end["status"] == "finished"
        assert ("--reset-at-start" in start["command"]) is (method == "fire")
        check_branch(out, name, pre, method)

    # A re-run runs nothing new.
    before = (out / "attempts.jsonl").read_text()
    second = run_cli(*args)
    assert second.returncode == 0 and "3 runs in the grid: 3 finished, 0 to run" in second.stdout
    assert (out / "attempts.jsonl").read_text() == before
    # An unfinished branch resumes as the run in its directory (the agent refuses --resume with --branch-from).
    (out / fire / "result.json").unlink()
    third = run_cli(*args)
    assert third.returncode == 0, third.stdout + third.stderr[-3000:]
    assert "3 runs in the grid: 2 finished, 1 to run (1 resume from a checkpoint)" in third.stdout
    resumed = attempts(out, "start", fire)[-1]["command"]
    assert "--branch-from" not in resumed and resumed[-2:] == ["--resume", str(out / fire)]
    history = json.loads((out / fire / "config.json").read_text())["history"]
    assert [h["mode"] for h in history] == ["branch", "resume"]
    check_branch(out, fire, pre, "fire")

    # Aggregate: the branches line up at the branch point, windows relative to it.
    agg_dir = out / "aggregate"
    windows = {"pre": BRANCH_AT, "early": 150, "last": 200}
    flags = [f"--window-{w}={n}" for w, n in windows.items()]
    agg = load_script("aggregate")
    code = agg.main([str(out), "--metric", "charts/episodic_return", "--reps", "50", "--curve-reps", "20", *flags])
    assert code == 0
    runs = pd.read_csv(agg_dir / "runs.csv").set_index("run")
    assert runs["method"].to_dict() == {pre: "pretraining", none: "none", fire: "fire"}
    assert (runs["branch_step"] == BRANCH_AT).all() and runs.loc[fire, "source"] == pre
    scalars = pd.read_csv(agg_dir / "scalars.csv")
    assert (scalars["since_branch"] == scalars["step"] - BRANCH_AT).all()
    since = scalars.groupby("run")["since_branch"]
    assert since.max()[pre] <= 0 <= since.min()[fire]
    scores = pd.read_csv(agg_dir / "windows.csv").set_index("run")
    assert sorted(scores.index) == sorted([none, fire])

    def returns(run: str, low: int, high: int) -> np.ndarray:
        rows = pd.read_csv(out / run / "scalars.csv").query("tag == 'charts/episodic_return'")
        return rows.loc[(rows["step"] > low) & (rows["step"] <= high), "value"].to_numpy()

    for name in (none, fire):
        row = scores.loc[name]
        spans = {"pre": (pre, 0, BRANCH_AT), "early": (name, BRANCH_AT, BRANCH_AT + 150)}
        spans["last"] = (name, TOTAL - 200, TOTAL)
        for window, (run, low, high) in spans.items():
            values = returns(run, low, high)
            assert row[f"n_{window}"] == len(values)
            assert row[window] == pytest.approx(values.mean()) if len(values) else np.isnan(row[window])
        assert row["n_pre"] >= 1 and row["pre_hns"] == pytest.approx((row["pre"] - 1.7) / (30.5 - 1.7))
    aggregates = pd.read_csv(agg_dir / "window_aggregates.csv")
    assert set(aggregates["score"]) == set(windows) and set(aggregates["branch_step"]) == {BRANCH_AT}
    iqm = aggregates.query("statistic == 'iqm' and score == 'pre'").set_index("method")["estimate"]
    assert iqm["none"] == iqm["fire"] == pytest.approx(scores.loc[fire, "pre_hns"])  # one seed: its own score
    assert "branch at env step 250" in (agg_dir / "summary.md").read_text()

    # Plot: the branch-aligned curves.
    assert load_script("plot").main([str(agg_dir), "--metric", "charts/episodic_return", "--pre-window", "250"]) == 0
    for stem in ("branches_ALE-Breakout-v5", "curves_ALE-Breakout-v5"):
        for fmt in ("png", "svg"):
            assert (agg_dir / "plots" / f"{stem}.{fmt}").stat().st_size > 1000
