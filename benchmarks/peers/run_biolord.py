"""biolord (PyPI ``biolord`` 0.0.3) on one split; runs in ``.venv-peer-biolord`` (``make peer-biolord``).

Settings from biolord's pipeline tutorial (github.com/nitzanlab/biolord, ``docs/tutorials/biolord_pipeline.ipynb``,
which predicts control cells under another value of a categorical attribute): ``setup_anndata`` with the condition
and the cell type as categorical attributes, ``Biolord(n_latent=32, module_params=MODULE, split_key=...)``,
``train(max_epochs=500, batch_size=512, plan_kwargs=PLAN, early_stopping=True, early_stopping_patience=20,
check_val_every_n_epoch=10)``, then ``compute_prediction_adata(adata, adata_source, target_attributes=[condition])``
on the held-out type's control cells (which, as in the tutorial, are training cells: biolord learns a code per
training cell). The tutorial's random train/test split is drawn here as 90 % / 10 % of the other cells.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _protocol import cells_to_predict, main, training_cells

#: ``module_params`` of the pipeline tutorial.
MODULE = {
    "decoder_width": 1024, "decoder_depth": 4, "attribute_nn_width": 512, "attribute_nn_depth": 2,
    "n_latent_attribute_categorical": 4, "gene_likelihood": "normal", "reconstruction_penalty": 1e2,
    "unknown_attribute_penalty": 1e1, "unknown_attribute_noise_param": 1e-1, "attribute_dropout_rate": 0.1,
    "use_batch_norm": False, "use_layer_norm": False,
}  # fmt: skip
#: ``trainer_params`` of the pipeline tutorial (``plan_kwargs``).
PLAN = {
    "n_epochs_warmup": 0, "latent_lr": 1e-4, "latent_wd": 1e-4, "decoder_lr": 1e-4, "decoder_wd": 1e-4,
    "attribute_nn_lr": 1e-2, "attribute_nn_wd": 4e-8, "step_size_lr": 45, "cosine_scheduler": True,
    "scheduler_final_lr": 1e-5,
}  # fmt: skip
TRAIN = {"max_epochs": 500, "batch_size": 512, "early_stopping": True, "early_stopping_patience": 20}
N_LATENT = 32
VALID_FRACTION = 0.1


def _split_column(train: Any, args: argparse.Namespace) -> np.ndarray:
    """``train``/``test`` labels: the held-out type's control cells all train, 10 % of the others test."""
    rng = np.random.default_rng(args.seed)
    labels = np.where(rng.random(train.n_obs) < VALID_FRACTION, "test", "train").astype(object)
    source = (train.obs[args.cell_type_key] == args.cell_type) & (train.obs[args.condition_key] == args.source)
    labels[source.to_numpy()] = "train"
    return labels


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Train biolord on the training cells; predict the held-out type's control cells under the target."""
    import biolord
    import torch

    torch.set_num_threads(args.threads)
    train = training_cells(cells)
    train.obs_names = train.obs["cell_id"].to_numpy()
    train.obs["split_random"] = _split_column(train, args)
    biolord.Biolord.setup_anndata(train, categorical_attributes_keys=[args.condition_key, args.cell_type_key])
    model = biolord.Biolord(
        adata=train, n_latent=N_LATENT, model_name="peer", module_params={**MODULE, "seed": args.seed},
        train_classifiers=False, split_key="split_random",
    )  # fmt: skip
    train_kwargs = dict(TRAIN, **({} if args.epochs is None else {"max_epochs": args.epochs}))
    model.train(
        **train_kwargs, plan_kwargs=PLAN, check_val_every_n_epoch=10, num_workers=0, enable_checkpointing=False,
        accelerator="cpu", enable_progress_bar=False,
    )  # fmt: skip
    wanted = cells_to_predict(cells).obs["cell_id"].to_numpy()
    source = train[wanted].copy()
    preds = model.compute_prediction_adata(train, source, target_attributes=[args.condition_key])
    pred = preds[(preds.obs[args.condition_key] == args.target).to_numpy()]
    settings = {"n_latent": N_LATENT, "module": MODULE, "plan": PLAN, "train": train_kwargs, "valid": VALID_FRACTION}
    return np.asarray(pred.X), settings


if __name__ == "__main__":
    main(fit_predict, ["biolord", "scvi-tools", "torch", "lightning", "scanpy", "anndata", "numpy"])
