"""Helpers of ``scvi-trvae predict``: load the model, match its genes, predict in chunks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._support import TRAINING_RECORD, CliError

if TYPE_CHECKING:
    import anndata as ad

    from scvi_trvae._ensemble import TRVAEEnsemble
    from scvi_trvae.model._model import TRVAE

PREDICTION_CHUNK = 5_000
"""Cells predicted per call of ``predict_perturbation`` by a single model (each chunk under one progress step)."""


def load_model(model_dir: Path) -> TRVAE | TRVAEEnsemble:
    """Load what ``train`` saved in ``model_dir``: an ensemble, or a single model without its AnnData."""
    from scvi_trvae._ensemble import TRVAEEnsemble
    from scvi_trvae.model._model import TRVAE

    if not model_dir.is_dir():
        raise CliError(f"no such model folder: {model_dir}")
    try:
        return TRVAEEnsemble.load(model_dir)  # `train` saves an ensemble with its training cells
    except FileNotFoundError:  # no ensemble manifest: a single model
        pass
    try:
        return TRVAE.load(str(model_dir), adata=False)  # `train` saves a single model without its AnnData
    except Exception as err:  # scvi-tools raises several types for a folder without a valid model
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CliError(f"{model_dir} does not hold a saved scvi-trvae model ({reason})") from err


def with_model_genes(adata: ad.AnnData, genes: Sequence[str], data: Path, model_dir: Path) -> ad.AnnData:
    """Return ``adata`` with the model's genes in the model's order, or say which genes ``data`` lacks."""
    import pandas as pd

    genes = pd.Index(genes)
    if adata.var_names.equals(genes):
        return adata
    missing = genes.difference(adata.var_names, sort=False)
    if len(missing):
        record = model_dir / TRAINING_RECORD
        trained_on = json.loads(record.read_text()).get("data") if record.is_file() else None
        raise CliError(
            f"{data} lacks {len(missing)} of the model's {len(genes)} genes (e.g. {', '.join(missing[:5])}): "
            "DATA must hold every gene the model was trained on"
            + (f" (those of {trained_on})" if trained_on else "")
            + "; extra genes and another gene order are fine"
        )
    return adata[:, genes].copy()


def check_ensemble_options(ensemble: TRVAEEnsemble, cell_type_key: str | None, n_samples: int, mode: str) -> None:
    """Refuse what an ensemble's prediction does not do."""
    if n_samples != 0 or mode != "counterfactual":
        raise CliError("an ensemble predicts in counterfactual mode without draws; drop --n-samples and --mode")
    if (ensemble.shift_weight < 1 or ensemble.deviation_weight != 1) and cell_type_key is None:
        raise CliError(
            f"this ensemble blends its shift with the other cell types' (w = {ensemble.shift_weight:g}, "
            f"lambda = {ensemble.deviation_weight:g}): "
            "give --cell-type-key (the cell types it was trained with) and --cell-type"
        )


def predict_in_chunks(model, adata, indices, source, target, n_samples, mode, seed) -> ad.AnnData:
    """Predict ``indices`` in chunks of :data:`PREDICTION_CHUNK` cells under a progress bar.

    Draws use seed ``seed + chunk number``, so the same arguments give the same prediction.
    """
    import anndata as ad
    from rich.progress import Progress

    chunks = [indices[i : i + PREDICTION_CHUNK] for i in range(0, len(indices), PREDICTION_CHUNK)]
    parts = []
    with Progress(transient=True) as progress:
        task = progress.add_task("Predicting", total=len(indices))
        for number, chunk in enumerate(chunks):
            parts.append(
                model.predict_perturbation(
                    adata, source=source, target=target, indices=chunk, n_samples=n_samples, mode=str(mode),
                    seed=seed + number,
                )
            )  # fmt: skip
            progress.advance(task, len(chunk))
    return parts[0] if len(parts) == 1 else ad.concat(parts, merge="same", uns_merge="first")
