"""Training and prediction speed of scvi-trvae against scArches' TRVAE, and the matmul floor.

One command; every measurement runs in its own subprocess (one torch thread) so that peak RSS is
per measurement, and this package's and scArches' runs alternate. scArches runs in its own
environment (``make scarches-venv`` builds ``.venv-scarches``; ``--scarches-python`` points at
another); without it its rows say so.

    python benchmarks/speed.py                          # full plan, planned to take < 30 min on 2 cores
    python benchmarks/speed.py --only disk prediction   # re-measure some parts, keep the others
    python benchmarks/speed.py --quick                  # seconds: tiny data, this package only

Parts: ``training`` (Kang, synthetic 20k / 100k / 1M cells x 2,000 genes at batch 128 and 512,
bf16-mixed on Kang), ``prediction`` (100k cells, both modes, fp32 and under a bfloat16 autocast,
against scArches' forward), ``disk`` (the 1M-cell set written block by block to a cached ``.h5ad``
and trained from it backed: cells/s and peak RSS), ``default-train`` (each package's default
``train()`` on Kang; scArches' is stopped at a time cap) and ``gpu`` (this package's training on
CUDA, Kang and 1M cells; only where a CUDA device exists).

Writes ``benchmarks/results/speed.json`` (``--output``; with ``--only``, the other parts are kept
from the existing file) and prints markdown tables (also written to ``--markdown`` when given).
Throughput is cells per second from the median interval between training steps after warm-up
(data loading included, validation off on both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _speed_data import CACHE, KANG, ROOT, SYNTHETIC_GENES, parse_synthetic, synthetic_h5ad_path
from _speed_workers import WORKERS

SCARCHES_PYTHON = ROOT / ".venv-scarches" / "bin" / "python"
RESULTS = Path(__file__).parent / "results" / "speed.json"
#: The architecture of the issue's comparison: encoder genes -> 800 -> 800, z 20, MMD on y, MSE, batch norm.
ARCHITECTURE = {"n_hidden": 800, "n_layers": 2, "n_latent": 20, "dropout_rate": 0.2}
QUICK_ARCHITECTURE = {"n_hidden": 64, "n_layers": 2, "n_latent": 8, "dropout_rate": 0.2}
WORKER_TIMEOUT = 600
PARTS = ("training", "prediction", "disk", "default-train", "gpu")
#: Steps per training measurement (steps, warm-up steps not timed). scArches at batch 512 takes ~7 s
#: a step on one thread (71 cells/s in the last run), so it gets fewer steps: the plan's budget.
STEPS = {
    "trvae": {"steps": 30, "warmup": 6},
    "scarches": {128: {"steps": 30, "warmup": 6}, 512: {"steps": 10, "warmup": 2}},
}
QUICK_STEPS = {"steps": 12, "warmup": 3}
#: scArches' default train() (up to 400 epochs with early stopping) is stopped after this many seconds.
SCARCHES_DEFAULT_TRAIN_CAP_S = 300
#: Passed on to the workers, whose environment is otherwise cleared (CUDA device choice and libraries).
PASSED_ENVIRONMENT = ("HOME", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH")


def run_worker(kind: str, spec: dict, python: Path | str = sys.executable) -> dict[str, Any]:
    """Run one measurement in a fresh process with one torch thread; its JSON result or the error."""
    command = [str(python), __file__, "--worker", kind, json.dumps(spec)]
    env_path = str(ROOT / "src") if str(python) == sys.executable else ""  # this package only in its own env
    env = {"PYTHONPATH": env_path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    env |= {key: os.environ[key] for key in PASSED_ENVIRONMENT if key in os.environ}
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
    return 6998 if data == "kang" else parse_synthetic(data)[1]


@dataclass(frozen=True)
class Settings:
    """What one invocation measures with: quick or full plan, scArches' interpreter (None: skip it)."""

    quick: bool
    scarches_python: Path | None
    cache: Path

    @property
    def architecture(self) -> dict:
        return QUICK_ARCHITECTURE if self.quick else ARCHITECTURE

    def steps(self, package: str, batch_size: int) -> dict:
        if self.quick:
            return QUICK_STEPS
        return STEPS["trvae"] if package == "trvae" else STEPS["scarches"][batch_size]


def measure_training(settings: Settings) -> list[dict]:
    """Kang and the synthetic sets at batch 128 and 512: both packages alternating, bf16-mixed on Kang."""
    full = ["kang", "synthetic:20000", "synthetic:100000", "synthetic:1000000"]
    datasets = ["synthetic:600:200"] if settings.quick else full
    architecture = settings.architecture
    rows = []
    for data in datasets:
        if data == "kang" and not KANG.exists():
            continue
        for batch_size in [64] if settings.quick else [128, 512]:
            spec = {"data": data, "batch_size": batch_size, "architecture": architecture}
            shape = {"batch_size": batch_size, "n_genes": n_genes_of(data), "n_hidden": architecture["n_hidden"]}
            floor = run_worker("floor", {**shape, "repeats": 5 if settings.quick else 20})
            row = {"data": data, "batch_size": batch_size, "gflops": floor.get("gflops"),
                   "flops_per_cell": flops_per_cell(n_genes_of(data), architecture)}  # fmt: skip
            ours = {**spec, **settings.steps("trvae", batch_size)}
            row["trvae"] = run_worker("train-trvae", ours)
            if settings.scarches_python:
                theirs = {**spec, **settings.steps("scarches", batch_size)}
                row["scarches"] = run_worker("train-scarches", theirs, settings.scarches_python)
            if data == "kang":
                row["trvae_bf16_mixed"] = run_worker("train-trvae", {**ours, "precision": "bf16-mixed"})
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def measure_prediction(settings: Settings) -> list[dict]:
    """Both modes, in fp32 and under a bfloat16 autocast, against scArches' fp32 forward of the same cells."""
    data, n_cells = ("synthetic:600:200", 300) if settings.quick else ("synthetic:200000", 100_000)
    rows = []
    for mode in ("counterfactual", "mean"):
        spec = {
            "data": data,
            "n_cells": n_cells,
            "architecture": settings.architecture,
            "mode": mode,
            "batch_size": 512,
        }
        row = {"mode": mode, "n_cells": n_cells, "trvae": run_worker("predict-trvae", spec)}
        if settings.scarches_python:
            row["scarches"] = run_worker("predict-scarches", spec, settings.scarches_python)
        row["trvae_bf16_autocast"] = run_worker("predict-trvae", {**spec, "autocast": "bfloat16"})
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def measure_disk(settings: Settings) -> dict:
    """The 1M-cell set written to a cached ``.h5ad`` (own process), then trained from it backed."""
    n_cells, n_genes = (3000, 200) if settings.quick else (1_000_000, SYNTHETIC_GENES)
    generation = run_worker("write-disk", {"n_cells": n_cells, "n_genes": n_genes, "cache": str(settings.cache)})
    print(json.dumps(generation), flush=True)
    disk = {"data": f"{n_cells} cells x {n_genes} genes", "generation": generation, "rows": []}
    if "error" in generation:
        return disk
    for batch_size in [64] if settings.quick else [512, 128]:
        spec = {"data": f"backed:{synthetic_h5ad_path(n_cells, n_genes, settings.cache)}", "batch_size": batch_size,
                "architecture": settings.architecture, **settings.steps("trvae", batch_size)}  # fmt: skip
        row = {"data": f"synthetic:{n_cells}:{n_genes} backed", "batch_size": batch_size,
               "trvae": run_worker("train-trvae", spec)}  # fmt: skip
        disk["rows"].append(row)
        print(json.dumps(row), flush=True)
    return disk


def measure_default_train(settings: Settings) -> dict:
    """Each package's default ``train()`` on Kang (full plan only; scArches' stopped at its cap)."""
    if settings.quick or not KANG.exists():
        return {}
    results = {"scvi-trvae": run_worker("default-train", {"package": "trvae"})}
    if settings.scarches_python:
        spec = {"package": "scarches", "cap_s": SCARCHES_DEFAULT_TRAIN_CAP_S}
        results["scArches"] = run_worker("default-train", spec, settings.scarches_python)
    return results


def measure_gpu(settings: Settings) -> dict:
    """This package's training on a CUDA device, Kang and the 1M-cell set; says why when there is none."""
    import torch

    if not torch.cuda.is_available():
        return {"not_measured": "no CUDA device on the machine that ran this benchmark"}
    datasets = ["synthetic:600:200"] if settings.quick else ["kang", "synthetic:1000000"]
    steps = QUICK_STEPS if settings.quick else {"steps": 200, "warmup": 20}
    gpu: dict[str, Any] = {"device": torch.cuda.get_device_name(), "rows": []}
    for data in datasets:
        if data == "kang" and not KANG.exists():
            continue
        for batch_size in [64] if settings.quick else [128, 512]:
            spec = {"data": data, "batch_size": batch_size, "architecture": settings.architecture,
                    "accelerator": "gpu", **steps}  # fmt: skip
            gpu["rows"].append({"data": data, "batch_size": batch_size, "trvae": run_worker("train-trvae", spec)})
            print(json.dumps(gpu["rows"][-1]), flush=True)
    return gpu


MEASURE = {"training": measure_training, "prediction": measure_prediction, "disk": measure_disk,
           "default-train": measure_default_train, "gpu": measure_gpu}  # fmt: skip


def previous_report(path: Path, quick: bool) -> dict:
    """The report at ``path`` to update with re-measured parts (empty when absent or of the other plan)."""
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    return report if report.get("quick") == quick else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny synthetic data, this package only (seconds)")
    only_help = f"measure only these parts ({', '.join(PARTS)}); the others are kept from --output"
    parser.add_argument("--only", nargs="+", choices=PARTS, default=None, metavar="PART", help=only_help)
    parser.add_argument("--no-scarches", action="store_true", help="skip scArches even if its environment exists")
    parser.add_argument("--scarches-python", type=Path, default=SCARCHES_PYTHON, metavar="PATH",
                        help="the Python of an environment with scArches 0.6.1 (default: .venv-scarches)")  # fmt: skip
    parser.add_argument("--cache", type=Path, default=CACHE, metavar="DIR", help="where the on-disk set is kept")
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
    use_scarches = not args.quick and not args.no_scarches and args.scarches_python.exists()
    settings = Settings(args.quick, args.scarches_python if use_scarches else None, args.cache)
    report: dict[str, Any] = previous_report(args.output, args.quick) if args.only else {}
    scarches = (
        f"measured with {args.scarches_python}" if use_scarches else "not measured (none, --quick or --no-scarches)"
    )
    report.update({"quick": args.quick, "threads": 1, "scarches": scarches})
    start = time.perf_counter()
    for part in args.only or PARTS:
        part_start = time.perf_counter()
        report[part.replace("-", "_")] = MEASURE[part](settings)
        finished_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        report.setdefault("parts", {})[part] = {
            "wall_s": round(time.perf_counter() - part_start, 1),
            "finished_at": finished_at,
        }
    report["total_s"] = round(time.perf_counter() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    from _speed_report import markdown  # not in the workers: scArches' environment lacks scvi_trvae

    table = markdown(report)
    print(table)
    print(f"\nTotal wall time of this invocation: {report['total_s']:.0f} s ({report['total_s'] / 60:.1f} min)")
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
