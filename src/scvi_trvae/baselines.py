"""Simple baselines every honest out-of-sample evaluation reports.

Each predicts the cells of one held-out ``(cell type, target condition)`` from the same type's
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
    similarity: bool = False,
    scale_spread: bool = False,
) -> AnnData:
    """Source cells plus the mean ``target - source`` difference of the other cell types, clipped at 0.

    The shift is the per-gene mean of all other-type cells in ``target`` minus that of all
    other-type cells in ``source`` (cells pooled, as in the field's usual definition); with
    ``balanced=True`` the mean of the other types' own shifts (:func:`pooled_shift`); with
    ``similarity=True`` their mean weighted by each type's closeness to ``cell_type``'s ``source`` cells
    (:func:`similarity_shift`). With ``scale_spread=True`` each source cell's deviation from their mean is
    also scaled per gene by :func:`reference_spread` of the same kind (a per-gene affine map, not a constant
    shift).
    """
    cells = _source_cells(adata, cell_type_key, condition_key, cell_type, source)
    if balanced and similarity:
        raise ValueError("Choose one of balanced=True and similarity=True.")
    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "source": source, "target": target}
    kind = "similarity" if similarity else "balanced" if balanced else "pooled"
    observed = as_dense(cells.X).astype(np.float64)
    if scale_spread:
        spread = reference_spread(adata, kind, cell_type=cell_type, **keys)
        observed = scaled_spread(observed, spread)
    shifted = np.clip(observed + reference_shift(adata, kind, cell_type=cell_type, **keys), 0.0, None)
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
    found = _other_types(adata, cell_type_key, condition_key, source, target, exclude)
    rows = {name: as_dense(adata.X[in_target]).mean(0) - as_dense(adata.X[in_source]).mean(0)
            for name, in_source, in_target in found}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index", columns=adata.var_names)


def _other_types(
    adata: AnnData, cell_type_key: str, condition_key: str, source: str, target: str, exclude: Sequence[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(cell type, its source cells, its target cells)`` (boolean masks) of each type but ``exclude`` with both."""
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    conditions = adata.obs[condition_key].astype(str).to_numpy()
    others = ~np.isin(types, [str(t) for t in exclude])
    found = []
    for cell_type in np.unique(types[others]):
        in_source = others & (types == cell_type) & (conditions == str(source))
        in_target = others & (types == cell_type) & (conditions == str(target))
        if in_source.any() and in_target.any():
            found.append((str(cell_type), in_source, in_target))
    if not found:
        raise ValueError(f"No other cell type has cells in {source!r} and {target!r} to estimate a shift from.")
    return found


def similarity_weights(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    cell_type: str,
    source: str,
    target: str,
    n_comps: int = 50,
    bandwidth: float | None = None,
    exclude: Sequence[str] = (),
    centre: np.ndarray | None = None,
) -> pd.Series:
    """How much each other cell type's own shift counts in :func:`similarity_shift`: closer types weigh more.

    A model-free stand-in for "closeness in the model's latent space": a PCA (up to ``n_comps``
    components, deterministic) is fitted on the ``source``-condition cells of ``adata``, the type means of
    those cells are projected, and type ``t`` gets the weight ``softmax(-d_t / h)``, with ``d_t`` the
    squared distance between ``t``'s and ``cell_type``'s mean ``source`` expression in that space and the
    bandwidth ``h`` the median of the ``d_t`` (or ``bandwidth``). Only ``source`` cells are read, so the
    held-out ``target`` cells of ``cell_type`` play no part even when ``adata`` holds them.

    Parameters
    ----------
    adata
        Training cells (log-normalised expression in ``X``).
    cell_type_key, condition_key
        ``adata.obs`` columns of the cell type and the condition.
    cell_type
        The cell type whose response is predicted; it needs ``source`` cells.
    source, target
        The conditions of the response.
    n_comps
        Principal components of the distance space (at most the cells minus one and the genes).
    bandwidth
        ``h`` of the softmax; ``None``: the median squared distance (all types equally far: equal weights).
    exclude
        More cell types to leave out of the weighted ones (e.g. the other cell types predicted together).
    centre
        The mean ``source`` expression of ``cell_type`` (genes), when its cells are not in ``adata`` (e.g. cells
        to predict that were never trained on); default: the mean of its ``source`` cells in ``adata``.

    Returns
    -------
    One weight per other cell type with cells in both conditions (index: the types), summing to 1.
    """
    from sklearn.decomposition import PCA

    shifts_index = cell_type_shifts(
        adata, cell_type_key=cell_type_key, condition_key=condition_key, source=source, target=target,
        exclude=[cell_type, *exclude],
    ).index  # fmt: skip
    if centre is None:
        centre = as_dense(_source_cells(adata, cell_type_key, condition_key, cell_type, source).X).mean(0)
    in_source = (adata.obs[condition_key].astype(str) == str(source)).to_numpy()
    x = as_dense(adata.X[in_source])
    n_comps = max(1, min(n_comps, x.shape[0] - 1, x.shape[1]))
    pca = PCA(n_components=n_comps, svd_solver="full" if max(x.shape) <= 500 else "randomized", random_state=0)
    pca.fit(x)
    types = adata.obs[cell_type_key].astype(str).to_numpy()[in_source]
    centre = pca.transform(np.asarray(centre, dtype=x.dtype).reshape(1, -1))[0]
    means = np.stack([x[types == t].mean(0) for t in shifts_index])
    distances = ((pca.transform(means) - centre) ** 2).sum(1)
    if bandwidth is not None and not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive, got {bandwidth}.")
    h = float(np.median(distances)) if bandwidth is None else float(bandwidth)
    logits = -distances / h if h > 0 else np.zeros_like(distances)
    weights = np.exp(logits - logits.max())
    return pd.Series(weights / weights.sum(), index=shifts_index, name="weight")


def similarity_shift(
    adata: AnnData,
    *,
    cell_type_key: str,
    condition_key: str,
    cell_type: str,
    source: str,
    target: str,
    n_comps: int = 50,
    bandwidth: float | None = None,
    exclude: Sequence[str] = (),
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Average the other types' own shifts (:func:`cell_type_shifts`) with :func:`similarity_weights`.

    A cell type's response is estimated from the types whose ``source`` cells look most like its own;
    with equal weights this is the balanced shift (``pooled_shift(balanced=True)``). Parameters as in
    :func:`similarity_weights`.

    Returns
    -------
    The per-gene shift (float64).
    """
    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "source": source, "target": target}
    shifts = cell_type_shifts(adata, exclude=[cell_type, *exclude], **keys)
    weights = similarity_weights(
        adata, cell_type=cell_type, n_comps=n_comps, bandwidth=bandwidth, exclude=exclude, centre=centre, **keys
    )
    return np.asarray(weights.to_numpy() @ shifts.to_numpy(dtype=np.float64))


#: The kinds of :func:`reference_shift`: cells pooled, cell types weighed equally, cell types weighed by similarity.
REFERENCE_SHIFTS = ("pooled", "balanced", "similarity")


def reference_shift_problem(kind: object, name: str = "reference_shift") -> str | None:
    """Return what is wrong with ``kind`` as a kind of :func:`reference_shift` (``name``: the argument), or None."""
    if kind in REFERENCE_SHIFTS:
        return None
    return f"{name} must be one of {list(REFERENCE_SHIFTS)}, got {kind!r}"


def check_reference_shift(kind: str, name: str = "reference_shift") -> str:
    """Return ``kind`` if it is a kind of :func:`reference_shift`; else raise a ``ValueError`` naming ``name``."""
    problem = reference_shift_problem(kind, name)
    if problem is not None:
        raise ValueError(f"{problem}.")
    return kind


def check_spread_scaling(value: object, name: str = "spread_scaling") -> bool:
    """Return ``value`` if it is a bool (whether to scale the observed spread); else raise a ``ValueError``."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def reference_shift(
    adata: AnnData,
    kind: str,
    *,
    cell_type_key: str,
    condition_key: str,
    cell_type: str,
    source: str,
    target: str,
    exclude: Sequence[str] = (),
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Return the other cell types' shift of one ``kind``: the stand-in for ``cell_type``'s unknown response.

    ``"pooled"``: :func:`pooled_shift` (cells pooled); ``"balanced"``: :func:`pooled_shift` with
    ``balanced=True``; ``"similarity"``: :func:`similarity_shift` (``centre`` as there). ``cell_type`` and
    ``exclude`` are left out of the estimate. The recommended pipeline blends its model's response with one of
    these, chosen on the inner folds (:func:`scvi_trvae.model_selection.select_hyperparameters`).

    Returns
    -------
    The per-gene shift.
    """
    check_reference_shift(kind, "kind")
    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "source": source, "target": target}
    if kind == "similarity":
        return similarity_shift(adata, cell_type=cell_type, exclude=exclude, centre=centre, **keys)
    return pooled_shift(adata, exclude=[cell_type, *exclude], balanced=kind == "balanced", **keys)


#: Added to both standard deviations of :func:`reference_spread`'s ratio, so that genes that barely vary in
#: ``source`` (log-normalised expression) are not scaled by a ratio of near-zeros.
SPREAD_OFFSET = 0.05


def reference_spread(
    adata: AnnData,
    kind: str,
    *,
    cell_type_key: str,
    condition_key: str,
    cell_type: str,
    source: str,
    target: str,
    exclude: Sequence[str] = (),
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Return how much wider, per gene, the other cell types' cells are in ``target`` than in ``source``.

    The ratio ``(sum_t a_t sd_t(target) + c) / (sum_t a_t sd_t(source) + c)`` of the other types' own standard
    deviations across their cells, with ``c`` :data:`SPREAD_OFFSET` and the types weighted as the reference shift
    of the same ``kind`` weighs them: by their cells (``"pooled"``), equally (``"balanced"``) or by
    :func:`similarity_weights` (``"similarity"``, ``centre`` as there). Scaling a cell type's ``source`` cells'
    deviations from their mean by it (``mean_shift(scale_spread=True)``, or the recommended pipeline's
    ``spread_scaling``) gives the prediction the spread the other types show under ``target``.
    ``cell_type`` and ``exclude`` are left out of the estimate.

    Returns
    -------
    The per-gene factor (float64, positive).
    """
    check_reference_shift(kind, "kind")
    keys = {"cell_type_key": cell_type_key, "condition_key": condition_key, "source": source, "target": target}
    found = _other_types(adata, exclude=[cell_type, *exclude], **keys)
    names = [name for name, _, _ in found]
    if kind == "similarity":
        weights = similarity_weights(adata, cell_type=cell_type, exclude=exclude, centre=centre, **keys)[names]
    elif kind == "balanced":
        weights = pd.Series(1.0, index=names)
    else:
        weights = pd.Series([float((s | t).sum()) for _, s, t in found], index=names)
    weights = weights.to_numpy(dtype=np.float64) / weights.sum()
    spread = {
        side: weights @ np.stack([as_dense(adata.X[masks[side]]).std(0) for _, *masks in found]).astype(np.float64)
        for side in (0, 1)
    }
    return (spread[1] + SPREAD_OFFSET) / (spread[0] + SPREAD_OFFSET)


def scaled_spread(observed: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``observed`` cells with each one's deviation from their mean scaled per gene by ``spread``."""
    mean = observed.mean(0)
    return mean + spread * (observed - mean)
