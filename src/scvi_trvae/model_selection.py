"""Choose trVAE's hyperparameters on the user's own training data, by inner leave-one-cell-type-out.

For a task "predict cell type X under ``target`` from its ``source`` cells", the training data holds other
cell types observed in both conditions. :func:`select_hyperparameters` holds each of those out in turn
(an *inner* fold: its ``target`` cells are removed from the training cells), fits every candidate
configuration on the rest, predicts the held-out type from its ``source`` cells and scores the prediction
with :mod:`scvi_trvae.metrics`. The configuration with the best mean inner score wins, together with the
weights ``w`` and ``lambda`` of ``x + w * m + (1 - w) * p + lambda * d``, where ``m`` is trVAE's mean
response, ``d`` each cell's deviation from it and ``p`` a reference shift of the other cell types, whose kind is
chosen too (their cells pooled, or the types weighted by their similarity to the held-out one); ``w = lambda = 1``
is trVAE alone (``docs/accuracy.md`` says why the parts are chosen apart). :func:`fit_self_tuned` then trains the chosen
configuration on all the training cells.

Only the AnnData passed in is ever seen: pass the training cells only (without the cells to predict), and
the selection cannot look at them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pandas as pd
from anndata import AnnData
from tqdm.auto import tqdm

from . import _fitting, metrics
from ._calibration import calibrate
from ._ensemble import TRVAEEnsemble
from ._inner_folds import BATCH_SIZE as BATCH_SIZE  # the CLI checks --batch-size against it
from ._inner_folds import (
    DEFAULT_CONFIG,
    BlendGrid,
    choose_folds,
    fit_arguments,
    fold_rows,
    inner_cell_types,
    model_arguments,
    resolve_source_cells,
    too_few_folds,
    training_steps,
)
from ._intervals import DEFAULT_INTERVAL_LEVEL
from ._selection_result import SelectionResult
from ._validation import check_task
from .model._model import TRVAE

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_SEARCH_SPACE",
    "SelectionResult",
    "fit_recommended",
    "fit_self_tuned",
    "select_hyperparameters",
    "train_ensemble",
]

#: Candidate values of each hyperparameter; random draws pick one value of each.
DEFAULT_SEARCH_SPACE: dict[str, Sequence[Any]] = {
    "n_layers": (1, 2, 3),
    "mmd_weight": (10.0, 100.0, 300.0),
    "kl_weight": (0.01, 0.1, 0.5),
    "training_steps": (750, 1500, 3000),
}
DEFAULT_SHIFT_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_DEVIATION_WEIGHTS: tuple[float, ...] = (0.0, 0.5, 1.0)
#: Kinds of reference shift tried (:func:`scvi_trvae.baselines.reference_shift`); on ties the first wins.
DEFAULT_REFERENCE_SHIFTS: tuple[str, ...] = ("pooled", "similarity")
#: Whether the observed cells' spread is scaled (:func:`scvi_trvae.baselines.reference_spread`); on ties the first wins.
#: Both are tried by default since the 57-split run (``docs/accuracy.md``, *Scaling the observed spread*).
DEFAULT_SPREAD_SCALINGS: tuple[bool, ...] = (False, True)
DEFAULT_N_CONFIGS = 4
DEFAULT_MAX_INNER_FOLDS = 3
#: Inner folds of the recommended pipeline (:func:`fit_recommended`): more folds choose its blend less noisily.
RECOMMENDED_INNER_FOLDS = 4


def candidate_configs(n_configs: int, search_space: Mapping[str, Sequence[Any]] | None, seed: int) -> list[dict]:
    """Return ``n_configs`` distinct configurations: the defaults first, then random draws from ``search_space``.

    The draws are :class:`sklearn.model_selection.ParameterSampler`'s (without replacement from the grid of
    all combinations, ``random_state=seed``), the defaults left out.

    Parameters
    ----------
    n_configs
        Number of configurations (at most the number of combinations in ``search_space``).
    search_space
        Candidate values of each hyperparameter (default :data:`DEFAULT_SEARCH_SPACE`).
    seed
        Seed of the draws.

    Returns
    -------
    The configurations, each a dict with the keys of ``search_space`` in its order. The first takes each value
    of :data:`DEFAULT_CONFIG` that ``search_space`` holds (else its first value).
    """
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    space = {k: list(v) for k, v in (DEFAULT_SEARCH_SPACE if search_space is None else search_space).items()}
    default = {k: DEFAULT_CONFIG[k] if DEFAULT_CONFIG.get(k) in values else values[0] for k, values in space.items()}
    n_draws = min(n_configs, len(ParameterGrid(space)))
    draws = [{k: draw[k] for k in space} for draw in ParameterSampler(space, n_draws, random_state=seed)]
    return [default, *[draw for draw in draws if draw != default]][: max(n_draws, 1)]


def _plan(
    adata: AnnData, keys: tuple[str, str, str, str], n_configs: int, search_space: Mapping[str, Sequence[Any]] | None,
    max_inner_folds: int | None, seed: int, fold_choice: str = "random",
) -> tuple[list[str], list[dict]]:  # fmt: skip
    """Check the task, then draw the inner folds and candidate configurations: all before any training."""
    check_task(adata, *keys)
    folds = inner_cell_types(adata, *keys)
    if len(folds) < 2:
        raise ValueError(too_few_folds(adata, keys, folds))
    folds = choose_folds(adata, keys, folds, max_inner_folds, fold_choice, seed)
    return folds, candidate_configs(n_configs, search_space, seed)


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
    reference_shifts: Sequence[str] = DEFAULT_REFERENCE_SHIFTS,
    spread_scalings: Sequence[bool] = DEFAULT_SPREAD_SCALINGS,
    max_inner_folds: int | None = DEFAULT_MAX_INNER_FOLDS,
    fold_choice: Literal["random", "nearest"] = "random",
    fold_source_cells: int | Literal["matched"] | None = None,
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
        steps of 128 cells) and optionally ``n_hidden``, ``n_latent``, ``dropout_rate``, ``mmd_on``,
        ``use_batch_norm``, ``use_layer_norm`` (default :data:`DEFAULT_SEARCH_SPACE`).
    shift_weights
        Values of ``w`` (the weight of trVAE's mean response) to try, scored on the same fits at no extra
        training cost; include 1 to allow trVAE alone.
    deviation_weights
        Values of ``lambda`` (the weight of each cell's deviation from trVAE's mean response) to try with
        every ``w``.
    reference_shifts
        Kinds of the shift of the other cell types that trVAE's mean response is blended with, tried with every
        ``w`` and ``lambda``: ``"pooled"`` (their cells pooled), ``"balanced"`` (each type weighed equally),
        ``"similarity"`` (types whose ``source`` cells look like the held-out type's weigh more); see
        :func:`scvi_trvae.baselines.reference_shift`.
    spread_scalings
        Whether the observed cells' deviations from their mean are scaled per gene by the other types' ratio of
        ``target`` to ``source`` spread (:func:`scvi_trvae.baselines.reference_spread`, of the blend's kind), tried
        with every other choice: ``(False, True)`` (default) lets the inner folds choose, ``(False,)`` never scales.
    max_inner_folds
        Hold out at most this many cell types (chosen by ``fold_choice``; ``None``: all of them).
    fold_choice
        Which cell types the inner folds hold out when more qualify than ``max_inner_folds``: ``"random"`` (drawn
        with ``seed``) or ``"nearest"``, those whose ``source`` cells look most like the types to predict (types with
        ``source`` cells and no ``target`` cells; :func:`scvi_trvae.baselines.similarity_weights`, averaged over
        them), so that the folds resemble them; random when there is no type to predict.
    fold_source_cells
        Keep at most this many ``source`` cells of each inner fold's held-out type (in its training cells and as
        the cells it predicts from), so that the folds resemble a rare type to predict; ``"matched"``: as many as
        the rarest type with ``source`` cells and no ``target`` cells has (the type to predict; no limit when there
        is none). ``None`` (default): every cell. ``docs/accuracy.md`` shows what it changes.
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
        (``log1p`` of counts per 10,000): the scores compare the predictions with it. The predictions, the observed
        cells and the pooled shift of the blend are on the scale of the model's predictions
        (:func:`~scvi_trvae._blend.on_prediction_scale`, as :class:`~scvi_trvae.TRVAEEnsemble` takes them).
    **train_kwargs
        Passed to :meth:`scvi_trvae.TRVAE.train` (e.g. ``accelerator``, ``batch_size``).

    Returns
    -------
    SelectionResult
        The scores of every (configuration, inner fold, ``w``, ``lambda``), their means and the winners.

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
    grid = BlendGrid.checked(shift_weights, deviation_weights, reference_shifts, spread_scalings)
    source_cells = resolve_source_cells(adata, keys, fold_source_cells)
    folds, configs = _plan(adata, keys, n_configs, search_space, max_inner_folds, seed, fold_choice)
    train_kwargs.setdefault("enable_progress_bar", False)
    rows: list[dict[str, Any]] = []
    responses: list[list[dict[str, Any]]] = [[] for _ in configs]
    stopped = False
    with tqdm(total=len(configs) * len(folds), desc="inner fits", disable=not progress_bar) as bar:
        for index, config in enumerate(configs):
            if index > 0 and time_budget is not None and time.perf_counter() - start > time_budget:
                stopped = True
                break
            for held_out in folds:
                fold = fold_rows(
                    adata, held_out, config, seed, keys, grid, setup_kwargs, train_kwargs, responses[index],
                    source_cells=source_cells,
                )  # fmt: skip
                rows += [{"config": index, **row} for row in fold]
                bar.update(1)
                if fit_done is not None:
                    fit_done()
    table = pd.DataFrame(rows)
    group = ["config", *configs[0].keys(), "reference_shift", "spread_scaling", "shift_weight", "deviation_weight"]
    summary = table.groupby(group, sort=False)[[*metrics.METRIC_KEYS, "score"]].mean().reset_index()
    summary = summary.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    best = summary.iloc[0]
    return SelectionResult(
        table=table, summary=summary, best_config=dict(configs[int(best["config"])]),
        best_shift_weight=float(best["shift_weight"]), inner_cell_types=list(folds), stopped_early=stopped,
        seconds=time.perf_counter() - start, best_deviation_weight=float(best["deviation_weight"]),
        best_reference_shift=str(best["reference_shift"]), best_spread_scaling=bool(best["spread_scaling"]),
        fold_responses=responses[int(best["config"])],
        extra={} if source_cells is None else {"fold_source_cells": source_cells},
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
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
    **selection_kwargs: Any,
) -> tuple[TRVAEEnsemble, SelectionResult]:
    """Select with :func:`select_hyperparameters` (unless ``selection`` is given), then train on all of ``adata``.

    Every check of the task runs first, before any training. The number of model fits is logged
    (``scvi_trvae.model_selection`` logger, level INFO) and, with ``progress_bar``, one bar on stderr
    counts them all (inner fits and members) with an estimate of the time left; each fit's own
    per-epoch bar is then off. ``scvi.settings.seed`` and the random states are left as they were.

    Parameters
    ----------
    adata
        The training cells only (not modified; the ensemble trains on one registered copy).
    cell_type_key, condition_key, source, target
        As in :func:`select_hyperparameters`; ``cell_type_key`` becomes the ensemble's ``labels_key``.
    n_members
        Members of the final ensemble (seeds ``seed .. seed + n_members - 1``).
    seed
        Seeds the selection and the members.
    selection
        A result of :func:`select_hyperparameters` to train instead of selecting again.
    progress_bar
        One bar on stderr over all the fits.
    interval_level
        Level of the ensemble's per-gene intervals, calibrated on the inner folds (``fit_recommended``).
    **selection_kwargs
        Passed to :func:`select_hyperparameters` (``n_configs``, ``search_space``, ``setup_kwargs``...); those
        that are not its own go to every :meth:`scvi_trvae.TRVAE.train` too.

    Returns
    -------
    tuple[TRVAEEnsemble, SelectionResult]
        The trained :class:`~scvi_trvae.TRVAEEnsemble` (its ``shift_weight`` and ``deviation_weight`` are the
        chosen ``w`` and ``lambda``, its ``labels_key`` is ``cell_type_key``: predict without further arguments)
        and the selection.
    """
    keys = (cell_type_key, condition_key, source, target)
    if progress_bar:
        selection_kwargs["enable_progress_bar"] = False  # the overall bar replaces each fit's own
    n_inner = 0
    if selection is None:
        folds, configs = _plan(
            adata, keys, selection_kwargs.get("n_configs", DEFAULT_N_CONFIGS), selection_kwargs.get("search_space"),
            selection_kwargs.get("max_inner_folds", DEFAULT_MAX_INNER_FOLDS), seed,
            selection_kwargs.get("fold_choice", "random"),
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
            reference_shift=selection.best_reference_shift, spread_scaling=selection.best_spread_scaling,
            labels_key=cell_type_key, setup_kwargs=selection_kwargs.get("setup_kwargs"),
            member_done=lambda k: bar.update(1),
            **{k: v for k, v in selection_kwargs.items() if k not in _SELECTION_ONLY},
        )  # fmt: skip
    ensemble.calibration = calibrate(
        selection.fold_responses, selection.best_shift_weight, interval_level, selection.best_reference_shift
    )
    return ensemble, selection


def train_ensemble(
    adata: AnnData,
    *,
    condition_key: str,
    config: Mapping[str, Any],
    seeds: Sequence[int],
    shift_weight: float = 1.0,
    deviation_weight: float = 1.0,
    reference_shift: str = "pooled",
    labels_key: str | None = None,
    setup_kwargs: Mapping[str, Any] | None = None,
    spread_scaling: bool = False,
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
    shift_weight, deviation_weight, reference_shift, spread_scaling
        The ensemble's default ``w``, ``lambda``, kind of reference shift and spread scaling (see
        :class:`~scvi_trvae.TRVAEEnsemble`).
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
        adata, seeds=seeds, shift_weight=shift_weight, deviation_weight=deviation_weight,
        reference_shift=reference_shift, spread_scaling=spread_scaling, labels_key=labels_key,
        **model_arguments(config),
    )  # fmt: skip
    ensemble.train(member_done=member_done, **fit_arguments(adata.n_obs, config, train_kwargs))
    return ensemble


_SELECTION_ONLY = ("n_configs", "search_space", "shift_weights", "deviation_weights", "reference_shifts",
                   "spread_scalings", "max_inner_folds", "fold_choice", "fold_source_cells", "time_budget",
                   "setup_kwargs")  # fmt: skip


def fit_recommended(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    source: str,
    target: str,
    n_members: int = 3,
    inner_folds: int = RECOMMENDED_INNER_FOLDS,
    fold_choice: Literal["random", "nearest"] = "random",
    fold_source_cells: int | Literal["matched"] | None = None,
    max_epochs: int | None = None,
    seed: int = 0,
    progress_bar: bool = True,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
    **train_kwargs: Any,
) -> tuple[TRVAEEnsemble, SelectionResult]:
    """Fit the recommended pipeline: an ensemble of default models, its shift blended with a reference shift.

    :func:`fit_self_tuned` with the default configuration only: the shift weight ``w``, the deviation weight
    ``lambda`` and the kind of reference shift of the other cell types are chosen by
    ``inner_folds`` inner held-out cell types of ``adata`` (fewer where fewer qualify); 4 inner folds and 3 members
    make 7 model fits (``docs/ensembles.md``; two folds chose the blend too noisily, ``docs/accuracy.md``).
    ``max_epochs`` fixes every fit's length at that many epochs of ``adata`` (default: the configuration's 1,500
    minibatch steps of 128 cells); ``train_kwargs`` go to every :meth:`TRVAE.train` (e.g. ``accelerator``, or
    ``batch_size`` for minibatches of other than 128 cells).

    The task is checked before any training (unknown keys or conditions, missing values, too few cell
    types observed in both conditions for the inner folds: one error naming the problem). The number
    of fits is logged, and ``progress_bar=True`` shows one bar over all fits on stderr (each fit's own
    per-epoch bar is then off); ``progress_bar=False`` shows none. ``scvi.settings.seed`` is not changed.

    Count data work the same way: register the counts with ``setup_kwargs={"layer": "counts", "is_count_data":
    True}`` (``X`` holding the log-normalised expression); the members then use a count likelihood and the
    ensemble predicts and blends on the ``log1p`` scale of counts per 10,000 (``docs/ensembles.md``).

    Parameters
    ----------
    adata
        The training cells only (not modified).
    cell_type_key, condition_key, source, target
        As in :func:`select_hyperparameters`.
    n_members
        Members of the ensemble.
    inner_folds
        Inner held-out cell types that choose ``w``, ``lambda`` and the kind of reference shift (at most).
    fold_choice
        Which cell types they are when more qualify, as in :func:`select_hyperparameters`.
    fold_source_cells
        Source cells each inner fold keeps of its held-out type, as in :func:`select_hyperparameters`
        (``"matched"``: as many as the rarest type to predict has).
    max_epochs
        Epochs of every fit (default: the configuration's 1,500 minibatch steps of 128 cells).
    seed
        Seeds the inner folds and the members.
    progress_bar
        One bar on stderr over all the fits.
    interval_level
        Share of genes the per-gene intervals of the predicted mean response should hold (default 0.9). They
        are calibrated by split-conformal prediction on the inner folds (never on the cells to predict) and
        returned by :meth:`~scvi_trvae.TRVAEEnsemble.predict_perturbation` as ``var['trvae_shift_lower']`` /
        ``var['trvae_shift_upper']``; the level is fixed here, at fitting time.
    **train_kwargs
        Passed to every :meth:`scvi_trvae.TRVAE.train`, and ``setup_kwargs`` to
        :meth:`scvi_trvae.TRVAE.setup_anndata`.

    Returns
    -------
    tuple[TRVAEEnsemble, SelectionResult]
        As :func:`fit_self_tuned`.
    """
    length = {}
    if max_epochs is not None:
        length["search_space"] = {"training_steps": (training_steps(adata.n_obs, max_epochs),)}
    return fit_self_tuned(
        adata, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
        n_members=n_members, seed=seed, n_configs=1, max_inner_folds=inner_folds, progress_bar=progress_bar,
        interval_level=interval_level, fold_choice=fold_choice, fold_source_cells=fold_source_cells, **length,
        **train_kwargs,
    )  # fmt: skip
