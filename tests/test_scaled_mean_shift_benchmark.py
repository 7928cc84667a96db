"""``benchmarks/scaled_mean_shift.py``: the mean shifts with their spread scaled, beside the pipelines."""

from __future__ import annotations

import json

import pytest
import scaled_mean_shift


def _write(directory, name, payload):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(payload))


def _scores(dp, edist):
    return {"pearson_delta_deg": dp, "edist_scaled": edist}


def test_report_counts_wins_against_both_stronger_shifts_without_the_tuning_split(tmp_path):
    out, ceiling, variant = tmp_path / "out", tmp_path / "ceiling", tmp_path / "variant"
    split = {"dataset": "haber", "cell_type": "Tuft", "target": "x", "n_control": 9}
    scaled = {"pooled": _scores(0.80, 0.40), "balanced": _scores(0.85, 0.45), "similarity": _scores(0.70, 0.30)}
    _write(out, "a.json", {**split, "scaled": scaled})
    _write(ceiling, "a.json", {"ceiling": {
        "pearson_delta_deg": {"pipeline": 0.90, "stronger mean shift": 0.88},
        "edist_scaled": {"pipeline": 0.35, "stronger mean shift": 0.32},
    }})  # fmt: skip
    _write(variant, "a.json", {"scores": _scores(0.84, 0.25)})
    # the tuning split and a split without a default run are left out
    _write(out, "b.json", {**split, "dataset": "kang", "cell_type": "NK", "scaled": scaled})
    _write(ceiling, "b.json", {"ceiling": {}})
    _write(out, "c.json", {**split, "cell_type": "Stem", "scaled": scaled})
    table = scaled_mean_shift.win_table(out, ceiling, variant)
    counts = table[["splits", "beats stronger mean shift", "beats stronger scaled mean shift"]].astype(int)
    # Δ-Pearson: the stronger scaled shift is 0.85 (< 0.88 plain); the default 0.90 beats both; the variant neither
    assert counts.loc[("pearson_delta_deg", "stronger scaled mean shift")].tolist() == [1, 0, 0]
    assert counts.loc[("pearson_delta_deg", "default pipeline")].tolist() == [1, 1, 1]
    assert counts.loc[("pearson_delta_deg", "spread-scaling pipeline")].tolist() == [1, 0, 0]
    # E-distance: the stronger scaled shift is 0.30 (< 0.32 plain); the variant 0.25 beats both, the default neither
    assert counts.loc[("edist_scaled", "stronger scaled mean shift")].tolist() == [1, 1, 0]
    assert counts.loc[("edist_scaled", "default pipeline")].tolist() == [1, 0, 0]
    assert counts.loc[("edist_scaled", "spread-scaling pipeline")].tolist() == [1, 1, 1]
    assert table.loc[("edist_scaled", "spread-scaling pipeline"), "median"] == 0.25
    assert "spread-scaling pipeline" in scaled_mean_shift.report(out, ceiling, variant)
    assert scaled_mean_shift.report(tmp_path / "nothing", ceiling, variant) == "no splits done"


@pytest.mark.slow  # a tiny synthetic split, no fit
def test_quick_mode_scores_the_three_scaled_shifts(tmp_path):
    scaled_mean_shift.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "synthetic__type_A__stimulated.json").read_text())
    assert set(case["scaled"]) == {"pooled", "balanced", "similarity"}
    for scores in case["scaled"].values():
        assert set(scores) == {"pearson_delta_deg", "edist_scaled"} and 0 < scores["edist_scaled"] < 1
    assert (tmp_path / "scaled_mean_shift.md").read_text().strip() == "no splits done"  # no default run beside it
