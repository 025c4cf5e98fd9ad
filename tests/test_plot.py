"""scripts/plot.py on the tables aggregate.py writes from real event files (synthetic curves, see test_aggregate).

Drawn data are checked against the ground truth and closed forms (mean ± SE), the bootstrap band against
scipy.stats.bootstrap, the replay-ratio figure against aggregates.csv; files are checked as PNG and SVG.
"""

from __future__ import annotations

import math
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
import scipy.stats  # noqa: E402
from test_aggregate import REPO, RESET_AT, SEEDS, load_script, write_synthetic_sweep  # noqa: E402

PLOT_PY = REPO / "scripts" / "plot.py"


@pytest.fixture(scope="module")
def plot():
    return load_script("plot")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A synthetic sweep, aggregated by aggregate.py's own entry point; returns (agg_dir, truth, tables)."""
    root = tmp_path_factory.mktemp("sweep")
    truth = write_synthetic_sweep(root, env_ids=("ALE/Breakout-v5",))
    agg_dir = root / "aggregate"
    agg = load_script("aggregate")
    assert agg.main([str(root), "--out", str(agg_dir), "--reps", "100"]) == 0
    frames = {name: pd.read_csv(agg_dir / f"{name}.csv") for name in ("scalars", "aggregates", "resets")}
    return agg_dir, truth, frames


def by_gid(ax, gid: str):
    return [a for a in [*ax.lines, *ax.collections] if a.get_gid() == gid]


# --------------------------------------------------------------------------------------------------- bands, alignment
@pytest.mark.parametrize(("n_runs", "length"), [(2, 5), (5, 40)])
def test_se_band_is_the_closed_form(plot, n_runs, length):
    matrix = np.random.default_rng(n_runs).normal(size=(n_runs, length))
    mean, low, high = plot.mean_and_band(matrix, "se")
    se = matrix.std(axis=0, ddof=1) / math.sqrt(n_runs)
    np.testing.assert_allclose(mean, matrix.mean(axis=0))
    np.testing.assert_allclose(low, mean - se)
    np.testing.assert_allclose(high, mean + se)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ci95_band_agrees_with_scipy_bootstrap(plot, dtype):
    matrix = np.random.default_rng(0).gamma(2.0, 1.0, size=(8, 6)).astype(dtype)
    mean, low, high = plot.mean_and_band(matrix, "ci95", reps=20_000, seed=1)
    ref = scipy.stats.bootstrap(
        (matrix.astype(np.float64),), np.mean, axis=0, n_resamples=20_000, method="percentile", random_state=2
    )
    width = ref.confidence_interval.high - ref.confidence_interval.low
    # Two independent Monte Carlo estimates of the same percentiles: equal up to a few % of the interval width.
    np.testing.assert_allclose(low, ref.confidence_interval.low, atol=0.05 * width.max())
    np.testing.assert_allclose(high, ref.confidence_interval.high, atol=0.05 * width.max())
    assert np.all(low <= mean) and np.all(mean <= high)
    single = plot.mean_and_band(matrix[:1], "ci95")
    np.testing.assert_array_equal(single[1], single[2])
    with pytest.raises(ValueError, match="band='sd'"):
        plot.mean_and_band(matrix, "sd")


def test_align_runs_identical_steps_and_interpolation(plot):
    same = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "step": [0, 10, 20] * 2, "value": [1.0, 2, 3, 3, 4, 5]})
    steps, matrix = plot.align_runs(same, points=50)
    np.testing.assert_array_equal(steps, [0, 10, 20])
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [3, 4, 5]])
    # Two lines logged at different steps: interpolation onto the common range is exact.
    rows = [("a", s, 2.0 * s) for s in (0, 7, 19, 40)] + [("b", s, 5.0 - s) for s in (3, 11, 30, 33)]
    diff = pd.DataFrame(rows, columns=["run", "step", "value"])
    steps, matrix = plot.align_runs(diff, points=9)
    np.testing.assert_allclose(steps, np.linspace(3, 33, 9))
    np.testing.assert_allclose(matrix[0], 2.0 * steps)
    np.testing.assert_allclose(matrix[1], 5.0 - steps)
    with pytest.raises(ValueError, match="points=1"):
        plot.align_runs(diff, points=1)


def test_runs_without_a_common_step_range_are_skipped_with_a_warning(plot):
    rows = [("a", "fire", 100, 1.0), ("b", "fire", 200, 2.0), ("c", "none", 100, 1.0), ("d", "none", 200, 3.0)]
    rows += [("c", "none", 300, 2.0), ("d", "none", 400, 3.0)]
    scalars = pd.DataFrame(rows, columns=["run", "method", "step", "value"]).assign(
        env_id="ALE/Pong-v5", replay_ratio=1.0, tag="charts/episodic_return"
    )
    with pytest.warns(UserWarning, match="fire: not drawn"):
        fig = plot.learning_curve_figure(scalars, pd.DataFrame(), "ALE/Pong-v5", "charts/episodic_return")
    (ax,) = fig.axes
    assert by_gid(ax, "mean:fire") == []
    (line,) = by_gid(ax, "mean:none")
    np.testing.assert_allclose(line.get_xdata()[[0, -1]], [200, 300])
    plt.close(fig)


def test_plasticity_tags_of_the_contract_and_of_the_agents(plot):
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
def test_learning_curves_draw_the_seed_mean_band_and_resets(plot, tables):
    _, truth, t = tables
    fig = plot.learning_curve_figure(t["scalars"], t["resets"], "ALE/Breakout-v5", band="se")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["replay ratio 0.25", "replay ratio 1"]
    assert all(ax.get_xlabel() == "env steps" for ax in axes)
    assert axes[0].get_ylabel() == "evaluation return"
    assert "mean ± 1 standard error" in fig._suptitle.get_text()
    for ax, rr in zip(axes, (0.25, 1.0), strict=True):
        for method in ("none", "fire"):
            runs = [truth[f"ALE-Breakout-v5__{method}__rr{rr:g}__s{s}"] for s in SEEDS]
            values = np.stack([r["values"].astype(np.float32).astype(np.float64) for r in runs])
            (line,) = by_gid(ax, f"mean:{method}")
            np.testing.assert_array_equal(line.get_xdata(), runs[0]["steps"])
            np.testing.assert_allclose(line.get_ydata(), values.mean(axis=0))
            (band,) = by_gid(ax, f"band:{method}")
            vertices = band.get_paths()[0].vertices
            se = values.std(axis=0, ddof=1) / math.sqrt(len(SEEDS))
            for i, step in enumerate(runs[0]["steps"]):
                ys = vertices[np.isclose(vertices[:, 0], step), 1]
                assert ys.min() == pytest.approx(values[:, i].mean() - se[i])
                assert ys.max() == pytest.approx(values[:, i].mean() + se[i])
            resets = by_gid(ax, f"reset:{method}")
            if method == "none":
                assert resets == []
            else:
                (marker,) = resets
                assert list(marker.get_xdata()) == [RESET_AT, RESET_AT] and marker.get_linestyle() == "--"
                assert marker.get_color() == line.get_color() == plot.METHOD_COLOURS["fire"]
    labels = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert labels == ["no reset (n=3)", "FIRE (n=3)", "reset event (method colour)"]
    plt.close(fig)


def test_replay_ratio_figure_draws_the_aggregates(plot, tables):
    _, _, t = tables
    fig = plot.replay_ratio_figure(t["aggregates"], score="final", statistic="iqm")
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert ax.get_xlabel() == "replay ratio (gradient updates per env step)"
    assert ax.get_ylabel() == "IQM of final human-normalized score"
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0.25", "1"]
    sel = t["aggregates"][(t["aggregates"]["score"] == "final") & (t["aggregates"]["statistic"] == "iqm")]
    for method, label in (("none", "no reset"), ("fire", "FIRE")):
        rows = sel[sel["method"] == method].sort_values("replay_ratio")
        (line,) = by_gid(ax, f"rr:{method}")
        np.testing.assert_allclose(line.get_ydata(), rows["estimate"])
        ratio = np.log2(np.asarray(line.get_xdata()) / rows["replay_ratio"].to_numpy())
        assert np.all(np.abs(ratio) <= 0.05)
        (container,) = [c for c in ax.containers if c.get_label() == label]
        segments = container.lines[2][0].get_segments()
        np.testing.assert_allclose([s[0][1] for s in segments], rows["ci_low"])
        np.testing.assert_allclose([s[1][1] for s in segments], rows["ci_high"])
    plt.close(fig)


def test_plasticity_figure_has_one_panel_per_metric_and_ratio(plot, tables):
    _, _, t = tables
    fig = plot.plasticity_figure(t["scalars"], t["resets"], "ALE/Breakout-v5")
    assert len(fig.axes) == 2 * 3
    assert [ax.get_ylabel() for ax in fig.axes[:3]] == [
        "DfI (layer mean)",
        "dormant ratio (τ = 0.025)",
        "srank (δ = 0.01)",
    ]
    assert [ax.get_xlabel() for ax in fig.axes[3:]] == ["env steps"] * 3
    dfi = fig.axes[0]
    (line,) = by_gid(dfi, "mean:fire")
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    # The synthetic DfI drops at the reset; the marker sits there.
    assert y[x == RESET_AT][0] < y[x == RESET_AT - 50][0]
    assert [list(m.get_xdata()) for m in by_gid(dfi, "reset:fire")] == [[RESET_AT, RESET_AT]]
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------- CLI
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PLOT_PY), *args], capture_output=True, text=True, timeout=180, cwd=REPO)


def test_cli_writes_png_and_svg(tables, tmp_path):
    agg_dir, _, _ = tables
    out = tmp_path / "plots"
    proc = run_cli(str(agg_dir), "--out", str(out), "--reps", "200")
    assert proc.returncode == 0, proc.stderr
    stems = ["curves_ALE-Breakout-v5", "replay_ratio", "plasticity_ALE-Breakout-v5"]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{fmt}" for s in stems for fmt in ("png", "svg"))
    for stem in stems:
        image = mpimg.imread(out / f"{stem}.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image[..., :3].std() > 0.05  # not a blank canvas
        svg = (out / f"{stem}.svg").read_text()
        ET.fromstring(svg)
        assert ("env steps" in svg) or ("replay ratio (gradient updates per env step)" in svg)
    assert "FIRE" in (out / "replay_ratio.svg").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--band", "sd"], "argument --band: invalid choice: 'sd' (choose from "),
        (["--reps", "0"], "argument --reps: 0 is invalid; allowed: an integer >= 1"),
        (["--points", "1"], "argument --points: 1 is invalid"),
        (["--formats", "jpg"], "argument --formats: invalid choice: 'jpg'"),
        (["--metric", "eval/none"], "argument --metric: 'eval/none' is not in the table"),
    ],
)
def test_cli_bad_input_exits_2_before_any_work(plot, tables, tmp_path, capsys, args, needle):
    agg_dir, _, _ = tables
    with pytest.raises(SystemExit) as exc:
        plot.main([str(agg_dir), "--out", str(tmp_path / "p"), *args])
    assert exc.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_cli_needs_aggregate_tables(tmp_path):
    proc = run_cli(str(tmp_path))
    assert proc.returncode == 2 and "run scripts/aggregate.py first" in proc.stderr
    assert "Traceback" not in proc.stderr
