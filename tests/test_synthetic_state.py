from __future__ import annotations

import json

import pytest
import synthetic_state


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
