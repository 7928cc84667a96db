"""The predicted mean response of an ensemble's prediction: its intervals, and its few-shot correction.

:meth:`~scvi_trvae.TRVAEEnsemble.predict_perturbation` calls :func:`annotate_response` on its prediction. The
mean response is ``mean(prediction) - mean(source cells)`` per gene, on the prediction scale
(:func:`~scvi_trvae._blend.on_prediction_scale`).

Few-shot: given ``k`` cells of the predicted type measured under ``target``, their own mean response ``r_k``
and the model's ``r_model`` are combined by empirical-Bayes shrinkage, per gene::

    r = r_model + omega * (r_k - r_model),   omega = tau2 / (tau2 + s2 / k)

``tau2 = c * scale ** 2`` is the variance of the model's error on unseen types (``c`` the calibration's mean
squared normalised error on the inner folds, ``scale`` the spread of the response across training types) and
``s2`` the within-type variance of the gene in ``target``, averaged over the training cell types (a stable
estimate: ``k`` cells alone would give a noisy one). Every predicted cell is shifted by ``r - r_model``, and the
interval combines the model's remaining error with the sampling error of the ``k`` cells (:func:`few_shot_scale`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from anndata import AnnData

from ._blend import on_prediction_scale
from ._intervals import response_scale, shift_intervals
from .baselines import cell_type_shifts
from .utils import as_dense

if TYPE_CHECKING:
    from ._ensemble import TRVAEEnsemble

#: ``var`` columns of the predicted mean response and of its interval.
SHIFT_VAR, LOWER_VAR, UPPER_VAR = "trvae_shift", "trvae_shift_lower", "trvae_shift_upper"


def shrinkage_weights(prior_variance: np.ndarray, cell_variance: np.ndarray, k: int) -> np.ndarray:
    """``omega = tau2 / (tau2 + s2 / k)`` per gene: the weight of the ``k`` measured cells' mean response."""
    noise = np.asarray(cell_variance, dtype=np.float64) / k
    prior = np.asarray(prior_variance, dtype=np.float64)
    total = prior + noise
    return np.divide(prior, total, out=np.ones_like(total), where=total > 0)


def within_type_variance(
    cells: AnnData, keys: tuple[str, str], condition: str, exclude: np.ndarray
) -> np.ndarray:  # fmt: skip
    """Per-gene variance of each cell type's cells in ``condition`` (types but ``exclude``), averaged over the types.

    ``keys`` are the ``obs`` columns of cell types and conditions; types with fewer than 2 such cells are left out.
    """
    types = cells.obs[keys[0]].astype(str).to_numpy()
    chosen = (cells.obs[keys[1]].astype(str).to_numpy() == str(condition)) & ~np.isin(types, exclude)
    variances = []
    for cell_type in np.unique(types[chosen]):
        rows = chosen & (types == cell_type)
        if rows.sum() >= 2:
            variances.append(as_dense(cells.X[rows]).var(0, ddof=1))
    if not variances:
        raise ValueError(f"No training cell type has 2 or more cells in {condition!r} to estimate the noise from.")
    return np.mean(variances, axis=0)


def annotate_response(
    ensemble: TRVAEEnsemble,
    pred: AnnData,
    reference: AnnData,
    conditions: tuple[str, str],
    labels_key: str | None,
    measured: AnnData | None = None,
) -> None:
    """Write the mean response (and its interval) into ``pred.var``; with ``measured``, correct ``pred.X`` first.

    Parameters
    ----------
    ensemble
        The trained ensemble that made ``pred``.
    pred
        Its prediction (modified in place: ``X`` with ``measured``, ``var`` and ``uns['trvae_prediction']``).
    reference
        The AnnData holding the predicted cells' observations (``pred.obs_names``).
    conditions
        ``(source, target)``.
    labels_key
        ``obs`` column of cell types (``None``: no intervals, no few-shot).
    measured
        Cells of the predicted type measured under ``target`` (inputs only: never part of ``pred``).
    """
    member = ensemble.members[0]
    observed = as_dense(on_prediction_scale(member, reference[pred.obs_names]).X).mean(0)
    shift = as_dense(pred.X).mean(0) - observed
    needed = ensemble.calibration is not None or measured is not None
    context = _training_context(ensemble, pred, conditions, labels_key) if needed else None
    info: dict[str, Any] = pred.uns["trvae_prediction"]
    scale = None if context is None else context["scale"]
    if measured is not None:
        if pred.obs_names.isin(measured.obs_names).any():
            raise ValueError("measured shares cells with those to predict: pass measured cells of target only.")
        omega, corrected, noise_sd = few_shot_shift(ensemble, shift, observed, measured, context)
        pred.X = np.clip(as_dense(pred.X) + (corrected - shift), 0.0, None).astype(np.float32)
        shift = as_dense(pred.X).mean(0) - observed
        scale = few_shot_scale(scale, omega, noise_sd, ensemble.calibration)
        info["few_shot"] = {"n_cells": int(measured.n_obs), "median_weight": float(np.median(omega))}
    pred.var[SHIFT_VAR] = shift.astype(np.float32)
    calibration = ensemble.calibration
    if calibration is not None and scale is not None:
        lower, upper = shift_intervals(shift, scale, calibration["quantile"])
        pred.var[LOWER_VAR], pred.var[UPPER_VAR] = lower.astype(np.float32), upper.astype(np.float32)
        info["interval_level"] = calibration["level"]


def _training_context(
    ensemble: TRVAEEnsemble, pred: AnnData, conditions: tuple[str, str], labels_key: str | None
) -> dict[str, Any] | None:
    """Return the training cells on the prediction scale and their types' response spread (``None``: unknown)."""
    if labels_key is None or labels_key not in pred.obs or labels_key not in ensemble.adata.obs:
        return None
    member = ensemble.members[0]
    training = on_prediction_scale(member, ensemble.adata)
    predicted_types = np.unique(pred.obs[labels_key].astype(str).to_numpy())
    shifts = cell_type_shifts(
        training, cell_type_key=labels_key, condition_key=member.condition_key, source=conditions[0],
        target=conditions[1], exclude=predicted_types,
    )  # fmt: skip
    if len(shifts) < 2:
        return None
    keys = (labels_key, member.condition_key)
    return {"training": training, "scale": response_scale(shifts.to_numpy()), "exclude": predicted_types,
            "keys": keys, "target": conditions[1]}  # fmt: skip


def few_shot_scale(
    scale: np.ndarray, omega: np.ndarray, noise_sd: np.ndarray, calibration: dict[str, Any]
) -> np.ndarray:  # fmt: skip
    """Return the scale of the few-shot intervals (``half-width = quantile * scale``), the two errors combined.

    ``r - truth = (1 - omega) * (r_model - truth) + omega * (r_k - truth)``: the model's error, bounded by
    ``quantile * scale`` at the calibrated level, and the sampling error of the ``k`` cells' mean (sd
    ``noise_sd``, its normal quantile at that level) are added in quadrature.
    """
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + calibration["level"] / 2))
    quantile = max(float(calibration["quantile"]), np.finfo(np.float64).tiny)
    return np.sqrt(((1.0 - omega) * scale) ** 2 + (omega * z * noise_sd / quantile) ** 2)


def few_shot_shift(
    ensemble: TRVAEEnsemble,
    shift: np.ndarray,
    observed: np.ndarray,
    measured: AnnData,
    context: dict[str, Any] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(omega, r, sd)``: the measured cells' weight per gene, the corrected response, the sd of their mean."""
    calibration = ensemble.calibration
    if calibration is None or context is None:
        raise ValueError(
            "measured= needs a calibrated ensemble whose training cell types are known: fit it with "
            "scvi_trvae.model_selection.fit_recommended (or fit_self_tuned), which calibrates it on the inner "
            "folds, and predict cells of an obs column labels_key= with at least 2 other training cell types."
        )
    if measured.n_obs < 1 or list(measured.var_names) != list(ensemble.adata.var_names):
        raise ValueError(
            f"measured must hold 1 or more cells with the ensemble's {ensemble.adata.n_vars} genes in its order, "
            f"got {measured.n_obs} cells x {measured.n_vars} genes."
        )
    measured_mean = as_dense(on_prediction_scale(ensemble.members[0], measured).X).mean(0)
    prior = calibration["mean_squared_error"] * context["scale"] ** 2
    noise = within_type_variance(context["training"], context["keys"], context["target"], context["exclude"])
    omega = shrinkage_weights(prior, noise, measured.n_obs)
    return omega, shift + omega * (measured_mean - observed - shift), np.sqrt(noise / measured.n_obs)
