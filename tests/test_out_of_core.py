"""Training from a backed (on-disk) ``.h5ad``: rows are read per minibatch, batches stay condition-balanced."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
from make_fixtures import tiny_adata

from scvi_trvae import TRVAE


@pytest.fixture
def backed(tmp_path):
    adata = tiny_adata()
    adata.X = sp.csr_matrix(adata.X)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    backed = ad.read_h5ad(tmp_path / "cells.h5ad", backed="r")
    yield backed
    backed.file.close()


@pytest.mark.parametrize("sparse_input", [False, True])
def test_training_from_a_backed_h5ad_matches_in_memory_training(backed, sparse_input):
    in_memory = backed.to_memory()
    losses = []
    for adata in (in_memory, backed):
        scvi.settings.seed = 0
        TRVAE.setup_anndata(adata, condition_key="condition")
        model = TRVAE(adata, n_hidden=8, dropout_rate=0.0)
        model.train(max_epochs=2, batch_size=16, accelerator="cpu", enable_progress_bar=False,
                    datasplitter_kwargs={"sparse_input": sparse_input})  # fmt: skip
        losses.append(model.history["train_loss"].to_numpy(dtype=float).ravel())
    assert backed.isbacked
    # a backed minibatch's rows are read in sorted order, so each cell gets another draw of z's noise
    np.testing.assert_allclose(losses[1], losses[0], rtol=0.02)
    predicted = model.predict_perturbation(backed, source="control", target="stimulated")
    assert predicted.n_obs == int((backed.obs["condition"] == "control").sum())


def test_backed_training_minibatches_hold_every_condition(backed):
    TRVAE.setup_anndata(backed, condition_key="condition")
    model = TRVAE(backed, n_hidden=8)
    splitter = model._data_splitter_cls(model.adata_manager, batch_size=16, train_size=1.0)
    splitter.setup()
    for batch in splitter.train_dataloader():
        assert np.bincount(batch["batch"].numpy().ravel().astype(int), minlength=2).tolist() == [8, 8]
