"""Tests of the training plan: fused optimizer and the (deferred) finiteness check."""

from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from make_fixtures import tiny_adata
from scvi.train import TrainingPlan

from scvi_trvae import TRVAE
from scvi_trvae.model import TRVAEModule
from scvi_trvae.model._training_plan import NonFiniteLossError, TRVAETrainingPlan

FAST = {"max_epochs": 1, "batch_size": 16, "enable_progress_bar": False, "accelerator": "cpu"}


@pytest.fixture
def model() -> TRVAE:
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    return TRVAE(adata, n_hidden=8, n_latent=4)


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
def test_cpu_training_uses_the_fused_optimizer(model, optimizer):
    model.train(**FAST, plan_kwargs={"optimizer": optimizer, "lr": 3e-3, "weight_decay": 1e-4})
    (used,) = model.trainer.optimizers
    assert type(used).__name__ == optimizer
    assert used.defaults["fused"] is True
    assert used.defaults["lr"] == 3e-3 and used.defaults["weight_decay"] == 1e-4


def test_parameters_fused_adam_cannot_take_fall_back_to_the_default():
    plan = TRVAETrainingPlan(TRVAEModule(n_input=5, n_conditions=2, n_hidden=4, n_latent=2))
    integer = torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)
    optimizer = plan.get_optimizer_creator()([torch.nn.Parameter(torch.zeros(2)), integer])
    assert optimizer.defaults["fused"] is None


def test_custom_optimizer_is_left_alone(model):
    model.train(**FAST, plan_kwargs={"optimizer": "Custom", "optimizer_creator": lambda p: torch.optim.SGD(p, 0.1)})
    assert isinstance(model.trainer.optimizers[0], torch.optim.SGD)


def test_deferred_check_on_an_accelerator_reports_the_step_range(model, monkeypatch):
    # on a GPU the check is read every log_every_n_steps steps; simulate that path on the CPU
    monkeypatch.setattr(TRVAETrainingPlan, "_defer_finite_check", lambda self, loss: self._stage == "training")
    original = TRVAEModule.mmd_penalty
    # a NaN constant: the loss is NaN while the gradients (and so the weights) stay finite
    monkeypatch.setattr(TRVAEModule, "mmd_penalty", lambda self, *a, **k: original(self, *a, **k) + float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"Non-finite training loss between global steps 0 and 1 \(epoch 1"):
        model.train(**{**FAST, "max_epochs": 2}, log_every_n_steps=2)
    assert not model.is_trained


def test_deferred_check_passes_finite_training(model, monkeypatch):
    monkeypatch.setattr(TRVAETrainingPlan, "_defer_finite_check", lambda self, loss: self._stage == "training")
    model.train(**{**FAST, "max_epochs": 2}, log_every_n_steps=2)
    assert model.is_trained


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bfloat16_training_predicts_and_saves_in_float32(model, precision, tmp_path):
    model.train(**FAST, precision=precision)
    assert all(parameter.dtype == torch.float32 for parameter in model.module.parameters())
    adata = model.adata
    predicted = model.predict_perturbation(adata, source="control", target="stimulated")
    assert predicted.X.dtype == "float32" and np.isfinite(predicted.X).all()
    model.save(tmp_path / "model", save_anndata=True)
    loaded = TRVAE.load(tmp_path / "model", accelerator="cpu")
    np.testing.assert_array_equal(
        loaded.predict_perturbation(adata, source="control", target="stimulated").X, predicted.X
    )


def _history_of_two_epochs(adata) -> dict:
    scvi.settings.seed = 0
    model = TRVAE(adata, n_hidden=16, dropout_rate=0.0)
    model.train(max_epochs=2, batch_size=16, accelerator="cpu", enable_progress_bar=False, train_size=1.0,
                plan_kwargs={"n_epochs_kl_warmup": 4})  # fmt: skip
    return {key: frame.to_numpy(dtype=float).ravel() for key, frame in model.history.items()}


def test_epoch_logging_gives_scvi_tools_per_step_history(monkeypatch):
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    lean = _history_of_two_epochs(adata)
    monkeypatch.setattr(
        TRVAETrainingPlan, "training_step", lambda self, batch, i: TrainingPlan.training_step(self, batch, i)
    )
    per_step = _history_of_two_epochs(adata)
    epoch_keys = [
        "train_loss",
        "elbo_train",
        "reconstruction_loss_train",
        "kl_local_train",
        "kl_global_train",
        "mmd_train",
    ]
    for key in epoch_keys:
        assert lean[key].shape == (2,), key
        np.testing.assert_allclose(lean[key], per_step[key], rtol=1e-5, err_msg=key)
    # the KL warm-up weight (by epoch: 0 in the first), once per epoch instead of every few steps
    assert lean["kl_weight"].shape == (2,) and 0 <= lean["kl_weight"][0] < lean["kl_weight"][1] <= 0.1
