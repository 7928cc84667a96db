"""Scores of a prediction against each cell's own true response, which only synthetic data know.

A real experiment never measures the same cell in two conditions, so :mod:`scvi_trvae.metrics` compares
populations; these scores sit with the synthetic data sets in :mod:`scvi_trvae.datasets`, the only data that
have such a truth. :func:`~scvi_trvae.datasets.synthetic_perturbation` knows each control cell's noise-free
counterfactual (:func:`~scvi_trvae.datasets.synthetic_counterfactual`): a prediction can be scored cell by cell,
which shows whether a method follows each cell's state or only the average response.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .metrics import gene_indices, var_names_of
from .utils import as_dense

if TYPE_CHECKING:
    from anndata import AnnData

#: The scores of :func:`ground_truth_scores`, with their names in words.
GROUND_TRUTH_KEYS: dict[str, str] = {
    "paired_rmse": "paired error",
    "shift_error": "mean-response error",
    "cell_shift_r": "per-cell shift r",
    "spread_ratio": "spread ratio",
}


def ground_truth_scores(pred: Any, control: Any, true_response: np.ndarray, genes: Any = None) -> dict[str, float]:
    """Score a prediction of each control cell against that cell's own true response.

    Parameters
    ----------
    pred
        The prediction, one row per control cell in the same order (AnnData, array or sparse matrix).
    control
        The control cells it was predicted from.
    true_response
        Each control cell's true response, cells x genes (e.g. :func:`~scvi_trvae.datasets.synthetic_true_response`).
    genes
        The genes of the per-cell scores, as :func:`~scvi_trvae.metrics.gene_indices` reads them: integer indices,
        a boolean mask, or names when ``pred`` or ``control`` is an AnnData (default: all genes).

    Returns
    -------
    ``paired_rmse``: root mean squared difference between each predicted cell and its control cell plus its true
    response, over the cells and ``genes``; ``shift_error``: RMSE of the predicted mean response against the true
    mean response over all genes (how well the average is predicted, whatever single cells do);
    ``cell_shift_r``: Pearson r, over cells x ``genes``, of each cell's deviation from the mean predicted response
    against its deviation from the mean true response (does the prediction follow each cell?); ``spread_ratio``:
    the cell-to-cell standard deviation of the predicted response over the true one, averaged over ``genes``
    (0 for a constant shift). The last two are NaN when the true response is the same for every cell.
    """
    var_names = var_names_of(pred, control)
    control = as_dense(control, "control")
    pred = as_dense(pred, "pred")
    index = gene_indices(genes, control.shape[1], var_names)
    true_response = np.asarray(true_response, dtype=np.float64)
    if not pred.shape == true_response.shape == control.shape:
        raise ValueError(
            f"pred {pred.shape} and true_response {true_response.shape} must be cells x genes of the control "
            f"{control.shape}"
        )
    response = pred - control
    scores = {
        "paired_rmse": float(np.sqrt(((response - true_response)[:, index] ** 2).mean())),
        "shift_error": float(np.sqrt(((response.mean(0) - true_response.mean(0)) ** 2).mean())),
        "cell_shift_r": float("nan"),
        "spread_ratio": float("nan"),
    }
    true_sd = true_response[:, index].std(0)
    if (true_sd < 1e-6).all():  # every cell has the same true response: nothing to follow
        return scores
    predicted_deviation = (response - response.mean(0))[:, index].ravel()
    true_deviation = (true_response - true_response.mean(0))[:, index].ravel()
    scores["cell_shift_r"] = (
        float(np.corrcoef(predicted_deviation, true_deviation)[0, 1]) if predicted_deviation.std() > 1e-8 else 0.0
    )
    scores["spread_ratio"] = float((response[:, index].std(0) / np.maximum(true_sd, 1e-8)).mean())
    return scores


def synthetic_true_response(
    control: AnnData, source: str, target: str, cell_type: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's true response in a :func:`~scvi_trvae.datasets.synthetic_perturbation` data set, and its genes.

    The response from ``source`` to ``target`` of each cell, and the response genes of its cell type.

    Parameters
    ----------
    control
        Cells of such a data set (in ``source``).
    source, target
        Conditions of the data set.
    cell_type
        The cells' type, whose response genes are returned (default: the type of the first cell).

    Returns
    -------
    The responses (cells x genes, the counterfactual in ``target`` minus that in ``source``) and the indices of the
    genes with a true effect in ``cell_type`` under ``target`` (all genes when ``target`` is the control).
    """
    from .datasets import synthetic_counterfactual

    response = synthetic_counterfactual(control, target) - synthetic_counterfactual(control, source)
    cell_type = str(control.obs["cell_type"].iloc[0]) if cell_type is None else cell_type
    key = f"response_lfc_{target}"
    if key not in control.varm:
        return response, np.arange(control.n_vars)
    # the data set's own cell-type order: a subset's categories may have lost the other types
    column = list(control.uns["synthetic_perturbation"]["cell_types"]).index(cell_type)
    return response, np.flatnonzero(np.abs(control.varm[key][:, column]) > 0)
