"""The data sets of the out-of-sample benchmark and how they are read (files in the shared data folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .expression import lognormalize


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """One data set of the benchmark."""

    file: str
    control: str
    perturbed: tuple[str, ...]
    kind: Literal["lognorm", "counts"]
    #: Highly variable genes selected on the training cells of each split (None: all genes).
    n_top_genes: int | None
    description: str
    condition_key: str = "condition"
    cell_type_key: str = "cell_type"
    #: (cell type, target, genes) drawn in the figures, if any.
    figure: tuple[str, str, tuple[str, ...]] | None = None
    #: Keep at most this many cells of each (cell type, condition), drawn with seed 0 (None: all cells).
    max_cells_per_group: int | None = None


#: The conditions of the Kang 2018 PBMC files and of the Haber 2017 gut files.
_KANG = {"control": "control", "perturbed": ("stimulated",)}
_HABER = {"control": "Control"}

DATASETS: dict[str, DatasetSpec] = {
    "kang": DatasetSpec(
        file="kang2018_pbmc_ifnb_lognorm.h5ad", **_KANG, kind="lognorm", n_top_genes=2000,
        description="Kang 2018 PBMC IFN-β, scGen preprocessing (7 types); 2,000 HVGs as in the trVAE paper",
        figure=("NK", "stimulated", ("ISG15", "IFI6", "IFIT1")),
    ),
    "haber_hpoly": DatasetSpec(
        file="haber2017_gut_hpoly_lognorm.h5ad", **_HABER, perturbed=("Hpoly.Day10",), kind="lognorm", n_top_genes=1000,
        description="Haber 2017 gut, Control -> H. polygyrus day 10 (8 types); 1,000 HVGs as in the trVAE paper",
        figure=("Tuft", "Hpoly.Day10", ()),
    ),
    "haber_salmonella": DatasetSpec(
        file="haber2017_gut_salmonella_lognorm.h5ad", **_HABER, perturbed=("Salmonella",), kind="lognorm",
        n_top_genes=1000, description="Haber 2017 gut, Control -> Salmonella (8 types); 1,000 HVGs",
    ),
    "haber_3cond": DatasetSpec(
        file="haber2017_gut_3cond_lognorm.h5ad", **_HABER, perturbed=("Hpoly.Day10", "Salmonella"), kind="lognorm",
        n_top_genes=1000, description="Haber 2017 gut, 3 conditions, Control -> each infection; 1,000 HVGs",
    ),
    "kang_counts_100genes": DatasetSpec(
        file="kang2018_pbmc_ifnb_counts_100genes.h5ad", **_KANG, kind="counts", n_top_genes=None,
        description="Kang 2018 raw counts, 100 genes (8 types); at most 250 cells per (type, condition)",
        # 9,517 cells, 3x the other data sets: subsampled so that the full run fits in hours on 2 cores
        max_cells_per_group=250,
    ),
    "kang_counts_muscat": DatasetSpec(
        file="kang2018_pbmc_ifnb_counts_muscat.h5ad", **_KANG, kind="counts", n_top_genes=None,
        description="Kang 2018 raw counts, muscat subset (5 types, 1,267 genes)",
    ),
    "kang_counts_ifnb1k": DatasetSpec(
        file="kang2018_pbmc_ifnb_counts_ifnb1k.h5ad", **_KANG, kind="counts", n_top_genes=2000,
        description="Kang 2018 raw counts, Seurat ifnb subset (6 types); 2,000 HVGs",
    ),
}  # fmt: skip


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
