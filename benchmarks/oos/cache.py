"""One JSON file per (data set, held-out type, target, method, seed) result, so that an interrupted run resumes.

A cached result carries a key (:func:`result_key`): what decides it (epochs, genes, training cells, code
revisions) and the *code version* of its method (:meth:`oos.registry.MethodSpec.code_version`, a hash of the
source files the result depends on). A result whose key no longer matches is fitted again; one that differs
only in its code version is *stale*: a run fits it again, ``--cached-only`` reports it marked as stale.
:func:`rebuild_cache` writes the cache back from a results file (``benchmarks/results/out_of_sample.json``),
whose rows are the cached results without keys: a row keeps the code version it records, and rows written
before code versions existed get :data:`EARLIER_CODE` (always stale).
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .datasets import DATASETS, load_dataset
from .methods import METHODS
from .splits import Split, make_split

#: Bump when a change invalidates every cached result.
CACHE_VERSION = 1

#: The code version of results made before code versions were recorded (never the current one).
EARLIER_CODE = "earlier"

logger = logging.getLogger("out_of_sample")


def slug(text: str) -> str:
    """``text`` as a file-name part."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(text)).strip("_")


def json_safe(value: Any) -> Any:
    """NaN and infinities become None, NumPy scalars plain Python numbers (recursively)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cache_path(cache_dir: Path, split: Split, method: str, seed: int) -> Path:
    """The JSON file of one result (its seed-0 prediction of a figure split sits next to it as ``.npy``)."""
    name = f"{slug(split.cell_type)}__{slug(split.target)}__{slug(method)}__seed{seed}.json"
    return cache_dir / split.dataset / name


def prediction_path(cache_dir: Path, split: Split, method: str) -> Path:
    """Where a run keeps the seed-0 prediction of one result (figure splits, ``--keep-predictions``)."""
    return cache_path(cache_dir, split, method, 0).with_suffix(".npy")


def result_key(split: Split, method: str, epochs: int | str | None, code_version: str | None = None) -> dict[str, Any]:
    """What decides a result besides its split names and seed; a cached result is reused only if its key matches.

    ``code_version``: the version the result was made with (default: the method's current one).
    """
    revision = METHODS[method].revision
    return {
        "cache_version": CACHE_VERSION,
        **({"method_revision": revision} if revision else {}),
        "code_version": METHODS[method].code_version() if code_version is None else code_version,
        "epochs": epochs,
        "n_genes": int(split.train.n_vars),
        "n_train": int(split.train.n_obs),
        "gene_hash": int(pd.util.hash_pandas_object(pd.Series(split.train.var_names)).sum() % (2**31)),
    }


def read_cached(path: Path, key: dict[str, Any], allow_stale: bool = False) -> dict[str, Any] | None:
    """The cached row at ``path`` if its key is ``key``, else None.

    ``allow_stale``: also a row whose key differs only in its code version, returned with ``stale=True``.
    """
    if path.exists():
        cached = json.loads(path.read_text())
        stored = cached.get("key") or {}
        if stored == key:
            return {**cached, "stale": False}
        if allow_stale and {**stored, "code_version": None} == {**key, "code_version": None}:
            return {**cached, "stale": True}
    return None


def write_cached(path: Path, row: dict[str, Any]) -> None:
    """Store one result row (with its ``key``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(row), indent=1))


def rebuild_cache(results_path: Path, data_dir: Path, cache_dir: Path) -> int:
    """Write the cache back from a results file; returns how many results were written.

    Rows keep the code version they record; rows without one (made before code versions were recorded)
    get :data:`EARLIER_CODE`, so a run fits them again and ``--cached-only`` marks them stale.
    Each split of the file is made again from the data (with the file's gene numbers) to compute the keys;
    a row whose split no longer has its recorded genes or training cells is an error. Rows that did not
    run (``status == "not run"``) are not cached, as in a run. Figures need the seed-0 predictions
    (``.npy``), which a results file does not hold: they are not rebuilt.
    """
    payload = json.loads(results_path.read_text())
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in payload["rows"]:
        if row["status"] != "not run":
            rows.setdefault((row["dataset"], row["cell_type"], row["target"]), []).append(row)
    n_written = 0
    for dataset in dict.fromkeys(dataset for dataset, _, _ in rows):
        spec = DATASETS[dataset]
        adata = load_dataset(spec, data_dir)
        for (name, cell_type, target), split_rows in rows.items():
            if name != dataset:
                continue
            split = make_split(adata, dataset, spec, cell_type, target, payload["n_top_genes"][dataset])
            for row in split_rows:
                if (row["n_genes"], row["n_train"]) != (split.train.n_vars, split.train.n_obs):
                    raise ValueError(f"{dataset} {cell_type} -> {target}: the data no longer give the recorded split")
                code = row.get("code_version") or EARLIER_CODE
                key = result_key(split, row["method"], payload["epochs"].get(row["method"]), code)
                cached = {k: v for k, v in row.items() if k not in ("cached", "stale")}
                cached["code_version"] = code
                write_cached(cache_path(cache_dir, split, row["method"], row["seed"]), {**cached, "key": key})
                n_written += 1
        logger.info("%s: %d results cached so far", dataset, n_written)
    return n_written
