"""Data of the speed benchmark: the Kang file, the synthetic sparse sets, and their on-disk copies.

The synthetic sets are generated in blocks of rows, each from its own seed, so the same cells come
out whether they are stacked in memory (``"synthetic:N"``) or written block by block to an
``.h5ad`` that is then read backed, without the whole matrix ever being in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KANG = ROOT.parent / "shared" / "data" / "kang2018_pbmc_ifnb_lognorm.h5ad"
#: On-disk synthetic sets (gitignored); a file is reused while its name (size, genes, seed) matches.
CACHE = Path(__file__).parent / "cache" / "speed"
SYNTHETIC_GENES, SYNTHETIC_DENSITY = 2000, 0.05
#: Rows generated at once: bounds the generation's memory whatever the number of cells.
BLOCK_ROWS = 50_000
#: Part of the cached files' names: bump it when the generator's output changes.
GENERATOR_VERSION = 1


def parse_synthetic(name: str) -> tuple[int, int]:
    """Cells and genes of ``"synthetic:N[:GENES]"``."""
    _, n_cells, *rest = name.split(":")
    return int(n_cells), int(rest[0]) if rest else SYNTHETIC_GENES


def genes_per_row(n_genes: int) -> int:
    """Genes drawn per cell of the synthetic sets (with replacement, so a few cells hold fewer)."""
    return max(int(n_genes * SYNTHETIC_DENSITY), 1)


def synthetic_blocks(n_cells: int, n_genes: int, seed: int = 0) -> Iterator[tuple]:
    """Blocks of the synthetic set: (CSR float32 rows, conditions), log-normalised-like, 5% non-zero.

    Each row holds ``5%`` of the genes drawn with replacement (duplicates summed), with values
    ``log1p(Gamma(2, 1.5))``; each cell is ``"control"`` or ``"stimulated"`` with probability 1/2.
    """
    import numpy as np
    import scipy.sparse as sp

    per_row = genes_per_row(n_genes)
    for block, first in enumerate(range(0, n_cells, BLOCK_ROWS)):
        rng = np.random.default_rng([seed, block])
        rows = min(BLOCK_ROWS, n_cells - first)
        indices = np.sort(rng.integers(0, n_genes, size=(rows, per_row), dtype=np.int32), axis=1)
        values = np.log1p(rng.gamma(2.0, 1.5, size=rows * per_row).astype(np.float32))
        indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int64)
        matrix = sp.csr_matrix((values, indices.ravel(), indptr), shape=(rows, n_genes))
        matrix.sum_duplicates()
        yield matrix, np.where(rng.random(rows) < 0.5, "control", "stimulated")


def load_data(name: str):
    """``"kang"`` (the shared file), ``"synthetic:N[:GENES]"`` in memory, or ``"backed:PATH"``.

    ``"backed:PATH"`` opens an ``.h5ad`` (e.g. one :func:`write_synthetic_h5ad` wrote) with
    ``backed="r"``: ``X`` stays on disk and is read a minibatch of rows at a time.
    """
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    if name == "kang":
        adata = ad.read_h5ad(KANG)
        adata.obs["condition"] = adata.obs["condition"].astype(str)
        return adata
    if name.startswith("backed:"):
        return ad.read_h5ad(name.removeprefix("backed:"), backed="r")
    n_cells, n_genes = parse_synthetic(name)
    # the blocks are copied into arrays sized for every cell (no duplicate gene), so that memory
    # peaks at about the matrix's size, not twice it as when stacking the blocks
    per_row = genes_per_row(n_genes)
    data, indices = np.empty(n_cells * per_row, np.float32), np.empty(n_cells * per_row, np.int32)
    indptr, conditions = np.zeros(n_cells + 1, np.int64), []
    first = 0
    for block, block_conditions in synthetic_blocks(n_cells, n_genes):
        start, stop = indptr[first], indptr[first] + block.nnz
        data[start:stop], indices[start:stop] = block.data, block.indices
        indptr[first + 1 : first + 1 + block.shape[0]] = block.indptr[1:] + start
        conditions.append(block_conditions)
        first += block.shape[0]
    nnz = indptr[-1]
    adata = ad.AnnData(sp.csr_matrix((data[:nnz], indices[:nnz], indptr), shape=(n_cells, n_genes)))
    adata.obs["condition"] = np.concatenate(conditions)
    return adata


def synthetic_h5ad_path(n_cells: int, n_genes: int, cache: Path = CACHE, seed: int = 0) -> Path:
    return Path(cache) / f"synthetic_{n_cells}x{n_genes}_seed{seed}_v{GENERATOR_VERSION}.h5ad"


def write_synthetic_h5ad(n_cells: int, n_genes: int, cache: Path = CACHE, seed: int = 0) -> Path:
    """Write the synthetic set to its cache path block by block, unless the file exists; its path.

    Only one block of rows is in memory at a time (plus the conditions of every cell); a partial
    file is renamed into place only when complete.
    """
    import h5py
    import numpy as np
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    path = synthetic_h5ad_path(n_cells, n_genes, cache, seed)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    blocks = synthetic_blocks(n_cells, n_genes, seed)
    first, conditions = next(blocks)
    stimulated = [conditions == "stimulated"]
    with h5py.File(partial, "w") as file:
        write_elem(file, "X", first)
        matrix = sparse_dataset(file["X"])
        for block, conditions in blocks:
            matrix.append(block)
            stimulated.append(conditions == "stimulated")
        codes = np.concatenate(stimulated).astype(np.int8)
        obs = pd.DataFrame(
            {"condition": pd.Categorical.from_codes(codes, categories=["control", "stimulated"])},
            index=pd.RangeIndex(n_cells).astype(str),
        )
        write_elem(file, "obs", obs)
        write_elem(file, "var", pd.DataFrame(index=[f"gene_{i}" for i in range(n_genes)]))
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(file, key, {})
        file.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
    partial.rename(path)
    return path
