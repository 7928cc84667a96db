"""``benchmarks/rare_type_folds.py``: inner folds matched to a rare type to predict, on the tuning data only."""

from __future__ import annotations

import json

import pytest
import rare_type_folds


def test_a_rare_case_keeps_few_control_cells_of_the_held_out_type_in_training_and_to_predict(tmp_path):
    data = rare_type_folds.rare_case("synthetic:1:0:8", quick=True, data_dir=tmp_path)
    assert data.control.n_obs == 8 and (data.control.obs["cell_type"] == data.cell_type).all()
    obs = data.train.obs
    held_out = obs[obs["cell_type"] == data.cell_type]
    assert set(held_out.index) == set(data.control.obs_names)  # only the kept control cells, none stimulated
    assert data.truth[0].shape == data.control.shape  # each kept cell's own true response
    full = rare_type_folds.case_data("synthetic:1:0", quick=True, data_dir=tmp_path)
    assert data.train.n_obs == full.train.n_obs - (full.control.n_obs - 8)


def test_a_case_without_a_cell_count_keeps_every_control_cell(tmp_path):
    data = rare_type_folds.rare_case("synthetic:1:0", quick=True, data_dir=tmp_path)
    full = rare_type_folds.case_data("synthetic:1:0", quick=True, data_dir=tmp_path)
    assert data.control.n_obs == full.control.n_obs and data.train.n_obs == full.train.n_obs


def test_only_the_tuning_data_are_cases(tmp_path):
    with pytest.raises(SystemExit, match="tuning data"):
        rare_type_folds.rare_case("kang:B", quick=True, data_dir=tmp_path)


@pytest.mark.slow  # trains 11 tiny models
def test_quick_mode_scores_both_choices_on_one_rare_synthetic_case(tmp_path):
    rare_type_folds.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "case_synthetic_1_0_8.json").read_text())
    assert case["quick"] and case["control_cells"] == 8
    assert set(case["choices"]) == set(rare_type_folds.FOLDS)
    assert case["choices"]["matched"]["fold_source_cells"] == 8
    assert case["choices"]["all control cells"]["fold_source_cells"] is None
    for row in case["choices"].values():
        assert row["edist_scaled"] >= 0.0 and row["paired_rmse"] > 0.0 and -1.0 <= row["pearson_delta_deg"] <= 1.0
    table = (tmp_path / "rare_type_folds.md").read_text()
    assert "synthetic S=1, 8 cells" in table and "edist_scaled: matched better/worse" in table
    assert "control + similarity mean shift" in table
