"""The calibration of an ensemble's per-gene intervals, from the inner folds of its selection.

Each inner fold of :func:`~scvi_trvae.model_selection.select_hyperparameters` knows its held-out type's true mean
response ``t``, trVAE's mean response ``m`` and the pooled shift ``p`` of the other types (per gene, on the
prediction scale; of the chosen kind, :func:`scvi_trvae.baselines.reference_shift`). With the chosen weight ``w``
the pipeline's predicted mean response is ``w * m + (1 - w) * p``
(the deviations of the blend have mean zero), so the fold's errors are ``t - w * m - (1 - w) * p``. Their
conformal quantile over the folds, normalised by each fold's :func:`~scvi_trvae._intervals.response_scale`, is
the half-width of the intervals in units of the scale. Only the training cells given to the selection are used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._intervals import conformal_quantile

#: Keys of a calibration (a JSON-friendly dict, saved in ``ensemble.json``).
CALIBRATION_KEYS = ("level", "quantile", "mean_squared_error", "n_folds", "cell_types")


def fold_errors(folds: Sequence[Mapping[str, Any]], shift_weight: float, reference: str = "pooled") -> list[np.ndarray]:
    """Per fold and gene: true minus predicted mean response, ``t - (w * m + (1 - w) * p)`` (``p`` of ``reference``)."""
    return [
        f["true_shift"] - (shift_weight * f["model_shift"] + (1.0 - shift_weight) * f["reference_shifts"][reference])
        for f in folds
    ]


def calibrate(
    folds: Sequence[Mapping[str, Any]], shift_weight: float, level: float, reference: str = "pooled"
) -> dict[str, Any] | None:
    """Calibrate the intervals of the pipeline with weight ``shift_weight`` on the inner folds ``folds``.

    Parameters
    ----------
    folds
        :func:`scvi_trvae._inner_folds.fold_responses` of each inner fold (of the chosen configuration).
    shift_weight
        The chosen ``w``.
    reference
        The chosen kind of reference shift.
    level
        Share of genes the intervals should hold, in (0, 1).

    Returns
    -------
    ``level``; ``quantile`` (half-width of the intervals in units of the scale); ``mean_squared_error``, the mean
    over folds and genes of ``(error / scale) ** 2`` (the few-shot prior's variance in units of the squared scale);
    ``n_folds`` and the folds' ``cell_types``. ``None`` without folds.
    """
    if not folds:
        return None
    errors = fold_errors(folds, shift_weight, reference)
    scales = [np.asarray(f["scale"], dtype=np.float64) for f in folds]
    normalised = np.concatenate([e / s for e, s in zip(errors, scales, strict=True)])
    return {
        "level": float(level),
        "quantile": conformal_quantile(errors, scales, level),
        "mean_squared_error": float(np.mean(normalised[np.isfinite(normalised)] ** 2)),
        "n_folds": len(folds),
        "cell_types": [str(f["cell_type"]) for f in folds],
    }


def calibration_problems(calibration: Any) -> list[str]:
    """List what is wrong with a calibration read from ``ensemble.json`` (``None``: none saved, nothing wrong)."""
    if calibration is None:
        return []
    if not isinstance(calibration, dict) or any(k not in calibration for k in CALIBRATION_KEYS):
        return [f"'calibration' must be null or a mapping with keys {list(CALIBRATION_KEYS)}, got {calibration!r}"]
    level, quantile, mse = (calibration[k] for k in ("level", "quantile", "mean_squared_error"))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (level, quantile, mse))
    if not numbers or not 0 < level < 1 or not quantile >= 0 or not mse >= 0:
        return [f"'calibration' needs a level in (0, 1) and a quantile and error >= 0, got {calibration!r}"]
    return []
