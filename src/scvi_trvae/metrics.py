r"""Metrics for out-of-sample perturbation prediction.

All functions compare cells x genes matrices on the same log-normalized scale, with the same genes in
the same order: ``pred`` (predicted target cells), ``real_target`` (real cells in the target condition)
and ``real_control`` (real control cells of the same cell type). Each accepts an :class:`~anndata.AnnData`
(its ``.X`` is used), a NumPy array or a SciPy sparse matrix; inputs are never modified.

With :math:`\mu_g(X)` and :math:`\sigma^2_g(X)` the mean and the population variance (``ddof=0``) of gene
:math:`g` over the cells of :math:`X`, :math:`P` the prediction, :math:`T` the real target cells and
:math:`C` the real control cells, and :math:`r(a, b)` the Pearson correlation over a set of genes:

* :func:`r2_mean`: :math:`R^2_\mu = r\big(\mu(T), \mu(P)\big)^2`, the figure metric of scGen and trVAE
  (squared Pearson r, *not* the coefficient of determination of :func:`sklearn.metrics.r2_score`).
* :func:`r2_var`: :math:`R^2_{\sigma^2} = r\big(\sigma^2(T), \sigma^2(P)\big)^2`.
* :func:`pearson_delta`: :math:`r\big(\mu(P) - \mu(C),\ \mu(T) - \mu(C)\big)`, the agreement of the
  predicted and the real response.
* :func:`top_degs`: the differentially expressed genes of :math:`T` against :math:`C` (Wilcoxon rank-sum
  z-scores), the ``n_up`` highest and the ``n_down`` lowest.
* :func:`edistance`: the energy distance with Euclidean (not squared) distances,
  :math:`E(X, Y) = 2\,\overline{d}(X, Y) - \overline{d}(X, X) - \overline{d}(Y, Y)`, where
  :math:`\overline{d}(X, Y) = \frac{1}{|X||Y|}\sum_{x \in X}\sum_{y \in Y} \lVert x - y \rVert_2`
  (the within-set means include the zero diagonal).
* :func:`edistance_scaled`: :math:`E(P, T) / E(C, T)` in a PCA fitted on the real cells :math:`C \cup T`:
  0 is perfect, 1 is no better than predicting "no response" (the control cells).
* :func:`evaluate_prediction`: all of the above in one dictionary, on all genes and on the top DEGs; it
  reproduces ``score`` of the project's independent scorer (``bench/score.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from docrep import DocstringProcessor
from scipy.spatial.distance import cdist
from scipy.stats import pearsonr

from .utils import as_dense, is_anndata

_metrics_dsp = DocstringProcessor(
    param_pred_real_genes="""\
pred
    Predicted cells x genes (AnnData, array or sparse matrix).
real
    Real target cells x genes, same genes in the same order.
genes
    Optional subset of genes: integer indices, a boolean mask, or gene names (when an input is an
    AnnData; looked up in the ``var_names`` of ``real``, else of ``pred``).""",
    param_pred_target_control="""\
pred
    Predicted cells x genes (AnnData, array or sparse matrix).
real_target
    Real target cells, same genes in the same order.
real_control
    Real control cells, same genes in the same order.""",
)

if TYPE_CHECKING:
    from anndata import AnnData

    Matrix = AnnData | np.ndarray | sp.spmatrix | sp.sparray
    GeneSelection = Sequence[int] | Sequence[bool] | Sequence[str] | np.ndarray

__all__ = [
    "edistance",
    "edistance_scaled",
    "evaluate_prediction",
    "gene_indices",
    "pearson_delta",
    "r2_mean",
    "r2_var",
    "top_degs",
    "var_names_of",
]


def var_names_of(*xs: Any) -> pd.Index | None:
    """Gene names of the first AnnData among ``xs``, or None when none is an AnnData."""
    for x in xs:
        if is_anndata(x):
            return pd.Index(x.var_names)
    return None


def _check_same_genes(**mats: np.ndarray) -> int:
    n_genes = {name: m.shape[1] for name, m in mats.items()}
    if len(set(n_genes.values())) != 1:
        raise ValueError(f"inputs must have the same genes in the same order, got numbers of genes {n_genes}")
    return next(iter(n_genes.values()))


def gene_indices(genes: GeneSelection | None, n_genes: int, var_names: pd.Index | None = None) -> np.ndarray:
    """Resolve a gene selection to integer indices.

    Parameters
    ----------
    genes
        Integer indices, a boolean mask or gene names (these need ``var_names``); ``None`` selects all.
    n_genes
        Number of genes of the matrices.
    var_names
        Gene names, e.g. from :func:`var_names_of`.
    """
    if genes is None:
        return np.arange(n_genes)
    sel = np.asarray(genes)
    if sel.ndim != 1:
        raise ValueError(f"genes must be one-dimensional, got shape {sel.shape}")
    if sel.dtype == bool:
        if len(sel) != n_genes:
            raise ValueError(f"boolean gene mask has length {len(sel)}, expected {n_genes}")
        return np.flatnonzero(sel)
    if sel.size == 0:
        return np.arange(0)
    if np.issubdtype(sel.dtype, np.integer):
        if sel.min() < -n_genes or sel.max() >= n_genes:
            raise IndexError(f"gene indices out of range for {n_genes} genes")
        return sel.astype(np.intp) % n_genes
    if var_names is None:
        raise ValueError("gene names can only be used when an input is an AnnData (names are its var_names)")
    if var_names.has_duplicates:
        raise ValueError("gene names cannot be resolved: the AnnData's var_names are not unique")
    pos = var_names.get_indexer(pd.Index(sel.astype(str)))
    missing = sel[pos < 0]
    if missing.size:
        raise KeyError(f"genes not found in var_names: {list(missing[:10])}")
    return pos


def _r2(real: np.ndarray, pred: np.ndarray) -> float:
    return float(pearsonr(real, pred)[0] ** 2)


@_metrics_dsp.dedent
def r2_mean(pred: Matrix, real: Matrix, genes: GeneSelection | None = None) -> float:
    r"""Squared Pearson correlation of per-gene means, predicted vs real.

    .. math:: R^2_\mu = r\big(\mu(T), \mu(P)\big)^2,
        \qquad \mu_g(X) = \frac{1}{n_X} \sum_{i=1}^{n_X} X_{ig},

    with the correlation :math:`r` taken over the selected genes. This is the "R²" of the scGen and
    trVAE regression plots (``scipy.stats.linregress(...).rvalue ** 2``), not the coefficient of
    determination. It is invariant to an affine map :math:`a\,\mu + b` (:math:`a \neq 0`) of either side.

    Parameters
    ----------
    %(param_pred_real_genes)s

    Returns
    -------
    float
        :math:`R^2_\mu` in :math:`[0, 1]`; NaN when either side is constant over the selected genes.
    """
    p, t = as_dense(pred, "pred"), as_dense(real, "real")
    idx = gene_indices(genes, _check_same_genes(pred=p, real=t), var_names_of(real, pred))
    return _r2_mean(p, t, idx)


def _r2_mean(p: np.ndarray, t: np.ndarray, idx: np.ndarray) -> float:
    return _r2(t.mean(0)[idx], p.mean(0)[idx])


@_metrics_dsp.dedent
def r2_var(pred: Matrix, real: Matrix, genes: GeneSelection | None = None) -> float:
    r"""Squared Pearson correlation of per-gene variances, predicted vs real.

    .. math:: R^2_{\sigma^2} = r\big(\sigma^2(T), \sigma^2(P)\big)^2,
        \qquad \sigma^2_g(X) = \frac{1}{n_X} \sum_{i=1}^{n_X} \big(X_{ig} - \mu_g(X)\big)^2

    (population variance, ``ddof=0``), with the correlation :math:`r` taken over the selected genes.

    Parameters
    ----------
    %(param_pred_real_genes)s

    Returns
    -------
    float
        :math:`R^2_{\sigma^2}` in :math:`[0, 1]`; NaN when either side is constant over the selected genes.
    """
    p, t = as_dense(pred, "pred"), as_dense(real, "real")
    idx = gene_indices(genes, _check_same_genes(pred=p, real=t), var_names_of(real, pred))
    return _r2_var(p, t, idx)


def _r2_var(p: np.ndarray, t: np.ndarray, idx: np.ndarray) -> float:
    return _r2(t.var(0)[idx], p.var(0)[idx])


def top_degs(
    real_target: Matrix,
    real_control: Matrix,
    n_up: int = 50,
    n_down: int = 50,
    gene_names: Sequence[str] | None = None,
) -> np.ndarray:
    r"""Find the most up- and down-regulated genes of target vs control cells (Wilcoxon).

    Genes are ranked by the Wilcoxon rank-sum z-score of :func:`scanpy.tl.rank_genes_groups`
    (``method="wilcoxon"``, the target cells as the group, the control cells as the reference, all genes
    ranked), computed on a new AnnData built from float32 copies of the inputs (control cells first).
    The result is the first ``n_up`` genes of the ranking followed by the last ``n_down`` genes in
    reverse order (the most down-regulated first):

    .. math:: \mathrm{DEG} = (g_{(1)}, \dots, g_{(n_{up})},\ g_{(G)}, g_{(G-1)}, \dots, g_{(G-n_{down}+1)}).

    With ``n_up = n_down = 50`` this is the DEG set of the project's scorer (``score.py``, ``n=100``).
    When ``n_up + n_down`` exceeds the number of genes the two parts overlap.

    Parameters
    ----------
    real_target
        Real cells of the target condition, cells x genes (AnnData, array or sparse matrix).
    real_control
        Real control cells, same genes in the same order.
    n_up
        Number of up-regulated genes (highest z-scores).
    n_down
        Number of down-regulated genes (lowest z-scores).
    gene_names
        Gene labels for the temporary AnnData (default: the ``var_names`` of an AnnData input). They
        do not change which genes are returned; their length is checked against the number of genes.

    Returns
    -------
    numpy.ndarray
        Integer indices into the genes, of length ``n_up + n_down``: up-regulated genes first.
    """
    tgt, ctrl = as_dense(real_target, "real_target"), as_dense(real_control, "real_control")
    names = pd.Index(gene_names).astype(str) if gene_names is not None else var_names_of(real_target, real_control)
    return _top_degs(tgt, ctrl, n_up, n_down, names)


def _top_degs(tgt: np.ndarray, ctrl: np.ndarray, n_up: int, n_down: int, names: pd.Index | None) -> np.ndarray:
    """:func:`top_degs` of dense matrices."""
    import anndata as ad
    import scanpy as sc

    if n_up < 0 or n_down < 0:
        raise ValueError("n_up and n_down must be non-negative")
    n_genes = _check_same_genes(real_target=tgt, real_control=ctrl)
    if len(tgt) < 1 or len(ctrl) < 1:
        raise ValueError("top_degs needs at least one target and one control cell")
    if names is not None and len(names) != n_genes:
        raise ValueError(f"gene_names has length {len(names)}, expected {n_genes}")
    if names is None or names.has_duplicates:
        names = pd.Index([str(i) for i in range(n_genes)])

    tmp = ad.AnnData(np.vstack([ctrl, tgt]).astype(np.float32))
    tmp.var_names = names
    tmp.obs["group"] = pd.Categorical(["control"] * len(ctrl) + ["target"] * len(tgt))
    sc.tl.rank_genes_groups(tmp, "group", groups=["target"], reference="control", method="wilcoxon", n_genes=n_genes)
    ranked = np.asarray([row[0] for row in tmp.uns["rank_genes_groups"]["names"]], dtype=str)
    order = names.get_indexer(pd.Index(ranked))
    return np.concatenate([order[:n_up], order[::-1][:n_down]]).astype(np.intp)


@_metrics_dsp.dedent
def pearson_delta(pred: Matrix, real_target: Matrix, real_control: Matrix, genes: GeneSelection | None = None) -> float:
    r"""Pearson correlation of the predicted and the real response (mean shift from control).

    .. math:: \rho_\Delta = r\big(\mu(P) - \mu(C),\ \mu(T) - \mu(C)\big)

    over the selected genes. Unlike :func:`r2_mean` it ignores the mean expression level shared by all
    three sets, which dominates :math:`R^2_\mu` (predicting the control cells already scores highly there).

    Parameters
    ----------
    %(param_pred_target_control)s
    genes
        Optional subset of genes: integer indices, a boolean mask, or gene names (when an input is an
        AnnData).

    Returns
    -------
    float
        :math:`\rho_\Delta` in :math:`[-1, 1]`; NaN when either response is constant over the genes.
    """
    p, t, c = as_dense(pred, "pred"), as_dense(real_target, "real_target"), as_dense(real_control, "real_control")
    n_genes = _check_same_genes(pred=p, real_target=t, real_control=c)
    idx = gene_indices(genes, n_genes, var_names_of(real_target, pred, real_control))
    return _pearson_delta(p, t, c, idx)


def _pearson_delta(p: np.ndarray, t: np.ndarray, c: np.ndarray, idx: np.ndarray) -> float:
    m_c = c.mean(0)[idx]
    return float(pearsonr(p.mean(0)[idx] - m_c, t.mean(0)[idx] - m_c)[0])


def edistance(x: Matrix, y: Matrix) -> float:
    r"""Energy distance between two sets of points, with Euclidean distances.

    .. math:: E(X, Y) = \frac{2}{|X||Y|} \sum_{x \in X} \sum_{y \in Y} \lVert x - y \rVert_2
        - \frac{1}{|X|^2} \sum_{x, x' \in X} \lVert x - x' \rVert_2
        - \frac{1}{|Y|^2} \sum_{y, y' \in Y} \lVert y - y' \rVert_2 .

    The within-set means include the zero diagonal (V-statistic), as in ``score.py``; the distances are
    Euclidean, not squared Euclidean. :math:`E(X, X) = 0`. The cost is quadratic in the number of points.

    Parameters
    ----------
    x
        Points x features (AnnData, array or sparse matrix).
    y
        Points x features, same features.

    Returns
    -------
    float
        :math:`E(X, Y) \geq 0`.
    """
    a, b = as_dense(x, "x"), as_dense(y, "y")
    _check_same_genes(x=a, y=b)
    return _edistance(a, b)


def _edistance(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean())


@_metrics_dsp.dedent
def edistance_scaled(
    pred: Matrix,
    real_target: Matrix,
    real_control: Matrix,
    n_comps: int = 50,
    max_cells: int = 1000,
    seed: int = 0,
) -> float:
    r"""Energy distance of the prediction to the real target, relative to that of the control cells.

    .. math:: E_{scaled} = \frac{E\big(\phi(P), \phi(T)\big)}{E\big(\phi(C), \phi(T)\big)}

    with :math:`E` from :func:`edistance` and :math:`\phi` a PCA (:class:`sklearn.decomposition.PCA`,
    ``random_state=seed``, ``min(n_comps, n_genes - 1, n_cells - 1)`` components) fitted on the real
    cells :math:`C \cup T`. Each set is first subsampled to at most ``max_cells`` cells without
    replacement, with one ``numpy.random.default_rng(seed)`` drawing control, target and prediction
    in that order (as ``score.py`` does). 0 is perfect, 1 is no better than predicting the control cells.

    Parameters
    ----------
    %(param_pred_target_control)s
    n_comps
        Maximum number of principal components.
    max_cells
        Maximum number of cells per set.
    seed
        Seed of the PCA and of the subsampling.

    Returns
    -------
    float
        :math:`E_{scaled} \geq 0`.
    """
    p, t, c = as_dense(pred, "pred"), as_dense(real_target, "real_target"), as_dense(real_control, "real_control")
    _check_same_genes(pred=p, real_target=t, real_control=c)
    return _edistance_scaled(p, t, c, n_comps, max_cells, seed)


def _edistance_scaled(p: np.ndarray, t: np.ndarray, c: np.ndarray, n_comps: int, max_cells: int, seed: int) -> float:
    """:func:`edistance_scaled` of dense matrices with the same genes."""
    from sklearn.decomposition import PCA

    real = np.vstack([c, t])
    n_components = min(n_comps, real.shape[1] - 1, real.shape[0] - 1)
    pca = PCA(n_components=n_components, random_state=seed).fit(real)
    rng = np.random.default_rng(seed)
    z_c, z_t, z_p = (
        pca.transform(m[rng.choice(len(m), size=min(len(m), max_cells), replace=False)]) for m in (c, t, p)
    )
    return _edistance(z_p, z_t) / _edistance(z_c, z_t)


#: The scores of :func:`evaluate_prediction`, in the order reports show them.
METRIC_KEYS: tuple[str, ...] = (
    "r2_mean_all",
    "r2_mean_deg",
    "r2_var_all",
    "r2_var_deg",
    "pearson_delta_all",
    "pearson_delta_deg",
    "edist_scaled",
)


def evaluate_prediction(
    pred: Matrix,
    real_target: Matrix,
    real_control: Matrix,
    n_degs: int = 100,
    seed: int = 0,
    degs: GeneSelection | None = None,
) -> dict[str, float]:
    r"""Score a prediction of held-out target cells with all metrics of this module.

    Reproduces ``score(real_control, real_target, pred, genes, n_degs, seed)`` of the project's
    independent scorer (``bench/score.py``):

    * ``n_pred``, ``n_real``: numbers of predicted and of real target cells;
    * ``r2_mean_all``, ``r2_var_all``: :func:`r2_mean`, :func:`r2_var` on all genes;
    * ``r2_mean_deg``, ``r2_var_deg``: the same on the DEGs;
    * ``pearson_delta_all``, ``pearson_delta_deg``: :func:`pearson_delta` on all genes and on the DEGs;
    * ``edist_scaled``: :func:`edistance_scaled` (50 PCs, at most 1000 cells per set).

    The DEGs are ``top_degs(real_target, real_control, n_degs // 2, n_degs // 2)`` unless ``degs`` is given.

    Parameters
    ----------
    pred
        Predicted cells x genes (AnnData, array or sparse matrix), log-normalized like the real data.
    real_target
        Real target cells of the held-out type, same genes in the same order.
    real_control
        Real control cells of the held-out type, same genes in the same order.
    n_degs
        Number of DEGs (half up-, half down-regulated) when ``degs`` is not given.
    seed
        Seed of the PCA and the subsampling of :func:`edistance_scaled`.
    degs
        Precomputed DEGs: integer indices, a boolean mask or gene names (when an input is an AnnData).

    Returns
    -------
    dict[str, float]
        The metrics above, keyed by name (``n_pred`` and ``n_real`` are ints).

    Raises
    ------
    ValueError
        If ``pred`` has non-finite values (NaN or infinity) or the inputs have different genes.
    """
    p, t, c = as_dense(pred, "pred"), as_dense(real_target, "real_target"), as_dense(real_control, "real_control")
    n_genes = _check_same_genes(pred=p, real_target=t, real_control=c)
    n_bad = int(np.size(p) - np.count_nonzero(np.isfinite(p)))
    if n_bad:
        raise ValueError(f"prediction has non-finite values: {n_bad} NaN or infinite entries")
    if degs is None:
        deg = _top_degs(t, c, n_degs // 2, n_degs // 2, None)
    else:
        deg = gene_indices(degs, n_genes, var_names_of(real_target, pred, real_control))
    every = np.arange(n_genes)
    # the matrices were densified once above; every metric reads the same arrays
    return {
        "n_pred": len(p),
        "n_real": len(t),
        "r2_mean_all": _r2_mean(p, t, every),
        "r2_var_all": _r2_var(p, t, every),
        "r2_mean_deg": _r2_mean(p, t, deg),
        "r2_var_deg": _r2_var(p, t, deg),
        "pearson_delta_all": _pearson_delta(p, t, c, every),
        "pearson_delta_deg": _pearson_delta(p, t, c, deg),
        "edist_scaled": _edistance_scaled(p, t, c, 50, 1000, seed),
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> str:
    """Format a markdown table (pandas' :meth:`~pandas.DataFrame.to_markdown`, GitHub style, columns aligned).

    Parameters
    ----------
    header
        The column names.
    rows
        The cells of each row, already formatted as text (they are written as given, never parsed as
        numbers); a cell ``None`` is left blank, e.g. the cells that a note in an earlier cell spans.

    Returns
    -------
    The table, one line per row, without a final newline.
    """
    frame = pd.DataFrame([list(cells) for cells in rows], columns=list(header), dtype=object)
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True, missingval="")


__all__ += ["markdown_table"]
