"""``benchmarks/blend_grid.py``: each narrower grid's choice from the same inner-fold scores, on the tuning data."""

from __future__ import annotations

import json

import blend_grid
import pandas as pd
import pytest


def test_grid_choice_takes_the_best_row_inside_the_grid():
    summary = pd.DataFrame({  # sorted best first, as SelectionResult.summary is
        "reference_shift": ["balanced", "pooled", "similarity", "pooled"],
        "shift_weight": [0.5, 0.25, 0.0, 1.0],
        "deviation_weight": [1.0, 2.0, 1.0, 0.5],
        "score": [0.9, 0.8, 0.7, 0.6],
    })  # fmt: skip
    assert blend_grid.grid_choice(summary, blend_grid.KINDS, blend_grid.WIDE_LAMBDAS)["reference_shift"] == "balanced"
    wide = blend_grid.grid_choice(summary, ("pooled", "similarity"), blend_grid.WIDE_LAMBDAS)
    assert (wide["shift_weight"], wide["deviation_weight"], wide["inner_score"]) == (0.25, 2.0, 0.8)
    current = blend_grid.grid_choice(summary, ("pooled", "similarity"), (0.0, 0.5, 1.0))
    assert (current["reference_shift"], current["deviation_weight"]) == ("similarity", 1.0)


def test_only_the_tuning_data_are_cases(tmp_path):
    with pytest.raises(SystemExit, match="tuning data"):
        blend_grid.case_data("kang:B", quick=True, data_dir=tmp_path)


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_scores_every_grid_on_one_synthetic_case(tmp_path):
    blend_grid.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "case_synthetic_1_0.json").read_text())
    assert case["quick"] and set(case["grids"]) == set(blend_grid.GRIDS)
    for name, row in case["grids"].items():
        kinds, lambdas = blend_grid.GRIDS[name]
        assert row["reference_shift"] in kinds and row["deviation_weight"] in lambdas
        assert row["edist_scaled"] >= 0.0 and row["paired_rmse"] > 0.0 and -1.0 <= row["pearson_delta_deg"] <= 1.0
    # the widest grid's inner score is the best of all: it holds every other grid's candidates
    assert case["grids"]["both"]["inner_score"] == max(row["inner_score"] for row in case["grids"].values())
    assert set(case["mean_shifts"]) == set(blend_grid.MEAN_SHIFTS)
    # every synthetic cell type has as many cells in each condition: the balanced shift is the pooled one
    assert case["mean_shifts"]["control + balanced mean shift"] == pytest.approx(
        case["mean_shifts"]["control + mean shift"]
    )
    table = (tmp_path / "blend_grid.md").read_text()
    assert "synthetic, state dependence 1" in table and "lambda to 2" in table and "similarity mean shift" in table
