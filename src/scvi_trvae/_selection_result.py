"""What a hyperparameter selection returns (:func:`scvi_trvae.model_selection.select_hyperparameters`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class SelectionResult:
    """What :func:`~scvi_trvae.model_selection.select_hyperparameters` found.

    Attributes
    ----------
    table
        One row per (configuration, inner fold, shift weight, deviation weight): the configuration, the
        inner held-out cell type, ``shift_weight``, ``deviation_weight``, the metrics of
        :func:`scvi_trvae.metrics.evaluate_prediction` and ``score`` (``pearson_delta_deg - edist_scaled``;
        higher is better).
    summary
        One row per (configuration, shift weight, deviation weight): the mean of each metric over the inner
        folds, sorted best first.
    best_config
        The winning configuration (model and training arguments).
    best_shift_weight
        The winning ``w``.
    best_deviation_weight
        The winning ``lambda``.
    best_reference_shift
        The winning kind of reference shift (:func:`scvi_trvae.baselines.reference_shift`).
    best_spread_scaling
        Whether the winning blend scales the observed cells' spread (:func:`scvi_trvae.baselines.reference_spread`).
    inner_cell_types
        The cell types held out in turn.
    stopped_early
        Whether the time budget stopped the search before every configuration was evaluated.
    seconds
        Wall-clock seconds the selection took.
    extra
        Anything a caller wants to keep with the result (empty by default).
    fold_responses
        Per inner fold of the best configuration, its per-gene mean responses on the prediction scale
        (:func:`scvi_trvae._inner_folds.fold_responses`): what calibrates the ensemble's intervals.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    best_config: dict[str, Any]
    best_shift_weight: float
    inner_cell_types: list[str]
    stopped_early: bool = False
    seconds: float = 0.0
    best_deviation_weight: float = 1.0
    best_reference_shift: str = "pooled"
    best_spread_scaling: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    fold_responses: list[dict[str, Any]] = field(default_factory=list)
