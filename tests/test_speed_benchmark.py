"""The speed benchmark's quick mode runs end to end and reports real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def test_speed_quick_mode_writes_json_and_tables(tmp_path):
    output, table = tmp_path / "speed.json", tmp_path / "speed.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output", str(output), "--markdown", str(table)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(output.read_text())
    (training,) = report["training"]
    assert training["trvae"]["cells_per_s"] > 0 and training["trvae"]["peak_rss_mb"] > 0
    assert training["gflops"]["float32"] > 0 and training["flops_per_cell"] > 0
    assert {row["mode"] for row in report["prediction"]} == {"counterfactual", "mean"}
    for row in report["prediction"]:
        assert row["trvae"]["cells_per_s"] > 0 and row["trvae"]["output_mb"] > 0
    assert "scArches" not in report["default_train"]  # quick mode: this package only
    assert "| synthetic:600:200 | 64 |" in table.read_text()
