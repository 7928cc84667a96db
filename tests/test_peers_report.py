"""``benchmarks/peers/report.py``: the paired win counts of ours against each peer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import load_script

REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "report.py"


@pytest.fixture(scope="module")
def report():
    return load_script("peers_report", REPORT)


def _row(dataset, cell_type, method, pearson, edist, status="ok"):
    return {"dataset": dataset, "cell_type": cell_type, "target": "stim", "method": method, "status": status,
            "pearson_delta_deg": pearson, "edist_scaled": edist}  # fmt: skip


def test_wins_are_paired_strict_and_leave_out_the_tuning_split(report):
    pipeline, peer = "trVAE ensemble + shrink", "CPA"
    rows = [
        _row("kang", "NK", pipeline, 0.1, 9.0), _row("kang", "NK", peer, 0.9, 0.1),  # tuning split: not counted
        _row("kang", "B", pipeline, 0.9, 0.2), _row("kang", "B", peer, 0.8, 0.3),  # ours on both
        _row("kang", "T", pipeline, 0.7, 0.5), _row("kang", "T", peer, 0.8, 0.5),  # peer on Pearson, tie on E
        _row("haber", "Tuft", pipeline, 0.5, 0.4), _row("haber", "Tuft", peer, None, 0.6),  # Pearson undefined
        _row("haber", "Stem", pipeline, 0.5, 0.4), _row("haber", "Stem", peer, 0.1, 0.1, status="failed"),
        _row("haber", "Goblet", pipeline, 0.5, 0.4),  # the peer did not run
    ]  # fmt: skip
    records = report.win_counts(rows)
    get = {(r["ours"], r["peer"], r["dataset"], r["metric"]): r for r in records}
    pearson = get[(pipeline, peer, "all", "pearson_delta_deg")]
    assert (pearson["wins"], pearson["splits"]) == (1, 2)
    assert pearson["peer_wins"] == {"kang T stim": pytest.approx(0.1)}
    edist = get[(pipeline, peer, "all", "edist_scaled")]
    assert (edist["wins"], edist["splits"]) == (2, 3)  # the tie is not a win
    assert get[(pipeline, peer, "haber", "edist_scaled")]["wins"] == 1
    assert get[("trVAE", peer, "all", "edist_scaled")]["splits"] == 0  # no single-model rows
    text = report.wins_markdown(records)
    assert "| trVAE ensemble + shrink | CPA | 1/2 | 2/3 |" in text and "kang T stim (+0.100)" in text
    assert "| haber | — / 1/1 |" in text  # Pearson undefined on Tuft, the peer failed or did not run elsewhere
    assert "| kang | 1/2 / 1/2 |" in text


def test_main_writes_the_json_and_the_page_of_per_split_tables(report, tmp_path):
    row = {**_row("kang", "B", "CPA", 0.8, 0.3), "seed": 0, "source": "control", "n_genes": 50, "n_train": 100,
           "n_control": 10, "n_target": 12, "epochs": 3, "fit_seconds": 4.0}  # fmt: skip
    (tmp_path / "cache" / "kang").mkdir(parents=True)
    (tmp_path / "cache" / "kang" / "B__stim__CPA__seed0.json").write_text(json.dumps({**row, "key": {}}))
    ours = {**row, "method": "trVAE ensemble + shrink", "pearson_delta_deg": 0.9, "edist_scaled": 0.2}
    (tmp_path / "results.json").write_text(json.dumps({"rows": [ours]}))
    paths = {name: tmp_path / name for name in ("peers.json", "tables.md")}
    text = report.main(["--cache-dir", str(tmp_path / "cache"), "--results", str(tmp_path / "results.json"),
                        "--output", str(paths["peers.json"]), "--tables", str(paths["tables.md"])])  # fmt: skip
    assert "| trVAE ensemble + shrink | CPA | 1/1 | 1/1 |" in text
    page = paths["tables.md"].read_text()
    assert page.startswith("# Peers: every split") and "**kang: B control → stim**" in page
    assert {r["method"] for r in json.loads(paths["peers.json"].read_text())["rows"]} == {"CPA", ours["method"]}


def test_restore_meta_writes_the_runners_meta_back_where_peer_rows_finds_it(report, tmp_path):
    meta_dir = tmp_path / "peers"  # beside the cache, tmp_path / "cache"
    runner = {"peak_rss_mb": 812.0, "fit_predict_seconds": 41.5}
    row = {**_row("kang", "B", "CPA", 0.8, 0.3), "seed": 0, "n_genes": 50, "epochs": 3}
    rows = [{**row, "runner": runner}, {**row, "method": "trVAE", "runner": None}, {**row, "cell_type": "T"}]
    (tmp_path / "peers.json").write_text(json.dumps({"rows": rows}))
    assert report.restore_meta(tmp_path / "peers.json", meta_dir) == 1  # only the peer row with a runner record
    (tmp_path / "cache" / "kang").mkdir(parents=True)
    (tmp_path / "cache" / "kang" / "B__stim__CPA__seed0.json").write_text(json.dumps({**row, "key": {}}))
    restored = report.peer_rows(tmp_path / "cache")
    assert [r["runner"] for r in restored] == [runner]
    kept = report.meta_path(row, "cpa", meta_dir)
    assert kept.is_relative_to(meta_dir)
    kept.write_text(json.dumps({"peak_rss_mb": 1.0}))
    assert report.restore_meta(tmp_path / "peers.json", meta_dir) == 0  # an existing file is kept
    assert json.loads(kept.read_text()) == {"peak_rss_mb": 1.0}


def test_resources_compare_each_runner_with_the_pipeline_run_like_a_peer(report):
    own = report.OWN_PROCESS[0]

    def measured(method, cell_type, seconds, peak):  # CPU time: 80% of the wall time
        runner = {"fit_predict_seconds": seconds, "fit_predict_cpu_seconds": 0.8 * seconds, "peak_rss_mb": peak}
        return {**_row("kang", cell_type, method, 0.5, 0.5), "runner": runner}

    rows = [
        measured(own, "B", 100.0, 700.0), measured(own, "T", 50.0, 600.0),
        measured("CPA", "B", 50.0, 1400.0), measured("CPA", "T", 100.0, 600.0), measured("CPA", "NK", 10.0, 900.0),
        {**_row("kang", "B", "biolord", 0.5, 0.5), "runner": None},  # no measurement kept: no record
    ]  # fmt: skip
    records = {r["method"]: r for r in report.resources(rows)}
    assert set(records) == {own, "CPA"}
    cpa = records["CPA"]
    assert (cpa["splits"], cpa["shared_with_ours"], cpa["median_seconds"], cpa["max_peak_mb"]) == (3, 2, 50.0, 1400.0)
    assert cpa["seconds_vs_ours"] == pytest.approx((0.5 + 2.0) / 2) and cpa["peak_vs_ours"] == pytest.approx(1.5)
    assert cpa["cpu_seconds_vs_ours"] == pytest.approx(1.25) and cpa["max_cpu_seconds"] == pytest.approx(80.0)
    table = report.resources_markdown(list(records.values()))
    assert "| CPA | 3 | 50 | 100 | 40 | 80 | 900 | 1400 | 2 | 1.25 | 1.25 | 1.50 |" in table


def test_same_scores_names_the_splits_where_the_own_process_run_differs(report):
    own, pipeline = report.OWN_PROCESS[0], report.OURS[0]
    scores = dict.fromkeys(report.COLUMNS, 0.5)
    rows = [
        {**_row("kang", "B", own, 0.5, 0.5), **scores}, {**_row("kang", "B", pipeline, 0.5, 0.5), **scores},
        {**_row("kang", "T", own, 0.5, 0.5), **scores},
        {**_row("kang", "T", pipeline, 0.5, 0.5), **scores, "edist_scaled": 0.6},
        {**_row("kang", "NK", own, 0.5, 0.5), **scores},  # the in-process row is absent: not compared
    ]  # fmt: skip
    same = report.same_scores(rows)
    assert (same["splits"], same["identical"]) == (2, 1)
    assert same["differ"] == {"kang T stim": pytest.approx(0.1)}
