from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from helpers import quick_train

from scvi_trvae import TRVAE
from scvi_trvae._ensemble import fresh_copy
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.model._model import SOURCE_COLUMN
from scvi_trvae.utils import TARGET_LIBRARY_SIZE


@pytest.fixture(scope="module")
def trained_pair():
    """One trained model shared by the read-only tests of this module, with its AnnData."""
    scvi.settings.seed = 0
    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=40, n_response_genes=12, seed=1)
    TRVAE.setup_anndata(adata, condition_key="condition")
    return quick_train(TRVAE(adata, n_hidden=32, n_latent=8), max_epochs=3), adata


@pytest.fixture
def trained(trained_pair):
    return trained_pair[0]


@pytest.fixture
def trained_adata(trained_pair):
    return trained_pair[1]


def test_print_and_history(trained, capsys):
    print(trained)
    text = " ".join(capsys.readouterr().out.split())
    assert "TRVAE" in text and "'control', 'stimulated'" in text and "mmd_on='y'" in text
    for key in ("mmd_train", "reconstruction_loss_train", "kl_local_train", "train_loss"):
        assert key in trained.history
        assert len(trained.history[key]) == 3
    assert (trained.history["mmd_train"].to_numpy() >= 0).all()


def test_validation_mmd_and_early_stopping(small_adata):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    model = quick_train(TRVAE(small_adata, n_hidden=32), max_epochs=3, early_stopping=True, check_val_every_n_epoch=1)
    assert "mmd_validation" in model.history and "validation_loss" in model.history
    assert np.isfinite(model.history["mmd_validation"].to_numpy(dtype=float)).all()


def test_kl_weight_constant_by_default_and_warmup_on_request(small_adata):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    model = quick_train(TRVAE(small_adata, n_hidden=16), kl_weight=0.3)
    assert np.allclose(model.history["kl_weight"].to_numpy(), 0.3)
    model = quick_train(
        TRVAE(small_adata, n_hidden=16), kl_weight=0.3, max_epochs=2, plan_kwargs={"n_epochs_kl_warmup": 4}
    )
    weights = model.history["kl_weight"].to_numpy().ravel()
    assert weights.min() < 0.3 and weights.max() <= 0.3


def test_predict_perturbation_returns_new_annotated_anndata(trained, trained_adata):
    cells = trained_adata.obs["cell_type"] == "type_A"
    pred = trained.predict_perturbation(source="control", target="stimulated", indices=np.flatnonzero(cells))
    source_cells = trained_adata.obs_names[cells & (trained_adata.obs["condition"] == "control")]
    assert list(pred.obs_names) == list(source_cells)
    assert pred.n_vars == trained_adata.n_vars and list(pred.var_names) == list(trained_adata.var_names)
    assert (pred.obs["condition"] == "stimulated").all()
    assert (pred.obs[SOURCE_COLUMN] == "control").all()
    assert (pred.obs["cell_type"] == "type_A").all()
    assert not any(c.startswith("_scvi") for c in pred.obs.columns)
    assert pred.uns["trvae_prediction"]["mode"] == "counterfactual"
    assert pred.X.dtype == np.float32 and (pred.X >= 0).all() and np.isfinite(pred.X).all()
    again = trained.predict_perturbation(source="control", target="stimulated", indices=np.flatnonzero(cells))
    np.testing.assert_array_equal(pred.X, again.X)


def test_modes_and_samples(trained, trained_adata):
    mean = trained.predict_perturbation(source="control", target="stimulated", mode="mean")
    counterfactual = trained.predict_perturbation(source="control", target="stimulated")
    assert not np.allclose(mean.X, counterfactual.X)
    draws = trained.predict_perturbation(source="control", target="stimulated", mode="mean", n_samples=3, seed=5)
    assert draws.n_obs == 3 * mean.n_obs
    assert sorted(set(draws.obs["trvae_draw"])) == [0, 1, 2]
    assert draws.obs_names.is_unique
    same = trained.predict_perturbation(source="control", target="stimulated", mode="mean", n_samples=3, seed=5)
    np.testing.assert_array_equal(draws.X, same.X)
    first = draws.X[: mean.n_obs]
    assert not np.allclose(first, mean.X)


def test_counterfactual_keeps_cell_residual(trained, trained_adata):
    # decoding under the source itself must return the observed cells (residual added back)
    module = trained.module
    module.eval()
    control = trained_adata[trained_adata.obs["condition"] == "control"]
    x = torch.tensor(np.asarray(control.X))
    codes = torch.zeros(len(x), 1)
    with torch.inference_mode():
        qz = module.inference(x, codes)["qz"]
        decoded_source = module.generative(qz.loc, codes, x.sum(1, keepdim=True))["px_mean"]
        decoded_target = module.generative(qz.loc, codes + 1, x.sum(1, keepdim=True))["px_mean"]
    expected = (decoded_target + x - decoded_source).clamp_min(0).numpy()
    pred = trained.predict_perturbation(source="control", target="stimulated")
    np.testing.assert_allclose(pred.X, expected, rtol=1e-5, atol=1e-5)


def test_representations(trained, trained_adata):
    z = trained.get_latent_representation()
    y = trained.get_mmd_representation()
    assert z.shape == (trained_adata.n_obs, 8) and y.shape == (trained_adata.n_obs, 32)
    y_all_control = trained.get_mmd_representation(condition="control")
    control = (trained_adata.obs["condition"] == "control").to_numpy()
    np.testing.assert_allclose(y_all_control[control], y[control], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y_all_control[~control], y[~control])


def test_save_load_round_trip(trained, trained_adata, tmp_path):
    pred = trained.predict_perturbation(source="control", target="stimulated")
    trained.save(tmp_path / "model", overwrite=True, save_anndata=True)
    loaded = TRVAE.load(tmp_path / "model", adata=trained_adata)
    np.testing.assert_array_equal(loaded.predict_perturbation(source="control", target="stimulated").X, pred.X)
    with_own_adata = TRVAE.load(tmp_path / "model")
    np.testing.assert_array_equal(with_own_adata.predict_perturbation(source="control", target="stimulated").X, pred.X)


def test_unregistered_copy_predicts_like_the_registered_anndata(trained, trained_adata):
    fresh = trained_adata.copy()
    fresh.obs = fresh.obs.drop(columns=[c for c in fresh.obs.columns if c.startswith("_scvi")])
    for key in [k for k in fresh.uns if k.startswith("_scvi")]:
        del fresh.uns[key]
    pred = trained.predict_perturbation(fresh, source="control", target="stimulated")
    np.testing.assert_allclose(pred.X, trained.predict_perturbation(source="control", target="stimulated").X, atol=1e-6)
    np.testing.assert_allclose(trained.get_mmd_representation(fresh), trained.get_mmd_representation(), atol=1e-6)


def test_prediction_is_one_float32_buffer(trained, trained_adata):
    pred = trained.predict_perturbation(source="control", target="stimulated", n_samples=3)
    n_control = int((trained_adata.obs["condition"] == "control").sum())
    assert pred.X.dtype == np.float32 and pred.X.flags.c_contiguous and pred.X.flags.owndata
    assert pred.shape == (3 * n_control, trained_adata.n_vars)
    # draw d of cell i sits in row d * n_cells + i, as its obs name says
    assert list(pred.obs_names[n_control : n_control + 2]) == [f"{n}-draw1" for n in pred.obs_names[:2].str[:-6]]


def test_multi_condition_any_source_and_target(three_condition_adata):
    TRVAE.setup_anndata(three_condition_adata, condition_key="condition")
    model = quick_train(TRVAE(three_condition_adata, n_hidden=16), batch_size=30)
    for source, target in (("control", "drug_b"), ("drug_a", "control"), ("drug_b", "drug_a")):
        pred = model.predict_perturbation(source=source, target=target)
        assert pred.n_obs == int((three_condition_adata.obs["condition"] == source).sum())
        assert (pred.obs["condition"] == target).all()


@pytest.mark.parametrize(("likelihood", "dispersion"), [("nb", "gene"), ("zinb", "gene-condition")])
def test_count_likelihoods(small_adata, likelihood, dispersion):
    TRVAE.setup_anndata(small_adata, condition_key="condition", layer="counts", is_count_data=True)
    model = quick_train(TRVAE(small_adata, n_hidden=16, likelihood=likelihood, dispersion=dispersion))
    assert model.module.likelihood == likelihood
    pred = model.predict_perturbation(source="control", target="stimulated", mode="mean")
    assert pred.uns["trvae_prediction"]["log1p"] is True
    # default scale: log1p of expression per 10,000 counts
    assert np.allclose(np.expm1(pred.X).sum(1), TARGET_LIBRARY_SIZE, rtol=1e-3)
    raw = model.predict_perturbation(
        source="control", target="stimulated", mode="mean", library_size="observed", log1p=False
    )
    control = small_adata[small_adata.obs["condition"] == "control"]
    np.testing.assert_allclose(raw.X.sum(1), np.asarray(control.layers["counts"]).sum(1), rtol=1e-3)
    cf = model.predict_perturbation(source="control", target="stimulated")
    assert (cf.X >= 0).all() and np.isfinite(cf.X).all()


def test_count_default_likelihood_is_nb(small_adata):
    TRVAE.setup_anndata(small_adata, condition_key="condition", layer="counts", is_count_data=True)
    assert TRVAE(small_adata).module.likelihood == "nb"


def test_query_with_new_condition(small_adata):
    reference = small_adata[small_adata.obs["cell_type"] != "type_C"].copy()
    TRVAE.setup_anndata(reference, condition_key="condition")
    ref_model = quick_train(TRVAE(reference, n_hidden=16, n_latent=4))
    query = small_adata[small_adata.obs["cell_type"] == "type_C"].copy()
    query.obs["condition"] = query.obs["condition"].astype(str).replace({"stimulated": "new_drug"})
    frozen_before = ref_model.module.z_encoder.fc_layers[0][0].weight.detach().clone()
    query_model = TRVAE.load_query_data(query, ref_model)
    assert list(query_model.conditions) == ["control", "stimulated", "new_drug"]
    assert query_model.module.n_conditions == 3
    quick_train(query_model)
    weight = query_model.module.z_encoder.fc_layers[0][0].weight.detach()
    n_genes = query.n_vars
    # gene columns stay as in the reference; only condition columns train
    torch.testing.assert_close(weight[:, :n_genes], frozen_before[:, :n_genes])
    pred = query_model.predict_perturbation(source="control", target="new_drug")
    assert pred.n_obs == int((query.obs["condition"] == "control").sum())
    assert np.isfinite(pred.X).all()


def test_query_from_saved_reference_directory(small_adata, tmp_path):
    reference = small_adata[small_adata.obs["cell_type"] != "type_C"].copy()
    TRVAE.setup_anndata(reference, condition_key="condition")
    ref_model = quick_train(TRVAE(reference, n_hidden=16, n_latent=4))
    ref_model.save(tmp_path / "reference")
    query = small_adata[small_adata.obs["cell_type"] == "type_C"].copy()
    query.obs["condition"] = query.obs["condition"].astype(str).replace({"stimulated": "new_drug"})
    query_model = TRVAE.load_query_data(query, str(tmp_path / "reference"))
    assert list(query_model.conditions) == ["control", "stimulated", "new_drug"]
    torch.testing.assert_close(query_model.module.px_head.weight.detach(), ref_model.module.px_head.weight.detach())


def test_query_gene_condition_dispersion_trains_new_columns(small_adata):
    reference = small_adata[small_adata.obs["cell_type"] != "type_C"].copy()
    TRVAE.setup_anndata(reference, condition_key="condition", layer="counts", is_count_data=True)
    ref_model = quick_train(TRVAE(reference, n_hidden=16, n_latent=4, dispersion="gene-condition"))
    query = small_adata[small_adata.obs["cell_type"] == "type_C"].copy()
    query.obs["condition"] = query.obs["condition"].astype(str).replace({"stimulated": "new_drug"})
    query_model = TRVAE.load_query_data(query, ref_model)
    start = query_model.module.px_r.detach().clone()
    torch.testing.assert_close(start[:, 2], ref_model.module.px_r.detach()[:, :2].mean(1))
    quick_train(query_model)
    end = query_model.module.px_r.detach()
    torch.testing.assert_close(end[:, :2], start[:, :2])
    assert not torch.allclose(end[:, 2], start[:, 2])


def test_errors(trained, trained_adata):
    with pytest.raises(ValueError, match="Unknown source condition 'ctrl'"):
        trained.predict_perturbation(source="ctrl", target="stimulated")
    with pytest.raises(ValueError, match="Unknown target condition 'IFN'"):
        trained.predict_perturbation(source="control", target="IFN")
    with pytest.raises(ValueError, match="same condition"):
        trained.predict_perturbation(source="control", target="control")
    only_stimulated = np.flatnonzero(trained_adata.obs["condition"] == "stimulated")
    with pytest.raises(ValueError, match="No cells of condition"):
        trained.predict_perturbation(source="control", target="stimulated", indices=only_stimulated)
    with pytest.raises(ValueError, match="log1p apply to count likelihoods only"):
        trained.predict_perturbation(source="control", target="stimulated", log1p=True)


def test_setup_errors(small_adata):
    with pytest.raises(KeyError, match="condition_key \\['treatment'\\] not found"):
        TRVAE.setup_anndata(small_adata, condition_key="treatment")
    with pytest.raises(KeyError, match="Layer 'raw'"):
        TRVAE.setup_anndata(small_adata, condition_key="condition", layer="raw")
    with pytest.raises(ValueError, match="non-integer values but was registered as raw counts"):
        TRVAE.setup_anndata(small_adata, condition_key="condition", is_count_data=True)
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    with pytest.raises(ValueError, match="needs raw counts"):
        TRVAE(small_adata, likelihood="nb")


def test_raw_counts_registered_as_log_normalised_are_refused_unless_allowed(small_adata):
    small_adata.X = small_adata.layers["counts"].copy()
    with pytest.raises(ValueError, match=r"adata\.X holds only integers up to \d+: it looks like raw counts") as info:
        TRVAE.setup_anndata(small_adata, condition_key="condition")
    message = str(info.value)
    assert "layer='counts', is_count_data=True" in message and "log-normalise them first" in message
    assert "allow_count_like=True" in message
    assert "_scvi_uuid" not in small_adata.uns  # refused before anything was registered
    TRVAE.setup_anndata(small_adata, condition_key="condition", allow_count_like=True)
    model = quick_train(TRVAE(small_adata, n_hidden=16, n_latent=4), max_epochs=1)
    # the override is part of the setup: an unregistered copy (the query path) is accepted too
    pred = model.predict_perturbation(fresh_copy(small_adata), source="control", target="stimulated")
    assert np.isfinite(pred.X).all()
