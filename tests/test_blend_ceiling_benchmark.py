"""``benchmarks/blend_ceiling.py``: the hindsight ceiling of the pipeline's blend choice."""

from __future__ import annotations

import json

import blend_ceiling
import numpy as np
import pytest


def test_components_recover_the_mean_response_and_deviations_of_a_blend():
    rng = np.random.default_rng(0)
    observed, model_mean, reference = rng.random((20, 5)) + 1, rng.normal(size=5), rng.normal(size=5)
    deviations = rng.normal(size=(20, 5))
    deviations -= deviations.mean(0)
    predicted = observed + 0.25 * model_mean + 0.75 * reference + 0.5 * deviations
    mean, cells = blend_ceiling.components(observed, predicted, reference, 0.25, 0.5)
    np.testing.assert_allclose(mean, model_mean, atol=1e-12)
    np.testing.assert_allclose(cells, deviations, atol=1e-12)
    assert blend_ceiling.components(observed, predicted, reference, 0.0, 0.5)[0] is None  # w = 0: m is not in it
    assert blend_ceiling.components(observed, predicted, reference, 0.25, 0.0)[1] is None


def test_blends_keep_to_what_the_chosen_blend_lets_rebuild():
    grid = blend_ceiling.GRID
    whole = list(blend_ceiling.blends({"shift_weight": 0.5, "deviation_weight": 1.0}))
    assert len(whole) == len(grid["shift_weight"]) * len(grid["deviation_weight"]) * len(grid["reference_shift"])
    no_model_mean = list(blend_ceiling.blends({"shift_weight": 0.0, "deviation_weight": 1.0}))
    assert {b["shift_weight"] for b in no_model_mean} == {0.0}
    assert len(no_model_mean) == len(grid["deviation_weight"]) * len(grid["reference_shift"])
    assert {b["deviation_weight"] for b in blend_ceiling.blends({"shift_weight": 0.5, "deviation_weight": 0.0})} == {
        0.0
    }


def _case(dataset, cell_type, chosen_w, pipeline_edist, blend_edists, mean_shift_edist=0.5):
    rows = [{"row": "pipeline", "pearson_delta_deg": 0.9, "edist_scaled": pipeline_edist}]
    rows += [
        {"row": "blend", "shift_weight": w, "deviation_weight": 1.0, "reference_shift": "pooled",
         "pearson_delta_deg": 0.8, "edist_scaled": e}
        for w, e in blend_edists.items()
    ]  # fmt: skip
    rows.append({"row": "mean shift", "reference_shift": "pooled", "pearson_delta_deg": 0.85,
                 "edist_scaled": mean_shift_edist})  # fmt: skip
    return {
        "dataset": dataset, "cell_type": cell_type, "target": "stim",
        "chosen": {"shift_weight": chosen_w, "deviation_weight": 1.0, "reference_shift": "pooled"},
        "ceiling": blend_ceiling.ceiling(rows), "rows": rows,
    }  # fmt: skip


def test_report_counts_the_pipeline_its_hindsight_ceiling_and_the_best_single_blend(tmp_path):
    cases = [
        _case("d", "A", 0.5, 0.6, {0.0: 0.4, 0.5: 0.6}),  # the pipeline loses; w = 0 would have won
        _case("d", "B", 0.5, 0.3, {0.0: 0.6, 0.5: 0.3}),  # the pipeline wins with w = 0.5
        _case("d", "C", 0.0, 0.45, {0.0: 0.45}),  # w = 0 chosen: part of the grid only
        _case("kang", "NK", 0.5, 0.1, {0.0: 0.1, 0.5: 0.1}),  # the tuning split: not counted
    ]
    for i, case in enumerate(cases):
        (tmp_path / f"case{i}.json").write_text(json.dumps(case))
    text = blend_ceiling.report(tmp_path)
    assert "| the pipeline (chosen on inner folds) | 3/3 | 2/3 |" in text  # Δ-Pearson 0.9 > 0.85 on all three
    assert "| best blend of its grid (hindsight) | 0/3 | 3/3 |" in text  # the blends' Δ-Pearson is 0.8
    assert "| the pipeline, on the 2 splits with the whole grid | 2/2 | 1/2 |" in text
    assert "1/2 (w 0, lambda 1, pooled)" in text  # ties broken by order: one single blend wins one of the two
    assert "On 1 of them only part of the grid" in text


def test_ceiling_takes_the_best_of_each_metric_in_its_own_direction():
    rows = [
        {"row": "pipeline", "pearson_delta_deg": 0.9, "edist_scaled": 0.3},
        {"row": "blend", "pearson_delta_deg": 0.95, "edist_scaled": 0.4},
        {"row": "blend", "pearson_delta_deg": 0.7, "edist_scaled": 0.2},
        {"row": "mean shift", "pearson_delta_deg": 0.8, "edist_scaled": 0.35},
        {"row": "mean shift", "pearson_delta_deg": 0.85, "edist_scaled": 0.5},
    ]
    result = blend_ceiling.ceiling(rows)
    assert result["pearson_delta_deg"] == {"pipeline": 0.9, "best blend": 0.95, "stronger mean shift": 0.85}
    assert result["edist_scaled"] == {"pipeline": 0.3, "best blend": 0.2, "stronger mean shift": 0.35}


@pytest.mark.slow  # fits the pipeline (7 tiny models, 2 epochs)
def test_quick_mode_scores_every_rebuildable_blend(tmp_path):
    blend_ceiling.main(["--quick", "--out-dir", str(tmp_path)])
    (case,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    kinds = {row["row"] for row in case["rows"]}
    assert kinds == {"pipeline", "blend", "mean shift"}
    n_blends = len(list(blend_ceiling.blends(case["chosen"])))
    assert len(case["rows"]) == 1 + n_blends + len(blend_ceiling.REFERENCE_SHIFTS)
    chosen = [r for r in case["rows"] if r["row"] == "blend" and all(r[k] == v for k, v in case["chosen"].items())]
    pipeline = case["rows"][0]
    assert chosen[0]["edist_scaled"] == pytest.approx(pipeline["edist_scaled"], abs=1e-4)  # rebuilt (float32 apart)
    assert "the pipeline (chosen on inner folds)" in (tmp_path / "blend_ceiling.md").read_text()
