from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae._blend import blend_prediction, check_blend_weight


@pytest.fixture
def cells():
    rng = np.random.default_rng(0)
    observed = rng.random((30, 6)) + 1.0
    predicted = observed + rng.normal(0.4, 0.3, (30, 6))
    return observed, predicted, rng.normal(0.2, 0.1, 6)


def test_full_weights_give_the_models_prediction_and_lambda_w_the_older_blend(cells):
    observed, predicted, pooled = cells
    np.testing.assert_allclose(blend_prediction(observed, predicted, pooled, 1.0, 1.0), predicted, rtol=1e-6)
    older = observed + 0.3 * (predicted - observed) + 0.7 * pooled
    np.testing.assert_allclose(blend_prediction(observed, predicted, pooled, 0.3, 0.3), older, rtol=1e-6)


def test_mean_from_the_blend_and_deviations_scaled_separately(cells):
    observed, predicted, pooled = cells
    out = blend_prediction(observed, predicted, pooled, 0.0, 1.0)
    np.testing.assert_allclose((out - observed).mean(0), pooled, atol=1e-6)
    np.testing.assert_allclose((out - observed).std(0), (predicted - observed).std(0), rtol=1e-5)
    half = blend_prediction(observed, predicted, pooled, 0.5, 0.0)  # every cell gets the same response
    np.testing.assert_allclose(half - observed, np.broadcast_to((half - observed)[0], half.shape), atol=1e-6)


def test_means_are_taken_within_each_group_and_the_result_is_clipped(cells):
    observed, predicted, pooled = cells
    groups = np.repeat(["a", "b"], 15)
    predicted = predicted.copy()
    predicted[15:] += 1.0  # group b responds more
    out = blend_prediction(observed, predicted, pooled, 1.0, 0.0, groups=groups)
    for label in ("a", "b"):
        rows = groups == label
        np.testing.assert_allclose((out - observed)[rows], np.broadcast_to((predicted - observed)[rows].mean(0),
                                                                           (15, 6)), rtol=1e-5)  # fmt: skip
    assert (blend_prediction(observed, observed - 10.0, pooled, 1.0, 1.0) == 0.0).all()


def test_weights_are_checked():
    assert check_blend_weight(0.25, "shift_weight") == 0.25
    with pytest.raises(ValueError, match=r"shift_weight must be between 0 and 1, got 1\.5"):
        check_blend_weight(1.5, "shift_weight")
    with pytest.raises(ValueError, match="deviation_weight must be finite and >= 0"):
        check_blend_weight(float("nan"), "deviation_weight", upper=None)
    assert check_blend_weight(2.0, "deviation_weight", upper=None) == 2.0


def test_a_scaled_spread_widens_the_observed_cells_around_their_mean_only(cells):
    observed, predicted, pooled = cells
    spread = np.linspace(0.5, 2.0, observed.shape[1])
    plain = blend_prediction(observed, predicted, pooled, 0.5, 1.0)
    scaled = blend_prediction(observed, predicted, pooled, 0.5, 1.0, spread=spread)
    np.testing.assert_allclose(scaled.mean(0), plain.mean(0), rtol=1e-5)  # the same mean response
    # the model's deviations are unchanged; the observed cells' own deviations are scaled
    centred = observed - observed.mean(0)
    np.testing.assert_allclose(scaled - plain, (spread - 1.0) * centred, atol=1e-5)
    ones = blend_prediction(observed, predicted, pooled, 0.5, 1.0, spread=np.ones(observed.shape[1]))
    np.testing.assert_allclose(ones, plain, atol=1e-6)
