"""``benchmarks/deg_ties.py``: DEG sets where Wilcoxon scores tie at the cut-off, and the wins they give."""

from __future__ import annotations

import json
from types import SimpleNamespace

import blend_ceiling
import deg_ties
import numpy as np
import pytest
from oos import paths, peers
from oos.cache import cache_path
from oos.registry import AUTO_EPOCHS
from oos.tables import MEAN_SHIFTS

from scvi_trvae import metrics


def test_wilcoxon_scores_rank_genes_as_the_benchmarks_degs():
    rng = np.random.default_rng(0)
    control = rng.exponential(size=(300, 20))
    target = rng.exponential(size=(200, 20)) * rng.uniform(0.5, 2.0, size=20)
    scores = deg_ties.wilcoxon_scores(target, control)
    assert len(np.unique(scores)) == 20  # continuous data, many cells: no ties, one order
    by_score = np.argsort(-scores)
    np.testing.assert_array_equal(metrics.top_degs(target, control, n_up=5, n_down=5),
                                  np.concatenate([by_score[:5], by_score[::-1][:5]]))  # fmt: skip


def test_ties_at_cutoffs_count_the_tied_genes_and_how_many_get_in():
    scores = np.array([5.0, 4.0, 3.0, 3.0, 3.0, 0.0, -1.0, -2.0, -2.0, -3.0])
    ties = deg_ties.ties_at_cutoffs(scores, n_up=3, n_down=2)
    assert ties == {"up": {"tied": 3, "in": 1}, "down": {"tied": 2, "in": 1}}
    assert deg_ties.ties_at_cutoffs(scores, n_up=2, n_down=1) == {"up": {"tied": 1, "in": 1},
                                                                  "down": {"tied": 1, "in": 1}}  # fmt: skip


def test_random_tie_orders_only_reorder_tied_genes():
    scores = np.array([5.0, 4.0, 3.0, 3.0, 3.0, 0.0, -1.0, -2.0, -2.0, -3.0])
    sets = deg_ties.degs_in_random_tie_orders(scores, n_orders=50, seed=1, n_up=3, n_down=2)
    for degs in sets:
        assert list(degs[:2]) == [0, 1] and degs[2] in {2, 3, 4}  # the last one in is one of the tied genes
        assert degs[3] == 9 and degs[4] in {7, 8}
    assert {int(d[2]) for d in sets} == {2, 3, 4} and {int(d[4]) for d in sets} == {7, 8}
    untied = deg_ties.degs_in_random_tie_orders(np.arange(10.0), n_orders=5, n_up=3, n_down=2)
    assert all(list(d) == [9, 8, 7, 0, 1] for d in untied)


def _case(dataset, cell_type, pipeline, shifts, orders_pipeline, orders_shift, ties=(3, 1)):
    return {
        "dataset": dataset, "cell_type": cell_type, "target": "stim", "n_target": 4, "n_control": 9,
        "ties": {"up": {"tied": ties[0], "in": ties[1]}, "down": {"tied": 1, "in": 1}},
        "benchmark": {"pipeline": pipeline, **dict(zip(MEAN_SHIFTS, shifts, strict=True))},
        "orders": {"pipeline": orders_pipeline, **dict.fromkeys(MEAN_SHIFTS, orders_shift)},
    }  # fmt: skip


def test_report_counts_wins_with_the_benchmarks_degs_and_in_each_tie_order(tmp_path):
    cases = [
        _case("d", "A", 0.80, (0.70, 0.78, 0.75), [0.80, 0.70], [0.75, 0.75]),  # wins; loses in the second order
        _case("d", "B", 0.60, (0.70, 0.50, 0.50), [0.60, 0.80], [0.70, 0.70]),  # loses; wins in the second order
        _case("d", "C", 0.90, (0.80, 0.80, 0.80), [0.90], [0.80], ties=(1, 1)),  # closed: one order, not listed
        _case("d", "D", 0.90, (0.80, 0.80, 0.80), None, [0.80, 0.80]),  # open, no prediction kept: wins, no orders
        _case("kang", "NK", 0.1, (0.9, 0.9, 0.9), [0.1, 0.1], [0.9, 0.9]),  # the tuning split: not counted
    ]
    for i, case in enumerate(cases):
        (tmp_path / f"case{i}.json").write_text(json.dumps(case))
    text = deg_ties.report(tmp_path)
    assert text.startswith("4 non-tuning splits; on 3 a block of tied Wilcoxon scores straddles a cut-off")
    assert "wins Δ-Pearson (DEG) on 3 with the benchmark's DEGs; on the 3 splits whose every order is scored" in text
    assert "(2 won with the benchmark's DEGs) it wins 2 to 2 (median 2) in 2 random tie orders" in text
    assert "1 open splits have no kept prediction" in text
    assert "| d A → stim | 4 / 9 | 3 (1) / 1 (1) | 0.800, 0.700–0.800 | 0.780, 0.750–0.750 | yes, 50% |" in text
    assert "| d D → stim | 4 / 9 | 3 (1) / 1 (1) | not kept | 0.800, 0.800–0.800 | yes |" in text
    assert "| d B → stim |" in text and "| d C → stim |" not in text and "NK" not in text


def test_a_split_is_open_when_tied_genes_straddle_a_cutoff():
    assert deg_ties.is_open({"up": {"tied": 3, "in": 1}, "down": {"tied": 1, "in": 1}})
    assert not deg_ties.is_open({"up": {"tied": 2, "in": 2}, "down": {"tied": 1, "in": 1}})


def test_blend_ceiling_leaves_out_predictions_made_with_the_scaled_spread(tmp_path):
    cache_dir = tmp_path / "full"
    split = SimpleNamespace(dataset="d", cell_type="A", target="stim", train=SimpleNamespace(n_vars=3))
    npy = cache_path(cache_dir, split, peers.OWN_PROCESS[0], 0).with_suffix(".npy")
    npy.parent.mkdir(parents=True)
    np.save(npy, np.ones((2, 3)))
    meta = paths.peer_meta_dir(cache_dir) / peers.meta_path(split, "trvae", 0, AUTO_EPOCHS).relative_to(peers.META_DIR)
    meta.parent.mkdir(parents=True)
    settings = {"shift_weight": 0.5, "deviation_weight": 1.0, "reference_shift": "pooled"}
    meta.write_text(json.dumps({"settings": settings}))  # recorded before the spread scaling was: as observed
    assert blend_ceiling.kept_prediction(cache_dir, split)[1] == settings
    meta.write_text(json.dumps({"settings": {**settings, "spread_scaling": True}}))
    assert blend_ceiling.kept_prediction(cache_dir, split) is None


@pytest.mark.slow  # fits the pipeline (7 tiny models, 2 epochs)
def test_quick_mode_scores_the_pipeline_and_the_mean_shifts_in_every_tie_order(tmp_path):
    deg_ties.main(["--quick", "--out-dir", str(tmp_path), "--orders", "4"])
    (case,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert set(case["orders"]) == {"pipeline", *MEAN_SHIFTS}
    n_orders = 4 if deg_ties.is_open(case["ties"]) else 1  # closed ties: one order stands for all
    assert all(len(values) == n_orders for values in case["orders"].values())
    assert set(case["ties"]) == {"up", "down"}
    assert "non-tuning splits" in (tmp_path / "deg_ties.md").read_text()
