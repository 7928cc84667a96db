"""Training and prediction speed of scvi-trvae against scArches' TRVAE, and the matmul floor.

One command; every measurement runs in its own subprocess (one torch thread) so that peak RSS is
per measurement, and this package's and scArches' runs alternate. scArches runs in its own
environment (``make scarches-venv`` builds ``.venv-scarches``); without it its rows say so.

    python benchmarks/speed.py            # full run, < 30 min on 2 cores
    python benchmarks/speed.py --quick    # seconds: tiny synthetic data, this package only

Writes ``benchmarks/results/speed.json`` (``--output``) and prints a markdown table (also written
to ``--markdown`` when given). Throughput is cells per second from the median interval between
training steps after warm-up (data loading included, validation off on both sides).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KANG = ROOT.parent / "shared" / "data" / "kang2018_pbmc_ifnb_lognorm.h5ad"
SCARCHES_PYTHON = ROOT / ".venv-scarches" / "bin" / "python"
RESULTS = Path(__file__).parent / "results" / "speed.json"
#: The architecture of the issue's comparison: encoder genes -> 800 -> 800, z 20, MMD on y, MSE, batch norm.
ARCHITECTURE = {"n_hidden": 800, "n_layers": 2, "n_latent": 20, "dropout_rate": 0.2}
QUICK_ARCHITECTURE = {"n_hidden": 64, "n_layers": 2, "n_latent": 8, "dropout_rate": 0.2}
SYNTHETIC_GENES, SYNTHETIC_DENSITY = 2000, 0.05
WORKER_TIMEOUT = 600


# ---------------------------------------------------------------------------------------- data
def load_data(name: str):
    """``"kang"`` (the shared file) or ``"synthetic:N[:GENES]"``: sparse log-normalised, two conditions."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    if name == "kang":
        adata = ad.read_h5ad(KANG)
        adata.obs["condition"] = adata.obs["condition"].astype(str)
        return adata
    _, n_cells, *rest = name.split(":")
    n_cells, n_genes = int(n_cells), int(rest[0]) if rest else SYNTHETIC_GENES
    rng = np.random.default_rng(0)
    per_row = max(int(n_genes * SYNTHETIC_DENSITY), 1)
    indices = np.sort(rng.integers(0, n_genes, size=(n_cells, per_row), dtype=np.int32), axis=1)
    values = np.log1p(rng.gamma(2.0, 1.5, size=n_cells * per_row)).astype(np.float32)
    matrix = sp.csr_matrix(
        (values, indices.ravel(), np.arange(0, n_cells * per_row + 1, per_row, dtype=np.int64)),
        shape=(n_cells, n_genes),
    )
    matrix.sum_duplicates()
    adata = ad.AnnData(matrix)
    adata.obs["condition"] = np.where(rng.random(n_cells) < 0.5, "control", "stimulated")
    return adata


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
    """Steps of this package's TRVAE; the start time of every step."""
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

    start = time.perf_counter()
    model.train(
        max_steps=spec["steps"], max_epochs=10_000, batch_size=spec["batch_size"], train_size=1.0,
        accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, callbacks=[StepClock()],
        precision=spec.get("precision", "32-true"),
    )  # fmt: skip
    return {
        "cells_per_s": throughput(starts, spec["batch_size"], spec["warmup"]),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
    }


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
    """predict_perturbation of every control cell; peak RSS above the start, and the output's size."""
    import numpy as np
    import scvi

    from scvi_trvae import TRVAE

    adata = load_data(spec["data"])
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, **spec["architecture"])
    model.is_trained_ = True  # untrained weights: the speed is the same
    control = np.flatnonzero(adata.obs["condition"].to_numpy() == "control")[: spec["n_cells"]]
    start_rss = current_rss_mb()
    start = time.perf_counter()
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


def worker_default_train(spec: dict) -> dict:
    """Each package's default ``train()`` on Kang (all genes): wall time and epochs."""
    if spec["package"] == "scarches":
        import anndata as ad

        ad.read = ad.read_h5ad
        import scarches

        adata = load_data("kang")
        model = scarches.models.TRVAE(adata, condition_key="condition", recon_loss="mse")
        start = time.perf_counter()
        model.train(monitor=False)
        return {"wall_s": time.perf_counter() - start, "epochs": len(model.trainer.logs["epoch_loss"])}
    import scvi

    from scvi_trvae import TRVAE

    adata = load_data("kang")
    scvi.settings.seed = 0
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    start = time.perf_counter()
    model.train(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    return {"wall_s": time.perf_counter() - start, "epochs": int(model.history["train_loss"].shape[0])}


WORKERS = {
    "floor": worker_floor,
    "train-trvae": worker_train_trvae,
    "train-scarches": worker_train_scarches,
    "predict-trvae": worker_predict_trvae,
    "predict-scarches": worker_predict_scarches,
    "default-train": worker_default_train,
}


def run_worker(kind: str, spec: dict, python: Path | str = sys.executable) -> dict[str, Any]:
    """Run one measurement in a fresh process with one torch thread; its JSON result or the error."""
    command = [str(python), __file__, "--worker", kind, json.dumps(spec)]
    env_path = str(ROOT / "src") if "scarches" not in kind else ""
    env = {"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout)[-500:]}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------- plan and report
def flops_per_cell(n_genes: int, architecture: dict, n_conditions: int = 2) -> float:
    """FLOPs per cell of one training step (forward, backward; no input gradient of the first layer)."""
    hidden, latent = architecture["n_hidden"], architecture["n_latent"]
    layers = [(n_genes + n_conditions, hidden)] + [(hidden, hidden)] * (architecture["n_layers"] - 1)
    layers += [(hidden, 2 * latent), (latent + n_conditions, hidden)]
    layers += [(hidden, hidden)] * (architecture["n_layers"] - 1) + [(hidden, n_genes)]
    forward = 2 * sum(n_in * n_out for n_in, n_out in layers)
    return 3 * forward - 2 * n_genes * hidden


def n_genes_of(data: str) -> int:
    if data == "kang":
        return 6998
    parts = data.split(":")
    return int(parts[2]) if len(parts) > 2 else SYNTHETIC_GENES


def training_plan(quick: bool) -> tuple[list[str], list[int], dict, dict]:
    if quick:
        return ["synthetic:600:200"], [64], QUICK_ARCHITECTURE, {"steps": 12, "warmup": 3}
    datasets = ["kang", "synthetic:20000", "synthetic:100000", "synthetic:1000000"]
    return datasets, [128, 512], ARCHITECTURE, {"steps": 40, "warmup": 8}


def measure_training(quick: bool, scarches: bool) -> list[dict]:
    datasets, batch_sizes, architecture, steps = training_plan(quick)
    rows = []
    for data in datasets:
        if data == "kang" and not KANG.exists():
            continue
        for batch_size in batch_sizes:
            spec = {"data": data, "batch_size": batch_size, "architecture": architecture, **steps}
            shape = {"batch_size": batch_size, "n_genes": n_genes_of(data), "n_hidden": architecture["n_hidden"]}
            floor = run_worker("floor", {**shape, "repeats": 5 if quick else 20})
            row = {"data": data, "batch_size": batch_size, "gflops": floor.get("gflops"),
                   "flops_per_cell": flops_per_cell(n_genes_of(data), architecture)}  # fmt: skip
            row["trvae"] = run_worker("train-trvae", spec)
            if scarches:
                row["scarches"] = run_worker("train-scarches", spec, SCARCHES_PYTHON)
            if data == "kang":
                row["trvae_bf16_mixed"] = run_worker("train-trvae", {**spec, "precision": "bf16-mixed"})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def measure_prediction(quick: bool, scarches: bool) -> list[dict]:
    data, n_cells = ("synthetic:600:200", 300) if quick else ("synthetic:200000", 100_000)
    architecture = QUICK_ARCHITECTURE if quick else ARCHITECTURE
    rows = []
    for mode in ("counterfactual", "mean"):
        spec = {"data": data, "n_cells": n_cells, "architecture": architecture, "mode": mode, "batch_size": 512}
        row = {"mode": mode, "n_cells": n_cells, "trvae": run_worker("predict-trvae", spec)}
        if scarches:
            row["scarches"] = run_worker("predict-scarches", spec, SCARCHES_PYTHON)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _value(result: dict | None, key: str, fmt: str = "{:.0f}") -> str:
    if not result:
        return "not run"
    if "error" in result:
        return "failed"
    return fmt.format(result[key])


def _ratio(ours: dict | None, theirs: dict | None, key: str = "cells_per_s") -> str:
    if not ours or not theirs or "error" in ours or "error" in theirs:
        return "n/a"
    return f"{ours[key] / theirs[key]:.2f}x"


def _floor_fraction(row: dict, result: dict | None, dtype: str = "float32") -> str:
    if not result or "error" in result or not row.get("gflops"):
        return "n/a"
    floor = row["gflops"][dtype] * 1e9 / row["flops_per_cell"]
    return f"{100 * result['cells_per_s'] / floor:.0f}%"


def markdown(report: dict) -> str:
    """The report as markdown tables."""
    lines = [
        "| data | batch | trVAE cells/s | scArches cells/s | ratio | trVAE peak RSS MB | scArches peak RSS MB "
        "| trVAE % fp32 floor | bf16-mixed cells/s | bf16-mixed % fp32 floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["training"]:
        ours, theirs, bf16 = row.get("trvae"), row.get("scarches"), row.get("trvae_bf16_mixed")
        lines.append(
            f"| {row['data']} | {row['batch_size']} | {_value(ours, 'cells_per_s')} | {_value(theirs, 'cells_per_s')} "
            f"| {_ratio(ours, theirs)} | {_value(ours, 'peak_rss_mb')} | {_value(theirs, 'peak_rss_mb')} "
            f"| {_floor_fraction(row, ours)} | {_value(bf16, 'cells_per_s')} | {_floor_fraction(row, bf16)} |"
        )
    lines += ["", "| prediction mode | cells | trVAE cells/s | scArches forward cells/s | ratio "
              "| trVAE peak above start MB | scArches peak above start MB | output MB |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in report["prediction"]:
        ours, theirs = row.get("trvae"), row.get("scarches")
        lines.append(
            f"| {row['mode']} | {row['n_cells']} | {_value(ours, 'cells_per_s')} | {_value(theirs, 'cells_per_s')} "
            f"| {_ratio(ours, theirs)} | {_value(ours, 'peak_above_start_mb')} "
            f"| {_value(theirs, 'peak_above_start_mb')} | {_value(ours, 'output_mb')} |"
        )
    if report.get("default_train"):
        lines += ["", "| default train() on Kang | wall s | epochs |", "|---|---|---|"]
        for package, result in report["default_train"].items():
            lines.append(f"| {package} | {_value(result, 'wall_s')} | {_value(result, 'epochs')} |")
    lines += ["", "GPU rows: not measured (no GPU lent to the run that produced this table)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data, this package only (seconds)")
    parser.add_argument("--no-scarches", action="store_true", help="skip scArches even if its environment exists")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        kind, spec = args.worker
        print(json.dumps(WORKERS[kind](json.loads(spec))), flush=True)
        return
    scarches = not args.quick and not args.no_scarches and SCARCHES_PYTHON.exists()
    start = time.perf_counter()
    report: dict[str, Any] = {
        "quick": args.quick,
        "scarches": "measured" if scarches else "not measured (no .venv-scarches, --quick or --no-scarches)",
        "training": measure_training(args.quick, scarches),
        "prediction": measure_prediction(args.quick, scarches),
        "default_train": {},
    }
    if not args.quick and KANG.exists():
        report["default_train"]["scvi-trvae"] = run_worker("default-train", {"package": "trvae"})
        if scarches:
            report["default_train"]["scArches"] = run_worker("default-train", {"package": "scarches"}, SCARCHES_PYTHON)
    report["total_s"] = round(time.perf_counter() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    table = markdown(report)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
