"""CellFlow (PyPI ``cellflow-tools`` 0.0.9, JAX on CPU) on one split; runs in ``.venv-peer-cellflow``.

Settings from CellFlow's PBMC tutorial (github.com/theislab/CellFlow, ``docs/notebooks/100_pbmc.ipynb``: a cytokine's
effect on a donor it was not measured in, learnt from other donors — here a condition's effect on a held-out cell
type, learnt from the other types): log-normalised data, ``centered_pca(n_comps=100)`` on the training cells,
flow matching (``solver="otfm"``) in PCA space, the tutorial's ``prepare_model`` arguments (below) and
``train(num_iterations=500_000, batch_size=1024)``; predictions of the held-out type's control cells (projected on
the training PCA) are decoded as ``reconstruct_pca`` does (PCs and means of the training cells).

One departure: the tutorial makes the donor a sample and split covariate, but CellFlow 0.0.9 refuses a split
covariate value without perturbed cells ("Source distribution with split covariate values {('NK',)} do not have
a corresponding target distribution"), which is the held-out type by construction when there are two conditions.
So the control cells of all types form one source, the condition (one-hot: the tutorial's ESM2 cytokine embeddings
have no counterpart here) is the only covariate, and the optimal-transport coupling of flow matching (``match_linear``)
pairs each control cell with nearby perturbed cells. ``--epochs N`` means N training iterations. The tutorial's
validation callbacks only log metrics and are left out.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np
from _protocol import cells_to_predict, main, training_cells

#: ``train`` of the tutorial.
ITERATIONS = 500_000
BATCH_SIZE = 1024
N_COMPS = 100


def _one_hot(values: list[str]) -> dict[str, np.ndarray]:
    return {value: np.eye(len(values), dtype=np.float32)[i] for i, value in enumerate(values)}


def _model_arguments() -> dict[str, Any]:
    """``prepare_model`` arguments of the tutorial (without the donor's layers: no sample covariate here)."""
    import flax.linen as nn
    import optax
    from cellflow.utils import match_linear

    return {
        "condition_mode": "deterministic", "regularization": 0.0, "pooling": "attention_token", "pooling_kwargs": {},
        "layers_before_pool": {"condition": {"layer_type": "mlp", "dims": [1024, 1024], "dropout_rate": 0.5}},
        "layers_after_pool": {"layer_type": "mlp", "dims": [1024, 1024], "dropout_rate": 0.0},
        "condition_embedding_dim": 256, "cond_output_dropout": 0.9, "condition_encoder_kwargs": {},
        "pool_sample_covariates": True, "time_freqs": 1024, "time_encoder_dims": [1024, 1024, 1024],
        "time_encoder_dropout": 0.0, "hidden_dims": [2048, 2048, 2048], "hidden_dropout": 0.0,
        "conditioning": "concatenation", "decoder_dims": [4096, 4096, 4096], "vf_act_fn": nn.silu, "vf_kwargs": None,
        "probability_path": {"constant_noise": 0.5}, "match_fn": functools.partial(match_linear, epsilon=0.5),
        "optimizer": optax.MultiSteps(optax.adam(5e-5), 20), "solver_kwargs": {},
        "layer_norm_before_concatenation": False, "linear_projection_before_concatenation": False,
    }  # fmt: skip


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Train CellFlow on the training cells; predict the held-out type's control cells under the target."""
    import cellflow.preprocessing as cfpp
    import pandas as pd
    from cellflow.model import CellFlow

    train, ctrl = training_cells(cells), cells_to_predict(cells)
    for part in (train, ctrl):
        part.obs["is_control"] = (part.obs[args.condition_key] == args.source).to_numpy()
    train.uns["condition_embeddings"] = _one_hot(sorted(train.obs[args.condition_key].unique()))
    ctrl.uns["condition_embeddings"] = train.uns["condition_embeddings"]  # predict reads the control cells' uns
    cfpp.centered_pca(train, n_comps=N_COMPS, method="scanpy", keep_centered_data=False)
    cfpp.project_pca(query_adata=ctrl, ref_adata=train)
    model = CellFlow(train, solver="otfm")
    model.prepare_data(
        sample_rep="X_pca", control_key="is_control", perturbation_covariates={"condition": (args.condition_key,)},
        perturbation_covariate_reps={"condition": "condition_embeddings"}, max_combination_length=1, null_value=0.0,
    )  # fmt: skip
    model.prepare_model(**_model_arguments(), seed=args.seed)
    iterations = ITERATIONS if args.epochs is None else args.epochs
    model.train(num_iterations=iterations, batch_size=BATCH_SIZE, valid_freq=max(iterations, 1) + 1)
    covariates = pd.DataFrame({args.condition_key: [args.target], "is_control": [False], "condition_id": ["predicted"]})
    categories = train.obs[args.condition_key].astype(str).unique()
    covariates[args.condition_key] = pd.Categorical(covariates[args.condition_key], categories=categories)
    preds = model.predict(ctrl, covariate_data=covariates, sample_rep="X_pca", condition_id_key="condition_id")
    pcs = np.squeeze(np.asarray(preds["predicted"]))
    decoded = pcs @ np.asarray(train.varm["PCs"]).T + np.asarray(train.varm["X_mean"]).T
    settings = {"iterations": iterations, "batch_size": BATCH_SIZE, "n_comps": N_COMPS, "solver": "otfm"}
    return decoded, settings


if __name__ == "__main__":
    main(fit_predict, ["cellflow-tools", "jax", "jaxlib", "flax", "optax", "ott-jax", "scanpy", "anndata", "numpy"])
