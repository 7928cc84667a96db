"""The recommended pipeline with inner folds matched to the type to predict, on the benchmark's splits (issue 22).

``fit_recommended(fold_source_cells="matched")`` keeps, in each inner fold, only as many control cells of the
fold's held-out type as the type to predict has (``benchmarks/rare_type_folds.py`` tried it on the tuning data).
This runs it on the benchmark's splits, rarest held-out types first, and scores it as the benchmark does. The
pipeline with the default folds is read from ``benchmarks/results/blend_ceiling/`` (its own-process run on the CPU,
the same three members: same data, seeds and code path), as is the stronger mean shift (the best of the pooled,
balanced and similarity-weighted shifts, per split and metric, with hindsight). Each split is cached as JSON in
``--out-dir``; ``--report`` prints the win counts of the splits done so far.

    python benchmarks/matched_folds.py --datasets haber_hpoly haber_salmonella haber_3cond
    python benchmarks/matched_folds.py --report
    python benchmarks/matched_folds.py --quick --out-dir /tmp/matched   # one tiny synthetic split, 2 epochs (tested)
"""

from __future__ import annotations

import json
import operator
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_ceiling import METRICS, TUNING_SPLIT, score  # noqa: E402
from blend_ceiling import OUT_DIR as CEILING_DIR  # noqa: E402
from oos.cache import slug  # noqa: E402
from oos.datasets import DATASETS, DatasetSpec, load_dataset  # noqa: E402
from oos.splits import Split, held_out_pairs, make_split, split_parser  # noqa: E402

from scvi_trvae import model_selection  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "matched_folds"


def fit_on_split(split: Split, **options: Any) -> tuple[Any, dict[str, float]]:
    """:func:`fit_recommended` on the split's training cells (seed 0, CPU, ``options``): its selection, and the scores
    of its prediction of the held-out cells (``pipeline_variant.py`` fits with this too)."""
    ensemble, selection = model_selection.fit_recommended(
        split.train, **split.task_keys, seed=0, progress_bar=False, accelerator="cpu",
        setup_kwargs=split.setup_kwargs, **options,
    )  # fmt: skip
    pred = ensemble.predict_perturbation(split.control, source=split.source, target=split.target)
    return selection, score(as_dense(pred.X).astype(np.float64), split)


def matched_prediction(split: Split, quick: bool = False) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit the pipeline with matched inner folds on the split's training cells; its choice and scores."""
    selection, scores = fit_on_split(split, fold_source_cells="matched", **({"max_epochs": 2} if quick else {}))
    chosen = {"shift_weight": selection.best_shift_weight, "deviation_weight": selection.best_deviation_weight,
              "reference_shift": selection.best_reference_shift,
              "fold_source_cells": selection.extra.get("fold_source_cells")}  # fmt: skip
    return chosen, scores


def rarest_first(datasets: list[str], data_dir: Path) -> Iterator[Split]:
    """Every split of ``datasets``, each data set's held-out types by their number of control cells, fewest first."""
    for dataset in datasets:
        spec = DATASETS[dataset]
        adata = load_dataset(spec, data_dir)
        types = adata.obs[spec.cell_type_key].to_numpy()
        n_control = pd.Series(types[(adata.obs[spec.condition_key] == spec.control).to_numpy()]).value_counts()
        pairs = sorted(held_out_pairs(adata, dataset, spec, None, 0), key=lambda p: (n_control.get(p[0], 0), p))
        for cell_type, target in pairs:
            yield make_split(adata, dataset, spec, cell_type, target, spec.n_top_genes)


def quick_split() -> Split:
    adata, _ = synthetic_state.synthetic_split(1.0, 0, quick=True)
    keys = synthetic_state.KEYS
    spec = DatasetSpec(file="", control=keys["source"], perturbed=(keys["target"],), kind="lognorm",
                       n_top_genes=None, description="synthetic")  # fmt: skip
    return make_split(adata, "synthetic", spec, synthetic_state.HELD_OUT, keys["target"], None)


def case_name(split: Split) -> str:
    return f"{split.dataset}__{slug(split.cell_type)}__{slug(split.target)}.json"


def report(
    out_dir: Path, ceiling_dir: Path = CEILING_DIR, label: str = "matched", default_dir: Path | None = None
) -> str:  # fmt: skip
    """Wins against the stronger mean shift of the splits' pipeline (``label``: what it changes) and of the default
    pipeline, the one against the other, and both medians (``pipeline_variant.py`` reports with this too).

    The default pipeline is the ceiling's own-process run (the spread as observed), or the results in ``default_dir``
    (files named as in ``out_dir``); splits whose result is the default's (``same_fits_as``) are counted.
    """
    records = []
    for path in sorted(out_dir.glob("*.json")):
        case = json.loads(path.read_text())
        reference = ceiling_dir / path.name
        if (case["dataset"], case["cell_type"]) == TUNING_SPLIT or not reference.exists():
            continue
        ceiling = json.loads(reference.read_text())["ceiling"]
        if default_dir is not None:
            default_scores = json.loads((default_dir / path.name).read_text())["scores"]
        for metric, higher in METRICS.items():
            beats = operator.gt if higher else operator.lt
            matched = case["scores"][metric]
            default = ceiling[metric]["pipeline"] if default_dir is None else default_scores[metric]
            shift = ceiling[metric]["stronger mean shift"]
            records.append({
                "metric": metric, f"{label} beats mean shift": beats(matched, shift),
                "default beats mean shift": beats(default, shift), f"{label} better": beats(matched, default),
                f"{label} worse": beats(default, matched), "n_control": case["n_control"],
                f"{label} median": matched, "default median": default, "same fits": "same_fits_as" in case,
            })  # fmt: skip
    if not records:
        return "no splits done"
    by_metric = pd.DataFrame(records).groupby("metric", sort=False)
    counts = [f"{label} beats mean shift", "default beats mean shift", f"{label} better", f"{label} worse"]
    table = by_metric[counts].sum()
    table.insert(0, "splits", by_metric.size())
    table = table.join(by_metric[[f"{label} median", "default median"]].median().round(3))
    if by_metric["same fits"].sum().any():
        table["same fits as default"] = by_metric["same fits"].sum()
    return table.to_markdown()


def main(argv: list[str] | None = None) -> None:
    args = split_parser(__doc__, OUT_DIR).parse_args(argv)
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else rarest_first(args.datasets, args.data_dir)
    for split in cases:
        path = args.out_dir / case_name(split)
        if path.exists() and not args.quick:
            continue
        chosen, scores = matched_prediction(split, quick=args.quick)
        result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
                  "n_control": int(split.control.n_obs), "chosen": chosen, "scores": scores}  # fmt: skip
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{split.dataset} {split.cell_type} {split.target}: {chosen} {scores}", flush=True)
    text = report(args.out_dir)
    (args.out_dir / "matched_folds.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
