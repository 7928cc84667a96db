"""Per-gene intervals for the predicted mean response, calibrated by split-conformal prediction.

The predicted mean response of gene ``g`` (mean prediction minus mean source expression) gets the interval
``prediction_g ± q * scale_g``. ``scale_g`` says how hard gene ``g`` is to predict: the spread (standard
deviation) of its response across the training cell types, so genes whose response differs from type to type
get wider intervals. ``q`` comes from the inner leave-one-cell-type-out folds of the training cells: in each
fold the held-out type's true response is known, and ``q`` is the conformal quantile of the normalised errors
``|true_g - predicted_g| / scale_g`` over the genes of every fold. The outer held-out cells are never seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_INTERVAL_LEVEL", "conformal_quantile", "response_scale", "shift_intervals"]

#: The share of genes whose true response an interval should hold, by default.
DEFAULT_INTERVAL_LEVEL = 0.9
#: Scales below this share of the median scale are raised to it, so that no interval has zero width.
SCALE_FLOOR = 0.1


def response_scale(type_shifts: np.ndarray) -> np.ndarray:
    """Per-gene spread of the response across cell types, floored at a share of its median.

    Parameters
    ----------
    type_shifts
        One row per training cell type: its mean expression in the target condition minus that in the source
        condition, per gene. At least two rows.
    """
    type_shifts = np.asarray(type_shifts, dtype=np.float64)
    if type_shifts.ndim != 2 or type_shifts.shape[0] < 2:
        raise ValueError(f"response_scale needs the shifts of at least 2 cell types, got shape {type_shifts.shape}.")
    spread = type_shifts.std(axis=0, ddof=1)
    floor = SCALE_FLOOR * float(np.median(spread))
    return np.maximum(spread, floor if floor > 0 else np.finfo(np.float64).tiny)


def conformal_quantile(
    errors: Sequence[np.ndarray], scales: Sequence[np.ndarray], level: float = DEFAULT_INTERVAL_LEVEL
) -> float:
    """Conformal quantile of the normalised errors ``|error| / scale`` pooled over the inner folds.

    Parameters
    ----------
    errors
        Per inner fold: true minus predicted mean response of each gene.
    scales
        Per inner fold: :func:`response_scale` of the cell types that fold was trained on.
    level
        Share of genes the intervals should hold, in (0, 1).

    Returns
    -------
    The ``ceil((n + 1) * level) / n`` empirical quantile of the ``n`` normalised errors (``inf`` when ``n`` is
    too small for that level).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}.")
    if len(errors) != len(scales) or not errors:
        raise ValueError("conformal_quantile needs one array of scales per fold of errors, and at least one fold.")
    scores = np.concatenate([np.abs(e) / s for e, s in zip(errors, scales, strict=True)])
    scores = scores[np.isfinite(scores)]
    rank = math.ceil((scores.size + 1) * level)
    if rank > scores.size:
        return math.inf
    return float(np.partition(scores, rank - 1)[rank - 1])


def shift_intervals(predicted: np.ndarray, scale: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of ``predicted ± quantile * scale``, per gene."""
    half_width = quantile * np.asarray(scale, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    return predicted - half_width, predicted + half_width
