"""Per-layer widths (``hidden_layer_sizes``, ``n_mmd``) of the module and the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import quick_train
from scvi import REGISTRY_KEYS

from scvi_trvae import TRVAE
from scvi_trvae.model import TRVAEModule


def _linear_shapes(stack) -> list[tuple[int, int]]:
    """(in, out) of each Linear of an FCLayers stack, in order."""
    return [tuple(layer[0].weight.shape[::-1]) for layer in stack.fc_layers]


def _tensors(n=12, genes=20, counts=False):
    torch.manual_seed(0)
    x = torch.poisson(torch.full((n, genes), 3.0)) if counts else torch.rand(n, genes) * 3
    return {REGISTRY_KEYS.X_KEY: x, REGISTRY_KEYS.BATCH_KEY: torch.arange(2).repeat(n // 2)[:, None].float()}


@pytest.mark.parametrize("likelihood", ["mse", "nb", "zinb"])
def test_per_layer_widths_build_the_paper_shape(likelihood):
    module = TRVAEModule(n_input=20, n_conditions=2, n_latent=4, hidden_layer_sizes=[12, 10, 6], likelihood=likelihood)
    # encoder genes (+ condition one-hot) -> 12 -> 10 -> 6 -> z; decoder z (+ one-hot) -> y 6 -> 10 -> 12 -> genes
    assert _linear_shapes(module.z_encoder) == [(22, 12), (12, 10), (10, 6)]
    assert module.z_mean_encoder.in_features == 6
    assert _linear_shapes(module.mmd_decoder) == [(6, 6)]
    assert _linear_shapes(module.expression_decoder) == [(6, 10), (10, 12)]
    assert module.px_head.in_features == 12
    _, generative, loss = module(_tensors(counts=likelihood != "mse"))
    assert generative["mmd_layer"].shape == (12, 6) and torch.isfinite(loss.loss)
    loss.loss.backward()


def test_explicit_mmd_width_and_single_layer():
    module = TRVAEModule(n_input=20, n_conditions=2, n_latent=4, hidden_layer_sizes=[12, 10], n_mmd=5)
    assert _linear_shapes(module.mmd_decoder) == [(6, 5)]
    assert _linear_shapes(module.expression_decoder) == [(5, 12)]
    single = TRVAEModule(n_input=20, n_conditions=2, n_latent=4, hidden_layer_sizes=[7])
    assert isinstance(single.expression_decoder, torch.nn.Identity) and single.px_head.in_features == 7


def test_equal_widths_are_the_uniform_form_exactly():
    torch.manual_seed(3)
    uniform = TRVAEModule(n_input=20, n_conditions=3, n_cats_per_cov=[4], n_hidden=16, n_layers=3).state_dict()
    torch.manual_seed(3)
    per_layer = TRVAEModule(n_input=20, n_conditions=3, n_cats_per_cov=[4], hidden_layer_sizes=[16, 16, 16])
    assert list(per_layer.state_dict()) == list(uniform)
    for name, tensor in per_layer.state_dict().items():
        torch.testing.assert_close(tensor, uniform[name], msg=name)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_layer_sizes": []}, "hidden_layer_sizes is empty"),
        ({"hidden_layer_sizes": [8, 0]}, "hidden_layer_sizes[1] must be a positive integer, got 0"),
        ({"hidden_layer_sizes": [8, -3]}, "hidden_layer_sizes[1] must be a positive integer, got -3"),
        ({"hidden_layer_sizes": [8, 2.5]}, "hidden_layer_sizes[1] must be a positive integer, got 2.5"),
        ({"hidden_layer_sizes": "800"}, "hidden_layer_sizes must be a list of widths"),
        ({"hidden_layer_sizes": [8], "n_hidden": 8}, "either as hidden_layer_sizes or as n_hidden / n_layers"),
        ({"hidden_layer_sizes": [8], "n_layers": 1}, "either as hidden_layer_sizes or as n_hidden / n_layers"),
        ({"n_mmd": 0}, "n_mmd must be a positive integer, got 0"),
        ({"n_hidden": 0}, "n_hidden must be a positive integer, got 0"),
        ({"n_layers": 0}, "n_layers must be at least 1, got 0"),
    ],
)
def test_bad_widths_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        TRVAEModule(n_input=5, n_conditions=2, **kwargs)


def test_print_shows_the_layers(small_adata, capsys):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    print(TRVAE(small_adata, hidden_layer_sizes=[24, 12], n_latent=4, n_mmd=8))
    text = " ".join(capsys.readouterr().out.split())
    assert "encoder 60 -> 24 -> 12 -> z 4; decoder z 4 -> y 8 -> 24 -> 60" in text
    print(TRVAE(small_adata, n_hidden=16, n_layers=2, n_latent=4))
    assert "encoder 60 -> 16 -> 16 -> z 4; decoder z 4 -> y 16 -> 16 -> 60" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(("likelihood", "layer"), [("mse", None), ("nb", "counts"), ("zinb", "counts")])
def test_per_layer_model_trains_predicts_and_reloads(small_adata, tmp_path, likelihood, layer):
    TRVAE.setup_anndata(small_adata, condition_key="condition", layer=layer, is_count_data=layer is not None)
    model = quick_train(TRVAE(small_adata, hidden_layer_sizes=[24, 12], n_latent=4, likelihood=likelihood))
    pred = model.predict_perturbation(source="control", target="stimulated")
    assert np.isfinite(pred.X).all() and pred.n_vars == small_adata.n_vars
    assert model.get_mmd_representation().shape == (small_adata.n_obs, 12)
    model.save(tmp_path / "model")
    loaded = TRVAE.load(tmp_path / "model", adata=small_adata, accelerator="cpu")
    assert loaded.module.widths == model.module.widths
    np.testing.assert_allclose(
        loaded.predict_perturbation(source="control", target="stimulated").X, pred.X, rtol=1e-5, atol=1e-5
    )


def test_per_layer_model_maps_a_query_with_a_new_condition(small_adata):
    reference = small_adata[small_adata.obs["cell_type"] != "type_C"].copy()
    TRVAE.setup_anndata(reference, condition_key="condition")
    ref_model = quick_train(TRVAE(reference, hidden_layer_sizes=[24, 12], n_latent=4, n_mmd=6))
    query = small_adata[small_adata.obs["cell_type"] == "type_C"].copy()
    query.obs["condition"] = query.obs["condition"].astype(str).replace({"stimulated": "new_drug"})
    query_model = TRVAE.load_query_data(query, ref_model)
    assert query_model.module.widths == ref_model.module.widths
    frozen = {
        "second encoder layer": query_model.module.z_encoder.fc_layers[1][0].weight.detach().clone(),
        "decoder after y": query_model.module.expression_decoder.fc_layers[0][0].weight.detach().clone(),
    }
    quick_train(query_model)
    torch.testing.assert_close(query_model.module.z_encoder.fc_layers[1][0].weight, frozen["second encoder layer"])
    torch.testing.assert_close(query_model.module.expression_decoder.fc_layers[0][0].weight, frozen["decoder after y"])
    pred = query_model.predict_perturbation(source="control", target="new_drug")
    assert np.isfinite(pred.X).all() and query_model.get_mmd_representation().shape[1] == 6
