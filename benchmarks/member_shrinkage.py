"""Per-gene shrinkage from the members' disagreement: would it help the recommended pipeline? (issue 22, §3)

The pipeline predicts ``x + w * m + (1 - w) * p + lambda * d_i`` with one shift weight ``w`` for every gene. Genes
whose predicted mean response the ensemble's members disagree on might do better leaning toward the reference shift
``p``. This tries a per-gene weight ``w_g = w / (1 + alpha * v_g / median(v))``, ``v_g`` the variance over the
3 members of their mean response for gene ``g`` (``alpha = 0`` is today's blend), on the tuning data only
(the demo's synthetic data, ``state_dependence=1``, and Kang NK; :func:`blend_grid.case_data`).

The question is asked *with hindsight*: every ``(w, alpha)`` of the grid is scored on the held-out cells, and the
best ``alpha = 0`` row is compared with the best ``alpha > 0`` row. If per-gene shrinkage cannot beat the plain
blend even when both are chosen on the answer, no choice on inner folds can make it. One ensemble of 3 default
members per case (``lambda = 1``, the value the pipeline chooses on most splits), both reference shifts.

    python benchmarks/member_shrinkage.py --case synthetic:1:0 synthetic:1:1 synthetic:1:2 kang:NK
    python benchmarks/member_shrinkage.py --report
    python benchmarks/member_shrinkage.py --quick --out-dir /tmp/shrinkage     # tiny, 2 epochs (the suite runs it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import blend_grid  # noqa: E402
import synthetic_state  # noqa: E402

from scvi_trvae import baselines, model_selection  # noqa: E402
from scvi_trvae._blend import blend_prediction  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "member_shrinkage"
SHIFT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
ALPHAS = (0.0, 1.0, 4.0, 16.0)
KINDS = ("pooled", "similarity")
#: (score, higher is better) of the comparison.
SCORES = {"mean_rmse": False, "pearson_delta_deg": True, "edist_scaled": False, "paired_rmse": False}


def gene_weights(shift_weight: float, alpha: float, disagreement: np.ndarray) -> np.ndarray:
    """``w / (1 + alpha * v / median(v))`` per gene (``w`` everywhere when ``alpha`` is 0 or ``v`` all 0)."""
    scale = float(np.median(disagreement))
    if alpha == 0.0 or scale <= 0.0:
        return np.full(disagreement.shape, shift_weight)
    return shift_weight / (1.0 + alpha * disagreement / scale)


def run_case(case: str, quick: bool, data_dir: Path, accelerator: str) -> tuple[list[dict], dict[str, float]]:
    """Train the 3 default members once; score every ``(kind, w, alpha)`` on the held-out cells.

    Also returns, per kind of shift, the Spearman correlation over genes of the members' disagreement with how much
    worse the model's mean response is than the shift (squared error against the real mean response).
    """
    data = blend_grid.case_data(case, quick, data_dir)
    keys = synthetic_state.KEYS
    config = model_selection.candidate_configs(1, None, 0)[0]
    length = {"max_epochs": 2} if quick else {}
    ensemble = model_selection.train_ensemble(
        data.train, condition_key=keys["condition_key"], config=config, seeds=[0, 1, 2],
        labels_key=keys["cell_type_key"], accelerator=accelerator, **length,
    )  # fmt: skip
    members = ensemble.predict_perturbation(data.control, source=keys["source"], target=keys["target"])
    observed, predicted = as_dense(data.control.X), as_dense(members.X)
    disagreement = np.asarray(members.var["trvae_shift_sd"], dtype=np.float64) ** 2
    real_mean = data.truth[0].mean(0) if data.truth is not None else as_dense(data.real.X).mean(0) - observed.mean(0)
    rows, model_mean, diagnostics = [], predicted.mean(0) - observed.mean(0), {}
    for kind in KINDS:
        shift = baselines.reference_shift(
            data.train, kind, cell_type=data.cell_type, centre=observed.mean(0),
            **{k: keys[k] for k in ("cell_type_key", "condition_key", "source", "target")},
        )  # fmt: skip
        # does the members' disagreement mark the genes where the model's mean response is worse than the shift's?
        excess = (model_mean - real_mean) ** 2 - (shift - real_mean) ** 2
        diagnostics[kind] = float(spearmanr(disagreement, excess)[0])
        for w in SHIFT_WEIGHTS:
            for alpha in ALPHAS:
                weights = gene_weights(w, alpha, disagreement)
                pred = blend_prediction(observed, predicted, shift, weights, 1.0)
                mean_rmse = float(np.sqrt(((pred.mean(0) - observed.mean(0) - real_mean) ** 2).mean()))
                rows.append(
                    {"kind": kind, "shift_weight": w, "alpha": alpha, "mean_rmse": mean_rmse,
                     **blend_grid.score(pred, data)}
                )  # fmt: skip
    return rows, diagnostics


def best_rows(rows: list[dict]) -> pd.DataFrame:
    """Per score, the best plain blend (``alpha = 0``) and the best per-gene one (``alpha > 0``), with hindsight."""
    frame = pd.DataFrame(rows)
    out = []
    for score, higher in SCORES.items():
        if score not in frame:
            continue
        for label, part in (
            ("plain (alpha 0)", frame[frame["alpha"] == 0]),
            ("per gene (alpha > 0)", frame[(frame["alpha"] > 0) & (frame["shift_weight"] > 0)]),
        ):
            best = part.loc[part[score].idxmax() if higher else part[score].idxmin()]
            out.append({"score": score, "blend": label, "value": best[score], "kind": best["kind"],
                        "shift_weight": best["shift_weight"], "alpha": best["alpha"]})  # fmt: skip
    return pd.DataFrame(out)


def report(out_dir: Path) -> str:
    """Markdown: per case and score, the best plain and per-gene blends (with hindsight)."""
    parts = []
    for path in sorted(out_dir.glob("case_*.json")):
        result = json.loads(path.read_text())
        table = best_rows(result["rows"])
        spearman = ", ".join(f"{k} {v:.2f}" for k, v in result["disagreement_vs_excess_error"].items())
        parts.append(
            f"### {result['case']}\n\nSpearman r of the members' disagreement with the model's excess error over the "
            f"shift, per gene: {spearman}\n\n" + table.to_markdown(index=False, floatfmt=".4f") + "\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    args = blend_grid.case_parser(__doc__, OUT_DIR).parse_args(argv)

    def run(case: str) -> dict:
        rows, diagnostics = run_case(case, args.quick, args.data_dir, args.accelerator)
        return {"disagreement_vs_excess_error": diagnostics, "rows": rows}

    blend_grid.run_cases(args, "synthetic:1:0", run, report, "member_shrinkage.md")


if __name__ == "__main__":
    main()
