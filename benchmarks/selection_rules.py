"""How should the inner folds' scores pick the blend? Rules compared on the tuning data only (issue 22).

The recommended pipeline (:func:`scvi_trvae.model_selection.fit_recommended`) scores every blend
``x + w * m + (1 - w) * p + lambda * d_i`` on four inner folds and keeps the one with the best *mean* score
(Δ-Pearson (DEG) minus scaled E-distance). The hindsight ceiling (``docs/accuracy.md``) shows that the model's
components hold a better blend on most benchmark splits than the one chosen, and that where the pipeline loses, the
better blend leans on the reference shift ``p`` (smaller ``w``). Four folds give a noisy mean; this asks whether
another rule applied to the *same* inner scores would choose better:

* ``mean score``: the pipeline's rule;
* ``one standard error``: among the blends whose mean score is within one standard error of the best (of the
  paired differences over the folds), the one with the smallest ``w`` (the most weight on the reference shift;
  ties by mean score), the "one-standard-error rule" of model selection applied toward the constant shift;
* ``median fold``: the best median score over the folds;
* ``worst fold``: the best lowest score over the folds;
* ``mean rank``: the best mean rank within each fold (no fold's scale dominates);
* ``E-distance only`` and ``Δ-Pearson only``: the mean of one of the two metrics the score adds;
* ``similarity-weighted folds`` and ``two nearest folds``: folds whose type resembles the type to predict count
  more, or alone (the two that resemble it most), by the closeness the pipeline's similarity-weighted reference
  shift uses (:func:`scvi_trvae.baselines.similarity_weights` restricted to the fold types: :func:`fold_weights`).

Each case fits the pipeline once (:func:`fit_recommended`, default grid), keeps its inner scores per fold and scores
every blend of the grid on the held-out cells; the rules are then applied to the cached scores, so adding a rule
needs no fit. Cases: ``synthetic:S:SEED`` and ``synthetic:S:SEED:N`` (``type_A`` with only ``N`` control cells, as in
``rare_type_folds.py``) and ``kang:NK``, the benchmark's tuning split. No other benchmark split is used.

    python benchmarks/selection_rules.py --case synthetic:1:0 synthetic:1:0:15 kang:NK
    python benchmarks/selection_rules.py --report
    python benchmarks/selection_rules.py --quick --out-dir /tmp/selection_rules   # tiny, 2 epochs (the suite runs it)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synthetic_state  # noqa: E402
from blend_grid import case_parser, mean_shift_rows, run_cases, score  # noqa: E402
from rare_type_folds import rare_case  # noqa: E402

from scvi_trvae import model_selection  # noqa: E402
from scvi_trvae.baselines import similarity_weights  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "selection_rules"
BLEND = ["reference_shift", "shift_weight", "deviation_weight"]
SCORES = ("pearson_delta_deg", "edist_scaled", "paired_rmse")
#: Differences below this are ties: a blend equal to a mean shift scores the same up to rounding.
TIE = 1e-6


def _best(values: pd.Series) -> tuple:
    """The blend with the highest value; ties go to the pipeline's order (pooled before similarity)."""
    return values.sort_values(ascending=False, kind="stable").index[0]


def one_standard_error(per_fold: pd.DataFrame) -> tuple:
    """The blend with the smallest ``w`` whose mean score is within one standard error of the best one's.

    The standard error is that of the paired differences to the best blend over the folds: the folds differ in
    how hard they are, and that level is shared by every blend of a fold.
    """
    scores = per_fold.pivot_table(index="inner_cell_type", columns=BLEND, values="score", sort=False)
    best = _best(scores.mean())
    gap = -scores.sub(scores[best], axis=0)
    n_folds = len(scores)
    se = gap.std(ddof=1) / np.sqrt(n_folds) if n_folds > 1 else gap.std(ddof=0)
    close = scores.mean()[gap.mean() <= se.fillna(0.0)]
    frame = close.rename("score").reset_index()
    frame = frame.sort_values(["shift_weight", "score"], ascending=[True, False], kind="stable")
    return tuple(frame.iloc[0][BLEND])


def _by_fold(per_fold: pd.DataFrame, column: str, how: Callable[[pd.Series], pd.Series]) -> tuple:
    return _best(how(per_fold.groupby(BLEND, sort=False)[column]))


def _weighted_folds(per_fold: pd.DataFrame, weight: pd.Series) -> tuple:
    """The blend with the best weighted mean score over the folds, ``weight`` per row."""
    groups = [per_fold[column] for column in BLEND]
    total = (per_fold["score"] * weight).groupby(groups, sort=False).sum()
    return _best(total / weight.groupby(groups, sort=False).sum())


def _two_nearest(per_fold: pd.DataFrame) -> tuple:
    nearest = per_fold.drop_duplicates("inner_cell_type").nlargest(2, "fold_weight")["inner_cell_type"]
    return _weighted_folds(per_fold, per_fold["inner_cell_type"].isin(nearest).astype(float))


def fold_weights(
    train: AnnData, control: AnnData, folds: list[str], cell_type: str, keys: dict[str, str]
) -> dict[str, float]:  # fmt: skip
    """How much each fold's type resembles ``cell_type``, the type to predict from ``control``.

    The pipeline's own closeness: :func:`scvi_trvae.baselines.similarity_weights` on ``train`` (``X``; training
    cells only) centred on the mean of ``control``, with every type that is not a fold left out, so the weights of
    the folds sum to 1. ``keys``: ``cell_type_key``, ``condition_key``, ``source`` and ``target``. (A count split's
    ``X`` is ``log1p`` of its counts per 10,000, the scale its pipeline computes this on.)
    """
    not_folds = set(train.obs[keys["cell_type_key"]].astype(str)) - set(folds) - {cell_type}
    weights = similarity_weights(
        train, cell_type=cell_type, exclude=sorted(not_folds), centre=as_dense(control.X).mean(axis=0), **keys
    )
    return {fold: float(weights[fold]) for fold in folds}


def inner_frame(case: dict) -> pd.DataFrame:
    """A case's inner scores per fold and blend, with each fold's ``fold_weight``."""
    inner = pd.DataFrame(case["inner"])
    return inner.assign(fold_weight=inner["inner_cell_type"].map(case["fold_weights"]))


RULES: dict[str, Callable[[pd.DataFrame], tuple]] = {
    "mean score": lambda t: _by_fold(t, "score", lambda g: g.mean()),
    "one standard error": one_standard_error,
    "median fold": lambda t: _by_fold(t, "score", lambda g: g.median()),
    "worst fold": lambda t: _by_fold(t, "score", lambda g: g.min()),
    "mean rank": lambda t: _by_fold(
        t.assign(rank=t.groupby("inner_cell_type")["score"].rank()), "rank", lambda g: g.mean()
    ),
    "E-distance only": lambda t: _by_fold(t.assign(neg=-t["edist_scaled"]), "neg", lambda g: g.mean()),
    "Δ-Pearson only": lambda t: _by_fold(t, "pearson_delta_deg", lambda g: g.mean()),
    "similarity-weighted folds": lambda t: _weighted_folds(t, t["fold_weight"]),
    "two nearest folds": _two_nearest,
}


def run_case(case: str, quick: bool, data_dir: Path, accelerator: str) -> dict:
    """Fit the pipeline once; keep its inner scores per fold and every blend's scores on the held-out cells."""
    data = rare_case(case, quick, data_dir)
    keys = synthetic_state.KEYS
    length = {"max_epochs": 2} if quick else {}
    ensemble, selection = model_selection.fit_recommended(
        data.train, **keys, seed=0, progress_bar=False, accelerator=accelerator, **length
    )
    inner = selection.table[["inner_cell_type", *BLEND, "pearson_delta_deg", "edist_scaled", "score"]]
    folds = fold_weights(data.train, data.control, selection.inner_cell_types, data.cell_type, keys)
    held_out = []
    for kind in model_selection.DEFAULT_REFERENCE_SHIFTS:
        for weight in model_selection.DEFAULT_SHIFT_WEIGHTS:
            for deviation in model_selection.DEFAULT_DEVIATION_WEIGHTS:
                pred = ensemble.predict_perturbation(
                    data.control, source=keys["source"], target=keys["target"], shift_weight=weight,
                    deviation_weight=deviation, reference_shift=kind,
                )  # fmt: skip
                blend = {"reference_shift": kind, "shift_weight": float(weight), "deviation_weight": float(deviation)}
                held_out.append({**blend, **score(as_dense(pred.X), data)})
    chosen = [selection.best_reference_shift, selection.best_shift_weight, selection.best_deviation_weight]
    return {
        "control_cells": int(data.control.n_obs),
        "chosen": dict(zip(BLEND, chosen, strict=True)),
        "inner": inner.to_dict(orient="records"),
        "fold_weights": folds,
        "held_out": held_out,
        "mean_shifts": mean_shift_rows(data),
    }


def held_out_table(case: dict) -> pd.DataFrame:
    """The held-out scores of every blend of a cached case, indexed by the blend (``BLEND``)."""
    return pd.DataFrame(case["held_out"]).set_index(BLEND)


def choices(case: dict) -> pd.DataFrame:
    """Each rule's blend for one cached case and its scores on the held-out cells, then the mean shifts."""
    inner = inner_frame(case)
    held_out = held_out_table(case)
    rows = []
    for name, rule in RULES.items():
        blend = rule(inner)
        if name == "mean score" and list(blend) != [case["chosen"][k] for k in BLEND]:
            raise RuntimeError(f"{case['case']}: the mean-score rule does not reproduce the pipeline's choice")
        rows.append({"prediction": name, **dict(zip(BLEND, blend, strict=True)), **held_out.loc[blend].to_dict()})
    rows += [{"prediction": name, **scores} for name, scores in case["mean_shifts"].items()]
    return pd.DataFrame(rows).assign(case=case["case"])


def case_group(case: str) -> str:
    parts = case.split(":")
    if parts[0] != "synthetic":
        return case
    return f"synthetic S={parts[1]}" + (f", {parts[3]} cells" if len(parts) > 3 else "")


def report(out_dir: Path) -> pd.DataFrame:
    """Means over the cases of each kind, one row per rule, and per metric how many cases the rule's choice beats
    the stronger of the three mean shifts (with hindsight, as the benchmark counts; a tie is no win)."""
    cases = [json.loads(p.read_text()) for p in sorted(out_dir.glob("case_*.json"))]
    if not cases:
        return pd.DataFrame()
    frame = pd.concat([choices(c) for c in cases], ignore_index=True)
    frame["cases"] = frame["case"].map(case_group)
    scores = [s for s in SCORES if s in frame]
    table = frame.groupby(["cases", "prediction"], sort=False)[scores].mean().round(3)
    table.insert(0, "n", frame.groupby(["cases", "prediction"], sort=False)["case"].nunique())
    is_shift = frame["prediction"].str.startswith("control +")
    shifts = frame[is_shift].groupby("case")
    strongest = {"pearson_delta_deg": shifts["pearson_delta_deg"].max(), "edist_scaled": shifts["edist_scaled"].min()}
    rules = frame[~is_shift]
    for metric, sign in (("pearson_delta_deg", 1), ("edist_scaled", -1)):
        wins = sign * (rules[metric] - rules["case"].map(strongest[metric])) > TIE
        counts = wins.groupby([rules["cases"], rules["prediction"]], sort=False).sum()
        table[f"{metric} wins"] = counts.reindex(table.index).map(lambda v: "" if pd.isna(v) else int(v))
    return table


def main(argv: list[str] | None = None) -> None:
    args = case_parser(__doc__, OUT_DIR).parse_args(argv)

    def run(case: str) -> dict:
        return run_case(case, args.quick, args.data_dir, args.accelerator)

    run_cases(args, "synthetic:1:0:8", run, lambda out_dir: report(out_dir).to_markdown() + "\n", "selection_rules.md")


if __name__ == "__main__":
    main()
