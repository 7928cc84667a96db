"""The mean shifts with their spread scaled: baselines beside the pipeline's spread scaling (issue 22).

``baselines.mean_shift(scale_spread=True)`` of each kind (pooled, balanced, similarity-weighted) on every split of the
benchmark, scored as the benchmark scores (no fit: seconds per split). Each split is cached as JSON in ``--out-dir``.
The report counts, on the splits without Kang NK (the tuning split), how often the stronger of the three scaled shifts
(per split and metric, with hindsight) beats the stronger plain mean shift, and how often the default pipeline
(``benchmarks/results/blend_ceiling/``, its own-process run) and the spread-scaling variant of ``pipeline_variant.py``
beat each. A gain of the pipeline that the scaled mean shifts match is the scaling's, not the model's.

    python benchmarks/scaled_mean_shift.py                 # every split, then the report
    python benchmarks/scaled_mean_shift.py --report        # the report of the splits done
    python benchmarks/scaled_mean_shift.py --quick --out-dir /tmp/s   # one tiny synthetic split (tested)
"""

from __future__ import annotations

import json
import operator
import sys
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from blend_ceiling import METRICS, TUNING_SPLIT, score, splits  # noqa: E402
from blend_ceiling import OUT_DIR as CEILING_DIR  # noqa: E402
from matched_folds import case_name, quick_split  # noqa: E402
from oos.splits import Split, split_parser  # noqa: E402
from pipeline_variant import OUT_DIR as VARIANTS_DIR  # noqa: E402

from scvi_trvae import baselines  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "scaled_mean_shift"
#: The pipeline variant that lets the inner folds scale the spread.
VARIANT_DIR = VARIANTS_DIR / "selection-spread_scalings-False-True"
KINDS = {"pooled": {}, "balanced": {"balanced": True}, "similarity": {"similarity": True}}


def scaled_scores(split: Split) -> dict[str, dict[str, float]]:
    """Scores of the three mean shifts with their spread scaled, by kind."""
    keys = {**split.task_keys, "cell_type": split.cell_type}
    return {
        kind: score(as_dense(baselines.mean_shift(split.train, scale_spread=True, **keys, **option).X), split)
        for kind, option in KINDS.items()
    }


def split_records(case: dict, ceiling: dict, variant: dict | None) -> list[dict]:
    """Per metric: does each prediction beat the stronger plain, and the stronger scaled, mean shift?"""
    records = []
    for metric, higher in METRICS.items():
        beats, best = (operator.gt, max) if higher else (operator.lt, min)
        scaled = best(scores[metric] for scores in case["scaled"].values())
        plain = ceiling["ceiling"][metric]["stronger mean shift"]
        predictions = {"stronger scaled mean shift": scaled, "default pipeline": ceiling["ceiling"][metric]["pipeline"]}
        if variant is not None:
            predictions["spread-scaling pipeline"] = variant["scores"][metric]
        for name, value in predictions.items():
            records.append({"metric": metric, "prediction": name, "beats stronger mean shift": beats(value, plain),
                            "beats stronger scaled mean shift": beats(value, scaled), "value": value})  # fmt: skip
    return records


def report(out_dir: Path, ceiling_dir: Path = CEILING_DIR, variant_dir: Path = VARIANT_DIR) -> str:
    """:func:`win_table` as markdown."""
    table = win_table(out_dir, ceiling_dir, variant_dir)
    return "no splits done" if table is None else table.round(3).to_markdown()


def win_table(out_dir: Path, ceiling_dir: Path = CEILING_DIR, variant_dir: Path = VARIANT_DIR) -> pd.DataFrame | None:
    """Win counts and medians per (metric, prediction) on the splits without Kang NK whose default pipeline run
    exists (the variant's where it ran); None without any."""
    records = []
    for path in sorted(out_dir.glob("*.json")):
        case = json.loads(path.read_text())
        reference, variant = ceiling_dir / path.name, variant_dir / path.name
        if (case["dataset"], case["cell_type"]) == TUNING_SPLIT or not reference.exists():
            continue
        variant_case = json.loads(variant.read_text()) if variant.exists() else None
        records += split_records(case, json.loads(reference.read_text()), variant_case)
    if not records:
        return None
    wins = ("beats stronger mean shift", "beats stronger scaled mean shift")
    return (
        pd.DataFrame(records)
        .groupby(["metric", "prediction"], sort=False)
        .agg(splits=("value", "size"), **{column: (column, "sum") for column in wins}, median=("value", "median"))
    )


def main(argv: list[str] | None = None) -> None:
    args = split_parser(__doc__, OUT_DIR).parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    cases = [] if args.report else [quick_split()] if args.quick else splits(args.datasets, args.data_dir)
    for split in cases:
        path = args.out_dir / case_name(split)
        if path.exists() and not args.quick:
            continue
        result = {"dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
                  "n_control": int(split.control.n_obs), "scaled": scaled_scores(split)}  # fmt: skip
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{split.dataset} {split.cell_type} {split.target}: {result['scaled']}", flush=True)
    text = report(args.out_dir)
    (args.out_dir / "scaled_mean_shift.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
