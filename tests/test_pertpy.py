"""pertpy interoperability: our E-distance against ``pertpy.tl.Distance("edistance")`` (skipped without pertpy)."""

from __future__ import annotations

import anndata
import numpy as np
import pytest
import scanpy as sc
from helpers import quick_train

from scvi_trvae import TRVAE, metrics

pt = pytest.importorskip("pertpy")


def test_edistance_matches_pertpy_on_arrays():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0.0, 1.0, (40, 5)), rng.normal(0.5, 1.5, (30, 5))
    assert metrics.edistance(x, y) == pytest.approx(pt.tl.Distance("edistance")(x, y), rel=1e-10)


def test_predictions_go_to_pertpy_as_they_are(small_adata):
    held_out = ((small_adata.obs["cell_type"] == "type_A") & (small_adata.obs["condition"] == "stimulated")).to_numpy()
    train = small_adata[~held_out].copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    model = quick_train(TRVAE(train))
    control = small_adata[
        ((small_adata.obs["cell_type"] == "type_A") & (small_adata.obs["condition"] == "control")).to_numpy()
    ].copy()
    pred = model.predict_perturbation(control, source="control", target="stimulated")

    # predicted and real cells in one AnnData, a PCA of both, and pertpy's pairwise E-distances by group
    cells = anndata.concat(
        {"predicted": pred, "real": small_adata[held_out], "control": control}, label="group", index_unique="-"
    )
    sc.pp.pca(cells, n_comps=10)
    table = pt.tl.Distance("edistance", obsm_key="X_pca").pairwise(cells, groupby="group", show_progressbar=False)
    pca = cells.obsm["X_pca"]
    group = cells.obs["group"].to_numpy()
    ours = metrics.edistance(pca[group == "predicted"], pca[group == "real"])
    assert table.loc["predicted", "real"] == pytest.approx(ours, rel=1e-6)
    assert table.loc["control", "real"] == pytest.approx(
        metrics.edistance(pca[group == "control"], pca[group == "real"]), rel=1e-6
    )
