r"""Plots for evaluating perturbation predictions and inspecting latent representations.

The functions follow scanpy's plotting conventions: ``show`` (None: show a figure the function created,
not one whose axes were passed in), ``save`` (write the figure to this path), ``ax`` (draw into existing
axes) and ``return_fig``. They return the :class:`~matplotlib.figure.Figure` when ``return_fig`` is True,
else the axes when ``show`` is False, else None; a figure created here and not returned is closed. Only
matplotlib is used to draw, so everything works with the non-interactive Agg backend.

* :func:`reg_mean_plot`, :func:`reg_var_plot`: per-gene means (variances) of the real target cells
  against those of the predicted cells, with a least-squares line and the squared Pearson correlation
  :math:`R^2` of :func:`scvi_trvae.metrics.r2_mean` (:func:`~scvi_trvae.metrics.r2_var`) on all genes
  and on the top DEGs (scGen / trVAE figure style).
* :func:`gene_distribution_plot`: violin plots of chosen genes in several groups of cells.
* :func:`representation_plot`: UMAPs of each model's latent space :math:`z` and MMD layer :math:`y`.
* :func:`shift_intervals`: an ensemble's predicted mean response per gene with its interval, against the
  true response when it is known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import linregress

from . import metrics
from ._plot_utils import draw_representations, finish_figure, new_figure, plot_dsp
from .utils import as_dense, is_anndata

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .metrics import GeneSelection, Matrix

__all__ = ["gene_distribution_plot", "reg_mean_plot", "reg_var_plot", "representation_plot", "shift_intervals"]


def _gene_labels(gene_names: Sequence[str] | None, n_genes: int, *xs: Any) -> np.ndarray | None:
    if gene_names is not None:
        names = np.asarray(gene_names, dtype=str)
        if len(names) != n_genes:
            raise ValueError(f"gene_names has length {len(names)}, expected {n_genes}")
        return names
    var_names = metrics.var_names_of(*xs)
    return None if var_names is None else np.asarray(var_names, dtype=str)


def _reg_plot(
    stat: Literal["mean", "var"],
    pred: Matrix,
    real_target: Matrix,
    real_control: Matrix | None,
    *,
    degs: GeneSelection | None,
    n_degs: int,
    top_labels: int,
    gene_names: Sequence[str] | None,
    title: str | None,
    show: bool | None,
    save: str | Path | None,
    ax: Axes | None,
    return_fig: bool,
):
    """Shared implementation of :func:`reg_mean_plot` and :func:`reg_var_plot`."""
    r2 = metrics.r2_mean if stat == "mean" else metrics.r2_var
    p, t = as_dense(pred, "pred"), as_dense(real_target, "real_target")
    if p.shape[1] != t.shape[1]:
        raise ValueError(f"pred has {p.shape[1]} genes, real_target {t.shape[1]}: they must be the same genes")
    n_genes = t.shape[1]
    names = _gene_labels(gene_names, n_genes, real_target, pred, real_control)
    if degs is not None:
        var_names = pd.Index(names) if names is not None else None
        deg = metrics.gene_indices(degs, n_genes, var_names)
    elif real_control is not None:
        deg = metrics.top_degs(t, real_control, n_up=n_degs // 2, n_down=n_degs // 2)
    else:
        deg = None

    x, y = (t.mean(0), p.mean(0)) if stat == "mean" else (t.var(0), p.var(0))
    r2_all = r2(p, t)
    lines = [f"R² (all {n_genes} genes) = {r2_all:.4f}"]
    if deg is not None and len(deg) > 0:
        lines.append(f"R² (top {len(np.unique(deg))} DEGs) = {r2(p, t, deg):.4f}")

    own_fig = ax is None
    if own_fig:
        fig, axs = new_figure()
        ax = axs[0, 0]
    else:
        fig = ax.figure
    what = "mean" if stat == "mean" else "variance"
    ax.scatter(x, y, s=6, color="0.6", alpha=0.7, linewidths=0, label="all genes", rasterized=len(x) > 5000)
    if deg is not None and len(deg) > 0:
        ax.scatter(x[deg], y[deg], s=12, color="tab:red", alpha=0.9, linewidths=0, label="top DEGs")
        if names is not None and top_labels > 0:
            for g in deg[:top_labels]:
                ax.annotate(
                    names[g], (x[g], y[g]), xytext=(3, 3), textcoords="offset points", fontsize=7, color="tab:red"
                )
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    if np.ptp(x) > 0:
        fit = linregress(x, y)
        grid = np.linspace(x.min(), x.max(), 2)
        ax.plot(grid, fit.intercept + fit.slope * grid, color="k", lw=1)
    ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", ha="left", fontsize=9)
    ax.set_xlabel(f"real {what} expression")
    ax.set_ylabel(f"predicted {what} expression")
    if title is not None:
        ax.set_title(title)
    return finish_figure(fig, ax, own_fig=own_fig, show=show, save=save, return_fig=return_fig)


@plot_dsp.dedent
def reg_mean_plot(
    pred: Matrix,
    real_target: Matrix,
    real_control: Matrix | None = None,
    *,
    degs: GeneSelection | None = None,
    n_degs: int = 100,
    top_labels: int = 10,
    gene_names: Sequence[str] | None = None,
    title: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    r"""Scatter the per-gene mean expression of real against predicted cells.

    Each point is a gene at :math:`(\mu_g(T), \mu_g(P))`, the mean over the real target cells and over
    the predicted cells. The plot shows the least-squares line (:func:`scipy.stats.linregress`) and
    :math:`R^2_\mu = r(\mu(T), \mu(P))^2` from :func:`scvi_trvae.metrics.r2_mean` on all genes and on
    the DEGs, which are highlighted; the first ``top_labels`` DEGs are labelled with their names.

    Parameters
    ----------
    %(param_reg_plot)s
    """
    return _reg_plot(
        "mean",
        pred,
        real_target,
        real_control,
        degs=degs,
        n_degs=n_degs,
        top_labels=top_labels,
        gene_names=gene_names,
        title=title,
        show=show,
        save=save,
        ax=ax,
        return_fig=return_fig,
    )


@plot_dsp.dedent
def reg_var_plot(
    pred: Matrix,
    real_target: Matrix,
    real_control: Matrix | None = None,
    *,
    degs: GeneSelection | None = None,
    n_degs: int = 100,
    top_labels: int = 10,
    gene_names: Sequence[str] | None = None,
    title: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    r"""Scatter the per-gene expression variance of real against predicted cells.

    As :func:`reg_mean_plot` with the population variances
    :math:`\sigma^2_g(X) = \frac{1}{n_X}\sum_i (X_{ig} - \mu_g(X))^2` instead of the means, and
    :math:`R^2_{\sigma^2} = r(\sigma^2(T), \sigma^2(P))^2` from :func:`scvi_trvae.metrics.r2_var`.

    Parameters
    ----------
    %(param_reg_plot)s
    """
    return _reg_plot(
        "var",
        pred,
        real_target,
        real_control,
        degs=degs,
        n_degs=n_degs,
        top_labels=top_labels,
        gene_names=gene_names,
        title=title,
        show=show,
        save=save,
        ax=ax,
        return_fig=return_fig,
    )


def _gene_column(x: AnnData | np.ndarray, gene: str | int, gene_names: Sequence[str] | None, group: str) -> np.ndarray:
    if isinstance(gene, int | np.integer):
        idx = int(gene)
    else:
        names = pd.Index(x.var_names if is_anndata(x) else (gene_names if gene_names is not None else []))
        if len(names) == 0:
            raise ValueError(f"group {group!r} is not an AnnData: pass gene_names to select genes by name")
        pos = np.flatnonzero(names == str(gene))
        if len(pos) == 0:
            raise KeyError(f"gene {gene!r} not found in group {group!r}")
        idx = int(pos[0])
    col = (x.X if is_anndata(x) else x)[:, idx]
    col = col.toarray() if sp.issparse(col) else col
    return np.asarray(col, dtype=np.float64).ravel()


@plot_dsp.dedent
def gene_distribution_plot(
    groups: Mapping[str, AnnData | np.ndarray],
    genes: Sequence[str],
    gene_names: Sequence[str] | None = None,
    *,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | Sequence[Axes] | None = None,
    return_fig: bool = False,
) -> Figure | Axes | list[Axes] | None:
    """Violin plots of the expression of chosen genes in several groups of cells.

    One panel per gene, one violin per group (a Gaussian kernel density estimate of the expression of
    that gene over the group's cells, with the median marked), e.g. for
    ``{"control": ctrl, "stimulated (real)": real, "predicted": pred}``. A group in which the gene is
    constant is drawn as a horizontal bar.

    Parameters
    ----------
    groups
        Group label -> cells x genes (AnnData, array or sparse matrix), in drawing order.
    genes
        Genes to show: names (looked up in each AnnData's ``var_names``, or in ``gene_names`` for
        arrays) or integer positions.
    gene_names
        Gene names of the array groups (same genes in the same order as their columns).
    %(param_show_save)s
    ax
        Axes to draw into: one Axes per gene (a single Axes for a single gene).
    return_fig
        Return the figure.

    Returns
    -------
    matplotlib.figure.Figure or matplotlib.axes.Axes or list of Axes or None
        The figure if ``return_fig``, else the axes (a list for several genes) if ``show`` is False, else None.
    """
    if isinstance(genes, str):
        genes = [genes]
    if len(groups) == 0 or len(genes) == 0:
        raise ValueError("need at least one group and one gene")
    own_fig = ax is None
    if own_fig:
        fig, axs = new_figure(1, len(genes), panel_size=(max(3.0, 1.1 * len(groups) + 1.0), 3.5))
        axes = list(axs[0])
    else:
        axes = [ax] if not isinstance(ax, Sequence | np.ndarray) else list(np.ravel(ax))
        if len(axes) != len(genes):
            raise ValueError(f"got {len(axes)} axes for {len(genes)} genes")
        fig = axes[0].figure

    labels = list(groups)
    colors = [f"C{i % 10}" for i in range(len(labels))]
    for a, gene in zip(axes, genes, strict=True):
        for pos, (label, color) in enumerate(zip(labels, colors, strict=True)):
            values = _gene_column(groups[label], gene, gene_names, label)
            if values.size == 0:
                continue
            if np.ptp(values) > 0:
                parts = a.violinplot([values], positions=[pos], widths=0.8, showextrema=False, showmedians=True)
                for body in parts["bodies"]:
                    body.set_facecolor(color)
                    body.set_edgecolor(color)
                    body.set_alpha(0.6)
                parts["cmedians"].set_color("k")
            else:
                a.hlines(values[0], pos - 0.3, pos + 0.3, color=color, lw=3)
        a.set_xticks(range(len(labels)))
        a.set_xticklabels(labels, rotation=30, ha="right")
        a.set_xlim(-0.6, len(labels) - 0.4)
        a.set_title(str(gene))
        a.set_ylabel("expression")
    out = axes[0] if len(axes) == 1 else axes
    return finish_figure(fig, out, own_fig=own_fig, show=show, save=save, return_fig=return_fig)


@plot_dsp.dedent
def representation_plot(
    models: Mapping[str, Any],
    adata: AnnData | None = None,
    *,
    color: str,
    n_neighbors: int = 15,
    seed: int = 0,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Sequence[Axes] | np.ndarray | None = None,
    return_fig: bool = False,
) -> Figure | np.ndarray | None:
    """UMAPs of the latent space and of the MMD layer of one or more models.

    For each model, the latent representation ``z = model.get_latent_representation(adata)`` and the
    MMD-layer representation ``y = model.get_mmd_representation(adata)`` are each embedded with UMAP
    (:func:`scanpy.pp.neighbors` with ``use_rep`` on a temporary AnnData, then
    :func:`scanpy.tl.umap` with ``random_state=seed``; the caller's AnnData is not modified). The grid
    has one row per model and two columns (:math:`z`, :math:`y`), cells coloured by ``adata.obs[color]``.
    In a well-trained trVAE the conditions mix in :math:`y` while the cell types stay apart.

    Parameters
    ----------
    models
        Row label -> model exposing ``get_latent_representation``, ``get_mmd_representation`` and
        (when ``adata`` is None) ``adata``.
    adata
        Cells to embed (registered with the models); by default each model's own ``adata``.
    color
        Column of ``adata.obs`` to colour by (categorical or numeric).
    n_neighbors
        Number of neighbours of the kNN graph (capped at the number of cells minus one).
    seed
        Random state of the neighbours graph and of UMAP.
    %(param_show_save)s
    ax
        ``2 * len(models)`` axes to draw into, in row-major order (or an array of shape ``(n_models, 2)``).
    return_fig
        Return the figure.

    Returns
    -------
    matplotlib.figure.Figure or numpy.ndarray or None
        The figure if ``return_fig``, else the ``(n_models, 2)`` array of axes if ``show`` is False,
        else None.
    """
    if len(models) == 0:
        raise ValueError("need at least one model")
    own_fig = ax is None
    if own_fig:
        fig, axs = new_figure(len(models), 2, panel_size=(4.0, 3.6))
    else:
        flat = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(flat) != 2 * len(models):
            raise ValueError(f"got {len(flat)} axes for {len(models)} models: need two per model")
        axs = np.asarray(flat, dtype=object).reshape(len(models), 2)
        fig = axs[0, 0].figure
    for row, (name, model) in enumerate(models.items()):
        data = adata if adata is not None else model.adata
        if color not in data.obs:
            raise KeyError(f"{color!r} is not a column of adata.obs")
        reps = {
            "z (latent)": model.get_latent_representation(data),
            "y (MMD layer)": model.get_mmd_representation(data),
        }
        draw_representations(fig, axs[row], name, reps, data, color, n_neighbors=n_neighbors, seed=seed)
    return finish_figure(fig, axs, own_fig=own_fig, show=show, save=save, return_fig=return_fig)


@plot_dsp.dedent
def shift_intervals(
    pred: AnnData,
    real: Matrix | None = None,
    control: Matrix | None = None,
    *,
    n_genes: int = 10,
    title: str | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
    return_fig: bool = False,
) -> Figure | Axes | None:
    """Plot the predicted mean response of each gene with its interval, against the true response if known.

    The predicted response and its interval are ``pred.var['trvae_shift']``, ``['trvae_shift_lower']`` and
    ``['trvae_shift_upper']`` (:meth:`scvi_trvae.TRVAEEnsemble.predict_perturbation` of a calibrated ensemble;
    without the interval columns the points have no error bars). With ``real`` and ``control`` each gene is
    drawn at (true response, predicted response) with its interval as a vertical bar, beside the diagonal, and
    the share of genes whose true response lies inside is written in the corner; without them the genes are
    drawn in the order of their predicted response. The ``n_genes`` genes with the largest absolute predicted
    response are highlighted and labelled.

    Parameters
    ----------
    pred
        The ensemble's prediction.
    real
        Real target cells of the predicted type, same genes (on the prediction scale: log-normalised).
    control
        The source cells the prediction was made from (needed with ``real``: the true response is
        ``mean(real) - mean(control)``).
    n_genes
        Genes to highlight and label.
    title
        Axes title.
    %(param_show_save)s

    Returns
    -------
    The figure if ``return_fig``, else the axes if ``show`` is False, else None.
    """
    if "trvae_shift" not in pred.var:
        raise ValueError("pred.var has no 'trvae_shift': pass a prediction of TRVAEEnsemble.predict_perturbation.")
    if real is not None and control is None:
        raise ValueError("real needs control (the source cells): the true response is mean(real) - mean(control).")
    shift = pred.var["trvae_shift"].to_numpy(dtype=float)
    bounds = ("trvae_shift_lower", "trvae_shift_upper")
    has_bounds = all(b in pred.var for b in bounds)
    errors = None
    if has_bounds:
        errors = np.vstack([shift - pred.var[bounds[0]].to_numpy(float), pred.var[bounds[1]].to_numpy(float) - shift])
    top = np.argsort(-np.abs(shift), kind="stable")[: max(n_genes, 0)]
    if real is not None:
        x = as_dense(real, "real").mean(0) - as_dense(control, "control").mean(0)
        xlabel = "true mean response"
    else:
        x = np.empty_like(shift)
        x[np.argsort(shift, kind="stable")] = np.arange(len(shift))
        xlabel = "genes, ordered by predicted response"
    own_fig = ax is None
    if own_fig:
        fig, axs = new_figure()
        ax = axs[0, 0]
    else:
        fig = ax.figure
    ax.errorbar(x, shift, yerr=errors, fmt="o", ms=2, color="0.55", ecolor="0.8", elinewidth=0.6, label="genes")
    top_errors = None if errors is None else errors[:, top]
    ax.errorbar(x[top], shift[top], yerr=top_errors, fmt="o", ms=3.5, color="tab:red", ecolor="tab:red",
                elinewidth=0.9, label=f"top {len(top)} by |predicted response|")  # fmt: skip
    for g in top:
        ax.annotate(str(pred.var_names[g]), (x[g], shift[g]), xytext=(3, 3), textcoords="offset points", fontsize=7,
                    color="tab:red")  # fmt: skip
    if real is not None:
        low, high = float(min(x.min(), shift.min())), float(max(x.max(), shift.max()))
        ax.plot([low, high], [low, high], color="k", lw=0.8)
        if has_bounds:
            inside = np.mean((x >= pred.var[bounds[0]].to_numpy(float)) & (x <= pred.var[bounds[1]].to_numpy(float)))
            level = pred.uns.get("trvae_prediction", {}).get("interval_level")
            nominal = "" if level is None else f" (nominal {level:.0%})"
            ax.text(0.03, 0.97, f"inside the interval: {inside:.1%} of genes{nominal}", transform=ax.transAxes,
                    va="top", ha="left", fontsize=9)  # fmt: skip
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("predicted mean response")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    if title is not None:
        ax.set_title(title)
    return finish_figure(fig, ax, own_fig=own_fig, show=show, save=save, return_fig=return_fig)
