"""Figure helpers of :mod:`scvi_trvae.pl`: scanpy's show / save / return conventions and UMAP panels."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from docrep import DocstringProcessor

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def new_figure(nrows: int = 1, ncols: int = 1, panel_size: tuple[float, float] = (4.5, 4.5)):
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    return fig, axs


def finish_figure(
    fig: Figure, axes: Any, *, own_fig: bool, show: bool | None, save: str | Path | None, return_fig: bool
):
    """Save, show or return a figure following scanpy's conventions; close what is not handed back."""
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    if return_fig:
        return fig
    if show is False:
        return axes
    if show or own_fig:
        with warnings.catch_warnings():
            # plt.show() only warns under non-interactive backends such as Agg: nothing to show there
            warnings.filterwarnings("ignore", message=".*non-interactive.*", category=UserWarning)
            plt.show()
    if own_fig:
        plt.close(fig)
    return None


def umap_embedding(rep: np.ndarray, n_neighbors: int, seed: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    rep = np.asarray(rep, dtype=np.float32)
    if rep.ndim != 2 or len(rep) < 3:
        raise ValueError(f"need a cells x dimensions representation with at least 3 cells, got shape {rep.shape}")
    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(len(rep))]), obsm={"X_rep": rep})
    sc.pp.neighbors(tmp, use_rep="X_rep", n_neighbors=min(n_neighbors, len(rep) - 1), random_state=seed)
    sc.tl.umap(tmp, random_state=seed)
    return np.asarray(tmp.obsm["X_umap"])


def color_spec(values: pd.Series, uns: Mapping[str, Any], key: str):
    """Return ``(categories, colors)`` for a categorical key, or ``(None, None)`` for a numeric one."""
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        return None, None
    categories = (
        list(values.cat.categories)
        if isinstance(values.dtype, pd.CategoricalDtype)
        else sorted(values.dropna().unique())
    )
    palette = uns.get(f"{key}_colors")
    if palette is not None and len(palette) == len(categories):
        return categories, list(palette)
    import matplotlib as mpl

    cmap_name = "tab10" if len(categories) <= 10 else "tab20"
    cmap = mpl.colormaps[cmap_name]
    return categories, [cmap(i % cmap.N) for i in range(len(categories))]


def draw_representations(
    fig: Figure, axes: Sequence[Axes], name: str, reps: Mapping[str, np.ndarray], data: AnnData, color: str, **umap
) -> None:
    """Draw the UMAP of each representation of one model into one row of axes, coloured by ``obs[color]``."""
    import matplotlib as mpl
    from matplotlib.lines import Line2D

    values = data.obs[color]
    categories, colors = color_spec(values, data.uns, color)
    if categories is not None:
        # code -1 (missing value) picks the trailing grey
        rgba = np.array([mpl.colors.to_rgba(c) for c in [*colors, "lightgrey"]])
        point_colors = rgba[pd.Categorical(values, categories=categories).codes]
    for a, (what, rep) in zip(axes, reps.items(), strict=True):
        rep = np.asarray(rep)
        if len(rep) != data.n_obs:
            raise ValueError(f"{name}: {what} has {len(rep)} rows for {data.n_obs} cells")
        emb = umap_embedding(rep, umap["n_neighbors"], umap["seed"])
        if categories is None:
            sc_ = a.scatter(emb[:, 0], emb[:, 1], c=values.to_numpy(dtype=float), s=4, cmap="viridis")
            fig.colorbar(sc_, ax=a, label=color)
        else:
            a.scatter(emb[:, 0], emb[:, 1], c=point_colors, s=4, linewidths=0)
        a.set_title(f"{name}: {what}")
        a.set_xticks([])
        a.set_yticks([])
        a.set_xlabel("UMAP1")
        a.set_ylabel("UMAP2")
    if categories is not None:
        handles = [
            Line2D([], [], marker="o", ls="", color=c, label=str(k)) for k, c in zip(categories, colors, strict=True)
        ]
        axes[-1].legend(
            handles=handles, title=color, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8
        )


_show_save = """\
show
    None (default): show the figure when the function created it, and then close it (as scanpy does),
    so a later ``plt.savefig`` finds no figure: pass ``save`` or ``show=False`` to keep it. True: show it
    (a figure created here is then closed). False: neither show nor close it, and return the axes; the
    figure stays current, so ``plt.savefig(path)`` afterwards writes it.
save
    Path to write the figure to before it is shown (format from the suffix, e.g. ``.png`` or ``.pdf``)."""

#: Parameters shared by the functions of :mod:`scvi_trvae.pl` (``%(param_show_save)s`` and the
#: regression plots' ``%(param_reg_plot)s``), for docstrings decorated with ``@plot_dsp.dedent``.
plot_dsp = DocstringProcessor(
    param_show_save=_show_save,
    param_reg_plot="""\
pred
    Predicted cells x genes (AnnData, array or sparse matrix), log-normalized.
real_target
    Real target cells, same genes in the same order.
real_control
    Real control cells of the same type; used to find DEGs with :func:`scvi_trvae.metrics.top_degs`
    when ``degs`` is not given. Without both, no DEGs are shown.
degs
    DEGs to highlight: integer indices, a boolean mask or gene names, in ranking order.
n_degs
    Number of DEGs (half up-, half down-regulated) found from ``real_control``.
top_labels
    Number of DEGs (the first ones: the most up-regulated when found here) to label by name.
gene_names
    Gene names (default: ``var_names`` of an AnnData input); without names no labels are drawn.
title
    Axes title.
"""
    + _show_save
    + """
ax
    Axes to draw into; by default a new figure is created.
return_fig
    Return the figure.

Returns
-------
matplotlib.figure.Figure or matplotlib.axes.Axes or None
    The figure if ``return_fig``, else the axes if ``show`` is False, else None.""",
)
