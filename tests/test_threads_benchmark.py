"""The thread-count benchmark's quick mode runs end to end, writes every result and resumes from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import has_row

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "threads.py"


@pytest.mark.slow
def test_quick_mode_measures_each_load_and_thread_count_then_resumes(tmp_path):
    out = tmp_path / "threads.json"
    command = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "auto", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(row["load"], row["threads"]) for row in rows} == {
        ("none", "1"),
        ("none", "auto"),
        ("spin", "1"),
        ("spin", "auto"),
    }
    assert all(row["train_s"] > 0 for row in rows)
    assert has_row(done.stdout, "1 x spin") and "auto (the package's choice)" in done.stdout
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0 and "train" not in again.stderr  # nothing measured twice
    assert json.loads(out.read_text())["rows"] == rows
