"""scripts/branch_tables.py: the tables of docs/evidence.md regenerate from the committed CSVs."""

import subprocess
import sys

import pytest
from agent_utils import ROOT

pytest.importorskip("pandas", reason="the analysis extra: pip install -e '.[analysis]'")


def test_the_breakout_tables_regenerate_from_their_csvs():
    proc = subprocess.run([sys.executable, "scripts/branch_tables.py", "docs/data/breakout_branches", "--steps",
                           "110000", "130000"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    evidence = " ".join((ROOT / "docs" / "evidence.md").read_text().replace("**", "").split())
    # A window return (mean over seeds, then each seed), an IQM interval and an anatomy total, as the doc quotes them.
    for number in ("3.19 (2.36, 2.94, 4.26)", "0.052 [0.023, 0.089]", "| 103.9 | 0.3314 |"):
        assert number in proc.stdout and number.replace("0.3314", "0.331") in evidence, number


def test_the_replay_ratio_study_tables_regenerate_from_their_csvs():
    # Cells are (replay ratio, method); the per-cell table joins the windows with the anatomy of each run's end.
    command = ["scripts/branch_tables.py", "docs/data/h1walk_replay_ratio", "--steps", "100000", "110000", "120000"]
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    evidence = " ".join((ROOT / "docs" / "evidence.md").read_text().replace("**", "").split())
    for number in ("| fire, rr 2 | 20,082 (20,060, 20,106, 20,080) | 8.398 (10.83, 7.437, 6.927) |",
                   "23.86 (25.03, 23.18, 23.38) | 111.7 (112, 112, 111) | 0 (0, 0, 0) | 939.5 (1,199, 856.3, 763.4) |",
                   "| none, rr 4 |  | 57, 57, 57 | 57, 58, 57 |", "23.862 [23.183, 25.027]"):  # fmt: skip
        assert number in proc.stdout, number
    for quoted in ("| fire, rr 2 | 20,082 | 8.398 (10.83, 7.437, 6.927) | 23.86 (25.03, 23.18, 23.38) |",
                   "939.5 (1,199, 856.3, 763.4)", "23.9 [23.2, 25.0]"):  # fmt: skip
        assert quoted in evidence, quoted


def test_the_rerun_pi_branches_regenerate_from_their_csvs():
    command = ["scripts/branch_tables.py", "docs/data/breakout_pi_rerun", "--steps", "100000", "110000", "130000"]
    proc = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    evidence = " ".join((ROOT / "docs" / "evidence.md").read_text().split())
    for number in ("| pi |  | 153, 134, 116 | 178, 145, 128 |", "| pretraining | 102, 89, 78 |",
                   "2.88 (3.14, 2.47, 3.02)", "0.041 [0.027, 0.050]"):  # fmt: skip
        assert number in proc.stdout, number
    for quoted in ("| pi | 102, 89, 78 | 153, 134, 116 | 178, 145, 128 |", "2.88 (3.14, 2.47, 3.02)",
                   "0.041 [0.027, 0.050]"):  # fmt: skip
        assert quoted in evidence, quoted
