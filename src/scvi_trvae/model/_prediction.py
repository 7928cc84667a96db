"""Counterfactual prediction of :meth:`~scvi_trvae.TRVAE.predict_perturbation`: decoding and the output AnnData."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS

from ._data import csr_density
from ._module import CONDITION_KEY, MMD_LAYER_KEY, PX_MEAN_KEY, PX_SCALE_KEY, TRVAEModule
from ._sparse import to_dense, use_sparse_input
from ._training_plan import distribution_validation
from .utils import TARGET_LIBRARY_SIZE

PredictionMode = Literal["counterfactual", "mean"]
#: Default of :meth:`TRVAE.predict_perturbation`; measured on the Kang NK split (``docs/defaults.md``).
DEFAULT_PREDICTION_MODE: PredictionMode = "counterfactual"
#: obs column of predictions recording the condition each predicted cell was encoded from.
SOURCE_COLUMN = "trvae_source_condition"
#: obs column numbering the draws of ``z`` when ``n_samples > 0``.
DRAW_COLUMN = "trvae_draw"
#: Default minibatch of prediction: nothing is kept for a backward pass, so large minibatches cost
#: little memory, and they make the matmuls faster and the sparse first layer worth it (``_sparse.py``).
PREDICTION_BATCH_SIZE = 1024


@dataclass(frozen=True)
class PredictionRequest:
    """What :meth:`~scvi_trvae.TRVAE.predict_perturbation` was asked for, checked and with defaults filled in."""

    source: str
    target: str
    source_code: int
    target_code: int
    mode: PredictionMode
    n_samples: int
    seed: int
    #: count likelihoods only (``None`` for ``"mse"``): ``proportion * library_size``, ``"observed"`` its own total
    library_size: float | str | None
    log1p: bool | None

    @classmethod
    def checked(cls, module: TRVAEModule, *, mode: str, n_samples: int, library_size, log1p, **fields):
        """Check the options against the module's likelihood and fill in the count-model defaults."""
        if mode not in ("counterfactual", "mean"):
            raise ValueError(f"mode must be 'counterfactual' or 'mean', got {mode!r}.")
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}.")
        if fields["source_code"] == fields["target_code"]:
            raise ValueError(f"source and target are the same condition ({fields['source']!r}); nothing to predict.")
        if module.is_count_model:
            library_size = TARGET_LIBRARY_SIZE if library_size is None else library_size
            log1p = True if log1p is None else log1p
        elif library_size is not None or log1p is not None:
            raise ValueError("library_size and log1p apply to count likelihoods only; this model uses 'mse'.")
        return cls(mode=mode, n_samples=n_samples, library_size=library_size, log1p=log1p, **fields)

    @property
    def n_draws(self) -> int:
        """Predicted copies of each cell: one deterministic, or ``n_samples`` draws of ``z``."""
        return max(self.n_samples, 1)

    def output_scale(self, proportions: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """Expression proportions of a count model on the returned scale."""
        scaled = proportions * (library if self.library_size == "observed" else float(self.library_size))
        return torch.log1p(scaled) if self.log1p else scaled

    def provenance(self, module: TRVAEModule, condition_key: str) -> dict:
        """``uns['trvae_prediction']`` of the output."""
        record = {
            "source": self.source,
            "target": self.target,
            "mode": self.mode,
            "n_samples": int(self.n_samples),
            "likelihood": module.likelihood,
            "mmd_on": str(module.mmd_on),
            "condition_key": condition_key,
        }
        if module.is_count_model:
            record["library_size"] = str(self.library_size)
            record["log1p"] = bool(self.log1p)
        return record


def prediction_minibatches(model, adata: AnnData, positions: np.ndarray, batch_size: int | None) -> Iterable[dict]:
    """Minibatches of ``adata``'s cells at ``positions`` in order; sparse CSR tensors where that is faster."""
    batch_size = batch_size or PREDICTION_BATCH_SIZE
    matrix = model.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
    sparse = isinstance(model.module, TRVAEModule) and use_sparse_input(csr_density(matrix), batch_size)
    return model._make_data_loader(
        adata=adata, indices=positions, batch_size=batch_size, shuffle=False, load_sparse_tensor=sparse
    )


def decode(
    module: TRVAEModule, tensors: dict, inference_outputs: dict, z: torch.Tensor, condition: int | None = None
) -> dict:
    """Run the module's generative pass on ``z``, every cell decoded under ``condition`` (``None``: its own)."""
    own = module._get_inference_input(tensors)[CONDITION_KEY]
    codes = own if condition is None else torch.full_like(own, condition)
    inputs = module._get_generative_input(
        tensors, {**inference_outputs, MODULE_KEYS.Z_KEY: z}, condition=codes.to(z.device)
    )
    return module.generative(**inputs)


def mmd_layer(module: TRVAEModule, tensors: dict, condition: int | None) -> torch.Tensor:
    """Return the MMD layer ``y`` of a minibatch, ``z`` at its posterior mean."""
    outputs = module.inference(**module._get_inference_input(tensors))
    return decode(module, tensors, outputs, outputs[MODULE_KEYS.QZ_KEY].loc, condition)[MMD_LAYER_KEY]


def _expression(module: TRVAEModule, request: PredictionRequest, generative_outputs: dict, library) -> torch.Tensor:
    if not module.is_count_model:
        return generative_outputs[PX_MEAN_KEY]
    return request.output_scale(generative_outputs[PX_SCALE_KEY], library)


def _predict_minibatch(
    module: TRVAEModule, request: PredictionRequest, tensors: dict, generator: torch.Generator
) -> Iterable[torch.Tensor]:
    """Yield the prediction of each draw for one minibatch of source cells."""
    inference_inputs = module._get_inference_input(tensors)
    outputs = module.inference(**inference_inputs)
    qz, library = outputs[MODULE_KEYS.QZ_KEY], outputs[MODULE_KEYS.LIBRARY_KEY]
    if request.mode == "counterfactual":
        x = to_dense(inference_inputs[MODULE_KEYS.X_KEY]).to(library.device)
    for _ in range(request.n_draws):
        z = qz.loc
        if request.n_samples > 0:
            z = qz.loc + qz.scale * torch.randn(qz.loc.shape, generator=generator).to(qz.loc.device)
        predicted = _expression(module, request, decode(module, tensors, outputs, z, request.target_code), library)
        if request.mode == "counterfactual":
            reconstructed = _expression(
                module, request, decode(module, tensors, outputs, z, request.source_code), library
            )
            observed = request.output_scale(x / library.clamp_min(1.0), library) if module.is_count_model else x
            predicted = (predicted + observed - reconstructed).clamp_min(0.0)
        yield predicted


def predict_expression(
    module: TRVAEModule, request: PredictionRequest, minibatches: Iterable[dict], n_cells: int
) -> np.ndarray:
    """Predicted expression of ``n_cells`` source cells: one float32 array, draw after draw, filled in place."""
    generator = torch.Generator().manual_seed(request.seed)
    predicted = np.empty((request.n_draws * n_cells, module.n_input), dtype=np.float32)
    start = 0
    with distribution_validation(False):  # a few percent of prediction time; the values come from the model
        for tensors in minibatches:
            for draw, values in enumerate(_predict_minibatch(module, request, tensors, generator)):
                offset = draw * n_cells + start
                predicted[offset : offset + values.shape[0]] = values.float().cpu().numpy()
            start += values.shape[0]
    return predicted


def prediction_anndata(
    predicted: np.ndarray, source_obs: pd.DataFrame, var: pd.DataFrame, request: PredictionRequest, model
) -> AnnData:
    """Wrap ``predicted`` (not copied) with the source cells' obs relabelled to the target condition."""
    obs = source_obs.loc[:, [c for c in source_obs.columns if not str(c).startswith("_scvi")]].copy()
    categories = [str(c) for c in model.conditions]
    obs[SOURCE_COLUMN] = pd.Categorical([request.source] * len(obs), categories=categories)
    obs[model.condition_key] = pd.Categorical([request.target] * len(obs), categories=categories)
    if request.n_samples > 0:
        draws = []
        for draw in range(request.n_samples):
            obs_draw = obs.copy()
            obs_draw[DRAW_COLUMN] = draw
            obs_draw.index = [f"{name}-draw{draw}" for name in obs.index]
            draws.append(obs_draw)
        obs = pd.concat(draws)
    uns = {"trvae_prediction": request.provenance(model.module, model.condition_key)}
    return AnnData(X=predicted, obs=obs, var=var.copy(), uns=uns)
