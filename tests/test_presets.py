"""The trVAE paper's Kang configuration as a named preset."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import quick_train

from scvi_trvae import TRVAE
from scvi_trvae.model._mmd import LEGACY_BANDWIDTHS
from scvi_trvae.model._presets import paper_loss_weights


def test_kang_preset_is_the_paper_network():
    preset = TRVAE.paper_preset("kang")
    assert preset["model"]["hidden_layer_sizes"] == [800, 800, 128]
    assert preset["model"]["n_latent"] == 20 and preset["model"]["dropout_rate"] == 0.2
    assert preset["model"]["mmd_on"] == "y" and preset["model"]["likelihood"] == "mse"
    # the paper's kernel exp(-d / (2 sigma)) over its 19 sigmas is ours with h = 2 sigma
    np.testing.assert_allclose(preset["model"]["mmd_bandwidths"], 2 * np.asarray(LEGACY_BANDWIDTHS))
    assert preset["train"]["batch_size"] == 128


def test_loss_weight_translation():
    # paper: eta * 1/2 sum_{b,g} sq + alpha * 1/2 mean_{b,l}(...) + beta * MMD, divided by eta * B
    weights = paper_loss_weights(eta=100.0, alpha=1e-6, beta=500.0, batch_size=128, n_latent=20)
    assert weights["mmd_weight"] == pytest.approx(500 / (100 * 128))
    assert weights["kl_weight"] == pytest.approx(1e-6 / (100 * 128 * 20))
    assert TRVAE.paper_preset("kang")["train"]["mmd_weight"] == pytest.approx(0.0390625)


def test_preset_is_a_fresh_copy_and_unknown_names_are_refused():
    preset = TRVAE.paper_preset()
    preset["model"]["hidden_layer_sizes"].append(5)
    assert TRVAE.paper_preset("kang")["model"]["hidden_layer_sizes"] == [800, 800, 128]
    with pytest.raises(ValueError, match=r"Unknown paper preset 'haber'; available: \['kang'\]"):
        TRVAE.paper_preset("haber")


def test_preset_builds_and_trains(small_adata, capsys):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    preset = TRVAE.paper_preset("kang")
    model = TRVAE(small_adata, **preset["model"])
    print(model)
    assert "encoder 60 -> 800 -> 800 -> 128 -> z 20; decoder z 20 -> y 128 -> 800 -> 800 -> 60" in " ".join(
        capsys.readouterr().out.split()
    )
    quick_train(model, **{**preset["train"], "batch_size": 32}, max_epochs=1)
    assert np.isfinite(model.history["train_loss"].to_numpy(dtype=float)).all()
    assert np.isfinite(model.predict_perturbation(source="control", target="stimulated").X).all()
