"""The protocol between the benchmark and a peer's runner; imported by every ``run_NAME.py`` in its own environment.

A runner is called as ``python run_NAME.py IN.h5ad OUT_DIR [options]`` (:func:`parse_args`). ``IN.h5ad`` holds the
training cells (``obs['split'] == 'train'``) and the held-out type's control cells to predict
(``obs['split'] == 'predict'``; the same cells are also among the training cells, as in every peer's tutorial);
``X`` is log-normalised (log1p of counts per 10,000, the benchmark's scale) and, on count data sets,
``layers['counts']`` holds the raw counts. ``obs`` has the condition and cell-type columns and ``cell_id`` (the
cell's name in the split, shared by a cell's ``train`` and ``predict`` rows).

The runner writes ``OUT_DIR/pred.npy`` (the ``predict`` cells x genes, log-normalised) and ``OUT_DIR/meta.json``:
fit and predict wall time, peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``), the settings and
the versions of the peer's packages. Only the standard library, NumPy and anndata are imported here: this runs
under Python 3.10 to 3.12 with whatever versions a peer pins.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: What a runner's ``fit_predict`` gets: the cells, the parsed options; it returns (prediction, settings used).
FitPredict = Callable[[Any, argparse.Namespace], "tuple[np.ndarray, dict[str, Any]]"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every runner takes."""
    parser = argparse.ArgumentParser(description="Fit a peer on IN.h5ad's training cells; predict its predict cells.")
    parser.add_argument("input", type=Path, help="IN.h5ad (obs['split']: train / predict)")
    parser.add_argument("out_dir", type=Path, help="where pred.npy and meta.json go")
    parser.add_argument("--condition-key", default="condition")
    parser.add_argument("--cell-type-key", default="cell_type")
    parser.add_argument("--cell-type", required=True, help="the held-out cell type")
    parser.add_argument("--source", required=True, help="the control condition")
    parser.add_argument("--target", required=True, help="the condition to predict")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="training epochs (default: the peer's tutorial setting)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def versions(distributions: list[str]) -> dict[str, str]:
    """Installed versions of ``distributions`` (``"absent"`` for those not installed)."""
    found = {}
    for name in distributions:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def log_normalise(mean_counts: np.ndarray, library_size: float = 1e4) -> np.ndarray:
    """``log1p`` of expected counts scaled to ``library_size`` per cell (the benchmark's scale)."""
    totals = np.clip(mean_counts.sum(axis=1, keepdims=True), 1e-12, None)
    return np.log1p(mean_counts / totals * library_size).astype(np.float32)


def dense(matrix: Any) -> np.ndarray:
    """A dense float32 copy of a NumPy, SciPy sparse or JAX/torch-converted matrix."""
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=np.float32)


def main(fit_predict: FitPredict, distributions: list[str], argv: list[str] | None = None) -> None:
    """Run a peer: read the cells, time ``fit_predict``, check its shape, write ``pred.npy`` and ``meta.json``."""
    args = parse_args(argv)
    import anndata as ad

    cells = ad.read_h5ad(args.input)
    n_predict = int((cells.obs["split"] == "predict").sum())
    start, start_cpu = time.perf_counter(), time.process_time()
    pred, settings = fit_predict(cells, args)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    pred = dense(pred)
    if pred.shape != (n_predict, cells.n_vars):
        raise ValueError(f"the peer predicted shape {pred.shape}, expected {(n_predict, cells.n_vars)}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    np.save(args.out_dir / "pred.npy", pred)
    meta = {
        "fit_predict_seconds": seconds, "fit_predict_cpu_seconds": cpu_seconds, "peak_rss_mb": peak_rss_mb(),
        "settings": settings, "versions": versions(distributions), "python": sys.version.split()[0],
        "threads": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }  # fmt: skip
    (args.out_dir / "meta.json").write_text(json.dumps(meta, indent=1, default=str))


def training_cells(cells: Any) -> Any:
    """The ``train`` rows of the runner's input (a copy)."""
    return cells[cells.obs["split"] == "train"].copy()


def cells_to_predict(cells: Any) -> Any:
    """The ``predict`` rows of the runner's input (a copy), in the order the prediction must have."""
    return cells[cells.obs["split"] == "predict"].copy()
