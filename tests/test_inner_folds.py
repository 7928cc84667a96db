from __future__ import annotations

import pytest

from scvi_trvae import model_selection
from scvi_trvae._inner_folds import BATCH_SIZE, BlendGrid, config_epochs, training_steps


def test_blend_grid_checks_each_kind_of_reference_shift():
    grid = BlendGrid.checked((0.0, 1.0), (1.0,), "similarity")
    assert grid.reference_shifts == ("similarity",)
    assert BlendGrid.checked((0.5,), (0.0, 1.0), ["pooled", "balanced"]).reference_shifts == ("pooled", "balanced")
    with pytest.raises(ValueError, match=r"each of reference_shifts must be one of .*got 'nearest'"):
        BlendGrid.checked((0.5,), (1.0,), ("pooled", "nearest"))
    with pytest.raises(ValueError, match=r"reference_shifts must name one or more of .*got none"):
        BlendGrid.checked((0.5,), (1.0,), ())


@pytest.mark.parametrize("n_obs", [1, BATCH_SIZE - 1, BATCH_SIZE, BATCH_SIZE + 1, 10 * BATCH_SIZE + 3])
def test_training_steps_of_fixed_epochs_give_back_those_epochs(n_obs):
    steps = training_steps(n_obs, 3)
    assert steps == 3 * -(-n_obs // BATCH_SIZE)  # the last minibatch of each epoch may be partial
    assert config_epochs(n_obs, {"training_steps": steps}) == 3
    assert model_selection.training_steps is training_steps


def test_the_recommended_pipeline_uses_more_inner_folds_than_the_old_two():
    signature = model_selection.fit_recommended.__kwdefaults__
    assert signature["inner_folds"] == model_selection.RECOMMENDED_INNER_FOLDS == 4
