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

from scvi_trvae.data._sparse import use_sparse_input
from scvi_trvae.data._splitter import csr_density
from scvi_trvae.utils import TARGET_LIBRARY_SIZE

from ._module import COUNTERFACTUAL_KEY, DECODED_KEY, TRVAEModule

PredictionMode = Literal["counterfactual", "mean"]
#: Default of :meth:`TRVAE.predict_perturbation`; measured on the Kang NK split (``docs/defaults.md``).
DEFAULT_PREDICTION_MODE: PredictionMode = "counterfactual"
#: obs column of predictions recording the condition each predicted cell was encoded from.
SOURCE_COLUMN = "trvae_source_condition"
#: obs column numbering the draws of ``z`` when ``n_samples > 0``.
DRAW_COLUMN = "trvae_draw"
#: Default minibatch of prediction: nothing is kept for a backward pass, so large minibatches cost
#: little memory, and they make the matmuls faster and the sparse first layer worth it (``data/_sparse.py``).
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


def _minibatch_inputs(tensors: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Expression, condition codes and covariate codes of a minibatch of the model's data loader."""
    return tensors[REGISTRY_KEYS.X_KEY], tensors[REGISTRY_KEYS.BATCH_KEY], tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)


def predict_expression(
    module: TRVAEModule, request: PredictionRequest, minibatches: Iterable[dict], n_cells: int
) -> np.ndarray:
    """Predicted expression of ``n_cells`` source cells: one float32 array, draw after draw, filled in place.

    Each minibatch goes through :meth:`TRVAEModule.counterfactual`; ``mode="mean"`` keeps its decoder output.
    """
    generator = torch.Generator().manual_seed(request.seed)
    key = COUNTERFACTUAL_KEY if request.mode == "counterfactual" else DECODED_KEY
    scale = request.output_scale if module.is_count_model else None
    predicted = np.empty((request.n_draws * n_cells, module.n_input), dtype=np.float32)
    start = 0
    for tensors in minibatches:
        x, source, cat_covs = _minibatch_inputs(tensors)
        shape = (x.shape[0], module.n_latent)
        noise = [torch.randn(shape, generator=generator) for _ in range(request.n_samples)]
        draws = module.counterfactual(x, source, request.target_code, cat_covs, noise=noise, output_scale=scale)
        for draw, outputs in enumerate(draws):
            offset = draw * n_cells + start
            predicted[offset : offset + x.shape[0]] = outputs[key].float().cpu().numpy()
        start += x.shape[0]
    return predicted


def mmd_representation(module: TRVAEModule, minibatches: Iterable[dict], condition: int | None) -> np.ndarray:
    """Return the MMD layer ``y`` of every cell of ``minibatches`` (:meth:`TRVAEModule.mmd_representation`)."""
    layers = [module.mmd_representation(*_minibatch_inputs(tensors), condition) for tensors in minibatches]
    return np.concatenate([layer.cpu().numpy() for layer in layers])


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
