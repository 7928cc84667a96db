"""Nothing in the user's AnnData changes behind their back: one helper, every public call.

``setup_anndata`` adds scvi-tools' registration and nothing else; every other public call leaves a
registered AnnData exactly as it was, and an unregistered one (given to a query method) untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from make_fixtures import tiny_adata, train_tiny_model

from scvi_trvae import TRVAE
from scvi_trvae.utils import as_dense

PREDICT = {"source": "control", "target": "stimulated"}
FAST = {"max_epochs": 1, "batch_size": 16, "enable_progress_bar": False, "accelerator": "cpu"}


def _assert_nested_equal(before, after, where: str) -> None:
    if isinstance(before, Mapping):
        assert set(before.keys()) == set(after.keys()), where
        for key in before:
            _assert_nested_equal(before[key], after[key], f"{where}[{key!r}]")
    elif isinstance(before, pd.DataFrame):
        pd.testing.assert_frame_equal(after, before, obj=where)
    elif sp.issparse(before) or isinstance(before, np.ndarray):
        assert type(after) is type(before), where
        np.testing.assert_array_equal(as_dense(after, dtype=None), as_dense(before, dtype=None), err_msg=where)
        assert after.dtype == before.dtype, where
    else:
        assert type(after) is type(before) and after == before, where


def assert_unchanged(before: anndata.AnnData, after: anndata.AnnData, *, registration_allowed: bool = False):
    """Every slot of ``after`` equals ``before``; with ``registration_allowed`` scvi-tools' ``_scvi*`` obs
    columns and uns keys may have been added or rewritten."""

    def kept(keys) -> list:
        return [key for key in keys if not (registration_allowed and str(key).startswith("_scvi"))]

    pd.testing.assert_index_equal(after.obs_names, before.obs_names)
    pd.testing.assert_index_equal(after.var_names, before.var_names)
    _assert_nested_equal(before.X, after.X, "X")
    pd.testing.assert_frame_equal(after.obs[kept(after.obs.columns)], before.obs[kept(before.obs.columns)], obj="obs")
    pd.testing.assert_frame_equal(after.var, before.var, obj="var")
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        _assert_nested_equal(dict(getattr(before, slot)), dict(getattr(after, slot)), slot)
    _assert_nested_equal(
        {key: before.uns[key] for key in kept(before.uns)}, {key: after.uns[key] for key in kept(after.uns)}, "uns"
    )


def test_setup_anndata_only_adds_registration(tiny_fresh):
    before = copy.deepcopy(tiny_fresh)
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    assert any(c.startswith("_scvi") for c in tiny_fresh.obs)
    assert_unchanged(before, tiny_fresh, registration_allowed=True)


MUTATION_CALLS = [
    pytest.param(lambda model, adata, path: TRVAE(adata, n_hidden=8, n_latent=2), id="TRVAE()"),
    pytest.param(lambda model, adata, path: model.train(**FAST), id="train"),
    pytest.param(lambda model, adata, path: model.predict_perturbation(**PREDICT), id="predict_perturbation"),
    pytest.param(
        lambda model, adata, path: model.predict_perturbation(adata, indices=[0, 1, 40], n_samples=2, **PREDICT),
        id="predict_perturbation(adata, indices, n_samples)",
    ),
    pytest.param(
        lambda model, adata, path: model.get_mmd_representation(adata, condition="stimulated"),
        id="get_mmd_representation",
    ),
    pytest.param(lambda model, adata, path: model.get_latent_representation(adata), id="get_latent_representation"),
    pytest.param(lambda model, adata, path: model.save(path), id="save"),
    pytest.param(lambda model, adata, path: model.save(path, save_anndata=True), id="save(save_anndata)"),
    pytest.param(
        lambda model, adata, path: model.save(path, save_anndata=True, convert_strings_to_categoricals=False),
        id="save(save_anndata, convert_strings_to_categoricals=False)",
    ),
    pytest.param(lambda model, adata, path: TRVAE.load_query_data(tiny_adata(), model), id="load_query_data"),
]


@pytest.mark.parametrize("call", MUTATION_CALLS)
def test_public_calls_do_not_mutate_the_registered_anndata(tmp_path, call):
    adata = tiny_adata()
    model = train_tiny_model(adata)
    snapshot = copy.deepcopy(adata)
    call(model, adata, tmp_path / "model")
    assert_unchanged(snapshot, adata)


def test_load_only_refreshes_the_registration(tiny_trained_pair, tmp_path):
    model, _ = tiny_trained_pair
    model.save(tmp_path / "model")
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    snapshot = copy.deepcopy(adata)
    TRVAE.load(tmp_path / "model", adata=adata, accelerator="cpu")
    assert_unchanged(snapshot, adata, registration_allowed=True)


def test_query_calls_do_not_touch_an_unregistered_anndata(tiny_trained_pair):
    model, _ = tiny_trained_pair
    query = tiny_adata()
    query.obs["condition"] = query.obs["condition"].astype(str)  # object column, as users often have
    snapshot = copy.deepcopy(query)
    model.predict_perturbation(query, **PREDICT)
    model.predict_perturbation(query, indices=np.arange(10), **PREDICT)
    model.get_mmd_representation(query)
    assert_unchanged(snapshot, query)
    # scvi-tools' own methods register an unregistered AnnData (as setup_anndata documents), nothing more
    model.get_latent_representation(query)
    assert_unchanged(snapshot, query, registration_allowed=True)
