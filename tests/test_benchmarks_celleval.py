"""``benchmarks/oos/celleval_tables.py``: cell-eval's scores of the kept predictions as a table of the report."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from helpers import has_row, load_script
from oos.celleval_tables import celleval_section, load_celleval

STATISTIC = ["count", "null_count", "mean", "std", "min", "25%", "50%", "75%", "max"]
PIPELINE, SHIFT = "trVAE ensemble + shrink", "control + mean shift"
TUNING = ("kang", "NK", "stim")
SCORE_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peers" / "celleval_score.py"


def _aggregated(**means: float) -> dict[str, list]:
    """cell-eval's aggregated table of one perturbation: the mean is the third statistic."""
    return {"statistic": STATISTIC, **{k: [1.0, 0.0, v, None, v, v, v, v, v] for k, v in means.items()}}


def _write(path, splits: dict[str, dict[str, dict[str, float]]]) -> None:
    def table(method, means):  # cell-eval's noise ceiling comes as one value per metric, without statistics
        return {k: [v] for k, v in means.items()} if method == "noise ceiling" else _aggregated(**means)

    payload = {
        split: {"n_genes": 10, "scores": {method: table(method, means) for method, means in methods.items()}}
        for split, methods in splits.items()
    }
    path.write_text(json.dumps(payload))


def _own(dataset, cell_type, method, pearson):
    return {"dataset": dataset, "cell_type": cell_type, "target": "stim", "method": method,
            "pearson_delta_deg": pearson, "status": "ok"}  # fmt: skip


def test_celleval_table_gives_medians_without_the_tuning_split_and_compares_the_rankings(tmp_path):
    path = tmp_path / "celleval.json"
    full = {"overlap_at_N": 0.3, "de_direction_match": 0.9, "de_spearman_lfc_sig": 0.6, "de_sig_genes_recall": 0.5}
    ours, shift = "trVAE_ensemble_+_shrink", "control_+_mean_shift"  # cell-eval's file names the methods by slug
    _write(path, {
        "kang/NK/stim": {ours: {"pearson_delta": 0.0}, shift: {"pearson_delta": 1.0}},
        "kang/B/stim": {ours: {"pearson_delta": 0.9, **full}, shift: {"pearson_delta": 0.8, **full},
                        "noise ceiling": {"pearson_delta": 0.99, **full}},
        # no significant gene between the real cells: only pearson_delta
        "haber/Tuft/stim": {ours: {"pearson_delta": 0.3}, shift: {"pearson_delta": 0.5},
                            "an_unlisted_method": {"pearson_delta": 1.0}},
        "haber/Stem/stim": {ours: {"pearson_delta": 0.0}},  # not a split of this run: not shown
    })  # fmt: skip
    scores = load_celleval(path)
    assert set(scores["metric"]) == {"pearson_delta", *full}
    own = pd.DataFrame([
        _own("kang", "NK", PIPELINE, 0.1), _own("kang", "NK", SHIFT, 0.9),
        _own("kang", "B", PIPELINE, 0.95), _own("kang", "B", SHIFT, 0.85),
        _own("haber", "Tuft", PIPELINE, 0.7), _own("haber", "Tuft", SHIFT, 0.5),
    ])  # fmt: skip
    text = celleval_section(own, [PIPELINE, SHIFT], scores, TUNING)
    assert "on 2 splits without the tuning split: haber Tuft, kang B" in text
    # medians over B and Tuft (NK left out): pipeline (0.9 + 0.3) / 2, mean shift (0.8 + 0.5) / 2
    assert has_row(text, PIPELINE, "2", "0.600", "0.300", "0.900", "0.600", "0.500", "1", "0.825")
    assert has_row(text, SHIFT, "2", "0.650", "0.300", "0.900", "0.600", "0.500", "1", "0.675")
    assert has_row(text, "noise ceiling", "1", "0.990", "0.300", "0.900", "0.600", "0.500", "1", "—")
    assert "an_unlisted_method" not in text
    assert f"differ: cell-eval {SHIFT} > {PIPELINE}; the benchmark {PIPELINE} > {SHIFT}." in text
    assert f"significant genes: {PIPELINE} = {SHIFT}." in text
    # paired: B won by both scorers; Tuft lost by cell-eval, won by the benchmark; DE recall tied on B
    assert f"where {PIPELINE} scores higher" in text
    assert has_row(text, SHIFT, "2", "1/2", "2/2", "0/1", "1")


def test_celleval_table_is_empty_without_scores(tmp_path):
    scores = load_celleval(tmp_path / "missing.json")
    assert scores.empty
    assert celleval_section(pd.DataFrame([_own("kang", "B", PIPELINE, 0.9)]), [PIPELINE], scores, TUNING) == ""


def test_a_prediction_cell_eval_refused_has_no_scores(tmp_path):
    path = tmp_path / "celleval.json"
    _write(path, {"kang/B/stim": {"trVAE_ensemble_+_shrink": {"pearson_delta": 0.9}}})
    payload = json.loads(path.read_text())
    payload["kang/B/stim"]["scores"]["CPA"] = {"refused": ["Invalid scale: max value 15.05 exceeds log1p threshold"]}
    path.write_text(json.dumps(payload))
    scores = load_celleval(path)
    assert set(scores["method"]) == {"trVAE_ensemble_+_shrink"}


def test_scoring_a_split_again_replaces_its_methods_and_keeps_the_others_unless_the_genes_changed():
    merge_scores = load_script("celleval_score", SCORE_SCRIPT).merge_scores
    payload = {"kang/B/stim": {"n_genes": 10, "scores": {"CPA": {"pearson_delta": [0.5]}, "scPRAM": {"x": [1]}}}}
    merge_scores(payload, "kang/B/stim", 10, {"CPA": {"pearson_delta": [0.7]}, "biolord": {"x": [2]}})
    assert payload["kang/B/stim"]["scores"] == {
        "CPA": {"pearson_delta": [0.7]}, "scPRAM": {"x": [1]}, "biolord": {"x": [2]}
    }  # fmt: skip
    merge_scores(payload, "kang/B/stim", 20, {"biolord": {"x": [3]}})
    assert payload["kang/B/stim"] == {"n_genes": 20, "scores": {"biolord": {"x": [3]}}}
    merge_scores(payload, "kang/T/stim", 20, {"CPA": {}})
    assert set(payload) == {"kang/B/stim", "kang/T/stim"}


def test_many_splits_are_counted_per_data_set_and_a_type_with_two_targets_is_named_twice():
    from oos.celleval_tables import _split_names

    two = pd.MultiIndex.from_tuples([("haber", "Tuft", "Hpoly"), ("haber", "Tuft", "Salmonella"), ("kang", "B", "s")])
    assert _split_names(two) == {"n": 3, "splits": "haber Tuft Hpoly, haber Tuft Salmonella, kang B"}
    many = pd.MultiIndex.from_tuples([("kang", f"T{i}", "s") for i in range(16)] + [("haber", "Tuft", "Hpoly")])
    assert _split_names(many) == {"n": 17, "splits": "per data set haber 1, kang 16"}
