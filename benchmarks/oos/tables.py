"""The tables of the benchmark report, each a markdown string (:func:`scvi_trvae.metrics.markdown_table`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from scvi_trvae.metrics import METRIC_KEYS, markdown_table

from .methods import METHODS
from .scoring import failures_note, mean_sd, median_over_splits, seeds_cell, split_means

METRIC_LABELS = {
    "r2_mean_all": "r² mean (all)",
    "r2_mean_deg": "r² mean (DEG)",
    "r2_var_all": "r² var (all)",
    "r2_var_deg": "r² var (DEG)",
    "pearson_delta_all": "Δ-Pearson (all)",
    "pearson_delta_deg": "Δ-Pearson (DEG)",
    "edist_scaled": "E-dist scaled ↓",
}


def methods_table(methods: Sequence[str], epochs: dict[str, int | str | None], n_seeds: int) -> str:
    """What each method is, its epochs and its seeds."""
    rows = []
    for name in methods:
        spec = METHODS[name]
        run_epochs = epochs.get(name)
        seeds = spec.seeds_label(spec.seeds_for(n_seeds))
        rows.append([name, spec.description, "—" if run_epochs is None else str(run_epochs), seeds])
    return markdown_table(["method", "what", "epochs", "seeds"], rows)


def dataset_table(frame: pd.DataFrame, methods: Sequence[str]) -> str:
    """Every metric of each method on one data set (medians over its splits)."""
    header = ["method", "seeds", "splits", *[METRIC_LABELS[m] for m in METRIC_KEYS], "fit s (mean)"]
    rows = []
    for method in methods:
        seeds, note = seeds_cell(frame, method)
        if note:
            rows.append([method, seeds, "—", f"*{note}*", *[None] * len(METRIC_KEYS)])
            continue
        ok = frame[(frame["method"] == method) & (frame["status"] == "ok")]
        n_splits = f"{ok.groupby(['cell_type', 'target']).ngroups}{failures_note(frame, method)}"
        cells = [median_over_splits(ok, m) for m in METRIC_KEYS]
        rows.append([method, seeds, n_splits, *cells, f"{ok['fit_seconds'].astype(float).mean():.1f}"])
    return markdown_table(header, rows)


def overall_table(frame: pd.DataFrame, methods: Sequence[str]) -> str:
    """Two metrics of each method over all data sets, and its summed compute time."""
    header = [
        "method",
        "seeds",
        "datasets",
        "splits",
        "median Δ-Pearson (DEG)",
        "median E-dist scaled ↓",
        "compute (s)",
    ]
    rows = []
    for method in methods:
        seeds, note = seeds_cell(frame, method)
        if note:
            rows.append([method, seeds, "—", "—", f"*{note}*", None, None])
            continue
        ok = frame[(frame["method"] == method) & (frame["status"] == "ok")]
        n_splits = f"{ok.groupby(['dataset', 'cell_type', 'target']).ngroups}{failures_note(frame, method)}"
        seconds = (ok["fit_seconds"].astype(float) + ok["eval_seconds"].astype(float)).sum()
        rows.append([
            method, seeds, str(ok["dataset"].nunique()), n_splits, median_over_splits(ok, "pearson_delta_deg"),
            median_over_splits(ok, "edist_scaled"), f"{seconds:.0f}",
        ])  # fmt: skip
    return markdown_table(header, rows)


def paired_table(frame: pd.DataFrame, methods: Sequence[str], reference: str = "trVAE") -> str:
    """``reference`` against each other method on the splits both have (seed-averaged per split).

    ``""`` when ``reference`` has no results.
    """
    ok = frame[frame["status"] == "ok"]
    mine = ok[ok["method"] == reference]
    if mine.empty:
        return ""
    compared = (("pearson_delta_deg", "Δ-Pearson (DEG)", 1.0), ("edist_scaled", "E-dist scaled ↓", -1.0))
    reference_means = {metric: split_means(mine, metric) for metric, _, _ in compared}
    header = ["method", "common splits"]
    for _, label, _ in compared:
        header += [f"{label}: {reference}", f"{label}: method", f"{label}: {reference} better"]
    rows = []
    for method in methods:
        theirs = ok[ok["method"] == method]
        if method == reference or theirs.empty:
            continue
        cells, n_common = [], 0
        for metric, _, sign in compared:
            pair = pd.concat({"ref": reference_means[metric], "other": split_means(theirs, metric)}, axis=1).dropna()
            if metric == "edist_scaled":  # defined for every method, so its pairs are the common splits
                n_common = len(pair)
            if pair.empty:  # e.g. Δ-Pearson of "no response", undefined on every split
                cells += ["—", "—", "—"]
                continue
            wins = int((sign * (pair["ref"] - pair["other"]) > 0).sum())
            cells += [f"{pair['ref'].median():.3f}", f"{pair['other'].median():.3f}", f"{wins}/{len(pair)}"]
        rows.append([method, str(n_common), *cells])
    return markdown_table(header, rows)


def split_table(frame: pd.DataFrame, methods: Sequence[str], dataset: str, cell_type: str, target: str) -> str:
    """Each method on one split: mean ± sd over its seeds."""
    keys = ["r2_mean_all", "r2_mean_deg", "r2_var_all", "r2_var_deg", "pearson_delta_deg", "edist_scaled"]
    here = frame[(frame["dataset"] == dataset) & (frame["cell_type"] == cell_type) & (frame["target"] == target)]
    rows = []
    for method in methods:
        ok = here[(here["method"] == method) & (here["status"] == "ok")]
        if not ok.empty:
            rows.append([method, str(len(ok)), *[mean_sd(list(ok[k].astype(float))) for k in keys]])
    return markdown_table(["method", "seeds", *[METRIC_LABELS[k] for k in keys]], rows)


_PUBLISHED_ROWS = (
    ("trVAE paper code", "Kang, NK held out, 2,000 HVGs", "0.969", "0.987 (top 100)", "0.703", "0.730",
     "bootstrapped top-1000 DEG r² mean 0.975 (scGen 0.907)"),
    ("trVAE paper", "Haber, Tuft held out, Control -> H.poly.Day10, 1,000 HVGs", "0.968", "—", "0.867", "—",
     "scGen 0.891 / 0.747"),
    ("scArches re-implementation (2024)", "Haber Tuft", "0.91", "—", "0.55", "—", ""),
    ("scArches 0.6.1 TRVAE, paper architecture (800-800-128, z 20), measured here",
     "Kang NK split of `../shared/data`", "0.861", "0.908", "0.467", "—",
     "Δ-Pearson (DEG) 0.895, E-dist scaled 1.12"),
    ("control + mean shift, measured here", "Kang NK split of `../shared/data`, all 6,998 genes", "—", "0.92", "—", "—",
     "Δ-Pearson (DEG) 0.91, E-dist scaled 0.17"),
)  # fmt: skip


def published_table() -> str:
    """Published and earlier measured numbers (``shared/notes/evaluation.md``), for reference."""
    header = ["source", "task", "r² mean (all)", "r² mean (DEG)", "r² var (all)", "r² var (DEG)", "other"]
    preface = (
        "Published numbers, for reference only: their data, gene selection and splits, not ours "
        '(`../shared/notes/evaluation.md`). "r²" is the squared Pearson r of per-gene means / variances.'
    )
    return preface + "\n\n" + markdown_table(header, _PUBLISHED_ROWS)


#: The mean-shift baselines; the recommended pipeline's targets compare with the stronger one (issue 22).
MEAN_SHIFTS = ("control + mean shift", "control + balanced mean shift", "control + similarity mean shift")
#: Issue 22's targets for the recommended pipeline: (comparator, metric) -> wins needed out of the 57 splits.
TARGETS = {
    ("stronger mean shift", "pearson_delta_deg"): 48,
    ("stronger mean shift", "edist_scaled"): 45,
    ("CVAE", "pearson_delta_deg"): 45,
    ("CVAE", "edist_scaled"): 45,
}
#: The number of splits the targets are stated for (58 minus the tuning split).
TARGET_SPLITS = 57
_TARGET_METRICS = (("pearson_delta_deg", "Δ-Pearson (DEG)", 1.0), ("edist_scaled", "E-dist scaled ↓", -1.0))


def _comparator_means(ok: pd.DataFrame, comparator: str, metric: str, sign: float) -> pd.Series:
    """Per split: the comparator's seed-averaged ``metric``; "stronger mean shift": the best of the mean shifts."""
    if comparator != "stronger mean shift":
        return split_means(ok[ok["method"] == comparator], metric)
    shifts = pd.concat({m: split_means(ok[ok["method"] == m], metric) for m in MEAN_SHIFTS}, axis=1)
    if shifts.empty or shifts.isna().any().any():  # the stronger of the three needs all three on every split
        return pd.Series(dtype=float)
    return shifts.max(axis=1) if sign > 0 else shifts.min(axis=1)


def _paired_wins(mine: pd.DataFrame, theirs: pd.Series, metric: str, sign: float) -> tuple[pd.DataFrame, int]:
    """The splits both have (``ref``: ``mine``'s ``metric``; ``other``: ``theirs``), and ``mine``'s wins."""
    pair = pd.concat({"ref": split_means(mine, metric), "other": theirs}, axis=1).dropna()
    return pair, int((sign * (pair["ref"] - pair["other"]) > 0).sum())


def target_table(frame: pd.DataFrame, reference: str = "trVAE ensemble + shrink") -> str:
    """Wins of ``reference`` per split against each mean shift, the stronger of them per split, and CVAE.

    A win is a strictly better seed-averaged value on a split both have; the targets (:data:`TARGETS`) are
    printed beside the counts. ``""`` when ``reference`` has no results.
    """
    ok = frame[frame["status"] == "ok"]
    mine = ok[ok["method"] == reference]
    if mine.empty:
        return ""
    rows = []
    for comparator in (*MEAN_SHIFTS, "stronger mean shift", "CVAE"):
        for metric, label, sign in _TARGET_METRICS:
            pair, wins = _paired_wins(mine, _comparator_means(ok, comparator, metric, sign), metric, sign)
            if pair.empty:
                continue
            needed = TARGETS.get((comparator, metric))
            met = "—" if needed is None else ("met" if wins >= needed and len(pair) == TARGET_SPLITS else "missed")
            rows.append([
                comparator, label, f"{wins}/{len(pair)}", "—" if needed is None else f"≥ {needed}/{TARGET_SPLITS}",
                met, f"{pair['ref'].median():.3f}", f"{pair['other'].median():.3f}",
            ])  # fmt: skip
    header = ["against", "metric", f"{reference} wins", "target (issue 22)", "", "median: it", "median: against"]
    return markdown_table(header, rows) + _one_mean_shift_reading(ok, mine)


def _one_mean_shift_reading(ok: pd.DataFrame, mine: pd.DataFrame) -> str:
    """The targets read against one mean shift for all splits: the one with the best median on each metric.

    A sentence under the target table; the per-split best (the table's *stronger mean shift*) stays the count the
    targets are judged by, since no method could pick it without the held-out cells.
    """
    parts = []
    for metric, label, sign in _TARGET_METRICS:
        medians = {m: split_means(ok[ok["method"] == m], metric).median() for m in MEAN_SHIFTS}
        medians = {m: v for m, v in medians.items() if pd.notna(v)}
        if not medians:
            return ""
        strongest = max(medians, key=lambda m: sign * medians[m])
        pair, wins = _paired_wins(mine, split_means(ok[ok["method"] == strongest], metric), metric, sign)
        needed = TARGETS[("stronger mean shift", metric)]
        parts.append(f"{label}: {strongest}, {wins}/{len(pair)} (target ≥ {needed}/{TARGET_SPLITS})")
    return (
        "\n\nRead as one mean shift for all splits, the stronger of the three (by its median over these splits) and "
        "the wins against it: " + "; ".join(parts) + ". The *stronger mean shift* rows above, the best of the three "
        "on each split, which no method could pick without the held-out cells, are what the targets are judged by."
    )


def stale_table(frame: pd.DataFrame, methods: Sequence[str], notes: dict[str, str] | None = None) -> str:
    """The methods with results made by an earlier version of their code (``stale`` rows), and how many."""
    if "stale" not in frame:
        return ""
    rows = []
    for method in methods:
        here = frame[(frame["method"] == method) & (frame["status"] != "not run")]
        n_stale = int(here["stale"].fillna(False).astype(bool).sum())
        if n_stale:
            versions = ", ".join(
                sorted(here.loc[here["stale"].fillna(False).astype(bool), "code_version"].astype(str).unique())
            )
            rows.append([method, f"{n_stale}/{len(here)}", versions, (notes or {}).get(method, "")])
    if not rows:
        return ""
    return markdown_table(["method", "stale results", "made with code version", "note"], rows)
