"""Fit scArches' ``TRVAE`` and predict a perturbation; runs in its own environment (``make scarches-venv``).

scArches (PyPI ``scarches`` 0.6.1) is kept out of the environment under test, so the benchmark calls
this script with that environment's Python (``fit_predict_scarches`` in ``oos/scarches.py``).
scArches' ``TRVAE`` has no prediction method; a cell is predicted as the paper describes: encode it
with its own condition (posterior mean), decode the code with the target condition. With a count
likelihood the decoder gives expression proportions, returned as ``log1p`` of counts per 10,000.

Usage::

    python _scarches_runner.py IN.h5ad OUT.npy --condition-key condition --source control \
        --target stimulated --settings defaults|paper --likelihood mse|nb --seed 0 --threads 1 \
        --library-size 10000

``IN.h5ad`` holds the training cells (``obs['split'] == 'train'``) and the cells to predict
(``obs['split'] == 'predict'``); ``X`` is log-normalised for ``mse`` and raw counts for ``nb``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from typing import Any

import anndata as ad
import numpy as np

#: anndata >= 0.12 removed ``anndata.read``, which scArches 0.6.1 still imports.
ad.read = ad.read_h5ad

import scarches  # noqa: E402
import torch  # noqa: E402

#: ``defaults``: scArches' own constructor and ``train()`` defaults (MMD on z, 256-64, z 10, 400 epochs,
#: early stopping). ``paper``: the trVAE paper's network (800-800 encoder, 128-unit MMD layer y, z 40,
#: KL weight 5e-5, MMD weight 100).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {"model": {}, "train": {}},
    "paper": {
        "model": {"hidden_layer_sizes": [800, 800, 128], "latent_dim": 40, "mmd_on": "y", "beta": 100.0},
        "train": {"alpha_kl": 5e-5},
    },
}


def fit_predict(
    adata: ad.AnnData,
    condition_key: str,
    source: str,
    target: str,
    settings: str,
    likelihood: str,
    seed: int,
    epochs: int | None = None,
    *,
    library_size: float,
) -> np.ndarray:
    """Train on the ``train`` cells and predict the ``predict`` cells under ``target`` (epochs None: scArches' 400)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    train = adata[adata.obs["split"] == "train"].copy()
    to_predict = adata[adata.obs["split"] == "predict"].copy()
    conditions = sorted(train.obs[condition_key].astype(str).unique())
    config = SETTINGS[settings]
    with contextlib.redirect_stdout(io.StringIO()):  # scArches prints every layer and epoch
        model = scarches.models.TRVAE(
            train, condition_key=condition_key, conditions=conditions, recon_loss=likelihood, **config["model"]
        )
        model.train(**({} if epochs is None else {"n_epochs": epochs}), seed=seed, **config["train"])
    network = model.model.eval()
    x = torch.from_numpy(to_predict.to_df().to_numpy(dtype=np.float32))
    encoder_input = torch.log1p(x) if likelihood != "mse" else x
    n_cells = len(x)
    source_codes = torch.full((n_cells,), network.condition_encoder[source], dtype=torch.long)
    target_codes = torch.full((n_cells,), network.condition_encoder[target], dtype=torch.long)
    with torch.no_grad():
        z_mean, _ = network.encoder(encoder_input, source_codes)
        decoded = network.decoder(z_mean, target_codes)[0]
    if likelihood == "mse":
        return decoded.numpy()
    return np.log1p(decoded.numpy() * library_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--condition-key", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--settings", choices=list(SETTINGS), default="defaults")
    parser.add_argument("--likelihood", choices=["mse", "nb"], default="mse")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="default: scArches' own (400, early stopping)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--library-size", type=float, required=True, help="counts per cell of an nb prediction (log1p of them)"
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    adata = ad.read_h5ad(args.input)
    pred = fit_predict(
        adata, args.condition_key, args.source, args.target, args.settings, args.likelihood, args.seed, args.epochs,
        library_size=args.library_size,
    )  # fmt: skip
    np.save(args.output, pred.astype(np.float32))


if __name__ == "__main__":
    main()
