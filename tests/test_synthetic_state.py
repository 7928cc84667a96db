from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic_state

from scvi_trvae.datasets import synthetic_counterfactual, synthetic_true_response


@pytest.mark.slow  # trains a model
def test_quick_mode_scores_variants_and_baselines_against_the_truth(tmp_path):
    synthetic_state.main(["--quick", "--out-dir", str(tmp_path)])
    results = json.loads((tmp_path / "synthetic_state.json").read_text())
    scores = results["1"]["0"]
    pipeline = {"recommended pipeline", "trVAE ensemble (the pipeline's 3 members)"}
    methods = {"trVAE (defaults)", "trVAE, mode='mean'", *pipeline, *synthetic_state.BASELINES}
    assert methods | set(synthetic_state.DERIVED) == set(scores)
    assert results["quick"]
    for row in scores.values():
        assert set(synthetic_state.SCORES) <= set(row)
    # knowing the held-out type's true mean response beats estimating it from the other types
    assert scores["control + true mean response"]["shift_error"] < scores["control + mean shift"]["shift_error"]
    assert scores["no response"]["cell_shift_r"] == 0.0
    assert (tmp_path / "synthetic_state.md").read_text().count("\n") >= 5
    # the second run reads the cached predictions: same scores
    synthetic_state.main(["--quick", "--out-dir", str(tmp_path)])
    assert json.loads((tmp_path / "synthetic_state.json").read_text())["1"]["0"] == scores


def test_transfer_bound_scores_the_mean_shift_and_the_noise_free_transfer_per_seed(tmp_path):
    synthetic_state.main(["--transfer-bound", "--quick", "--state-dependence", "0", "1", "--seeds", "0", "1",
                          "--out-dir", str(tmp_path)])  # fmt: skip
    rows = json.loads((tmp_path / synthetic_state.TRANSFER_RESULTS).read_text())["rows"]
    assert [(r["state_dependence"], r["seed"]) for r in rows] == [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1)]
    for row in rows:
        observed, transfer = row[synthetic_state.MEAN_SHIFT], row[synthetic_state.TRANSFER]
        assert -1.0 <= observed <= 1.0 and -1.0 <= transfer <= 1.0 and observed != transfer
        assert row["transfer wins"] == (transfer > observed)
    wins = sum(r["transfer wins"] for r in rows if r["state_dependence"] == 1.0)
    text = (tmp_path / synthetic_state.TRANSFER_RESULTS).with_suffix(".md").read_text()
    assert f"state dependence 1: the transfer beats the mean shift in {wins} of 2 seeds" in text


def test_other_types_true_shift_averages_the_other_types_control_cells_only():
    _, split = synthetic_state.synthetic_split(1.0, 0, quick=True)
    train = split.train
    control = train[(train.obs["condition"] == "control").to_numpy()]
    others = control[(control.obs["cell_type"] != synthetic_state.HELD_OUT).to_numpy()]
    response = synthetic_counterfactual(others, "stimulated") - synthetic_counterfactual(others, "control")
    np.testing.assert_allclose(synthetic_state.other_types_true_shift(split), response.mean(0), rtol=1e-6)
    # the held-out type's own true response is not what the other types show
    own, _ = synthetic_true_response(split.control, "control", "stimulated", synthetic_state.HELD_OUT)
    assert np.abs(own.mean(0) - response.mean(0)).max() > 0.1
