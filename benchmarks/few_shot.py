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
from oos.registry import PACKAGE_SOURCES, hash_sources
from oos.splits import Split, held_out_pairs, make_split

from scvi_trvae import TRVAEEnsemble, metrics
from scvi_trvae._blend import on_prediction_scale
from scvi_trvae._calibration import calibrate
from scvi_trvae._few_shot import LOWER_VAR, SHIFT_VAR, UPPER_VAR, shrinkage_weights, within_type_variance
from scvi_trvae._intervals import response_scale
from scvi_trvae.baselines import cell_type_shifts, pooled_shift
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.model_selection import RECOMMENDED_INNER_FOLDS, fit_recommended, select_hyperparameters, training_steps
from scvi_trvae.utils import as_dense

logger = logging.getLogger("few_shot")

#: Kang NK first (the split the defaults were tuned on: reported apart), then other splits with enough cells.
DEFAULT_SPLITS = (
    "kang:NK", "kang:CD4T", "kang:B", "kang:CD14+Mono", "kang:FCGR3A+Mono", "haber_hpoly:Stem",
    "haber_salmonella:Enterocyte", "haber_hpoly:Enterocyte.Progenitor", "kang:CD8T", "haber_hpoly:Tuft",
)  # fmt: skip
TUNING_SPLIT = ("kang", "NK")
#: The out-of-sample benchmark's default: splits with fewer control or target cells are not run.
OOS_MIN_CELLS = 3
METHODS = ("trVAE few-shot", "k-cell mean", "pooled + k cells")
#: Results of older versions are run again (2: noise-aware coverage, the target condition in the split labels;
#: 3: the pipeline's selection made by the current code, with the reference shift).
RESULTS_VERSION = 3
#: The level of the intervals (``fit_recommended``'s default).
LEVEL = 0.9
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
    """The recommended pipeline fitted on the split's training cells, and the pooled shift's calibration (cached).

    The members (3 fits of the default configuration, seeds 0-2) are cached once per split and settings; the
    selection (2 inner fits choosing ``w``, ``lambda`` and the reference shift, and the calibration) is cached per
    code version of the package (:func:`oos.registry.hash_sources`), so a changed pipeline is selected again on
    the cached members: together exactly what ``fit_recommended`` returns with the current code.
    """
    name = f"{split.dataset}_{split.cell_type}_{split.target}_{_settings_key(split, settings)}".replace("/", "-")
    directory = cache_dir / name
    selection_path = directory / f"selection_code{hash_sources(PACKAGE_SOURCES)}.pkl"
    setup = {"setup_kwargs": split.setup_kwargs} if split.counts else {}
    task = split.task_keys
    start = time.perf_counter()
    if (directory / "ensemble" / "ensemble.json").exists():
        ensemble = TRVAEEnsemble.load(directory / "ensemble", adata=split.train.copy(), accelerator="cpu")
        if not selection_path.exists():
            selection = select_hyperparameters(
                split.train, **task, n_configs=1, max_inner_folds=settings["inner_folds"], seed=settings["seed"],
                progress_bar=False, enable_progress_bar=False, accelerator="cpu", **setup,
                **({"search_space": _fixed_length(split, settings)} if "max_epochs" in settings else {}),
            )  # fmt: skip
            _save_selection(selection, selection_path, time.perf_counter() - start)
    else:
        ensemble, selection = fit_recommended(
            split.train, **task, progress_bar=False, enable_progress_bar=False, accelerator="cpu", **settings, **setup
        )
        ensemble.save(directory / "ensemble", overwrite=True)
        _save_selection(selection, selection_path, time.perf_counter() - start)
    chosen = pickle.loads(selection_path.read_bytes())
    ensemble.shift_weight, ensemble.deviation_weight = chosen["shift_weight"], chosen["deviation_weight"]
    ensemble.reference_shift = chosen["reference_shift"]
    ensemble.calibration = calibrate(chosen["folds"], chosen["shift_weight"], LEVEL, chosen["reference_shift"])
    pooled = calibrate(chosen["folds"], 0.0, LEVEL, "pooled")
    pooled["fit_seconds"] = chosen["seconds"]
    return ensemble, pooled


def _fixed_length(split: Split, settings: dict[str, Any]) -> dict[str, tuple[int]]:
    """The search space of ``fit_recommended(max_epochs=...)`` (``--quick``)."""
    return {"training_steps": (training_steps(split.train.n_obs, settings["max_epochs"]),)}


def _save_selection(selection, path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    chosen = {"shift_weight": selection.best_shift_weight, "deviation_weight": selection.best_deviation_weight,
              "reference_shift": selection.best_reference_shift, "folds": selection.fold_responses,
              "seconds": seconds}  # fmt: skip
    path.write_bytes(pickle.dumps(chosen))


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


def interval_coverage(ensemble: TRVAEEnsemble, split: Split, pred, truth_cells) -> dict[str, float]:
    """Coverage and mean width of ``pred``'s intervals against the mean response of ``truth_cells``.

    The truth is the mean of ``truth_cells`` minus that of the source cells (the source mean cancels in the error:
    the prediction's response is taken from the same cells). ``truth_cells`` are a sample, so their mean misses the
    population's by its standard error ``se``: ``coverage`` counts the genes whose truth lies inside the interval
    as it is, ``coverage_noise_aware`` those inside it widened to ``sqrt(half_width ** 2 + (z * se) ** 2)``, with
    ``z`` the normal quantile of the level (what an interval that covers the population mean at that level would
    show against a sample of this size).
    """
    from scipy.stats import norm

    cells = as_dense(on_prediction_scale(ensemble.members[0], truth_cells).X)
    truth = cells.mean(0) - _scaled_mean(ensemble, split.control)
    standard_error = np.sqrt(cells.var(0, ddof=1) / len(cells)) if len(cells) > 1 else np.zeros(len(truth))
    shift, lower, upper = (pred.var[key].to_numpy() for key in (SHIFT_VAR, LOWER_VAR, UPPER_VAR))
    z = float(norm.ppf(0.5 + ensemble.calibration["level"] / 2))
    half_width = np.sqrt(((upper - lower) / 2) ** 2 + (z * standard_error) ** 2)
    return {
        "coverage": float(np.mean((truth >= lower) & (truth <= upper))),
        "coverage_noise_aware": float(np.mean(np.abs(truth - (lower + upper) / 2) <= half_width)),
        "mean_width": float(np.mean(upper - lower)),
        "median_abs_error": float(np.median(np.abs(shift - truth))),
        "median_truth_se": float(np.median(standard_error)),
    }


def coverage_row(ensemble: TRVAEEnsemble, split: Split, pred) -> dict[str, Any]:
    """Coverage and mean width of the k = 0 intervals against the mean response of all held-out target cells."""
    return {
        "dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
        "level": float(ensemble.calibration["level"]), **interval_coverage(ensemble, split, pred, split.real_target),
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
                    coverage = interval_coverage(ensemble, split, pred, scored)
                    row.update({k: coverage[k] for k in ("coverage", "coverage_noise_aware", "mean_width")})
                rows.append(row)
    return rows, coverage_row(ensemble, split, base)


# ------------------------------------------------------------------------------------------------ running
def quick_split() -> Split:
    """A tiny synthetic split: type_A held out (for ``--quick``)."""
    adata = synthetic_perturbation(n_cell_types=4, n_genes=80, n_cells_per_group=60, n_response_genes=12, seed=0)
    adata.obs = adata.obs[["condition", "cell_type"]].astype(str)
    spec = DatasetSpec(file="-", control="control", perturbed=("stimulated",), kind="lognorm", n_top_genes=None,
                       description="synthetic (--quick)")  # fmt: skip
    return make_split(adata, "synthetic", spec, "type_A", "stimulated", None)


def real_splits(names: list[str], data_dir: Path):
    """Yield the named splits (``dataset:cell type[:target]``) whose data sets are in ``data_dir``, each read once."""
    loaded: dict[str, Any] = {}
    for name in names:
        dataset, cell_type, *target = name.split(":")
        spec = DATASETS[dataset]
        if not (data_dir / spec.file).exists():
            logger.warning("%s: %s is not in %s; skipped", name, spec.file, data_dir)
            continue
        if dataset not in loaded:
            loaded[dataset] = load_dataset(spec, data_dir)
        yield make_split(
            loaded[dataset], dataset, spec, cell_type, target[0] if target else spec.perturbed[0], spec.n_top_genes
        )


def all_split_names(data_dir: Path) -> list[str]:
    """``dataset:cell type:target`` of every split of the out-of-sample benchmark whose data set is in ``data_dir``."""
    import anndata as ad

    names = []
    for dataset, spec in DATASETS.items():
        if (data_dir / spec.file).exists():
            obs = ad.read_h5ad(data_dir / spec.file, backed="r").obs.astype(str)
            cells = ad.AnnData(obs=obs)
            pairs = held_out_pairs(cells, dataset, spec, None, min_cells=OOS_MIN_CELLS)
            names += [f"{dataset}:{cell_type}:{target}" for cell_type, target in pairs]
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the benchmark."""
    parser = argparse.ArgumentParser(description="Few-shot prediction and interval coverage (issue 24).")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="dataset:cell type[:target]")
    parser.add_argument(
        "--all-splits", action="store_true", help="every split of the out-of-sample benchmark (after --splits)"
    )
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
    settings: dict[str, Any] = {"n_members": 3, "inner_folds": RECOMMENDED_INNER_FOLDS, "seed": 0}
    if args.quick:
        settings["max_epochs"] = 3
        args.ks, args.draws, args.min_scored = [k for k in args.ks if k <= 20], min(args.draws, 2), 10
        splits = [quick_split()]
    else:
        if not args.data_dir.is_dir():
            print(f"No data in {args.data_dir}: the few-shot benchmark needs the shared data sets; skipped.")
            return 0
        names = args.splits + (all_split_names(args.data_dir) if args.all_splits else [])
        splits = real_splits(list(dict.fromkeys(names)), args.data_dir)
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
                          "seed": args.seed, "quick": args.quick, "results_version": RESULTS_VERSION},
             "rows": [], "coverage": []}  # fmt: skip
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
    frame = _with_labels(pd.DataFrame(payload["rows"]))
    per = frame.groupby(["split", "tuning", "k", "method"], sort=False)[["pearson_delta_deg", "edist_scaled"]]
    median = per.median().reset_index()
    lines = [_SCORES_CAPTION, "", "| split | k | " + " | ".join(f"{m}: Δ-Pearson DEG / E-dist" for m in METHODS) + " |",
             "|---|---|" + "---|" * len(METHODS)]  # fmt: skip
    for (label, tuning, k), group in median.groupby(["split", "tuning", "k"], sort=False):
        cells = []
        for method in METHODS:
            hit = group[group["method"] == method]
            cells.append(
                "—" if hit.empty else f"{hit['pearson_delta_deg'].iloc[0]:.3f} / {hit['edist_scaled'].iloc[0]:.3f}"
            )
        lines.append(f"| {label}{' (tuning split)' if tuning else ''} | {k} | " + " | ".join(cells) + " |")
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
    others = median[~median["tuning"]]
    for k, group in others[others["k"] > 0].groupby("k"):
        wide = group.pivot_table(index="split", columns="method",
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
        "| split | nominal | coverage | noise-aware coverage | mean width | median abs. error | truth's median se "
        "| quantile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in coverage:
        tag = " (tuning split)" if _is_tuning(row["dataset"], row["cell_type"]) else ""
        lines.append(
            f"| {split_label(row['dataset'], row['cell_type'], row['target'])}{tag} | {row['level']:.0%} | "
            f"{row['coverage']:.1%} | {row['coverage_noise_aware']:.1%} | {row['mean_width']:.3f} | "
            f"{row['median_abs_error']:.3f} | {row['median_truth_se']:.3f} | {row['quantile']:.2f} |"
        )
    rest = [row for row in coverage if not _is_tuning(row["dataset"], row["cell_type"])]
    for key, name in (("coverage", "Coverage"), ("coverage_noise_aware", "Noise-aware coverage")):
        if not rest:
            break
        values = [row[key] for row in rest]
        per_dataset: dict[str, list[float]] = {}
        for row in rest:
            per_dataset.setdefault(row["dataset"], []).append(row[key])
        medians = ", ".join(f"{d} {np.median(v):.1%} ({len(v)})" for d, v in per_dataset.items())
        lines.append(
            f"\n{name}, median over {len(rest)} splits (without the tuning split): {np.median(values):.1%}; "
            f"per data set (splits): {medians}; lowest split {min(values):.1%}."
        )
    return "\n".join(lines)


def coverage_by_k(frame) -> str:
    """Median over splits of the draws' mean coverage and width of the few-shot intervals, per k (scored cells)."""
    mine = frame[(frame["method"] == "trVAE few-shot") & ~frame["tuning"]]
    values = ["coverage", "coverage_noise_aware", "mean_width"]
    per_split = mine.groupby(["split", "k"])[values].mean().reset_index()
    lines = [_PER_K_CAPTION, "", "| k | splits | median coverage | median noise-aware coverage | median mean width |",
             "|---|---|---|---|---|"]  # fmt: skip
    for k, group in per_split.groupby("k"):
        lines.append(
            f"| {k} | {len(group)} | {group['coverage'].median():.1%} | {group['coverage_noise_aware'].median():.1%} | "
            f"{group['mean_width'].median():.3f} |"
        )
    return "\n".join(lines)


def split_label(dataset: str, cell_type: str, target: str) -> str:
    """``dataset cell type``, with ``-> target`` where the data set has more than one perturbed condition."""
    spec = DATASETS.get(dataset)
    return f"{dataset} {cell_type}" + (f" -> {target}" if spec is not None and len(spec.perturbed) > 1 else "")


def _is_tuning(dataset: str, cell_type: str) -> bool:
    return (dataset, cell_type) == TUNING_SPLIT


def _with_labels(frame):
    """``frame`` with the columns ``split`` (:func:`split_label`) and ``tuning`` (the tuning split)."""
    frame = frame.copy()
    keys = zip(frame["dataset"], frame["cell_type"], frame["target"], strict=True)
    frame["split"] = [split_label(*key) for key in keys]
    frame["tuning"] = [_is_tuning(d, c) for d, c in zip(frame["dataset"], frame["cell_type"], strict=True)]
    return frame


def gain_figure(payload: dict[str, Any], path: Path) -> None:
    """The gain curve per data set: median over its splits (without the tuning split) of each score against k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = _with_labels(pd.DataFrame(payload["rows"]))
    frame = frame[~frame["tuning"]]
    if frame.empty:
        return
    per_split = frame.groupby(["dataset", "split", "k", "method"])[["pearson_delta_deg", "edist_scaled"]].median()
    curves = per_split.groupby(["dataset", "k", "method"]).median().reset_index()
    datasets = list(dict.fromkeys(curves["dataset"]))
    fig, axs = plt.subplots(2, len(datasets), figsize=(4 * len(datasets), 6.5), squeeze=False, layout="constrained")
    for col, dataset in enumerate(datasets):
        n_splits = frame.loc[frame["dataset"] == dataset, "split"].nunique()
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
