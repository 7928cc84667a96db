"""A held-out (cell type, target condition) split: what the methods may see and what they are scored against.

Held-out cells take no part in training, gene selection or any statistic a method fits.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from scvi_trvae import metrics
from scvi_trvae.datasets import holdout_split

from . import paths
from .datasets import DATASETS, DatasetSpec
from .expression import lognormalize

#: scanpy flavour of the per-split gene selection. ``"seurat"`` with ``n_top_genes`` favours lowly expressed,
#: noisy genes on these preprocessed files (on Kang its top 500 miss ISG15, IFI6, IFIT3 ...);
#: ``"cell_ranger"`` (median/MAD-normalised dispersions) keeps the interferon response genes.
HVG_FLAVOR = "cell_ranger"

logger = logging.getLogger("out_of_sample")


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
        """Whether the data set has raw counts (``layers['counts']``)."""
        return self.spec.kind == "counts"

    @property
    def condition_key(self) -> str:
        return self.spec.condition_key

    @property
    def cell_type_key(self) -> str:
        return self.spec.cell_type_key

    @property
    def task_keys(self) -> dict[str, str]:
        """``cell_type_key``, ``condition_key``, ``source`` and ``target``, as the package's functions take them."""
        return {"cell_type_key": self.cell_type_key, "condition_key": self.condition_key, "source": self.source,
                "target": self.target}  # fmt: skip

    @property
    def setup_kwargs(self) -> dict[str, object]:
        """``TRVAE.setup_anndata`` arguments of a pipeline fit: the raw counts with a count likelihood, if any."""
        return {"layer": "counts", "is_count_data": True} if self.counts else {}

    @property
    def is_figure_split(self) -> bool:
        """Whether the data set's figures are drawn from this split."""
        figure = self.spec.figure
        return figure is not None and figure[0] == self.cell_type and figure[1] == self.target


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
    chosen = table["highly_variable"].to_numpy()
    if chosen.sum() != n_top_genes:
        chosen = _top_dispersions(table, n_top_genes)
    mask = np.zeros(n_genes, dtype=bool)
    mask[np.flatnonzero(detected)[chosen]] = True
    return mask


def _top_dispersions(table, n_top_genes: int) -> np.ndarray:
    """Exactly ``n_top_genes`` genes by normalised dispersion, ties broken by the raw dispersion.

    scanpy keeps every gene at or above the n-th normalised dispersion, so genes tied there (one-gene
    bins all get the same value) make more than ``n_top_genes``, and which tie falls on which side of
    the cut-off depends on float rounding that differs between library versions and machines.
    """
    normalised = np.round(np.nan_to_num(table["dispersions_norm"].to_numpy(dtype=float), nan=-np.inf), 6)
    raw = np.nan_to_num(table["dispersions"].to_numpy(dtype=float), nan=-np.inf)
    order = np.lexsort((-raw, -normalised))  # the last key sorts first
    chosen = np.zeros(len(table), dtype=bool)
    chosen[order[:n_top_genes]] = True
    return chosen


def _keep_genes(cells: ad.AnnData, genes: np.ndarray, renormalise: bool) -> ad.AnnData:
    cells = cells[:, genes].copy()
    if renormalise:  # count models normalise by the library of the genes they model: score on that same scale
        cells.X = lognormalize(cells.layers["counts"])
    return cells


def make_split(
    adata: ad.AnnData, dataset: str, spec: DatasetSpec, cell_type: str, target: str, n_top_genes: int | None
) -> Split:
    """Hold out ``(cell_type, target)``; select genes on the training cells only; find the DEGs once."""
    parts = holdout_split(
        adata, cell_type_key=spec.cell_type_key, condition_key=spec.condition_key, cell_type=cell_type,
        source=spec.control, target=target,
    )  # fmt: skip
    genes = select_genes(parts.train.X, n_top_genes)
    renormalise = spec.kind == "counts" and not genes.all()
    train, control, real_target = (
        _keep_genes(p, genes, renormalise) for p in (parts.train, parts.control, parts.real_target)
    )
    degs = metrics.top_degs(real_target, control)
    return Split(dataset, spec, cell_type, target, train, control, real_target, degs)


def held_out_pairs(
    adata: ad.AnnData, dataset: str, spec: DatasetSpec, cell_types: Sequence[str] | None, min_cells: int
) -> list[tuple[str, str]]:
    """The (cell type, target) pairs of a data set to hold out, in order; pairs with too few cells are skipped."""
    types = adata.obs[spec.cell_type_key].to_numpy()
    conditions = adata.obs[spec.condition_key].to_numpy()
    wanted = sorted(set(types)) if cell_types is None else [t for t in cell_types if t in set(types)]
    if not wanted:
        logger.warning("%s: none of the cell types %s; skipped", dataset, cell_types)
    pairs = []
    for target in spec.perturbed:
        for cell_type in wanted:
            n_target = int(((types == cell_type) & (conditions == target)).sum())
            n_control = int(((types == cell_type) & (conditions == spec.control)).sum())
            if min(n_target, n_control) < min_cells:
                logger.warning(
                    "%s %s -> %s: %d control / %d target cells (< %d); skipped",
                    dataset, cell_type, target, n_control, n_target, min_cells,
                )  # fmt: skip
                continue
            pairs.append((cell_type, target))
    return pairs


def split_parser(description: str, out_dir: Path) -> argparse.ArgumentParser:
    """The command line shared by the scripts that run or read something per benchmark split."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=paths.DATA_DIR)
    parser.add_argument("--out-dir", type=Path, default=out_dir)
    parser.add_argument("--report", action="store_true", help="only print the table of the splits done so far")
    parser.add_argument("--quick", action="store_true", help="one tiny synthetic split, 2 epochs")
    return parser
