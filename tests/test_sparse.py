"""Tests of the sparse first layer: same numbers as the dense path, chosen only where it is faster."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from make_fixtures import tiny_adata
from scvi.nn import FCLayers

from scvi_trvae import TRVAE
from scvi_trvae.data._sparse import (
    SPARSE_MAX_DENSITY,
    SPARSE_MIN_BATCH_SIZE,
    row_sums,
    sparse_fc_layers,
    use_sparse_input,
)
from scvi_trvae.data._splitter import ConditionBalancedDataSplitter


def _sparse_batch(n: int = 12, n_genes: int = 20, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_genes, generator=generator)
    return x * (torch.rand(n, n_genes, generator=generator) < 0.3)


@pytest.mark.parametrize("inject_covariates", [False, True])
def test_sparse_fc_layers_match_fc_layers_values_and_gradients(inject_covariates):
    torch.manual_seed(0)
    layers = FCLayers(20, 6, n_cat_list=[3, 2], n_layers=2, n_hidden=6, dropout_rate=0.0,
                      inject_covariates=inject_covariates)  # fmt: skip
    x = _sparse_batch()
    codes = [torch.randint(0, 3, (12, 1)), torch.randint(0, 2, (12, 1))]
    dense = layers(x, *codes)
    dense.square().sum().backward()
    dense_grads = [p.grad.clone() for p in layers.parameters()]
    layers.zero_grad()
    sparse = sparse_fc_layers(layers, x.to_sparse_csr(), *codes)
    sparse.square().sum().backward()
    torch.testing.assert_close(sparse, dense)
    # float32 sums in another order: entries that should be 0 (the biases before batch norm) differ by the
    # rounding of the largest gradient
    atol = 1e-5 * max(float(grad.abs().max()) for grad in dense_grads)
    for got, expected in zip((p.grad for p in layers.parameters()), dense_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=atol)


def test_row_sums_of_sparse_and_dense_agree():
    x = _sparse_batch()
    x[3] = 0  # an empty row
    torch.testing.assert_close(row_sums(x.to_sparse_csr()), x.sum(dim=1, keepdim=True))


def test_rule_sparse_only_on_large_sparse_minibatches():
    assert use_sparse_input(0.05, SPARSE_MIN_BATCH_SIZE)
    assert not use_sparse_input(0.05, SPARSE_MIN_BATCH_SIZE - 1)
    assert not use_sparse_input(SPARSE_MAX_DENSITY * 1.5, 512)
    assert not use_sparse_input(None, 512)


def _sparse_adata():
    adata = tiny_adata()
    adata.X = sp.csr_matrix(adata.X)
    adata.layers["counts"] = sp.csr_matrix(adata.layers["counts"])
    adata.obs["donor"] = np.tile(["d1", "d2", "d3"], adata.n_obs // 3)
    return adata


@pytest.mark.parametrize("setup", [{}, {"layer": "counts", "is_count_data": True}], ids=["mse", "nb"])
def test_training_on_sparse_input_matches_dense_input(setup):
    losses, predictions = [], []
    for sparse_input in (False, True):
        adata = _sparse_adata()
        scvi.settings.seed = 0
        TRVAE.setup_anndata(adata, condition_key="condition", categorical_covariate_keys=["donor"], **setup)
        model = TRVAE(adata, n_hidden=8, dropout_rate=0.0)
        model.train(max_epochs=2, batch_size=16, accelerator="cpu", enable_progress_bar=False,
                    datasplitter_kwargs={"sparse_input": sparse_input})  # fmt: skip
        losses.append(model.history["train_loss"].to_numpy(dtype=float).ravel())
        predictions.append(model.predict_perturbation(adata, source="control", target="stimulated").X)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    np.testing.assert_allclose(predictions[1], predictions[0], atol=1e-5)


def test_splitter_chooses_sparse_automatically_and_refuses_it_for_dense_data():
    adata = _sparse_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    manager = TRVAE(adata).adata_manager
    density = adata.X.nnz / np.prod(adata.shape)
    splitter = ConditionBalancedDataSplitter(manager, batch_size=SPARSE_MIN_BATCH_SIZE)
    assert splitter.sparse_input == use_sparse_input(density, SPARSE_MIN_BATCH_SIZE)
    assert not ConditionBalancedDataSplitter(manager, batch_size=16).sparse_input
    dense = tiny_adata()
    TRVAE.setup_anndata(dense, condition_key="condition")
    with pytest.raises(ValueError, match="sparse_input=True needs a sparse CSR"):
        ConditionBalancedDataSplitter(TRVAE(dense).adata_manager, sparse_input=True)


def test_sparse_input_trains_in_bfloat16_mixed_precision():
    adata = _sparse_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, n_hidden=8)
    model.train(max_epochs=1, batch_size=16, accelerator="cpu", enable_progress_bar=False, precision="bf16-mixed",
                datasplitter_kwargs={"sparse_input": True})  # fmt: skip
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
