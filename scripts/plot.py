"""Figures of a sweep from the tables ``scripts/aggregate.py`` writes, drawn by ``rliable.plot_utils`` (PNG and SVG).

    python scripts/aggregate.py runs/rr-sweep                 # -> runs/rr-sweep/aggregate/
    python scripts/plot.py runs/rr-sweep/aggregate            # -> runs/rr-sweep/aggregate/plots/

- ``curves_<env>``: learning curves of ``--metric`` (``curves.csv``), a panel per replay ratio: per method the IQM over
  seeds and its stratified-bootstrap band (``plot_sample_efficiency_curve``), dashed vertical lines in the method's
  colour at its reset events (``resets.csv``, env steps).
- ``plasticity_<env>``: the same for the plasticity tags (DfI, dormant ratio, srank; one panel per network for SAC),
  rows = replay ratios.
- ``branches_<env>``: with branches (``--branch-from``; ``branch_step`` > 0 in ``curves.csv``), their learning curves
  aligned at the branch point, a panel per (replay ratio, branch step): x = env steps since the branch point, the
  pretraining's last ``--pre-window`` env steps (grey) before 0.
- ``replay_ratio``: ``--statistic`` of ``--score`` (``aggregates.csv``) against the replay ratio on a log2 axis, per
  method with its interval as a band (``plot_sample_efficiency_curve`` with replay ratios as x), a panel per suite;
  methods are nudged sideways by a few hundredths of an octave.
- ``intervals_<suite>``: IQM, median, mean and optimality gap of ``--score`` per (method, replay ratio) with their
  intervals (``plot_interval_estimates``; Agarwal et al. 2021, Fig. 1).
- ``profiles_<suite>``: performance profiles of ``--score`` (``profiles.csv``), a panel per replay ratio
  (``plot_performance_profiles``; Agarwal et al. 2021, Sec. 4.2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from rliable import plot_utils
except ImportError as err:
    sys.exit(f"error: scripts/plot.py needs {err.name}: pip install -e '.[analysis]'")

# The Okabe–Ito colour-blind-safe palette (Okabe & Ito 2008): a fixed colour per method, two spares for the others.
METHOD_COLOURS = {"none": "#000000", "fire": "#D55E00", "sp": "#0072B2", "full": "#009E73", "pi": "#CC79A7",
                  "redo": "#E69F00"}  # fmt: skip
SPARE_COLOURS = ["#56B4E9", "#F0E442"]
PRETRAINING, PRETRAINING_COLOUR = "pretraining", "#999999"  # the run branches start from (scripts/aggregate.py)
METHOD_NAMES = {"none": "no reset", "fire": "FIRE", "sp": "Shrink & Perturb", "full": "full reset",
                "pi": "plasticity injection", "redo": "ReDo"}  # fmt: skip
# Plasticity panels in this order, by the tag's last component (scripts/aggregate.py PLASTICITY_KEYS).
PLASTICITY_LABELS = {"dfi_mean": "DfI (layer mean)", "dfi_normalized_mean": "DfI / min(d_out, d_in) (layer mean)",
                     "dormant_ratio": "dormant ratio (τ = 0.025)", "dormant": "dormant ratio (τ = 0.025)",
                     "srank": "srank (δ = 0.01)"}  # fmt: skip
TAG_LABELS = {"eval/episodic_return": "evaluation return", "charts/episodic_return": "training episode return"}
STATISTICS = {"iqm": "IQM", "median": "median", "mean": "mean", "optimality_gap": "optimality gap"}
DODGE_OCTAVES = 0.04
SIZES = {"labelsize": "medium", "ticklabelsize": "small"}
FORMATS = ("png", "svg", "pdf")


def tag_label(tag: str) -> str:
    """Axis label of a tag: ``qf1: srank (δ = 0.01)`` for ``plasticity/qf1/srank``; the tag itself if unknown."""
    parts = tag.split("/")
    if parts[0] == "plasticity" and parts[-1] in PLASTICITY_LABELS:
        network = "/".join(parts[1:-1])
        return f"{network}: {PLASTICITY_LABELS[parts[-1]]}" if network else PLASTICITY_LABELS[parts[-1]]
    return TAG_LABELS.get(tag, tag)


def plasticity_tags(tags: Sequence[str]) -> list[str]:
    """The plasticity tags among `tags`, ordered by `PLASTICITY_LABELS`, then by name."""
    order = {key: i for i, key in enumerate(PLASTICITY_LABELS)}
    found = {t for t in tags if t.startswith("plasticity/") and t.rsplit("/", 1)[-1] in order}
    return sorted(found, key=lambda t: (order[t.rsplit("/", 1)[-1]], t))


def method_order(methods: Sequence[str]) -> list[str]:
    """Known methods in the order none, fire, sp, full, pi, redo, then the others alphabetically."""
    return [m for m in METHOD_COLOURS if m in methods] + sorted(set(methods) - set(METHOD_COLOURS))


def method_colour(method: str, methods: Sequence[str]) -> str:
    """The fixed colour of a reset method, grey for a pretraining; others take the spare colours in their
    `method_order`."""
    if method == PRETRAINING:
        return PRETRAINING_COLOUR
    others = [m for m in method_order(methods) if m not in METHOD_COLOURS and m != PRETRAINING]
    return METHOD_COLOURS.get(method) or SPARE_COLOURS[others.index(method) % len(SPARE_COLOURS)]


def unit(suite: str) -> str:
    return "human-normalized score" if suite == "atari-hns" else "return"


def draw_band(ax, x, rows: pd.DataFrame, label: str, colour: str, **kwargs) -> None:
    """`rows`' ``estimate`` against `x` and its ``ci_low``..``ci_high`` band (``plot_sample_efficiency_curve``)."""
    estimates, intervals = {label: rows["estimate"].to_numpy()}, {label: rows[["ci_low", "ci_high"]].to_numpy().T}
    plot_utils.plot_sample_efficiency_curve(x, estimates, intervals, colors={label: colour}, ax=ax, **SIZES, **kwargs)


def draw_curves(ax, rows: pd.DataFrame, resets: pd.DataFrame, methods: Sequence[str], ylabel: str, offset: int = 0,
                xlabel: str = "env steps") -> None:  # fmt: skip
    """One panel: per method in `rows` (``curves.csv`` rows of one env, replay ratio and tag) its IQM curve and band,
    labelled ``<method name> (n=<runs>)``, and dashed lines at its reset steps; x = env step − `offset`."""
    for method in method_order(list(rows["method"].unique())):
        curve, colour = rows[rows["method"] == method], method_colour(method, methods)
        label = f"{METHOD_NAMES.get(method, method)} (n={int(curve['n_runs'].iloc[0])})"
        draw_band(ax, curve["step"].to_numpy() - offset, curve, label, colour, marker="o" if len(curve) == 1 else "",
                  linewidth=1.6, xlabel=xlabel, ylabel=ylabel)  # fmt: skip
        for step in np.unique(resets.loc[resets["method"] == method, "global_step"]) if len(resets) else []:
            ax.axvline(step - offset, color=colour, ls="--", lw=1.0, alpha=0.8, gid=f"reset:{method}")


def legend(ax, with_resets: bool = True) -> None:
    handles, _ = ax.get_legend_handles_labels()
    reset = Line2D([], [], color="#777777", ls="--", lw=1.0, label="reset event (method colour)")
    ax.legend(handles=[*handles, reset] if with_resets else handles, fontsize=8, loc="best")


def curve_figure(curves: pd.DataFrame, resets: pd.DataFrame, env_id: str, tags: Sequence[str]) -> Figure:
    """Rows = replay ratios, columns = `tags` (one tag: a row of replay ratios): `draw_curves` of one env.

    Raises:
        ValueError: `env_id` has no curve of any of `tags`.
    """
    data = curves[(curves["env_id"] == env_id) & curves["tag"].isin(tags)]
    tags = [t for t in tags if t in set(data["tag"])]
    if not tags:
        raise ValueError(f"env_id={env_id!r} has no curve of {list(tags)}")
    rrs, methods = sorted(data["replay_ratio"].unique()), list(data["method"].unique())
    shape = (len(rrs), len(tags)) if len(tags) > 1 else (1, len(rrs))  # one tag: replay ratios side by side
    fig, axes = plt.subplots(*shape, figsize=(4.4 * shape[1], 3.4 * shape[0]), squeeze=False)
    if len(resets):
        resets = resets[resets["env_id"] == env_id]
    for ax, (rr, tag) in zip(axes.flat, [(rr, tag) for rr in rrs for tag in tags]):
        rows = data[(data["replay_ratio"] == rr) & (data["tag"] == tag)]
        draw_curves(ax, rows, resets[resets["replay_ratio"] == rr] if len(resets) else resets, methods, tag_label(tag))
        ax.set_title(f"replay ratio {rr:g}", fontsize=9)
    legend(axes[0][-1])
    fig.suptitle(f"{env_id}: IQM over seeds, 95% stratified-bootstrap band (rliable)", fontsize=10)
    fig.tight_layout()
    return fig


def branch_figure(curves: pd.DataFrame, resets: pd.DataFrame, env_id: str, tag: str, pre_window: int) -> Figure:
    """`draw_curves` of the branches of one env (``branch_step`` > 0) against env steps since their branch point, a
    panel per (replay ratio, branch step), the pretraining clipped to its last `pre_window` env steps, a dotted line
    at 0.

    Raises:
        ValueError: `env_id` has no branch curve of `tag`.
    """
    data = curves[(curves["env_id"] == env_id) & (curves["tag"] == tag) & (curves["branch_step"] > 0)]
    if data.empty:
        raise ValueError(f"env_id={env_id!r} has no branch curve of {tag!r}")
    panels, methods = sorted(set(zip(data["replay_ratio"], data["branch_step"]))), list(data["method"].unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (rr, step) in zip(axes[0], panels):
        rows = data[(data["replay_ratio"] == rr) & (data["branch_step"] == step) & (data["step"] >= step - pre_window)]
        events = resets.query("env_id == @env_id & replay_ratio == @rr & branch_step == @step") if len(resets) else []
        draw_curves(ax, rows, events, methods, tag_label(tag), offset=step, xlabel="env steps since the branch point")
        ax.axvline(0, color="#777777", ls=":", lw=1.0, gid="branch")
        ax.set_title(f"replay ratio {rr:g}, branch at env step {step:,}", fontsize=9)
    legend(axes[0][-1])
    fig.suptitle(f"{env_id}: branches, IQM over seeds, 95% stratified-bootstrap band (rliable)", fontsize=10)
    fig.tight_layout()
    return fig


def replay_ratio_figure(aggregates: pd.DataFrame, score: str = "final", statistic: str = "iqm") -> Figure:
    """`statistic` of `score` against the replay ratio (log2 x axis), a line and interval band per method (x nudged by
    2**(k · 0.04) for the method's index k around the middle), a panel per suite.

    Raises:
        ValueError: no rows for (`score`, `statistic`).
    """
    sel = aggregates[(aggregates["score"] == score) & (aggregates["statistic"] == statistic)]
    if sel.empty:
        raise ValueError(f"aggregates have no rows for score={score!r}, statistic={statistic!r}")
    suites = sorted(sel["suite"].unique())
    fig, axes = plt.subplots(1, len(suites), figsize=(5.0 * len(suites), 3.8), squeeze=False)
    for ax, suite in zip(axes[0], suites):
        block = sel[sel["suite"] == suite]
        methods = method_order(list(block["method"].unique()))
        for k, method in enumerate(methods):
            rows = block[block["method"] == method].sort_values("replay_ratio")
            x = rows["replay_ratio"].to_numpy() * 2.0 ** (DODGE_OCTAVES * (k - (len(methods) - 1) / 2))
            draw_band(ax, x, rows, METHOD_NAMES.get(method, method), method_colour(method, methods), marker="o",
                      linewidth=1.4, xlabel="replay ratio (gradient updates per env step)",
                      ylabel=f"{STATISTICS[statistic]} of {score} {unit(suite)}")  # fmt: skip
        rrs = sorted(block["replay_ratio"].unique())
        ax.set_xscale("log", base=2)
        ax.set_xticks(rrs, [f"{r:g}" for r in rrs])
        ax.minorticks_off()
        shape = f"{int(block['n_runs'].max())} runs × {int(block['n_tasks'].max())} tasks"
        ax.set_title(f"{suite} ({shape}; {block['confidence'].iloc[0]:.0%} stratified bootstrap)", fontsize=9)
        legend(ax, with_resets=False)
    fig.tight_layout()
    return fig


def interval_figure(aggregates: pd.DataFrame, suite: str, score: str = "final") -> Figure:
    """The four statistics of `score` in `suite`, a bar (interval) and tick (estimate) per (method, replay ratio)."""
    sel = aggregates[(aggregates["suite"] == suite) & (aggregates["score"] == score)]
    methods = list(sel["method"].unique())
    points, intervals, colours = {}, {}, {}
    for (method, rr), rows in sorted(
        sel.groupby(["method", "replay_ratio"]), key=lambda g: (method_order(methods).index(g[0][0]), g[0][1])
    ):
        rows = rows.set_index("statistic").loc[list(STATISTICS)]
        label = f"{METHOD_NAMES.get(method, method)}, rr {rr:g}"
        points[label], intervals[label] = rows["estimate"].to_numpy(), rows[["ci_low", "ci_high"]].to_numpy().T
        colours[label] = method_colour(method, methods)
    height = 0.5 * len(points)  # rliable's figure: row_height per (method, replay ratio), its x label below that
    fig, _ = plot_utils.plot_interval_estimates(points, intervals, list(STATISTICS.values()), colors=colours,
                                                xlabel=f"{score} {unit(suite)} ({suite})", subfigure_width=3.4,
                                                row_height=0.5, xlabel_y_coordinate=-0.7 / height)  # fmt: skip
    return fig


def profile_figure(profiles: pd.DataFrame, suite: str, score: str = "final") -> Figure:
    """Performance profiles of `score` in `suite`, a panel per replay ratio, a line and band per method."""
    sel = profiles[(profiles["suite"] == suite) & (profiles["score"] == score)]
    rrs, methods = sorted(sel["replay_ratio"].unique()), list(sel["method"].unique())
    fig, axes = plt.subplots(1, len(rrs), figsize=(4.6 * len(rrs), 3.6), squeeze=False)
    for ax, rr in zip(axes[0], rrs):
        rows = {METHOD_NAMES.get(m, m): sel[(sel["replay_ratio"] == rr) & (sel["method"] == m)]
                for m in method_order(methods)}  # fmt: skip
        plot_utils.plot_performance_profiles(
            {k: r["fraction"].to_numpy() for k, r in rows.items()},
            next(iter(rows.values()))["tau"].to_numpy(),
            {k: r[["ci_low", "ci_high"]].to_numpy().T for k, r in rows.items()},
            ax=ax, colors={METHOD_NAMES.get(m, m): method_colour(m, methods) for m in methods},
            xlabel=f"{score} {unit(suite)} (τ)", ylabel="fraction of runs with score > τ", **SIZES,
        )  # fmt: skip
        ax.set_title(f"{suite}, replay ratio {rr:g}", fontsize=9)
        legend(ax, with_resets=False)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, out: Path, stem: str, formats: Sequence[str], dpi: int = 150) -> list[Path]:
    """Write `fig` as ``out/<stem>.<format>`` for each format (SVG text kept as text) and close it."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{fmt}" for fmt in formats]
    with plt.rc_context({"svg.fonttype": "none"}):
        for path in paths:
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 for bad input, via argparse)."""
    parser = argparse.ArgumentParser(prog="plot.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("agg_dir", type=Path, help="the output directory of scripts/aggregate.py")
    parser.add_argument("--out", type=Path, default=None, help="figure directory (default: AGG_DIR/plots)")
    parser.add_argument(
        "--metric",
        default="eval/episodic_return",
        help="tag of the learning curves (default: %(default)s, logged only with the agents' --eval-every > 0)",
    )
    parser.add_argument(
        "--score",
        choices=("final", "auc"),
        default="final",
        help="score of the aggregate figures (default: %(default)s)",
    )
    parser.add_argument(
        "--statistic",
        choices=list(STATISTICS),
        default="iqm",
        help="statistic of the replay-ratio figure (default: %(default)s)",
    )
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=["png", "svg"], help="file formats (default: png svg)"
    )
    parser.add_argument("--dpi", type=int, default=150, help="PNG resolution (default: %(default)s)")
    parser.add_argument(
        "--pre-window", type=int, default=10_000, help="branches: env steps of pretraining shown (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    for name in ("dpi", "pre_window"):
        if (value := getattr(args, name)) < 1:
            parser.error(f"argument --{name.replace('_', '-')}: {value} is invalid; allowed: an integer >= 1")
    paths = {n: args.agg_dir / f"{n}.csv" for n in ("curves", "aggregates", "profiles", "resets")}
    if missing := [p.name for p in paths.values() if not p.is_file()]:
        parser.error(f"argument agg_dir: {str(args.agg_dir)!r} lacks {missing}; run scripts/aggregate.py first")
    tables = {n: pd.read_csv(p) if p.stat().st_size > 1 else pd.DataFrame() for n, p in paths.items()}
    curves, resets, aggregates = tables["curves"], tables["resets"], tables["aggregates"]
    if args.metric not in set(curves["tag"]):
        parser.error(f"argument --metric: {args.metric!r} has no curve; tags: {sorted(curves['tag'].unique())}")
    out, written = args.out if args.out is not None else args.agg_dir / "plots", []

    def save(fig: Figure, stem: str) -> None:
        written.extend(save_figure(fig, out, "".join(c if c.isalnum() or c in "._-" else "-" for c in stem),
                                   args.formats, args.dpi))  # fmt: skip

    for env_id in sorted(curves.loc[curves["tag"] == args.metric, "env_id"].unique()):
        save(curve_figure(curves, resets, env_id, [args.metric]), f"curves_{env_id}")
    for env_id in sorted(curves.loc[(curves["tag"] == args.metric) & (curves["branch_step"] > 0), "env_id"].unique()):
        save(branch_figure(curves, resets, env_id, args.metric, args.pre_window), f"branches_{env_id}")
    plasticity = plasticity_tags(curves["tag"].unique())
    for env_id in sorted(curves.loc[curves["tag"].isin(plasticity), "env_id"].unique()):
        save(curve_figure(curves, resets, env_id, plasticity), f"plasticity_{env_id}")
    save(replay_ratio_figure(aggregates, args.score, args.statistic), "replay_ratio")
    for suite in sorted(aggregates["suite"].unique()):
        save(interval_figure(aggregates, suite, args.score), f"intervals_{suite}")
        save(profile_figure(tables["profiles"], suite, args.score), f"profiles_{suite}")
    print(f"{len(written)} files -> {out}\n" + "\n".join(f"  {p.name}" for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
