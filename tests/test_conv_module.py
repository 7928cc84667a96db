from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from anndata import AnnData
from helpers import quick_train

from scvi_trvae import TRVAE, ImageTRVAE
from scvi_trvae.image._module import ConvTRVAEModule, resolve_image_shape


def _bar_images(n_per_condition: int = 24, size: int = 12, seed: int = 0) -> AnnData:
    """Vertical bars at random columns: 1 pixel wide under "thin", 3 pixels wide under "thick"."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for condition, half_width in (("thin", 0), ("thick", 1)):
        for _ in range(n_per_condition):
            image = np.zeros((size, size), dtype=np.float32)
            column = rng.integers(2, size - 2)
            image[1:-1, column - half_width : column + half_width + 1] = 0.9
            images.append(image.ravel())
            labels.append(condition)
    obs = pd.DataFrame({"style": pd.Categorical(labels)}, index=[f"img{i}" for i in range(len(labels))])
    return AnnData(X=np.stack(images), obs=obs)


@pytest.fixture
def bar_images() -> AnnData:
    adata = _bar_images()
    ImageTRVAE.setup_anndata(adata, condition_key="style")
    return adata


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 9, 7), (5, 6)])
def test_shapes_of_every_layer(shape):
    n_input = int(np.prod(shape))
    module = ConvTRVAEModule(n_input, n_conditions=3, n_cats_per_cov=[2], n_hidden=16, n_latent=4, image_shape=shape)
    x = torch.rand(6, n_input)
    condition = torch.tensor([[0], [1], [2], [0], [1], [2]])
    cat_covs = torch.tensor([[0], [1], [0], [1], [0], [1]])
    inference = module.inference(x, condition, cat_covs)
    assert inference["z"].shape == (6, 4)
    generative = module.generative(inference["z"], condition, inference["library"], cat_covs)
    assert generative["mmd_layer"].shape == (6, 16)
    assert generative["px_mean"].shape == (6, n_input)
    assert ((generative["px_mean"] >= 0) & (generative["px_mean"] <= 1)).all()
    assert module.condition_channel.in_features == 5  # covariate one-hot, then the condition's


@pytest.mark.parametrize(
    ("shape", "message"),
    [((12, 13), "holds 156 pixels"), ((2, 12, 12), "holds 288 pixels"), ((144,), "height, width"), ("12x12", "height")],
)
def test_bad_image_shape_is_refused(bar_images, shape, message):
    with pytest.raises(ValueError, match=message):
        ImageTRVAE(bar_images, image_shape=shape)


def test_resolve_image_shape_adds_a_channel():
    assert resolve_image_shape((4, 5), 20) == (1, 4, 5)
    assert resolve_image_shape([2, 4, 5], 40) == (2, 4, 5)


def test_pixels_outside_unit_range_and_counts_are_refused():
    adata = _bar_images()
    adata.X = adata.X * 255
    with pytest.warns(UserWarning, match="above the usual range"):
        ImageTRVAE.setup_anndata(adata, condition_key="style")
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\].*255"):
        ImageTRVAE(adata, image_shape=(12, 12))
    adata = _bar_images()
    adata.X = (adata.X > 0).astype(np.float32)
    ImageTRVAE.setup_anndata(adata, condition_key="style", is_count_data=True)
    with pytest.raises(ValueError, match="is_count_data=True"):
        ImageTRVAE(adata, image_shape=(12, 12))
    adata = _bar_images()
    ImageTRVAE.setup_anndata(adata, condition_key="style")
    with pytest.raises(ValueError, match="likelihood"):
        ImageTRVAE(adata, image_shape=(12, 12), likelihood="nb")


@pytest.mark.parametrize("mmd_on", ["y", "z", None])
def test_each_mmd_target_trains_and_predicts(bar_images, mmd_on):
    model = quick_train(
        ImageTRVAE(bar_images, image_shape=(12, 12), n_hidden=16, n_latent=4, mmd_on=mmd_on), max_epochs=2
    )
    history = model.history["mmd_train"].to_numpy(dtype=float)
    assert np.isfinite(history).all()
    assert (history > 0).all() if mmd_on else (history == 0).all()
    predicted = model.predict_perturbation(bar_images, source="thin", target="thick", mode="mean")
    assert predicted.shape == (24, 144)
    assert ((predicted.X >= 0) & (predicted.X <= 1)).all()
    assert (predicted.obs["style"] == "thick").all()
    assert model.get_mmd_representation(bar_images).shape == (48, 16)
    assert model.get_latent_representation(bar_images).shape == (48, 4)


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "mse"])
def test_each_likelihood_lowers_its_loss(bar_images, likelihood):
    model = ImageTRVAE(bar_images, image_shape=(1, 12, 12), n_hidden=16, n_latent=4, likelihood=likelihood)
    quick_train(model, max_epochs=8, plan_kwargs={"lr": 3e-3})
    loss = model.history["reconstruction_loss_train"].to_numpy(dtype=float).ravel()
    assert np.isfinite(loss).all() and loss[-1] < loss[0]
    assert model.module.likelihood == likelihood


def test_default_image_likelihood_and_dense_model_untouched(bar_images):
    assert ImageTRVAE(bar_images, image_shape=(12, 12)).module.likelihood == "bernoulli"
    dense = _bar_images()
    TRVAE.setup_anndata(dense, condition_key="style")
    assert type(TRVAE(dense).module).__name__ == "TRVAEModule"
    with pytest.raises(ValueError, match="needs image_shape"):
        ImageTRVAE(bar_images)


def test_image_shape_on_trvae_is_deprecated_and_still_builds_the_image_model(tmp_path):
    adata = _bar_images()
    TRVAE.setup_anndata(adata, condition_key="style")
    with pytest.warns(FutureWarning, match="ImageTRVAE"):
        model = TRVAE(adata, image_shape=(12, 12), n_hidden=16, n_latent=4)
    assert isinstance(model.module, ConvTRVAEModule)
    quick_train(model, max_epochs=1)
    expected = model.predict_perturbation(adata, source="thin", target="thick", mode="mean").X
    model.save(tmp_path / "old_image_model")
    with pytest.warns(FutureWarning, match="ImageTRVAE"):
        again = TRVAE.load(tmp_path / "old_image_model", adata=adata)
    # a save of the old form loads as the new class too
    loaded = ImageTRVAE.load(tmp_path / "old_image_model", adata=_bar_images())
    assert isinstance(loaded, ImageTRVAE) and loaded.module.image_shape == (1, 12, 12)
    for model_again in (again, loaded):
        predicted = model_again.predict_perturbation(source="thin", target="thick", mode="mean").X
        np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_save_load_reproduces_predictions(bar_images, tmp_path):
    model = quick_train(ImageTRVAE(bar_images, image_shape=(12, 12), n_hidden=16, n_latent=4), max_epochs=2)
    expected = model.predict_perturbation(bar_images, source="thin", target="thick", mode="mean").X
    model.save(tmp_path / "image_model")
    loaded = ImageTRVAE.load(tmp_path / "image_model", adata=bar_images)
    assert isinstance(loaded.module, ConvTRVAEModule) and loaded.module.image_shape == (1, 12, 12)
    predicted = loaded.predict_perturbation(bar_images, source="thin", target="thick", mode="mean").X
    np.testing.assert_allclose(predicted, expected, rtol=1e-5, atol=1e-6)


def test_channels_widths_and_summary(bar_images, capsys):
    model = ImageTRVAE(bar_images, image_shape=(12, 12), hidden_layer_sizes=[8, 16, 24], n_hidden=20, n_mmd=12)
    convolutions = [layer for layer in model.module.z_encoder if isinstance(layer, torch.nn.Conv2d)]
    assert [layer.out_channels for layer in convolutions] == [8, 16, 24]
    assert model.module.mmd_decoder[0].out_features == 12 and model.module.z_mean_encoder.in_features == 20
    print(model)
    assert "conv encoder 144 pixels -> 8 -> 16 -> 24 channels" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ValueError, match="n_layers"):
        ImageTRVAE(bar_images, image_shape=(12, 12), n_layers=0)
    with pytest.raises(ValueError, match="not both"):
        ImageTRVAE(bar_images, image_shape=(12, 12), n_layers=2, hidden_layer_sizes=[8])
