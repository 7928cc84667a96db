"""Would a wider blend grid help the recommended pipeline? Checked on the tuning data only (issue 22).

The recommended pipeline (:func:`scvi_trvae.model_selection.fit_recommended`) predicts
``x + w * m + (1 - w) * p + lambda * d_i`` and chooses ``w``, ``lambda`` and the kind of reference shift ``p`` on
its inner folds, among ``lambda`` in {0, 0.5, 1} and the pooled or similarity-weighted shift. ``lambda = 1`` (each
cell's whole deviation from trVAE's mean response) is chosen on most benchmark splits: the edge of its grid, and
trVAE's predicted cell-to-cell spread is about half the true one (``docs/accuracy.md``). This runs
``fit_recommended`` once per case with the widest grid (``lambda`` up to 2, the cell-type-balanced shift too),
then predicts the held-out cells with the choice each narrower grid would have made from the same inner-fold
scores (the same fits, so the grids differ in their choice only):

* ``current``: the pipeline's grid;
* ``lambda to 2``: ``lambda`` in {0, 0.5, 1, 1.5, 2};
* ``+ balanced``: the balanced shift as a third candidate;
* ``both``: the two together.

Cases: ``synthetic:S:SEED`` (:func:`~scvi_trvae.datasets.synthetic_perturbation` with ``state_dependence=S``,
``type_A`` stimulated held out, scored against each cell's own truth too, as in ``synthetic_state.py``) and
``kang:NK``, the benchmark's tuning split (2,000 genes). No other benchmark split is used. Each case is cached as
JSON in ``--out-dir``; ``--report`` prints and writes the table (means over the cases of each kind).

    python benchmarks/blend_grid.py --case synthetic:1:0 synthetic:1:1 kang:NK
    python benchmarks/blend_grid.py --report
    python benchmarks/blend_grid.py --quick --out-dir /tmp/blend_grid     # tiny, 2 epochs (the suite runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy.stats import ConstantInputWarning

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402

from scvi_trvae import baselines, metrics, model_selection  # noqa: E402
from scvi_trvae.datasets import ground_truth_scores, synthetic_true_response  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "blend_grid"
KINDS = ("pooled", "similarity", "balanced")  # the pipeline's two first: its tie-breaking is kept
WIDE_LAMBDAS = (0.0, 0.5, 1.0, 1.5, 2.0)
#: Each grid as (kinds of reference shift, lambdas); every grid has the pipeline's shift weights.
GRIDS = {
    "current": (model_selection.DEFAULT_REFERENCE_SHIFTS, model_selection.DEFAULT_DEVIATION_WEIGHTS),
    "lambda to 2": (model_selection.DEFAULT_REFERENCE_SHIFTS, WIDE_LAMBDAS),
    "+ balanced": (KINDS, model_selection.DEFAULT_DEVIATION_WEIGHTS),
    "both": (KINDS, WIDE_LAMBDAS),
}
MEAN_SHIFTS = {
    "control + mean shift": {},
    "control + balanced mean shift": {"balanced": True},
    "control + similarity mean shift": {"similarity": True},
}
SCORES = ("pearson_delta_deg", "edist_scaled", "paired_rmse", "spread_ratio")


def grid_choice(summary: pd.DataFrame, kinds, lambdas) -> dict:
    """The best ``(w, lambda, kind)`` of ``summary`` (sorted best first) within ``kinds`` and ``lambdas``."""
    inside = summary[summary["reference_shift"].isin(kinds) & summary["deviation_weight"].isin(lambdas)]
    best = inside.iloc[0]
    return {"shift_weight": float(best["shift_weight"]), "deviation_weight": float(best["deviation_weight"]),
            "reference_shift": str(best["reference_shift"]), "inner_score": float(best["score"])}  # fmt: skip


class Case(NamedTuple):
    """One held-out (cell type, target) of the tuning data."""

    train: AnnData
    control: AnnData
    real: AnnData
    degs: np.ndarray
    cell_type: str
    #: On synthetic data each control cell's true response and the held-out type's response genes; else None.
    truth: tuple[np.ndarray, np.ndarray] | None


def case_data(case: str, quick: bool, data_dir: Path) -> Case:
    """The cells of ``case`` (``synthetic:S:SEED`` or ``kang:NK``; nothing else: the other splits are the test)."""
    kind, *rest = case.split(":")
    if kind == "synthetic":
        _, split = synthetic_state.synthetic_split(float(rest[0]), int(rest[1]), quick)
        truth = synthetic_true_response(split.control, "control", "stimulated", synthetic_state.HELD_OUT)
        degs = metrics.top_degs(split.real_target, split.control)
        return Case(split.train, split.control, split.real_target, degs, synthetic_state.HELD_OUT, truth)
    if case != "kang:NK":
        raise SystemExit(f"unknown case {case!r}: the tuning data are synthetic:S:SEED and kang:NK only")
    from oos.datasets import DATASETS, load_dataset
    from oos.splits import make_split

    spec = DATASETS["kang"]
    split = make_split(load_dataset(spec, data_dir), "kang", spec, "NK", "stimulated", spec.n_top_genes)
    return Case(split.train, split.control, split.real_target, split.degs, "NK", None)


def case_file(case: str) -> str:
    """The file name of a tuning case's result (``kang:NK`` -> ``case_kang_NK.json``)."""
    return f"case_{case.replace(':', '_')}.json"


def score(x: np.ndarray, data: Case) -> dict[str, float]:
    """The benchmark's two metrics, and on synthetic data the paired error and spread against each cell's truth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        scores = metrics.evaluate_prediction(x, data.real, data.control, degs=data.degs, seed=0)
    row = {k: float(scores[k]) for k in ("pearson_delta_deg", "edist_scaled")}
    if data.truth is not None:
        paired = ground_truth_scores(x, data.control, *data.truth)
        row.update(paired_rmse=float(paired["paired_rmse"]), spread_ratio=float(paired["spread_ratio"]))
    return row


def mean_shift_rows(data: Case) -> dict[str, dict[str, float]]:
    """The three mean shifts (no fit), as the benchmark computes them, beside the grids."""
    return {
        name: score(
            as_dense(baselines.mean_shift(data.train, cell_type=data.cell_type, **synthetic_state.KEYS, **kind).X), data
        )
        for name, kind in MEAN_SHIFTS.items()
    }


def run_case(data: Case, quick: bool, accelerator: str) -> dict:
    """Fit the pipeline once with the widest grid; score each grid's choice on the held-out cells."""
    keys = synthetic_state.KEYS
    ensemble, selection = model_selection.fit_recommended(
        data.train, **keys, seed=0, max_epochs=2 if quick else None, progress_bar=False, accelerator=accelerator,
        deviation_weights=WIDE_LAMBDAS, reference_shifts=KINDS,
    )  # fmt: skip
    rows = {}
    for name, (kinds, lambdas) in GRIDS.items():
        choice = grid_choice(selection.summary, kinds, lambdas)
        pred = ensemble.predict_perturbation(
            data.control, source=keys["source"], target=keys["target"],
            shift_weight=choice["shift_weight"], deviation_weight=choice["deviation_weight"],
            reference_shift=choice["reference_shift"],
        )  # fmt: skip
        rows[name] = {**choice, **score(as_dense(pred.X), data)}
    return rows


def report(out_dir: Path) -> pd.DataFrame:
    """Means over the cases of each kind (synthetic by state dependence, Kang NK), one row per grid."""
    records = []
    for path in sorted(out_dir.glob("case_*.json")):
        case = json.loads(path.read_text())
        kind, *rest = case["case"].split(":")
        group = f"synthetic, state dependence {rest[0]}" if kind == "synthetic" else case["case"]
        for grid, row in {**case["grids"], **case.get("mean_shifts", {})}.items():
            records.append({"cases": group, "grid": grid, "case": case["case"], **row})
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    columns = [c for c in (*SCORES, "deviation_weight") if c in frame]
    table = frame.groupby(["cases", "grid"], sort=False)[columns].mean().round(3)
    table.insert(0, "n", frame.groupby(["cases", "grid"], sort=False)["case"].nunique())
    return table


def case_parser(description: str, out_dir: Path) -> argparse.ArgumentParser:
    """The command line of a benchmark over tuning cases (this one and ``member_shrinkage.py``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", nargs="+", default=[], help="synthetic:S:SEED or kang:NK")
    parser.add_argument("--report", action="store_true", help="print and write the table of the cached cases")
    parser.add_argument("--quick", action="store_true", help="one tiny synthetic case, 2 epochs")
    parser.add_argument("--out-dir", type=Path, default=out_dir)
    parser.add_argument("--data-dir", type=Path, default=BENCH.parent.parent / "shared" / "data")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def run_cases(
    args: argparse.Namespace,
    quick_case: str,
    run: Callable[[str], dict],
    report: Callable[[Path], str],
    report_name: str,
) -> None:
    """Run each case of :func:`case_parser`'s command line once, one JSON file a case, then report.

    ``run(case)`` gives what the case's file holds besides the case and the mode (``quick_case`` alone runs with
    ``--quick``); a case already in ``args.out_dir`` is not run again, except in quick mode. With ``--report`` or
    ``--quick``, ``report(out_dir)`` is printed and written to ``out_dir / report_name``.
    """
    torch.set_num_threads(args.threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for case in [quick_case] if args.quick else args.case:
        path = args.out_dir / case_file(case)
        if args.quick or not path.exists():
            path.write_text(json.dumps({"case": case, "quick": args.quick, **run(case)}, indent=1))
        print(f"{case}: done", flush=True)
    if args.report or args.quick:
        text = report(args.out_dir)
        print(text)
        (args.out_dir / report_name).write_text(text)


def main(argv: list[str] | None = None) -> None:
    args = case_parser(__doc__, OUT_DIR).parse_args(argv)

    def run(case: str) -> dict:
        data = case_data(case, args.quick, args.data_dir)
        return {"grids": run_case(data, args.quick, args.accelerator), "mean_shifts": mean_shift_rows(data)}

    run_cases(args, "synthetic:1:0", run, lambda out_dir: report(out_dir).to_markdown() + "\n", "blend_grid.md")


if __name__ == "__main__":
    main()
