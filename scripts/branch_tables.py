"""The Markdown tables of a branch study, from the CSVs that ``scripts/aggregate.py`` and ``scripts/anatomy.py`` write,
so that every number of docs/evidence.md regenerates from committed files with one command.

    python scripts/aggregate.py RUNS... --metric charts/episodic_return --out AGG     # windows*.csv, scalars.csv
    python scripts/branch_tables.py DATA --collect AGG --steps 52500 60000            # -> DATA/plasticity.csv
    python scripts/branch_tables.py DATA --steps 52500 60000                          # the tables, on stdout

DATA holds ``windows*.csv`` and ``window_aggregates*.csv`` (copied from aggregate's output), ``plasticity.csv`` (the
srank and dormant ratio of every run at `--steps`, collected from aggregate's ``scalars.csv`` with ``--collect``) and
``anatomy_*.csv``, and for a study's per-cell table ``end_<run>.csv`` (``scripts/anatomy.py RUN --methods none --out
DATA/end_<run>.csv`` on each run's last checkpoint, the sources' too). Tables: mean game return per window (mean over
seeds, then each seed), the window scores' IQM, median, mean and optimality gap with their intervals
(``aggregate.score_tables``, as in aggregate's ``summary.md``), srank and dormant ratio per method and seed at each
step, each anatomy file's whole-network rows, and per cell the updates spent, the window returns and the critic's
srank, dormant ratio and top Hessian eigenvalue at the end. Where the runs hold several replay ratios, a cell is a
(replay ratio, method) pair.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import pandas as pd
    from aggregate import score_tables  # this folder is on sys.path when the script runs
except ImportError:
    sys.exit("error: scripts/branch_tables.py needs the analysis extra: pip install -e '.[analysis]'")

WINDOWS = ("pre", "early", "last")
KEYS = ("srank", "dormant")  # plasticity/<key> of the agents (DQN: one network)


def fmt(x: float) -> str:
    """Four significant digits below 1,000, whole numbers with thousands separators above."""
    return f"{x:.4g}" if abs(x) < 1000 else f"{x:,.0f}"


def cells(frame: pd.DataFrame):
    """(label, rows) per method, or per (replay ratio, method) where `frame` holds several replay ratios."""
    if "replay_ratio" not in frame or frame["replay_ratio"].nunique() < 2:
        yield from frame.groupby("method", sort=False)
        return
    ordered = frame.sort_values("replay_ratio", kind="stable")
    for (rr, method), group in ordered.groupby(["replay_ratio", "method"], sort=False):
        yield f"{method}, rr {rr:g}", group


def per_seed(values: pd.Series) -> str:
    """The mean, then each value: ``mean (v1, v2, ...)``."""
    return f"{fmt(values.mean())} ({', '.join(fmt(v) for v in values)})"


SLACK = 10  # env steps: a logged step in [s, s + SLACK) counts as step s (an action repeat or N envs overshoot it)


def collect(data: Path, agg: Path, steps: list[int]) -> Path:
    """Write DATA/plasticity.csv: run, method, replay_ratio, seed, step, logged_step, key, value of each
    ``plasticity/<key>`` tag whose last part is one of `KEYS` at `steps` (env steps; the first logged step within
    `SLACK` after each); the key keeps the network (SAC: ``qf1/srank``)."""
    scalars = pd.read_csv(agg / "scalars.csv")
    key = scalars["tag"].str.removeprefix("plasticity/")
    keep = (scalars["tag"].str.startswith("plasticity/") & key.str.split("/").str[-1].isin(KEYS)
            & (key.str.count("/") <= 1))  # fmt: skip
    logged = scalars[keep].assign(key=key[keep], logged_step=scalars["step"])
    frames = []
    for step in steps:
        near = logged[(logged["logged_step"] >= step) & (logged["logged_step"] < step + SLACK)]
        frames.append(near.sort_values("logged_step").groupby(["run", "key"]).head(1).assign(step=step))
    columns = ["run", "method", "replay_ratio", "seed", "step", "logged_step", "key", "value"]
    path = data / "plasticity.csv"
    pd.concat(frames)[columns].sort_values(["replay_ratio", "method", "seed", "step", "key"]).to_csv(path, index=False)
    return path


def window_tables(data: Path) -> list[str]:
    """Per ``windows*.csv``: the mean game return per window (mean over seeds, then each seed's); per
    ``window_aggregates*.csv``: aggregate's score tables."""
    out = []
    for path in sorted(data.glob("windows*.csv")):
        windows = pd.read_csv(path)
        rows = ["| method | " + " | ".join(WINDOWS) + " |", "|---|" + "---|" * len(WINDOWS)]
        for method, group in cells(windows.sort_values("seed")):
            values = [f"{group[w].mean():.2f} ({', '.join(f'{v:.2f}' for v in group[w])})" for w in WINDOWS]
            rows.append(f"| {method} | " + " | ".join(values) + " |")
        out.append(
            f"Mean game return per window, `{path.name}` (mean over seeds, then each seed):\n\n" + "\n".join(rows)
        )
    for path in sorted(data.glob("window_aggregates*.csv")):  # aggregate's own tables of them
        tables = score_tables(pd.read_csv(path), ["suite", "branch_step", "score"])
        out.append(f"Window scores with their intervals, `{path.name}`:\n\n" + "\n".join(tables).strip())
    return out


def plasticity_table(data: Path, steps: list[int]) -> list[str]:
    """srank and dormant ratio per method and seed at `steps` (env steps), from ``plasticity.csv`` (none if absent)."""
    path = data / "plasticity.csv"
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    keys = sorted(frame["key"].unique(), key=lambda k: (KEYS.index(k.split("/")[-1]), k))
    head = [f"{k} at {s:,}" for k in keys for s in steps]
    rows = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for method, group in cells(frame):
        values = []
        for key in keys:
            for step in steps:
                picked = group[(group["key"] == key) & (group["step"] == step)].sort_values("seed")["value"]
                values.append(", ".join(fmt(v) for v in picked))
        if any(values):
            rows.append(f"| {method} | " + " | ".join(values) + " |")
    return ["srank (δ = 0.01) and dormant ratio (τ = 0.025) per seed, `plasticity.csv`:\n\n" + "\n".join(rows)]


def anatomy_tables(data: Path) -> list[str]:
    """Per ``anatomy_*.csv``: its whole-network (``total``) rows."""
    out = []
    columns = ("sfe", "rel_sfe", "dfi_before", "dfi_after", "dormant_before", "dormant_after", "srank_before",
               "srank_after", "dq", "hessian_before", "hessian_after")  # fmt: skip
    for path in sorted(data.glob("anatomy_*.csv")):
        frame = pd.read_csv(path)
        total = frame[frame["layer"] == "total"]
        present = [c for c in columns if c in total]
        rows = ["| method | network | " + " | ".join(present) + " |", "|---|---|" + "---|" * len(present)]
        for _, row in total.iterrows():
            rows.append(f"| {row['method']} | {row['network']} | " + " | ".join(fmt(row[c]) for c in present) + " |")
        out.append(f"Reset anatomy, whole network, `{path.name}`:\n\n" + "\n".join(rows))
    return out


def end_table(data: Path) -> list[str]:
    """Per cell of ``windows.csv`` whose runs have an ``end_<run>.csv`` (``scripts/anatomy.py RUN --methods none``
    on the run's last checkpoint): the gradient updates the branch spent (its update_step minus its source's, from
    ``end_<source>.csv``), the window returns after the branch point, and the critic's srank, dormant ratio and top
    TD-loss Hessian eigenvalue at the end; mean over seeds, then each seed. The sources' own values head the table."""
    ends = {p.name.removeprefix("end_").removesuffix(".csv"): pd.read_csv(p) for p in sorted(data.glob("end_*.csv"))}
    if not ends or not (data / "windows.csv").is_file():
        return []
    critic = {run: t[(t["layer"] == "total") & t["hessian_before"].notna()].iloc[0] for run, t in ends.items()}
    windows = pd.read_csv(data / "windows.csv").sort_values("seed")
    windows = windows[windows["run"].isin(critic)]
    measures = {"srank": "srank_before", "dormant": "dormant_before", "top Hessian eigenvalue": "hessian_before"}
    windows = windows.assign(
        **{"updates spent": [critic[r]["update_step"] - critic[s]["update_step"] if s in critic else float("nan")
                 for r, s in zip(windows["run"], windows["source"], strict=True)]},
        **{m: [critic[r][c] for r in windows["run"]] for m, c in measures.items()})  # fmt: skip
    head = ["updates spent", *(w for w in WINDOWS if w != "pre"), *measures]
    rows = ["| cell | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    if sources := sorted({s for s in windows["source"] if s in critic}):  # 0 updates spent, no window after it
        blanks = ["0", *[""] * (len(head) - 1 - len(measures))]
        values = [per_seed(pd.Series([critic[s][c] for s in sources])) for c in measures.values()]
        rows.append("| source, at the branch point | " + " | ".join(blanks + values) + " |")
    for label, group in cells(windows):
        rows.append(f"| {label} | " + " | ".join(per_seed(group[h]) for h in head) + " |")
    return [
        "Per cell at the end of the branches, the critic measured by scripts/anatomy.py (`end_*.csv`):\n\n"
        + "\n".join(rows)
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="directory of the study's CSVs")
    parser.add_argument("--steps", type=int, nargs="+", required=True, help="env steps of the plasticity columns")
    parser.add_argument("--collect", type=Path, help="aggregate output directory to collect plasticity.csv from "
                        "(default: none, read DATA/plasticity.csv)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"argument data: {str(args.data)!r} is not a directory")
    if args.collect is not None:
        print(f"wrote {collect(args.data, args.collect, args.steps)}", file=sys.stderr)
    print(
        "\n\n".join(
            [
                *window_tables(args.data),
                *plasticity_table(args.data, args.steps),
                *anatomy_tables(args.data),
                *end_table(args.data),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
