"""scripts/health.py: the analysis on synthetic runs with closed-form answers (fast); bad input; one real tiny DQN run
through the script as a subprocess (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

REPO = Path(__file__).resolve().parents[1]
HEALTH_PY = REPO / "scripts" / "health.py"
MIB = 2**20


def load_health():
    spec = importlib.util.spec_from_file_location("fire_rl_script_health", HEALTH_PY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


health = load_health()


def synthetic_run(total: int, every: int, c0: float, c1: float, rss_of_step, start_step: int = 0, t0: float = 1e9):
    """A run whose seconds per env step are c0 + c1 * s at env step s, so wall time t(s) = t0 + c0 s + c1 s² / 2.

    Returns the clock (events every `every` env steps from `start_step`) and samples (every env step's time, with
    VmRSS = rss_of_step(s) MiB, VmHWM its running max, load1 = 1 + s / total).
    """
    steps = np.arange(start_step, total + 1, every, dtype=np.float64)
    wall = t0 + c0 * steps + 0.5 * c1 * steps**2
    s = np.arange(0, total + 1, dtype=np.float64)
    sample_t = t0 + c0 * s + 0.5 * c1 * s**2
    rss = np.array([rss_of_step(x) for x in s]) * MIB
    return health.step_clock(steps, wall), sample_t, rss, np.maximum.accumulate(rss), 1.0 + s / total


# ---------------------------------------------------------------------------------------------------------- windowing
@pytest.mark.parametrize("n", [1, 3, 10])
def test_window_edges_are_equal_and_span_the_run(n):
    edges = health.window_edges(1_000, n)
    assert edges.shape == (n + 1,) and edges[0] == 0 and edges[-1] == 1_000
    np.testing.assert_allclose(np.diff(edges), 1_000 / n)


@pytest.mark.parametrize("bad", [dict(stop=100, n=0), dict(stop=0, n=3), dict(stop=10, n=2, start=10)])
def test_window_edges_reject_bad_input(bad):
    with pytest.raises(ValueError, match="n=|stop="):
        health.window_edges(**bad)


def test_step_clock_sorts_and_keeps_the_latest_time_of_a_step():
    steps, wall = health.step_clock([300, 100, 200, 200], [3.0, 1.0, 2.0, 2.5])
    np.testing.assert_array_equal(steps, [100, 200, 300])
    np.testing.assert_array_equal(wall, [1.0, 2.5, 3.0])
    assert health.step_clock([], [])[0].shape == (0,)
    with pytest.raises(ValueError, match="wall time decreases"):
        health.step_clock([100, 200], [2.0, 1.0])
    with pytest.raises(ValueError, match="one length"):
        health.step_clock([1, 2], [1.0])


def test_steps_at_times_interpolates_inside_the_clock_only():
    clock = health.step_clock([100, 200, 400], [10.0, 20.0, 30.0])
    assert health.steps_at_times([5.0, 10.0, 15.0, 25.0, 30.0, 31.0], clock) == [None, 100.0, 150.0, 300.0, 400.0, None]


@pytest.mark.parametrize("every", [1, 25, 100])
def test_window_rates_match_the_closed_form(every):
    # Per-step time c0 + c1 s: a window's mean is its value at the midpoint, so s per 1k = 1000 (c0 + c1 (a + b) / 2).
    c0, c1, total = 0.01, 2e-5, 2_000
    clock, t, rss, hwm, load = synthetic_run(total, every, c0, c1, lambda s: 500.0 + 0.05 * s)
    edges = health.window_edges(total, 4)
    rows = health.window_figures(edges, clock, t, rss, hwm, load, reset_steps=[500, 501, 2_000])
    for row, a, b in zip(rows, edges[:-1], edges[1:]):
        assert row["s_per_1k_env_steps"] == pytest.approx(1_000 * (c0 + c1 * (a + b) / 2), rel=1e-9)
        assert row["env_steps_per_s"] == pytest.approx(1_000 / row["s_per_1k_env_steps"], rel=1e-12)
        assert row["wall_s"] == pytest.approx(c0 * (b - a) + 0.5 * c1 * (b**2 - a**2), rel=1e-9)
        assert row["rss_mib_end"] == pytest.approx(500.0 + 0.05 * b, rel=1e-9)
        assert row["hwm_mib_end"] == pytest.approx(500.0 + 0.05 * b, rel=1e-9)
        inside = 1.0 + np.arange(a, b + 1) / total  # load of the samples at every env step of the window
        assert row["load1_mean"] == pytest.approx(inside.mean())
        assert (row["load1_min"], row["load1_max"]) == pytest.approx((inside.min(), inside.max()))
    assert [row["resets"] for row in rows] == [[500], [501], [], [2_000]]


def test_windows_before_the_clock_have_no_rate_and_partial_ones_use_their_covered_part():
    # Events start at env step 300 (learning starts): window 0 (0-250) is uncovered, window 1 (250-500) is 80% covered.
    clock, t, rss, hwm, load = synthetic_run(1_000, 10, 0.01, 0.0, lambda s: 100.0, start_step=300)
    rows = health.window_figures(health.window_edges(1_000, 4), clock, t, rss, hwm, load)
    assert rows[0]["env_steps_per_s"] is None and rows[0]["rss_mib_end"] is None and rows[0]["load1_mean"] is None
    assert (rows[1]["covered_start"], rows[1]["covered_end"]) == (300.0, 500.0)
    assert rows[1]["env_steps_per_s"] == pytest.approx(100.0)
    # Clock starting at 400: window 1 is only 40% covered, under the 50% minimum.
    clock = health.step_clock(clock[0][clock[0] >= 400], clock[1][clock[0] >= 400])
    assert health.window_figures(health.window_edges(1_000, 4), clock, t, rss, hwm, load)[1]["wall_s"] is None


def test_window_samples_sparser_than_the_windows_still_give_rss_and_load():
    clock, t, rss, hwm, load = synthetic_run(1_000, 10, 0.01, 0.0, lambda s: 100.0 + s)
    keep = np.arange(0, 1_001, 400)  # three samples: 0, 400, 800 (none inside most windows)
    rows = health.window_figures(health.window_edges(1_000, 10), clock, t[keep], rss[keep], hwm[keep], load[keep])
    # RSS is linear in time here, so interpolating between samples is exact; past the last sample it is held.
    assert [r["rss_mib_end"] for r in rows[:8]] == pytest.approx([100.0 + 100 * (i + 1) for i in range(8)])
    assert rows[9]["rss_mib_end"] == pytest.approx(900.0)
    assert all(r["load1_mean"] is not None for r in rows)


# --------------------------------------------------------------------------------------------------------------- fits
def test_linear_fit_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1e5, 9)
    y = 3e-4 * x + 700.0 + rng.normal(0, 2.0, x.shape)
    ref = scipy.stats.linregress(x, y)
    fit = health.linear_fit(x, y)
    assert fit["slope"] == pytest.approx(ref.slope, rel=1e-9)
    assert fit["intercept"] == pytest.approx(ref.intercept, rel=1e-9)
    assert fit["r2"] == pytest.approx(ref.rvalue**2, rel=1e-9)
    assert fit["n"] == 9
    assert health.linear_fit([1.0, 1.0], [2.0, 3.0]) is None
    assert health.linear_fit([1.0], [2.0]) is None
    flat = health.linear_fit([0.0, 1.0, 2.0], [5.0, 5.0, 5.0])
    assert flat["slope"] == pytest.approx(0.0, abs=1e-12) and flat["intercept"] == pytest.approx(5.0)
    assert flat["r2"] == 1.0


@pytest.mark.parametrize(
    ("growth_mib_per_step", "threshold", "verdict"),
    [(0.0, 5.0, "flat"), (0.002, 5.0, "flat"), (0.02, 5.0, "growing"), (-0.02, 5.0, "shrinking"), (0.02, 50.0, "flat")],
)
def test_rss_trend_gives_the_closed_form_change_and_verdict(growth_mib_per_step, threshold, verdict):
    total, full = 10_000, 4_000
    clock, t, rss, hwm, load = synthetic_run(total, 50, 0.01, 0.0, lambda s: 1_000.0 + growth_mib_per_step * s)
    rows = health.window_figures(health.window_edges(total, 10), clock, t, rss, hwm, load, buffer_full_step=full)
    out = health.trend(rows, "rss", threshold)
    assert out["windows"] == [4, 5, 6, 7, 8, 9]
    ends = np.arange(5_000, 10_001, 1_000)
    mean = (1_000.0 + growth_mib_per_step * ends).mean()
    assert out["span_env_steps"] == 6_000.0
    assert out["fit"]["slope"] == pytest.approx(growth_mib_per_step, abs=1e-12)
    assert out["change_pct_over_span"] == pytest.approx(100 * growth_mib_per_step * 6_000 / mean, abs=1e-9)
    assert out["pct_per_100k_env_steps"] == pytest.approx(100 * growth_mib_per_step * 100_000 / mean, abs=1e-9)
    assert out["verdict"] == verdict
    assert out["load1_range"] == pytest.approx([1.4, 2.0])


def test_step_time_trend_recovers_the_growth_of_per_step_time():
    # s per 1k = 1000 (c0 + c1 s) at window midpoints: slope 1000 c1 per env step; change over the span known.
    total, c0, c1 = 10_000, 0.05, 1e-6
    clock, t, rss, hwm, load = synthetic_run(total, 25, c0, c1, lambda s: 800.0)
    rows = health.window_figures(health.window_edges(total, 10), clock, t, rss, hwm, load, buffer_full_step=2_000)
    out = health.trend(rows, "step_time", 10.0)
    mids = np.arange(2_500, 10_000, 1_000)
    mean = (1_000 * (c0 + c1 * mids)).mean()
    assert out["fit"]["slope"] == pytest.approx(1_000 * c1, rel=1e-9)
    assert out["fit"]["r2"] == pytest.approx(1.0)
    assert out["change_pct_over_span"] == pytest.approx(100 * 1_000 * c1 * 8_000 / mean, rel=1e-9)
    assert out["verdict"] == "growing"  # 8000 steps x 1e-6 / ~0.056 s = +14%
    flat_rows = health.window_figures(
        health.window_edges(total, 10), *synthetic_run(total, 25, c0, 0.0, lambda s: 800.0), buffer_full_step=2_000
    )
    assert health.trend(flat_rows, "step_time", 10.0)["verdict"] == "flat"


def test_buffer_full_cut_removes_the_legitimate_growth_while_the_buffer_fills():
    # RSS rises 0.1 MiB per env step until the buffer is full at 5,000, then stays: flat after the cut, not before.
    total, full = 10_000, 5_000
    clock, t, rss, hwm, load = synthetic_run(total, 50, 0.01, 0.0, lambda s: 600.0 + 0.1 * min(s, full))
    edges = health.window_edges(total, 10)
    cut = health.trend(health.window_figures(edges, clock, t, rss, hwm, load, buffer_full_step=full), "rss", 5.0)
    assert cut["windows"] == [5, 6, 7, 8, 9]
    assert cut["change_pct_over_span"] == pytest.approx(0.0, abs=1e-9) and cut["verdict"] == "flat"
    uncut = health.trend(health.window_figures(edges, clock, t, rss, hwm, load, buffer_full_step=0), "rss", 5.0)
    assert uncut["verdict"] == "growing" and uncut["change_pct_over_span"] > 30


def test_trend_is_unmeasured_with_too_few_windows_and_rejects_bad_input():
    clock, t, rss, hwm, load = synthetic_run(1_000, 10, 0.01, 0.0, lambda s: 100.0)
    rows = health.window_figures(health.window_edges(1_000, 10), clock, t, rss, hwm, load, buffer_full_step=800)
    out = health.trend(rows, "rss", 5.0)
    assert out["windows"] == [8, 9] and out["fit"] is None and out["verdict"] == "unmeasured"
    with pytest.raises(ValueError, match="quantity='memory'"):
        health.trend(rows, "memory", 5.0)
    with pytest.raises(ValueError, match="threshold_pct=0"):
        health.trend(rows, "rss", 0)


def test_buffer_full_step_per_agent():
    assert health.buffer_full_step("dqn_atari", 300) == 300
    assert health.buffer_full_step("dqn_atari", 10, num_envs=4) == 12  # ceil(10 / 4) slots per env
    assert health.buffer_full_step("sac_simba", 100, action_repeat=2) == 200  # agent steps of 2 env steps
    with pytest.raises(ValueError, match="agent='ppo'"):
        health.buffer_full_step("ppo", 100)
    with pytest.raises(ValueError, match="buffer_size=0"):
        health.buffer_full_step("dqn_atari", 0)


# ---------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--windows", "2"], "--windows=2: must be >= 3"),
        (["--sample-every", "0"], "--sample-every=0.0: must be > 0"),
        (["--replay-ratio", "-1"], "--replay-ratio=-1.0: must be > 0"),
        (["--rss-threshold-pct", "0"], "--rss-threshold-pct=0.0"),
        (["--reset", "bogus"], "invalid choice: 'bogus'"),
        (["--agent", "ppo"], "invalid choice: 'ppo'"),
        (["--", "--total-timesteps", "5"], "agent flag '--total-timesteps' after `--`"),
        (["--", "--run_dir=/tmp/x"], "agent flag '--run_dir=/tmp/x' after `--`"),
    ],
)
def test_bad_flags_exit_2_naming_the_value(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        health.main(["--run-dir", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err.replace("\n", " ") and err.startswith("usage: scripts/health.py")
    assert not (tmp_path / "run").exists()


def test_existing_non_empty_run_dir_is_refused(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        health.main(["--run-dir", str(tmp_path)])
    assert exit_info.value.code == 2 and f"--run-dir={tmp_path}: exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("agent_flags", "message"),
    [
        ([], "--buffer-size=1000000 (env steps) fills at env step 1,000,000, leaving 0 of 10 windows"),
        (["--buffer-size", "0"], "--buffer-size=0: must be > 0"),
    ],
)
def test_agent_flags_are_checked_by_the_agent_before_it_starts(agent_flags, message, tmp_path, capsys):
    assert health.main(["--run-dir", str(tmp_path / "run"), "--", *agent_flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_unknown_agent_flag_is_rejected_by_the_agents_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        health.main(["--run-dir", str(tmp_path / "run"), "--", "--loss", "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'bogus'" in err and "--loss" in err and "agents/dqn_atari.py" in err
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_real_run_writes_windows_samples_fits(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "health.json"
    cmd = [sys.executable, str(HEALTH_PY), "--run-dir", str(run_dir), "--out", str(out), "--total-timesteps", "600",
           "--replay-ratio", "1", "--reset-every", "200", "--windows", "6", "--sample-every", "0.5",
           "--", "--learning-starts", "100", "--buffer-size", "300", "--batch-size", "8"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # flatness over 600 env steps is noise
    result = json.loads(out.read_text())
    assert "| window |" in proc.stdout and f"wrote {out}" in proc.stdout
    assert result["agent_returncode"] == 0 and not result["interrupted"]
    assert json.loads((run_dir / "result.json").read_text())["global_step"] == 600
    assert (run_dir / "agent.log").stat().st_size > 0
    assert result["config"]["agent_config"]["replay_ratio"] == 1.0
    assert result["config"]["agent_config"]["buffer_size"] == 300
    assert result["buffer"]["full_at_env_step"] == 300
    assert result["buffer"]["memory_bytes"] == 300 * (84 * 84 + 16)
    assert result["resets"] == [200, 400, 600]
    assert result["machine"]["cpu_model"] and len(result["machine"]["loadavg_start"]) == 3
    # Updates start after env step 100; an SPS event every 100 updates at RR 1: env steps 200, 300, ..., 600.
    assert result["clock_events"] == 5

    samples = result["samples"]
    assert len(samples) >= 5
    assert all(s["rss_bytes"] > 0 and s["hwm_bytes"] >= s["rss_bytes"] for s in samples)
    assert max(s["rss_bytes"] for s in samples) > 100 * MIB  # torch, the env and the networks are loaded
    stepped = [s["env_step"] for s in samples if s["env_step"] is not None]
    assert stepped and all(200 <= x <= 600 for x in stepped) and stepped == sorted(stepped)

    windows = result["windows"]
    assert [w["env_step_end"] for w in windows] == [100, 200, 300, 400, 500, 600]
    assert [w["after_buffer_full"] for w in windows] == [False] * 3 + [True] * 3
    assert [w["resets"] for w in windows] == [[], [200], [], [400], [], [600]]
    for w in windows[2:]:  # covered by the clock
        assert w["env_steps_per_s"] > 0 and w["s_per_1k_env_steps"] == pytest.approx(1_000 / w["env_steps_per_s"])
        assert w["rss_mib_end"] > 50 and w["hwm_mib_end"] >= 0.99 * w["rss_mib_end"] and w["load1_mean"] >= 0
    assert windows[0]["env_steps_per_s"] is None  # before learning starts: no clock

    for name in ("rss", "step_time"):
        fit = result["fits"][name]
        assert fit["windows"] == [3, 4, 5] and fit["fit"]["n"] == 3
        assert fit["verdict"] in ("flat", "growing", "shrinking") and result["verdicts"][name] == fit["verdict"]
    assert proc.returncode == (0 if set(result["verdicts"].values()) == {"flat"} else 1)
