"""The out-of-sample hold-out split: one (cell type, condition) is held out of training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from anndata import AnnData


@dataclass(frozen=True)
class HoldoutSplit:
    """The three parts of an out-of-sample split (each an independent copy of its cells).

    Attributes
    ----------
    train
        Every cell except the held-out ones: what a model may be trained on.
    control
        The held-out cell type's ``source`` cells (also part of ``train``): what a prediction starts from.
    real_target
        The held-out cells (``cell_type`` in ``target``): what a prediction is scored against.
    held_out
        Boolean mask of the held-out cells over the input's cells.
    """

    train: AnnData
    control: AnnData
    real_target: AnnData
    held_out: np.ndarray


def _obs_column(adata: AnnData, key: str) -> np.ndarray:
    if key not in adata.obs:
        raise KeyError(f"{key!r} is not a column of adata.obs; columns: {list(adata.obs.columns)}")
    return adata.obs[key].astype(str).to_numpy()


def holdout_split(
    adata: AnnData, *, cell_type_key: str, condition_key: str, cell_type: str, source: str, target: str
) -> HoldoutSplit:
    """Hold the cells of one cell type in one condition out of training.

    Parameters
    ----------
    adata
        Cells of every cell type and condition; not changed.
    cell_type_key, condition_key
        Columns of ``adata.obs`` with the cell type and the condition of each cell.
    cell_type
        The cell type whose ``target`` cells are held out.
    source, target
        The condition predicted from (the held-out type's ``source`` cells are kept) and the held-out condition.

    Returns
    -------
    :class:`HoldoutSplit` with ``train``, ``control`` and ``real_target`` (copies) and the ``held_out`` mask.

    Raises
    ------
    KeyError
        If a key is not a column of ``adata.obs``.
    ValueError
        If ``cell_type`` has no cells in ``target`` or none in ``source``.
    """
    types = _obs_column(adata, cell_type_key)
    conditions = _obs_column(adata, condition_key)
    held_out = (types == str(cell_type)) & (conditions == str(target))
    control = (types == str(cell_type)) & (conditions == str(source))
    for mask, condition in ((held_out, target), (control, source)):
        if not mask.any():
            raise ValueError(f"No cells of cell type {cell_type!r} in condition {condition!r} to split on.")
    return HoldoutSplit(
        train=adata[~held_out].copy(),
        control=adata[control].copy(),
        real_target=adata[held_out].copy(),
        held_out=held_out,
    )
