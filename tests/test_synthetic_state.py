from __future__ import annotations

import json

import numpy as np
import pytest
import synthetic_state


def test_diagnostics_of_the_truth_itself_and_of_a_constant_shift():
    rng = np.random.default_rng(0)
    control = rng.random((50, 8))
    truth = rng.normal(1.0, 0.5, (50, 8))
    genes = np.arange(4)
    perfect = synthetic_state.diagnostics(control + truth, control, truth, genes)
    assert perfect["paired_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["shift_error"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["cell_shift_r"] == pytest.approx(1.0)
    assert perfect["spread_ratio"] == pytest.approx(1.0)
    constant = synthetic_state.diagnostics(control + truth.mean(0), control, truth, genes)
    assert constant["shift_error"] == pytest.approx(0.0, abs=1e-12)
    assert constant["cell_shift_r"] == 0.0 and constant["spread_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert constant["paired_rmse"] == pytest.approx(truth[:, genes].std(0).__pow__(2).mean() ** 0.5)


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
