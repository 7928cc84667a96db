"""Which genes are a split's DEGs when Wilcoxon scores tie at the cut-off, and does it change who wins? (issue 22)

The DEG metrics (Δ-Pearson (DEG), R² on DEGs) score the 50 most up- and 50 most down-regulated genes of the real
target against the real control cells, ranked by the Wilcoxon z-score of :func:`scanpy.tl.rank_genes_groups`, as
the project's scorer (``score.py``) ranks them. With few cells many genes share a rank sum and so a z-score. Where
such a block of tied genes straddles the 50th place, which of them are DEGs is left to the order in which an
unstable sort leaves equal scores, and that order can differ between numpy builds and CPUs.

This counts, per split, the genes tied at each cut-off and scores the recommended pipeline and the three mean
shifts again with the DEG sets of many random tie orders (the same scores, ties broken by a random permutation of
the genes): how far each Δ-Pearson (DEG) moves, and whether the pipeline's win against the stronger mean shift
holds in every order. The mean shifts are computed here as the benchmark computes them. The pipeline's prediction
is the one a benchmark run kept (``out_of_sample.py --keep-predictions``) of ``--method`` in ``--cache-dir``; it is
needed only where tied genes straddle a cut-off (elsewhere every order gives the same DEGs, and the pipeline's
score is the committed one of ``benchmarks/results/out_of_sample.json``).

    python benchmarks/deg_ties.py                  # every split -> results/deg_ties/
    python benchmarks/deg_ties.py --report         # the table of the cached splits
    python benchmarks/deg_ties.py --quick --out-dir /tmp/ties  # one tiny synthetic split, 2 epochs (tested)
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import ConstantInputWarning

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import blend_ceiling  # noqa: E402
from oos import paths  # noqa: E402
from oos.cache import prediction_path, slug  # noqa: E402
from oos.registry import METHODS  # noqa: E402
from oos.splits import Split, split_parser  # noqa: E402
from oos.tables import MEAN_SHIFTS  # noqa: E402

from scvi_trvae import metrics  # noqa: E402
from scvi_trvae.utils import as_dense  # noqa: E402

OUT_DIR = BENCH / "results" / "deg_ties"
#: Up- and down-regulated DEGs, as the benchmark and ``score.py`` take them.
N_UP = N_DOWN = 50
N_ORDERS = 200
PIPELINE = "pipeline"
#: The benchmark's row of the recommended pipeline.
METHOD = "trVAE ensemble + shrink"


def wilcoxon_scores(real_target: np.ndarray, real_control: np.ndarray) -> np.ndarray:
    """Each gene's Wilcoxon z-score of target against control cells, in the genes' order (scanpy's ranking)."""
    import anndata as ad
    import scanpy as sc

    cells = ad.AnnData(np.vstack([real_control, real_target]).astype(np.float32))
    cells.var_names = [str(i) for i in range(cells.n_vars)]
    cells.obs["group"] = pd.Categorical(["control"] * len(real_control) + ["target"] * len(real_target))
    sc.tl.rank_genes_groups(cells, "group", groups=["target"], reference="control", method="wilcoxon",
                            n_genes=cells.n_vars)  # fmt: skip
    ranked = cells.uns["rank_genes_groups"]
    genes = np.asarray([row[0] for row in ranked["names"]]).astype(int)
    scores = np.empty(cells.n_vars, dtype=np.float64)
    scores[genes] = [row[0] for row in ranked["scores"]]
    return scores


def ties_at_cutoffs(scores: np.ndarray, n_up: int = N_UP, n_down: int = N_DOWN) -> dict[str, dict[str, int]]:
    """At each cut-off: how many genes share the score of the last gene in, and how many of those get in."""
    descending = np.sort(scores)[::-1]
    up, down = descending[n_up - 1], descending[len(scores) - n_down]
    return {
        "up": {"tied": int((scores == up).sum()), "in": n_up - int((scores > up).sum())},
        "down": {"tied": int((scores == down).sum()), "in": n_down - int((scores < down).sum())},
    }


def degs_in_random_tie_orders(
    scores: np.ndarray, n_orders: int, seed: int = 0, n_up: int = N_UP, n_down: int = N_DOWN
) -> list[np.ndarray]:
    """DEG sets (up-regulated first) of the same scores with ties broken by ``n_orders`` random gene orders."""
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(n_orders):
        shuffled = rng.permutation(len(scores))
        order = shuffled[np.argsort(-scores[shuffled], kind="stable")]
        sets.append(np.concatenate([order[:n_up], order[::-1][:n_down]]))
    return sets


def mean_shifts(split: Split) -> dict[str, np.ndarray]:
    """The benchmark's three mean shifts' predictions of ``split``, by method name (deterministic: no fit)."""
    return {name: METHODS[name].fit_predict(split, 0, None, **METHODS[name].options) for name in MEAN_SHIFTS}


def is_open(ties: dict[str, dict[str, int]]) -> bool:
    """Whether tied genes straddle a cut-off (some of them in, some out), so that the DEG set depends on the order."""
    return any(cut["tied"] > cut["in"] for cut in ties.values())


def split_case(
    split: Split, pipeline: np.ndarray | None, committed: float | None = None, n_orders: int = N_ORDERS
) -> dict[str, Any]:
    """Ties at the cut-offs and Δ-Pearson (DEG) with the benchmark's DEGs and in each tie order.

    Where the ties are closed every order gives the benchmark's DEGs and one score stands for all of them. Without
    the pipeline's prediction its score is ``committed`` (the benchmark's): known where the ties are closed, unknown
    (None) in the orders where they are open.
    """
    target, control = as_dense(split.real_target.X), as_dense(split.control.X)
    scores = wilcoxon_scores(target, control)
    ties = ties_at_cutoffs(scores)
    # closed ties: every order gives the benchmark's DEG set, so one "order" stands for all
    orders = degs_in_random_tie_orders(scores, n_orders) if is_open(ties) else [split.degs]
    case: dict[str, Any] = {
        "dataset": split.dataset, "cell_type": split.cell_type, "target": split.target,
        "n_target": len(target), "n_control": len(control), "ties": ties, "benchmark": {}, "orders": {},
    }  # fmt: skip
    predicted = mean_shifts(split) if pipeline is None else {PIPELINE: pipeline, **mean_shifts(split)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        for name, pred in predicted.items():
            case["benchmark"][name] = metrics.pearson_delta(pred, target, control, genes=split.degs)
            case["orders"][name] = [
                round(metrics.pearson_delta(pred, target, control, genes=degs), 6) for degs in orders
            ]
    if pipeline is None:
        case["benchmark"][PIPELINE] = committed
        case["orders"][PIPELINE] = None if is_open(ties) or committed is None else [round(committed, 6)]
    return case


def committed_scores(method: str = METHOD) -> dict[tuple[str, str, str], float]:
    """The benchmark's committed Δ-Pearson (DEG) of ``method`` (seed 0) per (data set, cell type, target)."""
    rows = json.loads((paths.RESULTS_DIR / "out_of_sample.json").read_text())["rows"]
    return {
        (r["dataset"], r["cell_type"], r["target"]): r["pearson_delta_deg"]
        for r in rows
        if r["method"] == method and r["seed"] == 0 and r.get("pearson_delta_deg") is not None
    }


def kept_prediction(cache_dir: Path, split: Split, method: str = METHOD) -> np.ndarray | None:
    """The seed-0 prediction of ``method`` that a benchmark run kept for ``split``, or None."""
    npy = prediction_path(cache_dir, split, method)
    return np.load(npy).astype(np.float64) if npy.exists() else None


def wins(case: dict[str, Any]) -> tuple[bool, np.ndarray | None]:
    """Does the pipeline beat the stronger mean shift with the benchmark's DEGs, and in each tie order (if known)?"""
    stronger = max(case["benchmark"][name] for name in MEAN_SHIFTS)
    won = case["benchmark"][PIPELINE] is not None and case["benchmark"][PIPELINE] > stronger
    if case["orders"][PIPELINE] is None:
        return won, None
    in_orders = np.max([case["orders"][name] for name in MEAN_SHIFTS], axis=0)
    return won, np.asarray(case["orders"][PIPELINE]) > in_orders


def _row(case: dict[str, Any], won: bool, won_in_orders: np.ndarray | None) -> str:
    """One open split of the report's table."""
    up, down = case["ties"]["up"], case["ties"]["down"]
    strongest = np.max([case["orders"][name] for name in MEAN_SHIFTS], axis=0)
    values = case["orders"][PIPELINE]
    pipeline = (
        "not kept" if values is None else f"{case['benchmark'][PIPELINE]:.3f}, {min(values):.3f}–{max(values):.3f}"
    )
    stronger = max(case["benchmark"][name] for name in MEAN_SHIFTS)
    share = "" if won_in_orders is None else f", {won_in_orders.mean():.0%}"
    return (
        f"| {case['dataset']} {case['cell_type']} → {case['target']} | {case['n_target']} / {case['n_control']} | "
        f"{up['tied']} ({up['in']}) / {down['tied']} ({down['in']}) | {pipeline} | "
        f"{stronger:.3f}, {strongest.min():.3f}–{strongest.max():.3f} | {'yes' if won else 'no'}{share} |"
    )


def report(out_dir: Path) -> str:
    """Over the non-tuning splits: ties at the cut-offs, how far Δ-Pearson (DEG) moves, and the win count's range."""
    cases = [json.loads(path.read_text()) for path in sorted(out_dir.glob("*.json"))]
    cases = [case for case in cases if (case["dataset"], case["cell_type"]) != blend_ceiling.TUNING_SPLIT]
    if not cases:
        return "no cached splits"
    header = ("| split | target / control cells | tied at the up / down cut (in) | pipeline: benchmark, range | "
              "stronger mean shift: benchmark, range | pipeline wins: benchmark, share of orders |")  # fmt: skip
    lines = [header, "|---|---|---|---|---|---|"]
    per_order, n_won, won_known, open_cases, unknown = [], 0, 0, 0, 0
    for case in cases:
        won, won_in_orders = wins(case)
        n_won += won
        if won_in_orders is None:
            unknown += 1
        else:
            per_order.append(won_in_orders)
            won_known += won
        if is_open(case["ties"]):
            open_cases += 1
            lines.append(_row(case, won, won_in_orders))
    text = (
        f"{len(cases)} non-tuning splits; on {open_cases} a block of tied Wilcoxon scores straddles a cut-off "
        f"(listed; in brackets how many of the tied genes the cut lets in). Against the stronger mean shift (best of "
        f"three per split, in each order) the pipeline wins Δ-Pearson (DEG) on {n_won} with the benchmark's DEGs"
    )
    if per_order:
        n_orders = max(len(won) for won in per_order)  # a split with closed ties has one order for all
        counts = np.sum([np.broadcast_to(won, n_orders) for won in per_order], axis=0)
        text += (
            f"; on the {len(per_order)} splits whose every order is scored ({won_known} won with the benchmark's "
            f"DEGs) it wins {counts.min()} to {counts.max()} (median {np.median(counts):g}) in {len(counts)} random "
            "tie orders applied to every split"
        )
    if unknown:
        text += f"; {unknown} open splits have no kept prediction of the pipeline and are left out of the orders"
    return text + ".\n\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = split_parser(__doc__, OUT_DIR)
    parser.add_argument("--cache-dir", type=Path, default=paths.CACHE_DIR / "full", help="where kept predictions are")
    parser.add_argument("--method", default=METHOD, help="the benchmark row whose kept prediction is the pipeline's")
    parser.add_argument("--orders", type=int, default=N_ORDERS, help="random tie orders per split")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        split, predicted, _ = blend_ceiling.quick_split()
        cases = [(split, predicted, None)]
    else:
        committed = committed_scores(args.method)
        cases = (
            (split, predicted, committed.get((split.dataset, split.cell_type, split.target)))
            for split in ([] if args.report else blend_ceiling.splits(args.datasets, args.data_dir))
            if _to_score(args.out_dir, split, predicted := kept_prediction(args.cache_dir, split, args.method))
        )
    for split, predicted, committed_score in cases:
        case = split_case(split, predicted, committed_score, args.orders)
        _case_path(args.out_dir, split).write_text(json.dumps(case) + "\n")
        print(f"{split.dataset} {split.cell_type} {split.target}: ties {case['ties']}", flush=True)
    text = report(args.out_dir)
    (args.out_dir / "deg_ties.md").write_text(text + "\n")
    print(text)


def _case_path(out_dir: Path, split: Split) -> Path:
    return out_dir / f"{split.dataset}__{slug(split.cell_type)}__{slug(split.target)}.json"


def _to_score(out_dir: Path, split: Split, predicted: np.ndarray | None) -> bool:
    """Score a split not scored yet, or scored without the pipeline's orders when its prediction is kept now."""
    path = _case_path(out_dir, split)
    return not path.exists() or (predicted is not None and json.loads(path.read_text())["orders"][PIPELINE] is None)


if __name__ == "__main__":
    main()
