"""The few-shot benchmark (``benchmarks/few_shot.py``): the measured cells are never scored; its quick mode runs."""

from __future__ import annotations

import json

import few_shot
import numpy as np
import pytest

from scvi_trvae import TRVAEEnsemble


def test_draws_score_the_same_cells_for_every_k_and_never_a_measured_one():
    usable, draws = few_shot.draw_cells(60, [0, 5, 20, 50], n_draws=3, min_scored=20, seed=0)
    assert usable == [0, 5, 20]  # 50 + 20 > 60
    for measured, scored in draws:
        assert len(scored) == 40 and len(set(scored)) == 40
        for k, cells in measured.items():
            assert len(cells) == k and not set(cells) & set(scored)
    assert not np.array_equal(draws[0][1], draws[1][1])  # the draws differ


@pytest.mark.slow  # the benchmark's --quick run: a tiny synthetic split, 5 short fits (~10 s)
def test_quick_mode_never_scores_a_measured_cell(tmp_path, monkeypatch):
    last_measured, checked = [set()], []
    predict, score = TRVAEEnsemble.predict_perturbation, few_shot._score

    def recording_predict(self, *args, measured=None, **kwargs):
        if measured is not None:
            last_measured[0] = set(measured.obs_names)  # the cells of this draw and k, scored next
        return predict(self, *args, measured=measured, **kwargs)

    def recording_score(pred, scored, control, degs):
        cells = set(scored.obs_names)
        if checked and cells != checked[-1][0]:  # a new draw starts with k = 0: nothing measured yet
            last_measured[0] = set()
        checked.append((cells, last_measured[0]))
        return score(pred, scored, control, degs)

    monkeypatch.setattr(TRVAEEnsemble, "predict_perturbation", recording_predict)
    monkeypatch.setattr(few_shot, "_score", recording_score)
    out = tmp_path / "few_shot.json"
    argv = ["--quick", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert few_shot.main(argv) == 0
    assert sum(bool(measured) for _, measured in checked) == 2 * 2 * 3  # 2 draws x k in (5, 20) x 3 answers
    assert all(not scored & measured for scored, measured in checked)
    payload = json.loads(out.read_text())
    assert {row["method"] for row in payload["rows"]} == set(few_shot.METHODS)
    assert sorted({row["k"] for row in payload["rows"]}) == [0, 5, 20]
    coverage = payload["coverage"][0]
    assert 0 <= coverage["coverage"] <= 1 and coverage["mean_width"] > 0 and coverage["level"] == 0.9
    assert few_shot.main(argv) == 0 and json.loads(out.read_text()) == payload  # resumed: nothing run again
