from __future__ import annotations

import anndata
import mudata
import numpy as np
import pandas as pd
import pytest
from helpers import quick_train

from scvi_trvae import TRVAE
from scvi_trvae.datasets import synthetic_perturbation


@pytest.fixture
def mdata(small_adata):
    rng = np.random.default_rng(0)
    protein = anndata.AnnData(
        rng.poisson(5.0, (small_adata.n_obs, 8)).astype(np.float32),
        obs=pd.DataFrame(index=small_adata.obs_names),
        var=pd.DataFrame(index=[f"protein_{i}" for i in range(8)]),
    )
    return mudata.MuData({"rna": small_adata, "protein": protein})


def test_train_and_predict_on_the_rna_modality(mdata, small_adata):
    rna_before = mdata["rna"].X.copy()
    TRVAE.setup_mudata(mdata, condition_key="condition", modalities={"rna_layer": "rna"})
    model = TRVAE(mdata)
    assert model.summary_stats.n_vars == mdata["rna"].n_vars  # the protein modality is not modelled
    assert model.adata is mdata["rna"]
    quick_train(model)

    is_a = (mdata["rna"].obs["cell_type"] == "type_A").to_numpy()
    from_mudata = model.predict_perturbation(mdata, source="control", target="stimulated", indices=is_a)
    from_rna = model.predict_perturbation(mdata["rna"], source="control", target="stimulated", indices=is_a)
    assert from_mudata.n_obs == 40
    assert list(from_mudata.var_names) == list(mdata["rna"].var_names)
    np.testing.assert_array_equal(from_mudata.X, from_rna.X)
    assert model.get_latent_representation(mdata).shape == (mdata["rna"].n_obs, model.module.n_latent)
    np.testing.assert_array_equal(mdata["rna"].X, rna_before)

    # a new MuData with the same genes is predicted from its RNA modality, unchanged
    fresh = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=40, n_response_genes=12, seed=1)
    other = mudata.MuData({"gex": fresh, "adt": mdata["protein"].copy()})
    pred = model.predict_perturbation(other, source="control", target="stimulated", indices=is_a)
    np.testing.assert_allclose(pred.X, from_rna.X, rtol=1e-5, atol=1e-5)
    assert "_scvi_uuid" not in other["gex"].uns  # not registered in place: a registered copy was used


def test_count_layer_of_the_rna_modality(mdata):
    TRVAE.setup_mudata(
        mdata, rna_layer="counts", condition_key="condition", is_count_data=True, modalities={"rna_layer": "rna"}
    )
    model = TRVAE(mdata)
    assert model.module.likelihood == "nb"
    quick_train(model, max_epochs=1)


@pytest.mark.parametrize(
    ("modalities", "match"),
    [
        (None, "must name the RNA modality"),
        ({"rna_layer": "atac"}, "No modality 'atac'"),
        ({"rna_layer": "rna", "protein_layer": "protein"}, "Extraneous"),
        ({"rna_layer": "rna", "condition_key": "protein"}, "Copy the column"),
    ],
)
def test_bad_modalities(mdata, modalities, match):
    with pytest.raises(ValueError, match=match):
        TRVAE.setup_mudata(mdata, condition_key="condition", modalities=modalities)


def test_condition_only_in_global_obs_is_explained(mdata):
    mdata.obs["treatment"] = mdata["rna"].obs["condition"].to_numpy()
    with pytest.raises(ValueError, match=r"mdata\['rna'\]\.obs\['treatment'\]"):
        TRVAE.setup_mudata(mdata, condition_key="treatment", modalities={"rna_layer": "rna"})


def test_anndata_is_refused(small_adata):
    with pytest.raises(TypeError, match="setup_anndata"):
        TRVAE.setup_mudata(small_adata, condition_key="condition", modalities={"rna_layer": "rna"})
