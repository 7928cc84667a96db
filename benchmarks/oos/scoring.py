"""How the tables summarise results: medians over splits of seed-averaged metrics, spreads over seeds."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .methods import METHODS

#: The columns that name a split.
SPLIT_KEYS = ["dataset", "cell_type", "target"]


def mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd`` of the finite values (the value alone if there is one, ``—`` if none)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _nanmedian(values: pd.Series) -> float:
    with warnings.catch_warnings():  # a metric undefined on every split (Δ-Pearson of "no response") stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmedian(values.astype(float)))


def split_means(frame: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of one method per split, averaged over the seeds that split has."""
    return frame.groupby(SPLIT_KEYS)[metric].agg(
        lambda v: float(np.nanmean(v.astype(float))) if v.notna().any() else np.nan
    )


def median_over_splits(frame: pd.DataFrame, metric: str, digits: int = 3) -> str:
    """Median over splits of the seed-averaged ``metric``; ``± sd`` over seeds where several seeds ran.

    The spread is the standard deviation, over seeds, of the medians over the splits that every seed covers.
    """
    median = _nanmedian(split_means(frame, metric))
    if not math.isfinite(median):
        return "—"
    seeds = sorted(frame["seed"].unique())
    if len(seeds) < 2:
        return f"{median:.{digits}f}"
    per_split = frame.groupby(SPLIT_KEYS)["seed"].nunique()
    common = per_split[per_split == len(seeds)].index
    complete = frame.set_index(SPLIT_KEYS).loc[common].reset_index()
    spreads = [_nanmedian(group[metric]) for _, group in complete.groupby("seed")]
    if len(spreads) < 2:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ± {np.std(spreads, ddof=1):.{digits}f}"


def failures_note(frame: pd.DataFrame, method: str) -> str:
    """`` (k runs failed)`` when some runs of a method failed (they are left out of the medians), else ``""``."""
    n_failed = int(((frame["method"] == method) & (frame["status"] == "failed")).sum())
    return f" ({n_failed} runs failed)" if n_failed else ""


def seeds_cell(frame: pd.DataFrame, method: str) -> tuple[str, str]:
    """(seeds column, status note) of a method in a table; the note is ``""`` when the method has results."""
    mine = frame[frame["method"] == method]
    if mine.empty:
        return "—", "not in this run"
    ok = mine[mine["status"] == "ok"]
    if ok.empty:
        reasons = sorted({f"{status}: {reason}" for status, reason in zip(mine["status"], mine["reason"], strict=True)})
        return "—", "; ".join(reasons)
    seeds = sorted(ok["seed"].unique())
    label = METHODS[method].seeds_label(seeds)
    per_split = ok.groupby(SPLIT_KEYS)["seed"].nunique()
    if len(seeds) > 1 and (per_split < len(seeds)).any():
        label += f" on {int((per_split == len(seeds)).sum())} of {len(per_split)} splits, fewer on the rest"
    return label, ""
