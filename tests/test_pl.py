from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scvi_trvae import metrics, pl

R2_RE = re.compile(r"R² \((all \d+ genes|top \d+ DEGs)\) = ([0-9.]+)")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n_genes = 60
    base = rng.gamma(1.0, 1.5, size=n_genes)
    effect = np.exp(rng.normal(0.0, 0.6, size=n_genes))
    names = [f"gene{i}" for i in range(n_genes)]

    def make(n, rate):
        a = ad.AnnData(np.log1p(rng.poisson(rate, size=(n, n_genes))).astype(np.float32))
        a.var_names = names
        return a

    return make(50, base), make(60, base * effect), make(40, base * effect**0.8)


def _r2_texts(ax: Axes) -> dict[str, float]:
    found = {}
    for t in ax.texts:
        for what, value in R2_RE.findall(t.get_text()):
            found["all" if what.startswith("all") else "deg"] = float(value)
    return found


@pytest.mark.parametrize(("plot", "r2"), [(pl.reg_mean_plot, metrics.r2_mean), (pl.reg_var_plot, metrics.r2_var)])
def test_reg_plots_return_fig_and_r2_text(data, plot, r2):
    ctrl, tgt, pred = data
    n_open = len(plt.get_fignums())
    fig = plot(pred, tgt, ctrl, n_degs=20, top_labels=5, return_fig=True)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = _r2_texts(ax)
    deg = metrics.top_degs(tgt, ctrl, n_up=10, n_down=10)
    assert texts["all"] == pytest.approx(r2(pred, tgt), abs=5e-5)
    assert texts["deg"] == pytest.approx(r2(pred, tgt, genes=deg), abs=5e-5)
    # the first top_labels DEGs are labelled by name
    labels = [t.get_text() for t in ax.texts if not R2_RE.search(t.get_text())]
    assert labels == [f"gene{i}" for i in deg[:5]]
    assert len(plt.get_fignums()) == n_open + 1  # the returned figure stays open for the caller


def test_reg_mean_plot_given_degs_and_arrays(data):
    _, tgt, pred = data
    degs = ["gene3", "gene10", "gene40"]
    ax = pl.reg_mean_plot(pred.X, tgt.X, gene_names=list(tgt.var_names), degs=degs, show=False, title="NK")
    assert isinstance(ax, Axes)
    assert ax.get_title() == "NK"
    texts = _r2_texts(ax)
    assert texts["deg"] == pytest.approx(metrics.r2_mean(pred, tgt, genes=degs), abs=5e-5)
    assert [t.get_text() for t in ax.texts if not R2_RE.search(t.get_text())] == degs
    # without control cells and without degs there are no DEGs: only the all-genes R²
    ax = pl.reg_mean_plot(sp.csr_matrix(pred.X), tgt.X, show=False)
    assert set(_r2_texts(ax)) == {"all"}


@pytest.mark.parametrize("plot", [pl.reg_mean_plot, pl.reg_var_plot])
def test_reg_plots_save_and_ax(data, plot, tmp_path):
    ctrl, tgt, pred = data
    path = tmp_path / "reg.png"
    n_open = len(plt.get_fignums())
    assert plot(pred, tgt, ctrl, n_degs=10, save=path) is None  # show=None: shown, closed, nothing returned
    assert path.stat().st_size > 0
    assert len(plt.get_fignums()) == n_open

    fig, axs = plt.subplots(1, 2)
    out = plot(pred, tgt, ctrl, n_degs=10, ax=axs[1], show=False)
    assert out is axs[1]
    assert len(axs[1].collections) >= 2 and not axs[0].collections
    assert plt.fignum_exists(fig.number)  # the caller's figure is not closed
    assert plot(pred, tgt, ctrl, n_degs=10, ax=axs[0], return_fig=True) is fig
    assert plot(pred, tgt, ctrl, n_degs=10, ax=axs[0]) is None  # show=None with a given ax: nothing closed
    assert plt.fignum_exists(fig.number)


def _draw_reg_mean(data, **kwargs):
    ctrl, tgt, pred = data
    return pl.reg_mean_plot(pred, tgt, ctrl, n_degs=10, **kwargs)


def _draw_reg_var(data, **kwargs):
    ctrl, tgt, pred = data
    return pl.reg_var_plot(pred, tgt, ctrl, n_degs=10, **kwargs)


def _draw_violins(data, **kwargs):
    ctrl, _, pred = data
    return pl.gene_distribution_plot({"control": ctrl, "predicted": pred}, ["gene1", "gene2"], **kwargs)


def _draw_representations(data, **kwargs):
    ctrl, tgt, _ = data
    adata = ad.concat([ctrl, tgt], label="condition", keys=["control", "stimulated"], index_unique="-")
    return pl.representation_plot({"trVAE": FakeModel(adata, 1)}, adata, color="condition", n_neighbors=10, **kwargs)


@pytest.mark.parametrize(
    "draw",
    [_draw_reg_mean, _draw_reg_var, _draw_violins, pytest.param(_draw_representations, marks=pytest.mark.slow)],
)
def test_show_false_leaves_the_figure_for_plt_savefig(data, draw, tmp_path):
    """``show=False`` returns the axes and keeps their figure current: ``plt.savefig`` writes the drawing."""
    axes = draw(data, show=False)
    first = np.ravel(axes)[0]
    assert isinstance(first, Axes) and plt.gcf() is first.figure
    path = tmp_path / "figure.png"
    plt.savefig(path)
    pixels = mpimg.imread(path)[..., :3]
    assert pixels.std() > 0.05  # a blank (all white) image has none
    assert (pixels < 0.5).mean() > 0.001  # some dark marks: points, text, lines


def test_reg_plot_does_not_mutate(data):
    ctrl, tgt, pred = data
    before = (ctrl.X.copy(), tgt.X.copy(), pred.X.copy(), dict(tgt.uns))
    pl.reg_var_plot(pred, tgt, ctrl, n_degs=10, show=False)
    np.testing.assert_array_equal(ctrl.X, before[0])
    np.testing.assert_array_equal(tgt.X, before[1])
    np.testing.assert_array_equal(pred.X, before[2])
    assert dict(tgt.uns) == before[3]


def test_gene_distribution_plot(data, tmp_path):
    ctrl, tgt, pred = data
    names = list(tgt.var_names)
    const = np.zeros((10, len(names)))  # constant genes are drawn as bars, not violins
    groups = {"control": ctrl, "stimulated (real)": tgt, "predicted": pred.X, "zeros": const}
    genes = ["gene1", "gene2", "gene7"]
    fig = pl.gene_distribution_plot(groups, genes, gene_names=names, return_fig=True, save=tmp_path / "v.pdf")
    assert isinstance(fig, Figure)
    assert (tmp_path / "v.pdf").stat().st_size > 0
    assert [a.get_title() for a in fig.axes] == genes
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(groups)

    fig, ax = plt.subplots()
    assert pl.gene_distribution_plot({"control": ctrl, "predicted": pred}, ["gene4"], ax=ax, show=False) is ax
    axs = pl.gene_distribution_plot({"control": ctrl}, ["gene4", "gene5"], show=False)
    assert isinstance(axs, list) and len(axs) == 2

    with pytest.raises(ValueError, match="gene_names"):
        pl.gene_distribution_plot({"predicted": pred.X}, ["gene1"], show=False)
    with pytest.raises(KeyError, match="nope"):
        pl.gene_distribution_plot({"control": ctrl}, ["nope"], show=False)


class FakeModel:
    """Stands in for the model: a fixed linear map of the expression to z and y."""

    def __init__(self, adata: ad.AnnData, seed: int):
        rng = np.random.default_rng(seed)
        self.adata = adata
        self._wz = rng.normal(size=(adata.n_vars, 4))
        self._wy = rng.normal(size=(adata.n_vars, 6))
        self.calls = []

    def get_latent_representation(self, adata=None):
        self.calls.append(("z", adata))
        return np.asarray(adata.X) @ self._wz

    def get_mmd_representation(self, adata=None):
        self.calls.append(("y", adata))
        return np.asarray(adata.X) @ self._wy


@pytest.fixture(scope="module")
def cells(data):
    ctrl, tgt, _ = data
    adata = ad.concat([ctrl, tgt], label="condition", keys=["control", "stimulated"], index_unique="-")
    adata.obs["score"] = np.arange(adata.n_obs, dtype=float)
    return adata


@pytest.mark.slow  # UMAP's first call compiles numba code (~15 s)
def test_representation_plot(cells, tmp_path):
    m1, m2 = FakeModel(cells, 1), FakeModel(cells, 2)
    obs_before, uns_before, obsm_before = cells.obs.copy(), dict(cells.uns), set(cells.obsm)
    path = tmp_path / "rep.png"
    fig = pl.representation_plot(
        {"trVAE": m1, "CVAE": m2}, color="condition", n_neighbors=10, return_fig=True, save=path
    )
    assert isinstance(fig, Figure)
    assert path.stat().st_size > 0
    titles = [a.get_title() for a in fig.axes]
    assert titles == ["trVAE: z (latent)", "trVAE: y (MMD layer)", "CVAE: z (latent)", "CVAE: y (MMD layer)"]
    # adata=None: each model embeds its own adata
    assert [k for k, _ in m1.calls] == ["z", "y"] and all(a is cells for _, a in m1.calls)
    # two colours, one per condition
    colors = np.unique(fig.axes[0].collections[0].get_facecolors(), axis=0)
    assert len(colors) == 2
    pd.testing.assert_frame_equal(cells.obs, obs_before)
    assert dict(cells.uns) == uns_before and set(cells.obsm) == obsm_before


def test_representation_plot_given_adata_ax_and_numeric_color(cells):
    m = FakeModel(cells[:0], 3)  # the model's own adata is not used when adata is given
    _, axs = plt.subplots(1, 2)
    out = pl.representation_plot({"trVAE": m}, cells, color="score", ax=axs, show=False)
    assert out.shape == (1, 2) and out[0, 0] is axs[0] and out[0, 1] is axs[1]
    assert all(a is cells for _, a in m.calls)
    with pytest.raises(ValueError, match="two per model"):
        pl.representation_plot({"a": m, "b": m}, cells, color="score", ax=axs, show=False)
    with pytest.raises(KeyError, match="missing"):
        pl.representation_plot({"a": m}, cells, color="missing", show=False)
