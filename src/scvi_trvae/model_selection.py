"""Choose trVAE's hyperparameters on the user's own training data, by inner leave-one-cell-type-out.

For a task "predict cell type X under ``target`` from its ``source`` cells", the training data holds other
cell types observed in both conditions. :func:`select_hyperparameters` holds each of those out in turn
(an *inner* fold: its ``target`` cells are removed from the training cells), fits every candidate
configuration on the rest, predicts the held-out type from its ``source`` cells and scores the prediction
with :mod:`scvi_trvae.metrics`. The configuration with the best mean inner score wins, together with the
weights ``w`` and ``lambda`` of ``x + w * m + (1 - w) * pooled shift of the other types + lambda * d``, where
``m`` is trVAE's mean response and ``d`` each cell's deviation from it (``w = lambda = 1``: trVAE alone;
``docs/accuracy.md`` says why the two are chosen apart). :func:`fit_self_tuned` then trains the chosen
configuration on all the training cells.

Only the AnnData passed in is ever seen: pass the training cells only (without the cells to predict), and
the selection cannot look at them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from . import _fitting, metrics
from ._blend import blend_prediction, on_prediction_scale
from ._ensemble import TRVAEEnsemble
from ._validation import check_task, listed
from .baselines import pooled_shift
from .data._splitter import epochs_for_steps
from .model._model import TRVAE
from .utils import as_dense

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SEARCH_SPACE", "SelectionResult", "fit_recommended", "fit_self_tuned", "select_hyperparameters"]

#: The default configuration of :class:`~scvi_trvae.TRVAE` (always evaluated first).
DEFAULT_CONFIG: dict[str, Any] = {"n_layers": 2, "mmd_weight": 100.0, "kl_weight": 0.1, "training_steps": 1500}
#: Candidate values of each hyperparameter; random draws pick one value of each.
DEFAULT_SEARCH_SPACE: dict[str, Sequence[Any]] = {
    "n_layers": (1, 2, 3),
    "mmd_weight": (10.0, 100.0, 300.0),
    "kl_weight": (0.01, 0.1, 0.5),
    "training_steps": (750, 1500, 3000),
}
DEFAULT_SHIFT_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_DEVIATION_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
_MODEL_ARGS = ("n_layers", "n_hidden", "n_latent", "dropout_rate", "mmd_on")
_TRAIN_ARGS = ("mmd_weight", "kl_weight")
BATCH_SIZE = 128
DEFAULT_N_CONFIGS = 4
DEFAULT_MAX_INNER_FOLDS = 3
#: Cells an inner fold's cell type needs in each of ``source`` and ``target``.
MIN_FOLD_CELLS = 3


@dataclass
class SelectionResult:
    """What :func:`select_hyperparameters` found.

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
    inner_cell_types
        The cell types held out in turn.
    stopped_early
        Whether the time budget stopped the search before every configuration was evaluated.
    """

    table: pd.DataFrame
    summary: pd.DataFrame
    best_config: dict[str, Any]
    best_shift_weight: float
    inner_cell_types: list[str]
    stopped_early: bool = False
    seconds: float = 0.0
    best_deviation_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


def candidate_configs(n_configs: int, search_space: Mapping[str, Sequence[Any]] | None, seed: int) -> list[dict]:
    """Return ``n_configs`` distinct configurations: the defaults first, then random draws from ``search_space``.

    The first takes each value of :data:`DEFAULT_CONFIG` that ``search_space`` holds (else its first value).
    """
    space = DEFAULT_SEARCH_SPACE if search_space is None else search_space
    configs = [{k: DEFAULT_CONFIG[k] if DEFAULT_CONFIG.get(k) in space[k] else space[k][0] for k in space}]
    rng = np.random.default_rng(seed)
    n_possible = math.prod(len(values) for values in space.values())
    while len(configs) < min(n_configs, n_possible):
        draw = {k: values[int(rng.integers(len(values)))] for k, values in space.items()}
        if draw not in configs:
            configs.append(draw)
    return configs


def _config_epochs(n_obs: int, config: Mapping[str, Any]) -> int:
    """Epochs of the configuration's ``training_steps`` minibatches of :data:`BATCH_SIZE` cells."""
    return epochs_for_steps(n_obs, BATCH_SIZE, int(config.get("training_steps", DEFAULT_CONFIG["training_steps"])))


def _fit_arguments(n_obs: int, config: Mapping[str, Any], train_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:meth:`TRVAE.train` arguments of a fit of ``config``: its length and loss weights, then ``train_kwargs``.

    Minibatches hold :data:`BATCH_SIZE` cells unless ``train_kwargs`` give a ``batch_size``; the number of
    epochs is that of the configuration's ``training_steps`` minibatches of :data:`BATCH_SIZE` cells either way.
    """
    weights = {k: v for k, v in config.items() if k in _TRAIN_ARGS}
    return {"max_epochs": _config_epochs(n_obs, config), "batch_size": BATCH_SIZE, **weights, **train_kwargs}


def _model_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~scvi_trvae.TRVAE` arguments of a configuration (its architecture)."""
    return {k: v for k, v in config.items() if k in _MODEL_ARGS}


def _cells_per_type(adata: AnnData, cell_type_key: str, condition_key: str) -> pd.DataFrame:
    return pd.crosstab(adata.obs[cell_type_key].astype(str), adata.obs[condition_key].astype(str))


def inner_cell_types(adata: AnnData, cell_type_key: str, condition_key: str, source: str, target: str) -> list[str]:
    """Cell types with at least :data:`MIN_FOLD_CELLS` cells in both ``source`` and ``target`` (sorted)."""
    counts = _cells_per_type(adata, cell_type_key, condition_key)
    if source not in counts or target not in counts:
        return []
    enough = (counts[source] >= MIN_FOLD_CELLS) & (counts[target] >= MIN_FOLD_CELLS)
    return sorted(counts.index[enough])


def _plan(
    adata: AnnData, keys: tuple[str, str, str, str], n_configs: int, search_space: Mapping[str, Sequence[Any]] | None,
    max_inner_folds: int | None, seed: int,
) -> tuple[list[str], list[dict]]:  # fmt: skip
    """Check the task, then draw the inner folds and candidate configurations: all before any training."""
    check_task(adata, *keys)
    folds = inner_cell_types(adata, *keys)
    if len(folds) < 2:
        raise ValueError(_too_few_folds(adata, keys, folds))
    rng = np.random.default_rng(seed)
    if max_inner_folds is not None and len(folds) > max_inner_folds:
        folds = sorted(rng.choice(folds, size=max_inner_folds, replace=False).tolist())
    return folds, candidate_configs(n_configs, search_space, seed)


def _too_few_folds(adata: AnnData, keys: tuple[str, str, str, str], folds: list[str]) -> str:
    """Say why fewer than 2 cell types can be inner folds, with the cells of each type in ``source`` / ``target``."""
    cell_type_key, condition_key, source, target = keys
    counts = _cells_per_type(adata, cell_type_key, condition_key)
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


def _score_fold(pred_x: np.ndarray, real: AnnData, control: AnnData, degs: np.ndarray) -> dict[str, float]:
    scores = metrics.evaluate_prediction(pred_x, real, control, degs=degs, seed=0)
    scores = {k: float(scores[k]) for k in metrics.METRIC_KEYS}
    scores["score"] = scores["pearson_delta_deg"] - scores["edist_scaled"]
    return scores


def _fold_rows(
    adata: AnnData,
    held_out: str,
    config: dict,
    seed: int,
    keys: tuple[str, str, str, str],
    weights: tuple[Sequence[float], Sequence[float]],
    setup_kwargs,
    train_kwargs,
) -> list[dict[str, Any]]:
    """Fit ``config`` without ``(held_out, target)``, predict it and score every (shift, deviation) weight pair."""
    cell_type_key, condition_key, source, target = keys
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    is_held_out = (types == held_out) & (conditions == target)
    is_control = (types == held_out) & (conditions == source)
    fold_train = adata[~is_held_out]
    control, real = adata[is_control], adata[is_held_out]
    model = _fitting.train_model(
        fold_train, seed, model_kwargs=_model_arguments(config),
        setup_kwargs={"condition_key": condition_key, **(setup_kwargs or {})},
        **_fit_arguments(fold_train.n_obs, config, train_kwargs),
    )  # fmt: skip
    pred = np.asarray(model.predict_perturbation(control.copy(), source=source, target=target).X, dtype=np.float64)
    # the observed cells and the pooled shift on the scale of the prediction, as TRVAEEnsemble takes them
    observed = as_dense(on_prediction_scale(model, control), "control cells")
    shift = pooled_shift(
        on_prediction_scale(model, fold_train), cell_type_key=cell_type_key, condition_key=condition_key,
        exclude=[held_out], source=source, target=target,
    )  # fmt: skip
    degs = metrics.top_degs(real, control)
    rows = []
    for weight in weights[0]:
        for deviation in weights[1]:
            blended = blend_prediction(observed, pred, shift, weight, deviation)
            scores = _score_fold(blended, real, control, degs)
            rows.append(
                {**config, "inner_cell_type": held_out, "shift_weight": float(weight),
                 "deviation_weight": float(deviation), **scores}
            )  # fmt: skip
    return rows


def select_hyperparameters(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    source: str,
    target: str,
    n_configs: int = DEFAULT_N_CONFIGS,
    search_space: Mapping[str, Sequence[Any]] | None = None,
    shift_weights: Sequence[float] = DEFAULT_SHIFT_WEIGHTS,
    deviation_weights: Sequence[float] = DEFAULT_DEVIATION_WEIGHTS,
    max_inner_folds: int | None = DEFAULT_MAX_INNER_FOLDS,
    time_budget: float | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    fit_done: Callable[[], object] | None = None,
    setup_kwargs: Mapping[str, Any] | None = None,
    **train_kwargs: Any,
) -> SelectionResult:
    """Choose a configuration and shift weight by inner leave-one-cell-type-out on ``adata``.

    Parameters
    ----------
    adata
        The training cells only (log-normalised ``X``): whatever is to be predicted must not be in it.
        It is not modified.
    cell_type_key, condition_key
        ``obs`` columns of cell types and conditions.
    source, target
        The conditions of the task (predict ``target`` from ``source`` cells).
    n_configs
        Configurations to try: TRVAE's defaults (where ``search_space`` holds them), then random draws.
    search_space
        Values to draw from for ``n_layers``, ``mmd_weight``, ``kl_weight``, ``training_steps`` (minibatch
        steps of 128 cells) and optionally ``n_hidden``, ``n_latent``, ``dropout_rate``, ``mmd_on``
        (default :data:`DEFAULT_SEARCH_SPACE`).
    shift_weights
        Values of ``w`` (the weight of trVAE's mean response) to try, scored on the same fits at no extra
        training cost; include 1 to allow trVAE alone.
    deviation_weights
        Values of ``lambda`` (the weight of each cell's deviation from trVAE's mean response) to try with
        every ``w``.
    max_inner_folds
        Hold out at most this many cell types (drawn with ``seed``; ``None``: all of them).
    time_budget
        Seconds: no new configuration is started after this (the defaults are always evaluated in full).
    seed
        Seeds the draws of configurations and folds and every model fit.
    progress_bar
        Show a tqdm bar over the model fits (on stderr).
    fit_done
        Called after each model fit (e.g. to advance a progress bar of the caller's).
    setup_kwargs
        More arguments of :meth:`scvi_trvae.TRVAE.setup_anndata`, e.g. ``{"layer": "counts",
        "is_count_data": True}`` for count models; ``X`` must still hold the log-normalised expression
        (``log1p`` of counts per 10,000, the scale of the predictions) that the scores and the pooled shift use.
    **train_kwargs
        Passed to :meth:`scvi_trvae.TRVAE.train` (e.g. ``accelerator``, ``batch_size``).

    Raises
    ------
    KeyError
        ``cell_type_key`` or ``condition_key`` is not a column of ``adata.obs``.
    ValueError
        Before any training: missing cell types or conditions, an unknown ``source`` or ``target``
        or one without cells, or fewer than 2 cell types with cells in both (the inner folds).
    """
    start = time.perf_counter()
    keys = (cell_type_key, condition_key, source, target)
    folds, configs = _plan(adata, keys, n_configs, search_space, max_inner_folds, seed)
    train_kwargs.setdefault("enable_progress_bar", False)
    rows: list[dict[str, Any]] = []
    stopped = False
    with tqdm(total=len(configs) * len(folds), desc="inner fits", disable=not progress_bar) as bar:
        for index, config in enumerate(configs):
            if index > 0 and time_budget is not None and time.perf_counter() - start > time_budget:
                stopped = True
                break
            for held_out in folds:
                weights = (shift_weights, deviation_weights)
                fold = _fold_rows(adata, held_out, config, seed, keys, weights, setup_kwargs, train_kwargs)
                rows += [{"config": index, **row} for row in fold]
                bar.update(1)
                if fit_done is not None:
                    fit_done()
    table = pd.DataFrame(rows)
    group = ["config", *configs[0].keys(), "shift_weight", "deviation_weight"]
    summary = table.groupby(group, sort=False)[[*metrics.METRIC_KEYS, "score"]].mean().reset_index()
    summary = summary.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    best = summary.iloc[0]
    return SelectionResult(
        table=table, summary=summary, best_config=dict(configs[int(best["config"])]),
        best_shift_weight=float(best["shift_weight"]), inner_cell_types=list(folds), stopped_early=stopped,
        seconds=time.perf_counter() - start, best_deviation_weight=float(best["deviation_weight"]),
    )  # fmt: skip


def fit_self_tuned(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    source: str,
    target: str,
    n_members: int = 1,
    seed: int = 0,
    selection: SelectionResult | None = None,
    progress_bar: bool = True,
    **selection_kwargs: Any,
) -> tuple[TRVAEEnsemble, SelectionResult]:
    """Select with :func:`select_hyperparameters` (unless ``selection`` is given), then train on all of ``adata``.

    Every check of the task runs first, before any training. The number of model fits is logged
    (``scvi_trvae.model_selection`` logger, level INFO) and, with ``progress_bar``, one bar on stderr
    counts them all (inner fits and members) with an estimate of the time left; each fit's own
    per-epoch bar is then off. ``scvi.settings.seed`` and the random states are left as they were.

    Returns the trained :class:`~scvi_trvae.TRVAEEnsemble` (``n_members`` seeds from ``seed``; its
    ``shift_weight`` is the chosen ``w``; predict with ``cell_type_key=`` when ``w < 1``) and the selection.
    """
    keys = (cell_type_key, condition_key, source, target)
    if progress_bar:
        selection_kwargs["enable_progress_bar"] = False  # the overall bar replaces each fit's own
    n_inner = 0
    if selection is None:
        folds, configs = _plan(
            adata, keys, selection_kwargs.get("n_configs", DEFAULT_N_CONFIGS), selection_kwargs.get("search_space"),
            selection_kwargs.get("max_inner_folds", DEFAULT_MAX_INNER_FOLDS), seed,
        )  # fmt: skip
        n_inner = len(configs) * len(folds)
        logger.info(
            "%d model fits: %d inner fits (%d configurations x %d inner folds), then %d members.",
            n_inner + n_members, n_inner, len(configs), len(folds), n_members,
        )  # fmt: skip
    else:
        check_task(adata, *keys)
        logger.info("%d model fits: the %d members of the given selection's configuration.", n_members, n_members)
    with tqdm(total=n_inner + n_members, desc="trVAE fits", unit="fit", disable=not progress_bar) as bar:
        if selection is None:
            selection = select_hyperparameters(
                adata, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
                seed=seed, progress_bar=False, fit_done=lambda: bar.update(1), **selection_kwargs,
            )  # fmt: skip
            bar.total = bar.n + n_members  # fewer inner fits when the time budget stopped the search
        ensemble = train_ensemble(
            adata, condition_key=condition_key, config=selection.best_config, seeds=range(seed, seed + n_members),
            shift_weight=selection.best_shift_weight, deviation_weight=selection.best_deviation_weight,
            labels_key=cell_type_key, setup_kwargs=selection_kwargs.get("setup_kwargs"),
            member_done=lambda k: bar.update(1),
            **{k: v for k, v in selection_kwargs.items() if k not in _SELECTION_ONLY},
        )  # fmt: skip
    return ensemble, selection


def train_ensemble(
    adata: AnnData,
    *,
    condition_key: str,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    shift_weight: float = 1.0,
    deviation_weight: float = 1.0,
    labels_key: str | None = None,
    setup_kwargs: Mapping[str, Any] | None = None,
    member_done: Callable[[int], object] | None = None,
    **train_kwargs: Any,
) -> TRVAEEnsemble:
    """Train a :class:`~scvi_trvae.TRVAEEnsemble` of one configuration on all of ``adata``.

    ``adata`` is copied and registered once; every member trains on that one copy. This is the last step of
    :func:`fit_self_tuned` (and of :func:`fit_recommended`), and what the benchmark trains its ensembles with.

    Parameters
    ----------
    adata
        The training cells (not modified).
    condition_key
        ``obs`` column of conditions.
    config
        The configuration (keys of :data:`DEFAULT_SEARCH_SPACE`: architecture, loss weights, ``training_steps``).
    seeds
        One seed per member.
    shift_weight, deviation_weight
        The ensemble's default ``w`` and ``lambda`` (see :class:`~scvi_trvae.TRVAEEnsemble`).
    labels_key
        ``obs`` column of cell types, stored in the ensemble (needed to blend).
    setup_kwargs
        More arguments of :meth:`scvi_trvae.TRVAE.setup_anndata` (e.g. ``{"layer": "counts", "is_count_data": True}``).
    member_done
        Called with each member's index once it is trained.
    **train_kwargs
        Passed to :meth:`scvi_trvae.TRVAE.train` after the configuration's length and loss weights.

    Returns
    -------
    The trained ensemble.
    """
    train_kwargs.setdefault("enable_progress_bar", False)
    adata = _fitting.fresh_copy(adata)
    TRVAE.setup_anndata(adata, condition_key=condition_key, **(setup_kwargs or {}))
    ensemble = TRVAEEnsemble(
        adata, seeds=seeds, shift_weight=shift_weight, deviation_weight=deviation_weight, labels_key=labels_key,
        **_model_arguments(config),
    )  # fmt: skip
    ensemble.train(member_done=member_done, **_fit_arguments(adata.n_obs, config, train_kwargs))
    return ensemble


_SELECTION_ONLY = (
    "n_configs",
    "search_space",
    "shift_weights",
    "deviation_weights",
    "max_inner_folds",
    "time_budget",
    "setup_kwargs",
)


def fit_recommended(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    source: str,
    target: str,
    n_members: int = 3,
    inner_folds: int = 2,
    max_epochs: int | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    **train_kwargs: Any,
) -> tuple[TRVAEEnsemble, SelectionResult]:
    """Fit the recommended pipeline: an ensemble of default models, its shift blended with the pooled shift.

    :func:`fit_self_tuned` with the default configuration only: the shift weight ``w`` is chosen by
    ``inner_folds`` inner held-out cell types of ``adata``; 2 inner folds and 3 members make 5 model fits
    (``docs/ensembles.md``). ``max_epochs`` fixes every fit's length at that many epochs of ``adata``
    (default: the configuration's 1,500 minibatch steps of 128 cells); ``train_kwargs`` go to every
    :meth:`TRVAE.train` (e.g. ``accelerator``, or ``batch_size`` for minibatches of other than 128 cells).

    The task is checked before any training (unknown keys or conditions, missing values, too few cell
    types observed in both conditions for the inner folds: one error naming the problem). The number
    of fits is logged, and ``progress_bar=True`` shows one bar over all fits on stderr (each fit's own
    per-epoch bar is then off); ``progress_bar=False`` shows none. ``scvi.settings.seed`` is not changed.
    """
    length = {}
    if max_epochs is not None:
        length["search_space"] = {"training_steps": (max_epochs * math.ceil(adata.n_obs / BATCH_SIZE),)}
    return fit_self_tuned(
        adata, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
        n_members=n_members, seed=seed, n_configs=1, max_inner_folds=inner_folds, progress_bar=progress_bar,
        **length, **train_kwargs,
    )  # fmt: skip
