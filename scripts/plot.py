"""Figures of a sweep from the tables that ``scripts/aggregate.py`` writes (matplotlib, Agg backend, PNG and SVG).

    python scripts/aggregate.py runs/rr-sweep                 # -> runs/rr-sweep/aggregate/
    python scripts/plot.py runs/rr-sweep/aggregate            # -> runs/rr-sweep/aggregate/plots/

Figures (one file per format each):
- ``curves_<env>``: learning curves of ``--metric`` per method, one panel per replay ratio; the line is the mean over
  seeds and the band either the 95% percentile-bootstrap interval of that mean (``--band ci95``, default; seeds
  resampled with replacement, ``--reps`` replications) or ± one standard error (``--band se``); the figure says which.
  Dashed vertical lines in the method's colour mark its reset events (env steps, from ``resets.jsonl``).
- ``replay_ratio``: the aggregate score (``--statistic``, default IQM, of ``--score``, default the final score) against
  the replay ratio on a log2 axis, one line per reset method, with rliable's stratified-bootstrap intervals as error
  bars (from ``aggregates.csv``), one panel per suite (``atari-hns`` or an env id). Points of different methods are
  nudged sideways by a few hundredths of an octave so their bars do not overlap.
- ``plasticity_<env>``: DfI, dormant ratio and srank (DESIGN 4) over env steps per method, rows = replay ratios,
  mean and band as for the learning curves, reset markers likewise. Tags are recognised by their last component
  (``dfi_mean`` or ``dfi_normalized_mean``, ``dormant_ratio`` or ``dormant``, ``srank``), so ``plasticity/srank`` (DQN)
  and ``plasticity/actor/srank``, ``plasticity/qf1/srank`` (SAC, one panel per network) are all drawn.

When the runs of a curve log at different steps (episode ends, not evaluation points), each run's per-step mean is
linearly interpolated onto ``--points`` evenly spaced steps over the range all of them cover.
Colours: the Okabe–Ito colour-blind-safe palette (Okabe & Ito 2008), a fixed colour per method.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
METHOD_COLOURS = {
    "none": OKABE_ITO["black"],
    "fire": OKABE_ITO["vermillion"],
    "sp": OKABE_ITO["blue"],
    "full": OKABE_ITO["bluish_green"],
    "pi": OKABE_ITO["reddish_purple"],
    "redo": OKABE_ITO["orange"],
}
SPARE_COLOURS = [OKABE_ITO[c] for c in ("sky_blue", "yellow")]
METHOD_NAMES = {
    "none": "no reset",
    "fire": "FIRE",
    "sp": "Shrink & Perturb",
    "full": "full reset",
    "pi": "plasticity injection",
    "redo": "ReDo",
}
# Plasticity panels, in this order, by the last component of the tag (``plasticity/<key>`` or, one per network,
# ``plasticity/<network>/<key>``): the contract's names and those of fire_rl.metrics.plasticity_metrics.
PLASTICITY_KEYS = {
    "dfi_mean": "DfI (layer mean)",
    "dfi_normalized_mean": "DfI / min(d_out, d_in) (layer mean)",
    "dormant_ratio": "dormant ratio (τ = 0.025)",
    "dormant": "dormant ratio (τ = 0.025)",
    "srank": "srank (δ = 0.01)",
}
TAG_LABELS = {
    "eval/episodic_return": "evaluation return",
    "charts/episodic_return": "training episode return",
}
BANDS = ("ci95", "se")
BAND_TEXT = {
    "ci95": "band: 95% percentile-bootstrap CI of the mean over seeds",
    "se": "band: mean ± 1 standard error over seeds",
}
STATISTICS = ("iqm", "median", "mean", "optimality_gap")
STAT_LABELS = {"iqm": "IQM", "median": "median", "mean": "mean", "optimality_gap": "optimality gap"}
DODGE_OCTAVES = 0.04
STEP_LABEL = "env steps"
RR_LABEL = "replay ratio (gradient updates per env step)"


def plasticity_tags(tags: Sequence[str]) -> list[str]:
    """The tags among `tags` that the plasticity figure draws, ordered by `PLASTICITY_KEYS` then by name."""
    order = {key: i for i, key in enumerate(PLASTICITY_KEYS)}
    found = [t for t in set(tags) if t.startswith("plasticity/") and t.rsplit("/", 1)[-1] in order]
    return sorted(found, key=lambda t: (order[t.rsplit("/", 1)[-1]], t))


def tag_label(tag: str) -> str:
    """Axis label of a tag: ``qf1: srank (δ = 0.01)`` for ``plasticity/qf1/srank``; the tag itself if unknown."""
    if tag in TAG_LABELS:
        return TAG_LABELS[tag]
    parts = tag.split("/")
    if parts[0] == "plasticity" and parts[-1] in PLASTICITY_KEYS:
        network = "/".join(parts[1:-1])
        return f"{network}: {PLASTICITY_KEYS[parts[-1]]}" if network else PLASTICITY_KEYS[parts[-1]]
    return tag


def method_colour(method: str, methods: Sequence[str]) -> str:
    """The fixed Okabe–Ito colour of a reset method; methods outside `METHOD_COLOURS` take the spare colours in the
    order they appear in `methods`."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    others = [m for m in methods if m not in METHOD_COLOURS]
    return SPARE_COLOURS[others.index(method) % len(SPARE_COLOURS)] if method in others else "#777777"


def method_order(methods: Sequence[str]) -> list[str]:
    """Known methods in the order none, fire, sp, full, pi, then the others alphabetically."""
    known = [m for m in METHOD_COLOURS if m in methods]
    return known + sorted(set(methods) - set(known))


def env_slug(env_id: str) -> str:
    """A file-name-safe form of an env id (``ALE/Breakout-v5`` -> ``ALE-Breakout-v5``)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in env_id)


# ---------------------------------------------------------------------------------------------------- curves, bands
def per_step_mean(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M,) unique steps ascending and (M,) float64 mean of the values logged at each."""
    unique, inverse = np.unique(np.asarray(steps), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64), minlength=len(unique))
    return unique, sums / np.bincount(inverse, minlength=len(unique))


def align_runs(runs: pd.DataFrame, points: int) -> tuple[np.ndarray, np.ndarray]:
    """Put the runs of one curve on common steps.

    Args:
        runs: rows of the tidy table (columns ``run``, ``step``, ``value``) for one tag and one
            (env, method, replay ratio) group.
        points: number of grid steps when the runs' steps differ.

    Returns:
        ``(steps, matrix)``: steps (T,) float64 env steps and matrix (num_runs, T) float64, runs in sorted order.
        When every run logged the same steps those are used as they are; otherwise each run's per-step mean is
        linearly interpolated on `points` evenly spaced steps between the largest first step and the smallest last
        step. Runs with fewer than two steps are left out in that case.

    Raises:
        ValueError: `points` < 2, or the runs share no step range.
    """
    if points < 2:
        raise ValueError(f"points={points!r}: must be an integer >= 2")
    curves = [per_step_mean(g["step"].to_numpy(), g["value"].to_numpy()) for _, g in runs.groupby("run", sort=True)]
    if all(np.array_equal(curves[0][0], s) for s, _ in curves):
        return curves[0][0].astype(np.float64), np.stack([v for _, v in curves])
    curves = [(s, v) for s, v in curves if len(s) >= 2]
    start = max(s[0] for s, _ in curves) if curves else 0
    stop = min(s[-1] for s, _ in curves) if curves else 0
    if not curves or stop <= start:
        raise ValueError("the runs share no step range to align on")
    grid = np.linspace(start, stop, points)
    return grid, np.stack([np.interp(grid, s, v) for s, v in curves])


def mean_and_band(
    matrix: np.ndarray, band: str, reps: int = 1_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs and its band.

    Args:
        matrix: (num_runs, T) values.
        band: ``"ci95"``: the 2.5th and 97.5th percentiles of the mean over `reps` bootstrap resamples of the runs
            (with replacement, ``np.random.default_rng(seed)``); ``"se"``: mean ± std(ddof=1) / sqrt(num_runs).
        reps: bootstrap replications for ``"ci95"``.
        seed: bootstrap seed.

    Returns:
        ``(mean, low, high)``, each (T,) float64. With a single run the band has zero width.

    Raises:
        ValueError: unknown `band`, `reps` < 1, or an empty matrix.
    """
    if band not in BANDS:
        raise ValueError(f"band={band!r}: allowed {list(BANDS)}")
    if reps < 1:
        raise ValueError(f"reps={reps!r}: must be an integer >= 1")
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"matrix of shape {matrix.shape}: need (num_runs >= 1, T)")
    n = matrix.shape[0]
    mean = matrix.mean(axis=0)
    if n == 1:
        return mean, mean.copy(), mean.copy()
    if band == "se":
        se = matrix.std(axis=0, ddof=1) / math.sqrt(n)
        return mean, mean - se, mean + se
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(reps, n))
    boot = matrix[idx].mean(axis=1)  # (reps, T)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return mean, low, high


def reset_steps(resets: pd.DataFrame, env_id: str, replay_ratio: float, method: str) -> np.ndarray:
    """Sorted unique env steps of the reset events of one (env, replay ratio, method) group, over all its seeds."""
    if resets is None or resets.empty:
        return np.array([], dtype=np.int64)
    sel = resets[(resets["env_id"] == env_id) & (resets["replay_ratio"] == replay_ratio) & (resets["method"] == method)]
    return np.unique(sel["global_step"].to_numpy(np.int64))


def _draw_group(ax, runs, resets, env_id, rr, method, methods, band, reps, seed, points) -> None:
    colour = method_colour(method, methods)
    try:
        steps, matrix = align_runs(runs, points)
    except ValueError as err:
        warnings.warn(f"{env_id}, replay ratio {rr:g}, {method}: not drawn ({err})", stacklevel=2)
        return
    mean, low, high = mean_and_band(matrix, band, reps, seed)
    label = f"{METHOD_NAMES.get(method, method)} (n={matrix.shape[0]})"
    ax.plot(steps, mean, color=colour, lw=1.6, label=label, gid=f"mean:{method}")
    ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0, gid=f"band:{method}")
    for step in reset_steps(resets, env_id, rr, method):
        ax.axvline(step, color=colour, ls="--", lw=1.0, alpha=0.8, gid=f"reset:{method}")


def _reset_handle() -> Line2D:
    return Line2D([], [], color="#777777", ls="--", lw=1.0, label="reset event (method colour)")


def learning_curve_figure(
    scalars: pd.DataFrame,
    resets: pd.DataFrame,
    env_id: str,
    metric: str = "eval/episodic_return",
    band: str = "ci95",
    reps: int = 1_000,
    seed: int = 0,
    points: int = 200,
) -> Figure:
    """Learning curves of one env: a panel per replay ratio, a line (mean over seeds) and band per method, dashed
    vertical lines at reset events.

    Args:
        scalars: the tidy table of ``scalars.csv``.
        resets: the table of ``resets.csv`` (may be empty).
        env_id: the env to draw.
        metric: the tag on the y axis.
        band, reps, seed: see `mean_and_band`. points: see `align_runs`.

    Returns:
        The figure (axes in ascending replay ratio; artists carry ``gid`` ``mean:<method>``, ``band:<method>``,
        ``reset:<method>``).

    Raises:
        ValueError: `env_id` has no rows of `metric`.
    """
    data = scalars[(scalars["env_id"] == env_id) & (scalars["tag"] == metric)]
    if data.empty:
        raise ValueError(f"env_id={env_id!r} has no {metric!r} rows")
    rrs = sorted(data["replay_ratio"].unique())
    methods = method_order(list(data["method"].unique()))
    fig, axes = plt.subplots(1, len(rrs), figsize=(4.6 * len(rrs), 3.6), squeeze=False, sharey=True)
    for ax, rr in zip(axes[0], rrs, strict=True):
        for method in methods:
            runs = data[(data["replay_ratio"] == rr) & (data["method"] == method)]
            if not runs.empty:
                _draw_group(ax, runs, resets, env_id, rr, method, methods, band, reps, seed, points)
        ax.set_title(f"replay ratio {rr:g}")
        ax.set_xlabel(STEP_LABEL)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(tag_label(metric))
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles=[*handles, _reset_handle()], fontsize=8, loc="best")
    fig.suptitle(f"{env_id}: {tag_label(metric)}; {BAND_TEXT[band]}", fontsize=10)
    fig.tight_layout()
    return fig


def plasticity_figure(
    scalars: pd.DataFrame,
    resets: pd.DataFrame,
    env_id: str,
    tags: Sequence[str] | None = None,
    band: str = "ci95",
    reps: int = 1_000,
    seed: int = 0,
    points: int = 200,
) -> Figure:
    """Plasticity metrics of one env over env steps: rows = replay ratios, columns = the `tags` the runs logged
    (None: every tag `plasticity_tags` recognises, i.e. DfI, dormant ratio and srank, per network when the agent
    logs several); lines, bands and reset markers as in `learning_curve_figure`.

    Raises:
        ValueError: `env_id` logged none of `tags`.
    """
    env_rows = scalars[scalars["env_id"] == env_id]
    tags = plasticity_tags(list(env_rows["tag"].unique())) if tags is None else list(tags)
    data = env_rows[env_rows["tag"].isin(tags)]
    present = [t for t in tags if t in set(data["tag"])]
    if not present:
        raise ValueError(f"env_id={env_id!r} logged none of {list(tags)}")
    rrs = sorted(data["replay_ratio"].unique())
    methods = method_order(list(data["method"].unique()))
    fig, axes = plt.subplots(
        len(rrs), len(present), figsize=(4.2 * len(present), 3.0 * len(rrs)), squeeze=False, sharex=True
    )
    for row, rr in enumerate(rrs):
        for col, tag in enumerate(present):
            ax = axes[row][col]
            for method in methods:
                runs = data[(data["replay_ratio"] == rr) & (data["method"] == method) & (data["tag"] == tag)]
                if not runs.empty:
                    _draw_group(ax, runs, resets, env_id, rr, method, methods, band, reps, seed, points)
            ax.set_title(f"replay ratio {rr:g}", fontsize=9)
            ax.set_ylabel(tag_label(tag))
            ax.grid(alpha=0.3)
            if row == len(rrs) - 1:
                ax.set_xlabel(STEP_LABEL)
    handles, _ = axes[0][0].get_legend_handles_labels()
    axes[0][-1].legend(handles=[*handles, _reset_handle()], fontsize=8, loc="best")
    fig.suptitle(f"{env_id}: plasticity over training; {BAND_TEXT[band]}", fontsize=10)
    fig.tight_layout()
    return fig


def replay_ratio_figure(aggregates: pd.DataFrame, score: str = "final", statistic: str = "iqm") -> Figure:
    """Aggregate score against replay ratio (log2 x axis), one line per reset method, rliable intervals as error bars,
    one panel per suite.

    Args:
        aggregates: the table of ``aggregates.csv``.
        score: ``"final"`` or ``"auc"``.
        statistic: one of ``iqm``, ``median``, ``mean``, ``optimality_gap``.

    Returns:
        The figure; each method's line has ``gid`` ``rr:<method>``, its x data the replay ratios times
        2**(k · 0.04) for the method's dodge index k.

    Raises:
        ValueError: no rows for (`score`, `statistic`).
    """
    sel = aggregates[(aggregates["score"] == score) & (aggregates["statistic"] == statistic)]
    if sel.empty:
        raise ValueError(f"aggregates have no rows for score={score!r}, statistic={statistic!r}")
    suites = sorted(sel["suite"].unique())
    fig, axes = plt.subplots(1, len(suites), figsize=(5.0 * len(suites), 3.8), squeeze=False)
    for ax, suite in zip(axes[0], suites, strict=True):
        block = sel[sel["suite"] == suite]
        methods = method_order(list(block["method"].unique()))
        for k, method in enumerate(methods):
            rows = block[block["method"] == method].sort_values("replay_ratio")
            rr = rows["replay_ratio"].to_numpy(np.float64)
            x = rr * 2.0 ** (DODGE_OCTAVES * (k - (len(methods) - 1) / 2))
            y = rows["estimate"].to_numpy(np.float64)
            yerr = np.stack([y - rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy() - y])
            colour = method_colour(method, methods)
            container = ax.errorbar(
                x,
                y,
                yerr=yerr,
                color=colour,
                marker="o",
                ms=4,
                capsize=3,
                lw=1.4,
                label=METHOD_NAMES.get(method, method),
            )
            container.lines[0].set_gid(f"rr:{method}")
        rrs = sorted(block["replay_ratio"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(rrs)
        ax.set_xticklabels([f"{r:g}" for r in rrs])
        ax.minorticks_off()
        ax.set_xlabel(RR_LABEL)
        unit = "human-normalized score" if suite == "atari-hns" else "return"
        ax.set_ylabel(f"{STAT_LABELS[statistic]} of {score} {unit}")
        level = float(block["confidence"].iloc[0]) if "confidence" in block else 0.95
        n_runs, n_tasks = int(block["n_runs"].max()), int(block["n_tasks"].max())
        ax.set_title(f"{suite} ({n_runs} runs × {n_tasks} tasks; {level:.0%} stratified bootstrap CI)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out: Path, stem: str, formats: Sequence[str], dpi: int = 150) -> list[Path]:
    """Write `fig` as ``out/<stem>.<format>`` for each format and close it; returns the paths. SVGs keep their text
    as text (editable, searchable), not as glyph outlines."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        with plt.rc_context({"svg.fonttype": "none"}):
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------------------------------------------- CLI
FORMATS = ("png", "svg", "pdf")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot.py", description="Learning curves, replay-ratio figure and plasticity figures of a sweep."
    )
    parser.add_argument("agg_dir", type=Path, help="the output directory of scripts/aggregate.py")
    parser.add_argument("--out", type=Path, default=None, help="figure directory (default: AGG_DIR/plots)")
    parser.add_argument("--metric", default="eval/episodic_return", help="tag of the learning curves")
    parser.add_argument("--band", choices=BANDS, default="ci95", help="ci95: bootstrap CI of the mean; se: ± 1 SE")
    parser.add_argument("--reps", type=int, default=1_000, help="bootstrap replications of the curve bands")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--points", type=int, default=200, help="grid points when runs log at different steps")
    parser.add_argument("--score", choices=("final", "auc"), default="final", help="score of the replay-ratio figure")
    parser.add_argument("--statistic", choices=STATISTICS, default="iqm", help="statistic of the replay-ratio figure")
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=["png", "svg"], help="file formats")
    parser.add_argument("--dpi", type=int, default=150, help="PNG resolution")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, via argparse)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("reps", "dpi"):
        if getattr(args, name) < 1:
            parser.error(f"argument --{name}: {getattr(args, name)} is invalid; allowed: an integer >= 1")
    if args.points < 2:
        parser.error(f"argument --points: {args.points} is invalid; allowed: an integer >= 2")
    if not args.agg_dir.is_dir():
        parser.error(f"argument agg_dir: {str(args.agg_dir)!r} is not a directory")
    missing = [n for n in ("scalars.csv", "aggregates.csv") if not (args.agg_dir / n).is_file()]
    if missing:
        parser.error(f"argument agg_dir: {str(args.agg_dir)!r} lacks {missing}; run scripts/aggregate.py first")
    scalars = pd.read_csv(args.agg_dir / "scalars.csv")
    aggregates = pd.read_csv(args.agg_dir / "aggregates.csv")
    resets_csv = args.agg_dir / "resets.csv"
    resets = pd.read_csv(resets_csv) if resets_csv.is_file() and resets_csv.stat().st_size > 1 else pd.DataFrame()
    if args.metric not in set(scalars["tag"]):
        parser.error(f"argument --metric: {args.metric!r} is not in the table; tags: {sorted(scalars['tag'].unique())}")
    out = args.out if args.out is not None else args.agg_dir / "plots"

    written: list[Path] = []
    for env_id in sorted(scalars[scalars["tag"] == args.metric]["env_id"].unique()):
        fig = learning_curve_figure(scalars, resets, env_id, args.metric, args.band, args.reps, args.seed, args.points)
        written += save_figure(fig, out, f"curves_{env_slug(env_id)}", args.formats, args.dpi)
    fig = replay_ratio_figure(aggregates, args.score, args.statistic)
    written += save_figure(fig, out, "replay_ratio", args.formats, args.dpi)
    known = plasticity_tags(list(scalars["tag"].unique()))
    plasticity_envs = sorted(scalars[scalars["tag"].isin(known)]["env_id"].unique())
    for env_id in plasticity_envs:
        fig = plasticity_figure(scalars, resets, env_id, None, args.band, args.reps, args.seed, args.points)
        written += save_figure(fig, out, f"plasticity_{env_slug(env_id)}", args.formats, args.dpi)
    if not plasticity_envs:
        print(f"no run logged plasticity/{{{', '.join(PLASTICITY_KEYS)}}}: no plasticity figure")
    print(f"{len(written)} files -> {out}")
    for path in written:
        print(f"  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
