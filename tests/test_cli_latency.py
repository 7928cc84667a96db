"""The command-line latency benchmark's quick mode runs end to end and writes what it printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import has_row

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_latency.py"


def test_quick_mode_times_every_command_once(tmp_path):
    out = tmp_path / "cli_latency.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    commands = [row["command"] for row in result["rows"]]
    assert commands == ["scvi-trvae --help", "scvi-trvae train --help", "scvi-trvae evaluate (argument error)",
                        "import scvi_trvae"]  # fmt: skip
    for row in result["rows"]:
        assert row["repeats"] == 1 and len(row["times_s"]) == 1 and row["median_s"] == row["max_s"] > 0
        assert has_row(done.stdout, row["command"], "this tree", f"{row['median_s']:.2f}")
