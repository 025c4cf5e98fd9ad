"""scripts/aggregate.py on real tensorboard event files written here with SummaryWriter and on scalars.csv files
(synthetic curves).

Scores are checked against closed forms, the reference table and rliable called directly; the health check against
closed forms; the CLI as a subprocess. `write_synthetic_sweep` is also used by tests/test_plot.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[1]
AGGREGATE_PY = REPO / "scripts" / "aggregate.py"

ENV_IDS = ("ALE/Breakout-v5", "PongNoFrameskip-v4")
METHODS = ("none", "fire")
REPLAY_RATIOS = (0.25, 1.0)
SEEDS = (0, 1, 2)
TOTAL = 1_000
EVAL_EVERY = 100
RESET_AT = 500
# Offsets put the curves inside each game's random..human range, so HNS values are of order 0.1-1.
OFFSETS = {"ALE/Breakout-v5": 2.0, "PongNoFrameskip-v4": -20.0, "Humanoid-v5": 100.0}
SPANS = {"ALE/Breakout-v5": 25.0, "PongNoFrameskip-v4": 30.0, "Humanoid-v5": 500.0}


def load_script(name: str):
    """Import scripts/<name>.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"fire_rl_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses resolve their annotations through sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_name(env_id: str, method: str, rr: float, seed: int) -> str:
    return f"{env_id.replace('/', '-')}__{method}__rr{rr:g}__s{seed}"


def curve_values(env_id: str, method: str, rr: float, seed: int, steps: np.ndarray) -> np.ndarray:
    """A synthetic learning curve: rising, method- and replay-ratio-dependent, with seed noise."""
    gain = {"none": 0.5, "fire": 0.8}.get(method, 0.6) / (1.0 + 0.3 * math.log2(4 * rr))
    rng = np.random.default_rng(zlib.crc32(f"{env_id}|{method}|{rr}|{seed}".encode()))
    frac = gain * steps / TOTAL + 0.05 * rng.standard_normal(len(steps))
    return OFFSETS[env_id] + SPANS[env_id] * frac


def write_run(run_dir: Path, env_id: str, method: str, rr: float, seed: int, *, resume_at: int | None = None) -> dict:
    """Write one run directory: config.json, event files, resets.jsonl. Returns the ground truth.

    With `resume_at`, a first event file runs to TOTAL with "orphaned" values (+1000) from `resume_at` on, and a second
    file (later wall time, ``purge_step=resume_at`` as the agents write it) continues with the true values from the
    first logging step after `resume_at`, as a run resumed from a checkpoint at `resume_at` would.
    """
    run_dir.mkdir(parents=True)
    steps = np.arange(0, TOTAL + 1, EVAL_EVERY)
    values = curve_values(env_id, method, rr, seed, steps)
    ep_steps = np.arange(0, TOTAL + 1, 50)
    ep_values = curve_values(env_id, method, rr, seed + 100, ep_steps)
    dfi = np.where(ep_steps < RESET_AT, 0.1 + ep_steps / TOTAL, 0.1 + (ep_steps - RESET_AT) / TOTAL)
    if method == "none":
        dfi = 0.1 + ep_steps / TOTAL
    cfg = {"env_id": env_id, "reset": method, "replay_ratio": rr, "seed": seed, "total_timesteps": TOTAL}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    base_time = 1.7e9 + 1000 * seed

    def write(step_filter, t0: float, shift: float, purge: int | None = None) -> None:
        writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
        for i, (s, v) in enumerate(zip(steps, values, strict=True)):
            if step_filter(s):
                writer.add_scalar("eval/episodic_return", v + shift * (s >= (resume_at or 0)), s, walltime=t0 + i)
        for i, (s, v, d) in enumerate(zip(ep_steps, ep_values, dfi, strict=True)):
            if step_filter(s):
                writer.add_scalar("charts/episodic_return", v, s, walltime=t0 + i)
                writer.add_scalar("plasticity/dfi_mean", d, s, walltime=t0 + i)
                writer.add_scalar("plasticity/dormant_ratio", 0.5 * d, s, walltime=t0 + i)
                writer.add_scalar("plasticity/srank", 100 * (1 - 0.5 * d), s, walltime=t0 + i)
        writer.close()

    if resume_at is None:
        write(lambda s: True, base_time, 0.0)
    else:
        write(lambda s: True, base_time, 1000.0)
        write(lambda s: s > resume_at, base_time + 500, 0.0, purge=resume_at)
    if method != "none":
        with open(run_dir / "resets.jsonl", "w") as f:
            f.write(json.dumps({"global_step": RESET_AT, "update_step": int(RESET_AT * rr), "method": method}) + "\n")
    return {"env_id": env_id, "method": method, "replay_ratio": rr, "seed": seed, "steps": steps, "values": values}


def write_synthetic_sweep(root: Path, env_ids=ENV_IDS, methods=METHODS, replay_ratios=REPLAY_RATIOS, seeds=SEEDS):
    """A sweep directory with one run per grid cell. Returns {run name: ground truth}."""
    truth = {}
    for env_id in env_ids:
        for method in methods:
            for rr in replay_ratios:
                for seed in seeds:
                    name = run_name(env_id, method, rr, seed)
                    truth[name] = write_run(root / name, env_id, method, rr, seed)
    return truth


BRANCH_AT = 600


def branch_values(method: str, seed: int, steps: np.ndarray) -> np.ndarray:
    """Game returns of a branch sweep's runs: linear in the env step, a constant per method (the pretraining: 0)."""
    return 2.0 + steps / 100 + seed + {"pretraining": 0.0, "none": 0.0, "fire": 3.0}[method]


def write_branch_sweep(root: Path, seeds=SEEDS, methods=METHODS, env_id="ALE/Breakout-v5") -> dict:
    """Per seed a pretraining to `BRANCH_AT` and a branch per method from its checkpoint to `TOTAL`, with the
    ``config.json`` fire_rl.run writes (a branch's ``history[0]`` names the source checkpoint) and a ``scalars.csv`` of
    ``charts/episodic_return`` every 50 env steps (`branch_values`). Returns {run name: (steps, values)}."""
    truth = {}
    for seed in seeds:
        pre = root / f"pre__s{seed}"
        for method in ("pretraining", *methods):
            run_dir = pre if method == "pretraining" else root / f"{method}__s{seed}"
            run_dir.mkdir(parents=True)
            first, last = (50, BRANCH_AT) if method == "pretraining" else (BRANCH_AT + 50, TOTAL)
            steps = np.arange(first, last + 1, 50)
            truth[run_dir.name] = (steps, branch_values(method, seed, steps))
            cfg = {"env_id": env_id, "reset": "none" if method == "pretraining" else method, "replay_ratio": 1.0,
                   "seed": seed, "history": [{"mode": "fresh"}]}  # fmt: skip
            if method != "pretraining":
                source = {"path": str(pre / "checkpoint.pt"), "sha256": "0" * 64, "env_step": BRANCH_AT,
                          "update_step": BRANCH_AT}  # fmt: skip
                cfg |= {"branch_from": str(pre), "history": [{"mode": "branch", "source": source}]}
            (run_dir / "config.json").write_text(json.dumps(cfg))
            frame = pd.DataFrame({"tag": "charts/episodic_return", "step": steps, "value": truth[run_dir.name][1]})
            frame.to_csv(run_dir / "scalars.csv", index=False)
            (run_dir / "result.json").write_text(json.dumps({"finished": True, "global_step": int(last)}))
    return truth


@pytest.fixture(scope="module")
def agg():
    return load_script("aggregate")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    return root, write_synthetic_sweep(root)


# ------------------------------------------------------------------------------------------------- reference table
@pytest.mark.parametrize(
    ("env_id", "game"),
    [
        ("ALE/Breakout-v5", "breakout"),
        ("BreakoutNoFrameskip-v4", "breakout"),
        ("BreakoutDeterministic-v4", "breakout"),
        ("ALE/BeamRider-v5", "beam_rider"),
        ("BeamRiderNoFrameskip-v4", "beam_rider"),
        ("ALE/MontezumaRevenge-v5", "montezuma_revenge"),
        ("ALE/Jamesbond-v5", "jamesbond"),
        ("ms_pacman", "ms_pacman"),
        ("Humanoid-v5", None),
        ("h1-walk-v0", None),
    ],
)
def test_atari_game(agg, env_id, game):
    assert agg.atari_game(env_id, agg.load_score_table()) == game


def test_score_table_is_the_shared_copy_with_provenance(agg):
    table = agg.load_score_table()
    assert len(table) == 57 and table["in_atari100k"].sum() == 26
    assert table["source"].str.contains("dqn_zoo@45061f4").all()
    shared = Path("/work/shared/data/atari_scores.csv")
    if shared.is_file():
        assert (REPO / "scripts" / "atari_scores.csv").read_text() == shared.read_text()


def test_human_normalized_closed_form(agg):
    ref = agg.load_score_table().set_index("game").loc["breakout"]
    assert (ref["random"], ref["human"]) == (1.7, 30.5)
    assert agg.human_normalized(1.7, ref["random"], ref["human"]) == 0.0
    assert agg.human_normalized(30.5, ref["random"], ref["human"]) == pytest.approx(1.0)
    assert agg.human_normalized(16.1, ref["random"], ref["human"]) == pytest.approx(0.5)


# -------------------------------------------------------------------------------------------------- curves, scores
def test_step_curve_averages_repeats(agg):
    steps, values = agg.step_curve(np.array([30, 10, 10, 20]), np.array([3.0, 1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(steps, [10, 20, 30])
    np.testing.assert_allclose(values, [1.5, 5.0, 3.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_final_and_auc_closed_forms(agg, dtype):
    steps = np.array([100, 300, 400, 1000], dtype=np.int64)
    a, b = 0.37, -2.0
    values = (a * steps + b).astype(dtype)
    # The trapezoid rule is exact on a line: mean over [s0, s1] is the value at the midpoint.
    assert agg.auc_score(steps, values) == pytest.approx(a * (100 + 1000) / 2 + b, rel=1e-6)
    assert agg.final_score(values, 2) == pytest.approx(float(np.mean(values[-2:])))
    assert agg.final_score(values, 10) == pytest.approx(float(np.mean(values)))
    assert agg.auc_score(np.array([5]), np.array([3.5])) == 3.5
    # Unequal spacing: (100 * 1 + 300 * (1 + 3) / 2) / 400.
    assert agg.auc_score(np.array([0, 100, 400]), np.array([1.0, 1.0, 3.0])) == 1.75


def test_load_runs_reads_event_files_back(agg, sweep):
    root, truth = sweep
    scalars, runs, resets = agg.load_runs([root])
    assert len(runs) == len(truth) == 24
    assert list(scalars.columns) == agg.CONFIG_COLUMNS + ["tag", "step", "value", "since_branch"]
    assert (scalars["branch_step"] == 0).all() and (scalars["since_branch"] == scalars["step"]).all()
    assert set(scalars["tag"]) == {
        "eval/episodic_return",
        "charts/episodic_return",
        "plasticity/dfi_mean",
        "plasticity/dormant_ratio",
        "plasticity/srank",
    }
    for name, t in truth.items():
        rows = scalars[(scalars["run"] == name) & (scalars["tag"] == "eval/episodic_return")]
        assert rows.iloc[0][["env_id", "method", "replay_ratio", "seed"]].tolist() == [
            t["env_id"],
            t["method"],
            t["replay_ratio"],
            t["seed"],
        ]
        np.testing.assert_array_equal(rows["step"], t["steps"])
        # SummaryWriter stores float32.
        np.testing.assert_array_equal(rows["value"], t["values"].astype(np.float32).astype(np.float64))
    assert set(runs[runs["env_id"] == "PongNoFrameskip-v4"]["game"]) == {"pong"}
    fire = resets[resets["method"] == "fire"]
    assert len(fire) == 12 and set(fire["global_step"]) == {RESET_AT}
    assert set(zip(fire["replay_ratio"], fire["update_step"], strict=True)) == {(0.25, 125), (1.0, 500)}
    assert (resets["method"] != "none").all()


def test_resumed_run_keeps_the_resumed_values(agg, tmp_path):
    truth = write_run(tmp_path / "run", "ALE/Breakout-v5", "fire", 1.0, 0, resume_at=600)
    assert len(list((tmp_path / "run").glob("events.out.tfevents.*"))) == 2
    frame = agg.read_scalars(tmp_path / "run")
    ev = frame[frame["tag"] == "eval/episodic_return"]
    # Step 600 was logged only before the crash (orphaned, purged by the resumed writer); the resumed file logs from
    # 700 on.
    keep = truth["steps"] != 600
    np.testing.assert_array_equal(ev["step"], truth["steps"][keep])
    np.testing.assert_array_equal(ev["value"], truth["values"][keep].astype(np.float32).astype(np.float64))
    assert (ev["value"] < 500).all()
    ep = frame[frame["tag"] == "charts/episodic_return"]
    assert ep["step"].is_unique and 600 not in set(ep["step"]) and len(ep) == TOTAL // 50


def test_scalars_csv_is_read_before_event_files(agg, tmp_path):
    write_run(tmp_path / "run", "ALE/Breakout-v5", "none", 1.0, 0)
    rows = pd.DataFrame({"tag": ["charts/SPS", "charts/SPS", "eval/episodic_return"], "step": [100, 200, 200],
                         "value": [50, 60.5, 3]})  # fmt: skip
    rows.to_csv(tmp_path / "run" / "scalars.csv", index=False)
    frame = agg.read_scalars(tmp_path / "run")
    pd.testing.assert_frame_equal(frame, rows.astype({"step": np.int64, "value": np.float64}))


def test_config_json_names_what_is_missing(agg, tmp_path):
    name = run_name("PongNoFrameskip-v4", "sp", 0.5, 3)
    write_run(tmp_path / name, "PongNoFrameskip-v4", "sp", 0.5, 3)
    assert agg.read_run_config(tmp_path / name)["replay_ratio"] == 0.5
    (tmp_path / name / "config.json").write_text(json.dumps({"env_id": "PongNoFrameskip-v4", "seed": 3}))
    with pytest.raises(ValueError, match=r"config.json has no \['reset', 'replay_ratio'\]"):
        agg.read_run_config(tmp_path / name)


def test_run_scores_match_direct_computation(agg, sweep):
    root, truth = sweep
    table = agg.load_score_table()
    scalars, _, _ = agg.load_runs([root], table)
    scores = agg.run_scores(scalars, "eval/episodic_return", 3, table).set_index("run")
    refs = table.set_index("game")
    for name, t in truth.items():
        v = t["values"].astype(np.float32).astype(np.float64)
        s = t["steps"].astype(np.float64)
        final = v[-3:].mean()
        auc = np.sum(np.diff(s) * (v[1:] + v[:-1]) / 2) / (s[-1] - s[0])
        game = "breakout" if t["env_id"] == "ALE/Breakout-v5" else "pong"
        r, h = refs.loc[game, "random"], refs.loc[game, "human"]
        row = scores.loc[name]
        assert row["suite"] == "atari-hns"
        assert row["final"] == pytest.approx(final) and row["auc"] == pytest.approx(auc)
        assert row["final_hns"] == pytest.approx((final - r) / (h - r))
        assert row["auc_hns"] == pytest.approx((auc - r) / (h - r))
    with pytest.raises(ValueError, match="tags present"):
        agg.run_scores(scalars, "eval/nothing", 3, table)


# ------------------------------------------------------------------------------------------------------ aggregation
def synthetic_scores(rng: np.random.Generator, n_seeds: int, games=("breakout", "pong", "qbert")) -> pd.DataFrame:
    rows = []
    for method in ("none", "fire"):
        for rr in (0.25, 4.0):
            for game in games:
                for seed in range(n_seeds):
                    hns = rng.gamma(2.0, 0.4) * (1.3 if method == "fire" else 1.0)
                    rows.append(
                        {
                            "run": f"{game}-{method}-{rr}-{seed}",
                            "env_id": f"ALE/{game.title()}-v5",
                            "game": game,
                            "method": method,
                            "replay_ratio": rr,
                            "seed": seed,
                            "suite": "atari-hns",
                            "final": math.nan,
                            "auc": math.nan,
                            "final_hns": hns,
                            "auc_hns": 0.6 * hns,
                        }
                    )
    rows.append(dict(rows[0], suite="Humanoid-v5", env_id="Humanoid-v5", game="", final=500.0, auc=300.0))
    rows.append(dict(rows[0], suite="Humanoid-v5", env_id="Humanoid-v5", game="", seed=1, final=700.0, auc=350.0))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_aggregates_equal_rliable_called_directly(agg, n_seeds):
    from rliable import library as rly
    from rliable import metrics

    scores = synthetic_scores(np.random.default_rng(n_seeds), n_seeds)
    reps, seed = 150, 7
    result = agg.aggregate_scores(scores, reps=reps, confidence=0.9, seed=seed, gap_threshold=1.0)
    result = result.set_index(["suite", "method", "replay_ratio", "score", "statistic"]).sort_index()
    assert len(result) == (4 + 1) * 2 * 4

    def stats(x):
        return np.array(
            [
                metrics.aggregate_iqm(x),
                metrics.aggregate_median(x),
                metrics.aggregate_mean(x),
                metrics.aggregate_optimality_gap(x, 1.0),
            ]
        )

    atari = scores[scores["suite"] == "atari-hns"]
    for (method, rr), group in atari.groupby(["method", "replay_ratio"]):
        for kind in ("final", "auc"):
            columns = [
                group[group["env_id"] == e].sort_values("seed")[f"{kind}_hns"].to_numpy()
                for e in sorted(group["env_id"].unique())
            ]
            matrix = np.stack(columns, axis=1)
            assert matrix.shape == (n_seeds, 3)
            # rliable 1.2.0 resamples with the global np.random (its random_state is not used for the draws).
            np.random.seed(seed)  # noqa: NPY002
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                point, interval = rly.get_interval_estimates(
                    {"x": matrix},
                    stats,
                    reps=reps,
                    confidence_interval_size=0.9,
                    random_state=np.random.RandomState(seed),
                )
            got = result.loc[("atari-hns", method, rr, kind)]
            for i, name in enumerate(agg.STATISTICS):
                assert got.loc[name, "estimate"] == pytest.approx(point["x"][i], rel=1e-12)
                assert got.loc[name, "ci_low"] == pytest.approx(interval["x"][0, i], rel=1e-12)
                assert got.loc[name, "ci_high"] == pytest.approx(interval["x"][1, i], rel=1e-12)
            # Independent closed forms for the point estimates.
            assert got.loc["iqm", "estimate"] == pytest.approx(scipy.stats.trim_mean(matrix.ravel(), 0.25))
            assert got.loc["median", "estimate"] == pytest.approx(np.median(matrix.mean(axis=0)))
            assert got.loc["mean", "estimate"] == pytest.approx(matrix.mean())
            assert got.loc["optimality_gap", "estimate"] == pytest.approx(1.0 - np.minimum(matrix, 1.0).mean())
            assert (got["ci_low"] <= got["estimate"] + 1e-12).all() and (
                got["estimate"] <= got["ci_high"] + 1e-12
            ).all()
            assert (got["n_runs"] == n_seeds).all() and (got["n_tasks"] == 3).all()
    # Raw-return suites are never pooled across tasks and get no gap without a threshold.
    humanoid = result.loc[("Humanoid-v5", "none", 0.25, "final")]
    assert humanoid.loc["mean", "estimate"] == 600.0
    assert math.isnan(humanoid.loc["optimality_gap", "estimate"])


def test_intervals_are_reproducible_and_leave_global_rng_alone(agg):
    matrix = np.random.default_rng(3).gamma(2.0, 0.4, size=(4, 3))
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = agg.rliable_estimates(matrix, 1.0, reps=200, confidence=0.95, seed=5)
    b = agg.rliable_estimates(matrix, 1.0, reps=200, confidence=0.95, seed=5)
    c = agg.rliable_estimates(matrix, 1.0, reps=200, confidence=0.95, seed=6)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002


def test_unequal_run_counts_are_truncated_with_a_warning(agg):
    scores = synthetic_scores(np.random.default_rng(0), 3)
    scores = scores.drop(scores[(scores["game"] == "pong") & (scores["seed"] == 2)].index)
    with pytest.warns(UserWarning, match="unequal run counts"):
        result = agg.aggregate_scores(scores, reps=50)
    assert set(result[result["suite"] == "atari-hns"]["n_runs"]) == {2}


# ------------------------------------------------------------------------------------------------------- branches
def test_branches_line_up_at_the_branch_point(agg, tmp_path):
    write_branch_sweep(tmp_path, seeds=(0, 1))
    scalars, runs, _ = agg.load_runs([tmp_path])
    runs = runs.set_index("run")
    assert runs.loc["pre__s0", "method"] == "pretraining" and runs.loc["fire__s1", "method"] == "fire"
    assert (runs["branch_step"] == BRANCH_AT).all()
    assert runs.loc["fire__s1", "source"] == "pre__s1" and runs.loc["pre__s1", "source"] == ""
    assert runs.loc["fire__s1", "end_step"] == TOTAL and runs.loc["pre__s1", "end_step"] == BRANCH_AT
    np.testing.assert_array_equal(scalars["since_branch"], scalars["step"] - BRANCH_AT)
    assert scalars.loc[scalars["method"] == "pretraining", "since_branch"].max() == 0
    # The pretraining is not a method: scores and their aggregates hold the branches only.
    scores = agg.run_scores(scalars, "charts/episodic_return", 3)
    assert sorted(scores["method"]) == ["fire", "fire", "none", "none"]
    # Only the branches' runs of the root given are loaded: no source, no window before the branch point.
    with pytest.warns(UserWarning, match="window 'pre'"):
        alone = agg.window_scores(*agg.load_runs([tmp_path / "fire__s0"])[:2], "charts/episodic_return")
    assert math.isnan(alone["pre"].iloc[0]) and alone["n_pre"].iloc[0] == 0


def test_seeds_that_overshoot_the_branch_point_line_up(agg, tmp_path):
    # SAC's action repeat ends a pretraining to BRANCH_AT at BRANCH_AT or BRANCH_AT + 1: both are one branch point,
    # the source's planned end that the branch's history records.
    write_branch_sweep(tmp_path, seeds=(0, 1, 2))
    for seed, env_step, planned in (
        (0, BRANCH_AT, BRANCH_AT),
        (1, BRANCH_AT + 1, BRANCH_AT),
        (2, BRANCH_AT, 2 * BRANCH_AT),
    ):
        for method in METHODS:
            path = tmp_path / f"{method}__s{seed}" / "config.json"
            cfg = json.loads(path.read_text())
            cfg["history"][0]["source"] |= {"env_step": env_step, "total_timesteps": planned}
            path.write_text(json.dumps(cfg))
    runs = agg.load_runs([tmp_path])[1].set_index("run")
    assert (runs.loc[["fire__s0", "fire__s1", "none__s1", "pre__s1"], "branch_step"] == BRANCH_AT).all()
    # A branch from a checkpoint before the source's planned end keeps that checkpoint's step.
    assert runs.loc["fire__s2", "branch_step"] == BRANCH_AT and runs.loc["pre__s2", "branch_step"] == BRANCH_AT
    cfg = json.loads((tmp_path / "fire__s2" / "config.json").read_text())
    cfg["history"][0]["source"] |= {"env_step": BRANCH_AT + 1}
    (tmp_path / "fire__s2" / "config.json").write_text(json.dumps(cfg))
    assert agg.load_runs([tmp_path / "fire__s2"])[1]["branch_step"].tolist() == [BRANCH_AT + 1]


def test_window_scores_and_their_aggregates_closed_forms(agg, tmp_path):
    truth = write_branch_sweep(tmp_path, seeds=(0, 1, 2, 3))
    table = agg.load_score_table()
    scalars, runs, _ = agg.load_runs([tmp_path], table)
    windows = {"pre": 200, "early": 100, "last": 150}
    scores = agg.window_scores(scalars, runs, "charts/episodic_return", windows, table).set_index("run")
    assert len(scores) == 8 and set(scores["suite"]) == {"atari-hns"}
    for seed in range(4):
        for method, offset in (("none", 0.0), ("fire", 3.0)):
            row = scores.loc[f"{method}__s{seed}"]
            # pre: steps 450..600 of the pretraining; early: 650, 700; last: 900..1000 (mean step 950).
            assert (row["n_pre"], row["n_early"], row["n_last"]) == (4, 2, 3)
            assert row["pre"] == pytest.approx(2.0 + 5.25 + seed)
            assert row["early"] == pytest.approx(2.0 + 6.75 + seed + offset)
            assert row["last"] == pytest.approx(2.0 + 9.5 + seed + offset)
            assert row["last_hns"] == pytest.approx((row["last"] - 1.7) / (30.5 - 1.7))
            steps, values = truth[f"{method}__s{seed}"]
            assert row["last"] == pytest.approx(values[steps > TOTAL - 150].mean())
    result = agg.aggregate_scores(scores.reset_index(), reps=100, kinds=tuple(agg.WINDOWS), keys=agg.BRANCH_KEYS)
    assert set(result["branch_step"]) == {BRANCH_AT} and set(result["score"]) == {"pre", "early", "last"}
    got = result.set_index(["method", "score", "statistic"])
    for method in ("none", "fire"):
        for window in agg.WINDOWS:
            hns = scores.loc[scores["method"] == method, f"{window}_hns"].to_numpy()
            assert got.loc[(method, window, "iqm"), "estimate"] == pytest.approx(scipy.stats.trim_mean(hns, 0.25))
            assert got.loc[(method, window, "iqm"), "ci_low"] <= got.loc[(method, window, "iqm"), "estimate"]
            assert got.loc[(method, window, "iqm"), "n_runs"] == 4
    # The branches start from the same pretrainings: one window before the branch point for all methods.
    assert got.loc[("none", "pre", "iqm"), "estimate"] == got.loc[("fire", "pre", "iqm"), "estimate"]


def test_cli_writes_the_branch_windows(tmp_path):
    write_branch_sweep(tmp_path / "sweep", seeds=(0, 1))
    out = tmp_path / "agg"
    windows = ["--window-pre", "200", "--window-early", "100", "--window-last", "150"]
    proc = run_cli(str(tmp_path / "sweep"), "--out", str(out), "--metric", "charts/episodic_return", "--reps", "50",
                   "--curve-reps", "20", *windows)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    windows = pd.read_csv(out / "windows.csv")
    assert sorted(windows["run"]) == ["fire__s0", "fire__s1", "none__s0", "none__s1"]
    assert (windows["n_pre"] == 4).all() and (windows["n_last"] == 3).all()
    assert len(pd.read_csv(out / "window_aggregates.csv")) == 2 * 3 * 4  # methods × windows × statistics
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["method"]) == {"pretraining", "none", "fire"} and set(curves["branch_step"]) == {BRANCH_AT}
    summary = (out / "summary.md").read_text()
    assert "## atari-hns: pre (human-normalized score, branch at env step 600)" in summary
    assert "over 200 env steps before the branch point" in summary
    plain = tmp_path / "plain"
    write_synthetic_sweep(plain, env_ids=("ALE/Breakout-v5",), replay_ratios=(1.0,), seeds=(0,))
    assert run_cli(str(plain), "--reps", "20", "--curve-reps", "20").returncode == 0
    assert not (plain / "aggregate" / "windows.csv").exists()


# ---------------------------------------------------------------------------------------------- curves, profiles
def test_curves_are_rliables_per_step_iqm_with_its_intervals(agg, sweep):
    from rliable import library, metrics

    root, truth = sweep
    scalars, _, _ = agg.load_runs([root])
    result = agg.curves(scalars, reps=60, confidence=0.9, seed=3)
    assert set(result["tag"]) == {"eval/episodic_return", "charts/episodic_return", "plasticity/dfi_mean",
                                  "plasticity/dormant_ratio", "plasticity/srank"}  # fmt: skip
    sel = result[(result["env_id"] == "ALE/Breakout-v5") & (result["method"] == "fire")]
    sel = sel[(sel["replay_ratio"] == 1.0) & (sel["tag"] == "eval/episodic_return")]
    runs = [truth[run_name("ALE/Breakout-v5", "fire", 1.0, s)] for s in SEEDS]
    matrix = np.stack([r["values"].astype(np.float32).astype(np.float64) for r in runs])
    np.testing.assert_array_equal(sel["step"], runs[0]["steps"])
    np.testing.assert_allclose(sel["estimate"], [scipy.stats.trim_mean(c, 0.25) for c in matrix.T])
    assert (sel["n_runs"] == len(SEEDS)).all()

    # rliable's own recipe for sample-efficiency curves (aggregate_iqm frame by frame), same seed: same intervals.
    def iqm(x):
        return np.array([metrics.aggregate_iqm(x[..., t]) for t in range(x.shape[-1])])

    np.random.seed(3)  # noqa: NPY002 (rliable 1.2.0 draws from the global generator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _, interval = library.get_interval_estimates({"x": matrix[:, None, :]}, iqm, reps=60,
                                                     confidence_interval_size=0.9)  # fmt: skip
    np.testing.assert_allclose(sel["ci_low"], interval["x"][0])
    np.testing.assert_allclose(sel["ci_high"], interval["x"][1])


def test_align_runs_identical_steps_and_interpolation(agg):
    same = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "step": [0, 10, 20] * 2, "value": [1.0, 2, 3, 3, 4, 5]})
    steps, matrix = agg.align_runs(same, points=50)
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [3, 4, 5]])
    # Two lines logged at different steps: interpolation onto the common range is exact.
    rows = [("a", s, 2.0 * s) for s in (0, 7, 19, 40)] + [("b", s, 5.0 - s) for s in (3, 11, 30, 33)]
    steps, matrix = agg.align_runs(pd.DataFrame(rows, columns=["run", "step", "value"]), points=9)
    np.testing.assert_allclose(steps, np.linspace(3, 33, 9))
    np.testing.assert_allclose(matrix, [2.0 * steps, 5.0 - steps])
    apart = pd.DataFrame({"run": ["a", "a", "b", "b"], "step": [0, 10, 20, 30], "value": [1.0, 2, 3, 4]})
    with pytest.raises(ValueError, match="no step range"):
        agg.align_runs(apart, points=9)


def test_profiles_equal_rliable_called_directly(agg):
    from rliable import library

    scores = synthetic_scores(np.random.default_rng(1), 4)
    result = agg.profiles(scores, reps=80, seed=2, taus=11)
    sel = result[(result["suite"] == "atari-hns") & (result["replay_ratio"] == 4.0) & (result["score"] == "final")]
    group = scores[(scores["suite"] == "atari-hns") & (scores["replay_ratio"] == 4.0)]
    matrices = {m: agg.score_matrix(g, "final_hns")[0] for m, g in group.groupby("method")}
    tau = np.linspace(0.0, max(m.max() for m in matrices.values()), 11)
    np.random.seed(2)  # noqa: NPY002
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fraction, interval = library.create_performance_profile(matrices, tau, reps=80)
    for method, matrix in matrices.items():
        rows = sel[sel["method"] == method]
        np.testing.assert_allclose(rows["tau"], tau)
        np.testing.assert_allclose(rows["fraction"], [(matrix > t).mean() for t in tau])
        np.testing.assert_allclose(rows["fraction"], fraction[method])
        np.testing.assert_allclose(rows["ci_low"], interval[method][0])
        np.testing.assert_allclose(rows["ci_high"], interval[method][1])


# ------------------------------------------------------------------------------------------------------------ health
def health_scalars(total: int, every: int, rss_of_step, s_per_step_of_step) -> pd.DataFrame:
    """A run's scalars every `every` env steps: ``charts/rss_mb`` = rss_of_step(s) and ``s_per_env_step`` (what
    `step_times` derives) = s_per_step_of_step(s)."""
    steps = np.arange(every, total + 1, every)
    rss = pd.DataFrame({"tag": "charts/rss_mb", "step": steps, "value": [rss_of_step(s) for s in steps]})
    time = pd.DataFrame({"tag": "s_per_env_step", "step": steps, "value": [s_per_step_of_step(s) for s in steps]})
    return pd.concat([rss, time], ignore_index=True)


@pytest.mark.parametrize(
    ("growth_mb_per_step", "threshold", "verdict"),
    [(0.0, 5.0, "flat"), (0.002, 5.0, "flat"), (0.02, 5.0, "growing"), (-0.02, 5.0, "shrinking"), (0.02, 50.0, "flat")],
)
def test_health_gives_the_closed_form_change_and_verdict_of_memory(agg, growth_mb_per_step, threshold, verdict):
    scalars = health_scalars(10_000, 500, lambda s: 1_000.0 + growth_mb_per_step * s, lambda s: 0.02)
    rss = agg.health(scalars, full_step=4_000, rss_pct=threshold).set_index("quantity").loc["rss_mb"]
    steps = np.arange(4_000, 10_001, 500)
    median = 1_000.0 + growth_mb_per_step * 7_000  # the middle of 13 evenly spaced steps
    assert (rss["points"], rss["first_step"], rss["last_step"]) == (len(steps), 4_000, 10_000)
    assert rss["slope"] == pytest.approx(growth_mb_per_step, abs=1e-12) and rss["median"] == pytest.approx(median)
    assert rss["change_pct"] == pytest.approx(100 * growth_mb_per_step * 6_000 / median, abs=1e-9)
    assert rss["verdict"] == verdict


def test_health_recovers_the_growth_of_time_per_env_step_despite_an_outlier(agg):
    c0, c1 = 0.05, 1e-6  # seconds per env step at env step s: c0 + c1 s; one interval spans a restart (+30 s)
    scalars = health_scalars(10_000, 250, lambda s: 800.0, lambda s: c0 + c1 * s + (30.0 if s == 8_000 else 0.0))
    step_time = agg.health(scalars, full_step=2_000).set_index("quantity").loc["s_per_env_step"]
    assert step_time["slope"] == pytest.approx(c1, rel=1e-6)
    # The median of the 33 values is the line's value at the middle step, 6,000 (the outlier is the largest).
    assert step_time["median"] == pytest.approx(c0 + c1 * 6_000)
    assert step_time["change_pct"] == pytest.approx(100 * c1 * 8_000 / (c0 + c1 * 6_000), rel=1e-6)
    assert step_time["verdict"] == "growing"
    flat = health_scalars(10_000, 250, lambda s: 800.0, lambda s: c0)
    assert set(agg.health(flat, full_step=2_000)["verdict"]) == {"flat"}


def test_health_fits_only_after_the_buffer_fills(agg):
    # Memory rises 0.1 MB per env step until the buffer is full at 5,000, then stays: flat after the cut, not before.
    scalars = health_scalars(10_000, 500, lambda s: 600.0 + 0.1 * min(s, 5_000), lambda s: 0.02)
    assert agg.health(scalars, full_step=5_000).set_index("quantity").loc["rss_mb", "verdict"] == "flat"
    uncut = agg.health(scalars, full_step=0).set_index("quantity").loc["rss_mb"]
    assert uncut["verdict"] == "growing" and uncut["change_pct"] > 30
    late = agg.health(scalars, full_step=9_100)
    assert list(late["verdict"]) == ["unmeasured", "unmeasured"] and list(late["points"]) == [2, 2]


def write_sps_events(run_dir: Path, total: int, every: int, s_per_step_of_step, t0: float = 1.7e9) -> None:
    """charts/SPS events every `every` env steps whose wall times follow `s_per_step_of_step` (the values are what
    the agents log, an average since the start, and play no part)."""
    writer, wall = SummaryWriter(log_dir=str(run_dir)), t0
    for step in range(every, total + 1, every):
        wall += every * s_per_step_of_step(step)
        writer.add_scalar("charts/SPS", step / (wall - t0), step, walltime=wall)
    writer.close()


def test_step_times_come_from_the_wall_clock_of_the_sps_events(agg, tmp_path):
    write_sps_events(tmp_path, 2_000, 100, lambda s: 0.01 + 1e-5 * s)
    times = agg.step_times(tmp_path)
    np.testing.assert_array_equal(times["step"], np.arange(200, 2_001, 100))
    np.testing.assert_allclose(times["value"], 0.01 + 1e-5 * np.arange(200, 2_001, 100), rtol=1e-6)
    (tmp_path / "empty").mkdir()
    assert len(agg.step_times(tmp_path / "empty")) == 0


@pytest.mark.parametrize(
    ("config", "step"),
    [
        ({"buffer_size": 300}, 300),
        ({"buffer_size": 10, "num_envs": 4}, 12),  # ceil(10 / 4) slots per env
        ({"buffer_size": 100, "action_repeat": 2}, 200),  # agent steps of 2 env steps
    ],
)
def test_buffer_full_step_per_agent(agg, config, step):
    assert agg.buffer_full_step(config) == step


def test_health_cli_on_runs_with_scalars_csv(tmp_path):
    root = tmp_path / "health"
    for name, rss, s_per_step in (("flat", lambda s: 700.0, lambda s: 0.1), ("leaky", lambda s: 700.0 + 0.5 * s,
                                                                              lambda s: 0.1 + 1e-4 * s)):  # fmt: skip
        run_dir = root / name
        run_dir.mkdir(parents=True)
        config = {"env_id": "ALE/Breakout-v5", "reset": "fire", "replay_ratio": 4, "seed": 0, "buffer_size": 1_000}
        (run_dir / "config.json").write_text(json.dumps(config))
        rows = health_scalars(5_000, 100, rss, s_per_step)
        rows[rows["tag"] == "charts/rss_mb"].to_csv(run_dir / "scalars.csv", index=False)
        write_sps_events(run_dir, 5_000, 100, s_per_step)
    proc = run_cli(str(root), "--health", "--out", str(tmp_path / "out"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = pd.read_csv(tmp_path / "out" / "health.csv").set_index(["run", "quantity"])
    verdicts = {("flat", "rss_mb"): "flat", ("flat", "s_per_env_step"): "flat"}
    verdicts |= {("leaky", "rss_mb"): "growing", ("leaky", "s_per_env_step"): "growing"}
    assert table["verdict"].to_dict() == verdicts
    assert (table["first_step"] == 1_000).all()


# ------------------------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(AGGREGATE_PY), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


def test_cli_end_to_end(sweep, tmp_path):
    root, truth = sweep
    out = tmp_path / "agg"
    proc = run_cli(str(root), "--out", str(out), "--reps", "100", "--curve-reps", "50", "--last-k", "2")
    assert proc.returncode == 0, proc.stderr
    for name in ("scalars.csv", "runs.csv", "resets.csv", "scores.csv", "aggregates.csv", "curves.csv", "profiles.csv",
                 "summary.md"):  # fmt: skip
        assert (out / name).is_file(), name
    scalars = pd.read_csv(out / "scalars.csv")
    assert list(scalars.columns[:6]) == ["run", "env_id", "game", "method", "replay_ratio", "seed"]
    assert scalars["run"].nunique() == len(truth)
    aggregates = pd.read_csv(out / "aggregates.csv")
    assert len(aggregates) == 2 * 2 * 2 * 4  # methods × replay ratios × scores × statistics, one suite
    summary = (out / "summary.md").read_text()
    assert "## atari-hns: final (human-normalized score)" in summary
    assert "| fire | 0.25 | 3 × 2 |" in summary and "| none | 1 | 3 × 2 |" in summary


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--last-k", "0"], "--last-k: 0"),
        (["--confidence", "1.5"], "--confidence: 1.5"),
        (["--reps", "-3"], "--reps: -3"),
        (["--points", "1"], "--points: 1"),
        (["--rss-threshold-pct", "0"], "--rss-threshold-pct: 0.0"),
        (["--metric", "eval/none"], "'eval/none'"),
        (["--window-pre", "0"], "--window-pre: 0"),
    ],
)
def test_cli_bad_input_exits_2_before_any_work(agg, sweep, tmp_path, capsys, args, needle):
    root, _ = sweep
    with pytest.raises(SystemExit) as exc:
        agg.main([str(root), "--out", str(tmp_path / "x"), *args])
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_missing_root_exits_2_without_traceback(tmp_path):
    proc = run_cli(str(tmp_path / "nope"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli(str(empty))
    assert proc.returncode == 2 and "no run directories" in proc.stderr and "Traceback" not in proc.stderr
