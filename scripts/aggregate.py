"""A sweep's runs -> tidy tables, per-run scores and rliable aggregates; and the health of a long run.

    python scripts/aggregate.py runs/rr-sweep                      # writes runs/rr-sweep/aggregate/
    python scripts/aggregate.py runs/a runs/b --out results --metric charts/episodic_return --last-k 10
    python scripts/aggregate.py runs/health_8k --health            # memory and time per env step after the buffer fills

A run directory holds the agent's ``config.json`` (``env_id``, ``reset``, ``replay_ratio``, ``seed``; a branch's
``history[0]`` names its source checkpoint and env step) and its ``scalars.csv`` (``tag,step,value``, step = env
steps), or else tensorboard event files (``EventAccumulator``, which drops what a resumed run purged). Branches
(``--branch-from``) line up at their branch point: ``branch_step`` is the env step a branch started from, for the run
it started from (method ``pretraining``, not scored) the step its branches start from, else 0. Outputs, in ``--out``
(default ``FIRST_ROOT/aggregate``):
- ``scalars.csv`` (and ``.parquet`` with pyarrow): ``run, env_id, game, method, replay_ratio, seed, branch_step, tag,
  step, value, since_branch`` (= step − branch_step); ``runs.csv``: one row per run (its ``source`` run, ``end_step``);
  ``resets.csv``: their ``resets.jsonl``.
- ``scores.csv``: per run, ``final`` = mean of the last K points of ``--metric``, ``auc`` = trapezoid over env steps /
  step span, and for Atari ``final_hns``, ``auc_hns``: HNS = (score − random) / (human − random), references from
  ``scripts/atari_scores.csv`` (google-deepmind/dqn_zoo@45061f4 ``dqn_zoo/atari_data.py``).
- ``aggregates.csv``, ``summary.md``: per (suite, method, replay ratio) and score: IQM, median, mean and optimality gap
  with stratified-bootstrap intervals (rliable; Agarwal et al. 2021, NeurIPS). Suites: all Atari runs form
  ``atari-hns`` (tasks = games, HNS, gap threshold ``--gap-threshold``); any other env id is its own suite on the raw
  return (``--raw-gap-threshold``).
- ``curves.csv``: per (env id, method, replay ratio, branch step, tag) and env step, the IQM over seeds with its
  interval, for the return tags and `PLASTICITY_KEYS`; ``profiles.csv``: performance profiles (rliable
  ``create_performance_profile``).
- With branches, ``windows.csv``: per branch the mean of ``--window-metric`` (game return) over `WINDOWS` around its
  branch point (`window_scores`), and ``window_aggregates.csv``: their IQM, median, mean and optimality gap per (suite,
  method, replay ratio, branch step) with stratified-bootstrap intervals, as for ``aggregates.csv``.

``--health``: `health` of every run instead (``health.csv``; exit code 1 unless every verdict is flat).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import pandas as pd
    import rliable  # noqa: F401 (imported where used; checked here, before any work)
    import scipy.integrate
    import scipy.stats
except ImportError as err:
    sys.exit(f"error: scripts/aggregate.py needs {err.name}: pip install -e '.[analysis]'")

SCORES_CSV = Path(__file__).resolve().parent / "atari_scores.csv"
ATARI_SUITE = "atari-hns"
CONFIG_COLUMNS = ["run", "env_id", "game", "method", "replay_ratio", "seed", "branch_step"]
STATISTICS = ("iqm", "median", "mean", "optimality_gap")
SCORE_KINDS = ("final", "auc")
PRETRAINING = "pretraining"  # the method of a run that loaded branches start from
# Env steps of the windows around a branch point (`window_scores`): the source run's last, the branch's first, its last.
WINDOWS = {"pre": 10_000, "early": 5_000, "last": 10_000}
BRANCH_KEYS = ("suite", "method", "replay_ratio", "branch_step")
RETURN_TAGS = ("eval/episodic_return", "charts/episodic_return")
# Plasticity curves, by the last component of the tag (``plasticity/<key>`` or ``plasticity/<network>/<key>``).
PLASTICITY_KEYS = ("dfi_mean", "dfi_normalized_mean", "dormant_ratio", "dormant", "srank")


# ----------------------------------------------------------------------------------------------------- reference scores
def load_score_table(path: str | Path = SCORES_CSV) -> pd.DataFrame:
    """The Atari reference table (``game``, ``ale_v5_id``, ``random``, ``human``; float64 scores).

    Raises:
        ValueError: a required column is missing or a game has human == random (HNS undefined).
    """
    table = pd.read_csv(path)
    if missing := {"game", "ale_v5_id", "random", "human"} - set(table.columns):
        raise ValueError(f"score table {path}: missing columns {sorted(missing)}")
    table = table.astype({"random": np.float64, "human": np.float64})
    if len(flat := table[table["human"] == table["random"]]):
        raise ValueError(f"score table {path}: human == random for {list(flat['game'])}")
    return table


def atari_game(env_id: str, table: pd.DataFrame) -> str | None:
    """The table's ``game`` for an Atari env id (``ALE/BeamRider-v5``, ``BeamRiderNoFrameskip-v4``,
    ``BeamRiderDeterministic-v4``, ``beam_rider``; case and underscores ignored), or None for any other env id."""

    def key(name: str) -> str:
        name = re.sub(r"(NoFrameskip|Deterministic)?-v\d+$", "", name.split("/")[-1])
        return re.sub(r"[^a-z0-9]", "", name.lower())

    wanted = key(env_id)
    return next((str(g) for g, v5 in zip(table["game"], table["ale_v5_id"]) if wanted in (key(g), key(v5))), None)


def human_normalized(score, random: float, human: float):
    """HNS = (score − random) / (human − random): 0 is the random agent, 1 the human reference (Mnih et al. 2015)."""
    return (score - random) / (human - random)


# ------------------------------------------------------------------------------------------------------ reading runs
def tensorboard_scalars(run_dir: str | Path) -> pd.DataFrame:
    """Every scalar event of a run's tensorboard files: ``tag, step, value, wall_time``."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    rows = [(tag, e.step, e.value, e.wall_time) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])


def read_scalars(run_dir: str | Path) -> pd.DataFrame:
    """A run's ``scalars.csv``, or else its `tensorboard_scalars`: ``tag`` (str), ``step`` (int64, env steps),
    ``value`` (float64)."""
    path = Path(run_dir) / "scalars.csv"
    frame = pd.read_csv(path) if path.is_file() else tensorboard_scalars(run_dir)
    return frame[["tag", "step", "value"]].astype({"tag": str, "step": np.int64, "value": np.float64})


def read_run_config(run_dir: str | Path) -> dict:
    """``env_id``, ``method`` (the agent's ``reset``), ``replay_ratio`` and ``seed`` from the run's ``config.json``;
    for a branch (``history[0]`` of mode ``branch``) ``branch_step`` (its source checkpoint's env step, else 0) and
    ``source`` (the directory of that checkpoint, else None); the whole file under ``config``. A branch from a source's
    final checkpoint gets the source's planned end, its ``--stop-at`` or ``total_timesteps`` (recorded in the branch's
    history), as its ``branch_step``:
    an agent step of several env steps (SAC's action repeat) can end a run up to ``action_repeat - 1`` env steps past
    it, and seeds that overshoot differently must still line up at one branch point.

    Raises:
        ValueError: a key is missing (the message names the run directory and the keys).
    """
    config = json.loads((Path(run_dir) / "config.json").read_text())
    if missing := [key for key in ("env_id", "reset", "replay_ratio", "seed") if config.get(key) is None]:
        raise ValueError(f"run directory {run_dir}: config.json has no {missing}")
    first = (config.get("history") or [{}])[0]
    source = first.get("source") if first.get("mode") == "branch" else None
    # A branch from its source's last checkpoint lines up at the source's planned end, which SAC's action repeat can
    # overshoot by up to action_repeat - 1 env steps (runs branched before this was recorded: the exact step).
    planned = (source.get("stop_at") or source.get("total_timesteps") or source["env_step"]) if source else 0
    branch_step = min(int(source["env_step"]), int(planned)) if source else 0
    return {"env_id": str(config["env_id"]), "method": str(config["reset"]),
            "replay_ratio": float(config["replay_ratio"]), "seed": int(config["seed"]), "branch_step": branch_step,
            "source": Path(source["path"]).parent.resolve() if source else None, "config": config}  # fmt: skip


def read_resets(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``resets.jsonl``: ``global_step`` (env steps), ``update_step`` (gradient updates), ``reset_method``;
    empty without the file."""
    path = Path(run_dir) / "resets.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    rows = [(int(e["global_step"]), int(e.get("update_step", -1)), str(e.get("method", ""))) for e in events]
    return pd.DataFrame(rows, columns=["global_step", "update_step", "reset_method"])


def load_runs(roots: Sequence[str | Path], table: pd.DataFrame | None = None):
    """Read every run under `roots` (every directory with a ``config.json`` and scalars, the roots included).

    Returns:
        ``(scalars, runs, resets)``: ``CONFIG_COLUMNS + [tag, step, value, since_branch]``, one row per run
        (``CONFIG_COLUMNS + [source, end_step, run_dir]``), ``CONFIG_COLUMNS + [global_step, update_step,
        reset_method]``. ``run`` is the directory relative to its root; ``game`` is the Atari game or ""; a run that
        loaded branches start from has method `PRETRAINING` and their branch step; ``source`` is the run a branch
        started from (its directory when not under `roots`), else ""; ``end_step`` is ``result.json``'s env step, or
        else the last logged one.

    Raises:
        ValueError: no run directory under `roots`, or a run without its configuration.
    """
    table = load_score_table() if table is None else table
    roots = [Path(r).resolve() for r in roots]
    found = {p.parent for root in roots for p in root.rglob("config.json")}
    run_dirs = sorted(d for d in found if (d / "scalars.csv").is_file() or any(d.glob("events.out.tfevents.*")))
    if not run_dirs:
        raise ValueError(f"no run directories (config.json with scalars) under {[str(r) for r in roots]}")
    names = [str(next((d.relative_to(r) for r in roots if d.is_relative_to(r) and d != r), d.name)) for d in run_dirs]
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    configs, scalars, runs, resets = {d: read_run_config(d) for d in run_dirs}, [], [], []
    branch_steps = {}  # source run directory -> the branch steps of its loaded branches
    for cfg in configs.values():
        if cfg["source"] is not None:
            branch_steps.setdefault(cfg["source"], set()).add(cfg["branch_step"])
    for name, run_dir in zip(names, run_dirs):
        cfg = configs[run_dir]
        config = {"run": name, "env_id": cfg["env_id"], "game": atari_game(cfg["env_id"], table) or ""}
        config |= {key: cfg[key] for key in ("method", "replay_ratio", "seed", "branch_step")}
        if run_dir in branch_steps:  # one step, its checkpoint's; the latest, should it have run on after a branch
            config |= {"method": PRETRAINING, "branch_step": max(branch_steps[run_dir])}
        frame = read_scalars(run_dir).assign(**config)
        frame = frame.assign(since_branch=frame["step"] - config["branch_step"])
        try:
            end = int(json.loads((run_dir / "result.json").read_text())["global_step"])
        except (OSError, ValueError, KeyError):
            end = int(frame["step"].max()) if len(frame) else 0
        source = cfg["source"]
        source = "" if source is None else names[run_dirs.index(source)] if source in run_dirs else str(source)
        runs.append({**config, "source": source, "end_step": end, "run_dir": str(run_dir)})
        scalars.append(frame[[*CONFIG_COLUMNS, "tag", "step", "value", "since_branch"]])
        events = read_resets(run_dir)
        resets.append(events.assign(**config)[[*CONFIG_COLUMNS, *events.columns]])
    return pd.concat(scalars, ignore_index=True), pd.DataFrame(runs), pd.concat(resets, ignore_index=True)


# ------------------------------------------------------------------------------------------------------------ scores
def step_curve(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """One value per step, the mean of those logged at it: ``(unique_steps, means)``, (M,) each, steps ascending."""
    unique, inverse = np.unique(np.asarray(steps), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64), minlength=len(unique))
    return unique, sums / np.bincount(inverse, minlength=len(unique))


def final_score(values, last_k: int) -> float:
    """Mean of the last `last_k` points of a per-step curve (all of them when it is shorter)."""
    return float(np.mean(np.asarray(values, dtype=np.float64)[-last_k:]))


def auc_score(steps, values) -> float:
    """Trapezoid area of a `step_curve` (steps strictly increasing) over env steps divided by the step span: a
    step-weighted mean, in the units of `values`; a single point's AUC is its value."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(steps) == 1:
        return float(values[0])
    return float(scipy.integrate.trapezoid(values, steps) / (steps[-1] - steps[0]))


def run_scores(scalars: pd.DataFrame, metric: str, last_k: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-run ``final`` and ``auc`` of `metric` (`final_score`, `auc_score`), human-normalized for Atari games; runs
    of method `PRETRAINING` are left out (their branches are the runs compared).

    Returns:
        One row per run that logged `metric`: ``CONFIG_COLUMNS + [suite, n_points, last_step, final, auc, final_hns,
        auc_hns]``; HNS columns are NaN outside Atari; ``suite`` is ``atari-hns`` for Atari games, else the env id.

    Raises:
        ValueError: no run logged `metric` (the message lists the tags that exist).
    """
    refs = (load_score_table() if table is None else table).set_index("game")
    selected = scalars[(scalars["tag"] == metric) & (scalars["method"] != PRETRAINING)]
    if selected.empty:
        raise ValueError(f"metric {metric!r} is logged by no run; tags present: {sorted(scalars['tag'].unique())}")
    rows = []
    for keys, group in selected.groupby(CONFIG_COLUMNS, sort=True):
        config = dict(zip(CONFIG_COLUMNS, keys))
        steps, values = step_curve(group["step"], group["value"])
        final, auc = final_score(values, last_k), auc_score(steps, values)
        ref = refs.loc[config["game"]] if config["game"] else None
        hns = [human_normalized(x, ref["random"], ref["human"]) if ref is not None else math.nan for x in (final, auc)]
        rows.append({**config, "suite": ATARI_SUITE if config["game"] else config["env_id"], "n_points": len(steps),
                     "last_step": int(steps[-1]), "final": final, "auc": auc, "final_hns": hns[0],
                     "auc_hns": hns[1]})  # fmt: skip
    scores = pd.DataFrame(rows)
    if len(short := scores[scores["n_points"] < last_k]):
        warnings.warn(f"{len(short)} run(s) have fewer than --last-k={last_k} points of {metric!r} (fewest: "
                      f"{short['n_points'].min()}); their final score averages all points", stacklevel=2)  # fmt: skip
    return scores


def window_scores(scalars: pd.DataFrame, runs: pd.DataFrame, metric: str, windows=None, table=None) -> pd.DataFrame:
    """Per branch (``branch_step`` b > 0, not `PRETRAINING`), the mean of `metric` over windows of env steps: ``pre``
    over (b − w, b] of its source run, ``early`` over (b, b + w], ``last`` over (e − w, e] with e its ``end_step``
    (w: `windows`' value, default `WINDOWS`); NaN, with a warning, where no point falls in a window.

    Returns:
        ``CONFIG_COLUMNS + [suite, source, end_step]`` and, per window ``<w>``, ``<w>`` (mean), ``n_<w>`` (points) and
        ``<w>_hns`` (NaN outside Atari).
    """
    windows, refs = windows or WINDOWS, (load_score_table() if table is None else table).set_index("game")
    values, rows = scalars[scalars["tag"] == metric], []
    for run in runs[(runs["branch_step"] > 0) & (runs["method"] != PRETRAINING)].to_dict("records"):
        b, end, ref = run["branch_step"], run["end_step"], refs.loc[run["game"]] if run["game"] else None
        own, source = values[values["run"] == run["run"]], values[values["run"] == run["source"]]
        spans = {"pre": (source, b - windows["pre"], b), "early": (own, b, b + windows["early"]),
                 "last": (own, end - windows["last"], end)}  # fmt: skip
        row = {key: run[key] for key in [*CONFIG_COLUMNS, "source", "end_step"]}
        row["suite"] = ATARI_SUITE if run["game"] else run["env_id"]
        for window, (frame, low, high) in spans.items():
            points = frame.loc[(frame["step"] > low) & (frame["step"] <= high), "value"]
            mean = float(points.mean()) if len(points) else math.nan
            hns = human_normalized(mean, ref["random"], ref["human"]) if ref is not None else math.nan
            row |= {window: mean, f"n_{window}": len(points), f"{window}_hns": hns}
        rows.append(row)
    scores = pd.DataFrame(rows)
    for window in WINDOWS if rows else ():
        if len(empty := scores.loc[scores[f"n_{window}"] == 0, "run"]):
            warnings.warn(f"{len(empty)} branch(es) logged no {metric!r} in window {window!r} "
                          f"({windows[window]} env steps): {list(empty)[:5]}", stacklevel=2)  # fmt: skip
    return scores


def score_matrix(group: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """One group's scores as rliable wants them: ``(matrix (num_runs, num_tasks) float64, tasks)``, tasks = env ids
    sorted, runs of each task by seed. With unequal run counts every task keeps its first (smallest count) runs, with
    a warning (the stratified bootstrap resamples runs within each task, so rows need not share a seed)."""
    tasks = sorted(group["env_id"].unique())
    columns = [group[group["env_id"] == t].sort_values("seed")[column].to_numpy(np.float64) for t in tasks]
    n_runs = min(len(c) for c in columns)
    if any(len(c) > n_runs for c in columns):
        warnings.warn(f"tasks have unequal run counts ({[len(c) for c in columns]}); keeping {n_runs} per task, "
                      f"dropping {sum(len(c) - n_runs for c in columns)} run(s)", stacklevel=2)  # fmt: skip
    return np.stack([c[:n_runs] for c in columns], axis=1), tasks


@contextlib.contextmanager
def seeded(seed: int):
    """NumPy's global generator seeded with `seed` inside, restored after: rliable 1.2.0's StratifiedBootstrap draws
    from it and ignores ``random_state``, so this makes every interval reproducible and independent of the others."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        with warnings.catch_warnings():
            # arch deprecates the RandomState rliable passes on; an all-NaN statistic warns on empty slices.
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def rliable_estimates(matrix, gap_threshold: float | None, reps: int, confidence: float, seed: int):
    """IQM, median, mean and optimality gap (γ = `gap_threshold`; None leaves it NaN) of a (num_runs, num_tasks)
    score matrix with percentile stratified-bootstrap intervals (``rliable.library.get_interval_estimates`` with
    ``rliable.metrics``' aggregates, `reps` replications under `seeded`): ``(point (4,), interval (2, 4))`` in
    `STATISTICS` order, lower row first."""
    from rliable import library, metrics

    def statistics(x):
        gap = math.nan if gap_threshold is None else metrics.aggregate_optimality_gap(x, gap_threshold)
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_median(x), metrics.aggregate_mean(x), gap])

    with seeded(seed) as state:
        point, interval = library.get_interval_estimates(
            {"x": matrix}, statistics, reps=reps, confidence_interval_size=confidence, random_state=state
        )
    return np.asarray(point["x"], dtype=np.float64), np.asarray(interval["x"], dtype=np.float64)


def aggregate_scores(scores, reps=2_000, confidence=0.95, seed=0, gap_threshold=1.0, raw_gap_threshold=None,
                     kinds=SCORE_KINDS, keys=("suite", "method", "replay_ratio")):  # fmt: skip
    """`rliable_estimates` per `keys` (suite first) and score kind (`kinds`: `SCORE_KINDS`, or `WINDOWS` of
    `window_scores` with ``branch_step`` among the keys): ``atari-hns`` on ``<kind>_hns`` over games with
    `gap_threshold`, every other suite on its raw ``<kind>`` with `raw_gap_threshold`. Columns: ``*keys, score,
    statistic, estimate, ci_low, ci_high, n_runs, n_tasks, confidence``."""
    rows = []
    for values, group in scores.groupby(list(keys), sort=True):
        hns = values[0] == ATARI_SUITE
        for kind in kinds:
            matrix, tasks = score_matrix(group, f"{kind}_hns" if hns else kind)
            gap = gap_threshold if hns else raw_gap_threshold
            point, interval = rliable_estimates(matrix, gap, reps, confidence, seed)
            rows += [{**dict(zip(keys, values)), "score": kind, "statistic": s, "estimate": point[i],
                      "ci_low": interval[0, i], "ci_high": interval[1, i], "n_runs": matrix.shape[0],
                      "n_tasks": len(tasks), "confidence": confidence} for i, s in enumerate(STATISTICS)]  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ curves, profiles
def align_runs(runs: pd.DataFrame, points: int) -> tuple[np.ndarray, np.ndarray]:
    """The runs of one curve (columns ``run, step, value``) on common steps: ``(steps (T,), matrix (num_runs, T))``.

    When every run logged the same steps those are used; otherwise each run's `step_curve` is linearly interpolated
    on `points` evenly spaced steps between the latest first step and the earliest last step (runs with fewer than
    two steps are left out).

    Raises:
        ValueError: the runs share no step range.
    """
    curves = [step_curve(g["step"], g["value"]) for _, g in runs.groupby("run", sort=True)]
    if all(np.array_equal(curves[0][0], s) for s, _ in curves):
        return curves[0][0].astype(np.float64), np.stack([v for _, v in curves])
    curves = [(s, v) for s, v in curves if len(s) >= 2]
    if not curves or max(s[0] for s, _ in curves) >= min(s[-1] for s, _ in curves):
        raise ValueError("the runs share no step range to align on")
    grid = np.linspace(max(s[0] for s, _ in curves), min(s[-1] for s, _ in curves), points)
    return grid, np.stack([np.interp(grid, s, v) for s, v in curves])


def curves(scalars: pd.DataFrame, reps=500, confidence=0.95, seed=0, points=100) -> pd.DataFrame:
    """Sample-efficiency curves (Agarwal et al. 2021, Fig. 9) of `RETURN_TAGS` and the plasticity tags whose last
    component is in `PLASTICITY_KEYS`: per (env id, method, replay ratio, branch step, tag) the IQM over seeds at each
    step of `align_runs` with its stratified-bootstrap interval (``rliable.library.get_interval_estimates``; the IQM is
    ``rliable.metrics.aggregate_iqm``'s ``scipy.stats.trim_mean(·, 0.25)``, for all steps at once).

    Returns:
        ``env_id, method, replay_ratio, branch_step, tag, step, estimate, ci_low, ci_high, n_runs``; groups that cannot
        be aligned are left out with a warning.
    """
    from rliable import library

    def iqm_per_step(x):  # (runs, 1, T) -> (T,)
        return scipy.stats.trim_mean(x.reshape(-1, x.shape[-1]), 0.25, axis=0)

    tags = scalars["tag"]
    wanted = tags.isin(RETURN_TAGS) | (
        tags.str.startswith("plasticity/") & tags.str.split("/").str[-1].isin(PLASTICITY_KEYS)
    )
    frames, keys = [], ["env_id", "method", "replay_ratio", "branch_step", "tag"]
    for (env_id, method, rr, branch_step, tag), group in scalars[wanted].groupby(keys, sort=True):
        try:
            steps, matrix = align_runs(group, points)
        except ValueError as err:
            warnings.warn(f"{env_id}, {method}, replay ratio {rr:g}, {tag}: no curve ({err})", stacklevel=2)
            continue
        with seeded(seed) as state:
            options = {"reps": reps, "confidence_interval_size": confidence, "random_state": state}
            point, interval = library.get_interval_estimates({"x": matrix[:, None, :]}, iqm_per_step, **options)
        frames.append(pd.DataFrame({"env_id": env_id, "method": method, "replay_ratio": rr, "branch_step": branch_step,
                                    "tag": tag, "step": steps, "estimate": point["x"], "ci_low": interval["x"][0],
                                    "ci_high": interval["x"][1], "n_runs": matrix.shape[0]}))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*keys, "step", "estimate"])


def profiles(scores: pd.DataFrame, reps=2_000, confidence=0.95, seed=0, taus=101) -> pd.DataFrame:
    """Performance profiles (Agarwal et al. 2021, Sec. 4.2): per suite, replay ratio and score kind, the fraction of
    runs (over all tasks) scoring above τ for each method, with stratified-bootstrap intervals, from
    ``rliable.library.create_performance_profile`` on `taus` thresholds spanning the scores (HNS for ``atari-hns``).
    Columns: ``suite, replay_ratio, score, method, tau, fraction, ci_low, ci_high``."""
    from rliable import library

    frames = []
    for (suite, rr), group in scores.groupby(["suite", "replay_ratio"], sort=True):
        for kind in SCORE_KINDS:
            column = f"{kind}_hns" if suite == ATARI_SUITE else kind
            matrices = {m: score_matrix(g, column)[0] for m, g in group.groupby("method", sort=True)}
            values = np.concatenate([m.ravel() for m in matrices.values()])
            tau = np.linspace(min(0.0, values.min()), values.max(), taus)
            with seeded(seed):
                fraction, interval = library.create_performance_profile(
                    matrices, tau, reps=reps, confidence_interval_size=confidence
                )
            frames += [pd.DataFrame({"suite": suite, "replay_ratio": rr, "score": kind, "method": m, "tau": tau,
                                     "fraction": fraction[m], "ci_low": interval[m][0], "ci_high": interval[m][1]})
                       for m in matrices]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------------------------ health
def buffer_full_step(config: dict) -> int:
    """Env step at which every slot of the agent's replay buffer has been written once (resident memory grows until
    then as its pages are first touched): ``buffer_size`` rounded up to a multiple of ``num_envs`` (DQN's
    `AtariReplayBuffer` holds ``ceil(buffer_size / num_envs)`` slots per env), times ``action_repeat`` (SAC stores
    one agent step of that many env steps per slot)."""
    num_envs = int(config.get("num_envs") or 1)
    return -(-int(config["buffer_size"]) // num_envs) * num_envs * int(config.get("action_repeat") or 1)


def step_times(run_dir: str | Path) -> pd.DataFrame:
    """Seconds per env step between consecutive ``charts/SPS`` events of a run, from the wall times tensorboard stamps
    on them (the SPS values themselves average over everything since the process started, its warm-up included):
    rows ``tag`` = ``s_per_env_step``, ``step`` = the interval's last env step, ``value``."""
    sps = tensorboard_scalars(run_dir).query("tag == 'charts/SPS'").sort_values("step")
    steps, wall = sps["step"].to_numpy(np.float64), sps["wall_time"].to_numpy(np.float64)
    keep = np.diff(steps) > 0
    values = (np.diff(wall) / np.where(keep, np.diff(steps), 1.0))[keep]
    return pd.DataFrame({"tag": "s_per_env_step", "step": steps[1:][keep].astype(np.int64), "value": values})


def health(scalars: pd.DataFrame, full_step: int, rss_pct: float = 5.0, time_pct: float = 10.0) -> pd.DataFrame:
    """Does anything grow with run length? Lines against env steps, from `full_step` (`buffer_full_step`) on, of
    resident memory (``charts/rss_mb``, MB) and of seconds per env step (`step_times`), fitted by Theil-Sen
    (``scipy.stats.theilslopes``: the median of pairwise slopes, so the one interval that spans a resume's restart, or
    a burst of load, does not tilt it).

    Returns:
        One row per quantity (``rss_mb``, ``s_per_env_step``): ``points``, ``first_step``, ``last_step``, ``median``,
        ``slope`` (per env step), ``change_pct`` = slope x span / median x 100 over the fitted span, ``threshold_pct``
        (`rss_pct`, `time_pct`) and ``verdict``: ``flat`` (|change| below the threshold), ``growing``, ``shrinking``,
        or ``unmeasured`` (fewer than 3 steps after the buffer fills).
    """
    rows, quantities = [], {"rss_mb": ("charts/rss_mb", rss_pct), "s_per_env_step": ("s_per_env_step", time_pct)}
    for quantity, (tag, threshold) in quantities.items():
        sel = scalars[(scalars["tag"] == tag) & (scalars["step"] >= full_step)]
        steps, values = step_curve(sel["step"], sel["value"])
        row = {"quantity": quantity, "points": len(steps), "threshold_pct": threshold, "verdict": "unmeasured"}
        if len(steps) >= 3:
            slope, median = scipy.stats.theilslopes(values, steps)[0], np.median(values)
            change = 100.0 * slope * (steps[-1] - steps[0]) / median
            verdict = "flat" if abs(change) < threshold else "growing" if change > 0 else "shrinking"
            row |= {"first_step": int(steps[0]), "last_step": int(steps[-1]), "median": median, "slope": slope,
                    "change_pct": change, "verdict": verdict}  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------- summary
def score_tables(frame: pd.DataFrame, keys: list[str]) -> list[str]:
    """Markdown lines of `aggregate_scores` output: one table per group of `keys` (suite first, score kind last, a
    branch step between for branches), rows (method, replay ratio), cells ``estimate [low, high]`` per statistic."""

    def fmt(x: float) -> str:
        return "–" if not np.isfinite(x) else f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"

    lines, header = [], ["method", "replay ratio", "runs × tasks", *STATISTICS]
    for key, block in frame.groupby(keys, sort=False):
        unit = "human-normalized score" if key[0] == ATARI_SUITE else "return"
        where = f", branch at env step {key[1]:,}" if len(key) == 3 else ""
        lines += [f"## {key[0]}: {key[-1]} ({unit}{where})", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        for (method, rr), rows in block.groupby(["method", "replay_ratio"], sort=True):
            rows = rows.set_index("statistic")
            cells = [f"{fmt(rows.loc[s, 'estimate'])} [{fmt(rows.loc[s, 'ci_low'])}, "
                     f"{fmt(rows.loc[s, 'ci_high'])}]" for s in STATISTICS]  # fmt: skip
            shape = f"{int(rows['n_runs'].iloc[0])} × {int(rows['n_tasks'].iloc[0])}"
            lines.append("| " + " | ".join([str(method), f"{rr:g}", shape, *cells]) + " |")
        lines.append("")
    return lines


def markdown_summary(aggregates: pd.DataFrame, metric: str, last_k: int, reps: int, windows=None, note="") -> str:
    """The `score_tables` of `aggregates` per suite and score kind; then, given `windows` (`aggregate_scores` of
    `window_scores`, described by `note`), those per suite, branch step and window."""
    lines = ["# Aggregate scores", "",
             f"Metric `{metric}`; final = mean of its last {last_k} points; AUC = trapezoid over env steps / span.",
             f"Intervals: {round(100 * aggregates['confidence'].iloc[0])}% stratified bootstrap (rliable, percentile, "
             f"{reps} reps). Atari: human-normalized score, references from the DQN Zoo table "
             "(google-deepmind/dqn_zoo@45061f4 dqn_zoo/atari_data.py).", ""]  # fmt: skip
    lines += score_tables(aggregates, ["suite", "score"])
    if windows is not None and len(windows):
        lines += ["# Branches", "", note, "", *score_tables(windows, ["suite", "branch_step", "score"])]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """The command line, every value checked through ``parser.error`` (exit code 2) before any work."""
    parser = argparse.ArgumentParser(prog="aggregate.py", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("roots", nargs="+", type=Path, help="sweep or run directories to search for runs")
    add("--out", type=Path, default=None, help="output directory (default: FIRST_ROOT/aggregate)")
    add(
        "--metric",
        default="eval/episodic_return",
        help="scalar tag to score (default: %(default)s, which the agents log only with --eval-every > 0)",
    )
    add("--last-k", type=int, default=3, help="final score = mean of the last K points (default: %(default)s)")
    add("--reps", type=int, default=2_000, help="bootstrap replications of the scores (default: %(default)s)")
    add("--curve-reps", type=int, default=500, help="bootstrap replications of the curves (default: %(default)s)")
    add("--points", type=int, default=100, help="curve steps when runs log at different steps (default: %(default)s)")
    add("--confidence", type=float, default=0.95, help="interval coverage in (0, 1) (default: %(default)s)")
    add("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    add("--gap-threshold", type=float, default=1.0, help="optimality-gap threshold on HNS (default: %(default)s)")
    add(
        "--raw-gap-threshold",
        type=float,
        default=None,
        help="optimality-gap threshold on raw returns (default: none, no gap)",
    )
    add(
        "--scores", type=Path, default=SCORES_CSV, help="Atari reference table, CSV (default: scripts/atari_scores.csv)"
    )
    add(
        "--window-metric",
        default="charts/episodic_return",
        help="branches: scalar tag of the windows, the game return (default: %(default)s)",
    )
    windows = (("pre", "before the branch point (source run)"), ("early", "after it"), ("last", "at the end"))
    for window, what in windows:
        add(f"--window-{window}", type=int, default=WINDOWS[window],
            help=f"branches: env steps of the window {what} (default: %(default)s)")  # fmt: skip
    add("--health", action="store_true", help="check each run's memory and time per env step instead (see `health`)")
    add(
        "--rss-threshold-pct",
        type=float,
        default=5.0,
        help="--health: memory change over the run counted flat (default: %(default)s)",
    )
    add(
        "--time-threshold-pct",
        type=float,
        default=10.0,
        help="--health: time change over the run counted flat (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    bad = [f"roots: {str(r)!r} is not a directory" for r in args.roots if not r.is_dir()]
    lows = {"last_k": 1, "reps": 1, "curve_reps": 1, "points": 2, **{f"window_{w}": 1 for w in WINDOWS}}
    for name, low in lows.items():
        if (value := getattr(args, name)) < low:
            bad.append(f"--{name.replace('_', '-')}: {value} is invalid; allowed: >= {low}")
    if not 0.0 < args.confidence < 1.0:
        bad.append(f"--confidence: {args.confidence} is invalid; allowed: 0 < confidence < 1")
    for name in ("gap_threshold", "raw_gap_threshold", "rss_threshold_pct", "time_threshold_pct"):
        gap, value = "gap" in name, getattr(args, name)
        if value is not None and not (math.isfinite(value) and (value > 0 or gap)):
            bad.append(
                f"--{name.replace('_', '-')}: {value} is invalid; allowed: a finite number{'' if gap else ' > 0'}"
            )
    if not args.scores.is_file():
        bad.append(f"--scores: {str(args.scores)!r} is not a file")
    if bad:
        parser.error(f"argument {bad[0]}")
    return args, parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, via argparse)."""
    args, parser = parse_args(argv)
    out = args.out if args.out is not None else args.roots[0] / "aggregate"
    try:
        table = load_score_table(args.scores)
        scalars, runs, resets = load_runs(args.roots, table)
        if args.health:
            thresholds = (args.rss_threshold_pct, args.time_threshold_pct)
            checks = [health(pd.concat([scalars[scalars["run"] == run], step_times(d)]),
                             buffer_full_step(read_run_config(d)["config"]), *thresholds).assign(run=run)
                      for run, d in zip(runs["run"], runs["run_dir"])]  # fmt: skip
        else:
            scores = run_scores(scalars, args.metric, args.last_k, table)
    except (ValueError, KeyError) as err:
        parser.error(str(err))
    out.mkdir(parents=True, exist_ok=True)
    if args.health:
        checks = pd.concat(checks, ignore_index=True)
        checks.to_csv(out / "health.csv", index=False)
        print(checks.to_string(index=False), f"\n-> {out / 'health.csv'}")
        return 0 if (checks["verdict"] == "flat").all() else 1
    bootstrap = {"confidence": args.confidence, "seed": args.seed}
    gaps = {"gap_threshold": args.gap_threshold, "raw_gap_threshold": args.raw_gap_threshold}
    aggregates = aggregate_scores(scores, args.reps, **gaps, **bootstrap)
    tables = {"scalars": scalars, "runs": runs, "resets": resets, "scores": scores, "aggregates": aggregates,
              "curves": curves(scalars, args.curve_reps, points=args.points, **bootstrap),
              "profiles": profiles(scores, args.reps, **bootstrap)}  # fmt: skip
    spans = {w: getattr(args, f"window_{w}") for w in WINDOWS}
    note = (f"Mean `{args.window_metric}` per branch over {spans['pre']:,} env steps before the branch point (its "
            f"pretraining), the first {spans['early']:,} after it and the last {spans['last']:,}.")  # fmt: skip
    if ((runs["branch_step"] > 0) & (runs["method"] != PRETRAINING)).any():
        tables["windows"] = window_scores(scalars, runs, args.window_metric, spans, table)
        tables["window_aggregates"] = aggregate_scores(tables["windows"], args.reps, **gaps, **bootstrap,
                                                       kinds=tuple(WINDOWS), keys=BRANCH_KEYS)  # fmt: skip
    for name, frame in tables.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    with contextlib.suppress(ImportError):  # pandas writes parquet only with pyarrow (or fastparquet) installed
        scalars.to_parquet(out / "scalars.parquet", index=False)
    summary = markdown_summary(aggregates, args.metric, args.last_k, args.reps, tables.get("window_aggregates"), note)
    (out / "summary.md").write_text(summary)
    print(f"{len(runs)} runs, {len(scalars)} scalar rows -> {out}: {', '.join(tables)} (.csv), summary.md\n{summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
