"""The measurements of ``benchmarks/speed.py``, each run by ``speed.py --worker KIND SPEC`` in its own process.

The scArches workers (``train-scarches``, ``predict-scarches``, ``default-train`` of scArches) run in
scArches' environment: they import only the standard library, numpy, scipy, anndata, torch and
scArches, never this package.
"""

from __future__ import annotations

import contextlib
import json
import resource
import statistics
import time
from pathlib import Path

from _speed_data import load_data, synthetic_h5ad_path, write_synthetic_h5ad


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def throughput(step_starts: list[float], batch_size: int, warmup: int) -> float:
    """Cells per second from the median interval between step starts after ``warmup`` steps."""
    intervals = [b - a for a, b in zip(step_starts[warmup:], step_starts[warmup + 1 :], strict=False)]
    return batch_size / statistics.median(intervals)


# ---------------------------------------------------------------------------------------- workers
def worker_floor(spec: dict) -> dict:
    """Measured matmul rate (GFLOP/s) in fp32 and bf16 on one thread, on a first-layer-shaped product."""
    import torch

    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(spec["batch_size"], spec["n_genes"], dtype=dtype)
        b = torch.randn(spec["n_genes"], spec["n_hidden"], dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        flops = 2 * spec["batch_size"] * spec["n_genes"] * spec["n_hidden"]
        rates[str(dtype).removeprefix("torch.")] = flops / statistics.median(times) / 1e9
    return {"gflops": rates}


def worker_train_trvae(spec: dict) -> dict:
    """Steps of this package's TRVAE (in memory or backed, CPU or GPU): throughput and peak RSS."""
    import lightning.pytorch as pl
    import scvi

    from scvi_trvae import TRVAE

    adata = load_data(spec["data"])
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **spec["architecture"])
    starts: list[float] = []

    class StepClock(pl.Callback):
        def on_train_batch_start(self, *args, **kwargs):
            starts.append(time.perf_counter())

    accelerator = spec.get("accelerator", "cpu")
    start = time.perf_counter()
    model.train(
        max_steps=spec["steps"], max_epochs=10_000, batch_size=spec["batch_size"], train_size=1.0,
        accelerator=accelerator, devices=1, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[StepClock()], precision=spec.get("precision", "32-true"),
    )  # fmt: skip
    result = {
        "cells_per_s": throughput(starts, spec["batch_size"], spec["warmup"]),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
    }
    if accelerator == "gpu":
        import torch

        result["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        result["device"] = torch.cuda.get_device_name()
    return result


class _StopTraining(Exception):
    pass


def worker_train_scarches(spec: dict) -> dict:
    """Steps of scArches' TRVAE at the same architecture (its own environment)."""
    import anndata as ad

    ad.read = ad.read_h5ad  # scArches 0.6.1 imports the removed anndata.read
    import scarches
    from scarches.trainers.trvae.trainer import Trainer

    adata = load_data(spec["data"])
    architecture = spec["architecture"]
    starts: list[float] = []
    original = Trainer.on_iteration

    def on_iteration(self, batch_data):
        starts.append(time.perf_counter())
        if len(starts) > spec["steps"]:
            raise _StopTraining
        original(self, batch_data)

    Trainer.on_iteration = on_iteration
    model = scarches.models.TRVAE(
        adata, condition_key="condition", conditions=["control", "stimulated"], recon_loss="mse", mmd_on="y",
        hidden_layer_sizes=[architecture["n_hidden"]] * architecture["n_layers"], latent_dim=architecture["n_latent"],
        dr_rate=architecture["dropout_rate"], use_bn=True, use_ln=False,
    )  # fmt: skip
    start = time.perf_counter()
    with contextlib.suppress(_StopTraining):
        model.train(
            n_epochs=10_000, batch_size=spec["batch_size"], train_frac=1.0, monitor=False, use_early_stopping=False
        )
    return {
        "cells_per_s": throughput(starts, spec["batch_size"], spec["warmup"]),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
    }


def worker_predict_trvae(spec: dict) -> dict:
    """predict_perturbation of the control cells (optionally under a bfloat16 autocast); peak RSS above the start."""
    import numpy as np
    import scvi
    import torch

    from scvi_trvae import TRVAE

    adata = load_data(spec["data"])
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **spec["architecture"])
    model.is_trained_ = True  # untrained weights: the speed is the same
    control = np.flatnonzero(adata.obs["condition"].to_numpy() == "control")[: spec["n_cells"]]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if spec.get("autocast") else contextlib.nullcontext()
    start_rss = current_rss_mb()
    start = time.perf_counter()
    with autocast:
        predicted = model.predict_perturbation(adata, source="control", target="stimulated", indices=control,
                                               mode=spec["mode"], batch_size=spec["batch_size"])  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "cells_per_s": len(control) / seconds,
        "peak_above_start_mb": peak_rss_mb() - start_rss,
        "output_mb": predicted.X.nbytes / 2**20,
    }


def worker_predict_scarches(spec: dict) -> dict:
    """scArches' encoder -> decoder forward of the same cells, in minibatches, into one array."""
    import anndata as ad
    import numpy as np
    import torch

    ad.read = ad.read_h5ad
    import scarches

    adata = load_data(spec["data"])
    architecture = spec["architecture"]
    model = scarches.models.TRVAE(
        adata, condition_key="condition", conditions=["control", "stimulated"], recon_loss="mse", mmd_on="y",
        hidden_layer_sizes=[architecture["n_hidden"]] * architecture["n_layers"], latent_dim=architecture["n_latent"],
        dr_rate=architecture["dropout_rate"], use_bn=True, use_ln=False,
    )  # fmt: skip
    network = model.model.eval()
    control = np.flatnonzero(adata.obs["condition"].to_numpy() == "control")[: spec["n_cells"]]
    matrix = adata.X[control]
    start_rss = current_rss_mb()
    start = time.perf_counter()
    parts = []
    with torch.no_grad():
        for first in range(0, len(control), spec["batch_size"]):
            x = torch.as_tensor(matrix[first : first + spec["batch_size"]].toarray())
            codes = torch.zeros(len(x), dtype=torch.long)
            z_mean, _ = network.encoder(x, codes)
            parts.append(network.decoder(z_mean, codes + 1)[0].numpy())
    output = np.concatenate(parts)
    seconds = time.perf_counter() - start
    return {
        "cells_per_s": len(control) / seconds,
        "peak_above_start_mb": peak_rss_mb() - start_rss,
        "output_mb": output.nbytes / 2**20,
    }


def _default_train_scarches(cap_s: float) -> dict:
    """scArches' default ``train()`` on Kang, stopped when it runs past ``cap_s`` seconds."""
    import anndata as ad

    ad.read = ad.read_h5ad
    import scarches
    from scarches.trainers.trvae.trainer import Trainer

    adata = load_data("kang")
    model = scarches.models.TRVAE(adata, condition_key="condition", recon_loss="mse")
    original = Trainer.on_iteration

    def on_iteration(self, batch_data):
        if time.perf_counter() - start > cap_s:
            raise _StopTraining
        original(self, batch_data)

    Trainer.on_iteration = on_iteration
    start = time.perf_counter()
    finished = True
    try:
        model.train(monitor=False)
    except _StopTraining:
        finished = False
    epochs = model.trainer.epoch + int(finished)  # when stopped, the epoch in progress does not count
    return {"wall_s": time.perf_counter() - start, "epochs": epochs, "finished": finished, "cap_s": cap_s}


def worker_default_train(spec: dict) -> dict:
    """Each package's default ``train()`` on Kang (all genes): wall time and epochs (scArches' capped)."""
    if spec["package"] == "scarches":
        return _default_train_scarches(spec["cap_s"])
    import scvi

    from scvi_trvae import TRVAE

    adata = load_data("kang")
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    start = time.perf_counter()
    model.train(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    return {"wall_s": time.perf_counter() - start, "epochs": int(model.history["train_loss"].shape[0])}


def worker_write_disk(spec: dict) -> dict:
    """Write the synthetic set to a cached ``.h5ad`` block by block; its path and the writing's cost.

    The cost of the run that wrote the file is kept beside it, so a run that reuses it reports it too.
    """
    path = synthetic_h5ad_path(spec["n_cells"], spec["n_genes"], Path(spec["cache"]))
    record = path.with_suffix(".json")
    if path.exists() and record.exists():
        return {**json.loads(record.read_text()), "cached": True}
    path.unlink(missing_ok=True)  # a file without the record of its writing is written again, to measure it
    start = time.perf_counter()
    write_synthetic_h5ad(spec["n_cells"], spec["n_genes"], Path(spec["cache"]))
    result = {"path": str(path), "file_mb": path.stat().st_size / 2**20,
              "wall_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}  # fmt: skip
    record.write_text(json.dumps(result))
    return {**result, "cached": False}


WORKERS = {
    "write-disk": worker_write_disk,
    "floor": worker_floor,
    "train-trvae": worker_train_trvae,
    "train-scarches": worker_train_scarches,
    "predict-trvae": worker_predict_trvae,
    "predict-scarches": worker_predict_scarches,
    "default-train": worker_default_train,
}
