"""``benchmarks/member_mixture.py``: each cell's deviation from one member around the members' mean."""

from __future__ import annotations

import json

import ensemble_variants
import member_mixture
import numpy as np
import pytest


def _stacked(seed: int = 0, shape: tuple[int, int, int] = (3, 7, 4)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(2.0, 5.0, size=shape)  # far from zero: no clipping


def test_one_member_is_its_own_mixture():
    stacked = _stacked(shape=(1, 6, 3))
    np.testing.assert_allclose(member_mixture.mix_members(stacked), stacked[0])


def test_the_mixture_keeps_the_members_mean_and_one_members_deviation_per_cell():
    stacked = _stacked()
    mixed = member_mixture.mix_members(stacked)
    np.testing.assert_allclose(mixed.mean(0), stacked.mean((0, 1)))
    member_deviation = np.stack([stacked[k % 3, k] - stacked[k % 3].mean(0) for k in range(7)])
    shift = (mixed - stacked.mean((0, 1))) - member_deviation
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape))  # one constant per gene (centring)
    assert not np.allclose(mixed, stacked.mean(0))  # not the members' mean prediction


def test_each_group_is_mixed_on_its_own():
    stacked = _stacked(1)
    groups = np.array(["a", "b", "a", "b", "b", "a", "b"])
    mixed = member_mixture.mix_members(stacked, groups)
    for label in ("a", "b"):
        rows = groups == label
        np.testing.assert_allclose(mixed[rows], member_mixture.mix_members(stacked[:, rows]))


def test_negative_values_are_clipped():
    stacked = np.zeros((2, 4, 1))
    stacked[0, 2, 0] = 10.0  # member 0 predicts cells 0 and 2: deviations -2.5 and 7.5 around a mean of 1.25
    mixed = member_mixture.mix_members(stacked)[:, 0]
    np.testing.assert_allclose(mixed, [0.0, 0.0, 7.5, 0.0])  # cell 0 would be -2.5


def test_no_split_done_is_said():
    nowhere = member_mixture.OUT_DIR / "nothing here"
    assert ensemble_variants.split_report(member_mixture.VARIANTS, nowhere) == "no splits done"


@pytest.mark.slow  # trains 3 tiny models twice
def test_quick_modes_score_both_predictions(tmp_path):
    member_mixture.main(["--quick", "--out-dir", str(tmp_path)])
    scores = {}
    for prediction in member_mixture.PREDICTIONS:
        case = json.loads((tmp_path / prediction / "synthetic__type_A__stimulated.json").read_text())
        assert case["prediction"] == prediction and set(case["scores"]) == {"pearson_delta_deg", "edist_scaled"}
        scores[prediction] = case["scores"]
    assert scores["average"] != scores["mixture"]
    member_mixture.main(["--quick", "--tuning", "synthetic:1:0", "--out-dir", str(tmp_path)])
    table = (tmp_path / "tuning" / "member_mixture_tuning.md").read_text()
    assert table.count("| synthetic:1:0 |") == 2 and "paired_rmse" in table
