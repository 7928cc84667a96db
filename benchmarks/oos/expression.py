"""The expression scale of the benchmark: ``log1p`` of counts per 10,000, as dense float32 matrices.

The one definition of the library size and of "make dense" for every script in ``benchmarks/``
(including ``_scarches_runner.py``, which runs in scArches' environment: NumPy and SciPy only here).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Counts per cell that log-normalised data and count models' predictions are scaled to.
TARGET_LIBRARY_SIZE = 1e4


def dense(matrix) -> np.ndarray:
    """A float32 dense copy of a (possibly sparse) cells x genes matrix."""
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def lognormalize(counts: sp.csr_matrix) -> sp.csr_matrix:
    """``log1p`` of counts per 10,000 (``normalize_total(target_sum=1e4)`` then ``log1p``), cell by cell."""
    totals = np.asarray(counts.sum(axis=1)).ravel()
    scaled = sp.diags((TARGET_LIBRARY_SIZE / np.clip(totals, 1.0, None)).astype(np.float32)) @ counts
    scaled = sp.csr_matrix(scaled, dtype=np.float32)
    scaled.data = np.log1p(scaled.data)
    return scaled
