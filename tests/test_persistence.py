"""Safe loading, clear errors for broken model directories, and atomic saves (``_persistence.py``)."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from crafted_models import malicious_model_dir, truncated_copy
from make_fixtures import MODEL_DIR, PREDICTION_FILE, PREDICTION_KWARGS, tiny_adata, train_tiny_model
from scvi.model.base import BaseModelClass
from typer.testing import CliRunner

from scvi_trvae import TRVAE, ModelFileError, UnsafeModelFileError, cli
from scvi_trvae.io import _persistence as persistence
from scvi_trvae.io._history import portable_history

SYSTEM = f"{os.system.__module__}.system"  # posix.system on Linux


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "marker"
    return malicious_model_dir(MODEL_DIR, tmp_path / "malicious", marker), marker


@pytest.fixture(scope="module")
def trained():
    adata = tiny_adata()
    return train_tiny_model(adata), adata


# ---------------------------------------------------------------------------------------------- safe loading
def test_crafted_model_runs_code_when_unpickled_without_restriction(malicious):
    """The attack is real: an unrestricted torch.load (what scvi-tools 1.4 does) creates the marker."""
    directory, marker = malicious
    torch.load(directory / "model.pt", weights_only=False)
    assert marker.exists()


READERS = [
    pytest.param(lambda path: TRVAE.load(path), id="load"),
    pytest.param(lambda path: TRVAE.load(path, adata=tiny_adata()), id="load(adata)"),
    pytest.param(lambda path: TRVAE.load(path, adata=False), id="load(adata=False)"),
    pytest.param(lambda path: TRVAE.load_query_data(tiny_adata(), reference_model=path), id="load_query_data"),
    pytest.param(
        lambda path: TRVAE.load_query_data(tiny_adata(), reference_model=str(path)), id="load_query_data(str)"
    ),
    pytest.param(lambda path: TRVAE.prepare_query_anndata(tiny_adata(), path), id="prepare_query_anndata"),
    pytest.param(lambda path: TRVAE.load_registry(path), id="load_registry"),
    pytest.param(lambda path: TRVAE.view_setup_args(path), id="view_setup_args"),
]


@pytest.mark.parametrize("read", READERS)
def test_crafted_model_is_refused_and_nothing_runs(malicious, read):
    directory, marker = malicious
    with pytest.raises(UnsafeModelFileError) as info:
        read(directory)
    message = str(info.value)
    assert str(directory / "model.pt") in message and SYSTEM in message and "nothing in the file was loaded" in message
    assert not marker.exists()


def test_restricted_unpickler_refuses_even_if_the_scan_missed_it(malicious, monkeypatch):
    """Second line of defence: torch.load(weights_only=True) with the allow-list refuses the object too."""
    directory, marker = malicious
    monkeypatch.setattr(persistence, "pickle_globals", lambda path: set())
    with pytest.raises(UnsafeModelFileError, match=re.escape(f"Refusing to load {directory / 'model.pt'}")):
        TRVAE.load(directory)
    assert not marker.exists()


def test_scvi_tools_unrestricted_readers_are_never_reached(tmp_path, monkeypatch):
    """Every reading path of TRVAE avoids scvi-tools' reader and any torch.load(weights_only=False)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("scvi-tools' unrestricted reader was called")

    for module in (scvi.model.base._save_load, scvi.model.base._base_model, scvi.model.base._archesmixin):
        monkeypatch.setattr(module, "_load_saved_files", forbidden)
    torch_load = torch.load

    def weights_only_load(*args, weights_only=None, **kwargs):
        assert weights_only is True, "torch.load called without weights_only=True"
        return torch_load(*args, weights_only=weights_only, **kwargs)

    monkeypatch.setattr(torch, "load", weights_only_load)
    for read in READERS:
        read.values[0](MODEL_DIR)
    TRVAE.load_query_data(tiny_adata(), reference_model=MODEL_DIR).train(max_epochs=1, enable_progress_bar=False)


def test_committed_fixture_reads_through_the_allow_list():
    """The committed model from an earlier version holds only allow-listed types and predicts as before."""
    assert persistence.pickle_globals(MODEL_DIR / "model.pt") <= {
        name for _, name in persistence.ALLOWED_GLOBALS
    } | set(persistence.torch_default_globals())
    model = TRVAE.load(MODEL_DIR, accelerator="cpu")
    prediction = model.predict_perturbation(**PREDICTION_KWARGS).X
    np.testing.assert_allclose(prediction, np.load(PREDICTION_FILE), rtol=1e-5, atol=1e-5)


def test_model_with_numpy_settings_and_covariates_round_trips(tmp_path):
    adata = tiny_adata()
    adata.obs["donor"] = ["d1", "d2"] * (adata.n_obs // 2)
    TRVAE.setup_anndata(
        adata, condition_key="condition", layer="counts", is_count_data=True, categorical_covariate_keys=["donor"]
    )
    model = TRVAE(adata, n_hidden=np.int64(8), n_latent=2, dispersion="gene-condition", mmd_bandwidths=[0.5, 2.0])
    model.train(max_epochs=2, batch_size=16, enable_progress_bar=False, accelerator="cpu", check_val_every_n_epoch=1)
    model.save(tmp_path / "model", save_anndata=True)
    loaded = TRVAE.load(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.predict_perturbation(source="control", target="stimulated").X,
        model.predict_perturbation(source="control", target="stimulated").X,
    )
    assert set(loaded.history) == set(model.history)


def test_history_with_arrow_string_labels_saves_loadable(trained, tmp_path):
    """pandas 3 labels the history with Arrow-backed strings; saved as they are, the safe loader would refuse them."""
    model, adata = trained
    arrow = {
        key: pd.DataFrame(frame.to_numpy(), index=frame.index, columns=pd.Index(frame.columns, dtype="string[pyarrow]"))
        for key, frame in model.history_.items()
    }
    original, model.history_ = model.history_, arrow
    try:
        model.save(tmp_path / "model")
    finally:
        model.history_ = original
    assert not any("pyarrow" in name for name in persistence.pickle_globals(tmp_path / "model" / "model.pt"))
    loaded = TRVAE.load(tmp_path / "model", adata=adata)
    for key, frame in arrow.items():  # the same labels and losses, now plain strings; the model's own untouched
        assert list(loaded.history[key].columns) == list(frame.columns) and loaded.history[key].columns.dtype == object
        np.testing.assert_array_equal(loaded.history[key].to_numpy(), frame.to_numpy())
    assert model.history_ is original


def test_model_file_with_arrow_strings_is_refused_with_its_cause(trained, tmp_path):
    model, _ = trained
    directory = tmp_path / "model"
    BaseModelClass.save(model, str(directory))  # scvi-tools' own save keeps whatever the history holds
    content = torch.load(directory / "model.pt", weights_only=False)
    history = content["attr_dict"]["history_"]
    for frame in history.values():
        frame.columns = pd.Index(frame.columns, dtype="string[pyarrow]")
    torch.save(content, directory / "model.pt")
    with pytest.raises(UnsafeModelFileError, match=r"Arrow-backed strings \(pandas 3's default\) labelling"):
        TRVAE.load(directory, adata=False)


def test_cli_predict_refuses_a_crafted_model(malicious, tmp_path):
    directory, marker = malicious
    cells = tmp_path / "cells.h5ad"
    tiny_adata().write_h5ad(cells)
    args = ["predict", directory, cells, "--source", "control", "--target", "stimulated", "--out", tmp_path / "p.h5ad"]
    result = CliRunner().invoke(cli.app, [str(arg) for arg in args])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = result.stderr.strip()
    assert error.startswith("Error: ") and len(error.splitlines()) == 1
    assert f"Refusing to load {directory / 'model.pt'}" in error and SYSTEM in error
    assert not marker.exists() and not (tmp_path / "p.h5ad").exists()


# ---------------------------------------------------------------------------------------------- broken directories
@pytest.fixture(scope="module")
def scvi_model_dir(tmp_path_factory):
    adata = tiny_adata()
    scvi.model.SCVI.setup_anndata(adata, layer="counts", batch_key="condition")
    model = scvi.model.SCVI(adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    directory = tmp_path_factory.mktemp("scvi") / "model"
    model.history_ = portable_history(model.history_)  # under pandas 3 its Arrow-string history would be refused first
    model.save(directory)
    return directory


def _renamed_genes():
    adata = tiny_adata()
    adata.var_names = [f"other{i}" for i in range(adata.n_vars)]
    return adata


def _weights_only_save(directory):
    """A model.pt holding only the module's weights (``torch.save(model.module.state_dict(), ...)``)."""
    directory.mkdir()
    weights = torch.load(MODEL_DIR / "model.pt", weights_only=False)["model_state_dict"]
    torch.save(weights, directory / "model.pt")
    return directory


BROKEN = [
    pytest.param(lambda tmp, scvi_dir: (tmp / "nowhere", {}), "{dir}: the directory does not exist", id="missing dir"),
    pytest.param(
        lambda tmp, scvi_dir: (shutil.copytree(MODEL_DIR, tmp / "m", ignore=shutil.ignore_patterns("model.pt")), {}),
        "{dir} is not a saved model directory: it has no model.pt. It holds: adata.h5ad; pass the directory",
        id="missing model.pt",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (truncated_copy(MODEL_DIR, tmp / "m", 0.0), {}),
        "{dir}/model.pt is empty (0 bytes): the save that wrote it did not finish",
        id="empty model.pt",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (truncated_copy(MODEL_DIR, tmp / "m", 0.6), {}),
        "{dir}/model.pt is not a complete model file",
        id="truncated model.pt",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (_weights_only_save(tmp / "m"), {"adata": False}),
        "{dir}/model.pt is not a model saved by scvi-tools: it lacks model_state_dict, var_names, attr_dict.",
        id="bare state dict",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (scvi_dir, {"adata": False}),
        "{dir} holds a saved SCVI model, not a TRVAE model; load it with the class that saved it (SCVI.load).",
        id="saved by SCVI",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (MODEL_DIR, {"adata": _renamed_genes()}),
        "adata does not fit the model saved in {dir}: adata's genes differ from the 30 training genes: 30 missing",
        id="genes differ",
    ),
    pytest.param(
        lambda tmp, scvi_dir: (shutil.copytree(MODEL_DIR, tmp / "m", ignore=shutil.ignore_patterns("*.h5ad")), {}),
        "{dir} holds no saved data (adata.h5ad) and no adata was given. Pass the data the model was trained on",
        id="no saved AnnData",
    ),
]


@pytest.mark.parametrize(("make", "message"), BROKEN)
def test_broken_model_directory_gets_one_clear_error(tmp_path, scvi_model_dir, make, message):
    directory, kwargs = make(tmp_path, scvi_model_dir)
    with pytest.raises(ValueError, match=re.escape(message.format(dir=directory))):
        TRVAE.load(directory, **kwargs)


def test_damaged_saved_anndata_names_the_file(tmp_path):
    directory = shutil.copytree(MODEL_DIR, tmp_path / "m")
    (directory / "adata.h5ad").write_bytes(b"not hdf5")
    with pytest.raises(ModelFileError, match=re.escape(f"{directory / 'adata.h5ad'} cannot be read")):
        TRVAE.load(directory)


def test_prefixed_save_is_pointed_at(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m", prefix="ref_")
    hint = "It holds ref_model.pt: was it saved with a prefix? Pass prefix='ref_'."
    with pytest.raises(ModelFileError, match=re.escape(hint)):
        TRVAE.load(tmp_path / "m", adata=False)
    assert TRVAE.load(tmp_path / "m", adata=False, prefix="ref_").is_trained


# ---------------------------------------------------------------------------------------------- atomic saves
def _prediction(model, adata):
    return model.predict_perturbation(adata, source="control", target="stimulated").X


def test_failed_save_leaves_the_previous_model_loadable(trained, tmp_path, monkeypatch):
    model, adata = trained
    target = tmp_path / "model"
    model.save(target, save_anndata=True)
    expected = _prediction(TRVAE.load(target), adata)
    other_adata = tiny_adata()
    TRVAE.setup_anndata(other_adata, condition_key="condition")
    other = TRVAE(other_adata, n_hidden=16, n_latent=4)  # untrained: different predictions

    def disk_full(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        other.save(target, overwrite=True, save_anndata=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(_prediction(TRVAE.load(target), adata), expected)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary directory left behind


def test_overwrite_replaces_a_model_and_keeps_unrelated_files(trained, tmp_path):
    model, adata = trained
    target = tmp_path / "model"
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        target.mkdir() or model.save(target)
    (target / "notes.txt").write_text("mine")
    model.save(target, overwrite=True, save_anndata=True)
    model.save(target, overwrite=True)  # without AnnData now: the stale adata.h5ad must not stay
    assert sorted(os.listdir(target)) == ["model.pt", "notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(_prediction(TRVAE.load(target, adata=adata.copy()), adata), _prediction(model, adata))


def test_overwrite_of_a_model_only_directory_swaps_it_whole(trained, tmp_path):
    model, _ = trained
    target = tmp_path / "model"
    model.save(target, save_anndata=True)
    model.save(target, overwrite=True)
    assert sorted(os.listdir(target)) == ["model.pt"] and sorted(os.listdir(tmp_path)) == ["model"]


def test_failed_swap_puts_the_previous_model_back(trained, tmp_path, monkeypatch):
    model, _ = trained
    target = tmp_path / "model"
    model.save(target)
    real_rename = type(target).rename

    def refuse_staging(self, destination):
        if self.name.startswith(".model.saving-"):
            raise OSError(16, "Device or resource busy")
        return real_rename(self, destination)

    monkeypatch.setattr(type(target), "rename", refuse_staging)
    with pytest.raises(OSError, match="busy"):
        model.save(target, overwrite=True)
    monkeypatch.undo()
    assert TRVAE.load(target, adata=False).is_trained


def test_model_left_aside_by_a_killed_save_is_pointed_at(trained, tmp_path):
    """A process killed between the two renames of a swap leaves the old model in a hidden sibling."""
    model, _ = trained
    target = tmp_path / "model"
    model.save(target)
    aside = tmp_path / ".model.replaced-abc123"
    aside.mkdir()
    target.rename(aside / "model")
    with pytest.raises(ModelFileError, match=re.escape(f"left the previous model in {aside / 'model'}; move it back")):
        TRVAE.load(target, adata=False)
