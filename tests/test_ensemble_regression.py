"""Ensemble and recommended-pipeline predictions of log-normalised data equal those before issue 20's rework.

``tests/fixtures/ensemble_expected.npz`` was written by this file's ``__main__`` on main cb9e7a5 (before the
ensemble shared one training AnnData and trained through ``_fitting.train_model``); the arrays below must not move.
Run ``python tests/test_ensemble_regression.py`` only to regenerate it after a deliberate change of the numbers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from make_fixtures import tiny_adata

from scvi_trvae import TRVAE, TRVAEEnsemble, model_selection

FIXTURE = Path(__file__).parent / "fixtures" / "ensemble_expected.npz"
TASK = {"source": "control", "target": "stimulated"}


def _control(adata):
    mask = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "control")).to_numpy()
    return adata[mask].copy()


def outputs() -> dict[str, np.ndarray]:
    """Predictions of a 2-member ensemble (w = 1 and a blend) and of ``fit_recommended``, all fixed-seed."""
    torch.set_num_threads(1)
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    ensemble = TRVAEEnsemble(adata, n_members=2, n_hidden=16, n_latent=4)
    ensemble.train(max_epochs=2, batch_size=16, enable_progress_bar=False, accelerator="cpu")
    control = _control(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # cell_type_key at prediction time (the old spelling)
        blended = ensemble.predict_perturbation(control, shift_weight=0.5, deviation_weight=0.25,
                                                cell_type_key="cell_type", **TASK).X  # fmt: skip
    fitted, selection = model_selection.fit_recommended(
        tiny_adata(),
        cell_type_key="cell_type",
        condition_key="condition",
        n_members=2,
        max_epochs=1,
        progress_bar=False,
        accelerator="cpu",
        reference_shifts=("pooled",),
        spread_scalings=(False,),
        **TASK,
    )  # fmt: skip  (the pooled reference shift alone, the spread as observed: the pipeline as the fixture was made)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        recommended = fitted.predict_perturbation(control, cell_type_key="cell_type", **TASK).X
    return {
        "ensemble": np.asarray(ensemble.predict_perturbation(control, **TASK).X),
        "blended": np.asarray(blended),
        "recommended": np.asarray(recommended),
        "selection_scores": selection.summary["score"].to_numpy(),
        "weights": np.array([selection.best_shift_weight, selection.best_deviation_weight]),
    }


def test_log_scale_predictions_are_unchanged():
    expected = np.load(FIXTURE)
    got = outputs()
    for key in expected.files:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


if __name__ == "__main__":
    np.savez(FIXTURE, **outputs())
