"""Bad input, training health and reproducibility of TRVAE.

Every refusal is checked for its exception type and for a message that names the problem. Cases
already covered by ``test_model.py`` (unknown / equal source and target, no source cells, a
missing condition column or layer, fractional counts) are not repeated here; that nothing in the
user's AnnData changes is ``test_no_mutation.py``'s.
"""

from __future__ import annotations

import re

import anndata
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scvi
import torch
from make_fixtures import INFO_FILE, MODEL_DIR, PREDICTION_FILE, PREDICTION_KWARGS, tiny_adata, train_tiny_model

from scvi_trvae import TRVAE
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.model import TRVAEModule
from scvi_trvae.model._training_plan import NonFiniteLossError

PREDICT = {"source": "control", "target": "stimulated"}
FAST = {"max_epochs": 1, "batch_size": 16, "enable_progress_bar": False, "accelerator": "cpu"}


# ---------------------------------------------------------------------------------------------- helpers
def _strip_registration(adata: anndata.AnnData) -> anndata.AnnData:
    adata = adata.copy()
    adata.obs = adata.obs.drop(columns=[c for c in adata.obs if str(c).startswith("_scvi")])
    for key in [k for k in adata.uns if k.startswith("_scvi")]:
        del adata.uns[key]
    return adata


# ---------------------------------------------------------------------------------------------- bad input
def test_never_set_up_adata_is_refused_with_the_setup_method_named(tiny_fresh):
    with pytest.raises(ValueError, match=re.escape("TRVAE.setup_anndata")):
        TRVAE(tiny_fresh)


def test_missing_covariate_key(tiny_fresh):
    with pytest.raises(KeyError, match=re.escape("categorical_covariate_keys ['donor'] not found in adata.obs")):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition", categorical_covariate_keys=["donor"])


def test_single_condition(tiny_fresh):
    tiny_fresh.obs["condition"] = "control"
    with pytest.raises(ValueError, match=re.escape("holds a single condition (['control']); trVAE needs at least two")):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition")


def test_single_condition_with_empty_second_category(tiny_fresh):
    tiny_fresh.obs["condition"] = pd.Categorical(["control"] * tiny_fresh.n_obs, categories=["control", "stimulated"])
    with pytest.raises(ValueError, match="single condition"):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition")


def test_missing_condition_values(tiny_fresh):
    tiny_fresh.obs["condition"] = tiny_fresh.obs["condition"].astype(object)
    tiny_fresh.obs.iloc[:3, tiny_fresh.obs.columns.get_loc("condition")] = np.nan
    with pytest.raises(ValueError, match=re.escape("adata.obs['condition'] has 3 missing values")):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition")


def test_category_without_cells_warns_trains_and_refuses_as_source(tiny_fresh):
    tiny_fresh.obs["condition"] = tiny_fresh.obs["condition"].cat.add_categories(["ghost"])
    with pytest.warns(UserWarning, match=re.escape("Categories ['ghost'] of adata.obs['condition'] have no cells")):
        model = train_tiny_model(tiny_fresh)
    assert list(model.conditions) == ["control", "stimulated", "ghost"]
    assert np.isfinite(model.predict_perturbation(**PREDICT).X).all()
    with pytest.raises(ValueError, match=re.escape("No cells of condition(s) ['ghost']")):
        model.predict_perturbation(source="ghost", target="control")


@pytest.mark.parametrize("layer", [None, "counts"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tiny_fresh, layer, bad):
    matrix = tiny_fresh.X if layer is None else tiny_fresh.layers[layer]
    matrix[2, 3] = bad
    where = "adata.X" if layer is None else "adata.layers['counts']"
    with pytest.raises(ValueError, match=re.escape(f"{where} contains 1+ non-finite values (NaN or inf)")):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition", layer=layer, is_count_data=layer is not None)


def test_non_finite_values_in_sparse_matrix(tiny_fresh):
    tiny_fresh.X[0, 0] = np.nan
    tiny_fresh.X = sp.csr_matrix(tiny_fresh.X)
    with pytest.raises(ValueError, match="non-finite values"):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition")


def test_negative_counts(tiny_fresh):
    tiny_fresh.layers["counts"][5, 1] = -2
    with pytest.raises(ValueError, match=re.escape("adata.layers['counts'] has negative values (min -2)")):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition", layer="counts", is_count_data=True)


def test_counts_registered_as_log_normalised_refused(tiny_fresh):
    with pytest.raises(ValueError, match=r"holds only integers up to .*: it looks like raw counts"):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition", layer="counts")


def test_values_above_log_scale_warn(tiny_fresh):
    tiny_fresh.X = tiny_fresh.X * 30.5
    with pytest.warns(UserWarning, match="above the usual range of log-normalised expression"):
        TRVAE.setup_anndata(tiny_fresh, condition_key="condition")


def test_mse_likelihood_on_counts_refused(tiny_fresh):
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition", layer="counts", is_count_data=True)
    with pytest.raises(ValueError, match="likelihood='mse' is for log-normalised data"):
        TRVAE(tiny_fresh, likelihood="mse")


@pytest.mark.parametrize(("cells", "genes"), [(0, 30), (48, 0)])
def test_empty_anndata(tiny_fresh, cells, genes):
    with pytest.raises(ValueError, match=re.escape(f"adata is empty ({cells} cells x {genes} genes)")):
        TRVAE.setup_anndata(tiny_fresh[:cells, :genes].copy(), condition_key="condition")


def test_empty_anndata_at_predict_time(tiny_trained_pair, tiny_fresh):
    model, _ = tiny_trained_pair
    with pytest.raises(ValueError, match=re.escape("adata is empty (0 cells x 30 genes)")):
        model.predict_perturbation(tiny_fresh[:0].copy(), **PREDICT)


def _reordered(adata):
    return adata[:, adata.var_names[::-1]].copy()


def _renamed(adata):
    adata = adata.copy()
    adata.var_names = [f"other_{i}" for i in range(adata.n_vars)]
    return adata


def _subset(adata):
    return adata[:, :20].copy()


GENE_MISMATCHES = [
    pytest.param(_reordered, "adata has the training genes in a different order", id="order"),
    pytest.param(_renamed, "adata's genes differ from the 30 training genes: 30 missing", id="names"),
    pytest.param(_subset, "adata's genes differ from the 30 training genes: 10 missing", id="subset"),
]


@pytest.mark.parametrize(("change", "message"), GENE_MISMATCHES)
def test_predict_time_genes_must_match(tiny_trained_pair, tiny_fresh, change, message):
    model, _ = tiny_trained_pair
    with pytest.raises(ValueError, match=re.escape(message)):
        model.predict_perturbation(change(tiny_fresh), **PREDICT)
    with pytest.raises(ValueError, match=re.escape(message)):
        model.get_mmd_representation(change(tiny_fresh))
    with pytest.raises(ValueError, match=re.escape(message)):
        TRVAE.load_query_data(change(tiny_fresh), model)


def test_load_with_reordered_genes_is_refused(tiny_trained_pair, tiny_fresh, tmp_path):
    model, _ = tiny_trained_pair
    model.save(tmp_path / "model")
    with pytest.raises(ValueError, match="adata has the training genes in a different order"):
        TRVAE.load(tmp_path / "model", adata=_reordered(tiny_fresh), accelerator="cpu")


def test_predict_time_values_checked(tiny_trained_pair, tiny_fresh):
    model, _ = tiny_trained_pair
    tiny_fresh.X[1, 1] = np.nan
    with pytest.raises(ValueError, match=re.escape("adata.X contains 1+ non-finite values")):
        model.predict_perturbation(tiny_fresh, **PREDICT)


def test_unregistered_anndata_is_scanned_only_in_the_selected_cells(tiny_trained_pair, tiny_fresh):
    model, _ = tiny_trained_pair
    stimulated = np.flatnonzero(tiny_fresh.obs["condition"] == "stimulated")
    tiny_fresh.X[stimulated[0], 1] = np.nan  # outside the control cells that a control -> stimulated prediction reads
    assert np.isfinite(model.predict_perturbation(tiny_fresh, **PREDICT).X).all()
    assert np.isfinite(model.get_mmd_representation(tiny_fresh, indices=stimulated[1:])).all()
    with pytest.raises(ValueError, match=re.escape("adata.X contains 1+ non-finite values")):
        model.get_mmd_representation(tiny_fresh, indices=stimulated)


def test_count_model_refuses_log_data_and_missing_layer_at_predict_time(tiny_fresh):
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition", layer="counts", is_count_data=True)
    model = TRVAE(adata, n_hidden=8, n_latent=2)
    model.train(**FAST)
    tiny_fresh.layers["counts"] = tiny_fresh.X.copy()
    with pytest.raises(ValueError, match=re.escape("adata.layers['counts'] has non-integer values")):
        model.predict_perturbation(tiny_fresh, **PREDICT)
    del tiny_fresh.layers["counts"]
    with pytest.raises(KeyError, match=re.escape("Layer 'counts' is not in adata.layers")):
        model.predict_perturbation(tiny_fresh, **PREDICT)


def test_covariates_at_predict_time(tiny_fresh):
    adata = tiny_adata()
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2")
    TRVAE.setup_anndata(adata, condition_key="condition", categorical_covariate_keys=["donor"])
    model = TRVAE(adata, n_hidden=8, n_latent=2)
    model.train(**FAST)
    with pytest.raises(KeyError, match=re.escape("categorical_covariate_keys of the model ['donor'] not found")):
        model.predict_perturbation(tiny_fresh, **PREDICT)
    tiny_fresh.obs["donor"] = "d3"
    with pytest.raises(ValueError, match=re.escape('Making .obs["donor"] categorical failed')):
        model.predict_perturbation(tiny_fresh, **PREDICT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mmd_weight": -1.0}, "mmd_weight must be >= 0, got -1.0"),
        ({"kl_weight": float("nan")}, "kl_weight must be a finite number >= 0, got nan"),
        ({"mmd_weight": float("inf")}, "mmd_weight must be a finite number >= 0, got inf"),
        ({"mmd_weight": "100"}, "mmd_weight must be a finite number >= 0, got '100'"),
        # one route per weight: plan_kwargs cannot silently override (and skip the checks of) the arguments
        ({"plan_kwargs": {"mmd_weight": 5.0}}, "plan_kwargs['mmd_weight'] would override train's mmd_weight"),
        ({"plan_kwargs": {"max_kl_weight": 1.0}}, "plan_kwargs['max_kl_weight'] would override train's kl_weight"),
        ({"plan_kwargs": {"kl_weight": 1.0}}, "plan_kwargs['kl_weight'] would override train's kl_weight"),
        (
            {"plan_kwargs": {"min_kl_weight": -1.0, "n_epochs_kl_warmup": 2}},
            "plan_kwargs['min_kl_weight'] must be >= 0, got -1.0",
        ),
    ],
)
def test_loss_weights_checked(tiny_trained_pair, kwargs, message):
    model, _ = tiny_trained_pair
    with pytest.raises(ValueError, match=re.escape(message)):
        model.train(**FAST, **kwargs)


def test_batch_smaller_than_conditions_refused(tiny_fresh):
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    with pytest.raises(ValueError, match=re.escape("batch_size=1 is smaller than the 2 conditions to balance")):
        TRVAE(tiny_fresh, n_hidden=8).train(**{**FAST, "batch_size": 1})


def _as_format(adata: anndata.AnnData, fmt: str, tmp_path) -> anndata.AnnData:
    if fmt == "dense":
        return adata
    if fmt in ("csr", "csc"):
        adata.X = getattr(sp, f"{fmt}_matrix")(adata.X)
        return adata
    if fmt == "backed-csr":
        adata.X = sp.csr_matrix(adata.X)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{fmt}.h5ad"
    adata.write_h5ad(path)
    return anndata.read_h5ad(path, backed="r")


@pytest.mark.parametrize("fmt", ["csr", "csc", "backed-dense", "backed-csr"])
def test_matrix_formats_train_and_predict(tiny_trained_pair, tmp_path, fmt):
    reference_model, _ = tiny_trained_pair
    expected = reference_model.predict_perturbation(**PREDICT).X
    adata = _as_format(tiny_adata(), fmt, tmp_path)
    assert adata.isbacked == fmt.startswith("backed")
    try:
        model = train_tiny_model(adata)
        prediction = model.predict_perturbation(**PREDICT)
        control = adata.obs_names[adata.obs["condition"] == "control"]
        assert list(prediction.obs_names) == list(control) and np.isfinite(prediction.X).all()
        if not adata.isbacked:  # a backed file is read in sorted row order, which changes the random draws
            np.testing.assert_allclose(prediction.X, expected, rtol=1e-5, atol=1e-5)
        # a model trained on dense data predicts from an unregistered AnnData in this format
        query = _as_format(tiny_adata(), fmt, tmp_path / "query")
        np.testing.assert_allclose(reference_model.predict_perturbation(query, **PREDICT).X, expected, atol=1e-5)
        if query.isbacked:
            query.file.close()
    finally:
        if adata.isbacked:
            adata.file.close()


def test_backed_anndata_with_unsorted_indices_keeps_cells_and_data_together(tmp_path):
    adata = _as_format(tiny_adata(), "backed-dense", tmp_path)
    try:
        model = train_tiny_model(adata)
        in_memory = _strip_registration(adata.to_memory())
        unsorted = model.predict_perturbation(indices=[30, 5, 17, 2], **PREDICT)
        # rows of a backed file are read in increasing order; the prediction follows that order
        assert list(unsorted.obs_names) == list(
            in_memory.obs_names[[2, 5, 17, 30]][in_memory.obs["condition"].iloc[[2, 5, 17, 30]] == "control"]
        )
        np.testing.assert_allclose(
            unsorted.X, model.predict_perturbation(in_memory[[2, 5, 17, 30]].copy(), **PREDICT).X, atol=1e-6
        )
        np.testing.assert_allclose(
            model.get_mmd_representation(indices=[3, 1]),
            model.get_mmd_representation(in_memory[[1, 3]].copy()),
            atol=1e-6,
        )
    finally:
        adata.file.close()


# ---------------------------------------------------------------------------------------------- training health
def _nan_mmd(stage: str):
    original = TRVAEModule.mmd_penalty

    def penalty(self, *args, **kwargs):
        value = original(self, *args, **kwargs)
        return value * float("nan") if (stage == "training") == self.training else value

    return penalty


def test_non_finite_mmd_in_training_stops_with_term_epoch_and_step(tiny_fresh, monkeypatch):
    monkeypatch.setattr(TRVAEModule, "mmd_penalty", _nan_mmd("training"))
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    model = TRVAE(tiny_fresh, n_hidden=8)
    with pytest.raises(
        NonFiniteLossError, match=r"Non-finite MMD term \(MMD=nan\) at epoch 1, training minibatch 1"
    ) as info:
        model.train(**FAST)
    assert isinstance(info.value, FloatingPointError)
    assert "global step 0" in str(info.value) and "lower mmd_weight" in str(info.value)
    assert not model.is_trained


def test_non_finite_mmd_in_validation_is_reported_as_validation(tiny_fresh, monkeypatch):
    monkeypatch.setattr(TRVAEModule, "mmd_penalty", _nan_mmd("validation"))
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    model = TRVAE(tiny_fresh, n_hidden=8)
    with pytest.raises(NonFiniteLossError, match=r"Non-finite MMD term .* at epoch 2, validation minibatch 1"):
        model.train(**{**FAST, "max_epochs": 3}, train_size=0.75, check_val_every_n_epoch=2)


def test_diverging_learning_rate_is_named(tiny_fresh):
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    model = TRVAE(tiny_fresh, n_hidden=8)
    with pytest.raises(NonFiniteLossError) as info:
        model.train(**FAST, plan_kwargs={"lr": 1e30})
    message = str(info.value)
    assert re.search(r"Non-finite .*(reconstruction|KL|MMD).* at epoch 1, training minibatch \d+", message)
    assert "diverged" in message and "lower the learning rate" in message


def test_overflowing_weighted_sum_is_named(tiny_fresh):
    TRVAE.setup_anndata(tiny_fresh, condition_key="condition")
    model = TRVAE(tiny_fresh, n_hidden=8)
    with pytest.raises(
        NonFiniteLossError, match=r"Non-finite total loss \(inf\) at epoch 1, training minibatch 1"
    ) as info:
        model.train(**FAST, mmd_weight=1e39)
    assert "although its terms are finite" in str(info.value) and "lower mmd_weight" in str(info.value)


def _sparse_counts(adata: anndata.AnnData) -> anndata.AnnData:
    rng = np.random.default_rng(0)
    counts = adata.layers["counts"].copy()
    counts[rng.random(counts.shape) < 0.95] = 0
    counts[:, :10] = 0  # genes never detected
    counts[:2] = 0  # cells without counts
    adata.layers["counts"] = sp.csr_matrix(counts)
    return adata


EXTREME = [
    pytest.param(tiny_adata, {}, {"mmd_weight": 0.0}, id="mmd_weight-0"),
    pytest.param(tiny_adata, {}, {"mmd_weight": 1e4}, id="mmd_weight-1e4"),
    pytest.param(tiny_adata, {}, {"batch_size": 4}, id="two-cells-per-condition"),
    pytest.param(
        lambda: synthetic_perturbation(n_cell_types=1, n_genes=30, n_cells_per_group=24, n_response_genes=6,
                                       n_marker_genes=5, seed=4),
        {}, {}, id="one-cell-type",
    ),
    pytest.param(
        lambda: synthetic_perturbation(n_cell_types=1, n_genes=40, conditions=tuple(f"c{i:02d}" for i in range(11)),
                                       n_cells_per_group=6, n_response_genes=3, n_marker_genes=5, seed=5),
        {}, {"batch_size": 22}, id="11-conditions",
    ),
    pytest.param(
        lambda: _sparse_counts(tiny_adata()),
        {"layer": "counts", "is_count_data": True}, {"mmd_weight": 1e3}, id="very-sparse-counts",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("make", "setup", "train"), EXTREME)
def test_extreme_but_legal_settings_train_without_nan(make, setup, train):
    adata = make()
    TRVAE.setup_anndata(adata, condition_key="condition", **setup)
    model = TRVAE(adata, n_hidden=16, n_latent=4)
    model.train(**{**FAST, "max_epochs": 2, **train})
    for key in ("train_loss", "mmd_train", "reconstruction_loss_train", "kl_local_train"):
        assert np.isfinite(model.history[key].to_numpy(dtype=float)).all(), key
    source, target = model.conditions[0], model.conditions[-1]
    prediction = model.predict_perturbation(source=source, target=target)
    assert prediction.n_obs == int((adata.obs["condition"] == source).sum())
    assert np.isfinite(prediction.X).all()
    assert np.isfinite(model.get_latent_representation()).all()


# ---------------------------------------------------------------------------------------------- reproducibility
def test_same_seed_same_predictions(tiny_trained_pair):
    model, adata = tiny_trained_pair
    again = train_tiny_model(tiny_adata())
    expected = model.predict_perturbation(**PREDICT)
    np.testing.assert_array_equal(again.predict_perturbation(**PREDICT).X, expected.X)
    np.testing.assert_array_equal(again.get_latent_representation(), model.get_latent_representation(adata))
    scvi.settings.seed = 1
    other = TRVAE(tiny_adata_registered(), n_hidden=16, n_latent=4)
    other.train(**FAST)
    assert not np.array_equal(other.predict_perturbation(**PREDICT).X, expected.X)


def tiny_adata_registered() -> anndata.AnnData:
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    return adata


@pytest.mark.parametrize("save_anndata", [False, True])
def test_save_load_identical_predictions(tiny_trained_pair, tmp_path, save_anndata):
    model, adata = tiny_trained_pair
    expected = model.predict_perturbation(**PREDICT).X
    model.save(tmp_path / "model", save_anndata=save_anndata)
    if save_anndata:
        loaded = TRVAE.load(tmp_path / "model", accelerator="cpu")
        np.testing.assert_array_equal(loaded.predict_perturbation(**PREDICT).X, expected)
    loaded = TRVAE.load(tmp_path / "model", adata=_strip_registration(adata), accelerator="cpu")
    np.testing.assert_array_equal(loaded.predict_perturbation(**PREDICT).X, expected)
    np.testing.assert_array_equal(loaded.get_mmd_representation(), model.get_mmd_representation(adata))


def _tag_as_cuda(storage):
    return "cuda:0" if storage.device.type == "cpu" else None


def _never_restore(storage, location):
    return None


def test_model_saved_on_another_device_loads_onto_cpu(tiny_trained_pair, tmp_path):
    """Re-save the weights tagged as CUDA tensors, as a GPU-trained model writes them, then load on CPU."""
    model, _ = tiny_trained_pair
    expected = model.predict_perturbation(**PREDICT).X
    model.save(tmp_path / "model", save_anndata=True)
    path = tmp_path / "model" / "model.pt"
    saved = torch.load(path, map_location="cpu", weights_only=False)
    entry = (1, _tag_as_cuda, _never_restore)
    torch.serialization._package_registry.insert(0, entry)
    try:
        torch.save(saved, path)
    finally:
        torch.serialization._package_registry.remove(entry)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=False)
    loaded = TRVAE.load(tmp_path / "model", accelerator="cpu")
    assert loaded.device == torch.device("cpu")
    np.testing.assert_array_equal(loaded.predict_perturbation(**PREDICT).X, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_trained_on_gpu_loads_onto_cpu(tmp_path):
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, n_hidden=16, n_latent=4)
    model.train(**{**FAST, "accelerator": "gpu"})
    expected = model.predict_perturbation(**PREDICT).X
    model.save(tmp_path / "model", save_anndata=True)
    loaded = TRVAE.load(tmp_path / "model", accelerator="cpu")
    np.testing.assert_allclose(loaded.predict_perturbation(**PREDICT).X, expected, rtol=1e-4, atol=1e-4)


def test_committed_saved_model_keeps_loading():
    """A model saved by an earlier version (``tests/make_fixtures.py``) loads and predicts as it did."""
    assert INFO_FILE.exists() and PREDICTION_FILE.exists(), "run `python tests/make_fixtures.py`"
    model = TRVAE.load(MODEL_DIR, accelerator="cpu")
    assert list(model.conditions) == ["control", "stimulated"]
    prediction = model.predict_perturbation(**PREDICTION_KWARGS)
    np.testing.assert_allclose(prediction.X, np.load(PREDICTION_FILE), rtol=1e-5, atol=1e-5)
    # and onto an AnnData supplied by the user (unregistered), as after reading it from disk
    user_adata = _strip_registration(model.adata)
    again = TRVAE.load(MODEL_DIR, adata=user_adata, accelerator="cpu")
    np.testing.assert_allclose(again.predict_perturbation(**PREDICTION_KWARGS).X, prediction.X, rtol=1e-6, atol=1e-6)
