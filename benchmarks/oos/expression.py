"""The expression scale of the benchmark: ``log1p`` of counts per 10,000, as dense float32 matrices.

The library size and "make dense" are the package's own (:mod:`scvi_trvae.utils`); the benchmark adds
the float32 dense copy its torch models take and the per-cell normalisation of count data sets.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scvi_trvae.utils import TARGET_LIBRARY_SIZE, as_dense

__all__ = ["TARGET_LIBRARY_SIZE", "dense", "lognormalize"]


def dense(matrix) -> np.ndarray:
    """A float32 dense cells x genes matrix (copied only when needed)."""
    return as_dense(matrix, dtype=np.float32)


def lognormalize(counts: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p`` of counts per 10,000 (``normalize_total(target_sum=1e4)`` then ``log1p``), cell by cell."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scaled = sp.diags((TARGET_LIBRARY_SIZE / np.clip(totals, 1.0, None)).astype(np.float32)) @ counts
    scaled = sp.csr_matrix(scaled, dtype=np.float32)
    scaled.data = np.log1p(scaled.data)
    return scaled
