"""The report's second scorer: ``cell-eval``'s metrics of the kept predictions, beside the benchmark's own.

``benchmarks/peers/celleval_score.py`` writes them to ``benchmarks/results/peers_celleval.json`` (per split, per
method, cell-eval's aggregated table over its one perturbation); this module turns them into the tables of
``docs/benchmarks.md`` and says where cell-eval ranks the methods differently from :mod:`scvi_trvae.metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import slug
from .paths import RESULTS_DIR

CELLEVAL_RESULTS = RESULTS_DIR / "peers_celleval.json"
#: cell-eval's informative metrics here (with one perturbation per split its discrimination score is constant).
CELLEVAL_METRICS = ("pearson_delta", "overlap_at_N", "de_direction_match", "de_spearman_lfc_sig", "de_sig_genes_recall")
NOISE_CEILING = "noise ceiling"
#: The benchmark's metrics set beside cell-eval's (higher is better for both).
OWN_METRIC = "pearson_delta_deg"
#: Ours in the paired counts, the first scored: the pipeline's prediction is kept on every split by its own-process
#: run; the in-process row's only where that run kept it.
OURS = ("trVAE ensemble + shrink (own process)", "trVAE ensemble + shrink")
#: The paired counts' metrics: (column, title).
PAIRED_METRICS = (
    ("pearson_delta", "cell-eval `pearson_delta`"),
    (OWN_METRIC, "benchmark Δ-Pearson (DEG)"),
    ("de_sig_genes_recall", "cell-eval DE recall"),
)

INTRO = (
    "Every kept prediction (seed 0; `--keep-predictions`) scored by `cell-eval` 0.8.2 "
    "(`benchmarks/peers/celleval_score.py`, its own environment), on {n} splits{without}: {splits}. "
    "Medians over those splits (*splits*: how many of them each method was scored on: a prediction is scored "
    "where it was kept and cell-eval accepted it); DE metrics are undefined on a split where cell-eval finds no "
    "significant gene between the real cells, so their medians are over fewer splits (*DE splits*). "
    "*noise ceiling*: cell-eval's "
    "best score the data allow (the real cells split in halves). Δ-Pearson (DEG) is the benchmark's own metric on "
    "the same splits."
)


def load_celleval(path: Path | None = None) -> pd.DataFrame:
    """One row per (split, method, metric) with cell-eval's mean over its one perturbation; empty without a file.

    ``path``: default :data:`CELLEVAL_RESULTS`.
    """
    path = CELLEVAL_RESULTS if path is None else path
    if not path.exists():
        return pd.DataFrame(columns=["dataset", "cell_type", "target", "method", "metric", "value"])
    rows = []
    for split, entry in json.loads(path.read_text()).items():
        dataset, cell_type, target = split.split("/")
        for method, table in entry["scores"].items():
            # an evaluation's table has one row per statistic; the noise ceiling's has its one value
            mean_at = table["statistic"].index("mean") if "statistic" in table else 0
            for metric in CELLEVAL_METRICS:
                if metric in table:
                    value = table[metric][mean_at]
                    rows.append((dataset, cell_type, target, method, metric, np.nan if value is None else value))
    return pd.DataFrame(rows, columns=["dataset", "cell_type", "target", "method", "metric", "value"])


def _by_slug(methods: list[str]) -> dict[str, str]:
    return {slug(method): method for method in methods}


def _ranking(values: pd.Series) -> str:
    """Names best first, ``>`` between them, ``=`` between equal values (to three decimals); "—" for none."""
    ordered = values.round(3).sort_values(ascending=False, kind="stable")
    if ordered.empty:
        return "—"
    text = str(ordered.index[0])
    for previous, (name, value) in zip(ordered.to_numpy(), ordered.iloc[1:].items(), strict=False):
        text += f" {'=' if value == previous else '>'} {name}"
    return text


def _fmt(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.3f}"


def celleval_section(
    frame: pd.DataFrame, methods: list[str], scores: pd.DataFrame, tuning: tuple[str, str, str]
) -> str:
    """The cell-eval table (methods of ``methods`` scored by cell-eval) and where the two scorers' rankings differ.

    ``frame``: the benchmark's results (seed-averaged per split below); only the splits it holds are shown, and the
    tuning split is left out when others were scored. Empty when nothing was scored.
    """
    names = {**_by_slug(methods), NOISE_CEILING: NOISE_CEILING}
    scores = scores[scores["method"].isin(names)].assign(method=lambda s: s["method"].map(names))
    split_cols = ["dataset", "cell_type", "target"]
    in_run = frame[split_cols].drop_duplicates()  # splits of this run only (a run of some data sets shows theirs)
    scores = scores.merge(in_run, on=split_cols)
    is_tuning = (scores[split_cols] == list(tuning)).all(axis=1)
    without = ""
    if is_tuning.any() and (~is_tuning).any():
        scores, without = scores[~is_tuning], " without the tuning split"
    if scores.empty:
        return ""
    wide = scores.set_index([*split_cols, "method", "metric"])["value"].unstack("metric")
    own = frame[frame["method"].isin(methods)].groupby([*split_cols, "method"])[OWN_METRIC].mean()
    wide = wide.join(own.rename(OWN_METRIC), how="left")
    medians = wide.groupby("method").median()
    de_splits = wide.groupby("method")["de_spearman_lfc_sig"].count() if "de_spearman_lfc_sig" in wide else None
    order = [m for m in [*methods, NOISE_CEILING] if m in medians.index]
    n_scored = wide.groupby("method")["pearson_delta"].count() if "pearson_delta" in wide else None
    header = ["method", "splits", *CELLEVAL_METRICS, "DE splits", "Δ-Pearson (DEG), benchmark"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in order:
        row = medians.loc[method]
        n_de = "—" if de_splits is None else str(int(de_splits.get(method, 0)))
        n = "—" if n_scored is None else str(int(n_scored.get(method, 0)))
        cells = [n, *(_fmt(row.get(m, np.nan)) for m in CELLEVAL_METRICS), n_de, _fmt(row.get(OWN_METRIC, np.nan))]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    intro = INTRO.format(**_split_names(wide.index.droplevel("method")), without=without)
    methods_only = medians.loc[[m for m in order if m != NOISE_CEILING]]
    by_celleval, by_own = _ranking(methods_only["pearson_delta"]), _ranking(methods_only[OWN_METRIC].dropna())
    verdict = (
        "Ranked by median, cell-eval's `pearson_delta` and the benchmark's Δ-Pearson (DEG) "
        + ("agree" if by_celleval == by_own else "differ")
        + f": cell-eval {by_celleval}; the benchmark {by_own}."
    )
    if "de_sig_genes_recall" in methods_only:
        recall = _ranking(methods_only["de_sig_genes_recall"].dropna())
        verdict += f" By recall of the real significant genes: {recall}."
    paired = paired_wins(wide, [m for m in order if m != NOISE_CEILING])
    return intro + "\n\n" + "\n".join(lines) + "\n\n" + verdict + "\n" + (f"\n{paired}" if paired else "")


def _split_names(index: pd.MultiIndex, max_listed: int = 15) -> dict[str, str | int]:
    """How many (data set, cell type, target) splits ``index`` holds, and their names (a count per data set when
    there are more than ``max_listed``)."""
    splits = sorted(set(index))
    if len(splits) <= max_listed:
        names = ", ".join(
            f"{d} {c}" + (f" {t}" if sum(s[:2] == (d, c) for s in splits) > 1 else "") for d, c, t in splits
        )
    else:
        counts = pd.Series([d for d, _, _ in splits]).value_counts(sort=False)
        names = "per data set " + ", ".join(f"{dataset} {n}" for dataset, n in counts.sort_index().items())
    return {"n": len(splits), "splits": names}


def paired_wins(wide: pd.DataFrame, methods: list[str]) -> str:
    """Per other method, the splits where ours scores higher than it, by each scorer, on the splits both were scored.

    ``wide``: one row per (split, method), a column per metric. Also counts the splits where cell-eval's
    ``pearson_delta`` and the benchmark's Δ-Pearson (DEG) name a different winner of the pair. Empty without ours.
    """
    by_method = {m: wide.xs(m, level="method") for m in methods}
    ours = next((m for m in OURS if m in by_method), None)
    if ours is None:
        return ""
    others = [m for m in methods if m not in OURS]
    header = ["ours vs", "splits", *(title for _, title in PAIRED_METRICS), "scorers disagree"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for other in others:
        both = by_method[ours].join(by_method[other], how="inner", lsuffix="_ours", rsuffix="_other")
        both = both[both["pearson_delta_ours"].notna() & both["pearson_delta_other"].notna()]
        if both.empty:
            continue
        cells, winners = [str(len(both))], {}
        for metric, _ in PAIRED_METRICS:
            pair = both[[f"{metric}_ours", f"{metric}_other"]].dropna()
            winners[metric] = pair[f"{metric}_ours"] > pair[f"{metric}_other"]
            cells.append(f"{int(winners[metric].sum())}/{len(pair)}")
        agree = pd.concat([winners["pearson_delta"], winners[OWN_METRIC]], axis=1, join="inner")
        cells.append(str(int((agree.iloc[:, 0] != agree.iloc[:, 1]).sum())))
        lines.append(f"| {other} | " + " | ".join(cells) + " |")
    intro = (
        f"Paired: the splits where {ours} scores higher than each method, by cell-eval and by the benchmark, on the "
        "splits where both predictions were scored (DE recall: where cell-eval found significant genes). "
        "*scorers disagree*: splits where the two Δ-Pearson metrics name a different winner of the pair."
    )
    return intro + "\n\n" + "\n".join(lines) + "\n"
