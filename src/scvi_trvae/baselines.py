"""Simple baselines every honest out-of-sample evaluation reports.

Both predict the cells of one held-out ``(cell type, target condition)`` from the same type's
``source`` cells, using only the other cell types' data, and return a new AnnData shaped like
:meth:`scvi_trvae.TRVAE.predict_perturbation`'s output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from ._validation import check_obs_keys
from .utils import as_dense


def _source_cells(adata: AnnData, cell_type_key: str, condition_key: str, cell_type: str, source: str) -> AnnData:
    check_obs_keys(adata, [cell_type_key, condition_key], "keys")
    mask = (adata.obs[cell_type_key].astype(str) == str(cell_type)) & (
        adata.obs[condition_key].astype(str) == str(source)
    )
    if not mask.any():
        raise ValueError(f"No cells of cell type {cell_type!r} in condition {source!r}.")
    return adata[mask.to_numpy()]


def no_response(
    adata: AnnData, *, cell_type_key: str, condition_key: str, cell_type: str, source: str, target: str
) -> AnnData:
    """Predict that nothing changes: the held-out type's ``source`` cells, relabelled ``target``."""
    cells = _source_cells(adata, cell_type_key, condition_key, cell_type, source)
    pred = AnnData(as_dense(cells.X, dtype=np.float32), obs=cells.obs.copy(), var=cells.var.copy())
    pred.obs[condition_key] = str(target)
    return pred


def mean_shift(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    cell_type: str,
    source: str,
    target: str,
    balanced: bool = False,
) -> AnnData:
    """Source cells plus the mean ``target - source`` difference of the other cell types, clipped at 0.

    The shift is the per-gene mean of all other-type cells in ``target`` minus that of all
    other-type cells in ``source`` (cells pooled, as in the field's usual definition), or with
    ``balanced=True`` the mean of the other types' own shifts (:func:`pooled_shift`).
    """
    cells = _source_cells(adata, cell_type_key, condition_key, cell_type, source)
    shift = pooled_shift(
        adata,
        cell_type_key=cell_type_key,
        condition_key=condition_key,
        exclude=[cell_type],
        source=source,
        target=target,
        balanced=balanced,
    )
    shifted = np.clip(as_dense(cells.X) + shift, 0.0, None)
    pred = AnnData(shifted.astype(np.float32), obs=cells.obs.copy(), var=cells.var.copy())
    pred.obs[condition_key] = str(target)
    return pred


def pooled_shift(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    exclude: Sequence[str],
    source: str,
    target: str,
    balanced: bool = False,
) -> np.ndarray:
    """Per-gene mean ``target`` minus mean ``source`` expression of the cells of every type but ``exclude``.

    Cells are pooled over the other cell types (the shift :func:`mean_shift` adds), so abundant types weigh
    more. With ``balanced=True`` it is instead the mean over the other types of each type's own shift (types
    with cells in both conditions only): every type weighs the same, however many cells it has.
    """
    if balanced:
        shifts = cell_type_shifts(
            adata, cell_type_key=cell_type_key, condition_key=condition_key, exclude=exclude, source=source,
            target=target,
        )  # fmt: skip
        return np.asarray(shifts.to_numpy().mean(axis=0))
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    others = ~np.isin(types, [str(t) for t in exclude])
    in_source, in_target = others & (conditions == str(source)), others & (conditions == str(target))
    if not (in_source.any() and in_target.any()):
        raise ValueError(f"No other cell type has cells in {source!r} and {target!r} to estimate a shift from.")
    return as_dense(adata.X[in_target]).mean(0) - as_dense(adata.X[in_source]).mean(0)


def cell_type_shifts(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    source: str,
    target: str,
    exclude: Sequence[str] = (),
) -> pd.DataFrame:
    """Each cell type's own response: its mean ``target`` minus its mean ``source`` expression, per gene.

    One row per cell type (but ``exclude``) with cells in both conditions, one column per gene.
    """
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    others = ~np.isin(types, [str(t) for t in exclude])
    rows = {}
    for cell_type in np.unique(types[others]):
        in_source = others & (types == cell_type) & (conditions == str(source))
        in_target = others & (types == cell_type) & (conditions == str(target))
        if in_source.any() and in_target.any():
            rows[cell_type] = as_dense(adata.X[in_target]).mean(0) - as_dense(adata.X[in_source]).mean(0)
    if not rows:
        raise ValueError(f"No other cell type has cells in {source!r} and {target!r} to estimate a shift from.")
    return pd.DataFrame.from_dict(rows, orient="index", columns=adata.var_names)
