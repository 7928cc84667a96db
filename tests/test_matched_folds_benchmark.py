"""``benchmarks/matched_folds.py``: the pipeline with matched inner folds on the benchmark's splits."""

from __future__ import annotations

import json

import matched_folds
import pytest


def _write(path, dataset, cell_type, scores, ceiling=None):
    case = {"dataset": dataset, "cell_type": cell_type, "target": "stim", "n_control": 10, "scores": scores}
    if ceiling is not None:
        case = {"dataset": dataset, "cell_type": cell_type, "ceiling": ceiling}
    path.write_text(json.dumps(case))


def _ceiling(pipeline, shift):
    return {m: {"pipeline": pipeline[m], "stronger mean shift": shift[m]} for m in pipeline}


def test_report_counts_wins_of_both_folds_and_leaves_out_the_tuning_split(tmp_path):
    out, ceilings = tmp_path / "out", tmp_path / "ceiling"
    out.mkdir(), ceilings.mkdir()
    shift = {"pearson_delta_deg": 0.9, "edist_scaled": 0.3}
    # split 1: matched beats the shift on both, the default on neither; split 2: the reverse on E-distance only
    _write(out / "a.json", "haber", "Tuft", {"pearson_delta_deg": 0.95, "edist_scaled": 0.2})
    _write(
        ceilings / "a.json", "haber", "Tuft", None, _ceiling({"pearson_delta_deg": 0.85, "edist_scaled": 0.4}, shift)
    )
    _write(out / "b.json", "haber", "Goblet", {"pearson_delta_deg": 0.95, "edist_scaled": 0.35})
    _write(
        ceilings / "b.json", "haber", "Goblet", None, _ceiling({"pearson_delta_deg": 0.95, "edist_scaled": 0.25}, shift)
    )
    _write(out / "nk.json", "kang", "NK", {"pearson_delta_deg": 0.0, "edist_scaled": 9.0})  # the tuning split
    _write(ceilings / "nk.json", "kang", "NK", None, _ceiling({"pearson_delta_deg": 1.0, "edist_scaled": 0.0}, shift))
    _write(out / "c.json", "haber", "Stem", {"pearson_delta_deg": 0.0, "edist_scaled": 9.0})  # no default to pair
    lines = {line.split("|")[1].strip(): line for line in matched_folds.report(out, ceilings).splitlines()[2:]}
    cells = {metric: [c.strip() for c in line.split("|")[2:-1]] for metric, line in lines.items()}
    # splits, matched beats shift, default beats shift, matched better, matched worse, matched and default medians
    assert cells["pearson_delta_deg"] == ["2", "2", "1", "1", "0", "0.95", "0.9"]
    assert cells["edist_scaled"] == ["2", "1", "1", "1", "1", "0.275", "0.325"]


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_fits_the_pipeline_with_matched_folds_on_a_tiny_split(tmp_path):
    matched_folds.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "synthetic__type_A__stimulated.json").read_text())
    assert case["chosen"]["fold_source_cells"] == case["n_control"] == 40  # type_A's control cells: nothing rarer
    assert set(case["scores"]) == {"pearson_delta_deg", "edist_scaled"}
    assert (tmp_path / "matched_folds.md").read_text().strip() == "no splits done"  # no default run to pair with


def test_report_can_pair_with_another_default_run_and_counts_reused_results(tmp_path):
    out, ceilings, defaults = tmp_path / "out", tmp_path / "ceiling", tmp_path / "default"
    for folder in (out, ceilings, defaults):
        folder.mkdir()
    shift = {"pearson_delta_deg": 0.9, "edist_scaled": 0.3}
    _write(ceilings / "a.json", "haber", "Tuft", None, _ceiling({"pearson_delta_deg": 0.1, "edist_scaled": 0.9}, shift))
    _write(out / "a.json", "haber", "Tuft", {"pearson_delta_deg": 0.95, "edist_scaled": 0.2})
    _write(defaults / "a.json", "haber", "Tuft", {"pearson_delta_deg": 0.92, "edist_scaled": 0.25})
    case = json.loads((out / "a.json").read_text())
    (out / "a.json").write_text(json.dumps({**case, "same_fits_as": "default"}))
    lines = matched_folds.report(out, ceilings, default_dir=defaults).splitlines()
    assert lines[0].split("|")[-2].strip() == "same fits as default"
    cells = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:]}
    # the default's scores are today's run's (0.92 / 0.25), not the ceiling's (0.1 / 0.9)
    assert cells["pearson_delta_deg"] == ["1", "1", "1", "1", "0", "0.95", "0.92", "1"]
    assert cells["edist_scaled"] == ["1", "1", "1", "1", "0", "0.2", "0.25", "1"]
