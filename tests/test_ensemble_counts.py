"""The recommended pipeline on count data: NB members, blended on the log1p scale of counts per 10,000."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae import TRVAE, TRVAEEnsemble, model_selection
from scvi_trvae._blend import on_prediction_scale
from scvi_trvae._fitting import fresh_copy
from scvi_trvae.baselines import pooled_shift
from scvi_trvae.datasets import synthetic_perturbation

TASK = {"source": "control", "target": "stimulated"}
COUNTS = {"layer": "counts", "is_count_data": True}
TRAIN = {"max_epochs": 2, "batch_size": 32, "enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def count_split():
    """Training cells (type_A stimulated held out) with raw counts, and type_A's control cells."""
    adata = synthetic_perturbation(
        n_cell_types=3, n_genes=40, n_cells_per_group=30, n_response_genes=8, n_marker_genes=5, seed=4
    )
    held_out = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    control = train[((train.obs["cell_type"] == "type_A") & (train.obs["condition"] == "control")).to_numpy()].copy()
    return train, control


@pytest.fixture(scope="module")
def count_ensemble(count_split):
    train, _ = count_split
    TRVAE.setup_anndata(train, condition_key="condition", **COUNTS)
    ensemble = TRVAEEnsemble(train, n_members=2, labels_key="cell_type", n_hidden=16, n_latent=4)
    ensemble.train(**TRAIN)
    return ensemble


def test_prediction_scale_of_counts_is_the_log_normalised_expression(count_ensemble, count_split):
    _, control = count_split
    member = count_ensemble.members[0]
    assert member.module.is_count_model
    scaled = on_prediction_scale(member, control)
    # synthetic X is log1p of counts per 10,000: the scale a count model predicts on by default
    np.testing.assert_allclose(scaled.X, control.X, rtol=1e-5, atol=1e-5)
    assert list(scaled.obs_names) == list(control.obs_names)


def test_count_ensemble_blends_on_the_prediction_scale(count_ensemble, count_split):
    train, control = count_split
    trvae = count_ensemble.predict_perturbation(control, **TASK)
    assert np.isfinite(trvae.X).all() and (trvae.X >= 0).all()
    observed = on_prediction_scale(count_ensemble.members[0], control).X.astype(np.float64)
    shift = pooled_shift(
        on_prediction_scale(count_ensemble.members[0], train), cell_type_key="cell_type", condition_key="condition",
        exclude=["type_A"], **TASK,
    )  # fmt: skip
    pooled = count_ensemble.predict_perturbation(control, shift_weight=0.0, deviation_weight=0.0, **TASK)
    np.testing.assert_allclose(pooled.X, np.clip(observed + shift, 0, None), rtol=1e-5, atol=1e-5)
    half = count_ensemble.predict_perturbation(control, shift_weight=0.5, deviation_weight=0.5, **TASK)
    expected = np.clip(observed + 0.5 * (trvae.X - observed) + 0.5 * shift, 0, None)
    np.testing.assert_allclose(half.X, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(half.X, trvae.X)


def test_fit_recommended_on_counts_end_to_end(count_split):
    train, control = fresh_copy(count_split[0]), count_split[1]  # unregistered, as a user's AnnData
    ensemble, selection = model_selection.fit_recommended(
        train, cell_type_key="cell_type", condition_key="condition", n_members=2, max_epochs=1, progress_bar=False,
        setup_kwargs=COUNTS, accelerator="cpu", **TASK,
    )  # fmt: skip
    assert all(member.module.is_count_model for member in ensemble.members)
    assert ensemble.labels_key == "cell_type"
    assert (ensemble.shift_weight, ensemble.deviation_weight) == (
        selection.best_shift_weight,
        selection.best_deviation_weight,
    )
    assert np.isfinite(selection.summary["score"]).all()
    pred = ensemble.predict_perturbation(control, **TASK)  # the chosen blend, whatever w and lambda are
    assert pred.shape == control.shape and np.isfinite(pred.X).all() and (pred.X >= 0).all()
    assert pred.uns["trvae_prediction"]["shift_weight"] == selection.best_shift_weight
    assert "_scvi_uuid" not in train.uns  # the user's AnnData was copied, not registered
