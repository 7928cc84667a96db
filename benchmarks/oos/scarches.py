"""scArches' ``TRVAE`` as a benchmark method, fitted in its own environment by ``benchmarks/_scarches_runner.py``."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import anndata as ad
import numpy as np
import torch

from . import paths
from .expression import TARGET_LIBRARY_SIZE
from .registry import AUTO_EPOCHS, NotApplicable
from .splits import Split


def _runner_input(split: Split, layer: str | None) -> ad.AnnData:
    """Training cells and the cells to predict in one AnnData, told apart by ``obs['split']``."""
    cells = ad.concat([split.train, split.control], label="split", keys=["train", "predict"], index_unique="-")
    return ad.AnnData(
        X=cells.layers[layer] if layer else cells.X, obs=cells.obs[[split.condition_key, "split"]], var=cells.var[[]]
    )


def fit_predict_scarches(
    split: Split, seed: int, epochs: int | str, *, settings: Literal["defaults", "paper"] = "defaults"
) -> np.ndarray:
    """scArches' ``TRVAE``, fitted in its own environment by ``benchmarks/_scarches_runner.py``.

    ``settings="defaults"`` models raw counts (``nb``, scArches' default) where the data set has them and
    log-normalised data (``mse``) otherwise; ``"paper"`` always uses log-normalised data and ``mse``.
    """
    python = paths.SCARCHES_PYTHON
    if not python.exists():
        raise NotApplicable(f"no scArches environment at {python}; create it with `make scarches-venv`")
    likelihood = "nb" if split.counts and settings == "defaults" else "mse"
    cells = _runner_input(split, "counts" if likelihood == "nb" else None)
    with tempfile.TemporaryDirectory() as tmp:
        data_path, pred_path = Path(tmp) / "cells.h5ad", Path(tmp) / "pred.npy"
        cells.write_h5ad(data_path)
        command = [
            str(python), str(paths.BENCH_DIR / "_scarches_runner.py"), str(data_path), str(pred_path),
            "--condition-key", split.condition_key, "--source", split.source, "--target", split.target,
            "--settings", settings, "--likelihood", likelihood, "--seed", str(seed),
            "--threads", str(max(torch.get_num_threads(), 1)), "--library-size", str(TARGET_LIBRARY_SIZE),
        ]  # fmt: skip
        if epochs != AUTO_EPOCHS:
            command += ["--epochs", str(epochs)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"scArches runner failed: {result.stderr.strip().splitlines()[-1:]}")
        return np.load(pred_path)
