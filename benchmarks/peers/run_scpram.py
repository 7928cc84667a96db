"""scPRAM (PyPI ``scpram`` 0.0.3) on one split; runs in ``.venv-peer-scpram`` (``make peer-scpram``).

Settings from scPRAM's own README and tutorial (github.com/jiang-q19/scPRAM, ``README.md`` "Quick Start" and
``Tutorial/PBMC_cross_celltype_predict.ipynb``): ``models.SCPRAM(input_dim=n_genes)`` with its defaults (latent 100,
hidden 1000, noise rate 0.1, KL weight 5e-4), ``train_SCPRAM(train, epochs=100)`` (batch 128, lr 5e-4 by default)
on log-normalised data, then ``model.predict(train_adata=train, cell_to_pred=..., key_dic=..., ratio=0.005)``.
The training cells include the held-out type's control cells, which ``predict`` takes from ``train_adata``.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _protocol import cells_to_predict, main, training_cells

#: The tutorial's training epochs and prediction ratio ("The ratio need to vary with the size of dataset").
EPOCHS = 100
RATIO = 0.005


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Train scPRAM on the training cells; predict the held-out type's control cells under the target."""
    import torch
    from scpram import models

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    train = training_cells(cells)
    train.obs_names = train.obs["cell_id"].to_numpy()
    key_dic = {
        "condition_key": args.condition_key, "cell_type_key": args.cell_type_key, "ctrl_key": args.source,
        "stim_key": args.target, "pred_key": "predict",
    }  # fmt: skip
    epochs = EPOCHS if args.epochs is None else args.epochs
    model = models.SCPRAM(input_dim=train.n_vars, device="cpu").to("cpu")
    model.train_SCPRAM(train, epochs=epochs)
    pred = model.predict(train_adata=train, cell_to_pred=args.cell_type, key_dic=key_dic, ratio=RATIO)
    wanted = cells_to_predict(cells).obs["cell_id"].to_numpy()
    pred = pred[wanted]  # scPRAM returns the type's control cells in the training order; the benchmark's order
    settings = {"epochs": epochs, "ratio": RATIO, "model": "SCPRAM defaults (latent 100, hidden 1000)", "device": "cpu"}
    return np.asarray(pred.X), settings


if __name__ == "__main__":
    main(fit_predict, ["scpram", "torch", "scanpy", "anndata", "pot", "numpy"])
