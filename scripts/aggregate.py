"""Turn a sweep's tensorboard event files into tables, per-run scores and rliable aggregates.

    python scripts/aggregate.py runs/rr-sweep                      # writes runs/rr-sweep/aggregate/
    python scripts/aggregate.py runs/a runs/b --out results --metric charts/episodic_return --last-k 10

A *run directory* is any directory holding ``events.out.tfevents.*`` files; its configuration comes from the agent's
``config.json`` (keys ``env_id``, ``reset``, ``replay_ratio``, ``seed``), falling back to the ``manifest.json`` that
``scripts/ablate.py`` writes in the sweep directory. Event files are read with tensorboard's own
``EventAccumulator``, one file at a time; when a run was resumed, a later file (ordered by its first event's wall time)
supersedes every earlier event whose step is at or after that file's first step (DESIGN 2: steps are env steps).

Outputs, in ``--out``:
- ``scalars.csv`` (and ``scalars.parquet`` when pyarrow is installed): the tidy table, one row per
  (run, tag, step[, repeat]): ``run, env_id, game, method, replay_ratio, seed, tag, step, value, wall_time``;
  ``step`` is ``global_step`` (env steps).
- ``runs.csv``: one row per run, its configuration and directory.
- ``resets.csv``: one row per reset event from each run's ``resets.jsonl``.
- ``scores.csv``: per run, ``final`` = mean of the per-step curve over its last K points, ``auc`` = trapezoid over env
  steps divided by the step span (a step-weighted mean of the curve), and for Atari ``final_hns`` / ``auc_hns``, the
  human-normalized score HNS = (score − random) / (human − random).
- ``aggregates.csv`` and ``summary.md``: per (suite, method, replay ratio) and score (``final``, ``auc``): IQM, median,
  mean and optimality gap with stratified-bootstrap confidence intervals from rliable (Agarwal et al. 2021, "Deep RL at
  the Edge of the Statistical Precipice", NeurIPS; ``rliable.library.get_interval_estimates``, percentile method).

Suites: all Atari runs form one suite, ``atari-hns``, aggregated over games on the human-normalized score (the tasks
are the games); every other env id is its own suite on the raw return (one task; returns of different tasks are never
pooled). The optimality gap uses threshold ``--gap-threshold`` (1.0 = human level) on HNS and ``--raw-gap-threshold`` on
raw returns (left empty without one).

Human and random reference scores: ``scripts/atari_scores.csv``, DeepMind's DQN Zoo table (no-op starts, 108k-frame
cap), google-deepmind/dqn_zoo@45061f4 ``dqn_zoo/atari_data.py``; identical to rliable's and BBF's Atari 100k tables on
those 26 games. Video Pinball's random score is 16256.9 there (0.0 in the Agent57 appendix and BBF).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SCORES_CSV = Path(__file__).resolve().parent / "atari_scores.csv"
ATARI_SUITE = "atari-hns"
CONFIG_COLUMNS = ["run", "env_id", "game", "method", "replay_ratio", "seed"]
STATISTICS = ("iqm", "median", "mean", "optimality_gap")
SCORE_KINDS = ("final", "auc")
EVENT_GLOB = "events.out.tfevents.*"


# ----------------------------------------------------------------------------------------------------- reference scores
def load_score_table(path: str | Path = SCORES_CSV) -> pd.DataFrame:
    """Read the Atari reference table.

    Args:
        path: a CSV with at least the columns ``game``, ``ale_v5_id``, ``random``, ``human``.

    Returns:
        The table, indexed by nothing, ``random`` and ``human`` as float64.

    Raises:
        ValueError: a required column is missing or a game has human == random (HNS undefined).
    """
    table = pd.read_csv(path)
    missing = {"game", "ale_v5_id", "random", "human"} - set(table.columns)
    if missing:
        raise ValueError(f"score table {path}: missing columns {sorted(missing)}")
    table["random"] = table["random"].astype(np.float64)
    table["human"] = table["human"].astype(np.float64)
    flat = table[table["human"] == table["random"]]
    if len(flat):
        raise ValueError(f"score table {path}: human == random for {list(flat['game'])}")
    return table


def _game_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def atari_game(env_id: str, table: pd.DataFrame) -> str | None:
    """The score table's ``game`` for an Atari env id, or None when `env_id` is not an Atari game of the table.

    Accepts ``ALE/Breakout-v5``, ``BreakoutNoFrameskip-v4``, ``BreakoutDeterministic-v4``, ``Breakout-v4`` and the
    ROM name itself (``breakout``, ``beam_rider``); matching ignores case and underscores (``ALE/BeamRider-v5`` and
    ``BeamRiderNoFrameskip-v4`` both give ``beam_rider``).
    """
    base = env_id.split("/")[-1]
    base = re.sub(r"-v\d+$", "", base)
    base = re.sub(r"(NoFrameskip|Deterministic)$", "", base)
    key = _game_key(base)
    for game, v5 in zip(table["game"], table["ale_v5_id"], strict=True):
        v5_base = re.sub(r"-v\d+$", "", str(v5).split("/")[-1])
        if key in (_game_key(game), _game_key(v5_base)):
            return str(game)
    return None


def human_normalized(score: np.ndarray | float, random: float, human: float) -> np.ndarray | float:
    """HNS = (score − random) / (human − random): 0 is the random agent, 1 the human reference (Mnih et al. 2015)."""
    return (score - random) / (human - random)


# ------------------------------------------------------------------------------------------------------ reading runs
def find_run_dirs(roots: Sequence[str | Path]) -> list[Path]:
    """Every directory under `roots` (themselves included) that holds ``events.out.tfevents.*`` files, sorted."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        for event_file in root.rglob(EVENT_GLOB):
            if event_file.is_file():
                found.add(event_file.parent)
    return sorted(found)


def read_event_file(path: str | Path) -> pd.DataFrame:
    """All scalars of one event file, read with tensorboard's ``EventAccumulator`` (nothing subsampled or purged).

    Returns:
        Columns ``tag`` (str), ``step`` (int64, the logged step: env steps for our agents), ``value`` (float64),
        ``wall_time`` (float64, seconds since the epoch), in the order written.
    """
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False
    )
    acc.Reload()
    rows = [(tag, e.step, e.value, e.wall_time) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    frame = pd.DataFrame(rows, columns=["tag", "step", "value", "wall_time"])
    return frame.astype({"tag": str, "step": np.int64, "value": np.float64, "wall_time": np.float64})


def purge_step(path: str | Path) -> int | None:
    """The step of the first ``SessionLog.START`` event of an event file, or None.

    ``SummaryWriter(purge_step=s)`` writes it at the top of a new file when a run resumes from a checkpoint taken at
    env step s: every event an earlier file holds at step ≥ s was written after that checkpoint (orphaned).
    """
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.compat.proto import event_pb2

    for event in event_file_loader.EventFileLoader(str(path)).Load():
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            return int(event.step)
        if event.HasField("summary"):
            # The marker precedes every summary of its file.
            return None
    return None


def read_run_scalars(run_dir: str | Path) -> pd.DataFrame:
    """The scalars of one run directory, merged over its event files.

    Files are ordered by the wall time of their first scalar. A later file (a resumed run) that starts at step s
    supersedes every event of earlier files with step ≥ s, for every tag: those were written after the checkpoint the
    run resumed from. s is the file's `purge_step` marker when it has one, else its smallest scalar step. Several
    values of one tag at one step within a file (two episodes ending on the same vector step) are all kept.

    Returns:
        Columns ``tag, step, value, wall_time`` as in `read_event_file`, sorted by tag and step (stable).
    """
    files = sorted(Path(run_dir).glob(EVENT_GLOB))
    frames = [(f, p) for f, p in ((read_event_file(p), p) for p in files) if len(f)]
    frames.sort(key=lambda item: item[0]["wall_time"].min())
    merged: pd.DataFrame | None = None
    for frame, path in frames:
        if merged is None:
            merged = frame
        else:
            marker = purge_step(path)
            start = frame["step"].min() if marker is None else min(marker, frame["step"].min())
            merged = pd.concat([merged[merged["step"] < start], frame], ignore_index=True)
    if merged is None:
        return pd.DataFrame({"tag": [], "step": [], "value": [], "wall_time": []}).astype(
            {"tag": str, "step": np.int64, "value": np.float64, "wall_time": np.float64}
        )
    return merged.sort_values(["tag", "step"], kind="stable").reset_index(drop=True)


def _manifest_config(run_dir: Path) -> dict:
    for parent in [run_dir, *run_dir.parents][:3]:
        manifest = parent / "manifest.json"
        if manifest.is_file():
            runs = json.loads(manifest.read_text()).get("runs", {})
            entry = runs.get(run_dir.name)
            if entry:
                cfg = entry.get("config", {})
                return {
                    "env_id": cfg.get("env_id"),
                    "reset": cfg.get("method"),
                    "replay_ratio": cfg.get("replay_ratio"),
                    "seed": cfg.get("seed"),
                }
    return {}


def read_run_config(run_dir: str | Path) -> dict:
    """``env_id``, ``method``, ``replay_ratio`` (float) and ``seed`` (int) of a run.

    Read from the agent's ``config.json`` (keys ``env_id``, ``reset``, ``replay_ratio``, ``seed``), falling back to an
    ablate ``manifest.json`` in the run directory or up to two levels above it.

    Raises:
        ValueError: a key is found in neither place (the message names the run directory and the keys).
    """
    run_dir = Path(run_dir)
    cfg: dict = {}
    config_json = run_dir / "config.json"
    if config_json.is_file():
        cfg = json.loads(config_json.read_text())
    fallback = _manifest_config(run_dir)
    merged = {key: cfg.get(key, fallback.get(key)) for key in ("env_id", "reset", "replay_ratio", "seed")}
    missing = [key for key, value in merged.items() if value is None]
    if missing:
        raise ValueError(
            f"run directory {run_dir}: no {missing} in config.json or an ablate manifest.json; "
            "every run needs env_id, reset, replay_ratio and seed"
        )
    return {
        "env_id": str(merged["env_id"]),
        "method": str(merged["reset"]),
        "replay_ratio": float(merged["replay_ratio"]),
        "seed": int(merged["seed"]),
    }


def read_resets(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``resets.jsonl``: columns ``global_step`` (env steps), ``update_step`` (gradient updates),
    ``reset_method``; empty when the file is absent (a run without resets)."""
    path = Path(run_dir) / "resets.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                event = json.loads(line)
                rows.append(
                    {
                        "global_step": int(event["global_step"]),
                        "update_step": int(event.get("update_step", -1)),
                        "reset_method": str(event.get("method", "")),
                    }
                )
    return pd.DataFrame(rows, columns=["global_step", "update_step", "reset_method"])


def _run_names(run_dirs: list[Path], roots: Sequence[Path]) -> list[str]:
    names = []
    for run_dir in run_dirs:
        rel = next((run_dir.relative_to(r) for r in roots if run_dir.is_relative_to(r)), Path(run_dir.name))
        names.append(str(rel) if str(rel) != "." else run_dir.name)
    if len(set(names)) < len(names):
        names = [str(d) for d in run_dirs]
    return names


def load_runs(
    roots: Sequence[str | Path], table: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read every run under `roots`.

    Returns:
        ``(scalars, runs, resets)``: the tidy scalar table (``CONFIG_COLUMNS + [tag, step, value, wall_time]``), one
        row per run (``CONFIG_COLUMNS + [run_dir]``), and the reset events (``CONFIG_COLUMNS + [global_step,
        update_step, reset_method]``). ``game`` is the Atari game or "" for other env ids.

    Raises:
        ValueError: no run directory under `roots`, or a run without its configuration.
    """
    table = load_score_table() if table is None else table
    roots = [Path(r).resolve() for r in roots]
    run_dirs = find_run_dirs(roots)
    if not run_dirs:
        raise ValueError(f"no run directories (holding {EVENT_GLOB}) under {[str(r) for r in roots]}")
    names = _run_names(run_dirs, roots)
    scalar_frames, run_rows, reset_frames = [], [], []
    for name, run_dir in zip(names, run_dirs, strict=True):
        cfg = read_run_config(run_dir)
        game = atari_game(cfg["env_id"], table) or ""
        config = {"run": name, "env_id": cfg["env_id"], "game": game, **{k: cfg[k] for k in CONFIG_COLUMNS[3:]}}
        run_rows.append({**config, "run_dir": str(run_dir)})
        scalars = read_run_scalars(run_dir)
        scalar_frames.append(scalars.assign(**config)[CONFIG_COLUMNS + ["tag", "step", "value", "wall_time"]])
        resets = read_resets(run_dir)
        reset_frames.append(resets.assign(**config)[CONFIG_COLUMNS + list(resets.columns)])
    scalars = pd.concat(scalar_frames, ignore_index=True)
    resets = pd.concat(reset_frames, ignore_index=True) if reset_frames else pd.DataFrame()
    return scalars, pd.DataFrame(run_rows), resets


# ------------------------------------------------------------------------------------------------------------ scores
def step_curve(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One value per step: the mean of all values logged at that step.

    Args:
        steps: (N,) integer env steps, any order.
        values: (N,) float values.

    Returns:
        ``(unique_steps, mean_values)``, both (M,), steps ascending, values float64.
    """
    steps = np.asarray(steps)
    values = np.asarray(values, dtype=np.float64)
    unique, inverse = np.unique(steps, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique))
    return unique, sums / counts


def final_score(values: np.ndarray, last_k: int) -> float:
    """Mean of the last `last_k` points of a per-step curve (all of them when it is shorter).

    Raises:
        ValueError: `last_k` < 1 or the curve is empty.
    """
    if last_k < 1:
        raise ValueError(f"last_k={last_k!r}: must be an integer >= 1")
    if len(values) == 0:
        raise ValueError("final_score of an empty curve")
    return float(np.mean(np.asarray(values, dtype=np.float64)[-last_k:]))


def auc_score(steps: np.ndarray, values: np.ndarray) -> float:
    """Area under a per-step curve by the trapezoid rule over env steps, divided by the step span.

    The result is in the units of `values` (a step-weighted mean of the curve). A curve with a single point has no
    span; its AUC is that point's value.

    Args:
        steps: (M,) strictly increasing env steps.
        values: (M,) values at those steps.

    Raises:
        ValueError: empty input, mismatched lengths, or steps not strictly increasing.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if len(steps) == 0 or len(steps) != len(values):
        raise ValueError(f"auc_score: need equal, non-zero lengths, got steps {len(steps)} and values {len(values)}")
    if len(steps) == 1:
        return float(values[0])
    widths = np.diff(steps)
    if np.any(widths <= 0):
        raise ValueError("auc_score: steps must be strictly increasing")
    area = float(np.sum(widths * (values[1:] + values[:-1]) / 2.0))
    return area / float(steps[-1] - steps[0])


def run_scores(scalars: pd.DataFrame, metric: str, last_k: int, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-run final score and AUC of `metric`, human-normalized for Atari games.

    Args:
        scalars: the tidy table of `load_runs`.
        metric: the tag to score, e.g. ``eval/episodic_return``.
        last_k: number of last points of the per-step curve averaged into ``final``.
        table: the Atari reference table (`load_score_table`).

    Returns:
        One row per run that logged `metric`: ``CONFIG_COLUMNS + [suite, n_points, last_step, final, auc, final_hns,
        auc_hns]``; HNS columns are NaN outside Atari. ``suite`` is ``atari-hns`` for Atari games, else the env id.

    Raises:
        ValueError: no run logged `metric` (the message lists the tags that exist).
    """
    table = load_score_table() if table is None else table
    refs = table.set_index("game")
    rows = []
    selected = scalars[scalars["tag"] == metric]
    if selected.empty:
        tags = sorted(scalars["tag"].unique())
        raise ValueError(f"metric {metric!r} is logged by no run; tags present: {tags}")
    for keys, group in selected.groupby(CONFIG_COLUMNS, sort=True):
        config = dict(zip(CONFIG_COLUMNS, keys, strict=True))
        steps, values = step_curve(group["step"].to_numpy(), group["value"].to_numpy())
        final = final_score(values, last_k)
        auc = auc_score(steps, values)
        if config["game"]:
            ref = refs.loc[config["game"]]
            final_hns = human_normalized(final, ref["random"], ref["human"])
            auc_hns = human_normalized(auc, ref["random"], ref["human"])
            suite = ATARI_SUITE
        else:
            final_hns = auc_hns = math.nan
            suite = config["env_id"]
        rows.append(
            {
                **config,
                "suite": suite,
                "n_points": len(steps),
                "last_step": int(steps[-1]),
                "final": final,
                "auc": auc,
                "final_hns": final_hns,
                "auc_hns": auc_hns,
            }
        )
    scores = pd.DataFrame(rows)
    short = scores[scores["n_points"] < last_k]
    if len(short):
        warnings.warn(
            f"{len(short)} run(s) have fewer than --last-k={last_k} points of {metric!r} "
            f"(fewest: {short['n_points'].min()}); their final score averages all points",
            stacklevel=2,
        )
    return scores


def score_matrix(group: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    """Arrange one (suite, method, replay ratio) group's scores as rliable expects.

    Args:
        group: rows of `run_scores` for one group.
        column: the score column (``final``, ``auc``, ``final_hns``, ``auc_hns``).

    Returns:
        ``(matrix, tasks)``: matrix (num_runs, num_tasks) float64, runs of each task ordered by seed; tasks are the
        env ids, sorted. When tasks have different numbers of runs, every task keeps its first `num_runs` = the
        smallest count (stratified bootstrap resamples runs within each task, so rows need not share a seed), with a
        warning naming the dropped count.
    """
    tasks = sorted(group["env_id"].unique())
    columns = [group[group["env_id"] == t].sort_values("seed")[column].to_numpy(np.float64) for t in tasks]
    n_runs = min(len(c) for c in columns)
    dropped = sum(len(c) - n_runs for c in columns)
    if dropped:
        warnings.warn(
            f"tasks have unequal run counts ({[len(c) for c in columns]}); keeping {n_runs} per task, "
            f"dropping {dropped} run(s)",
            stacklevel=2,
        )
    return np.stack([c[:n_runs] for c in columns], axis=1), tasks


def rliable_estimates(
    matrix: np.ndarray, gap_threshold: float | None, reps: int, confidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """IQM, median, mean and optimality gap of a score matrix with stratified-bootstrap intervals, through rliable.

    Calls ``rliable.library.get_interval_estimates`` (percentile intervals, runs resampled within each task) with
    ``rliable.metrics.aggregate_iqm``, ``aggregate_median``, ``aggregate_mean`` and ``aggregate_optimality_gap``
    (threshold `gap_threshold`). The bootstrap draws come from NumPy's global generator seeded with `seed` for this
    call (rliable 1.2.0 ignores its `random_state` argument; the global state is restored afterwards), so every group's
    intervals are reproducible and independent of which other groups were aggregated.

    Args:
        matrix: (num_runs, num_tasks) float64 scores.
        gap_threshold: γ of the optimality gap, γ − mean(min(score, γ)); None leaves the gap NaN.
        reps: bootstrap replications (rliable's own default is 50 000).
        confidence: interval coverage in (0, 1).
        seed: seed of the bootstrap's RandomState.

    Returns:
        ``(point, interval)``: point (4,) and interval (2, 4) (lower row, upper row), in `STATISTICS` order.
    """
    from rliable import library as rly
    from rliable import metrics

    def statistics(scores: np.ndarray) -> np.ndarray:
        gap = math.nan if gap_threshold is None else metrics.aggregate_optimality_gap(scores, gap_threshold)
        return np.array(
            [metrics.aggregate_iqm(scores), metrics.aggregate_median(scores), metrics.aggregate_mean(scores), gap]
        )

    # rliable 1.2.0's StratifiedBootstrap.update_indices draws with the global np.random.choice and ignores
    # `random_state`, so the global generator is seeded here and restored afterwards.
    global_state = np.random.get_state()  # noqa: NPY002 (rliable draws from the legacy global generator)
    try:
        np.random.seed(seed)  # noqa: NPY002
        with warnings.catch_warnings():
            # arch deprecates the RandomState that rliable passes on; the draws do not use it (see above).
            warnings.simplefilter("ignore", FutureWarning)
            # An all-NaN gap row makes numpy warn about empty slices while taking percentiles.
            warnings.simplefilter("ignore", RuntimeWarning)
            point, interval = rly.get_interval_estimates(
                {"group": matrix},
                statistics,
                reps=reps,
                confidence_interval_size=confidence,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(global_state)  # noqa: NPY002
    return np.asarray(point["group"], dtype=np.float64), np.asarray(interval["group"], dtype=np.float64)


def aggregate_scores(
    scores: pd.DataFrame,
    reps: int = 2_000,
    confidence: float = 0.95,
    seed: int = 0,
    gap_threshold: float = 1.0,
    raw_gap_threshold: float | None = None,
) -> pd.DataFrame:
    """Aggregate per (suite, method, replay ratio) and score kind with rliable (see `rliable_estimates`).

    The ``atari-hns`` suite aggregates ``final_hns`` / ``auc_hns`` over games with gap threshold `gap_threshold`;
    every other suite aggregates the raw ``final`` / ``auc`` of its one env id with `raw_gap_threshold`.

    Returns:
        Long table: ``suite, method, replay_ratio, score, statistic, estimate, ci_low, ci_high, n_runs, n_tasks,
        confidence`` (``score`` in `SCORE_KINDS`, ``statistic`` in `STATISTICS`).
    """
    rows = []
    for (suite, method, replay_ratio), group in scores.groupby(["suite", "method", "replay_ratio"], sort=True):
        hns = suite == ATARI_SUITE
        for kind in SCORE_KINDS:
            matrix, tasks = score_matrix(group, f"{kind}_hns" if hns else kind)
            threshold = gap_threshold if hns else raw_gap_threshold
            point, interval = rliable_estimates(matrix, threshold, reps, confidence, seed)
            for i, statistic in enumerate(STATISTICS):
                rows.append(
                    {
                        "suite": suite,
                        "method": method,
                        "replay_ratio": replay_ratio,
                        "score": kind,
                        "statistic": statistic,
                        "estimate": point[i],
                        "ci_low": interval[0, i],
                        "ci_high": interval[1, i],
                        "n_runs": matrix.shape[0],
                        "n_tasks": len(tasks),
                        "confidence": confidence,
                    }
                )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------- summary
def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def markdown_summary(aggregates: pd.DataFrame, metric: str, last_k: int, reps: int) -> str:
    """A Markdown report: one table per suite and score kind, rows (method, replay ratio), one column per statistic
    as ``estimate [low, high]``."""
    lines = [
        "# Aggregate scores",
        "",
        f"Metric `{metric}`; final = mean of the last {last_k} points; AUC = trapezoid over env steps / step span.",
        f"Intervals: {int(round(100 * aggregates['confidence'].iloc[0]))}% stratified bootstrap (rliable, "
        f"percentile, {reps} reps). Atari: human-normalized score, references from the DQN Zoo table "
        "(google-deepmind/dqn_zoo@45061f4 dqn_zoo/atari_data.py).",
        "",
    ]
    order = {kind: i for i, kind in enumerate(SCORE_KINDS)}
    blocks = sorted(aggregates.groupby(["suite", "score"]), key=lambda item: (item[0][0], order.get(item[0][1], 99)))
    for (suite, kind), block in blocks:
        unit = "human-normalized score" if suite == ATARI_SUITE else "return"
        lines += [f"## {suite}: {kind} ({unit})", ""]
        header = ["method", "replay ratio", "runs × tasks", *STATISTICS]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for (method, rr), rows in block.groupby(["method", "replay_ratio"], sort=True):
            rows = rows.set_index("statistic")
            cells = [
                f"{_fmt(rows.loc[s, 'estimate'])} [{_fmt(rows.loc[s, 'ci_low'])}, {_fmt(rows.loc[s, 'ci_high'])}]"
                for s in STATISTICS
            ]
            shape = f"{int(rows['n_runs'].iloc[0])} × {int(rows['n_tasks'].iloc[0])}"
            lines.append("| " + " | ".join([str(method), f"{rr:g}", shape, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregate.py",
        description="Event files of a sweep -> tidy table, per-run scores, rliable aggregates, Markdown summary.",
    )
    parser.add_argument("roots", nargs="+", type=Path, help="sweep or run directories to search for event files")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: FIRST_ROOT/aggregate)")
    parser.add_argument("--metric", default="eval/episodic_return", help="scalar tag to score")
    parser.add_argument("--last-k", type=int, default=3, help="final score = mean of the last K points (default 3)")
    parser.add_argument("--reps", type=int, default=2_000, help="bootstrap replications (default 2000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval coverage in (0, 1), default 0.95")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--gap-threshold", type=float, default=1.0, help="optimality-gap threshold on HNS (1.0)")
    parser.add_argument(
        "--raw-gap-threshold", type=float, default=None, help="optimality-gap threshold on raw returns (none: no gap)"
    )
    parser.add_argument("--scores", type=Path, default=SCORES_CSV, help="Atari reference table (CSV)")
    return parser


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject bad flag values through ``parser.error`` (exit code 2) before any work."""
    for root in args.roots:
        if not root.is_dir():
            parser.error(f"argument roots: {str(root)!r} is not a directory")
    if args.last_k < 1:
        parser.error(f"argument --last-k: {args.last_k} is invalid; allowed: an integer >= 1")
    if args.reps < 1:
        parser.error(f"argument --reps: {args.reps} is invalid; allowed: an integer >= 1")
    if not 0.0 < args.confidence < 1.0:
        parser.error(f"argument --confidence: {args.confidence} is invalid; allowed: 0 < confidence < 1")
    for name in ("gap_threshold", "raw_gap_threshold"):
        value = getattr(args, name)
        if value is not None and not math.isfinite(value):
            parser.error(f"argument --{name.replace('_', '-')}: {value} is invalid; allowed: a finite number")
    if not args.scores.is_file():
        parser.error(f"argument --scores: {str(args.scores)!r} is not a file")


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, via argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(args, parser)
    out = args.out if args.out is not None else args.roots[0] / "aggregate"
    try:
        table = load_score_table(args.scores)
        scalars, runs, resets = load_runs(args.roots, table)
        scores = run_scores(scalars, args.metric, args.last_k, table)
    except ValueError as err:
        parser.error(str(err))
    aggregates = aggregate_scores(
        scores, args.reps, args.confidence, args.seed, args.gap_threshold, args.raw_gap_threshold
    )
    out.mkdir(parents=True, exist_ok=True)
    scalars.to_csv(out / "scalars.csv", index=False)
    written = ["scalars.csv"]
    if _has_pyarrow():
        scalars.to_parquet(out / "scalars.parquet", index=False)
        written.append("scalars.parquet")
    runs.to_csv(out / "runs.csv", index=False)
    resets.to_csv(out / "resets.csv", index=False)
    scores.to_csv(out / "scores.csv", index=False)
    aggregates.to_csv(out / "aggregates.csv", index=False)
    summary = markdown_summary(aggregates, args.metric, args.last_k, args.reps)
    (out / "summary.md").write_text(summary)
    written += ["runs.csv", "resets.csv", "scores.csv", "aggregates.csv", "summary.md"]
    print(f"{len(runs)} runs, {len(scalars)} scalar rows -> {out}: {', '.join(written)}")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
