"""The one blend of a model's per-cell responses with a pooled shift (the recommended pipeline's last step).

A prediction of a cell type's cells is split into its mean response ``m`` (over those cells) and each cell's
deviation ``d_i`` from it. The blend takes the mean from ``w * m + (1 - w) * pooled`` and keeps the deviations
scaled by ``lambda``::

    x_i + w * m + (1 - w) * pooled + lambda * d_i

``w = lambda = 1`` is the model's own prediction. ``lambda = w`` is the older blend
``x + w * (prediction - x) + (1 - w) * pooled``, which shrank each cell's deviation with the mean. The model is
worse at the mean response of an unseen cell type than the pooled shift of the other types, but its deviations
follow each cell's state (``docs/accuracy.md``): so the two are weighted separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData

from .baselines import scaled_spread
from .utils import TARGET_LIBRARY_SIZE, as_dense

if TYPE_CHECKING:
    from .model._model import TRVAE


def check_blend_weight(value: float, name: str, upper: float | None = 1.0) -> float:
    """Return ``value`` as a float after checking it lies in ``[0, upper]``."""
    value = float(value)
    if not np.isfinite(value) or value < 0.0 or (upper is not None and value > upper):
        bound = f"between 0 and {upper:g}" if upper is not None else "finite and >= 0"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return value


def blend_prediction(
    observed: np.ndarray,
    predicted: np.ndarray,
    pooled: np.ndarray,
    shift_weight: float,
    deviation_weight: float,
    groups: Sequence | np.ndarray | None = None,
    spread: np.ndarray | None = None,
) -> np.ndarray:
    """Return ``x + w * m + (1 - w) * pooled + lambda * d`` per group of cells, clipped at zero (float32).

    With ``spread``, ``x`` is first replaced by the group's mean observation plus each cell's deviation from it
    scaled per gene by ``spread`` (:func:`scvi_trvae.baselines.scaled_spread`); ``m`` and ``d`` are still taken
    from the model's response to the observed cells.

    Parameters
    ----------
    observed
        The cells' observed expression ``x`` (cells x genes).
    predicted
        The model's prediction of the same cells on the same scale (cells x genes).
    pooled
        The pooled shift of the other cell types (genes).
    shift_weight
        ``w``: the weight of the model's mean response against the pooled shift.
    deviation_weight
        ``lambda``: the weight of each cell's deviation from the model's mean response.
    groups
        One label per cell (e.g. its cell type): mean responses are taken within each group. ``None``: one group.
    spread
        Per-gene factors of the observed cells' spread around their mean
        (:func:`scvi_trvae.baselines.reference_spread`); ``None``: the cells as observed.
    """
    observed = np.asarray(observed, dtype=np.float64)
    response = np.asarray(predicted, dtype=np.float64) - observed
    labels = np.zeros(len(observed), dtype=int) if groups is None else np.asarray(groups)
    blended = np.empty_like(observed)
    for label in np.unique(labels):
        rows = labels == label
        mean = response[rows].mean(0)
        base = observed[rows] if spread is None else scaled_spread(observed[rows], spread)
        blended[rows] = (
            base + shift_weight * mean + (1.0 - shift_weight) * pooled + deviation_weight * (response[rows] - mean)
        )
    return np.clip(blended, 0.0, None).astype(np.float32)


def on_prediction_scale(model: TRVAE, adata: AnnData) -> AnnData:
    """``adata``'s cells on the scale of ``model``'s predictions, as an AnnData with ``adata.obs``.

    The scale is that of :meth:`scvi_trvae.TRVAE.predict_perturbation` (and of the ``x`` in its
    counterfactual ``x + shift``): for ``likelihood='mse'`` the registered matrix itself (``adata`` is returned
    as it is when that is ``X``); for count likelihoods ``log1p`` of the registered counts per
    :data:`~scvi_trvae.utils.TARGET_LIBRARY_SIZE` (each cell divided by its own total, as the model's
    counterfactual does), the default output of a count model's prediction. Observed cells, pooled shifts and
    blends of both kinds of model are all computed on this scale.

    Parameters
    ----------
    model
        A trained model: its likelihood and its registered layer are used.
    adata
        Cells with the model's genes (the registered layer present).
    """
    layer = model.adata_manager.registry["setup_args"].get("layer")
    if not model.module.is_count_model and layer is None:
        return adata
    matrix = adata.X if layer is None else adata.layers[layer]
    values = as_dense(matrix, f"layer {layer!r}" if layer else "X")
    if model.module.is_count_model:
        totals = np.maximum(values.sum(1, keepdims=True), 1.0)
        values = np.log1p(values / totals * TARGET_LIBRARY_SIZE)
    return AnnData(X=values.astype(np.float32), obs=adata.obs)
