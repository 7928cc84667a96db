"""The benchmark's report: tables of medians and wins, the tuning split apart, code versions and stale results."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import has_row, table_rows
from oos import cache, registry, scoring, tables
from oos.methods import METHODS

from scvi_trvae.metrics import METRIC_KEYS


def _result_rows(method: str, values: dict[tuple[str, int], tuple[float, float]]) -> list[dict]:
    """Rows of one method: {(cell type, seed): (Δ-Pearson DEG, E-dist)}."""
    return [
        {"dataset": "d", "cell_type": cell_type, "target": "t", "method": method, "seed": seed, "status": "ok",
         "pearson_delta_deg": delta, "edist_scaled": edist}
        for (cell_type, seed), (delta, edist) in values.items()
    ]  # fmt: skip


def test_median_cell_averages_seeds_per_split_and_spreads_over_common_splits():
    frame = pd.DataFrame(
        _result_rows("trVAE", {("a", 0): (0.9, 0.2), ("a", 1): (0.7, 0.4), ("b", 0): (0.5, 0.6), ("c", 0): (0.1, 0.9)})
    )
    # per split: a 0.8 (two seeds), b 0.5, c 0.1 -> median 0.5; seeds 0 and 1 share only split a: sd of (0.9, 0.7)
    assert scoring.median_over_splits(frame, "pearson_delta_deg") == f"0.500 ± {np.std([0.9, 0.7], ddof=1):.3f}"
    assert scoring.median_over_splits(frame[frame["seed"] == 0], "pearson_delta_deg") == "0.500"


def test_paired_table_compares_on_common_splits_only():
    rows = _result_rows("trVAE", {("a", 0): (0.9, 0.2), ("b", 0): (0.5, 0.6), ("c", 0): (0.8, 0.3)})
    rows += _result_rows("other", {("a", 0): (0.8, 0.1), ("b", 0): (0.6, 0.7)})  # no split c
    table = table_rows(tables.paired_table(pd.DataFrame(rows), ["trVAE", "other"]))
    assert table[1] == ["other", "2", "0.700", "0.700", "1/2", "0.400", "0.400", "1/2"]


def test_target_table_counts_wins_against_each_mean_shift_the_stronger_one_and_cvae():
    pipeline = "trVAE ensemble + shrink"
    rows = _result_rows(pipeline, {("a", 0): (0.9, 0.2), ("b", 0): (0.5, 0.6), ("c", 0): (0.8, 0.3)})
    rows += _result_rows("control + mean shift", {("a", 0): (0.8, 0.3), ("b", 0): (0.4, 0.7), ("c", 0): (0.7, 0.4)})
    rows += _result_rows(
        "control + balanced mean shift", {("a", 0): (0.95, 0.1), ("b", 0): (0.4, 0.7), ("c", 0): (0.7, 0.4)}
    )
    rows += _result_rows(
        "control + similarity mean shift", {("a", 0): (0.8, 0.3), ("b", 0): (0.6, 0.5), ("c", 0): (0.7, 0.4)}
    )
    rows += _result_rows("CVAE", {("a", 0): (0.7, 0.3), ("a", 1): (0.95, 0.1), ("b", 0): (0.4, 0.7)})  # a: 0.825
    table = {(r[0], r[1]): r[2:] for r in table_rows(tables.target_table(pd.DataFrame(rows), pipeline))[1:]}
    assert table["control + mean shift", "Δ-Pearson (DEG)"][:3] == ["3/3", "—", "—"]
    # the stronger mean shift per split: a from balanced, b from similarity, c a tie (no win)
    assert table["stronger mean shift", "Δ-Pearson (DEG)"][:3] == ["1/3", "≥ 48/57", "missed"]
    assert table["stronger mean shift", "E-dist scaled ↓"][0] == "1/3"
    assert table["CVAE", "Δ-Pearson (DEG)"][:2] == ["2/2", "≥ 45/57"]  # seed-averaged per split; no split c
    assert tables.target_table(pd.DataFrame(rows), "absent") == ""


def test_target_table_reads_the_targets_against_the_mean_shift_with_the_best_median_too():
    pipeline = "trVAE ensemble + shrink"
    rows = _result_rows(pipeline, {("a", 0): (0.9, 0.2), ("b", 0): (0.5, 0.6), ("c", 0): (0.8, 0.3)})
    # medians: pooled 0.7 / 0.4, balanced 0.7 / 0.35, similarity 0.85 / 0.45
    rows += _result_rows("control + mean shift", {("a", 0): (0.8, 0.3), ("b", 0): (0.4, 0.7), ("c", 0): (0.7, 0.4)})
    rows += _result_rows(
        "control + balanced mean shift", {("a", 0): (0.95, 0.1), ("b", 0): (0.4, 0.7), ("c", 0): (0.7, 0.35)}
    )
    rows += _result_rows(
        "control + similarity mean shift", {("a", 0): (0.85, 0.45), ("b", 0): (0.6, 0.5), ("c", 0): (0.9, 0.2)}
    )
    text = tables.target_table(pd.DataFrame(rows), pipeline)
    assert "Δ-Pearson (DEG): control + similarity mean shift, 1/3 (target ≥ 48/57)" in text
    assert "E-dist scaled ↓: control + balanced mean shift, 2/3 (target ≥ 45/57)" in text


def test_stale_table_lists_results_of_earlier_code():
    rows = _result_rows("trVAE", {("a", 0): (0.9, 0.2), ("b", 0): (0.5, 0.6)})
    rows[0].update(stale=True, code_version=cache.EARLIER_CODE)
    rows[1].update(stale=False, code_version="abc")
    table = table_rows(tables.stale_table(pd.DataFrame(rows), ["trVAE"], {"trVAE": "before the fix"}))
    assert table[1] == ["trVAE", "1/2", "earlier", "before the fix"]
    rows[0]["stale"] = False
    assert tables.stale_table(pd.DataFrame(rows), ["trVAE"]) == ""


def _kang_result(method: str, cell_type: str, value: float) -> dict:
    """A Kang result row of ``method`` on ``cell_type`` with every metric equal to ``value``."""
    return {
        "dataset": "kang", "cell_type": cell_type, "source": "control", "target": "stimulated", "method": method,
        "seed": 0, "status": "ok", "fit_seconds": 1.0, "eval_seconds": 0.0, **dict.fromkeys(METRIC_KEYS, value),
    }  # fmt: skip


def _kang_report_config(tmp_path, methods: list[str]):
    """The configuration of a ``--cached-only`` report of ``methods`` on Kang."""
    from oos.running import RunConfig

    return RunConfig(
        datasets=["kang"], methods=methods, cell_types=None, n_seeds=1, epochs=dict.fromkeys(methods),
        n_top_genes={"kang": 2000}, min_cells=3, data_dir=tmp_path, cache_dir=tmp_path, json_path=tmp_path / "r.json",
        markdown_path=tmp_path / "b.md", figure_dir=None, quick=False, argv=["--cached-only"],
    )  # fmt: skip


def test_report_shows_the_tuning_split_apart(tmp_path):
    from oos import report

    methods = ["trVAE ensemble + shrink", "control + mean shift"]
    rows = []
    for method, (tuned, other) in zip(methods, ((0.99, 0.5), (0.1, 0.4)), strict=True):
        for cell_type, value in (("NK", tuned), ("B", other), ("CD4T", other)):
            rows.append(_kang_result(method, cell_type, value))
    config = _kang_report_config(tmp_path, methods)
    text = report.markdown_report(config, rows, 0.0)
    assert "## Tuning split: kang, NK -> stimulated" in text and "## Overall (all data sets, 2 splits without" in text
    # NK's 0.99 / 0.1 is in no median and no win count: the medians are the other splits' 0.5 and 0.4
    assert has_row(text, "control + mean shift", "Δ-Pearson (DEG)", "2/2", "—", "—", "0.500", "0.400")
    assert has_row(text, "control + mean shift", "E-dist scaled ↓", "0/2")
    assert has_row(text, "trVAE ensemble + shrink", "1 (one seed)", "1", "2", "0.500", "0.500")
    assert "held-out types: B, CD4T. NK -> stimulated, the tuning split, is shown apart" in text
    assert has_row(text, "trVAE ensemble + shrink", "1", "0.990")  # the tuning split's own table
    quick = report.markdown_report(config, [r for r in rows if r["cell_type"] == "NK"], 0.0)
    assert "## Tuning split" not in quick and has_row(quick, "trVAE ensemble + shrink", "1 (one seed)", "1", "1")


def test_report_gives_the_targets_of_the_pipeline_run_in_its_own_process_too(tmp_path):
    from oos import report

    own = report.OWN_PROCESS[0]
    methods = [report.RECOMMENDED, own, "control + mean shift"]
    rows = [
        _kang_result(method, cell_type, value)
        for method, value in zip(methods, (0.9, 0.3, 0.5), strict=True) for cell_type in ("B", "CD4T")
    ]  # fmt: skip
    config = _kang_report_config(tmp_path, methods)
    text = report.markdown_report(config, rows, 0.0)
    mine, theirs = text.split("## The same pipeline run in a fresh process")
    assert has_row(mine, "control + mean shift", "Δ-Pearson (DEG)", "2/2") and "fit_recommended" in theirs
    assert has_row(theirs.split("## Overall")[0], "control + mean shift", "Δ-Pearson (DEG)", "0/2")
    without = report.markdown_report(config, [r for r in rows if r["method"] != own], 0.0)
    assert "fresh process, against" not in without


def test_code_version_hashes_the_source_files(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y = 2\n")
    first = registry.hash_sources(["pkg", "b.py"], tmp_path)
    assert first == registry.hash_sources(["b.py", "pkg"], tmp_path)  # order of the paths does not matter
    (tmp_path / "pkg" / "a.py").write_text("x = 3\n")
    registry._hash_sources.cache_clear()
    assert registry.hash_sources(["pkg", "b.py"], tmp_path) != first
    # each method hashes what it depends on: the mean shifts share one version, the trained models another
    versions = {
        name: METHODS[name].code_version()
        for name in ("control + mean shift", "control + similarity mean shift", "trVAE", "CVAE")
    }
    assert versions["control + mean shift"] == versions["control + similarity mean shift"] != versions["trVAE"]
    assert versions["trVAE"] == versions["CVAE"] and len(versions["trVAE"]) == 12


def test_stale_cached_results_are_refit_or_marked(tmp_path):
    key = {"cache_version": cache.CACHE_VERSION, "code_version": "new", "epochs": 3, "n_genes": 10}
    path = tmp_path / "result.json"
    cache.write_cached(path, {"method": "trVAE", "edist_scaled": 0.3, "key": {**key, "code_version": "old"}})
    assert cache.read_cached(path, key) is None  # a run fits it again
    stale = cache.read_cached(path, key, allow_stale=True)  # --cached-only reports it, marked
    assert stale["stale"] and stale["edist_scaled"] == 0.3
    assert cache.read_cached(path, {**key, "epochs": 4}, allow_stale=True) is None  # other settings: never used
    cache.write_cached(path, {"method": "trVAE", "edist_scaled": 0.3, "key": key})
    assert cache.read_cached(path, key)["stale"] is False
