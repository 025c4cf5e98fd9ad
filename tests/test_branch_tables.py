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
