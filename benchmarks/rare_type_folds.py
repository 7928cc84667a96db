"""Inner folds that resemble a rare cell type to predict: do they choose its blend better? Tuning data only (issue 22).

The recommended pipeline chooses ``w``, ``lambda`` and the kind of reference shift on inner folds: cell types of
the training cells held out in turn, each predicted from *all* its control cells. A type to predict that has only a
few control cells is not like them: the model learns its mean response from those few cells, and the best blend
then leans on the reference shift more (``docs/accuracy.md``, the hindsight ceiling). With
``fold_source_cells="matched"`` each fold keeps only as many of its held-out type's control cells as the type to
predict has. This fits the pipeline once per case (the members and the default folds) and runs the selection again
with matched folds (4 more fits); both choices predict with the same members, so they differ in the choice only.

Cases: ``synthetic:S:SEED:N`` (:func:`~scvi_trvae.datasets.synthetic_perturbation` with ``state_dependence=S``,
``type_A`` stimulated held out and only ``N`` of its control cells kept, in training and to predict from; scored
against each cell's own truth too) and ``kang:NK``, the benchmark's tuning split, where NK is not rare. No other
benchmark split is used. Each case is cached as JSON in ``--out-dir``; ``--report`` prints and writes the table.

    python benchmarks/rare_type_folds.py --case synthetic:1:0:15 synthetic:0:0:15 kang:NK
    python benchmarks/rare_type_folds.py --report
    python benchmarks/rare_type_folds.py --quick --out-dir /tmp/rare_type_folds   # tiny, 2 epochs (the suite runs it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_grid import Case, case_data, case_parser, grid_choice, mean_shift_rows, run_cases, score  # noqa: E402

from scvi_trvae import model_selection  # noqa: E402
from scvi_trvae.datasets import synthetic_true_response  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "rare_type_folds"
#: The two choices compared, by ``fold_source_cells``.
FOLDS = {"all control cells": None, "matched": "matched"}
SCORES = ("pearson_delta_deg", "edist_scaled", "paired_rmse")


def rare_case(case: str, quick: bool, data_dir: Path) -> Case:
    """The cells of ``case`` (:func:`blend_grid.case_data`).

    ``synthetic:S:SEED:N`` keeps ``N`` random control cells of the held-out type.
    """
    kind, *rest = case.split(":")
    if kind != "synthetic" or len(rest) < 3:
        return case_data(case, quick, data_dir)
    data = case_data(":".join([kind, *rest[:2]]), quick, data_dir)
    n_kept = int(rest[2])
    held_out = data.cell_type
    kept = np.random.default_rng(int(rest[1])).choice(data.control.n_obs, size=n_kept, replace=False)
    control = data.control[np.sort(kept)].copy()
    obs = data.train.obs
    is_control = (obs["cell_type"] == held_out).to_numpy() & (obs["condition"] == "control").to_numpy()
    train = data.train[~is_control | data.train.obs_names.isin(control.obs_names)].copy()
    truth = synthetic_true_response(control, "control", "stimulated", held_out)
    return Case(train, control, data.real, data.degs, held_out, truth)


def run_case(case: str, quick: bool, data_dir: Path, accelerator: str) -> dict:
    """Fit the pipeline with the default folds, select again with matched folds, score both choices."""
    data = rare_case(case, quick, data_dir)
    keys = synthetic_state.KEYS
    fit = {"seed": 0, "progress_bar": False, "accelerator": accelerator}
    length = {"max_epochs": 2} if quick else {}
    ensemble, default = model_selection.fit_recommended(data.train, **keys, **fit, **length)
    length = (
        {"search_space": {"training_steps": (model_selection.training_steps(data.train.n_obs, 2),)}} if quick else {}
    )
    matched = model_selection.select_hyperparameters(
        data.train, **keys, **fit, n_configs=1, max_inner_folds=model_selection.RECOMMENDED_INNER_FOLDS,
        fold_source_cells="matched", **length,
    )  # fmt: skip
    rows = {}
    for name, selection in zip(FOLDS, (default, matched), strict=True):
        choice = grid_choice(selection.summary, model_selection.DEFAULT_REFERENCE_SHIFTS, (0.0, 0.5, 1.0))
        pred = ensemble.predict_perturbation(
            data.control, source=keys["source"], target=keys["target"], shift_weight=choice["shift_weight"],
            deviation_weight=choice["deviation_weight"], reference_shift=choice["reference_shift"],
        )  # fmt: skip
        cells = selection.extra.get("fold_source_cells")
        rows[name] = {**choice, "fold_source_cells": cells, **score(as_dense(pred.X), data)}
    return {"control_cells": int(data.control.n_obs), "choices": rows, "mean_shifts": mean_shift_rows(data)}


def report(out_dir: Path) -> pd.DataFrame:
    """One row per (case, prediction): the chosen blend and the scores."""
    records = []
    for path in sorted(out_dir.glob("case_*.json")):
        case = json.loads(path.read_text())
        for name, row in {**case["choices"], **case["mean_shifts"]}.items():
            records.append({"case": case["case"], "prediction": name, **row})
    frame = pd.DataFrame(records)
    if frame.empty:
        return frame
    columns = [
        "case",
        "prediction",
        "fold_source_cells",
        "shift_weight",
        "deviation_weight",
        "reference_shift",
        *SCORES,
    ]
    return frame[[c for c in columns if c in frame]].round(3)


def means(table: pd.DataFrame) -> pd.DataFrame:
    """Means over the seeds of each kind of case (``synthetic S, N cells`` or the case), one row per prediction,
    with how many cases the matched folds' choice scores better / worse than the default's (``n better/worse``)."""
    if table.empty:
        return table
    group = table["case"].str.replace(r"^synthetic:([^:]+):\d+:(\d+)$", r"synthetic S=\1, \2 cells", regex=True)
    frame = table.assign(cases=group)
    out = frame.groupby(["cases", "prediction"], sort=False)[[s for s in SCORES if s in frame]].mean().round(3)
    out.insert(0, "n", frame.groupby(["cases", "prediction"], sort=False)["case"].nunique())
    pivot = frame.pivot_table(index=["cases", "case"], columns="prediction", values=list(SCORES))
    for metric, better in (("pearson_delta_deg", 1), ("edist_scaled", -1), ("paired_rmse", -1)):
        if metric not in pivot:
            continue
        diff = better * (pivot[metric]["matched"] - pivot[metric]["all control cells"])
        counts = diff.groupby(level="cases").agg(lambda d: f"{int((d > 0).sum())}/{int((d < 0).sum())}")
        out[f"{metric}: matched better/worse"] = [
            counts.get(cases, "") if prediction == "matched" else "" for cases, prediction in out.index
        ]
    return out.reset_index()


def main(argv: list[str] | None = None) -> None:
    args = case_parser(__doc__, OUT_DIR).parse_args(argv)

    def tables(out_dir: Path) -> str:
        table = report(out_dir)
        return f"{means(table).to_markdown(index=False)}\n\n{table.to_markdown(index=False)}\n"

    def run(case: str) -> dict:
        return run_case(case, args.quick, args.data_dir, args.accelerator)

    run_cases(args, "synthetic:1:0:8", run, tables, "rare_type_folds.md")


if __name__ == "__main__":
    main()
