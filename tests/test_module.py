from __future__ import annotations

import pytest
import torch
from scvi import REGISTRY_KEYS

from scvi_trvae.model import TRVAEModule


def _tensors(n=12, genes=20, n_conditions=3, counts=False, covariates=False):
    torch.manual_seed(0)
    x = torch.poisson(torch.full((n, genes), 3.0)) if counts else torch.rand(n, genes) * 3
    tensors = {
        REGISTRY_KEYS.X_KEY: x,
        REGISTRY_KEYS.BATCH_KEY: torch.arange(n_conditions).repeat(n // n_conditions)[:, None].float(),
    }
    if covariates:
        tensors[REGISTRY_KEYS.CAT_COVS_KEY] = torch.randint(0, 4, (n, 1)).float()
    return tensors


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
@pytest.mark.parametrize("mmd_on", ["y", "z", None])
def test_shapes_and_loss(likelihood, mmd_on):
    module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4, likelihood=likelihood, mmd_on=mmd_on)
    tensors = _tensors(counts=likelihood != "mse")
    inference, generative, loss = module(tensors, loss_kwargs={"kl_weight": 0.5, "mmd_weight": 10.0})
    assert inference["z"].shape == (12, 4)
    assert inference["qz"].loc.shape == (12, 4)
    assert generative["mmd_layer"].shape == (12, 16)
    assert generative["px_mean"].shape == (12, 20)
    assert (generative["px_mean"] >= 0).all()
    assert loss.reconstruction_loss["reconstruction_loss"].shape == (12,)
    mmd = loss.extra_metrics["mmd"]
    expected = torch.mean(loss.reconstruction_loss["reconstruction_loss"] + 0.5 * loss.kl_local["kl_local"]) + 10 * mmd
    assert loss.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    if mmd_on is None:
        assert mmd.item() == 0.0
    else:
        assert mmd.item() > 0.0
    loss.loss.backward()
    assert all(p.grad is not None for p in module.z_encoder.parameters() if p.requires_grad)


def test_mmd_on_selects_layer():
    tensors = _tensors()
    for mmd_on, key in (("y", "mmd_layer"), ("z", "z")):
        module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4, mmd_on=mmd_on)
        inference, generative = module(tensors, compute_loss=False)
        from scvi_trvae.model._mmd import condition_mmd

        values = generative[key] if key == "mmd_layer" else inference[key]
        direct = condition_mmd(values, tensors[REGISTRY_KEYS.BATCH_KEY], 3)
        assert module.mmd_penalty(tensors, inference, generative).item() == pytest.approx(direct.item())


def test_count_mean_is_library_times_proportions():
    module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4, likelihood="nb")
    module.eval()
    tensors = _tensors(counts=True)
    _, generative = module(tensors, compute_loss=False)
    library = tensors[REGISTRY_KEYS.X_KEY].sum(1, keepdim=True)
    assert torch.allclose(generative["px_scale"].sum(1), torch.ones(12), atol=1e-5)
    assert torch.allclose(generative["px_mean"], library * generative["px_scale"], rtol=1e-5)


def test_gene_condition_dispersion_depends_on_condition():
    module = TRVAEModule(
        n_input=20, n_conditions=3, n_hidden=16, n_latent=4, likelihood="nb", dispersion="gene-condition"
    )
    assert module.px_r.shape == (20, 3)
    module.eval()
    tensors = _tensors(counts=True)
    _, generative = module(tensors, compute_loss=False)
    theta = generative["px"].theta
    assert theta.shape == (12, 20)
    codes = tensors[REGISTRY_KEYS.BATCH_KEY].reshape(-1).long()
    assert torch.allclose(theta, torch.exp(module.px_r.T[codes]))


def test_categorical_covariates_and_condition_last():
    module = TRVAEModule(n_input=20, n_conditions=3, n_cats_per_cov=[4], n_hidden=16, n_latent=4)
    assert module.mmd_decoder.n_cat_list == [4, 3]
    _, _, loss = module(_tensors(covariates=True))
    assert torch.isfinite(loss.loss)


def test_decoding_under_another_condition_changes_output():
    module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4)
    module.eval()
    tensors = _tensors()
    encoded, own = module(tensors, compute_loss=False)
    other = module.generative(z=encoded["z"], condition=torch.zeros(12, 1), library=encoded["library"])
    assert not torch.allclose(own["px_mean"], other["px_mean"])


def test_sample_shape():
    module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4, likelihood="nb")
    assert module.sample(_tensors(counts=True), n_samples=2).shape == (2, 12, 20)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"likelihood": "poisson"}, "likelihood"),
        ({"mmd_on": "x"}, "mmd_on"),
        ({"dispersion": "cell"}, "dispersion"),
        ({"n_layers": 0}, "n_layers"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRVAEModule(n_input=5, n_conditions=2, **kwargs)


@pytest.mark.parametrize("likelihood", ["mse", "nb"])
def test_counterfactual_returns_the_shift_and_adds_it_to_the_observed_cells(likelihood):
    module = TRVAEModule(n_input=20, n_conditions=3, n_hidden=16, n_latent=4, likelihood=likelihood).eval()
    tensors = _tensors(counts=likelihood != "mse", covariates=False)
    x, source = tensors[REGISTRY_KEYS.X_KEY], torch.zeros(12, 1)
    noise = [torch.randn(12, 4), torch.randn(12, 4)]
    draws = module.counterfactual(x, source, 2, noise=noise, output_scale=lambda p, lib: torch.log1p(p * 1e4))
    assert len(draws) == 2
    for outputs in draws:
        assert outputs["shift"].shape == outputs["decoded"].shape == outputs["counterfactual"].shape == (12, 20)
        reconstructed = outputs["decoded"] - outputs["shift"]
        observed = x if likelihood == "mse" else torch.log1p(x / x.sum(1, keepdim=True) * 1e4)
        expected = (outputs["decoded"] + observed - reconstructed).clamp_min(0.0)
        torch.testing.assert_close(outputs["counterfactual"], expected)
    (at_mean,) = module.counterfactual(x, source, 2)  # no noise: one prediction, z at its posterior mean
    assert at_mean["decoded"].shape == (12, 20)
    y = module.mmd_representation(x, source, decode_condition=1)
    assert y.shape == (12, 16)
