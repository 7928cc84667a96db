"""Time a TRVAEEnsemble's members trained one after the other vs in worker processes (``n_jobs``).

Alternates the two ways ``--repeats`` times on the same data (default: the built-in synthetic data set), so
that a busy machine's load affects both alike, and prints the wall times and their ratio.

    python benchmarks/ensemble_parallel.py --members 2 --jobs 2 --epochs 10
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import scvi_trvae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    adata = scvi_trvae.datasets.synthetic_perturbation()
    scvi_trvae.TRVAE.setup_anndata(adata, condition_key="condition")
    train = {"max_epochs": args.epochs, "enable_progress_bar": False, "accelerator": "cpu"}
    times: dict[str, list[float]] = {"sequential": [], f"{args.jobs} processes": []}
    for _ in range(args.repeats):
        for label, jobs in (("sequential", 1), (f"{args.jobs} processes", args.jobs)):
            start = time.perf_counter()
            scvi_trvae.TRVAEEnsemble(adata, n_members=args.members).train(n_jobs=jobs, threads_per_job=1, **train)
            times[label].append(round(time.perf_counter() - start, 1))
    ratio = sum(times["sequential"]) / sum(times[f"{args.jobs} processes"])
    print(json.dumps({"cells": adata.n_obs, "genes": adata.n_vars, **vars(args), "wall_s": times,
                      "speed-up": round(ratio, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
