"""Which constant shift should the recommended pipeline blend trVAE's mean shift with?

The pipeline predicts ``x + w * m + (1 - w) * p + lambda * d`` (``docs/accuracy.md``), where ``p`` is today the
pooled shift of the other cell types. The benchmark found a stronger constant shift: the other types' own shifts
weighted by how close their control cells are to the predicted type's (``baselines.similarity_shift``). This
script fits the pipeline once per task (``model_selection.fit_recommended``, its ``w`` and ``lambda`` chosen on
the training cells with the pooled shift) and scores, on the held-out cells, the blend with each kind of ``p``
(pooled, cell-type-balanced, similarity-weighted) at the chosen ``(w, lambda)`` and at ``w = 0.5``, beside each
``p`` alone (``w = lambda = 0``: the baseline) and the ensemble alone (``w = lambda = 1``).

Tasks: the demo's synthetic data (``state_dependence=1``, ``type_A`` held out, seeds 0-2) and Kang NK (the
tuning split; 2,000 highly variable genes of the training cells). Only tuning data: the benchmark's other splits
are not used here. Each task's scores are cached in ``benchmarks/cache/reference_shift/``; results go to
``benchmarks/results/reference_shift.json`` and a table. ``--quick`` runs one tiny synthetic task (the suite
runs it).

    python benchmarks/reference_shift.py [--tasks synthetic:0 synthetic:1 synthetic:2 kang_nk] [--quick]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from anndata import AnnData
from oos.paths import CACHE_DIR, DATA_DIR, RESULTS_DIR

from scvi_trvae import baselines, metrics
from scvi_trvae._blend import blend_prediction
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.metrics import markdown_table
from scvi_trvae.model_selection import fit_recommended
from scvi_trvae.utils import as_dense

KEYS = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}
SHIFT_KINDS = ("pooled", "balanced", "similarity")


def load_task(task: str, quick: bool) -> tuple[AnnData, str]:
    """The AnnData and held-out cell type of ``synthetic:SEED`` or ``kang_nk``."""
    if task.startswith("synthetic:"):
        seed = int(task.split(":")[1])
        if quick:
            return synthetic_perturbation(n_cells_per_group=30, n_genes=200, state_dependence=1.0, seed=seed), "type_A"
        return synthetic_perturbation(state_dependence=1.0, seed=seed), "type_A"
    if task == "kang_nk":
        import scanpy as sc

        adata = sc.read_h5ad(DATA_DIR / "kang2018_pbmc_ifnb_lognorm.h5ad")
        held = ((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "stimulated")).to_numpy()
        genes = sc.pp.highly_variable_genes(adata[~held].copy(), n_top_genes=2000, inplace=False)
        return adata[:, genes["highly_variable"].to_numpy()].copy(), "NK"
    raise ValueError(f"unknown task {task!r}")


def reference_shifts(train: AnnData, cell_type: str) -> dict[str, np.ndarray]:
    """Each kind of constant shift, estimated on the training cells only."""
    return {
        "pooled": baselines.pooled_shift(train, exclude=[cell_type], **KEYS),
        "balanced": baselines.pooled_shift(train, exclude=[cell_type], balanced=True, **KEYS),
        "similarity": baselines.similarity_shift(train, cell_type=cell_type, **KEYS),
    }


def run_task(task: str, quick: bool) -> dict:
    """Fit the pipeline on the task's training cells and score every blend on its held-out cells."""
    adata, cell_type = load_task(task, quick)
    obs = adata.obs
    held = ((obs["cell_type"] == cell_type) & (obs["condition"] == KEYS["target"])).to_numpy()
    is_control = ((obs["cell_type"] == cell_type) & (obs["condition"] == KEYS["source"])).to_numpy()
    train, control, real = adata[~held].copy(), adata[is_control].copy(), adata[held].copy()
    fit_kwargs = {"max_epochs": 2} if quick else {}
    ensemble, selection = fit_recommended(train, **KEYS, n_members=3, seed=0, progress_bar=False, **fit_kwargs)
    w, lam = selection.best_shift_weight, selection.best_deviation_weight
    source, target = KEYS["source"], KEYS["target"]
    alone = ensemble.predict_perturbation(control, source=source, target=target, blend=False)
    predicted, observed = as_dense(alone.X), as_dense(control.X)
    degs = metrics.top_degs(real, control)

    def score(x: np.ndarray) -> dict[str, float]:
        scores = metrics.evaluate_prediction(x, real, control, degs=degs, seed=0)
        return {"pearson_delta_deg": float(scores["pearson_delta_deg"]), "edist_scaled": float(scores["edist_scaled"])}

    rows = {"ensemble alone": score(predicted)}
    for kind, shift in reference_shifts(train, cell_type).items():
        rows[f"{kind}: blend at the chosen (w, lambda)"] = score(blend_prediction(observed, predicted, shift, w, lam))
        rows[f"{kind}: blend at w = 0.5"] = score(blend_prediction(observed, predicted, shift, 0.5, lam))
        rows[f"{kind}: the shift alone"] = score(blend_prediction(observed, predicted, shift, 0.0, 0.0))
    return {"task": task, "cell_type": cell_type, "shift_weight": w, "deviation_weight": lam, "rows": rows}


def table(results: list[dict]) -> str:
    """Markdown: one row per prediction, Δ-Pearson (DEG) / E-distance per task."""
    names = list(results[0]["rows"])
    header = ["prediction", *(f"{r['task']} (w={r['shift_weight']:g}, λ={r['deviation_weight']:g})" for r in results)]
    cells = [
        [
            name,
            *(f"{r['rows'][name]['pearson_delta_deg']:.3f} / {r['rows'][name]['edist_scaled']:.3f}" for r in results),
        ]
        for name in names
    ]
    return markdown_table(header, cells)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["synthetic:0", "synthetic:1", "synthetic:2", "kang_nk"])
    parser.add_argument("--quick", action="store_true", help="one tiny synthetic task, 2 epochs per fit")
    parser.add_argument("--out-dir", type=Path, default=None, help="results and cache here (default: the repo's)")
    args = parser.parse_args(argv)
    tasks = ["synthetic:0"] if args.quick else args.tasks
    cache = (args.out_dir or CACHE_DIR) / "reference_shift" / ("quick" if args.quick else "full")
    out = (args.out_dir or RESULTS_DIR) / ("reference_shift_quick.json" if args.quick else "reference_shift.json")
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    for task in tasks:
        path = cache / f"{task.replace(':', '_')}.json"
        if not path.exists():
            if task == "kang_nk" and not (DATA_DIR / "kang2018_pbmc_ifnb_lognorm.h5ad").exists():
                print(f"skipped {task}: the Kang data set is not in {DATA_DIR}")
                continue
            path.write_text(json.dumps(run_task(task, args.quick), indent=1) + "\n")
        results.append(json.loads(path.read_text()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    main()
