"""scripts/plot.py on the tables aggregate.py writes from real event files (synthetic curves, see test_aggregate).

Drawn data are checked against the tables (curves.csv, aggregates.csv, profiles.csv), which test_aggregate checks
against rliable and closed forms; files are checked as PNG and SVG.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from test_aggregate import BRANCH_AT, REPO, RESET_AT, load_script, write_branch_sweep, write_synthetic_sweep  # noqa: E402

PLOT_PY = REPO / "scripts" / "plot.py"


@pytest.fixture(scope="module")
def plot():
    return load_script("plot")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A synthetic sweep, aggregated by aggregate.py's own entry point; returns (agg_dir, tables)."""
    root = tmp_path_factory.mktemp("sweep")
    write_synthetic_sweep(root, env_ids=("ALE/Breakout-v5",))
    agg_dir = root / "aggregate"
    agg = load_script("aggregate")
    assert agg.main([str(root), "--out", str(agg_dir), "--reps", "100", "--curve-reps", "50"]) == 0
    return agg_dir, {n: pd.read_csv(agg_dir / f"{n}.csv") for n in ("curves", "aggregates", "profiles", "resets")}


@pytest.fixture(scope="module")
def branch_tables(tmp_path_factory):
    """A synthetic branch sweep (test_aggregate.write_branch_sweep), aggregated; returns (agg_dir, tables)."""
    root = tmp_path_factory.mktemp("branches")
    write_branch_sweep(root)
    agg_dir = root / "aggregate"
    args = ["--metric", "charts/episodic_return", "--reps", "50", "--curve-reps", "50"]
    assert load_script("aggregate").main([str(root), "--out", str(agg_dir), *args]) == 0
    return agg_dir, {n: pd.read_csv(agg_dir / f"{n}.csv") for n in ("curves", "resets")}


def line(ax, label: str):
    (found,) = [artist for artist in ax.lines if artist.get_label() == label]
    return found


def band_edges(ax, index: int, x) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edge of the `index`-th filled band of `ax` at each of `x`."""
    vertices = ax.collections[index].get_paths()[0].vertices
    lows = [vertices[np.isclose(vertices[:, 0], v), 1].min() for v in x]
    highs = [vertices[np.isclose(vertices[:, 0], v), 1].max() for v in x]
    return np.array(lows), np.array(highs)


# ------------------------------------------------------------------------------------------------------ names, colours
def test_plasticity_tags_and_labels_of_both_agents(plot):
    dqn = ["plasticity/srank", "plasticity/dormant", "plasticity/dfi_normalized_mean", "plasticity/dfi/encoder.0"]
    assert plot.plasticity_tags([*dqn, "plasticity/weight_norm", "eval/episodic_return"]) == [
        "plasticity/dfi_normalized_mean",
        "plasticity/dormant",
        "plasticity/srank",
    ]
    sac = [f"plasticity/{net}/{key}" for net in ("qf1", "actor") for key in ("srank", "dormant", "feature_norm")]
    assert plot.plasticity_tags(sac) == [
        "plasticity/actor/dormant",
        "plasticity/qf1/dormant",
        "plasticity/actor/srank",
        "plasticity/qf1/srank",
    ]
    assert plot.tag_label("plasticity/qf1/srank") == "qf1: srank (δ = 0.01)"
    assert plot.tag_label("plasticity/dormant_ratio") == plot.tag_label("plasticity/dormant")
    assert plot.tag_label("losses/td_loss") == "losses/td_loss"


def test_palette_is_okabe_ito(plot):
    okabe_ito = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}
    methods = ["none", "fire", "sp", "full", "pi", "redo", "swr"]
    colours = [plot.method_colour(m, methods) for m in methods]
    assert set(colours) <= okabe_ito and len(set(colours)) == len(methods)


# ------------------------------------------------------------------------------------------------------------ figures
def test_learning_curves_draw_the_iqm_its_band_and_the_resets(plot, tables):
    _, t = tables
    fig = plot.curve_figure(t["curves"], t["resets"], "ALE/Breakout-v5", ["eval/episodic_return"])
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["replay ratio 0.25", "replay ratio 1"]
    assert all(ax.get_xlabel() == "env steps" for ax in axes) and axes[0].get_ylabel() == "evaluation return"
    for ax, rr in zip(axes, (0.25, 1.0)):
        for index, (method, name) in enumerate((("none", "no reset"), ("fire", "FIRE"))):
            rows = t["curves"][(t["curves"]["tag"] == "eval/episodic_return") & (t["curves"]["replay_ratio"] == rr)]
            rows = rows[rows["method"] == method]
            drawn = line(ax, f"{name} (n=3)")
            np.testing.assert_allclose(drawn.get_xdata(), rows["step"])
            np.testing.assert_allclose(drawn.get_ydata(), rows["estimate"])
            assert drawn.get_color() == plot.METHOD_COLOURS[method]
            low, high = band_edges(ax, index, rows["step"])
            np.testing.assert_allclose(low, rows["ci_low"])
            np.testing.assert_allclose(high, rows["ci_high"])
        markers = [a for a in ax.lines if a.get_gid() == "reset:fire"]
        assert [list(m.get_xdata()) for m in markers] == [[RESET_AT, RESET_AT]] and markers[0].get_linestyle() == "--"
        assert not [a for a in ax.lines if a.get_gid() == "reset:none"]
    labels = [text.get_text() for text in axes[-1].get_legend().get_texts()]
    assert labels == ["no reset (n=3)", "FIRE (n=3)", "reset event (method colour)"]
    plt.close(fig)


def test_plasticity_figure_has_one_panel_per_metric_and_ratio(plot, tables):
    _, t = tables
    tags = plot.plasticity_tags(t["curves"]["tag"].unique())
    fig = plot.curve_figure(t["curves"], t["resets"], "ALE/Breakout-v5", tags)
    assert len(fig.axes) == 2 * 3
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == ["DfI (layer mean)", "dormant ratio (τ = 0.025)",
                                                        "srank (δ = 0.01)"]  # fmt: skip
    drawn = line(fig.axes[0], "FIRE (n=3)")
    x, y = np.asarray(drawn.get_xdata()), np.asarray(drawn.get_ydata())
    # The synthetic DfI drops at the reset; the marker sits there.
    assert y[x == RESET_AT][0] < y[x == RESET_AT - 50][0]
    assert [list(m.get_xdata()) for m in fig.axes[0].lines if m.get_gid() == "reset:fire"] == [[RESET_AT, RESET_AT]]
    plt.close(fig)


def test_replay_ratio_figure_draws_the_aggregates(plot, tables):
    _, t = tables
    fig = plot.replay_ratio_figure(t["aggregates"], score="final", statistic="iqm")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert ax.get_xlabel() == "replay ratio (gradient updates per env step)"
    assert ax.get_ylabel() == "IQM of final human-normalized score"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0.25", "1"]
    sel = t["aggregates"][(t["aggregates"]["score"] == "final") & (t["aggregates"]["statistic"] == "iqm")]
    for index, (method, label) in enumerate((("none", "no reset"), ("fire", "FIRE"))):
        rows = sel[sel["method"] == method].sort_values("replay_ratio")
        drawn = line(ax, label)
        np.testing.assert_allclose(drawn.get_ydata(), rows["estimate"])
        assert np.all(np.abs(np.log2(np.asarray(drawn.get_xdata()) / rows["replay_ratio"].to_numpy())) <= 0.05)
        low, high = band_edges(ax, index, drawn.get_xdata())
        np.testing.assert_allclose(low, rows["ci_low"])
        np.testing.assert_allclose(high, rows["ci_high"])
    plt.close(fig)


def test_interval_and_profile_figures_draw_their_tables(plot, tables):
    _, t = tables
    fig = plot.interval_figure(t["aggregates"], "atari-hns", "final")
    assert [ax.get_title() for ax in fig.axes] == ["IQM", "median", "mean", "optimality gap"]
    labels = [text.get_text() for text in fig.axes[0].get_yticklabels()]
    assert labels == ["no reset, rr 0.25", "no reset, rr 1", "FIRE, rr 0.25", "FIRE, rr 1"]
    row = t["aggregates"].set_index(["suite", "score", "method", "replay_ratio", "statistic"])
    row = row.loc[("atari-hns", "final", "fire", 1.0, "iqm")]
    bar = fig.axes[0].patches[3]  # FIRE at replay ratio 1: the interval as a bar from ci_low to ci_high
    assert (bar.get_x(), bar.get_x() + bar.get_width()) == pytest.approx((row["ci_low"], row["ci_high"]))
    plt.close(fig)
    fig = plot.profile_figure(t["profiles"], "atari-hns", "final")
    assert [ax.get_title() for ax in fig.axes] == ["atari-hns, replay ratio 0.25", "atari-hns, replay ratio 1"]
    rows = t["profiles"][(t["profiles"]["score"] == "final") & (t["profiles"]["replay_ratio"] == 1.0)]
    drawn = line(fig.axes[1], "FIRE")
    np.testing.assert_allclose(drawn.get_ydata(), rows.loc[rows["method"] == "fire", "fraction"])
    plt.close(fig)


def test_branch_figure_aligns_the_branches_at_the_branch_point(plot, branch_tables):
    agg_dir, t = branch_tables
    fig = plot.branch_figure(t["curves"], t["resets"], "ALE/Breakout-v5", "charts/episodic_return", pre_window=200)
    (ax,) = fig.axes
    assert ax.get_title() == f"replay ratio 1, branch at env step {BRANCH_AT:,}"
    assert ax.get_xlabel() == "env steps since the branch point"
    curves = t["curves"][t["curves"]["tag"] == "charts/episodic_return"]
    fire = curves[curves["method"] == "fire"]
    drawn = line(ax, "FIRE (n=3)")
    np.testing.assert_allclose(drawn.get_xdata(), fire["step"] - BRANCH_AT)
    np.testing.assert_allclose(drawn.get_ydata(), fire["estimate"])
    # The pretraining's last 200 env steps, before 0, in grey.
    pre = line(ax, "pretraining (n=3)")
    np.testing.assert_allclose(pre.get_xdata(), [-200, -150, -100, -50, 0])
    assert pre.get_color() == plot.PRETRAINING_COLOUR
    (branch,) = [a for a in ax.lines if a.get_gid() == "branch"]
    assert list(branch.get_xdata()) == [0, 0]
    plt.close(fig)
    with pytest.raises(ValueError, match="no branch curve"):
        plot.branch_figure(t["curves"], t["resets"], "ALE/Pong-v5", "charts/episodic_return", pre_window=200)


# --------------------------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PLOT_PY), *args], capture_output=True, text=True, timeout=180, cwd=REPO)


def test_cli_writes_png_and_svg(tables, tmp_path):
    agg_dir, _ = tables
    out = tmp_path / "plots"
    proc = run_cli(str(agg_dir), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    stems = ["curves_ALE-Breakout-v5", "plasticity_ALE-Breakout-v5", "replay_ratio", "intervals_atari-hns",
             "profiles_atari-hns"]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{fmt}" for s in stems for fmt in ("png", "svg"))
    for stem in stems:
        image = mpimg.imread(out / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas
        ET.fromstring((out / f"{stem}.svg").read_text())
    assert "env steps" in (out / "curves_ALE-Breakout-v5.svg").read_text()
    assert "FIRE" in (out / "replay_ratio.svg").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--statistic", "sd"], "argument --statistic: invalid choice: 'sd' (choose from "),
        (["--dpi", "0"], "argument --dpi: 0 is invalid; allowed: an integer >= 1"),
        (["--formats", "jpg"], "argument --formats: invalid choice: 'jpg'"),
        (["--metric", "eval/none"], "argument --metric: 'eval/none' has no curve"),
        (["--pre-window", "0"], "argument --pre-window: 0 is invalid; allowed: an integer >= 1"),
    ],
)
def test_cli_bad_input_exits_2_before_any_work(plot, tables, tmp_path, capsys, args, needle):
    agg_dir, _ = tables
    with pytest.raises(SystemExit) as exc:
        plot.main([str(agg_dir), "--out", str(tmp_path / "p"), *args])
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_cli_draws_the_branches(branch_tables, tmp_path):
    agg_dir, _ = branch_tables
    proc = run_cli(str(agg_dir), "--out", str(tmp_path), "--metric", "charts/episodic_return", "--formats", "png")
    assert proc.returncode == 0, proc.stderr
    image = mpimg.imread(tmp_path / "branches_ALE-Breakout-v5.png")
    assert image.ndim == 3 and image[..., :3].std() > 0.05
    assert (tmp_path / "curves_ALE-Breakout-v5.png").is_file()


def test_cli_needs_aggregate_tables(tmp_path):
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 2 and "run scripts/aggregate.py first" in proc.stderr
    assert "Traceback" not in proc.stderr
