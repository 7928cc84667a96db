"""Split-conformal intervals of the predicted mean response: scales, the quantile, and the coverage they give."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scvi_trvae._intervals import conformal_quantile, response_scale, shift_intervals


def test_response_scale_is_the_spread_across_types_with_a_floor():
    shifts = np.array([[0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 2.0, 0.0], [0.0, 5.0, 2.0, 0.4]])
    scale = response_scale(shifts)
    np.testing.assert_allclose(scale[1], 2.0)  # sd of 1, 3, 5
    np.testing.assert_allclose(scale[3], np.std([0, 0, 0.4], ddof=1))
    floor = 0.1 * np.median(np.std(shifts, axis=0, ddof=1))
    assert scale[0] == scale[2] == pytest.approx(floor) and floor > 0


def test_response_scale_needs_two_types():
    with pytest.raises(ValueError, match="at least 2 cell types"):
        response_scale(np.ones((1, 5)))


def test_conformal_quantile_is_the_finite_sample_rank():
    errors = [np.arange(1.0, 10.0), -np.arange(10.0, 20.0)]  # 19 scores 1..19 once normalised
    scales = [np.ones(9), np.ones(10)]
    assert conformal_quantile(errors, scales, level=0.9) == 18.0  # ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(errors, [2 * np.ones(9), 2 * np.ones(10)], level=0.5) == 5.0  # 10th of 0.5..9.5
    assert conformal_quantile([np.ones(3)], [np.ones(3)], level=0.9) == math.inf  # too few for 90%


@pytest.mark.parametrize(("args", "message"), [(([], []), "at least one fold"), (([np.ones(2)], []), "one array")])
def test_conformal_quantile_checks_its_folds(args, message):
    with pytest.raises(ValueError, match=message):
        conformal_quantile(*args)


def test_conformal_quantile_checks_the_level():
    with pytest.raises(ValueError, match="level must be in"):
        conformal_quantile([np.ones(3)], [np.ones(3)], level=1.0)


def test_calibrated_intervals_cover_exchangeable_errors_at_the_level():
    rng = np.random.default_rng(0)
    scale = rng.gamma(2.0, 0.5, size=2000)
    folds = [rng.normal(0, scale) for _ in range(3)]
    quantile = conformal_quantile(folds, [scale] * 3, level=0.9)
    predicted = rng.normal(size=2000)
    truth = predicted + rng.normal(0, scale)
    lower, upper = shift_intervals(predicted, scale, quantile)
    coverage = np.mean((truth >= lower) & (truth <= upper))
    assert 0.87 < coverage < 0.93
    np.testing.assert_allclose(upper - lower, 2 * quantile * scale)
