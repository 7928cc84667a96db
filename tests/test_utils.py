from __future__ import annotations

import anndata
import numpy as np
import pytest
import scipy.sparse as sp

from scvi_trvae.utils import TARGET_LIBRARY_SIZE, as_dense, is_anndata


def test_as_dense_accepts_every_matrix_form_and_never_modifies_it(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    sparse = sp.csr_matrix(values)
    adata = anndata.AnnData(sparse.copy())
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = anndata.read_h5ad(tmp_path / "a.h5ad", backed="r")
    try:
        for matrix in (values, sparse, adata, adata[:2], backed.X, backed):
            dense = as_dense(matrix)
            assert dense.dtype == np.float64
            np.testing.assert_array_equal(dense, values[: dense.shape[0]])
    finally:
        backed.file.close()
    assert as_dense(values, dtype=None) is values  # no copy when none is needed
    assert as_dense(sparse, dtype=np.float32).dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), values)


def test_as_dense_refuses_what_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"pred: expected a cells x genes matrix, got an array of shape \(3,\)"):
        as_dense(np.zeros(3), "pred")
    with pytest.raises(ValueError, match=r"x: the AnnData has no \.X"):
        as_dense(anndata.AnnData(obs={"a": [1, 2]}), "x")


def test_is_anndata_and_library_size():
    assert is_anndata(anndata.AnnData(np.zeros((2, 2))))
    assert not is_anndata(np.zeros((2, 2)))
    assert TARGET_LIBRARY_SIZE == 1e4
