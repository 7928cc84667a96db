from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

from scvi_trvae import model_selection
from scvi_trvae._inner_folds import (
    BATCH_SIZE,
    MIN_FOLD_CELLS,
    BlendGrid,
    choose_folds,
    config_epochs,
    model_arguments,
    resolve_source_cells,
    training_steps,
    types_to_predict,
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


def _types_on_a_line(positions: dict[str, float], to_predict: str | None = "A") -> AnnData:
    """Cells of each type around its position on gene 0, 6 per condition; ``to_predict`` has control cells only."""
    rng = np.random.default_rng(0)
    rows, obs = [], []
    for cell_type, position in positions.items():
        for condition in ("control", "stimulated"):
            if cell_type == to_predict and condition == "stimulated":
                continue
            centre = np.array([position, 1.0 + (condition == "stimulated"), 2.0])
            rows.append(centre + rng.normal(0.0, 0.05, (6, 3)))
            obs += [(cell_type, condition)] * 6
    obs_frame = pd.DataFrame(obs, columns=["cell_type", "condition"], index=[str(i) for i in range(len(obs))])
    return AnnData(np.clip(np.vstack(rows), 0, None).astype(np.float32), obs=obs_frame)


def test_nearest_folds_are_the_types_closest_to_the_type_to_predict():
    adata = _types_on_a_line({"A": 0.0, "B": 1.0, "C": 8.0, "D": 2.0, "E": 9.0, "F": 10.0})
    folds = ["B", "C", "D", "E", "F"]
    assert list(types_to_predict(adata, KEYS).index) == ["A"]
    assert choose_folds(adata, KEYS, folds, 2, "nearest", seed=0) == ["B", "D"]
    assert choose_folds(adata, KEYS, folds, 3, "nearest", seed=5) == ["B", "C", "D"]
    drawn = choose_folds(adata, KEYS, folds, 2, "random", seed=0)
    assert drawn == sorted(np.random.default_rng(0).choice(folds, size=2, replace=False).tolist())
    assert choose_folds(adata, KEYS, folds, None, "nearest", seed=0) == folds  # no limit: every fold
    assert choose_folds(adata, KEYS, folds, 5, "nearest", seed=0) == folds
    with pytest.raises(ValueError, match=r"fold_choice must be one of 'random', 'nearest', got 'closest'"):
        choose_folds(adata, KEYS, folds, 2, "closest", seed=0)


def test_nearest_folds_draw_at_random_when_nothing_is_to_predict():
    adata = _types_on_a_line({"A": 0.0, "B": 1.0, "C": 8.0, "D": 2.0}, to_predict=None)
    assert types_to_predict(adata, KEYS).empty
    folds = ["A", "B", "C", "D"]
    for seed in range(3):
        assert choose_folds(adata, KEYS, folds, 2, "nearest", seed) == choose_folds(
            adata, KEYS, folds, 2, "random", seed
        )


def test_nearest_folds_are_closest_to_the_types_to_predict_together():
    # A at 0 and G at 10 are both predicted: the closeness is averaged over them, so B (near A) and F (near G) lead.
    adata = _types_on_a_line({"A": 0.0, "G": 10.0, "B": 0.5, "C": 5.0, "F": 9.5})
    adata = adata[~((adata.obs["cell_type"] == "G") & (adata.obs["condition"] == "stimulated"))].copy()
    assert sorted(types_to_predict(adata, KEYS).index) == ["A", "G"]
    assert choose_folds(adata, KEYS, ["B", "C", "F"], 2, "nearest", seed=0) == ["B", "F"]


def test_the_selection_plans_and_the_pipeline_passes_the_fold_choice(monkeypatch):
    adata = _types_on_a_line({"A": 0.0, "B": 1.0, "C": 8.0, "D": 2.0, "E": 9.0, "F": 10.0})
    folds, _ = model_selection._plan(adata, KEYS, 1, None, 2, 0, "nearest")
    assert folds == ["B", "D"]
    seen = {}
    monkeypatch.setattr(model_selection, "fit_self_tuned", lambda adata, **kwargs: seen.update(kwargs))
    model_selection.fit_recommended(
        adata, cell_type_key="cell_type", condition_key="condition", source="control", target="stimulated",
        fold_choice="nearest",
    )  # fmt: skip
    assert seen["fold_choice"] == "nearest"
