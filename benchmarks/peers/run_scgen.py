"""scGen as pertpy ships it (``pertpy.tl.Scgen``, pertpy 1.0.3, JAX) on one split; runs in ``.venv-peer-scgen``.

Settings from pertpy's scGen tutorial and usage page (pertpy.readthedocs.io, ``tutorials/notebooks/
scgen_perturbation_prediction`` and ``usage/usage.md``, "Example implementation"): ``Scgen.setup_anndata(train,
batch_key=condition, labels_key=cell_type)``, ``Scgen(train)`` with its defaults (800 hidden, 2 layers, latent 100,
dropout 0.2), ``train(max_epochs=100, batch_size=32, early_stopping=True, early_stopping_patience=25)``, then
``predict(ctrl_key, stim_key, celltype_to_predict=...)`` on log-normalised data. The training cells include the
held-out type's control cells, which ``predict`` takes from the model's AnnData.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _protocol import cells_to_predict, main, training_cells

#: The tutorial's ``train`` arguments.
TRAIN = {"max_epochs": 100, "batch_size": 32, "early_stopping": True, "early_stopping_patience": 25}


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Train pertpy's scGen on the training cells; predict the held-out type's control cells under the target."""
    import pertpy as pt
    import scvi

    scvi.settings.seed = args.seed
    train = training_cells(cells)
    train.obs_names = train.obs["cell_id"].to_numpy()
    pt.tl.Scgen.setup_anndata(train, batch_key=args.condition_key, labels_key=args.cell_type_key)
    model = pt.tl.Scgen(train)
    train_kwargs = dict(TRAIN, **({} if args.epochs is None else {"max_epochs": args.epochs}))
    model.train(**train_kwargs, accelerator="cpu", enable_progress_bar=False)
    pred, _ = model.predict(ctrl_key=args.source, stim_key=args.target, celltype_to_predict=args.cell_type)
    pred = pred[cells_to_predict(cells).obs["cell_id"].to_numpy()]  # the benchmark's order
    epochs_run = len(model.history_["elbo_train"]) if getattr(model, "history_", None) else None
    settings = {"train": train_kwargs, "model": "Scgen defaults", "epochs_run": epochs_run}
    return np.asarray(pred.X), settings


if __name__ == "__main__":
    main(fit_predict, ["pertpy", "scvi-tools", "jax", "flax", "scanpy", "anndata", "numpy"])
