"""Intervals with coverage and the few-shot path of the recommended pipeline (issue 24)."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

from scvi_trvae import TRVAEEnsemble, model_selection, pl
from scvi_trvae._calibration import calibrate
from scvi_trvae._few_shot import LOWER_VAR, SHIFT_VAR, UPPER_VAR, shrinkage_weights
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.io import ModelFileError

matplotlib.use("Agg")

TASK = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}


@pytest.fixture(scope="module")
def fitted():
    """The recommended pipeline on 4 cell types, type_A's stimulated cells held out (the outer split)."""
    adata = synthetic_perturbation(
        n_cell_types=5, n_genes=40, n_cells_per_group=30, n_response_genes=8, n_marker_genes=5, seed=3
    )
    outer = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~outer].copy()
    ensemble, selection = model_selection.fit_recommended(
        train, **TASK, n_members=2, max_epochs=3, progress_bar=False, enable_progress_bar=False
    )
    control = train[((train.obs["cell_type"] == "type_A") & (train.obs["condition"] == "control")).to_numpy()].copy()
    return ensemble, selection, control, adata[outer].copy()


def _predict(ensemble, control, **kwargs):
    return ensemble.predict_perturbation(control, source="control", target="stimulated", **kwargs)


def _truth(real, control) -> np.ndarray:
    return np.asarray(real.X.mean(0)).ravel() - np.asarray(control.X.mean(0)).ravel()


def test_calibration_uses_only_the_inner_folds(fitted):
    ensemble, selection, _, _ = fitted
    inner = [fold["cell_type"] for fold in selection.fold_responses]
    assert inner == selection.inner_cell_types and "type_A" not in inner
    assert ensemble.calibration["cell_types"] == inner and ensemble.calibration["level"] == 0.9
    w, kind = selection.best_shift_weight, selection.best_reference_shift
    errors = [f["true_shift"] - w * f["model_shift"] - (1 - w) * f["reference_shifts"][kind]
              for f in selection.fold_responses]  # fmt: skip
    normalised = np.concatenate([e / f["scale"] for e, f in zip(errors, selection.fold_responses, strict=True)])
    assert ensemble.calibration["mean_squared_error"] == pytest.approx(np.mean(normalised**2))
    assert np.mean(np.abs(normalised) <= ensemble.calibration["quantile"]) >= 0.9


def test_intervals_are_returned_and_ordered(fitted):
    ensemble, _, control, _ = fitted
    pred = _predict(ensemble, control)
    lower, shift, upper = (pred.var[c].to_numpy() for c in (LOWER_VAR, SHIFT_VAR, UPPER_VAR))
    assert np.all(lower < shift) and np.all(shift < upper)
    observed = np.asarray(control.X.mean(0)).ravel()
    np.testing.assert_allclose(shift, np.asarray(pred.X).mean(0) - observed, atol=1e-5)
    assert pred.uns["trvae_prediction"]["interval_level"] == 0.9


def test_conformal_intervals_cover_the_nominal_share_of_genes():
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.1, 2.0, size=400)

    def fold():
        truth = rng.normal(0.0, scale)
        return {"cell_type": "x", "model_shift": np.zeros(400), "reference_shifts": {"pooled": np.zeros(400)},
                "true_shift": truth,
                "scale": scale}  # fmt: skip

    calibration = calibrate([fold() for _ in range(5)], 1.0, 0.9)
    new = [fold()["true_shift"] for _ in range(20)]
    coverage = np.mean([np.abs(t) <= calibration["quantile"] * scale for t in new])
    assert abs(coverage - 0.9) < 0.02
    assert calibration["mean_squared_error"] == pytest.approx(1.0, abs=0.1)


def test_few_shot_with_the_true_mean_reduces_the_error(fitted):
    ensemble, _, control, real = fitted
    truth = _truth(real, control)
    before = np.abs(_predict(ensemble, control).var[SHIFT_VAR].to_numpy() - truth).mean()
    after_pred = _predict(ensemble, control, measured=real)
    after = np.abs(after_pred.var[SHIFT_VAR].to_numpy() - truth).mean()
    assert after < 0.7 * before
    assert after_pred.uns["trvae_prediction"]["few_shot"]["n_cells"] == real.n_obs
    widths = [(p.var[UPPER_VAR] - p.var[LOWER_VAR]).to_numpy() for p in (_predict(ensemble, control), after_pred)]
    assert np.all(widths[1] <= widths[0] + 1e-6)  # the measured cells narrow the intervals


def test_measured_cells_are_inputs_only(fitted):
    ensemble, _, control, real = fitted
    pred = _predict(ensemble, control, measured=real[:5])
    assert list(pred.obs_names) == list(control.obs_names)
    assert not pred.obs_names.isin(real.obs_names).any()
    with pytest.raises(ValueError, match="shares cells"):
        _predict(ensemble, control, measured=control[:3])


def test_few_shot_needs_a_calibration(fitted):
    ensemble, _, control, real = fitted
    calibration, ensemble.calibration = ensemble.calibration, None
    try:
        with pytest.raises(ValueError, match="fit_recommended"):
            _predict(ensemble, control, measured=real[:5])
        assert LOWER_VAR not in _predict(ensemble, control).var
    finally:
        ensemble.calibration = calibration


def test_shrinkage_weights_follow_the_number_of_cells():
    omega = [shrinkage_weights(np.array([1.0, 0.0]), np.array([4.0, 4.0]), k) for k in (1, 4, 1000)]
    assert omega[0][0] == pytest.approx(0.2) and omega[1][0] == pytest.approx(0.5) and omega[2][0] > 0.99
    assert all(w[1] == 0.0 for w in omega)  # no prior variance: the model is trusted


def test_save_load_keeps_the_calibration(fitted, tmp_path):
    ensemble, _, control, _ = fitted
    ensemble.save(tmp_path / "e")
    loaded = TRVAEEnsemble.load(tmp_path / "e", adata=ensemble.adata)
    assert loaded.calibration == ensemble.calibration
    np.testing.assert_allclose(
        _predict(loaded, control).var[UPPER_VAR].to_numpy(), _predict(ensemble, control).var[UPPER_VAR].to_numpy()
    )


def test_old_ensembles_load_and_predict_without_intervals(fitted, tmp_path):
    ensemble, _, control, _ = fitted
    ensemble.save(tmp_path / "old")
    manifest = json.loads((tmp_path / "old" / "ensemble.json").read_text())
    del manifest["calibration"]
    (tmp_path / "old" / "ensemble.json").write_text(json.dumps(manifest))
    loaded = TRVAEEnsemble.load(tmp_path / "old", adata=ensemble.adata)
    pred = _predict(loaded, control)
    assert loaded.calibration is None and SHIFT_VAR in pred.var and LOWER_VAR not in pred.var
    manifest["calibration"] = {"level": 2}
    (tmp_path / "old" / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="calibration"):
        TRVAEEnsemble.load(tmp_path / "old", adata=ensemble.adata)


def test_shift_intervals_plot(fitted):
    ensemble, _, control, real = fitted
    pred = _predict(ensemble, control)
    ax = pl.shift_intervals(pred, real, control, n_genes=3, show=False)
    labels = {t.get_text() for t in ax.texts}
    top = pred.var_names[np.argsort(-np.abs(pred.var[SHIFT_VAR].to_numpy()))[:3]]
    assert set(top) <= labels and any("inside the interval" in t for t in labels)
    assert pl.shift_intervals(pred, show=False).get_xlabel().startswith("genes")
    with pytest.raises(ValueError, match="control"):
        pl.shift_intervals(pred, real, show=False)
