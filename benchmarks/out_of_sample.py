"""Out-of-sample perturbation prediction: trVAE against the baselines of the trVAE paper and simple ones.

Reproduces the trVAE paper's out-of-sample experiments (Lotfollahi et al., arXiv:1910.01791) on the
data in ``../shared/data``: leave one (cell type, perturbed condition) out, train on everything else,
predict the held-out cells from the same type's control cells, and score with
:func:`scvi_trvae.metrics.evaluate_prediction` (DEGs of real target vs real control, computed once per
split and shared by all methods). Held-out cells take no part in training, gene selection or any
statistic a method fits.

Usage (from the repository root)::

    .venv/bin/python benchmarks/out_of_sample.py                 # everything (hours)
    .venv/bin/python benchmarks/out_of_sample.py --quick         # Kang NK, 500 genes, 1 seed, 3 epochs
    .venv/bin/python benchmarks/out_of_sample.py --datasets kang haber_hpoly --methods trVAE scGen \\
        --cell-types NK Tuft --seeds 2 --epochs trVAE=200 scGen=100

Every (dataset, held-out type, target, method, seed) result is cached as a JSON file under
``benchmarks/cache/full/`` (``benchmarks/cache/quick/cache/`` in quick mode), so an interrupted run resumes.
Outputs: ``benchmarks/results/out_of_sample.json`` (all rows), ``docs/benchmarks.md`` (tables) and
``docs/figures/`` (reg-mean, reg-var and gene-distribution plots); with ``--output-dir DIR`` (and in
quick mode, default ``benchmarks/cache/quick``) all three go under ``DIR`` instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:  # the helper modules next to this script
    sys.path.insert(0, str(BENCH_DIR))

import anndata as ad  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from _cyclegan import CycleGAN  # noqa: E402
from _nets import dense  # noqa: E402
from _saucie import SaucieLike  # noqa: E402
from _scgen import ScGen  # noqa: E402

from scvi_trvae import baselines, metrics  # noqa: E402

REPO = BENCH_DIR.parent
DATA_DIR = REPO.parent / "shared" / "data"
#: Python of the separate environment with scArches (``make scarches-venv``); ``SCARCHES_PYTHON`` overrides it.
SCARCHES_PYTHON = Path(os.environ.get("SCARCHES_PYTHON", REPO / ".venv-scarches" / "bin" / "python"))
METRICS = metrics.METRIC_KEYS
METRIC_LABELS = {
    "r2_mean_all": "r² mean (all)",
    "r2_mean_deg": "r² mean (DEG)",
    "r2_var_all": "r² var (all)",
    "r2_var_deg": "r² var (DEG)",
    "pearson_delta_all": "Δ-Pearson (all)",
    "pearson_delta_deg": "Δ-Pearson (DEG)",
    "edist_scaled": "E-dist scaled ↓",
}
TARGET_LIBRARY_SIZE = 1e4
#: Epochs of a method that picks its own from the data size (``TRVAE.train(max_epochs=None)``).
AUTO_EPOCHS = "auto"
#: Bump when a change invalidates cached results.
CACHE_VERSION = 1
#: scanpy flavour of the per-split gene selection. ``"seurat"`` with ``n_top_genes`` favours lowly expressed,
#: noisy genes on these preprocessed files (on Kang its top 500 miss ISG15, IFI6, IFIT3 ...);
#: ``"cell_ranger"`` (median/MAD-normalised dispersions) keeps the interferon response genes.
HVG_FLAVOR = "cell_ranger"

logger = logging.getLogger("out_of_sample")


# ---------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec:
    """One data set of the benchmark."""

    file: str
    condition_key: str
    cell_type_key: str
    control: str
    perturbed: tuple[str, ...]
    kind: Literal["lognorm", "counts"]
    #: Highly variable genes selected on the training cells of each split (None: all genes).
    n_top_genes: int | None
    description: str
    #: (cell type, target, genes) drawn in the figures, if any.
    figure: tuple[str, str, tuple[str, ...]] | None = None
    #: Keep at most this many cells of each (cell type, condition), drawn with seed 0 (None: all cells).
    max_cells_per_group: int | None = None


DATASETS: dict[str, DatasetSpec] = {
    "kang": DatasetSpec(
        "kang2018_pbmc_ifnb_lognorm.h5ad",
        "condition",
        "cell_type",
        "control",
        ("stimulated",),
        "lognorm",
        2000,
        "Kang 2018 PBMC IFN-β, scGen preprocessing (7 types); 2,000 HVGs as in the trVAE paper",
        figure=("NK", "stimulated", ("ISG15", "IFI6", "IFIT1")),
    ),
    "haber_hpoly": DatasetSpec(
        "haber2017_gut_hpoly_lognorm.h5ad",
        "condition",
        "cell_type",
        "Control",
        ("Hpoly.Day10",),
        "lognorm",
        1000,
        "Haber 2017 gut, Control -> H. polygyrus day 10 (8 types); 1,000 HVGs as in the trVAE paper",
        figure=("Tuft", "Hpoly.Day10", ()),
    ),
    "haber_salmonella": DatasetSpec(
        "haber2017_gut_salmonella_lognorm.h5ad",
        "condition",
        "cell_type",
        "Control",
        ("Salmonella",),
        "lognorm",
        1000,
        "Haber 2017 gut, Control -> Salmonella (8 types); 1,000 HVGs",
    ),
    "haber_3cond": DatasetSpec(
        "haber2017_gut_3cond_lognorm.h5ad",
        "condition",
        "cell_type",
        "Control",
        ("Hpoly.Day10", "Salmonella"),
        "lognorm",
        1000,
        "Haber 2017 gut, 3 conditions, Control -> each infection; 1,000 HVGs",
    ),
    "kang_counts_100genes": DatasetSpec(
        "kang2018_pbmc_ifnb_counts_100genes.h5ad",
        "condition",
        "cell_type",
        "control",
        ("stimulated",),
        "counts",
        None,
        "Kang 2018 raw counts, 100 genes (8 types); at most 250 cells per (type, condition)",
        # 9,517 cells, 3x the other data sets: subsampled so that the full run fits in hours on 2 cores
        max_cells_per_group=250,
    ),
    "kang_counts_muscat": DatasetSpec(
        "kang2018_pbmc_ifnb_counts_muscat.h5ad",
        "condition",
        "cell_type",
        "control",
        ("stimulated",),
        "counts",
        None,
        "Kang 2018 raw counts, muscat subset (5 types, 1,267 genes)",
    ),
    "kang_counts_ifnb1k": DatasetSpec(
        "kang2018_pbmc_ifnb_counts_ifnb1k.h5ad",
        "condition",
        "cell_type",
        "control",
        ("stimulated",),
        "counts",
        2000,
        "Kang 2018 raw counts, Seurat ifnb subset (6 types); 2,000 HVGs",
    ),
}


def lognormalize(counts: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p`` of counts per 10,000 (``normalize_total(target_sum=1e4)`` then ``log1p``), cell by cell."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scaled = sp.diags((TARGET_LIBRARY_SIZE / np.clip(totals, 1.0, None)).astype(np.float32)) @ counts
    scaled = sp.csr_matrix(scaled, dtype=np.float32)
    scaled.data = np.log1p(scaled.data)
    return scaled


def load_dataset(spec: DatasetSpec, data_dir: Path) -> ad.AnnData:
    """Read a data set: ``X`` log-normalised (float32); for count data the raw counts in ``layers['counts']``.

    Count data are normalised per cell (``log1p`` of counts per 10,000), which uses no other cell; when
    a split keeps only some genes they are normalised again over those genes (:func:`make_split`).
    """
    adata = ad.read_h5ad(data_dir / spec.file)
    adata = ad.AnnData(
        X=adata.X,
        obs=adata.obs[[spec.condition_key, spec.cell_type_key]].astype(str),
        var=pd.DataFrame(index=adata.var_names),
    )
    adata.var_names_make_unique()
    if spec.max_cells_per_group is not None:
        rng = np.random.default_rng(0)
        groups = adata.obs.groupby([spec.cell_type_key, spec.condition_key], observed=True).indices.values()
        keep = [rng.choice(g, size=min(len(g), spec.max_cells_per_group), replace=False) for g in groups]
        adata = adata[np.sort(np.concatenate(keep))].copy()
    if spec.kind == "counts":
        adata.layers["counts"] = sp.csr_matrix(adata.X, dtype=np.float32)
        adata.X = lognormalize(adata.layers["counts"])
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    return adata


# ---------------------------------------------------------------------------------------------- splits
@dataclass
class Split:
    """One held-out (cell type, target condition) and everything the methods may see."""

    dataset: str
    spec: DatasetSpec
    cell_type: str
    target: str
    train: ad.AnnData
    control: ad.AnnData
    real_target: ad.AnnData
    degs: np.ndarray

    @property
    def source(self) -> str:
        return self.spec.control

    @property
    def counts(self) -> bool:
        return self.spec.kind == "counts"


def select_genes(x_train, n_top_genes: int | None, min_cells: int = 3) -> np.ndarray:
    """Boolean mask of the ``n_top_genes`` most variable genes of the training cells (all genes if None).

    Only genes detected in at least ``min_cells`` training cells are candidates (constant genes break
    the dispersion binning of ``flavor='cell_ranger'``).
    """
    n_genes = x_train.shape[1]
    if n_top_genes is None or n_top_genes >= n_genes:
        return np.ones(n_genes, dtype=bool)
    import scanpy as sc

    detected = np.asarray((x_train > 0).sum(axis=0)).ravel() >= min_cells
    if detected.sum() <= n_top_genes:
        return detected
    table = sc.pp.highly_variable_genes(
        ad.AnnData(x_train[:, detected].copy()), n_top_genes=n_top_genes, flavor=HVG_FLAVOR, inplace=False
    )
    mask = np.zeros(n_genes, dtype=bool)
    mask[np.flatnonzero(detected)[table["highly_variable"].to_numpy()]] = True
    return mask


def make_split(
    adata: ad.AnnData, dataset: str, spec: DatasetSpec, cell_type: str, target: str, n_top_genes: int | None
) -> Split:
    """Hold out ``(cell_type, target)``; select genes on the training cells only; find the DEGs once."""
    types = adata.obs[spec.cell_type_key].to_numpy()
    conditions = adata.obs[spec.condition_key].to_numpy()
    held_out = (types == cell_type) & (conditions == target)
    control = (types == cell_type) & (conditions == spec.control)
    genes = select_genes(adata[~held_out].X, n_top_genes)
    if spec.kind == "counts" and not genes.all():
        # count models normalise by the library of the genes they model: score on that same scale
        adata = adata[:, genes].copy()
        adata.X = lognormalize(adata.layers["counts"])
        genes = np.ones(adata.n_vars, dtype=bool)
    train = adata[~held_out][:, genes].copy()
    real_control = adata[control][:, genes].copy()
    real_target = adata[held_out][:, genes].copy()
    degs = metrics.top_degs(real_target, real_control)
    return Split(dataset, spec, cell_type, target, train, real_control, real_target, degs)


# ---------------------------------------------------------------------------------------------- methods
class NotApplicable(Exception):
    """A method that cannot run on this kind of data set."""


def _trainer_kwargs() -> dict[str, Any]:
    return {"accelerator": "cpu", "enable_progress_bar": False}


def fit_predict_trvae(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int | str,
    *,
    condition_key: str,
    counts: bool,
    mmd_on: Literal["y", "z"] | None = "y",
    **_: Any,
) -> np.ndarray:
    """:class:`scvi_trvae.TRVAE` with its defaults (``nb`` on raw counts); ``mmd_on`` gives CVAE / MMD-CVAE.

    ``epochs="auto"`` keeps the model's own choice (about 1,500 minibatch steps).
    """
    import scvi

    from scvi_trvae import TRVAE

    scvi.settings.seed = seed
    train = train.copy()
    TRVAE.setup_anndata(train, condition_key=condition_key, layer="counts" if counts else None, is_count_data=counts)
    model = TRVAE(train, mmd_on=mmd_on)
    model.train(max_epochs=None if epochs == AUTO_EPOCHS else epochs, **_trainer_kwargs())
    return dense(model.predict_perturbation(control, source=source, target=target).X)


def fit_predict_scvi(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int,
    *,
    condition_key: str,
    counts: bool,
    **_: Any,
) -> np.ndarray:
    """scVI with the condition as batch; decode the control cells under ``target`` (log1p CP10k)."""
    if not counts:
        raise NotApplicable("scVI models raw counts; this data set is log-normalised")
    import scvi

    scvi.settings.seed = seed
    train = train.copy()
    scvi.model.SCVI.setup_anndata(train, layer="counts", batch_key=condition_key)
    model = scvi.model.SCVI(train)
    model.train(max_epochs=epochs, **_trainer_kwargs())
    expression = model.get_normalized_expression(
        control.copy(), transform_batch=[target], library_size=TARGET_LIBRARY_SIZE, return_numpy=True
    )
    return np.log1p(np.asarray(expression, dtype=np.float32))


def fit_predict_scgen(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int,
    *,
    condition_key: str,
    cell_type_key: str,
    **_: Any,
) -> np.ndarray:
    """scGen: VAE on log-normalised data, class-balanced latent arithmetic (``benchmarks/_scgen.py``)."""
    model = ScGen(seed=seed).fit(train.X, epochs)
    return model.predict(
        train.X, train.obs[condition_key].to_numpy(), train.obs[cell_type_key].to_numpy(), control.X, source, target
    )


def fit_predict_saucie(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int,
    *,
    condition_key: str,
    **_: Any,
) -> np.ndarray:
    """SAUCIE-like deterministic autoencoder with an MMD bottleneck (``benchmarks/_saucie.py``)."""
    model = SaucieLike(seed=seed).fit(train.X, train.obs[condition_key].to_numpy(), epochs)
    return model.predict(control.X, target)


def fit_predict_cyclegan(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int,
    *,
    condition_key: str,
    **_: Any,
) -> np.ndarray:
    """CycleGAN between the source and the target cells of the training set (``benchmarks/_cyclegan.py``)."""
    conditions = train.obs[condition_key].to_numpy()
    model = CycleGAN(seed=seed).fit(train.X[conditions == source], train.X[conditions == target], epochs)
    return model.predict(control.X)


def fit_predict_scarches(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int | str,
    *,
    condition_key: str,
    counts: bool,
    settings: Literal["defaults", "paper"] = "defaults",
    **_: Any,
) -> np.ndarray:
    """scArches' ``TRVAE``, fitted in its own environment by ``benchmarks/_scarches_runner.py``.

    ``settings="defaults"`` models raw counts (``nb``, scArches' default) where the data set has them and
    log-normalised data (``mse``) otherwise; ``"paper"`` always uses log-normalised data and ``mse``.
    """
    if not SCARCHES_PYTHON.exists():
        raise NotApplicable(f"no scArches environment at {SCARCHES_PYTHON}; create it with `make scarches-venv`")
    likelihood = "nb" if counts and settings == "defaults" else "mse"
    layer = "counts" if likelihood == "nb" else None
    cells = ad.concat([train, control], label="split", keys=["train", "predict"], index_unique="-")
    cells = ad.AnnData(
        X=cells.layers[layer] if layer else cells.X, obs=cells.obs[[condition_key, "split"]], var=cells.var[[]]
    )
    with tempfile.TemporaryDirectory() as tmp:
        data_path, pred_path = Path(tmp) / "cells.h5ad", Path(tmp) / "pred.npy"
        cells.write_h5ad(data_path)
        command = [
            str(SCARCHES_PYTHON), str(BENCH_DIR / "_scarches_runner.py"), str(data_path), str(pred_path),
            "--condition-key", condition_key, "--source", source, "--target", target, "--settings", settings,
            "--likelihood", likelihood, "--seed", str(seed), "--threads", str(max(torch.get_num_threads(), 1)),
        ]  # fmt: skip
        if epochs != AUTO_EPOCHS:
            command += ["--epochs", str(epochs)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"scArches runner failed: {result.stderr.strip().splitlines()[-1:]}")
        return np.load(pred_path)


def fit_predict_no_response(
    train: ad.AnnData, control: ad.AnnData, source: str, target: str, seed: int, epochs: int, **_: Any
) -> np.ndarray:
    """The held-out type's control cells, unchanged."""
    return dense(control.X)


def fit_predict_mean_shift(
    train: ad.AnnData,
    control: ad.AnnData,
    source: str,
    target: str,
    seed: int,
    epochs: int,
    *,
    condition_key: str,
    cell_type_key: str,
    cell_type: str,
    **_: Any,
) -> np.ndarray:
    """Control cells plus the other types' mean ``target - source`` shift (:func:`scvi_trvae.baselines.mean_shift`)."""
    pred = baselines.mean_shift(
        train, cell_type_key=cell_type_key, condition_key=condition_key, cell_type=cell_type, source=source,
        target=target,
    )  # fmt: skip
    if not np.array_equal(pred.obs_names, control.obs_names):
        raise RuntimeError("mean_shift returned cells other than the held-out type's control cells")
    return dense(pred.X)


FitPredict = Callable[..., np.ndarray]


@dataclass(frozen=True)
class MethodSpec:
    """A method of the benchmark and how to run it."""

    fit_predict: FitPredict
    description: str
    #: Default training epochs (None: nothing is trained; "auto": the method picks them from the data size).
    epochs: int | str | None = None
    #: "all": every seed of --seeds; "one": seed 0 only (slow); "deterministic": no randomness, run once.
    seeds: Literal["all", "one", "deterministic"] = "all"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: the method needs raw counts (not run on log-normalised data sets)
    counts_only: bool = False
    #: Bump when this method's code changes: its cached results are refit, the other methods' stay valid.
    revision: int = 0


METHODS: dict[str, MethodSpec] = {
    # "auto": TRVAE.train(max_epochs=None), about 1,500 minibatch steps (80 epochs on the Kang NK split)
    "trVAE": MethodSpec(fit_predict_trvae, "scvi_trvae.TRVAE defaults (MMD on y)", AUTO_EPOCHS, kwargs={"mmd_on": "y"}),
    "MMD-CVAE": MethodSpec(
        fit_predict_trvae, "TRVAE with mmd_on='z'", AUTO_EPOCHS, seeds="one", kwargs={"mmd_on": "z"}
    ),
    "CVAE": MethodSpec(fit_predict_trvae, "TRVAE with mmd_on=None (no MMD)", AUTO_EPOCHS, kwargs={"mmd_on": None}),
    "scGen": MethodSpec(fit_predict_scgen, "VAE 800-800, z 100 + balanced latent arithmetic", 100, seeds="one"),
    "SAUCIE-like": MethodSpec(
        fit_predict_saucie,
        "deterministic AE, MMD on bottleneck, conditional decoder",
        200,
        seeds="one",
        revision=1,  # 1: minibatches from scvi_trvae.ConditionBalancedSampler
    ),
    "CycleGAN": MethodSpec(fit_predict_cyclegan, "residual MLP generators, LSGAN + cycle + identity", 200, seeds="one"),
    "scVI": MethodSpec(
        fit_predict_scvi, "scvi.model.SCVI, condition as batch, transform_batch", 400, seeds="one", counts_only=True
    ),
    "scArches trVAE": MethodSpec(
        fit_predict_scarches,
        "scarches.models.TRVAE 0.6.1, its defaults (MMD on z, 256-64, z 10; nb on counts), 400 epochs + early stop",
        AUTO_EPOCHS,
        seeds="one",
    ),
    "scArches trVAE (paper)": MethodSpec(
        fit_predict_scarches,
        "scarches.models.TRVAE, the paper's network (800-800-128, MMD on y, z 40, MMD weight 100, KL 5e-5; mse)",
        AUTO_EPOCHS,
        seeds="one",
        kwargs={"settings": "paper"},
    ),
    "control + mean shift": MethodSpec(
        fit_predict_mean_shift, "scvi_trvae.baselines.mean_shift", seeds="deterministic"
    ),
    "no response": MethodSpec(fit_predict_no_response, "scvi_trvae.baselines.no_response", seeds="deterministic"),
}


# ---------------------------------------------------------------------------------------------- running
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None, NumPy scalars plain Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def seeds_for(method: MethodSpec, n_seeds: int) -> list[int]:
    """The seeds a method is run with."""
    return list(range(n_seeds)) if method.seeds == "all" else [0]


def seeds_label(method: MethodSpec, seeds: Sequence[int]) -> str:
    """How the table describes the seeds of a method."""
    if method.seeds == "deterministic":
        return "deterministic"
    label = f"{len(seeds)}"
    return label + (" (one seed)" if method.seeds == "one" else "")


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


def _cache_path(config: RunConfig, split: Split, method: str, seed: int) -> Path:
    name = f"{_slug(split.cell_type)}__{_slug(split.target)}__{_slug(method)}__seed{seed}.json"
    return config.cache_dir / split.dataset / name


def _result_key(config: RunConfig, split: Split, method: str) -> dict[str, Any]:
    revision = {"method_revision": METHODS[method].revision} if METHODS[method].revision else {}
    return {
        "cache_version": CACHE_VERSION,
        **revision,
        "epochs": config.epochs.get(method),
        "n_genes": int(split.train.n_vars),
        "n_train": int(split.train.n_obs),
        "gene_hash": int(pd.util.hash_pandas_object(pd.Series(split.train.var_names)).sum() % (2**31)),
    }


def _figure_split(split: Split) -> bool:
    figure = split.spec.figure
    return figure is not None and figure[0] == split.cell_type and figure[1] == split.target


def run_one(config: RunConfig, split: Split, name: str, seed: int) -> dict[str, Any]:
    """Fit, predict and score one method on one split with one seed (or read the cached result)."""
    method = METHODS[name]
    row: dict[str, Any] = {
        "dataset": split.dataset,
        "cell_type": split.cell_type,
        "source": split.source,
        "target": split.target,
        "method": name,
        "seed": seed,
        "seeds_mode": method.seeds,
        "kind": split.spec.kind,
        "n_genes": int(split.train.n_vars),
        "n_train": int(split.train.n_obs),
        "n_control": int(split.control.n_obs),
        "n_target": int(split.real_target.n_obs),
    }
    if method.counts_only and not split.counts:
        return {**row, "status": "not run", "reason": f"{name} models raw counts; this data set is log-normalised"}
    key = _result_key(config, split, name)
    path = _cache_path(config, split, name, seed)
    if path.exists():
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return {**cached, "cached": True}
    if config.cached_only:
        return {**row, "status": "not run", "reason": "not in the cache (--cached-only: the run was stopped before it)"}
    spec = split.spec
    if config.threads > 0:  # scanpy (numba) resets torch's OpenMP thread count: set it again before each fit
        torch.set_num_threads(config.threads)
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        pred = method.fit_predict(
            split.train, split.control, split.source, split.target, seed, config.epochs.get(name) or 0,
            condition_key=spec.condition_key, cell_type_key=spec.cell_type_key, cell_type=split.cell_type,
            counts=split.counts, **method.kwargs,
        )  # fmt: skip
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
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        scores = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=split.degs, seed=0)
    except ValueError as error:  # non-finite predictions: a result of the method (deterministic), so cached
        row.update(status="failed", reason=str(error), fit_seconds=fit_seconds, eval_seconds=0.0, key=key)
        path.write_text(json.dumps(_clean(row), indent=1))
        return {**row, "cached": False}
    row.update({k: scores[k] for k in METRICS})
    row.update(
        status="ok", epochs=config.epochs.get(name), fit_seconds=fit_seconds, fit_cpu_seconds=fit_cpu_seconds,
        eval_seconds=time.perf_counter() - start, key=key,
    )  # fmt: skip
    if _figure_split(split) and seed == 0:
        np.save(path.with_suffix(".npy"), pred)
    path.write_text(json.dumps(_clean(row), indent=1))
    return {**row, "cached": False}


def iter_splits(config: RunConfig) -> list[tuple[str, DatasetSpec, ad.AnnData, str, str]]:
    """The (dataset, spec, data, held-out type, target) of the run, in order."""
    out = []
    for dataset in config.datasets:
        spec = DATASETS[dataset]
        adata = load_dataset(spec, config.data_dir)
        types = adata.obs[spec.cell_type_key].to_numpy()
        conditions = adata.obs[spec.condition_key].to_numpy()
        wanted = sorted(set(types)) if config.cell_types is None else [t for t in config.cell_types if t in set(types)]
        if not wanted:
            logger.warning("%s: none of the cell types %s; skipped", dataset, config.cell_types)
        for target in spec.perturbed:
            for cell_type in wanted:
                n_target = int(((types == cell_type) & (conditions == target)).sum())
                n_control = int(((types == cell_type) & (conditions == spec.control)).sum())
                if min(n_target, n_control) < config.min_cells:
                    logger.warning(
                        "%s %s -> %s: %d control / %d target cells (< %d); skipped",
                        dataset, cell_type, target, n_control, n_target, config.min_cells,
                    )  # fmt: skip
                    continue
                out.append((dataset, spec, adata, cell_type, target))
    return out


def run(config: RunConfig) -> list[dict[str, Any]]:
    """Run every split x method x seed, draw the figures and write the JSON and markdown; returns the rows."""
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    plan = iter_splits(config)
    n_jobs = sum(len(seeds_for(METHODS[m], config.n_seeds)) for m in config.methods) * len(plan)
    done = 0
    figure_splits: list[Split] = []
    for dataset, spec, adata, cell_type, target in plan:
        split = make_split(adata, dataset, spec, cell_type, target, config.n_top_genes[dataset])
        if _figure_split(split):
            figure_splits.append(split)
        logger.info(
            "== %s: %s %s -> %s held out (%d train cells, %d genes; %d control, %d target)",
            dataset, cell_type, spec.control, target, split.train.n_obs, split.train.n_vars,
            split.control.n_obs, split.real_target.n_obs,
        )  # fmt: skip
        for name in config.methods:
            for seed in seeds_for(METHODS[name], config.n_seeds):
                done += 1
                row = run_one(config, split, name, seed)
                rows.append(row)
                if row["status"] == "ok":
                    logger.info(
                        "[%d/%d] %-20s seed %d: %6.1f s%s  r2 mean DEG %.3f  Δ-Pearson DEG %.3f  E-dist %.3f",
                        done, n_jobs, name, seed, row["fit_seconds"], " (cached)" if row.get("cached") else "",
                        row["r2_mean_deg"] or np.nan, row["pearson_delta_deg"] or np.nan, row["edist_scaled"] or np.nan,
                    )  # fmt: skip
                else:
                    logger.info(
                        "[%d/%d] %-20s seed %d: %s (%s)", done, n_jobs, name, seed, row["status"], row["reason"]
                    )
    if config.figure_dir is not None:
        for split in figure_splits:
            try:
                make_figures(config, split)
            except Exception:  # figures must not cost the results
                logger.exception("figures of %s %s failed", split.dataset, split.cell_type)
    write_outputs(config, rows, time.perf_counter() - start)
    return rows


# ---------------------------------------------------------------------------------------------- reporting
def _fmt(values: Sequence[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


SPLIT_KEYS = ["dataset", "cell_type", "target"]


def _nanmedian(values: pd.Series) -> float:
    with warnings.catch_warnings():  # a metric undefined on every split (Δ-Pearson of "no response") stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmedian(values.astype(float)))


def _split_means(frame: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of one method per split, averaged over the seeds that split has."""
    return frame.groupby(SPLIT_KEYS)[metric].agg(
        lambda v: float(np.nanmean(v.astype(float))) if v.notna().any() else np.nan
    )


def _median_cell(frame: pd.DataFrame, metric: str, digits: int = 3) -> str:
    """Median over splits of the seed-averaged ``metric``; ``± sd`` over seeds where several seeds ran.

    The spread is the standard deviation, over seeds, of the medians over the splits that every seed covers.
    """
    median = _nanmedian(_split_means(frame, metric))
    if not math.isfinite(median):
        return "—"
    seeds = sorted(frame["seed"].unique())
    if len(seeds) < 2:
        return f"{median:.{digits}f}"
    per_split = frame.groupby(SPLIT_KEYS)["seed"].nunique()
    common = per_split[per_split == len(seeds)].index
    complete = frame.set_index(SPLIT_KEYS).loc[common].reset_index()
    spreads = [_nanmedian(group[metric]) for _, group in complete.groupby("seed")]
    if len(spreads) < 2:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ± {np.std(spreads, ddof=1):.{digits}f}"


def _failures(frame: pd.DataFrame, method: str) -> str:
    """`` (k failed)`` when some runs of a method failed (they are left out of the medians), else ``""``."""
    n_failed = int(((frame["method"] == method) & (frame["status"] == "failed")).sum())
    return f" ({n_failed} runs failed)" if n_failed else ""


def _method_cell(frame: pd.DataFrame, method: str, n_seeds: int) -> tuple[str, str]:
    """(seeds column, status text) of a method in a table."""
    spec = METHODS[method]
    mine = frame[frame["method"] == method]
    if mine.empty:
        return "—", "not in this run"
    ok = mine[mine["status"] == "ok"]
    if ok.empty:
        reasons = sorted({f"{status}: {reason}" for status, reason in zip(mine["status"], mine["reason"], strict=True)})
        return "—", "; ".join(reasons)
    seeds = sorted(ok["seed"].unique())
    label = seeds_label(spec, seeds)
    per_split = ok.groupby(SPLIT_KEYS)["seed"].nunique()
    if len(seeds) > 1 and (per_split < len(seeds)).any():
        label += f" on {int((per_split == len(seeds)).sum())} of {len(per_split)} splits, fewer on the rest"
    return label, ""


def markdown_row(cells: Sequence[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def markdown_header(header: Sequence[str]) -> list[str]:
    """A markdown table's header row and rule."""
    return [markdown_row(header), "|" + "---|" * len(header)]


def _dataset_table(frame: pd.DataFrame, methods: Sequence[str], n_seeds: int) -> list[str]:
    header = ["method", "seeds", "splits", *[METRIC_LABELS[m] for m in METRICS], "fit s (mean)"]
    lines = markdown_header(header)
    for method in methods:
        seeds, note = _method_cell(frame, method, n_seeds)
        if note:
            lines.append(f"| {method} | {seeds} | — | " + f"*{note}* |" + " |" * (len(METRICS)))
            continue
        ok = frame[(frame["method"] == method) & (frame["status"] == "ok")]
        n_splits = f"{ok.groupby(['cell_type', 'target']).ngroups}{_failures(frame, method)}"
        cells = [_median_cell(ok, m) for m in METRICS]
        lines.append(markdown_row([method, seeds, n_splits, *cells, f"{ok['fit_seconds'].astype(float).mean():.1f}"]))
    return lines


def _overall_table(frame: pd.DataFrame, methods: Sequence[str], n_seeds: int) -> list[str]:
    header = [
        "method",
        "seeds",
        "datasets",
        "splits",
        "median Δ-Pearson (DEG)",
        "median E-dist scaled ↓",
        "compute (s)",
    ]
    lines = markdown_header(header)
    for method in methods:
        seeds, note = _method_cell(frame, method, n_seeds)
        if note:
            lines.append(f"| {method} | {seeds} | — | — | *{note}* | | |")
            continue
        ok = frame[(frame["method"] == method) & (frame["status"] == "ok")]
        n_splits = f"{ok.groupby(['dataset', 'cell_type', 'target']).ngroups}{_failures(frame, method)}"
        seconds = (ok["fit_seconds"].astype(float) + ok["eval_seconds"].astype(float)).sum()
        lines.append(
            f"| {method} | {seeds} | {ok['dataset'].nunique()} | {n_splits} | "
            f"{_median_cell(ok, 'pearson_delta_deg')} | {_median_cell(ok, 'edist_scaled')} | "
            f"{seconds:.0f} |"
        )
    return lines


def _paired_table(frame: pd.DataFrame, methods: Sequence[str], reference: str = "trVAE") -> list[str]:
    """``reference`` against each other method on the splits both have (seed-averaged per split)."""
    ok = frame[frame["status"] == "ok"]
    mine = ok[ok["method"] == reference]
    if mine.empty:
        return []
    compared = (("pearson_delta_deg", "Δ-Pearson (DEG)", 1.0), ("edist_scaled", "E-dist scaled ↓", -1.0))
    reference_means = {metric: _split_means(mine, metric) for metric, _, _ in compared}
    header = ["method", "common splits"]
    for _, label, _ in compared:
        header += [f"{label}: {reference}", f"{label}: method", f"{label}: {reference} better"]
    lines = markdown_header(header)
    for method in methods:
        theirs = ok[ok["method"] == method]
        if method == reference or theirs.empty:
            continue
        cells, n_common = [], 0
        for metric, _, sign in compared:
            pair = pd.concat({"ref": reference_means[metric], "other": _split_means(theirs, metric)}, axis=1).dropna()
            if metric == "edist_scaled":  # defined for every method, so its pairs are the common splits
                n_common = len(pair)
            if pair.empty:  # e.g. Δ-Pearson of "no response", undefined on every split
                cells += ["—", "—", "—"]
                continue
            wins = int((sign * (pair["ref"] - pair["other"]) > 0).sum())
            cells += [f"{pair['ref'].median():.3f}", f"{pair['other'].median():.3f}", f"{wins}/{len(pair)}"]
        lines.append(markdown_row([method, str(n_common), *cells]))
    return lines


def _headline_table(
    frame: pd.DataFrame, methods: Sequence[str], dataset: str, cell_type: str, target: str
) -> list[str]:
    keys = ["r2_mean_all", "r2_mean_deg", "r2_var_all", "r2_var_deg", "pearson_delta_deg", "edist_scaled"]
    header = ["method", "seeds", *[METRIC_LABELS[k] for k in keys]]
    lines = markdown_header(header)
    here = frame[(frame["dataset"] == dataset) & (frame["cell_type"] == cell_type) & (frame["target"] == target)]
    for method in methods:
        ok = here[(here["method"] == method) & (here["status"] == "ok")]
        if ok.empty:
            continue
        cells = [_fmt(list(ok[k].astype(float))) for k in keys]
        lines.append(markdown_row([method, str(len(ok)), *cells]))
    return lines


_PUBLISHED_ROWS = (
    ("trVAE paper code", "Kang, NK held out, 2,000 HVGs", "0.969", "0.987 (top 100)", "0.703", "0.730",
     "bootstrapped top-1000 DEG r² mean 0.975 (scGen 0.907)"),
    ("trVAE paper", "Haber, Tuft held out, Control -> H.poly.Day10, 1,000 HVGs", "0.968", "—", "0.867", "—",
     "scGen 0.891 / 0.747"),
    ("scArches re-implementation (2024)", "Haber Tuft", "0.91", "—", "0.55", "—", ""),
    ("scArches 0.6.1 TRVAE, paper architecture (800-800-128, z 20), measured here",
     "Kang NK split of `../shared/data`", "0.861", "0.908", "0.467", "—",
     "Δ-Pearson (DEG) 0.895, E-dist scaled 1.12"),
    ("control + mean shift, measured here", "Kang NK split of `../shared/data`, all 6,998 genes", "—", "0.92", "—", "—",
     "Δ-Pearson (DEG) 0.91, E-dist scaled 0.17"),
)  # fmt: skip


def published_table() -> list[str]:
    """Published and earlier measured numbers (``shared/notes/evaluation.md``), for reference."""
    header = ["source", "task", "r² mean (all)", "r² mean (DEG)", "r² var (all)", "r² var (DEG)", "other"]
    lines = [
        "Published numbers, for reference only: their data, gene selection and splits, not ours "
        '(`../shared/notes/evaluation.md`). "r²" is the squared Pearson r of per-gene means / variances.',
        "",
        *markdown_header(header),
    ]
    lines += [markdown_row(row) for row in _PUBLISHED_ROWS]
    return lines


def markdown_report(config: RunConfig, rows: list[dict[str, Any]], wall_seconds: float) -> str:
    """The benchmark report in markdown."""
    frame = pd.DataFrame(rows)
    for column in ("reason", "fit_seconds", "eval_seconds", *METRICS):
        if column not in frame:
            frame[column] = np.nan
    ok = frame[frame["status"] == "ok"]
    compute = float((ok["fit_seconds"].astype(float) + ok["eval_seconds"].astype(float)).sum())
    methods = config.methods
    lines = [
        "# Out-of-sample benchmark" + (" (quick mode: a smoke test, not a result)" if config.quick else ""),
        "",
        "Generated by `benchmarks/out_of_sample.py` "
        f"(`python benchmarks/out_of_sample.py {' '.join(config.argv)}`); do not edit by hand.",
        "",
        "**Protocol.** For every cell type and every perturbed condition of each data set, the cells of that "
        "(type, condition) are held out; each method is trained on all other cells (including the held-out "
        "type's control cells and, in the 3-condition data, its cells in the other perturbed condition), "
        "predicts the held-out cells from the same type's control cells, and is scored with "
        "`scvi_trvae.metrics.evaluate_prediction` against the real held-out cells. Genes: highly variable "
        f"genes (scanpy, `flavor='{HVG_FLAVOR}'`) selected on the training cells of each split only, or all "
        "genes (see the data sets). DEGs (50 up + 50 down, Wilcoxon, real target vs real control) are computed "
        "once per split and shared by all methods. Count data: trVAE/CVAE/MMD-CVAE (`likelihood='nb'`), "
        "scArches trVAE with its defaults (`recon_loss='nb'`) and scVI are trained on raw counts, everything "
        "else on `log1p` of counts per 10,000, and all are scored on that scale. scVI's prediction is the "
        "decoder mean (no sampling), which the E-distance penalises. Splits with fewer than "
        f"{config.min_cells} held-out or control cells are skipped.",
        "",
        "**Tables.** Each cell is the median over the held-out splits of a data set (or of all data sets); "
        "each split's value is first averaged over the seeds it was run with; ± is the sd over seeds of the medians "
        "over the splits that every seed covers. *seeds* says how many seeds a method "
        "was run with: slow baselines run with one seed, deterministic ones once. r² are squared Pearson "
        "correlations (scGen/trVAE figure metric); Δ-Pearson is the correlation of predicted and real mean "
        "shifts from control; E-dist scaled is the energy distance to the real cells over that of the control "
        "cells (0 perfect, 1 = no better than no response; lower is better). Δ-Pearson is undefined for "
        "no response (its predicted shift is zero): shown as —. Runs that failed (e.g. non-finite "
        "predictions) are left out of the medians and counted next to *splits*.",
        "",
        (
            "**Wall time.** This page was made from the cache (`--cached-only`); "
            if config.cached_only
            else f"**Wall time.** This invocation: {wall_seconds / 60:.1f} min; "
        )
        + "compute summed over all results "
        f"(including ones read from the cache): {compute / 60:.1f} min; {len(ok)} results. "
        f"Machine: {platform.machine()}, torch threads {torch.get_num_threads()}.",
        "",
        "## Reproducing",
        "",
        "```",
        "python benchmarks/out_of_sample.py                # everything; resumes from benchmarks/cache/full",
        "python benchmarks/out_of_sample.py --quick        # smoke test (Kang NK, 500 genes, 1 seed, 3 epochs)",
        "python benchmarks/out_of_sample.py --datasets kang --methods trVAE scGen --seeds 1 --epochs trVAE=100",
        "```",
        "",
        "Each (data set, held-out type, target, method, seed) result is cached as JSON, keyed by epochs and "
        "genes, so an interrupted run resumes. To use several cores, run disjoint `--datasets` in separate "
        "processes (each with its own `--output-dir`, the same cache) and then the plain command, which only "
        "reads the cache and writes this page. One torch thread per process (`--threads`, default 1): "
        "several threads on a busy machine were measured to be many times slower than one.",
        "",
        "scArches 0.6.1 runs in its own environment (`make scarches-venv`; `benchmarks/_scarches_runner.py`), "
        "so that it cannot change the packages under test; scArches has no prediction method, so a cell is "
        "encoded with its own condition (posterior mean) and decoded with the target's, as in the trVAE paper.",
        "",
        "Deviations from the papers: SAUCIE-like, scGen and "
        "CycleGAN are re-implementations in `benchmarks/` (`_saucie.py`, `_scgen.py`, `_cyclegan.py`); "
        "scGen's latent shift uses only cell types observed in both conditions, resampled to equal sizes.",
        "",
        "## Methods",
        "",
        "| method | what | epochs | seeds |",
        "|---|---|---|---|",
    ]
    for name in methods:
        spec = METHODS[name]
        epochs = config.epochs.get(name)
        seeds = seeds_label(spec, seeds_for(spec, config.n_seeds))
        lines.append(f"| {name} | {spec.description} | {'—' if epochs is None else epochs} | {seeds} |")
    lines += ["", "## Overall (all data sets)", "", *_overall_table(frame, methods, config.n_seeds), ""]
    paired = _paired_table(frame, methods)
    if paired:
        lines += [
            "## trVAE against each method, on the same splits",
            "",
            "Medians over the splits that both trVAE and the method have (seed-averaged per split), and in how "
            "many of those splits trVAE is better. Methods with fewer splits than trVAE are compared on theirs only.",
            "",
            *paired,
            "",
        ]
    for dataset in config.datasets:
        spec = DATASETS[dataset]
        here = frame[frame["dataset"] == dataset]
        if here.empty:
            continue
        n_genes = config.n_top_genes[dataset]
        lines += [
            f"## {dataset}",
            "",
            f"{spec.description}. File `{spec.file}`; {spec.control} -> {', '.join(spec.perturbed)}; "
            f"genes: {'all' if n_genes is None else f'{n_genes} HVGs of the training cells'}; "
            f"held-out types: {', '.join(sorted(here['cell_type'].unique()))}.",
            "",
            *_dataset_table(here, methods, config.n_seeds),
            "",
        ]
    headline = [("kang", "NK", "stimulated"), ("haber_hpoly", "Tuft", "Hpoly.Day10")]
    for dataset, cell_type, target in headline:
        if ((frame["dataset"] == dataset) & (frame["cell_type"] == cell_type)).any():
            lines += [
                f"## Headline split: {dataset}, {cell_type} -> {target} (compare with the published numbers)",
                "",
                *_headline_table(frame, methods, dataset, cell_type, target),
                "",
            ]
    lines += ["## Published numbers", "", *published_table(), ""]
    if config.figure_dir is not None:
        figures = sorted(config.figure_dir.glob("*.png")) if config.figure_dir.exists() else []
        if figures:
            lines += ["## Figures", ""]
            for figure in figures:
                try:
                    rel = figure.relative_to(config.markdown_path.parent)
                except ValueError:
                    rel = figure
                lines.append(f"![{figure.stem}]({rel.as_posix()})")
            lines.append("")
    return "\n".join(lines)


def write_outputs(config: RunConfig, rows: list[dict[str, Any]], wall_seconds: float) -> None:
    """Write the JSON rows and the markdown report."""
    config.json_path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "argv": config.argv,
        "quick": config.quick,
        "wall_seconds": wall_seconds,
        "epochs": config.epochs,
        "n_top_genes": config.n_top_genes,
        "n_seeds": config.n_seeds,
        "rows": [{k: v for k, v in row.items() if k != "key"} for row in rows],
    }
    config.json_path.write_text(json.dumps(_clean(payload), indent=1, allow_nan=False))
    config.markdown_path.parent.mkdir(parents=True, exist_ok=True)
    config.markdown_path.write_text(markdown_report(config, rows, wall_seconds))
    logger.info("wrote %s and %s", config.json_path, config.markdown_path)


def make_figures(config: RunConfig, split: Split) -> None:
    """Reg-mean, reg-var and gene-distribution plots of the cached seed-0 predictions of a figure split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scvi_trvae import pl

    predictions = {}
    for name in config.methods:
        path = _cache_path(config, split, name, 0).with_suffix(".npy")
        if path.exists():
            pred = np.load(path)
            if pred.shape == (split.control.n_obs, split.control.n_vars):
                predictions[name] = pred
    if not predictions:
        return
    config.figure_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{split.dataset}_{_slug(split.cell_type)}_{_slug(split.target)}"
    real_target, control = dense(split.real_target.X), dense(split.control.X)
    names = np.asarray(split.control.var_names, dtype=str)
    n_cols = min(len(predictions), 4)
    n_rows = int(np.ceil(len(predictions) / n_cols))
    for what, plot in (("reg_mean", pl.reg_mean_plot), ("reg_var", pl.reg_var_plot)):
        fig, axes = plt.subplots(
            n_rows, n_cols, figsize=(4.2 * n_cols, 4.2 * n_rows), squeeze=False, layout="constrained"
        )
        for ax, (name, pred) in zip(axes.ravel(), predictions.items(), strict=False):
            plot(
                pred,
                real_target,
                control,
                degs=split.degs,
                gene_names=names,
                title=name,
                ax=ax,
                show=False,
                top_labels=5,
            )
        for ax in axes.ravel()[len(predictions) :]:
            ax.set_axis_off()
        fig.suptitle(f"{split.dataset}: {split.cell_type} {split.target} (held out), {len(names)} genes")
        fig.savefig(config.figure_dir / f"{stem}_{what}.png", dpi=110)
        plt.close(fig)
    genes = [g for g in split.spec.figure[2] if g in set(names)] if split.spec.figure else []
    genes = (genes or [names[split.degs[0]], names[split.degs[1]]])[:3]
    groups = {"control": control, "real": real_target, **predictions}
    fig, axes = plt.subplots(
        len(genes), 1, figsize=(max(6.0, 0.8 * len(groups)), 3.0 * len(genes)), layout="constrained"
    )
    pl.gene_distribution_plot(groups, genes, gene_names=names, ax=list(np.ravel(axes)), show=False)
    fig.suptitle(f"{split.dataset}: {split.cell_type} {split.target} (held out)")
    fig.savefig(config.figure_dir / f"{stem}_genes.png", dpi=110)
    plt.close(fig)
    logger.info("wrote figures %s_*.png to %s", stem, config.figure_dir)


# ---------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: all (quick: kang)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: all")
    parser.add_argument("--cell-types", nargs="+", help="held-out cell types (default: all; quick: NK)")
    parser.add_argument("--seeds", type=int, help="seeds of the multi-seed methods (default 3; quick 1)")
    parser.add_argument(
        "--epochs", nargs="+", metavar="N|METHOD=N",
        help="epochs for every method (N) or per method (METHOD=N); default per method (quick: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--n-top-genes", type=int,
        help="HVGs per split for every data set (0: all genes); default per data set (quick: 500)",
    )  # fmt: skip
    parser.add_argument("--min-cells", type=int, default=3, help="skip splits with fewer control or target cells")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run into its own output/cache")
    parser.add_argument("--output-dir", type=Path, help="write JSON, markdown and figures here")
    parser.add_argument(
        "--cache-dir", type=Path, help="default benchmarks/cache/full (quick: benchmarks/cache/quick/cache)"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per fit (default 1; 0: torch's default). Several threads on a busy machine can be "
        "far slower than one: run data sets in parallel processes instead",
    )  # fmt: skip
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--cached-only", action="store_true", help="fit nothing: report what the cache holds")
    return parser


def _parse_epochs(values: Sequence[str] | None, methods: Sequence[str], quick: bool) -> dict[str, int | str | None]:
    epochs = {name: (3 if quick and METHODS[name].epochs else METHODS[name].epochs) for name in methods}
    for value in values or []:
        if "=" in value:
            name, number = value.rsplit("=", 1)
            if name not in METHODS:
                raise SystemExit(f"--epochs: unknown method {name!r}; choose from {list(METHODS)}")
            epochs[name] = int(number)
        else:
            epochs = {name: (int(value) if METHODS[name].epochs else None) for name in methods}
    return epochs


def build_config(args: argparse.Namespace, argv: Sequence[str]) -> RunConfig:
    """Resolve the defaults (and quick mode) into a :class:`RunConfig`."""
    quick = args.quick
    datasets = args.datasets or (["kang"] if quick else list(DATASETS))
    methods = args.methods or list(METHODS)
    cell_types = args.cell_types or (["NK"] if quick else None)
    n_seeds = args.seeds if args.seeds is not None else (1 if quick else 3)
    if args.n_top_genes is not None:
        n_top_genes = {d: (args.n_top_genes or None) for d in datasets}
    else:
        n_top_genes = {d: (500 if quick else DATASETS[d].n_top_genes) for d in datasets}
    if args.output_dir is not None:
        out = args.output_dir
        json_path, markdown_path, figure_dir = out / "out_of_sample.json", out / "benchmarks.md", out / "figures"
    elif quick:
        out = BENCH_DIR / "cache" / "quick"  # gitignored, next to the quick cache
        json_path, markdown_path, figure_dir = out / "out_of_sample.json", out / "benchmarks.md", out / "figures"
    else:
        json_path = BENCH_DIR / "results" / "out_of_sample.json"
        markdown_path, figure_dir = REPO / "docs" / "benchmarks.md", REPO / "docs" / "figures"
    cache_dir = args.cache_dir or (BENCH_DIR / "cache" / ("quick/cache" if quick else "full"))
    return RunConfig(
        datasets=datasets, methods=methods, cell_types=cell_types, n_seeds=n_seeds,
        epochs=_parse_epochs(args.epochs, methods, quick), n_top_genes=n_top_genes, min_cells=args.min_cells,
        data_dir=args.data_dir, cache_dir=cache_dir, json_path=json_path, markdown_path=markdown_path,
        figure_dir=None if args.no_figures else figure_dir, quick=quick, argv=list(argv), threads=args.threads,
        cached_only=args.cached_only,
    )  # fmt: skip


def _quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Δ-Pearson of "no response" is undefined (its response is exactly zero): NaN, reported as "—"
    warnings.filterwarnings("ignore", message="An input array is constant")


def _limit_numba_threads(threads: int) -> None:
    """Keep scanpy's numba kernels from resetting the OpenMP thread count that torch shares with them.

    numba's ``omp`` threading layer sets the process's OpenMP threads to its own count (all cores) when
    scanpy computes sparse means and variances, silently undoing ``torch.set_num_threads``.
    """
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba comes with scanpy
        pass


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command-line entry point; returns the result rows."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    _quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        _limit_numba_threads(args.threads)
    config = build_config(args, argv)
    missing = [DATASETS[d].file for d in config.datasets if not (config.data_dir / DATASETS[d].file).exists()]
    if missing:
        raise SystemExit(f"data not found in {config.data_dir}: {missing}")
    rows = run(config)
    print(markdown_summary(config, rows))
    return rows


def markdown_summary(config: RunConfig, rows: list[dict[str, Any]]) -> str:
    """The per-data-set tables, for the console."""
    frame = pd.DataFrame(rows)
    for column in ("reason", "fit_seconds", "eval_seconds", *METRICS):
        if column not in frame:
            frame[column] = np.nan
    lines = []
    for dataset in config.datasets:
        here = frame[frame["dataset"] == dataset]
        if not here.empty:
            lines += [f"\n{dataset}", *_dataset_table(here, config.methods, config.n_seeds)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
