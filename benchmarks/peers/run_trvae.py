"""This package's recommended pipeline on one split, run like a peer: in its own process, timed and measured alike.

Runs under the package's own environment (``.venv``, ``make .venv/.installed``), not a peer's. A user's path:
:func:`scvi_trvae.model_selection.fit_recommended` on the training cells (three default members, the blend chosen
by four inner held-out cell types), then :meth:`scvi_trvae.TRVAEEnsemble.predict_perturbation` of the held-out
type's control cells. On count data sets the members model ``layers['counts']`` (``nb``) and predict on the
``log1p`` scale of counts per 10,000, as the benchmark's "trVAE ensemble + shrink" does. The prediction is that
row's; what this adds is the fit time and peak memory of a fresh process, measured as every peer's are.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from _protocol import cells_to_predict, main, training_cells


def fit_predict(cells: Any, args: argparse.Namespace) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the recommended pipeline on the training cells; predict the held-out type's control cells."""
    import torch

    from scvi_trvae.model_selection import fit_recommended

    torch.set_num_threads(args.threads)
    train = training_cells(cells)
    setup_kwargs = {"layer": "counts", "is_count_data": True} if "counts" in cells.layers else {}
    length = {} if args.epochs is None else {"max_epochs": args.epochs}
    ensemble, selection = fit_recommended(
        train, cell_type_key=args.cell_type_key, condition_key=args.condition_key, source=args.source,
        target=args.target, seed=args.seed, progress_bar=False, setup_kwargs=setup_kwargs, accelerator="cpu",
        **length,
    )  # fmt: skip
    pred = ensemble.predict_perturbation(cells_to_predict(cells), source=args.source, target=args.target)
    settings = {
        "pipeline": "fit_recommended (3 default members, 4 inner folds)",
        "epochs": args.epochs or "the configuration's 1,500 minibatch steps",
        "shift_weight": selection.best_shift_weight,
        "deviation_weight": selection.best_deviation_weight,
        "reference_shift": selection.best_reference_shift,
        "spread_scaling": selection.best_spread_scaling,
        "likelihood_data": "counts (nb)" if setup_kwargs else "log-normalised",
        "device": "cpu",
    }
    return np.asarray(pred.X.toarray() if hasattr(pred.X, "toarray") else pred.X), settings


if __name__ == "__main__":
    main(fit_predict, ["scvi-trvae", "scvi-tools", "torch", "anndata", "numpy"])
