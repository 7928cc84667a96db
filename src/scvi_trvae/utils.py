"""Small helpers shared by the model, the metrics, the baselines, the data sets and the benchmarks; the settings."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._quiet import Settings, settings

__all__ = ["TARGET_LIBRARY_SIZE", "Settings", "as_dense", "is_anndata", "settings"]

#: Counts per cell of log-normalised data (``scanpy.pp.normalize_total(target_sum=1e4)``) and of
#: count-model predictions unless told otherwise.
TARGET_LIBRARY_SIZE = 1e4


def is_anndata(x: Any) -> bool:
    """Whether ``x`` looks like an AnnData (views and backed objects included)."""
    return hasattr(x, "X") and hasattr(x, "var_names") and hasattr(x, "obs_names")


def as_dense(x: Any, name: str = "input", dtype: np.dtype | type | None = np.float64) -> np.ndarray:
    """Return a cells x genes matrix as a 2-D NumPy array, copying only when needed.

    Parameters
    ----------
    x
        An AnnData (its ``.X`` is used), a NumPy array, a SciPy sparse matrix or a backed
        (on-disk) matrix of anndata.
    name
        Name of ``x`` in error messages.
    dtype
        dtype of the result; ``None`` keeps that of ``x``.

    Returns
    -------
    The dense matrix; ``x`` itself is never modified.
    """
    if is_anndata(x):
        x = x.X
        if x is None:
            raise ValueError(f"{name}: the AnnData has no .X")
    if hasattr(x, "to_memory"):  # anndata's backed sparse dataset
        x = x.to_memory()
    if sp.issparse(x):
        x = x.toarray()
    out = np.asarray(x, dtype=dtype)
    if out.ndim != 2:
        raise ValueError(f"{name}: expected a cells x genes matrix, got an array of shape {out.shape}")
    return out
