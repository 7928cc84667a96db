"""How far could a better choice of the blend take the recommended pipeline? A hindsight ceiling (issue 22).

The recommended pipeline predicts ``x + w * m + (1 - w) * p + lambda * d_i`` (``m`` its ensemble's mean response,
``d_i`` each cell's deviation from it, ``p`` a reference shift of the other cell types) and chooses ``w``,
``lambda`` and the kind of ``p`` on inner folds of the training cells. Where it loses to the stronger mean shift,
is that the choice, or the model's ``m`` and ``d_i``? This scores *every* blend of the pipeline's own grid on the
held-out cells and keeps the best per split, chosen with hindsight: no selection on inner folds can do better with
these components, so a target this ceiling misses needs better components, not a better choice.

It reads what the benchmark kept: the prediction of ``trVAE ensemble + shrink (own process)`` (``.npy`` beside its
cached result; ``out_of_sample.py --keep-predictions``) and its runner's ``meta.json`` (the chosen ``w``,
``lambda`` and kind), and recovers ``m`` and ``d_i`` from that prediction: its mean response over the cells is
``w * m + (1 - w) * p``, the rest ``lambda * d_i``. So ``m`` is not recovered where the pipeline chose ``w = 0``,
nor ``d_i`` where it chose ``lambda = 0``: there only blends with that ``w`` (or ``lambda``) are scored. The
pipeline's clipping at zero makes the recovery approximate where a prediction was clipped; the pipeline's own blend
is recovered exactly. The stronger mean shift is the best, per split and metric, of the three mean shifts of the
benchmark (pooled, cell-type-balanced, similarity-weighted), also chosen with hindsight.
The grid is that of the pipeline with the spread as observed (``spread_scalings=(False,)``, the default until the
scaled spread became a candidate, and how the benchmark's kept predictions were made).

    python benchmarks/blend_ceiling.py                  # every split with a kept prediction -> results/blend_ceiling/
    python benchmarks/blend_ceiling.py --report         # the table of the cached splits
    python benchmarks/blend_ceiling.py --quick --out-dir /tmp/ceiling  # one tiny synthetic split, 2 epochs (tested)
"""

from __future__ import annotations

import json
import operator
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import ConstantInputWarning

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from oos import paths, peers  # noqa: E402
from oos.cache import prediction_path, slug  # noqa: E402
from oos.datasets import DATASETS, load_dataset  # noqa: E402
from oos.registry import AUTO_EPOCHS  # noqa: E402
from oos.splits import Split, held_out_pairs, make_split, split_parser  # noqa: E402

from scvi_trvae import metrics, model_selection  # noqa: E402
from scvi_trvae.baselines import REFERENCE_SHIFTS, reference_shift  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "blend_ceiling"
#: The pipeline's grid (``fit_recommended``'s defaults).
GRID = {
    "shift_weight": model_selection.DEFAULT_SHIFT_WEIGHTS,
    "deviation_weight": model_selection.DEFAULT_DEVIATION_WEIGHTS,
    "reference_shift": model_selection.DEFAULT_REFERENCE_SHIFTS,
}
#: (metric, higher is better) of the win counts.
METRICS = {"pearson_delta_deg": True, "edist_scaled": False}
METRIC_TITLES = {"pearson_delta_deg": "Δ-Pearson (DEG)", "edist_scaled": "E-distance"}
ROW_TITLES = {"pipeline": "the pipeline (chosen on inner folds)", "best blend": "best blend of its grid (hindsight)"}
TUNING_SPLIT = ("kang", "NK")
BLEND_NAME = "w {shift_weight:g}, lambda {deviation_weight:g}, {reference_shift}"


def components(
    observed: np.ndarray, predicted: np.ndarray, reference: np.ndarray, shift_weight: float, deviation_weight: float
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Recover the model's mean response ``m`` and the cells' deviations ``d`` from a blended prediction.

    ``predicted = x + w * m + (1 - w) * reference + lambda * d`` with the deviations ``d`` summing to zero over the
    cells; ``m`` is None when ``w`` is 0 and ``d`` when ``lambda`` is 0 (they are not in the prediction).
    """
    response = np.asarray(predicted, dtype=np.float64) - np.asarray(observed, dtype=np.float64)
    mean = response.mean(0)
    model_mean = (mean - (1.0 - shift_weight) * reference) / shift_weight if shift_weight > 0 else None
    deviations = (response - mean) / deviation_weight if deviation_weight > 0 else None
    return model_mean, deviations


def blends(chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every blend of :data:`GRID` that can be rebuilt from a prediction made with the ``chosen`` one."""
    for kind in GRID["reference_shift"]:
        for w in GRID["shift_weight"] if chosen["shift_weight"] > 0 else (0.0,):
            for lam in GRID["deviation_weight"] if chosen["deviation_weight"] > 0 else (0.0,):
                yield {"shift_weight": float(w), "deviation_weight": float(lam), "reference_shift": kind}


def score(pred: np.ndarray, split: Split) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        scores = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=split.degs, seed=0)
    return {k: float(scores[k]) for k in METRICS}


def split_rows(split: Split, predicted: np.ndarray, chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """Scores of the pipeline's prediction, of every blend rebuilt from it and of the three mean shifts."""
    keys = {**split.task_keys, "cell_type": split.cell_type}
    references = {kind: reference_shift(split.train, kind, **keys) for kind in REFERENCE_SHIFTS}
    observed = as_dense(split.control.X).astype(np.float64)
    model_mean, deviations = components(
        observed, predicted, references[chosen["reference_shift"]], chosen["shift_weight"], chosen["deviation_weight"]
    )
    rows = [{"row": "pipeline", **chosen, **score(predicted, split)}]
    for blend in blends(chosen):
        w, lam = blend["shift_weight"], blend["deviation_weight"]
        pred = observed + (1.0 - w) * references[blend["reference_shift"]]
        if w > 0:
            pred = pred + w * model_mean
        if lam > 0:
            pred = pred + lam * deviations
        rows.append({"row": "blend", **blend, **score(np.clip(pred, 0.0, None), split)})
    for kind, shift in references.items():
        rows.append(
            {"row": "mean shift", "reference_shift": kind, **score(np.clip(observed + shift, 0.0, None), split)}
        )
    return rows


def kept_prediction(cache_dir: Path, split: Split) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The own-process pipeline's kept prediction of ``split`` and the blend it chose, or None if not kept.

    Also None where the pipeline chose the scaled spread (a runner's ``meta.json`` from before the spread scaling
    was recorded had none): :func:`components` rebuilds blends with the spread as observed.
    """
    npy = prediction_path(cache_dir, split, peers.OWN_PROCESS[0])
    # the runner's meta.json, named as the benchmark names it, in the meta folder of this cache
    default = peers.meta_path(split, peers.OWN_PROCESS[1], 0, AUTO_EPOCHS)
    meta = paths.peer_meta_dir(cache_dir) / default.relative_to(peers.META_DIR)
    if not (npy.exists() and meta.exists()):
        return None
    settings = json.loads(meta.read_text())["settings"]
    if settings.get("spread_scaling", False):
        return None
    chosen = {k: settings[k] for k in ("shift_weight", "deviation_weight")}
    return np.load(npy).astype(np.float64), {**chosen, "reference_shift": settings["reference_shift"]}


def quick_split() -> tuple[Split, np.ndarray, dict[str, Any]]:
    """A tiny synthetic split, the pipeline fitted on it for 2 epochs, its prediction and choice."""
    from oos.datasets import DatasetSpec

    adata, _ = synthetic_state.synthetic_split(1.0, 0, quick=True)
    keys = synthetic_state.KEYS
    spec = DatasetSpec(file="", control=keys["source"], perturbed=(keys["target"],), kind="lognorm",
                       n_top_genes=None, description="synthetic")  # fmt: skip
    split = make_split(adata, "synthetic", spec, synthetic_state.HELD_OUT, keys["target"], None)
    ensemble, selection = model_selection.fit_recommended(  # the spread as observed, as the grid rebuilds it
        split.train, **keys, seed=0, max_epochs=2, progress_bar=False, accelerator="cpu", spread_scalings=(False,)
    )
    chosen = {"shift_weight": selection.best_shift_weight, "deviation_weight": selection.best_deviation_weight,
              "reference_shift": selection.best_reference_shift}  # fmt: skip
    pred = ensemble.predict_perturbation(split.control, source=keys["source"], target=keys["target"], **chosen)
    return split, as_dense(pred.X).astype(np.float64), chosen


def splits(datasets: list[str], data_dir: Path) -> Iterator[Split]:
    for dataset in datasets:
        spec = DATASETS[dataset]
        adata = load_dataset(spec, data_dir)
        for cell_type, target in held_out_pairs(adata, dataset, spec, None, 0):
            yield make_split(adata, dataset, spec, cell_type, target, spec.n_top_genes)


def ceiling(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric: the pipeline's value, the best blend's (hindsight) and the stronger mean shift's."""
    frame = pd.DataFrame(rows)
    out = {}
    for metric, higher in METRICS.items():
        best = np.max if higher else np.min
        out[metric] = {
            "pipeline": float(frame.loc[frame["row"] == "pipeline", metric].iloc[0]),
            "best blend": float(best(frame.loc[frame["row"] == "blend", metric])),
            "stronger mean shift": float(best(frame.loc[frame["row"] == "mean shift", metric])),
        }
    return out


def split_wins(case: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (metric, prediction) of a cached split: does it beat the stronger mean shift?"""
    full = case["chosen"]["shift_weight"] > 0 and case["chosen"]["deviation_weight"] > 0
    records = []
    for metric, higher in METRICS.items():
        beats = operator.gt if higher else operator.lt
        reference = case["ceiling"][metric]["stronger mean shift"]
        predictions = {name: case["ceiling"][metric][name] for name in ("pipeline", "best blend")}
        for row in case["rows"]:
            if row["row"] == "blend":
                predictions[BLEND_NAME.format(**row)] = row[metric]
        for name, value in predictions.items():
            records.append({"metric": metric, "prediction": name, "win": beats(value, reference), "full grid": full})
    return records


def report(out_dir: Path) -> str:
    """Win counts against the stronger mean shift on the non-tuning splits: the pipeline and its hindsight ceilings."""
    cases = [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]
    cases = [case for case in cases if (case["dataset"], case["cell_type"]) != TUNING_SPLIT]
    records = [record for case in cases for record in split_wins(case)]
    if not records:
        return "no cached splits"
    frame = pd.DataFrame(records)
    counts = frame.groupby(["prediction", "metric"])["win"].agg(["sum", "count"])

    def cell(table: pd.DataFrame, prediction: str, metric: str) -> str:
        return f"{int(table.loc[(prediction, metric), 'sum'])}/{int(table.loc[(prediction, metric), 'count'])}"

    full = frame[frame["full grid"]].groupby(["prediction", "metric"])["win"].agg(["sum", "count"])
    blends_only = full[full.index.get_level_values("prediction").str.startswith("w ")]
    n_full = int(full.loc[("pipeline", "edist_scaled"), "count"]) if len(full) else 0
    lines = ["| prediction | " + " | ".join(METRIC_TITLES.values()) + " |", "|---|---|---|"]
    for name in ("pipeline", "best blend"):
        lines.append(f"| {ROW_TITLES[name]} | " + " | ".join(cell(counts, name, m) for m in METRICS) + " |")
    if n_full:
        lines.append(f"| the pipeline, on the {n_full} splits with the whole grid | "
                     + " | ".join(cell(full, "pipeline", m) for m in METRICS) + " |")  # fmt: skip
        best = {m: blends_only.xs(m, level="metric")["sum"].idxmax() for m in METRICS}
        lines.append(
            f"| the best single blend for all {n_full} (hindsight) | "
            + " | ".join(f"{cell(blends_only, best[m], m)} ({best[m]})" for m in METRICS) + " |"
        )  # fmt: skip
    return (
        "Wins against the stronger mean shift (hindsight best of three, per split and metric), non-tuning splits:\n\n"
        + "\n".join(lines)
        + f"\n\nOn {len(cases) - n_full} of them only part of the grid could be rebuilt (the pipeline chose w = 0 "
        "or lambda = 0 there)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = split_parser(__doc__, OUT_DIR)
    parser.add_argument("--cache-dir", type=Path, default=paths.CACHE_DIR / "full")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        cases = [quick_split()]
    elif args.report:
        cases = []
    else:
        cases = (
            (split, *kept)
            for split in splits(args.datasets, args.data_dir)
            if not (args.out_dir / f"{split.dataset}__{slug(split.cell_type)}__{slug(split.target)}.json").exists()
            and (kept := kept_prediction(args.cache_dir, split)) is not None
        )
    for split, predicted, chosen in cases:
        rows = split_rows(split, predicted, chosen)
        result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target, "chosen": chosen,
                  "ceiling": ceiling(rows), "rows": rows}  # fmt: skip
        path = args.out_dir / f"{split.dataset}__{slug(split.cell_type)}__{slug(split.target)}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{split.dataset} {split.cell_type} {split.target}: {result['ceiling']}", flush=True)
    text = report(args.out_dir)
    (args.out_dir / "blend_ceiling.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
