"""The headline task on real data: predict IFN-beta stimulated NK cells never seen in training."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scvi
from conftest import SCORER, SHARED_DATA
from helpers import load_script

from scvi_trvae import TRVAE
from scvi_trvae.utils import as_dense

KANG = SHARED_DATA / "kang2018_pbmc_ifnb_lognorm.h5ad"

pytestmark = pytest.mark.skipif(not (KANG.exists() and SCORER.exists()), reason="shared Kang data or scorer absent")


def _load_scorer():
    return load_script("shared_score", SCORER)


def test_held_out_nk_beats_no_response_baseline():
    scvi.settings.seed = 0
    adata = ad.read_h5ad(KANG)
    held_out = ((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    # 1,000 most variable genes of the training cells only, so that the held-out cells stay unseen
    x = as_dense(train.X)
    genes = np.sort(np.argsort(x.var(axis=0))[-1000:])
    train = train[:, genes].copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    model = TRVAE(train, n_hidden=128)
    model.train(max_epochs=15, enable_progress_bar=False)

    control = adata[(adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "control"), genes].copy()
    real = adata[held_out, genes]
    pred = model.predict_perturbation(control, source="control", target="stimulated")

    score = _load_scorer().score
    trvae = score(control.X, real.X, pred.X, real.var_names)
    no_response = score(control.X, real.X, control.X, real.var_names)
    assert trvae["r2_mean_deg"] > no_response["r2_mean_deg"] + 0.1
    assert trvae["edist_scaled"] < 0.8 * no_response["edist_scaled"]
