"""The Markdown tables of a branch study, from the CSVs that ``scripts/aggregate.py`` and ``scripts/anatomy.py`` write,
so that every number of docs/evidence.md regenerates from committed files with one command.

    python scripts/aggregate.py RUNS... --metric charts/episodic_return --out AGG     # windows*.csv, scalars.csv
    python scripts/branch_tables.py DATA --collect AGG --steps 52500 60000            # -> DATA/plasticity.csv
    python scripts/branch_tables.py DATA --steps 52500 60000                          # the tables, on stdout

DATA holds ``windows*.csv`` and ``window_aggregates*.csv`` (copied from aggregate's output), ``plasticity.csv`` (the
srank and dormant ratio of every run at `--steps`, collected from aggregate's ``scalars.csv`` with ``--collect``) and
``anatomy_*.csv``. Tables: mean game return per window (mean over seeds, then each seed), the window scores' IQM,
median, mean and optimality gap with their intervals (``aggregate.score_tables``, as in aggregate's ``summary.md``),
srank and dormant ratio per method and seed at each step, and each anatomy file's whole-network rows.
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


def collect(data: Path, agg: Path, steps: list[int]) -> Path:
    """Write DATA/plasticity.csv: run, method, seed, step, key, value of each `KEYS` tag at `steps` (env steps)."""
    scalars = pd.read_csv(agg / "scalars.csv")
    key = scalars["tag"].str.split("/").str[-1]
    keep = scalars["tag"].str.startswith("plasticity/") & key.isin(KEYS) & scalars["step"].isin(steps)
    out = scalars[keep].assign(key=key[keep])[["run", "method", "seed", "step", "key", "value"]]
    path = data / "plasticity.csv"
    out.sort_values(["method", "seed", "step", "key"]).to_csv(path, index=False)
    return path


def window_tables(data: Path) -> list[str]:
    """Per ``windows*.csv``: the mean game return per window (mean over seeds, then each seed's); per
    ``window_aggregates*.csv``: aggregate's score tables."""
    out = []
    for path in sorted(data.glob("windows*.csv")):
        windows = pd.read_csv(path)
        rows = ["| method | " + " | ".join(WINDOWS) + " |", "|---|" + "---|" * len(WINDOWS)]
        for method, group in windows.sort_values("seed").groupby("method", sort=False):
            cells = [f"{group[w].mean():.2f} ({', '.join(f'{v:.2f}' for v in group[w])})" for w in WINDOWS]
            rows.append(f"| {method} | " + " | ".join(cells) + " |")
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
    head = [f"{k} at {s:,}" for k in KEYS for s in steps]
    rows = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for method, group in frame.groupby("method", sort=False):
        cells = []
        for key in KEYS:
            for step in steps:
                values = group[(group["key"] == key) & (group["step"] == step)].sort_values("seed")["value"]
                cells.append(", ".join(fmt(v) for v in values))
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
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
        "\n\n".join([*window_tables(args.data), *plasticity_table(args.data, args.steps), *anatomy_tables(args.data)])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
