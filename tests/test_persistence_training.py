"""Checkpointed training that resumes exactly, and a usable model after Ctrl-C (``_checkpoint.py``)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import scvi
import torch
from lightning.pytorch.callbacks import Callback
from make_fixtures import tiny_adata

from scvi_trvae import TRVAE, UnsafeModelFileError
from scvi_trvae.io import TrainingCheckpoint

EPOCHS = 6
TRAIN = {"batch_size": 16, "enable_progress_bar": False, "accelerator": "cpu"}
PREDICT = {"source": "control", "target": "stimulated"}


class CtrlCAt(Callback):
    """Raise KeyboardInterrupt (what Ctrl-C does) at a given minibatch of a given epoch."""

    def __init__(self, epoch: int, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


def _fresh_model(**train_kwargs) -> tuple[TRVAE, object]:
    """A new session: same seed, same data, same settings, a freshly initialised model."""
    scvi.settings.seed = 0
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    return TRVAE(adata, n_hidden=16, n_latent=4), adata


def _trained(max_epochs=EPOCHS, callbacks=(), ckpt_path=None, **kwargs) -> TRVAE:
    model, _ = _fresh_model()
    model.train(max_epochs=max_epochs, callbacks=list(callbacks), ckpt_path=ckpt_path, **TRAIN, **kwargs)
    return model


def _losses(model) -> dict[str, np.ndarray]:
    return {key: frame.to_numpy(dtype=float).ravel() for key, frame in model.history.items() if key.endswith("_train")}


@pytest.fixture(scope="module")
def straight():
    """Six epochs without interruption (and without any checkpoint)."""
    return _trained()


@pytest.mark.parametrize(
    "validation", [pytest.param({}, id="no validation"), pytest.param({"check_val_every_n_epoch": 1}, id="validation")]
)
def test_three_epochs_then_resume_equals_six_straight(tmp_path, validation):
    kwargs = {"train_size": 0.8, **validation}
    reference = _trained(**kwargs)
    first = TrainingCheckpoint(tmp_path / "checkpoint", every_n_epochs=1)
    assert first.resume_path is None  # nothing to resume: the same call starts from scratch
    _trained(max_epochs=3, callbacks=[first], **kwargs)
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint", every_n_epochs=1)
    resumed = _trained(callbacks=[checkpoint], ckpt_path=checkpoint.resume_path, **kwargs)
    assert set(_losses(resumed)) == set(_losses(reference))
    for key, values in _losses(reference).items():
        assert len(values) == EPOCHS
        np.testing.assert_allclose(_losses(resumed)[key], values, rtol=1e-6, err_msg=key)
    if validation:
        np.testing.assert_allclose(
            resumed.history["validation_loss"].to_numpy(dtype=float),
            reference.history["validation_loss"].to_numpy(dtype=float),
            rtol=1e-6,
        )
    np.testing.assert_allclose(
        resumed.predict_perturbation(**PREDICT).X, reference.predict_perturbation(**PREDICT).X, rtol=1e-5, atol=1e-6
    )


def test_checkpointing_does_not_change_training(straight, tmp_path):
    checkpointed = _trained(callbacks=[TrainingCheckpoint(tmp_path / "checkpoint", every_n_epochs=2)])
    for key, values in _losses(straight).items():
        np.testing.assert_array_equal(_losses(checkpointed)[key], values, err_msg=key)


def test_ctrl_c_keeps_a_usable_model_and_resume_finishes_the_run(straight, tmp_path):
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint", every_n_epochs=1)
    model, adata = _fresh_model()
    handler = signal.getsignal(signal.SIGINT)
    with pytest.warns(UserWarning, match=r"interrupted \(Ctrl-C\) during epoch 4 of 6: it keeps its weights") as info:
        result = model.train(max_epochs=EPOCHS, callbacks=[checkpoint, CtrlCAt(epoch=3)], **TRAIN)
    messages = [str(warning.message) for warning in info if "interrupted" in str(warning.message)]
    assert result is None and len(messages) == 1 and "ckpt_path=checkpoint.resume_path" in messages[0]
    assert signal.getsignal(signal.SIGINT) == handler  # Lightning had set Ctrl-C to be ignored
    # usable: trained, in evaluation mode, predicts, saves and loads, history of the 3 complete epochs
    assert model.is_trained and not model.module.training and len(model.history["train_loss"]) == 3
    prediction = model.predict_perturbation(**PREDICT).X
    model.save(tmp_path / "interrupted")
    np.testing.assert_array_equal(
        TRVAE.load(tmp_path / "interrupted", adata=adata).predict_perturbation(**PREDICT).X, prediction
    )
    # the checkpoint itself is a saved model (after epoch 3)
    at_checkpoint = TRVAE.load(tmp_path / "checkpoint", adata=False)
    assert at_checkpoint.is_trained and len(at_checkpoint.history["train_loss"]) == 3
    # a new session resumes from it to the requested 6 epochs, as if never interrupted
    resumed = _trained(callbacks=[checkpoint], ckpt_path=checkpoint.resume_path)
    for key, values in _losses(straight).items():
        np.testing.assert_allclose(_losses(resumed)[key], values, rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(
        resumed.predict_perturbation(**PREDICT).X, straight.predict_perturbation(**PREDICT).X, rtol=1e-5, atol=1e-6
    )


def test_ctrl_c_in_the_first_epoch_says_the_model_is_not_trained(tmp_path):
    model, _ = _fresh_model()
    with pytest.warns(UserWarning, match="during epoch 1 of 6: no epoch completed, so the model is not trained"):
        model.train(max_epochs=EPOCHS, callbacks=[CtrlCAt(epoch=0)], **TRAIN)
    assert not model.is_trained


def test_other_exceptions_still_propagate():
    class Boom(Callback):
        def on_train_batch_start(self, *args):
            raise RuntimeError("boom")

    model, _ = _fresh_model()
    with pytest.raises(RuntimeError, match="boom"):
        model.train(max_epochs=1, callbacks=[Boom()], **TRAIN)


def test_checkpoint_directory_is_replaced_atomically_and_keeps_other_files(tmp_path):
    directory = tmp_path / "checkpoint"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    _trained(max_epochs=2, callbacks=[TrainingCheckpoint(directory, every_n_epochs=1)])
    assert sorted(os.listdir(directory)) == ["model.pt", "notes.txt", "training_state.ckpt"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint"]


def test_tampered_training_state_is_refused(tmp_path):
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint", every_n_epochs=1)
    _trained(max_epochs=1, callbacks=[checkpoint])
    state = torch.load(tmp_path / "checkpoint" / "training_state.ckpt", weights_only=True)
    state["extra"] = os.system  # a pickled reference to a function that runs shell commands
    torch.save(state, tmp_path / "checkpoint" / "training_state.ckpt")
    with pytest.raises(UnsafeModelFileError, match=r"Refusing to resume from .*training_state\.ckpt: .*system"):
        checkpoint.resume_path  # noqa: B018


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_every_n_epochs_must_be_a_positive_integer(every, tmp_path):
    with pytest.raises(ValueError, match="every_n_epochs must be a positive integer"):
        TrainingCheckpoint(tmp_path, every_n_epochs=every)
