"""The speed benchmark's quick mode runs end to end and reports real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import _speed_data
import anndata as ad
import numpy as np
import pytest
from _speed_report import markdown
from helpers import has_row

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def run_quick(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    output, table = tmp_path / "speed.json", tmp_path / "speed.md"
    command = [sys.executable, str(SCRIPT), "--quick", "--output", str(output), "--markdown", str(table),
               "--cache", str(tmp_path / "cache"), *extra]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Total wall time of this invocation" in done.stdout
    return json.loads(output.read_text()), table.read_text()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("speed")
    report, table = run_quick(tmp_path)
    return tmp_path, report, table


@pytest.mark.slow  # runs speed.py --quick (~45 s)
def test_speed_quick_mode_writes_json_and_tables(quick_run):
    _, report, table = quick_run
    (training,) = report["training"]
    assert training["trvae"]["cells_per_s"] > 0 and training["trvae"]["peak_rss_mb"] > 0
    assert training["gflops"]["float32"] > 0 and training["flops_per_cell"] > 0
    assert {row["mode"] for row in report["prediction"]} == {"counterfactual", "mean"}
    for row in report["prediction"]:
        for key in ("trvae", "trvae_bf16_autocast"):
            assert row[key]["cells_per_s"] > 0 and row[key]["output_mb"] > 0
    assert report["default_train"] == {}  # quick mode: this package's short runs only
    assert set(report["parts"]) == {"training", "prediction", "disk", "default-train", "gpu"}
    assert has_row(table, "synthetic:600:200", "64")
    assert has_row(table, "counterfactual", "bf16 autocast", "300")


@pytest.mark.slow  # runs speed.py --quick (~45 s)
def test_speed_quick_mode_trains_from_a_backed_file_it_wrote(quick_run):
    tmp_path, report, table = quick_run
    generation = report["disk"]["generation"]
    assert generation["cached"] is False and generation["peak_rss_mb"] > 0 and generation["file_mb"] > 0
    backed = ad.read_h5ad(generation["path"], backed="r")
    assert backed.shape == (3000, 200) and Path(generation["path"]).parent == tmp_path / "cache"
    backed.file.close()
    (row,) = report["disk"]["rows"]
    assert row["trvae"]["cells_per_s"] > 0 and row["trvae"]["peak_rss_mb"] > 0
    assert has_row(table, "synthetic:3000:200 backed", "64")


@pytest.mark.slow  # runs speed.py --quick (~45 s)
def test_speed_only_remeasures_some_parts_and_reuses_the_cached_file(quick_run):
    tmp_path, first, _ = quick_run
    report, table = run_quick(tmp_path, "--only", "disk")
    assert report["disk"]["generation"]["cached"] is True  # the file of the first run, not rewritten
    assert report["disk"]["generation"]["wall_s"] == first["disk"]["generation"]["wall_s"]
    assert report["training"] == first["training"] and report["prediction"] == first["prediction"]
    assert report["parts"]["disk"]["finished_at"] >= first["parts"]["disk"]["finished_at"]
    assert has_row(table, "synthetic:600:200", "64")  # the kept parts are still in the table


def test_synthetic_file_holds_the_cells_generated_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(_speed_data, "BLOCK_ROWS", 70)  # several blocks, the last one partial
    path = _speed_data.write_synthetic_h5ad(250, 40, tmp_path)
    in_memory = _speed_data.load_data("synthetic:250:40")
    backed = _speed_data.load_data(f"backed:{path}")
    assert backed.isbacked and backed.shape == in_memory.shape == (250, 40)
    np.testing.assert_array_equal(backed.X[np.arange(250)].toarray(), in_memory.X.toarray())
    np.testing.assert_array_equal(backed.obs["condition"].astype(str), in_memory.obs["condition"])
    assert 0.03 < in_memory.X.nnz / (250 * 40) <= 0.05  # 5% drawn with replacement, duplicates summed
    backed.file.close()
    assert _speed_data.write_synthetic_h5ad(250, 40, tmp_path) == path  # reused, not rewritten


def test_markdown_flags_missed_bounds_and_capped_runs():
    report = {
        "disk": {"data": "1000 cells x 20 genes", "generation": {"error": "boom"},
                 "rows": [{"data": "d", "batch_size": 8, "trvae": {"cells_per_s": 5.0, "peak_rss_mb": 4096.0}}]},
        "default_train": {"scArches": {"wall_s": 240.5, "epochs": 31, "finished": False, "cap_s": 240}},
        "gpu": {"device": "Some GPU", "rows": [{"data": "kang", "batch_size": 128,
                "trvae": {"cells_per_s": 9000.0, "peak_rss_mb": 1500.0, "gpu_peak_mb": 300.0}}]},
    }  # fmt: skip
    table = markdown(report)
    assert has_row(table, "d", "8", "5", "4096", "**no**")
    assert "Writing the file failed" in table
    assert has_row(table, "scArches", "240 (stopped at the 240 s cap)", "31")
    assert "GPU training (Some GPU" in table and has_row(table, "kang", "128", "9000", "1500", "300")
    assert "GPU rows: not measured (no CUDA" in markdown({"gpu": {"not_measured": "no CUDA device"}})
