"""Running the benchmark: every split x method x seed, each result cached (:mod:`oos.cache`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

from scvi_trvae import metrics

from . import peers
from .cache import cache_path, prediction_path, read_cached, result_key, write_cached
from .datasets import DATASETS, load_dataset
from .methods import METHODS, NotApplicable
from .paths import peer_meta_dir
from .splits import Split, held_out_pairs, make_split

logger = logging.getLogger("out_of_sample")


@dataclass
class RunConfig:
    """Everything that decides a result (part of the cache check) plus where things go."""

    datasets: list[str]
    methods: list[str]
    cell_types: list[str] | None
    n_seeds: int
    epochs: dict[str, int | str | None]
    n_top_genes: dict[str, int | None]
    min_cells: int
    data_dir: Path
    cache_dir: Path
    json_path: Path
    markdown_path: Path
    figure_dir: Path | None
    quick: bool
    argv: list[str]
    #: torch threads (0: leave torch's default)
    threads: int = 0
    #: report only what the cache holds; fit nothing
    cached_only: bool = False
    #: keep the seed-0 prediction of every split (``.npy`` beside its result), not only of the figure splits
    keep_predictions: bool = False

    def n_results(self, n_splits: int) -> int:
        """How many results a run over ``n_splits`` splits has."""
        return sum(len(METHODS[m].seeds_for(self.n_seeds)) for m in self.methods) * n_splits


def _split_row(split: Split, name: str, seed: int) -> dict[str, Any]:
    """The fields of a result row that describe its split, method and seed."""
    return {
        "dataset": split.dataset, "cell_type": split.cell_type, "source": split.source, "target": split.target,
        "method": name, "seed": seed, "seeds_mode": METHODS[name].seeds, "kind": split.spec.kind,
        "n_genes": int(split.train.n_vars), "n_train": int(split.train.n_obs),
        "n_control": int(split.control.n_obs), "n_target": int(split.real_target.n_obs),
    }  # fmt: skip


def _fit_and_score(config: RunConfig, split: Split, name: str, seed: int, row: dict[str, Any]) -> dict[str, Any]:
    """Fit one method, score its prediction and cache the result (not when the method failed to run)."""
    key = result_key(split, name, config.epochs.get(name))
    path = cache_path(config.cache_dir, split, name, seed)
    if config.threads > 0:  # scanpy (numba) resets torch's OpenMP thread count: set it again before each fit
        torch.set_num_threads(config.threads)
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        pred = METHODS[name].fit(split, seed, config.epochs.get(name) or 0)
    except NotApplicable as reason:
        return {**row, "status": "not run", "reason": str(reason)}
    except Exception as error:  # a failing method must not stop the benchmark; it is reported, not cached
        logger.exception("%s failed on %s %s -> %s", name, split.dataset, split.cell_type, split.target)
        return {**row, "status": "failed", "reason": f"{type(error).__name__}: {error}"}
    fit_seconds, fit_cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    start = time.perf_counter()
    pred = np.asarray(pred, dtype=np.float32)
    if pred.shape != (split.control.n_obs, split.control.n_vars):
        return {**row, "status": "failed", "reason": f"prediction has shape {pred.shape}"}
    try:
        scores = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=split.degs, seed=0)
    except ValueError as error:  # non-finite predictions: a result of the method (deterministic), so cached
        row.update(
            status="failed", reason=str(error), fit_seconds=fit_seconds, eval_seconds=0.0,
            code_version=key["code_version"], key=key,
        )  # fmt: skip
        write_cached(path, row)
        return {**row, "cached": False, "stale": False}
    row.update({k: scores[k] for k in metrics.METRIC_KEYS})
    row.update(
        status="ok", epochs=config.epochs.get(name), fit_seconds=fit_seconds, fit_cpu_seconds=fit_cpu_seconds,
        eval_seconds=time.perf_counter() - start, code_version=key["code_version"], key=key,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed == 0 and (split.is_figure_split or config.keep_predictions):
        np.save(prediction_path(config.cache_dir, split, name), pred)
    write_cached(path, row)
    return {**row, "cached": False, "stale": False}


def run_one(config: RunConfig, split: Split, name: str, seed: int) -> dict[str, Any]:
    """Fit, predict and score one method on one split with one seed (or read the cached result)."""
    row = _split_row(split, name, seed)
    if METHODS[name].counts_only and not split.counts:
        return {**row, "status": "not run", "reason": f"{name} models raw counts; this data set is log-normalised"}
    cached = read_cached(
        cache_path(config.cache_dir, split, name, seed), result_key(split, name, config.epochs.get(name)),
        allow_stale=config.cached_only,  # a run fits stale results again; --cached-only reports them, marked
    )  # fmt: skip
    if cached is not None:
        return {**cached, "cached": True}
    if config.cached_only:
        reason = "not in the cache (--cached-only: the run was stopped before it)"
        if METHODS[name].check is not None:
            try:
                METHODS[name].check(config.epochs.get(name) or 0)
            except NotApplicable as not_run:
                reason = str(not_run)
        return {**row, "status": "not run", "reason": reason}
    return _fit_and_score(config, split, name, seed, row)


def plan_splits(config: RunConfig) -> list[tuple[str, ad.AnnData, str, str]]:
    """The (data set, its cells, held-out type, target) of the run, in order (each data set is read once)."""
    plan = []
    for dataset in config.datasets:
        spec = DATASETS[dataset]
        adata = load_dataset(spec, config.data_dir)
        pairs = held_out_pairs(adata, dataset, spec, config.cell_types, config.min_cells)
        plan += [(dataset, adata, cell_type, target) for cell_type, target in pairs]
    return plan


def _log_result(row: dict[str, Any], done: int, n_results: int) -> None:
    name, seed = row["method"], row["seed"]
    if row["status"] == "ok":
        logger.info(
            "[%d/%d] %-20s seed %d: %6.1f s%s  r2 mean DEG %.3f  Δ-Pearson DEG %.3f  E-dist %.3f",
            done, n_results, name, seed, row["fit_seconds"], " (cached)" if row.get("cached") else "",
            row["r2_mean_deg"] or np.nan, row["pearson_delta_deg"] or np.nan, row["edist_scaled"] or np.nan,
        )  # fmt: skip
    else:
        logger.info("[%d/%d] %-20s seed %d: %s (%s)", done, n_results, name, seed, row["status"], row["reason"])


def run_all(config: RunConfig) -> tuple[list[dict[str, Any]], list[Split]]:
    """Every split x method x seed of the run: (result rows, the splits that figures are drawn from)."""
    # the peers' runners' meta.json go beside this run's cache, not into the default one
    peers.META_DIR = peer_meta_dir(config.cache_dir)
    plan = plan_splits(config)
    n_results = config.n_results(len(plan))
    rows: list[dict[str, Any]] = []
    figure_splits: list[Split] = []
    for dataset, adata, cell_type, target in plan:
        spec = DATASETS[dataset]
        split = make_split(adata, dataset, spec, cell_type, target, config.n_top_genes[dataset])
        if split.is_figure_split:
            figure_splits.append(split)
        logger.info(
            "== %s: %s %s -> %s held out (%d train cells, %d genes; %d control, %d target)",
            dataset, cell_type, spec.control, target, split.train.n_obs, split.train.n_vars,
            split.control.n_obs, split.real_target.n_obs,
        )  # fmt: skip
        for name in config.methods:
            for seed in METHODS[name].seeds_for(config.n_seeds):
                rows.append(run_one(config, split, name, seed))
                _log_result(rows[-1], len(rows), n_results)
    return rows, figure_splits
