"""``benchmarks/selection_rules.py``: other rules for choosing the blend from the same inner scores (tuning data)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import selection_rules
import selection_rules_splits
from anndata import AnnData

#: Fold c resembles the type to predict most, fold a least (weights in the proportions 1/16, 1/4, 1).
WEIGHTS = {"a": 1 / 21, "b": 4 / 21, "c": 16 / 21}


def _inner(scores: dict[float, list[float]]) -> pd.DataFrame:
    """Inner scores of the similarity blends with ``lambda = 1``: ``{w: [score of fold a, fold b, fold c]}``."""
    rows = [
        {"inner_cell_type": fold, "reference_shift": "similarity", "shift_weight": w, "deviation_weight": 1.0,
         "pearson_delta_deg": s, "edist_scaled": 1.0 - s, "score": s, "fold_weight": WEIGHTS[fold]}
        for w, values in scores.items()
        for fold, s in zip("abc", values, strict=True)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_the_rules_differ_where_they_should():
    # w = 0.5 has the best mean (0.70, standard error 0.153) but one weak fold; w = 0.25 is steady (0.55) and
    # within one standard error of it; w = 0 is not (0.30)
    inner = _inner({0.0: [0.30, 0.30, 0.30], 0.25: [0.55, 0.55, 0.55], 0.5: [0.90, 0.80, 0.40]})
    weight = {name: rule(inner)[1] for name, rule in selection_rules.RULES.items()}
    assert weight["mean score"] == 0.5
    assert weight["one standard error"] == 0.25
    assert weight["median fold"] == 0.5
    assert weight["worst fold"] == 0.25
    assert weight["mean rank"] == 0.5  # mean ranks over the folds 1, 2.33, 2.67
    assert weight["Δ-Pearson only"] == 0.5 and weight["E-distance only"] == 0.5  # (E-distance = 1 - score here)
    assert weight["similarity-weighted folds"] == 0.25  # w = 0.5 scores 0.50 with these weights
    assert weight["two nearest folds"] == 0.5  # folds b and c: 0.60 against 0.55


def test_the_similarity_rules_follow_the_folds_nearest_the_type_to_predict():
    inner = _inner({0.0: [0.9, 0.2, 0.2], 0.5: [0.1, 0.5, 0.5]})  # the far fold a alone prefers w = 0
    assert selection_rules.RULES["mean score"](inner)[1] == 0.0
    assert selection_rules.RULES["two nearest folds"](inner)[1] == 0.5
    assert selection_rules.RULES["similarity-weighted folds"](inner)[1] == 0.5


def test_fold_weights_are_the_pipelines_similarity_weights_among_the_folds():
    # types a and b are folds, c is not; the type to predict ("new") has control cells near a's
    rng = np.random.default_rng(0)
    centres = {"a": [0.0, 0.0, 0.0], "b": [4.0, 0.0, 1.0], "c": [0.5, 0.5, 0.0], "new": [0.5, 0.0, 0.0]}
    cells, obs = [], []
    for cell_type, centre in centres.items():
        for condition in ("control", "stimulated"):
            cells.append(rng.normal(centre, 0.1, size=(10, 3)) + (condition == "stimulated"))
            obs += [(cell_type, condition)] * 10
    obs = pd.DataFrame(obs, columns=["cell_type", "condition"]).set_axis([str(i) for i in range(len(obs))])
    train = AnnData(np.vstack(cells), obs=obs)
    keys = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}
    control = train[(obs["cell_type"] == "new").to_numpy() & (obs["condition"] == "control").to_numpy()]
    weights = selection_rules.fold_weights(train, control, ["a", "b"], "new", keys)
    assert set(weights) == {"a", "b"} and sum(weights.values()) == pytest.approx(1.0)
    assert weights["a"] > 0.5 > weights["b"]
    # only training cells of the source condition count: moving the stimulated cells of b changes nothing
    moved = train.copy()
    moved.X[((obs["cell_type"] == "b") & (obs["condition"] == "stimulated")).to_numpy()] += 5.0
    assert selection_rules.fold_weights(moved, control, ["a", "b"], "new", keys) == pytest.approx(weights)


def test_one_standard_error_takes_the_smallest_weight_among_the_close_ones():
    inner = _inner({0.0: [0.60, 0.50, 0.55], 0.25: [0.70, 0.40, 0.55], 0.5: [0.80, 0.30, 0.60]})
    assert selection_rules.one_standard_error(inner) == ("similarity", 0.0, 1.0)


def test_one_standard_error_keeps_the_best_when_nothing_else_is_close():
    inner = _inner({0.0: [0.10, 0.12, 0.11], 0.25: [0.50, 0.52, 0.51], 0.5: [0.80, 0.81, 0.82]})
    assert selection_rules.one_standard_error(inner) == ("similarity", 0.5, 1.0)


def test_a_case_whose_mean_rule_disagrees_with_the_pipeline_is_refused():
    inner = _inner({0.0: [0.1, 0.1, 0.1], 0.5: [0.9, 0.9, 0.9]})
    held_out = [
        {"reference_shift": "similarity", "shift_weight": w, "deviation_weight": 1.0, "pearson_delta_deg": 0.5,
         "edist_scaled": 0.5}
        for w in (0.0, 0.5)
    ]  # fmt: skip
    chosen = {"reference_shift": "similarity", "shift_weight": 0.5, "deviation_weight": 1.0}
    case = {"case": "synthetic:1:0", "inner": inner.to_dict(orient="records"), "fold_weights": WEIGHTS,
            "held_out": held_out, "mean_shifts": {}, "chosen": chosen}  # fmt: skip
    assert set(selection_rules.choices(case)["prediction"]) == set(selection_rules.RULES)
    case["chosen"]["shift_weight"] = 0.0
    with pytest.raises(RuntimeError, match="does not reproduce"):
        selection_rules.choices(case)


@pytest.mark.slow  # trains 7 tiny models
def test_quick_mode_scores_every_rule_on_one_rare_synthetic_case(tmp_path):
    selection_rules.main(["--quick", "--out-dir", str(tmp_path)])
    case = json.loads((tmp_path / "case_synthetic_1_0_8.json").read_text())
    assert case["quick"] and case["control_cells"] == 8
    assert set(case["fold_weights"]) == {row["inner_cell_type"] for row in case["inner"]}
    assert len(case["held_out"]) == 30  # 2 kinds x 5 w x 3 lambda
    assert {row["inner_cell_type"] for row in case["inner"]} and len(case["inner"]) % 30 == 0
    chosen = selection_rules.choices(case)
    assert set(chosen["prediction"]) >= set(selection_rules.RULES)
    table = (tmp_path / "selection_rules.md").read_text()
    assert "synthetic S=1, 8 cells" in table and "edist_scaled wins" in table and "one standard error" in table


def _ceiling(chosen_weight: float) -> dict:
    """A blend_ceiling result with every similarity blend of lambda 1 but w = 0.75 (as where members are unknown)."""
    rows = [
        {"row": "blend", "reference_shift": "similarity", "shift_weight": w, "deviation_weight": 1.0,
         "pearson_delta_deg": 0.9 - w / 10, "edist_scaled": 0.2 + w / 10}
        for w in (0.0, 0.25, 0.5, 1.0)
    ]  # fmt: skip
    rows.append({"row": "mean shift", "reference_shift": "pooled", "pearson_delta_deg": 0.88, "edist_scaled": 0.21})
    ceiling = {metric: {"pipeline": 0.85 if metric == "pearson_delta_deg" else 0.25, "stronger mean shift": 0.88}
               for metric in ("pearson_delta_deg", "edist_scaled")}  # fmt: skip
    ceiling["edist_scaled"]["stronger mean shift"] = 0.21
    chosen = {"reference_shift": "similarity", "shift_weight": chosen_weight, "deviation_weight": 1.0}
    return {"chosen": chosen, "ceiling": ceiling, "rows": rows}


def test_split_choices_score_each_rule_from_the_ceiling_or_leave_it_unscored():
    case = {"inner": _inner({0.0: [0.55, 0.55, 0.55], 0.5: [0.90, 0.80, 0.40], 0.75: [0.2, 0.2, 0.2]}).to_dict(
        orient="records"), "fold_weights": WEIGHTS}  # fmt: skip
    rows = {row["rule"]: row for row in selection_rules_splits.split_choices(case, _ceiling(0.5))}
    assert rows["mean score"]["shift_weight"] == 0.5 and rows["mean score"]["pearson_delta_deg"] == pytest.approx(0.85)
    assert rows["one standard error"]["shift_weight"] == 0.0
    assert rows["one standard error"]["edist_scaled"] == pytest.approx(0.2)
    case = {"inner": _inner({0.5: [0.1, 0.1, 0.1], 0.75: [0.9, 0.9, 0.9]}).to_dict(orient="records"),
            "fold_weights": WEIGHTS}  # fmt: skip
    rows = {row["rule"]: row for row in selection_rules_splits.split_choices(case, _ceiling(0.75))}
    assert rows["mean score"]["shift_weight"] == 0.75 and rows["mean score"]["edist_scaled"] is None


def test_splits_report_counts_wins_and_leaves_out_a_split_whose_choice_is_not_reproduced(tmp_path):
    ceiling_dir, out_dir = tmp_path / "ceiling", tmp_path / "out"
    ceiling_dir.mkdir()
    out_dir.mkdir()
    inner = _inner({0.0: [0.55, 0.55, 0.55], 0.5: [0.90, 0.80, 0.40]}).to_dict(orient="records")
    for name, chosen in (("haber__Tuft__Salmonella.json", 0.5), ("haber__Stem__Salmonella.json", 0.25)):
        (ceiling_dir / name).write_text(json.dumps(_ceiling(chosen)))
        case = {"dataset": "haber", "cell_type": name, "inner": inner, "fold_weights": WEIGHTS}
        (out_dir / name).write_text(json.dumps(case))
    text = selection_rules_splits.report(out_dir, ceiling_dir)
    assert "haber__Stem__Salmonella" in text.split("Left out")[1]
    table = text.split("Left out")[0]
    one_se = next(line for line in table.splitlines() if "one standard error" in line and "edist_scaled" in line)
    # one split, w = 0 scores E-distance 0.2: beats the mean shift (0.21) and the pipeline (0.25)
    assert [cell.strip() for cell in one_se.split("|")[2:8]] == ["1", "1", "1", "1", "0", "1"]


@pytest.mark.slow  # trains 4 tiny models
def test_splits_quick_mode_keeps_the_inner_scores_per_fold(tmp_path):
    selection_rules_splits.main(["--quick", "--out-dir", str(tmp_path)])
    (case,) = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert case["dataset"] == "synthetic" and len(case["inner"]) % 30 == 0
    assert len({row["inner_cell_type"] for row in case["inner"]}) >= 2
    assert set(case["fold_weights"]) == {row["inner_cell_type"] for row in case["inner"]}
    assert sum(case["fold_weights"].values()) == pytest.approx(1.0)
    assert (tmp_path / "selection_rules_splits.md").read_text().strip() == "no splits done"
