"""The inner folds of :mod:`scvi_trvae.model_selection`: which cell types can be held out, one fold's fit and scores.

A configuration is a dict of :class:`~scvi_trvae.TRVAE` arguments (architecture), loss weights and
``training_steps`` (minibatches of :data:`BATCH_SIZE` cells); :func:`fit_arguments` and :func:`model_arguments`
turn it into the arguments of a fit.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from . import _fitting, metrics
from ._blend import blend_prediction, on_prediction_scale
from ._intervals import response_scale
from ._validation import listed
from .baselines import (
    REFERENCE_SHIFTS,
    cell_type_shifts,
    check_reference_shift,
    check_spread_scaling,
    reference_shift,
    reference_spread,
    similarity_weights,
)
from .data._splitter import epochs_for_steps, steps_for_epochs
from .model._architecture import DEFAULT_N_LAYERS
from .model._model import DEFAULT_TRAINING_STEPS
from .model._module import DEFAULT_KL_WEIGHT, DEFAULT_MMD_WEIGHT
from .utils import as_dense

#: The default configuration of :class:`~scvi_trvae.TRVAE` (always evaluated first): the model's own defaults.
DEFAULT_CONFIG: dict[str, Any] = {
    "n_layers": DEFAULT_N_LAYERS,
    "mmd_weight": DEFAULT_MMD_WEIGHT,
    "kl_weight": DEFAULT_KL_WEIGHT,
    "training_steps": DEFAULT_TRAINING_STEPS,
}
_MODEL_ARGS = ("n_layers", "n_hidden", "n_latent", "dropout_rate", "mmd_on", "use_batch_norm", "use_layer_norm")
_TRAIN_ARGS = ("mmd_weight", "kl_weight")
#: Cells of a minibatch of the selection's fits.
BATCH_SIZE = 128
#: Cells an inner fold's cell type needs in each of ``source`` and ``target``.
MIN_FOLD_CELLS = 3
#: How the inner folds are chosen when more cell types qualify than the folds to hold out: drawn at random, or the
#: types nearest the types to predict (:func:`choose_folds`).
FOLD_CHOICES = ("random", "nearest")


class BlendGrid(NamedTuple):
    """The blends an inner fold scores on one fit: every ``w``, ``lambda``, kind of reference shift and scaling."""

    shift_weights: Sequence[float]
    deviation_weights: Sequence[float]
    reference_shifts: Sequence[str] = ("pooled",)
    spread_scalings: Sequence[bool] = (False,)

    @classmethod
    def checked(
        cls, shift_weights: Sequence[float], deviation_weights: Sequence[float], reference_shifts: Sequence[str] | str,
        spread_scalings: Sequence[bool] = (False,),
    ) -> BlendGrid:  # fmt: skip
        """Return the grid after checking each kind of reference shift and each spread scaling."""
        kinds = (reference_shifts,) if isinstance(reference_shifts, str) else tuple(reference_shifts)
        if not kinds:
            raise ValueError(f"reference_shifts must name one or more of {list(REFERENCE_SHIFTS)}, got none.")
        for kind in kinds:
            check_reference_shift(kind, "each of reference_shifts")
        if isinstance(spread_scalings, bool | np.bool_):
            spread_scalings = (spread_scalings,)
        scalings = tuple(check_spread_scaling(value, "each of spread_scalings") for value in spread_scalings)
        if not scalings:
            raise ValueError("spread_scalings must hold False, True or both, got none.")
        return cls(tuple(shift_weights), tuple(deviation_weights), kinds, scalings)


def training_steps(n_obs: int, max_epochs: int) -> int:
    """Minibatch steps of :data:`BATCH_SIZE` cells in ``max_epochs`` epochs of ``n_obs`` cells: a fixed-length fit."""
    return steps_for_epochs(n_obs, BATCH_SIZE, max_epochs)


def config_epochs(n_obs: int, config: Mapping[str, Any]) -> int:
    """Epochs of the configuration's ``training_steps`` minibatches of :data:`BATCH_SIZE` cells."""
    return epochs_for_steps(n_obs, BATCH_SIZE, int(config.get("training_steps", DEFAULT_CONFIG["training_steps"])))


def fit_arguments(n_obs: int, config: Mapping[str, Any], train_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:meth:`TRVAE.train` arguments of a fit of ``config``: its length and loss weights, then ``train_kwargs``.

    Minibatches hold :data:`BATCH_SIZE` cells unless ``train_kwargs`` give a ``batch_size``; the number of
    epochs is that of the configuration's ``training_steps`` minibatches of :data:`BATCH_SIZE` cells either way.
    """
    weights = {k: v for k, v in config.items() if k in _TRAIN_ARGS}
    return {"max_epochs": config_epochs(n_obs, config), "batch_size": BATCH_SIZE, **weights, **train_kwargs}


def model_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~scvi_trvae.TRVAE` arguments of a configuration (its architecture)."""
    return {k: v for k, v in config.items() if k in _MODEL_ARGS}


def cells_per_type(adata: AnnData, cell_type_key: str, condition_key: str) -> pd.DataFrame:
    return pd.crosstab(adata.obs[cell_type_key].astype(str), adata.obs[condition_key].astype(str))


def inner_cell_types(adata: AnnData, cell_type_key: str, condition_key: str, source: str, target: str) -> list[str]:
    """Return the cell types with at least :data:`MIN_FOLD_CELLS` cells in both ``source`` and ``target``.

    Parameters
    ----------
    adata
        The training cells.
    cell_type_key, condition_key
        ``obs`` columns of cell types and conditions.
    source, target
        The conditions of the task.

    Returns
    -------
    The cell types that can be inner folds, sorted (empty when ``source`` or ``target`` has no cells).
    """
    counts = cells_per_type(adata, cell_type_key, condition_key)
    if source not in counts or target not in counts:
        return []
    enough = (counts[source] >= MIN_FOLD_CELLS) & (counts[target] >= MIN_FOLD_CELLS)
    return sorted(counts.index[enough])


def types_to_predict(adata: AnnData, keys: tuple[str, str, str, str]) -> pd.Series:
    """Return the ``source`` cells of each type with ``source`` cells and no ``target`` cells: the types to predict."""
    cell_type_key, condition_key, source, target = keys
    counts = cells_per_type(adata, cell_type_key, condition_key)
    if source not in counts:
        return pd.Series(dtype=int)
    return counts.loc[(counts[source] > 0) & (counts.get(target, 0) == 0), source]


def choose_folds(
    adata: AnnData, keys: tuple[str, str, str, str], folds: list[str], n_folds: int | None, fold_choice: str,
    seed: int,
) -> list[str]:  # fmt: skip
    """Return at most ``n_folds`` of ``folds`` (sorted): drawn with ``seed``, or the nearest the types to predict.

    ``"nearest"`` ranks the folds by their mean :func:`~scvi_trvae.baselines.similarity_weights` to the types to
    predict (the pipeline's own closeness of ``source`` cells) and falls back to the random draw when there is
    no type to predict.
    """
    if fold_choice not in FOLD_CHOICES:
        raise ValueError(f"fold_choice must be one of {listed(FOLD_CHOICES)}, got {fold_choice!r}.")
    if n_folds is None or len(folds) <= n_folds:
        return folds
    to_predict = types_to_predict(adata, keys)
    if fold_choice == "random" or not len(to_predict):
        return sorted(np.random.default_rng(seed).choice(folds, size=n_folds, replace=False).tolist())
    task = dict(zip(("cell_type_key", "condition_key", "source", "target"), keys, strict=True))
    weights = [similarity_weights(adata, cell_type=cell_type, **task) for cell_type in to_predict.index]
    closeness = pd.concat(weights, axis=1).mean(axis=1)
    return sorted(closeness.reindex(folds).sort_values(ascending=False, kind="stable").index[:n_folds])


def resolve_source_cells(
    adata: AnnData, keys: tuple[str, str, str, str], fold_source_cells: int | str | None
) -> int | None:  # fmt: skip
    """Return the ``source`` cells each inner fold keeps of its held-out type (``None``: all).

    ``"matched"`` is the number of ``source`` cells of the rarest type with ``source`` cells and no ``target``
    cells: the types a user trains on to predict, so that the folds resemble the hardest of them (``None`` when
    there is no such type). A number is checked and kept at :data:`MIN_FOLD_CELLS` or more.
    """
    if fold_source_cells is None:
        return None
    if fold_source_cells == "matched":
        to_predict = types_to_predict(adata, keys)
        return int(to_predict.min()) if len(to_predict) else None
    if isinstance(fold_source_cells, str) or int(fold_source_cells) != fold_source_cells or fold_source_cells < 1:
        raise ValueError(
            f"fold_source_cells must be a positive number of cells, 'matched' or None, got {fold_source_cells!r}."
        )
    return max(int(fold_source_cells), MIN_FOLD_CELLS)


def too_few_folds(adata: AnnData, keys: tuple[str, str, str, str], folds: list[str]) -> str:
    """Say why fewer than 2 cell types can be inner folds, with the cells of each type in ``source`` / ``target``."""
    cell_type_key, condition_key, source, target = keys
    counts = cells_per_type(adata, cell_type_key, condition_key)
    if len(counts) < 2:
        return (
            f"Inner validation holds out one cell type at a time and needs at least 2 cell types, but "
            f"adata.obs[{cell_type_key!r}] has {len(counts)} ({listed(counts.index)})."
        )
    per_type = ", ".join(f"{t} {counts.loc[t, source]} / {counts.loc[t, target]}" for t in counts.index)
    one_sided = [t for t in counts.index if (counts.loc[t, source] > 0) != (counts.loc[t, target] > 0)]
    only = "" if not one_sided else f" Seen in one of the two only (no inner fold): {listed(one_sided)}."
    return (
        f"Inner validation needs at least 2 cell types with at least {MIN_FOLD_CELLS} cells in both {source!r} and "
        f"{target!r} (each is held out in turn, predicted from its {source!r} cells and scored on its {target!r} "
        f"cells); adata has {len(folds)}{': ' + listed(folds) if folds else ''}. Cells per cell type "
        f"({source} / {target}): {per_type}.{only} Train on data with more such cell types."
    )


def score_fold(pred_x: np.ndarray, real: AnnData, control: AnnData, degs: np.ndarray) -> dict[str, float]:
    scores = metrics.evaluate_prediction(pred_x, real, control, degs=degs, seed=0)
    scores = {k: float(scores[k]) for k in metrics.METRIC_KEYS}
    scores["score"] = scores["pearson_delta_deg"] - scores["edist_scaled"]
    return scores


def fold_rows(
    adata: AnnData,
    held_out: str,
    config: dict,
    seed: int,
    keys: tuple[str, str, str, str],
    grid: BlendGrid,
    setup_kwargs,
    train_kwargs,
    responses: list[dict[str, Any]] | None = None,
    source_cells: int | None = None,
) -> list[dict[str, Any]]:
    """Fit ``config`` without ``(held_out, target)``, predict it and score every blend of ``grid``.

    With ``source_cells``, the fold keeps at most that many of ``held_out``'s ``source`` cells (drawn with
    ``seed``), in its training cells and as the cells it predicts from: the fold then resembles a rare cell type
    to predict (:func:`resolve_source_cells`).

    The reference shifts (:func:`scvi_trvae.baselines.reference_shift`) are those of the fold's training cells
    without ``held_out``, and so are the spreads a scaled blend takes (:func:`scvi_trvae.baselines.reference_spread`,
    of the same kind). With ``w = 1`` and the spread as observed the reference shift plays no part: that blend is
    scored once and its scores are repeated for every kind.

    With ``responses``, the fold's per-gene mean responses are appended to it (:func:`fold_responses`): the
    calibration of :mod:`scvi_trvae._calibration`. The scores are the same either way.
    """
    cell_type_key, condition_key, source, target = keys
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    is_held_out = (types == held_out) & (conditions == target)
    is_control = (types == held_out) & (conditions == source)
    dropped = np.zeros_like(is_control)
    if source_cells is not None and is_control.sum() > source_cells:
        rng = np.random.default_rng([seed, zlib.crc32(held_out.encode())])
        kept = rng.choice(np.flatnonzero(is_control), size=source_cells, replace=False)
        dropped = is_control.copy()
        dropped[kept] = False
        is_control &= ~dropped
    fold_train = adata[~(is_held_out | dropped)]
    control, real = adata[is_control], adata[is_held_out]
    model = _fitting.train_model(
        fold_train, seed, model_kwargs=model_arguments(config),
        setup_kwargs={"condition_key": condition_key, **(setup_kwargs or {})},
        **fit_arguments(fold_train.n_obs, config, train_kwargs),
    )  # fmt: skip
    pred = np.asarray(model.predict_perturbation(control.copy(), source=source, target=target).X, dtype=np.float64)
    # the observed cells and the pooled shift on the scale of the prediction, as TRVAEEnsemble takes them
    observed = as_dense(on_prediction_scale(model, control), "control cells")
    train_scaled = on_prediction_scale(model, fold_train)
    reference_keys = {
        "cell_type_key": cell_type_key, "condition_key": condition_key, "cell_type": held_out, "source": source,
        "target": target,
    }  # fmt: skip
    shifts = {kind: reference_shift(train_scaled, kind, **reference_keys) for kind in grid.reference_shifts}
    spreads = {
        kind: reference_spread(train_scaled, kind, **reference_keys) if True in grid.spread_scalings else None
        for kind in grid.reference_shifts
    }
    if responses is not None:
        truth = as_dense(on_prediction_scale(model, real), "target cells").mean(0) - observed.mean(0)
        fold = fold_responses(held_out, pred.mean(0) - observed.mean(0), shifts, truth, train_scaled, keys)
        if fold is not None:
            responses.append(fold)
    degs = metrics.top_degs(real, control)
    rows, model_alone = [], {}
    for kind, shift in shifts.items():
        for scaling, weight, deviation in itertools.product(
            grid.spread_scalings, grid.shift_weights, grid.deviation_weights
        ):
            spread = spreads[kind] if scaling else None
            if weight == 1.0 and not scaling and deviation in model_alone:
                scores = model_alone[deviation]
            else:
                blend = blend_prediction(observed, pred, shift, weight, deviation, spread=spread)
                scores = score_fold(blend, real, control, degs)
                if weight == 1.0 and not scaling:
                    model_alone[deviation] = scores
            rows.append(
                {**config, "inner_cell_type": held_out, "reference_shift": kind, "spread_scaling": scaling,
                 "shift_weight": float(weight), "deviation_weight": float(deviation), **scores}
            )  # fmt: skip
    return rows


def fold_responses(
    held_out: str,
    model_shift: np.ndarray,
    references: Mapping[str, np.ndarray],
    truth: np.ndarray,
    fold_train: AnnData,
    keys: tuple[str, str, str, str],
) -> dict[str, Any] | None:
    """One inner fold's per-gene mean responses, on the prediction scale: what the calibration needs.

    Parameters
    ----------
    held_out
        The fold's held-out cell type.
    model_shift, truth
        The model's mean response ``m`` and the held-out type's true mean response ``t`` (mean of its ``target``
        cells minus mean of its ``source`` cells).
    references
        The reference shifts ``p`` of the other types, by kind (:func:`scvi_trvae.baselines.reference_shift`).
    fold_train
        The fold's training cells on the prediction scale: the spread of their cell types' responses is the scale.
    keys
        ``(cell_type_key, condition_key, source, target)``.

    Returns
    -------
    ``{"cell_type", "model_shift", "reference_shifts", "true_shift", "scale"}``, the vectors as float64 arrays
    (``reference_shifts`` a dict by kind); ``None`` when fewer than 2 other cell types have cells in both
    conditions (no spread to scale by).
    """
    cell_type_key, condition_key, source, target = keys
    shifts = cell_type_shifts(
        fold_train, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
        exclude=[held_out],
    )  # fmt: skip
    if len(shifts) < 2:
        return None
    vectors = {"model_shift": model_shift, "true_shift": truth}
    return {
        "cell_type": str(held_out),
        **{k: np.asarray(v, dtype=np.float64).ravel() for k, v in vectors.items()},
        "reference_shifts": {k: np.asarray(v, dtype=np.float64).ravel() for k, v in references.items()},
        "scale": response_scale(shifts.to_numpy()),
    }
