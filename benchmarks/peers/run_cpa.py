"""CPA (PyPI ``cpa-tools`` 0.8.1) on one split; runs in ``.venv-peer-cpa`` (``make peer-cpa``, Python 3.10, torch 1.13).

Settings from CPA's Kang tutorial (github.com/theislab/cpa, ``docs/tutorials/Kang.ipynb``, which holds out one cell
type's stimulated cells): ``setup_anndata(perturbation_key=condition, control_group=control, dosage_key=dose (1.0),
categorical_covariate_keys=[cell_type], max_comb_len=1)``, the tutorial's ``model_params`` and ``trainer_params``
(below), ``train(max_epochs=2000, batch_size=512, early_stopping_patience=5, check_val_every_n_epoch=5)``.
The tutorial models raw counts (``recon_loss='nb'``); on log-normalised data sets (no counts) ``'gauss'`` on the
log data is used instead, CPA's option for non-count data (``is_count_data=False``).

Counterfactuals as ``CPA.predict``'s docstring describes them: the held-out type's control cells are added with the
target condition and ``split='ood'`` (never trained on; their expression is the control cells'), and
``model.predict`` fills ``obsm['CPA_pred']``. With ``nb`` the expected counts are log-normalised (log1p CP10k).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _protocol import cells_to_predict, log_normalise, main, training_cells

#: ``model_params`` of the Kang tutorial (``recon_loss`` set per data set, see the module docstring).
MODEL = {
    "n_latent": 64, "doser_type": "linear", "n_hidden_encoder": 128, "n_layers_encoder": 2,
    "n_hidden_decoder": 512, "n_layers_decoder": 2, "use_batch_norm_encoder": True, "use_layer_norm_encoder": False,
    "use_batch_norm_decoder": False, "use_layer_norm_decoder": True, "dropout_rate_encoder": 0.0,
    "dropout_rate_decoder": 0.1, "variational": False,
}  # fmt: skip
#: ``trainer_params`` of the Kang tutorial (``plan_kwargs``).
PLAN = {
    "n_epochs_kl_warmup": None, "n_epochs_pretrain_ae": 30, "n_epochs_adv_warmup": 50, "n_epochs_mixup_warmup": 0,
    "mixup_alpha": 0.0, "adv_steps": None, "n_hidden_adv": 64, "n_layers_adv": 3, "use_batch_norm_adv": True,
    "use_layer_norm_adv": False, "dropout_rate_adv": 0.3, "reg_adv": 20.0, "pen_adv": 5.0, "lr": 0.0003,
    "wd": 4e-07, "adv_lr": 0.0003, "adv_wd": 4e-07, "adv_loss": "cce", "doser_lr": 0.0003, "doser_wd": 4e-07,
    "do_clip_grad": True, "gradient_clip_value": 1.0, "step_size_lr": 10,
}  # fmt: skip
TRAIN = {"max_epochs": 2000, "batch_size": 512, "early_stopping_patience": 5, "check_val_every_n_epoch": 5}
VALID_FRACTION = 0.1


def _cpa_cells(cells: Any, args: argparse.Namespace, counts: bool) -> Any:
    """Training cells (``train``/``valid``) plus the counterfactual rows (``ood``: control cells, target condition)."""
    import anndata as ad

    train, predict = training_cells(cells), cells_to_predict(cells)
    rng = np.random.default_rng(args.seed)
    train.obs["cpa_split"] = np.where(rng.random(train.n_obs) < VALID_FRACTION, "valid", "train")
    predict.obs[args.condition_key] = args.target
    predict.obs["cpa_split"] = "ood"
    both = ad.concat([train, predict], index_unique="-", keys=["t", "p"])
    if counts:
        both.X = both.layers["counts"].copy()
    both.obs["dose"] = "1.0"
    # cpa-tools 0.8.1's setup_anndata reads obs[smiles_key] even without one (KeyError: None): an empty column
    # (SMILES are used only with use_rdkit_embeddings=True, which the Kang tutorial does not use)
    both.obs["smiles"] = ""
    return both


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Train CPA on the training cells; predict the held-out type's control cells under the target."""
    import cpa
    import torch

    torch.set_num_threads(args.threads)
    counts = "counts" in cells.layers
    adata = _cpa_cells(cells, args, counts)
    cpa.CPA.setup_anndata(
        adata, perturbation_key=args.condition_key, control_group=args.source, dosage_key="dose", smiles_key="smiles",
        categorical_covariate_keys=[args.cell_type_key], is_count_data=counts, max_comb_len=1,
    )  # fmt: skip
    model_params = {**MODEL, "recon_loss": "nb" if counts else "gauss", "seed": args.seed}
    model = cpa.CPA(
        adata=adata, split_key="cpa_split", train_split="train", valid_split="valid", test_split="ood", **model_params
    )
    train_kwargs = dict(TRAIN, **({} if args.epochs is None else {"max_epochs": args.epochs}))
    model.train(**train_kwargs, use_gpu=False, plan_kwargs=PLAN, enable_progress_bar=False)
    ood = adata[(adata.obs["cpa_split"] == "ood").to_numpy()].copy()
    model.predict(ood, batch_size=2048)
    pred = np.asarray(ood.obsm["CPA_pred"], dtype=np.float64)
    pred = log_normalise(pred) if counts else pred.astype(np.float32)
    settings = {"model": model_params, "plan": PLAN, "train": train_kwargs, "valid": VALID_FRACTION, "counts": counts}
    return pred, settings


if __name__ == "__main__":
    main(fit_predict, ["cpa-tools", "scvi-tools", "torch", "pytorch-lightning", "scanpy", "anndata", "numpy"])
