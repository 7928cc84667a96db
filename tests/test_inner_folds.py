from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae import model_selection
from scvi_trvae._inner_folds import (
    BATCH_SIZE,
    MIN_FOLD_CELLS,
    BlendGrid,
    config_epochs,
    model_arguments,
    resolve_source_cells,
    training_steps,
)
from scvi_trvae.datasets import synthetic_perturbation


def test_blend_grid_checks_each_kind_of_reference_shift():
    grid = BlendGrid.checked((0.0, 1.0), (1.0,), "similarity")
    assert grid.reference_shifts == ("similarity",)
    assert BlendGrid.checked((0.5,), (0.0, 1.0), ["pooled", "balanced"]).reference_shifts == ("pooled", "balanced")
    with pytest.raises(ValueError, match=r"each of reference_shifts must be one of .*got 'nearest'"):
        BlendGrid.checked((0.5,), (1.0,), ("pooled", "nearest"))
    with pytest.raises(ValueError, match=r"reference_shifts must name one or more of .*got none"):
        BlendGrid.checked((0.5,), (1.0,), ())


def test_blend_grid_checks_the_spread_scalings():
    assert BlendGrid.checked((0.5,), (1.0,), "pooled").spread_scalings == (False,)
    assert BlendGrid.checked((0.5,), (1.0,), "pooled", [False, True]).spread_scalings == (False, True)
    assert BlendGrid.checked((0.5,), (1.0,), "pooled", True).spread_scalings == (True,)
    with pytest.raises(ValueError, match=r"each of spread_scalings must be True or False, got 'no'"):
        BlendGrid.checked((0.5,), (1.0,), "pooled", [False, "no"])
    with pytest.raises(ValueError, match="spread_scalings must hold False, True or both, got none"):
        BlendGrid.checked((0.5,), (1.0,), "pooled", ())


@pytest.mark.parametrize("n_obs", [1, BATCH_SIZE - 1, BATCH_SIZE, BATCH_SIZE + 1, 10 * BATCH_SIZE + 3])
def test_training_steps_of_fixed_epochs_give_back_those_epochs(n_obs):
    steps = training_steps(n_obs, 3)
    assert steps == 3 * -(-n_obs // BATCH_SIZE)  # the last minibatch of each epoch may be partial
    assert config_epochs(n_obs, {"training_steps": steps}) == 3
    assert model_selection.training_steps is training_steps


def test_the_recommended_pipeline_uses_more_inner_folds_than_the_old_two():
    signature = model_selection.fit_recommended.__kwdefaults__
    assert signature["inner_folds"] == model_selection.RECOMMENDED_INNER_FOLDS == 4


KEYS = ("cell_type", "condition", "control", "stimulated")


def test_matched_source_cells_are_those_of_the_rarest_type_to_predict():
    adata = synthetic_perturbation(
        n_cell_types=4, n_genes=20, n_cells_per_group=10, n_response_genes=4, n_marker_genes=2, seed=0
    )
    assert resolve_source_cells(adata, KEYS, "matched") is None  # every type seen in both: nothing to match
    assert resolve_source_cells(adata, KEYS, None) is None
    types, conditions = adata.obs["cell_type"].to_numpy(), adata.obs["condition"].to_numpy()
    b_control = (types == "type_B") & (conditions == "control")
    drop = (np.isin(types, ["type_A", "type_B"]) & (conditions == "stimulated")) | (
        b_control & (np.cumsum(b_control) > 4)
    )
    to_predict = adata[~drop]  # type_A: 10 control cells, type_B: 4, neither stimulated
    assert resolve_source_cells(to_predict, KEYS, "matched") == 4
    assert resolve_source_cells(to_predict, KEYS, 7) == 7
    assert resolve_source_cells(to_predict, KEYS, 1) == MIN_FOLD_CELLS
    for bad in (0, -3, 2.5, "rare"):
        with pytest.raises(ValueError, match="fold_source_cells must be a positive number of cells, 'matched' or None"):
            resolve_source_cells(to_predict, KEYS, bad)


def test_a_configuration_can_set_the_models_normalisation():
    config = {"use_batch_norm": False, "use_layer_norm": True, "dropout_rate": 0.0, "mmd_weight": 2.0}
    assert model_arguments(config) == {"use_batch_norm": False, "use_layer_norm": True, "dropout_rate": 0.0}
