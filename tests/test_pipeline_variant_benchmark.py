"""``benchmarks/pipeline_variant.py``: the pipeline with another model setting on the benchmark's splits."""

from __future__ import annotations

import json

import pipeline_variant
import pytest


def test_settings_are_read_as_json_and_must_be_model_arguments():
    assert pipeline_variant.model_setting("use_batch_norm=false") == ("use_batch_norm", False)
    assert pipeline_variant.model_setting("dropout_rate=0.2") == ("dropout_rate", 0.2)
    assert pipeline_variant.variant_name({"use_batch_norm": False, "n_latent": 10}) == (
        "n_latent-10__use_batch_norm-false"
    )
    with pytest.raises(ValueError, match="KEY=VALUE"):
        pipeline_variant.model_setting("use_batch_norm")
    with pytest.raises(ValueError, match="'mmd_weight=2'"):  # a training setting, not the model's
        pipeline_variant.model_setting("mmd_weight=2")


def test_selection_settings_are_read_as_json_and_must_be_selection_arguments():
    assert pipeline_variant.selection_setting('reference_shifts=["pooled","balanced"]') == (
        "reference_shifts",
        ["pooled", "balanced"],
    )
    assert pipeline_variant.variant_name({}, {"reference_shifts": ["pooled", "similarity", "balanced"]}) == (
        "selection-reference_shifts-pooled-similarity-balanced"
    )
    assert pipeline_variant.variant_name({"dropout_rate": 0.3}, {"max_inner_folds": 2}) == (
        "dropout_rate-0.3__selection-max_inner_folds-2"
    )
    assert pipeline_variant.variant_name({}, {"fold_choice": "nearest"}) == "selection-fold_choice-nearest"
    with pytest.raises(ValueError, match="'n_latent=10'"):  # a model setting, not the selection's
        pipeline_variant.selection_setting("n_latent=10")


def test_a_fold_choice_that_holds_out_the_default_folds_reuses_the_default_run(tmp_path, monkeypatch):
    split = pipeline_variant.quick_split()  # too few qualifying cell types to choose among: the default's folds
    monkeypatch.setattr(pipeline_variant, "DEFAULT_RUN", tmp_path)
    nearest = {"fold_choice": "nearest"}
    assert pipeline_variant.same_fits_as_default(split, {}, nearest) is None  # no default result to reuse
    default = {"dataset": "synthetic", "chosen": {"shift_weight": 0.5}, "scores": {"edist_scaled": 0.4}}
    (tmp_path / pipeline_variant.case_name(split)).write_text(json.dumps(default))
    reused = pipeline_variant.same_fits_as_default(split, {}, nearest)
    assert reused["scores"] == default["scores"]
    assert reused["chosen"] == {**default["chosen"], "inner_cell_types": ["type_B", "type_C"]}
    assert reused["selection"] == nearest and reused["same_fits_as"] == tmp_path.name
    assert pipeline_variant.same_fits_as_default(split, {"dropout_rate": 0.3}, nearest) is None  # other fits
    assert pipeline_variant.same_fits_as_default(split, {}, {**nearest, "spread_scalings": [False]}) is None


def test_a_variant_must_be_named(capsys):
    with pytest.raises(SystemExit):
        pipeline_variant.main(["--report"])
    assert "name a variant" in capsys.readouterr().err


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_trains_every_fit_with_the_setting(tmp_path):
    pipeline_variant.main(["--model", "use_batch_norm=false", "--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "synthetic__type_A__stimulated.json").read_text())
    assert case["settings"] == {"use_batch_norm": False} and case["chosen"]["config"]["use_batch_norm"] is False
    assert set(case["scores"]) == {"pearson_delta_deg", "edist_scaled"}
    assert (tmp_path / "pipeline_variant.md").read_text().strip() == "no splits done"  # no default run to pair with


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_passes_selection_settings_to_the_pipeline(tmp_path):
    selection = ['reference_shifts=["balanced"]', "spread_scalings=[false]"]
    pipeline_variant.main(["--selection", *selection, "--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "synthetic__type_A__stimulated.json").read_text())
    assert case["settings"] == {}
    assert case["selection"] == {"reference_shifts": ["balanced"], "spread_scalings": [False]}
    assert case["chosen"]["reference_shift"] == "balanced" and case["chosen"]["spread_scaling"] is False  # the only


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_passes_the_spread_scaling_to_the_ensemble(tmp_path):
    pipeline_variant.main(["--selection", "spread_scalings=[true]", "--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "synthetic__type_A__stimulated.json").read_text())
    assert case["selection"] == {"spread_scalings": [True]} and case["chosen"]["spread_scaling"] is True


@pytest.mark.slow  # trains 7 tiny models
def test_quick_tuning_case_is_scored_against_each_cells_truth_beside_the_mean_shifts(tmp_path):
    pipeline_variant.main(["--model", "use_batch_norm=false", "--quick", "--tuning", "synthetic:1:0",
                           "--out-dir", str(tmp_path)])  # fmt: skip
    case = json.loads((tmp_path / "tuning" / "case_synthetic_1_0.json").read_text())
    assert case["chosen"]["config"]["use_batch_norm"] is False
    assert {"pearson_delta_deg", "edist_scaled", "paired_rmse"} <= set(case["scores"])
    assert set(case["mean_shifts"]) == {"control + mean shift", "control + balanced mean shift",
                                        "control + similarity mean shift"}  # fmt: skip
    table = (tmp_path / "tuning" / "pipeline_variant_tuning.md").read_text()
    assert "| synthetic:1:0 | variant" in table and "default pipeline" not in table  # no default of the tiny data
