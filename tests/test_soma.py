"""Training from a TileDB-SOMA experiment: condition-balanced minibatches, rows of X read per minibatch."""

from __future__ import annotations

import pickle
import sys

import anndata
import numpy as np
import pandas as pd
import pytest
import scvi
from make_fixtures import tiny_adata
from scvi import REGISTRY_KEYS
from scvi.model.base import UnsupervisedTrainingMixin

from scvi_trvae import TRVAE, SOMAConditionBalancedDataModule

tiledbsoma = pytest.importorskip("tiledbsoma", reason="needs tiledbsoma (pip install 'scvi-trvae[soma]')")
soma_io = pytest.importorskip("tiledbsoma.io")

# the stimulated type_A cells held out, written as tiledbsoma 2.3.0 needs it (a `not (...)` filter crashes it)
HOLD_OUT_FILTER = "cell_type != 'type_A' or condition != 'stimulated'"
TRAIN_KWARGS = {"accelerator": "cpu", "enable_progress_bar": False}


@pytest.fixture
def experiment(tmp_path):
    """A local SOMA experiment written from the tiny AnnData (log-normalised X as layer "data"), and the AnnData."""
    adata = tiny_adata()
    # X handed over as a layer: with anndata >= 0.13 tiledbsoma 2.3.0's from_anndata fails on X itself
    # (anndata lists it among the layers under the key None)
    layers = {"data": adata.X, **{name: layer for name, layer in adata.layers.items() if name is not None}}
    ingest = anndata.AnnData(obs=adata.obs, var=adata.var, layers=layers)
    try:
        uri = soma_io.from_anndata(str(tmp_path / "experiment"), ingest, measurement_name="RNA")
    except tiledbsoma.SOMAError as error:
        if int(pd.__version__.split(".")[0]) < 3:
            raise
        # tiledbsoma 2.3.0 cannot write any experiment under pandas 3 (even an obs without columns): upstream
        pytest.skip(f"tiledbsoma {tiledbsoma.__version__} cannot write a SOMA experiment under pandas 3: {error}")
    return uri, adata


def datamodule(uri: str, **kwargs) -> SOMAConditionBalancedDataModule:
    kwargs = {"measurement_name": "RNA", "layer_name": "data", "batch_size": 16, **kwargs}
    return SOMAConditionBalancedDataModule(uri, "condition", **kwargs)


def recording_reads(module: SOMAConditionBalancedDataModule) -> list[np.ndarray]:
    """Record the joinids of every read of the module's reader."""
    reads, read = [], module.reader.read

    def spy(obs_joinids):
        reads.append(np.asarray(obs_joinids))
        return read(obs_joinids)

    module.reader.read = spy
    return reads


def test_minibatches_hold_every_condition_and_every_cell_once_per_epoch(experiment):
    uri, adata = experiment
    module = datamodule(uri, train_size=1.0)
    module.setup()
    reads = recording_reads(module)
    batches = list(module.train_dataloader())
    assert len(batches) == 3
    for batch, joinids in zip(batches, reads, strict=True):
        assert np.bincount(batch["batch"].numpy().ravel(), minlength=2).tolist() == [8, 8]
        np.testing.assert_array_equal(batch["X"].numpy(), adata.X[joinids])  # the rows of those cells, in order
        codes = adata.obs["condition"].cat.codes.to_numpy()[joinids]
        np.testing.assert_array_equal(batch["batch"].numpy().ravel(), codes)
    np.testing.assert_array_equal(np.sort(np.concatenate(reads)), np.arange(adata.n_obs))


def test_categorical_covariates_reach_the_minibatches_and_the_model(experiment):
    uri, adata = experiment
    module = datamodule(uri, train_size=1.0, categorical_covariate_keys=["cell_type"])
    module.setup()
    reads = recording_reads(module)
    batch = next(iter(module.train_dataloader()))
    cell_types = adata.obs["cell_type"].cat.codes.to_numpy()[reads[0]]
    np.testing.assert_array_equal(batch[REGISTRY_KEYS.CAT_COVS_KEY].numpy().ravel(), cell_types)
    model = TRVAE(registry=module.registry, n_hidden=8)
    model.train(max_epochs=1, datamodule=module, **TRAIN_KWARGS)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()


def test_held_out_cells_are_never_read_and_the_smaller_condition_is_revisited(experiment):
    uri, adata = experiment
    module = datamodule(uri, train_size=1.0, obs_value_filter=HOLD_OUT_FILTER)
    held_out = np.flatnonzero((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated"))
    assert module.n_obs == adata.n_obs - len(held_out)
    module.setup()
    reads = recording_reads(module)
    for batch in module.train_dataloader():
        assert np.bincount(batch["batch"].numpy().ravel(), minlength=2).tolist() == [8, 8]
    seen = np.bincount(np.concatenate(reads), minlength=adata.n_obs)
    stimulated = (adata.obs["condition"] == "stimulated").to_numpy()
    assert (seen[held_out] == 0).all()
    assert (seen[~stimulated] == 1).all()  # 24 control cells, 3 minibatches of 8
    assert (np.delete(seen, held_out)[np.delete(stimulated, held_out)] == 2).all()  # 12 stimulated cells, 24 draws


def test_training_from_soma_matches_in_memory_training_and_predicts(experiment):
    uri, adata = experiment
    histories, predictions = [], []
    for source in ("memory", "soma"):
        scvi.settings.seed = 0
        if source == "memory":
            TRVAE.setup_anndata(adata, condition_key="condition")
            model = TRVAE(adata, n_hidden=8)
            model.train(max_epochs=2, batch_size=16, **TRAIN_KWARGS)
        else:
            module = datamodule(uri)
            model = TRVAE(registry=module.registry, n_hidden=8)
            model.train(max_epochs=2, datamodule=module, **TRAIN_KWARGS)
            assert model.adata is None and list(model.var_names_) == list(adata.var_names)
        histories.append(model.history["train_loss"].to_numpy(dtype=float).ravel())
        predictions.append(model.predict_perturbation(adata, source="control", target="stimulated").X)
    assert np.isfinite(histories[1]).all() and len(histories[1]) == 2
    # same split, same minibatches, same rows: the same training
    np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-4, atol=1e-5)
    # the cells to predict as the AnnData of a SOMA query
    with tiledbsoma.Experiment.open(uri) as opened:
        query = tiledbsoma.AxisQuery(value_filter="cell_type == 'type_A' and condition == 'control'")
        control_a = opened.axis_query("RNA", obs_query=query).to_anndata(X_name="data")
    predicted = model.predict_perturbation(control_a, source="control", target="stimulated")
    control = adata.obs["condition"] == "control"
    in_type_a = (adata.obs["cell_type"] == "type_A")[control].to_numpy()
    np.testing.assert_allclose(predicted.X, predictions[1][in_type_a], rtol=1e-4, atol=1e-5)


def test_training_reads_x_one_minibatch_at_a_time(experiment, monkeypatch):
    uri, _ = experiment
    module = datamodule(uri, obs_value_filter=HOLD_OUT_FILTER)
    assert module.adata_manager.adata.X.nnz == 0  # the registered AnnData holds no expression
    rows_per_read = []
    read = tiledbsoma.SparseNDArray.read

    def spy(self, coords=(), *args, **kwargs):
        rows_per_read.append(len(coords[0]) if len(coords) else None)
        return read(self, coords, *args, **kwargs)

    monkeypatch.setattr(tiledbsoma.SparseNDArray, "read", spy)
    model = TRVAE(registry=module.registry, n_hidden=8)
    model.train(max_epochs=2, datamodule=module, check_val_every_n_epoch=1, **TRAIN_KWARGS)
    n_train, n_val = len(module.train_idx), len(module.val_idx)
    steps_per_epoch = int(np.ceil(n_train / 16)) + int(np.ceil(n_val / 16))
    # one read per training and validation minibatch, each of at most batch_size distinct cells
    assert n_val > 0 and len(rows_per_read) == 2 * steps_per_epoch
    assert None not in rows_per_read and max(rows_per_read) <= 16


def test_default_epochs_count_the_datamodule_cells_and_minibatches(experiment, monkeypatch):
    module = datamodule(experiment[0], obs_value_filter=HOLD_OUT_FILTER, batch_size=4)
    model = TRVAE(registry=module.registry, n_hidden=8)
    passed = {}
    monkeypatch.setattr(UnsupervisedTrainingMixin, "train", lambda self, **kwargs: passed.update(kwargs))
    model.train(datamodule=module)
    assert passed["max_epochs"] == 167  # 1,500 steps / 9 minibatches of 4 of the 36 selected cells


def test_a_datamodule_of_other_genes_or_conditions_is_refused(experiment):
    uri, _ = experiment
    model = TRVAE(registry=datamodule(uri).registry, n_hidden=8)
    with pytest.raises(ValueError, match=r"datamodule's genes differ from the model's"):
        model.train(max_epochs=1, datamodule=datamodule(uri, var_value_filter="response_gene == True"))
    by_cell_type = SOMAConditionBalancedDataModule(uri, "cell_type", measurement_name="RNA", layer_name="data")
    with pytest.raises(ValueError, match=r"datamodule's conditions differ"):
        model.train(max_epochs=1, datamodule=by_cell_type)


def test_gene_filter_selects_the_registered_genes(experiment):
    uri, adata = experiment
    module = datamodule(uri, var_value_filter="response_gene == True")
    genes = adata.var_names[adata.var["response_gene"].to_numpy()]
    assert module.n_vars == len(genes) == 6
    assert list(TRVAE(registry=module.registry, n_hidden=8).var_names_) == list(genes)
    np.testing.assert_array_equal(module.reader.read([5, 2, 5]), adata[[5, 2, 5], genes].X)


def test_a_pickled_reader_reads_the_same_rows(experiment):
    uri, adata = experiment
    reader = datamodule(uri).reader
    reader.read([0])  # opens the array, which must not travel with the pickle
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reader)).read([3, 1, 3]), adata.X[[3, 1, 3]])


def test_dataloader_workers_are_spawned_not_forked(experiment):
    module = datamodule(experiment[0], train_size=1.0, num_workers=1)
    module.setup()
    loader = module.train_dataloader()
    assert loader.multiprocessing_context.get_start_method() == "spawn" and loader.persistent_workers


def test_a_model_trained_from_soma_saves_and_loads(experiment, tmp_path):
    uri, adata = experiment
    module = datamodule(uri)
    model = TRVAE(registry=module.registry, n_hidden=8)
    model.train(max_epochs=1, datamodule=module, **TRAIN_KWARGS)
    model.save(tmp_path / "model")
    loaded = TRVAE.load(tmp_path / "model", adata=adata, accelerator="cpu")
    expected = model.predict_perturbation(adata, source="control", target="stimulated").X
    np.testing.assert_allclose(loaded.predict_perturbation(source="control", target="stimulated").X, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"measurement_name": "ATAC"}, KeyError, r"Measurement 'ATAC' is not in the SOMA experiment"),
        ({"layer_name": "raw"}, KeyError, r"X layer 'raw' is not in measurement 'RNA' \(layers: \['counts', 'data'\]"),
        ({"categorical_covariate_keys": ["donor"]}, KeyError, r"\['donor'\] not found in the SOMA obs"),
        ({"var_names_column": "gene_symbol"}, KeyError, r"\['gene_symbol'\] not found in the SOMA var"),
        ({"obs_value_filter": "cell_type == 'type_C'"}, ValueError, r"No cells in the SOMA obs pass"),
        ({"obs_value_filter": "condition == 'control'"}, ValueError, r"at least two"),
        ({"is_count_data": True}, ValueError, r"ms\['RNA'\]\.X\['data'\] has non-integer values"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(experiment, kwargs, error, message):
    with pytest.raises(error, match=message):
        datamodule(experiment[0], **kwargs)


def test_a_missing_condition_column_is_named(experiment):
    with pytest.raises(KeyError, match=r"\['treatment'\] not found in the SOMA obs"):
        SOMAConditionBalancedDataModule(experiment[0], "treatment", measurement_name="RNA", layer_name="data")


def test_count_layer_passes_the_count_check(experiment):
    module = datamodule(experiment[0], layer_name="counts", is_count_data=True)
    assert TRVAE(registry=module.registry, n_hidden=8).module.likelihood == "nb"


def test_without_tiledbsoma_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiledbsoma", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'scvi-trvae\[soma\]'"):
        SOMAConditionBalancedDataModule("any.soma", "condition", measurement_name="RNA", layer_name="data")
