"""``benchmarks/member_shrinkage.py``: per-gene shift weights from the members' disagreement, on the tuning data."""

from __future__ import annotations

import json

import member_shrinkage
import numpy as np
import pytest


def test_gene_weights_lean_toward_the_reference_where_the_members_disagree():
    disagreement = np.array([0.0, 1.0, 1.0, 3.0])  # median 1
    assert member_shrinkage.gene_weights(0.5, 0.0, disagreement) == pytest.approx([0.5] * 4)
    assert member_shrinkage.gene_weights(0.5, 1.0, disagreement) == pytest.approx([0.5, 0.25, 0.25, 0.125])
    assert member_shrinkage.gene_weights(0.5, 4.0, np.zeros(3)) == pytest.approx([0.5] * 3)  # no disagreement


def test_best_rows_compare_the_best_plain_and_per_gene_blends():
    rows = [
        {"kind": "pooled", "shift_weight": 0.0, "alpha": 0.0, "mean_rmse": 0.3, "pearson_delta_deg": 0.9},
        {"kind": "pooled", "shift_weight": 0.0, "alpha": 4.0, "mean_rmse": 0.3, "pearson_delta_deg": 0.9},  # = w 0
        {"kind": "pooled", "shift_weight": 0.5, "alpha": 0.0, "mean_rmse": 0.4, "pearson_delta_deg": 0.8},
        {"kind": "similarity", "shift_weight": 0.5, "alpha": 1.0, "mean_rmse": 0.35, "pearson_delta_deg": 0.95},
    ]
    best = member_shrinkage.best_rows(rows).set_index(["score", "blend"])
    assert best.loc[("mean_rmse", "plain (alpha 0)"), "value"] == 0.3
    # w = 0 is the plain blend whatever alpha: not counted as a per-gene blend
    assert best.loc[("mean_rmse", "per gene (alpha > 0)"), "value"] == 0.35
    assert best.loc[("pearson_delta_deg", "per gene (alpha > 0)"), "kind"] == "similarity"
    assert set(best.index.get_level_values("score")) == {"mean_rmse", "pearson_delta_deg"}


@pytest.mark.slow  # trains 3 tiny models
def test_quick_mode_scores_every_blend_of_the_grid(tmp_path):
    member_shrinkage.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "case_synthetic_1_0.json").read_text())
    grid = len(member_shrinkage.KINDS) * len(member_shrinkage.SHIFT_WEIGHTS) * len(member_shrinkage.ALPHAS)
    assert case["quick"] and len(case["rows"]) == grid
    for row in case["rows"]:
        assert row["mean_rmse"] >= 0.0 and row["paired_rmse"] > 0.0 and -1.0 <= row["pearson_delta_deg"] <= 1.0
    # w = 0 is the reference shift alone whatever alpha
    at_zero = {(r["kind"], r["edist_scaled"]) for r in case["rows"] if r["shift_weight"] == 0.0}
    assert len(at_zero) == len(member_shrinkage.KINDS)
    assert set(case["disagreement_vs_excess_error"]) == set(member_shrinkage.KINDS)
    assert all(-1.0 <= r <= 1.0 for r in case["disagreement_vs_excess_error"].values())
    assert "per gene (alpha > 0)" in (tmp_path / "member_shrinkage.md").read_text()
