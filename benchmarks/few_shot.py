"""Few-shot prediction and interval coverage of the recommended pipeline (issue 24).

For each held-out (cell type, target) split of the out-of-sample benchmark (``benchmarks/oos``), the recommended
pipeline (:func:`scvi_trvae.model_selection.fit_recommended`) is fitted once on the training cells (cached under
``benchmarks/cache/few_shot/``). Then, for ``k`` in ``--ks`` and ``--draws`` random draws, ``k`` of the held-out
type's ``target`` cells are given to :meth:`~scvi_trvae.TRVAEEnsemble.predict_perturbation` as ``measured=`` and
every answer is scored on the held-out ``target`` cells that were NOT drawn. In a draw the cells are permuted once:
the first ``k`` are measured, the cells after the largest ``k`` of the split are scored, so every ``k`` of a draw is
scored on the same cells and no measured cell is ever scored. Two simple answers use the same ``k`` cells:

* ``k-cell mean``: source cells plus the ``k`` cells' mean response ``r_k``;
* ``pooled + k cells``: source cells plus ``p + omega_p * (r_k - p)``, the empirical-Bayes shrinkage of the pipeline
  with the pooled shift ``p`` of the other types in place of the model's response, and ``omega_p`` computed from
  the pooled shift's own error on the inner folds (its calibration with ``w = 0``). With ``k = 0`` it is ``p``.

The intervals' coverage (share of genes whose true mean response lies inside) and mean width are measured at
``k = 0`` against the mean response of all the held-out ``target`` cells.

Run ``python benchmarks/few_shot.py`` (real data in the shared data folder; skipped cleanly without it),
``--quick`` for a tiny synthetic run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from oos.datasets import DATASETS, DatasetSpec, load_dataset
from oos.paths import CACHE_DIR, DATA_DIR, RESULTS_DIR
from oos.splits import Split, make_split

from scvi_trvae import TRVAEEnsemble, metrics
from scvi_trvae._blend import on_prediction_scale
from scvi_trvae._calibration import calibrate
from scvi_trvae._few_shot import LOWER_VAR, SHIFT_VAR, UPPER_VAR, shrinkage_weights, within_type_variance
from scvi_trvae._intervals import response_scale
from scvi_trvae.baselines import cell_type_shifts, pooled_shift
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.model_selection import fit_recommended
from scvi_trvae.utils import as_dense

logger = logging.getLogger("few_shot")

#: Kang NK first (the split the defaults were tuned on: reported apart), then other splits with enough cells.
DEFAULT_SPLITS = (
    "kang:NK", "kang:CD4T", "kang:B", "kang:CD14+Mono", "kang:FCGR3A+Mono", "haber_hpoly:Stem",
    "haber_salmonella:Enterocyte", "haber_hpoly:Enterocyte.Progenitor", "kang:CD8T", "haber_hpoly:Tuft",
)  # fmt: skip
TUNING_SPLIT = ("kang", "NK")
METHODS = ("trVAE few-shot", "k-cell mean", "pooled + k cells")
SCORES = ("pearson_delta_deg", "edist_scaled", "r2_mean_deg")


def draw_cells(n_target: int, ks: list[int], n_draws: int, min_scored: int, seed: int) -> tuple[list[int], list]:
    """The usable ``k`` and, per draw, ``(measured indices per k, scored indices)`` of ``n_target`` target cells.

    A ``k`` is usable when ``k + min_scored <= n_target``. Each draw permutes the cells once: the first ``k`` are
    measured and the cells after the largest usable ``k`` are scored (the same for every ``k``, disjoint from all).
    """
    usable = [k for k in ks if k + min_scored <= n_target]
    largest = max(usable, default=0)
    draws = []
    for d in range(n_draws):
        order = np.random.default_rng([seed, d]).permutation(n_target)
        draws.append(({k: order[:k] for k in usable}, order[largest:]))
    return usable, draws


def _settings_key(split: Split, settings: dict[str, Any]) -> str:
    text = json.dumps([split.dataset, split.cell_type, split.target, split.train.n_obs, split.train.n_vars, settings])
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def fitted_pipeline(split: Split, settings: dict[str, Any], cache_dir: Path) -> tuple[TRVAEEnsemble, dict]:
    """The recommended pipeline fitted on the split's training cells, and the pooled shift's calibration (cached)."""
    name = f"{split.dataset}_{split.cell_type}_{split.target}_{_settings_key(split, settings)}".replace("/", "-")
    directory = cache_dir / name
    setup = {"setup_kwargs": {"layer": "counts", "is_count_data": True}} if split.counts else {}
    if (directory / "pooled_calibration.pkl").exists():
        ensemble = TRVAEEnsemble.load(directory / "ensemble", adata=split.train.copy(), accelerator="cpu")
        return ensemble, pickle.loads((directory / "pooled_calibration.pkl").read_bytes())
    start = time.perf_counter()
    ensemble, selection = fit_recommended(
        split.train, cell_type_key=split.cell_type_key, condition_key=split.condition_key, source=split.source,
        target=split.target, progress_bar=False, enable_progress_bar=False, accelerator="cpu", **settings, **setup,
    )  # fmt: skip
    pooled = calibrate(selection.fold_responses, 0.0, ensemble.calibration["level"])
    pooled["fit_seconds"] = time.perf_counter() - start
    ensemble.save(directory / "ensemble", overwrite=True)
    (directory / "pooled_calibration.pkl").write_bytes(pickle.dumps(pooled))
    return ensemble, pooled


def _scaled_mean(ensemble: TRVAEEnsemble, cells) -> np.ndarray:
    return as_dense(on_prediction_scale(ensemble.members[0], cells).X).mean(0)


def simple_answers(ensemble: TRVAEEnsemble, split: Split, measured, pooled_mse: float) -> dict[str, np.ndarray]:
    """The two k-cell answers (cells x genes, on the prediction scale) for the measured cells (``None``: k = 0)."""
    member, keys = ensemble.members[0], (split.cell_type_key, split.condition_key)
    training = on_prediction_scale(member, ensemble.adata)
    observed = as_dense(on_prediction_scale(member, split.control).X)
    exclude = np.array([split.cell_type])
    pooled = pooled_shift(training, cell_type_key=keys[0], condition_key=keys[1], exclude=exclude,
                          source=split.source, target=split.target)  # fmt: skip
    if measured is None:
        return {"pooled + k cells": np.clip(observed + pooled, 0, None)}
    r_k = _scaled_mean(ensemble, measured) - observed.mean(0)
    shifts = cell_type_shifts(training, cell_type_key=keys[0], condition_key=keys[1], source=split.source,
                              target=split.target, exclude=exclude)  # fmt: skip
    prior = pooled_mse * response_scale(shifts.to_numpy()) ** 2
    omega = shrinkage_weights(prior, within_type_variance(training, keys, split.target, exclude), measured.n_obs)
    return {
        "k-cell mean": np.clip(observed + r_k, 0, None),
        "pooled + k cells": np.clip(observed + pooled + omega * (r_k - pooled), 0, None),
    }


def _score(pred: np.ndarray, scored, control, degs) -> dict[str, float]:
    values = metrics.evaluate_prediction(pred, scored, control, degs=degs, seed=0)
    return {k: float(values[k]) for k in SCORES}


def coverage_row(ensemble: TRVAEEnsemble, split: Split, pred) -> dict[str, Any]:
    """Coverage and mean width of the k = 0 intervals against the mean response of all held-out target cells."""
    truth = _scaled_mean(ensemble, split.real_target) - _scaled_mean(ensemble, split.control)
    lower, upper = pred.var[LOWER_VAR].to_numpy(), pred.var[UPPER_VAR].to_numpy()
    error = np.abs(pred.var[SHIFT_VAR].to_numpy() - truth)
    return {
        "dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
        "level": float(ensemble.calibration["level"]), "coverage": float(np.mean((truth >= lower) & (truth <= upper))),
        "mean_width": float(np.mean(upper - lower)), "median_abs_error": float(np.median(error)),
        "quantile": float(ensemble.calibration["quantile"]), "inner_cell_types": ensemble.calibration["cell_types"],
    }  # fmt: skip


def run_split(split: Split, ensemble: TRVAEEnsemble, pooled: dict, args) -> tuple[list[dict], dict]:
    """Every (k, draw, answer) of a split, scored on the target cells not drawn; and the interval coverage."""
    predict = {"source": split.source, "target": split.target}
    base = ensemble.predict_perturbation(split.control, **predict)
    usable, draws = draw_cells(split.real_target.n_obs, args.ks, args.draws, args.min_scored, args.seed)
    rows = []
    for d, (measured_by_k, scored_index) in enumerate(draws):
        scored = split.real_target[scored_index]
        degs = metrics.top_degs(scored, split.control)
        for k in usable:
            measured = split.real_target[measured_by_k[k]] if k > 0 else None
            assert measured is None or not scored.obs_names.isin(measured.obs_names).any()
            pred = base if k == 0 else ensemble.predict_perturbation(split.control, **predict, measured=measured)
            answers = {"trVAE few-shot": as_dense(pred.X)}
            answers.update(simple_answers(ensemble, split, measured, pooled["mean_squared_error"]))
            for method, x in answers.items():
                row = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target, "k": k,
                       "draw": d, "method": method, "n_scored": int(scored.n_obs)}  # fmt: skip
                row.update(_score(x, scored, split.control, degs))
                if method == "trVAE few-shot":
                    row.update(_draw_coverage(ensemble, split, pred, scored))
                rows.append(row)
    return rows, coverage_row(ensemble, split, base)


def _draw_coverage(ensemble: TRVAEEnsemble, split: Split, pred, scored) -> dict[str, float]:
    """Coverage and width of the prediction's intervals against the mean response of the scored cells."""
    truth = _scaled_mean(ensemble, scored) - _scaled_mean(ensemble, split.control)
    lower, upper = pred.var[LOWER_VAR].to_numpy(), pred.var[UPPER_VAR].to_numpy()
    return {
        "coverage": float(np.mean((truth >= lower) & (truth <= upper))),
        "mean_width": float(np.mean(upper - lower)),
    }


# ------------------------------------------------------------------------------------------------ running
def quick_split() -> Split:
    """A tiny synthetic split: type_A held out (for ``--quick``)."""
    adata = synthetic_perturbation(n_cell_types=4, n_genes=80, n_cells_per_group=60, n_response_genes=12, seed=0)
    adata.obs = adata.obs[["condition", "cell_type"]].astype(str)
    spec = DatasetSpec(file="-", control="control", perturbed=("stimulated",), kind="lognorm", n_top_genes=None,
                       description="synthetic (--quick)")  # fmt: skip
    return make_split(adata, "synthetic", spec, "type_A", "stimulated", None)


def real_splits(names: list[str], data_dir: Path):
    """Yield the named splits (``dataset:cell type``) whose data sets are in ``data_dir``, each read once."""
    loaded: dict[str, Any] = {}
    for name in names:
        dataset, cell_type = name.split(":", 1)
        spec = DATASETS[dataset]
        if not (data_dir / spec.file).exists():
            logger.warning("%s: %s is not in %s; skipped", name, spec.file, data_dir)
            continue
        if dataset not in loaded:
            loaded[dataset] = load_dataset(spec, data_dir)
        yield make_split(loaded[dataset], dataset, spec, cell_type, spec.perturbed[0], spec.n_top_genes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the benchmark."""
    parser = argparse.ArgumentParser(description="Few-shot prediction and interval coverage (issue 24).")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="dataset:cell type, in order")
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 5, 20, 50])
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--min-scored", type=int, default=20, help="target cells always kept for scoring")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny synthetic split, a few training steps")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR / "few_shot")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "few_shot.json")
    parser.add_argument("--figure", type=Path, default=None, help="draw the gain curves here (PNG)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the benchmark, write the JSON after every split and print the tables."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    settings: dict[str, Any] = {"n_members": 3, "inner_folds": 2, "seed": 0}
    if args.quick:
        settings["max_epochs"] = 3
        args.ks, args.draws, args.min_scored = [k for k in args.ks if k <= 20], min(args.draws, 2), 10
        splits = [quick_split()]
    else:
        if not args.data_dir.is_dir():
            print(f"No data in {args.data_dir}: the few-shot benchmark needs the shared data sets; skipped.")
            return 0
        splits = real_splits(args.splits, args.data_dir)
    payload = _read(args.out, args, settings)
    for split in splits:
        name = [split.dataset, split.cell_type, split.target]
        if any(row["split"] == name for row in payload["coverage"]):
            logger.info("%s: already in %s", name, args.out)
            continue
        logger.info("%s: %d training cells, %d genes, %d target cells", name, split.train.n_obs, split.train.n_vars,
                    split.real_target.n_obs)  # fmt: skip
        ensemble, pooled = fitted_pipeline(split, settings, args.cache_dir)
        rows, coverage = run_split(split, ensemble, pooled, args)
        payload["rows"] += rows
        payload["coverage"].append({"split": name, **coverage, "fit_seconds": pooled.get("fit_seconds")})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1, default=float))
    print(report(payload))
    if args.figure is not None:
        gain_figure(payload, args.figure)
    return 0


def _read(path: Path, args, settings: dict[str, Any]) -> dict[str, Any]:
    """The results written so far with the same settings (resumed split by split), else an empty payload."""
    fresh = {"settings": {**settings, "ks": args.ks, "draws": args.draws, "min_scored": args.min_scored,
                          "seed": args.seed, "quick": args.quick}, "rows": [], "coverage": []}  # fmt: skip
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == fresh["settings"]:
            return old
    return fresh


# ------------------------------------------------------------------------------------------------ report
_SCORES_CAPTION = "**Scores**, medians over draws (Δ-Pearson DEG: higher is better; scaled E-distance: lower):"
_COUNTS_CAPTION = (
    "**Counts**: splits (without the tuning split) where the pipeline beats both k-cell answers; margins: the "
    "pipeline's lead over the better of the two (Δ-Pearson DEG / E-dist, positive: the pipeline is better):"
)
_COVERAGE_CAPTION = "**Coverage** of the k = 0 intervals (the truth: all held-out target cells):"
_PER_K_CAPTION = "**Coverage per k** of the few-shot intervals (the truth: the scored cells; medians over splits):"


def report(payload: dict[str, Any]) -> str:
    """Markdown tables: medians over draws per split and k, the k = 20 counts, and the coverage per split."""
    import pandas as pd

    if not payload["rows"]:
        return "No results."
    frame = pd.DataFrame(payload["rows"])
    per = frame.groupby(["dataset", "cell_type", "k", "method"], sort=False)[["pearson_delta_deg", "edist_scaled"]]
    median = per.median().reset_index()
    lines = [_SCORES_CAPTION, "", "| split | k | " + " | ".join(f"{m}: Δ-Pearson DEG / E-dist" for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]  # fmt: skip
    for (dataset, cell_type, k), group in median.groupby(["dataset", "cell_type", "k"], sort=False):
        cells = []
        for method in METHODS:
            hit = group[group["method"] == method]
            cells.append(
                "—" if hit.empty else f"{hit['pearson_delta_deg'].iloc[0]:.3f} / {hit['edist_scaled'].iloc[0]:.3f}"
            )
        tag = " (tuning split)" if (dataset, cell_type) == TUNING_SPLIT else ""
        lines.append(f"| {dataset} {cell_type}{tag} | {k} | " + " | ".join(cells) + " |")
    lines += ["", beats_counts(median), "", coverage_table(payload["coverage"]), "", coverage_by_k(frame)]
    return "\n".join(lines)


def beats_counts(median) -> str:
    """How many splits (but the tuning split) the pipeline beats both k-cell answers at each k > 0."""
    lines = [
        _COUNTS_CAPTION,
        "",
        "| k | splits | trVAE best on Δ-Pearson DEG | trVAE best on E-dist | both | median margins |",
        "|---|---|---|---|---|---|",
    ]
    others = median[[(d, c) != TUNING_SPLIT for d, c in zip(median["dataset"], median["cell_type"], strict=True)]]
    for k, group in others[others["k"] > 0].groupby("k"):
        wide = group.pivot_table(index=["dataset", "cell_type"], columns="method",
                                 values=["pearson_delta_deg", "edist_scaled"])  # fmt: skip
        trvae, rest = "trVAE few-shot", ["k-cell mean", "pooled + k cells"]
        gain_pearson = (wide["pearson_delta_deg"][trvae] - wide["pearson_delta_deg"][rest].max(axis=1)).to_numpy()
        gain_edist = (wide["edist_scaled"][rest].min(axis=1) - wide["edist_scaled"][trvae]).to_numpy()
        pearson, edist, n = gain_pearson > 0, gain_edist > 0, len(wide)
        margins = f"{np.median(gain_pearson):+.3f} / {np.median(gain_edist):+.3f}"
        lines.append(
            f"| {k} | {n} | {pearson.sum()} / {n} | {edist.sum()} / {n} | {(pearson & edist).sum()} / {n} | {margins} |"
        )
    return "\n".join(lines)


def coverage_table(coverage: list[dict[str, Any]]) -> str:
    """Coverage and mean width of the k = 0 intervals per split, against the nominal level."""
    lines = [
        _COVERAGE_CAPTION,
        "",
        "| split | nominal | coverage | mean width | median abs. error | quantile |",
        "|---|---|---|---|---|---|",
    ]
    for row in coverage:
        tag = " (tuning split)" if (row["dataset"], row["cell_type"]) == TUNING_SPLIT else ""
        lines.append(
            f"| {row['dataset']} {row['cell_type']}{tag} | {row['level']:.0%} | {row['coverage']:.1%} | "
            f"{row['mean_width']:.3f} | {row['median_abs_error']:.3f} | {row['quantile']:.2f} |"
        )
    rest = [row for row in coverage if (row["dataset"], row["cell_type"]) != TUNING_SPLIT]
    if rest:
        values = [row["coverage"] for row in rest]
        lines.append(f"\nMedian coverage over {len(rest)} splits (without the tuning split): {np.median(values):.1%}.")
        per_dataset = {}
        for row in rest:
            per_dataset.setdefault(row["dataset"], []).append(row["coverage"])
        medians = [f"{d} {np.median(v):.1%} ({len(v)} splits)" for d, v in per_dataset.items()]
        lines.append(f"Median per data set: {', '.join(medians)}.")
    return "\n".join(lines)


def coverage_by_k(frame) -> str:
    """Median over splits of the draws' mean coverage and width of the few-shot intervals, per k (scored cells)."""
    mine = frame[frame["method"] == "trVAE few-shot"]
    per_split = mine.groupby(["dataset", "cell_type", "k"])[["coverage", "mean_width"]].mean().reset_index()
    lines = [_PER_K_CAPTION, "", "| k | splits | median coverage | median mean width |", "|---|---|---|---|"]
    for k, group in per_split.groupby("k"):
        lines.append(f"| {k} | {len(group)} | {group['coverage'].median():.1%} | {group['mean_width'].median():.3f} |")
    return "\n".join(lines)


def gain_figure(payload: dict[str, Any], path: Path) -> None:
    """The gain curve per data set: median over its splits (without the tuning split) of each score against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(payload["rows"])
    frame = frame[[(d, c) != TUNING_SPLIT for d, c in zip(frame["dataset"], frame["cell_type"], strict=True)]]
    if frame.empty:
        return
    per_split = frame.groupby(["dataset", "cell_type", "k", "method"])[["pearson_delta_deg", "edist_scaled"]].median()
    curves = per_split.groupby(["dataset", "k", "method"]).median().reset_index()
    datasets = list(dict.fromkeys(curves["dataset"]))
    fig, axs = plt.subplots(2, len(datasets), figsize=(4 * len(datasets), 6.5), squeeze=False, layout="constrained")
    for col, dataset in enumerate(datasets):
        n_splits = frame.loc[frame["dataset"] == dataset, "cell_type"].nunique()
        for row, (score, label) in enumerate([("pearson_delta_deg", "Δ-Pearson (DEG)"), ("edist_scaled", "E-dist")]):
            ax = axs[row, col]
            for method in METHODS:
                mine = curves[(curves["dataset"] == dataset) & (curves["method"] == method)]
                ax.plot(mine["k"], mine[score], marker="o", label=method)
            ax.set_xlabel("measured target cells k")
            ax.set_ylabel(label)
        axs[0, col].set_title(f"{dataset} ({n_splits} splits)")
    axs[0, 0].legend(fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
