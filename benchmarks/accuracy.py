"""Seed ensembles, self-tuning and shift shrinkage on the out-of-sample splits (issue 13).

For each split of ``out_of_sample.py`` (same data, gene selection, DEGs and metrics) this runs, with every
result cached in ``benchmarks/cache/accuracy`` so that an interrupted run resumes:

* ``members``: three default :class:`scvi_trvae.TRVAE` fits (seeds 0, 1, 2; the benchmark's "trVAE" seeds),
  their counterfactual predictions kept;
* ``selection``: :func:`scvi_trvae.model_selection.select_hyperparameters` on the split's training cells
  only (inner leave-one-cell-type-out), which picks a configuration and a shift weight ``w``;
* ``tuned``: three fits of the chosen configuration on all training cells (reused from ``members`` when
  the defaults win).

Methods scored from these: "trVAE ensemble" (mean of the 3 default members), "trVAE ensemble + shrink"
(``w`` chosen by the inner validation of the default configuration), "trVAE self-tuned" (chosen
configuration and ``w``, seed 0 only), "trVAE self-tuned ensemble" (chosen configuration and ``w``, 3
seeds), and the single seeds of the default ("trVAE seed k"). The per-gene sd of the ensemble's predicted
shift is compared with the absolute error of its mean shift (Spearman).

    python benchmarks/accuracy.py --datasets kang --cell-types NK          # the tuning split
    python benchmarks/accuracy.py --report                                  # tables from the cache
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from oos import ensembles
from oos.datasets import DATASETS, load_dataset
from oos.expression import dense
from oos.paths import BENCH_DIR, DATA_DIR
from oos.registry import AUTO_EPOCHS
from oos.splits import make_split
from scipy.stats import spearmanr

from scvi_trvae import metrics

CACHE = ensembles.ACCURACY_CACHE
RESULTS = BENCH_DIR / "results" / "accuracy.json"


def uncertainty_spearman(members: np.ndarray, observed: np.ndarray, real_target: np.ndarray) -> tuple[float, Any]:
    """Spearman r between each gene's sd over members of the mean predicted shift and the abs error of the mean."""
    member_shift = members.mean(1) - observed.mean(0)
    sd = member_shift.std(0, ddof=1)
    error = np.abs(member_shift.mean(0) - (real_target.mean(0) - observed.mean(0)))
    return float(spearmanr(sd, error).statistic), (sd, error)


def save_uncertainty(split, members: np.ndarray, epochs: int | str = AUTO_EPOCHS) -> float:
    """Spearman r of the split's 3-seed ensemble, kept with its per-gene sd and error in the split's cache."""
    rho, (sd, error) = uncertainty_spearman(members, dense(split.control.X), dense(split.real_target.X))
    folder = ensembles.split_dir(split, epochs)
    np.savez(folder / "uncertainty.npz", sd=sd, error=error)
    (folder / "uncertainty.json").write_text(json.dumps({"spearman": rho}))
    return rho


def uncertainty_of_cached_members(split) -> float | None:
    """:func:`save_uncertainty` for a split whose default members are cached (None when they are not)."""
    path = ensembles.split_dir(split, AUTO_EPOCHS) / "members_default.npy"
    return save_uncertainty(split, np.load(path)) if path.exists() else None


def run_split(split, epochs: int | str = AUTO_EPOCHS) -> list[dict[str, Any]]:
    """Every method of :mod:`oos.ensembles` and the default's single seeds on one split, scored."""
    start = time.perf_counter()
    members = ensembles.default_members(split, epochs)
    chosen = ensembles.selection(split, epochs)
    default, (tuned, best_weights) = ensembles.default_ensemble(split, epochs), ensembles.tuned_ensemble(split, epochs)
    default_weights = ensembles.default_weights(split, epochs)
    preds = {f"trVAE seed {k}": members[k] for k in range(len(members))}
    # every ensemble row is TRVAEEnsemble.predict_perturbation: the package's pipeline, not a copy of its blend
    preds["trVAE ensemble"] = ensembles.predict(split, default)
    preds["trVAE ensemble + shrink"] = ensembles.predict(split, default, default_weights)
    preds["trVAE ensemble + shrink w=0.5 (fixed)"] = ensembles.predict(split, default, (0.5, 0.5, "pooled", False))
    preds["trVAE self-tuned"] = ensembles.predict(split, ensembles.first_member(tuned), best_weights)
    preds["trVAE self-tuned ensemble"] = ensembles.predict(split, tuned, best_weights)
    rho = save_uncertainty(split, members, epochs)
    weights = {
        "trVAE ensemble + shrink": default_weights, "trVAE self-tuned": best_weights,
        "trVAE self-tuned ensemble": best_weights,
    }  # fmt: skip
    rows = []
    for name, pred in preds.items():
        scores = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=split.degs, seed=0)
        rows.append({
            "dataset": split.dataset, "cell_type": split.cell_type, "target": split.target, "method": name,
            **{k: float(scores[k]) for k in metrics.METRIC_KEYS}, "shift_weight": weights.get(name, (None,))[0],
            "deviation_weight": weights.get(name, (None, None))[1],
            "reference_shift": weights.get(name, (None, None, None))[2],
            "spread_scaling": weights.get(name, (None,) * 4)[3],
            "tuned_config": chosen["best_config"] if "self-tuned" in name else None,
            "uncertainty_spearman": rho if name == "trVAE ensemble" else None,
        })  # fmt: skip
    seconds = time.perf_counter() - start
    (ensembles.split_dir(split, epochs) / "rows.json").write_text(
        json.dumps({"rows": rows, "seconds": seconds}, indent=1)
    )
    return rows


def _reference_rows(path: Path) -> pd.DataFrame:
    """The benchmark's own per-split rows (trVAE/CVAE seeds, control + mean shift), seed-averaged."""
    frame = pd.DataFrame(json.loads(path.read_text())["rows"])
    frame = frame[frame["status"] == "ok"]
    keys = ["dataset", "cell_type", "target", "method"]
    return frame.groupby(keys)[list(metrics.METRIC_KEYS)].mean().reset_index()


def report(reference_path: Path, figure: Path | None) -> dict[str, Any]:
    """Tables of every cached split: per-method medians, paired wins, uncertainty Spearman."""
    rows = [row for path in sorted(CACHE.glob("*/*/rows.json")) for row in json.loads(path.read_text())["rows"]]
    if rows:
        lines, summary = _method_tables(pd.DataFrame(rows), reference_path)
    else:
        lines, summary = ["No split has every method cached (only --uncertainty-only ran)."], {"splits": 0}
    rho = pd.Series({
        f"{path.parent.parent.name} {path.parent.name}": json.loads(path.read_text())["spearman"]
        for path in sorted(CACHE.glob("*/*/uncertainty.json"))
    }, dtype=float)  # fmt: skip
    if rho.empty:
        raise SystemExit(f"no cached results under {CACHE}")
    summary["uncertainty_spearman"] = rho.to_dict()
    lines += [
        "",
        f"Uncertainty: Spearman(per-gene sd of the 3-seed ensemble's shift, |error of its mean shift|), "
        f"median over {len(rho)} splits: {rho.median():.3f} (range {rho.min():.3f} to {rho.max():.3f}; "
        f"above 0.3 in {int((rho > 0.3).sum())}, above 0 in {int((rho > 0).sum())}).",
    ]
    print("\n".join(lines))
    if figure is not None:
        _reliability_figure(figure)
    return summary


def _method_tables(ours: pd.DataFrame, reference_path: Path) -> tuple[list[str], dict[str, Any]]:
    """Per-method medians and paired wins against the benchmark's own rows, and the per-split table."""
    reference = _reference_rows(reference_path)
    keys = ["dataset", "cell_type", "target"]
    splits = ours[keys].drop_duplicates()
    lines = [f"Splits run: {len(splits)} ({', '.join(f'{d} {c} -> {t}' for d, c, t in splits.to_numpy())}).", ""]
    lines += ["| method | splits | median Δ-Pearson (DEG) | median E-dist scaled | "
              "beats mean shift (Δ-P DEG / E-dist) | beats CVAE, 3-seed mean (Δ-P DEG / E-dist) |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name in ["control + mean shift", "CVAE", "trVAE"]:
        ref = reference[reference["method"] == name].merge(splits, on=keys)
        ours = pd.concat([ours, ref.assign(method=f"{name} (benchmark)")], ignore_index=True)
    summary: dict[str, Any] = {"splits": len(splits), "methods": {}}
    for name, group in ours.groupby("method", sort=False):
        paired = {}
        for baseline in ("control + mean shift (benchmark)", "CVAE (benchmark)"):
            base = ours[ours["method"] == baseline].set_index(keys)
            mine = group.set_index(keys).reindex(base.index).dropna(subset=["edist_scaled"])
            base = base.loc[mine.index]
            paired[baseline] = (int((mine["pearson_delta_deg"] > base["pearson_delta_deg"]).sum()),
                                int((mine["edist_scaled"] < base["edist_scaled"]).sum()), len(mine))  # fmt: skip
        medians = group[["pearson_delta_deg", "edist_scaled"]].median()
        summary["methods"][name] = {"median": medians.to_dict(), "wins": paired}
        cells = [f"{a}/{n} / {b}/{n}" for a, b, n in paired.values()]
        lines.append(f"| {name} | {len(group)} | {medians['pearson_delta_deg']:.3f} | {medians['edist_scaled']:.3f} | "
                     f"{cells[0]} | {cells[1]} |")  # fmt: skip
    lines += ["", "Per split (Δ-Pearson (DEG) / E-dist scaled):", ""]
    split_names = [f"{c} -> {t}" for _, c, t in splits.to_numpy()]
    lines += [f"| method | {' | '.join(split_names)} |", "|---|" + "---|" * len(split_names)]
    for name, group in ours.groupby("method", sort=False):
        cells = []
        for dataset, cell_type, target in splits.to_numpy():
            row = group[(group["dataset"] == dataset) & (group["cell_type"] == cell_type) & (group["target"] == target)]
            cells.append(
                f"{row['pearson_delta_deg'].iloc[0]:.3f} / {row['edist_scaled'].iloc[0]:.3f}" if len(row) else "—"
            )
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines, summary


def _reliability_figure(path: Path) -> None:
    """Error of the predicted mean shift per decile of the predicted sd (relative to the split's mean error).

    One thin line per split and the median over splits: a curve that rises means the sd ranks the genes by error.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for npz in sorted(CACHE.glob("*/*/uncertainty.npz")):
        data = np.load(npz)
        bins = np.array_split(np.argsort(data["sd"]), 10)
        curves.append(np.array([data["error"][b].mean() for b in bins]) / max(data["error"].mean(), 1e-12))
    fig, ax = plt.subplots(figsize=(5, 3.5))
    deciles = np.arange(1, 11)
    for curve in curves:
        ax.plot(deciles, curve, color="0.75", linewidth=0.6)
    ax.plot(deciles, np.median(curves, axis=0), color="C3", linewidth=2.2, marker="o", label="median over splits")
    ax.axhline(1.0, color="0.4", linestyle=":", linewidth=0.8)
    ax.set_xticks(deciles)
    ax.set_xlabel("decile of the genes' predicted sd of the shift (1 = lowest)")
    ax.set_ylabel("|error of the mean shift| / split mean")
    ax.set_title(f"3-seed trVAE ensemble: uncertainty vs error, {len(curves)} splits", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def quick_split():
    """A tiny synthetic split (three cell types, 60 genes) for ``--quick``."""
    from oos.datasets import DatasetSpec

    from scvi_trvae.datasets import synthetic_perturbation

    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=40, n_response_genes=12, seed=1)
    adata.X = adata.X.astype(np.float32)
    spec = DatasetSpec(
        file="-", control="control", perturbed=("stimulated",), kind="lognorm", n_top_genes=None, description="-"
    )
    return make_split(adata, "synthetic", spec, "type_A", "stimulated", None)


def main(argv: list[str] | None = None) -> list[dict[str, Any]] | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["kang"])
    parser.add_argument("--cell-types", nargs="+", default=None)
    parser.add_argument("--genes", type=int, default=None, help="HVGs (default: the data set's own setting)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--report", action="store_true", help="print the tables of the cached splits and exit")
    parser.add_argument("--reference", type=Path, default=BENCH_DIR / "results" / "out_of_sample.json")
    parser.add_argument("--figure", type=Path, default=None, help="write the reliability figure here")
    parser.add_argument(
        "--uncertainty-only", action="store_true",
        help="fit nothing: the uncertainty Spearman of every split whose default members are cached",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic split, 2 epochs, into a temp cache")
    args = parser.parse_args(argv)
    if args.quick:
        torch.set_num_threads(args.threads)
        rows = run_split(quick_split(), epochs=2)
        for row in rows:
            print(f"{row['method']:40s} dDEG {row['pearson_delta_deg']:.3f} edist {row['edist_scaled']:.3f}")
        return rows
    if args.report:
        summary = report(args.reference, args.figure)
        RESULTS.write_text(json.dumps(summary, indent=1))
        return
    for dataset in args.datasets:
        spec = DATASETS[dataset]
        adata = load_dataset(spec, args.data_dir)
        types = args.cell_types or sorted(set(adata.obs[spec.cell_type_key]))
        for target in spec.perturbed:
            for cell_type in types:
                split = make_split(adata, dataset, spec, cell_type, target, args.genes or spec.n_top_genes)
                if args.uncertainty_only:
                    rho = uncertainty_of_cached_members(split)
                    print(f"{dataset} {cell_type} -> {target}: Spearman {rho}", flush=True)
                    continue
                torch.set_num_threads(args.threads)
                start = time.perf_counter()
                rows = run_split(split)
                print(f"{dataset} {cell_type} -> {target}: {time.perf_counter() - start:.0f} s", flush=True)
                for row in rows:
                    print(f"  {row['method']:40s} dDEG {row['pearson_delta_deg']:.3f} edist {row['edist_scaled']:.3f}",
                          flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
