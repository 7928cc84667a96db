"""``benchmarks/ensemble_size.py``: the recommended pipeline with 1 to 5 members, its blend as chosen."""

from __future__ import annotations

import json

import ensemble_size
import ensemble_variants
import numpy as np
import pytest
from matched_folds import quick_split
from pipeline_variant import DEFAULT_RUN

from scvi_trvae.utils import as_dense


def test_each_member_count_is_written_in_the_report_format_and_counted_against_the_mean_shift(tmp_path):
    name = "haber_hpoly__Tuft__Hpoly.Day10.json"
    default = json.loads((DEFAULT_RUN / name).read_text())
    by_k = {str(k): {"pearson_delta_deg": 1.0, "edist_scaled": 0.0} for k in ensemble_size.MEMBERS}  # unbeatable
    result = {**{k: default[k] for k in ("dataset", "cell_type", "target", "n_control", "chosen")},
              "scores_by_members": by_k, "default_run_difference": {"edist_scaled": 0.0}}  # fmt: skip
    ensemble_variants.write_split(ensemble_size.VARIANTS, result, tmp_path, name)
    written = json.loads((tmp_path / "members_5" / name).read_text())
    assert written["members"] == 5 and written["scores"] == by_k["5"] and written["chosen"] == default["chosen"]
    text = ensemble_variants.split_report(ensemble_size.VARIANTS, tmp_path)
    for k in ensemble_size.MEMBERS:
        assert f"### {k} member" in text
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith(("| pearson", "| edist"))]
    assert len(rows) == 2 * len(ensemble_size.MEMBERS)
    assert all([cell.strip() for cell in row[1:3]] == ["1", "1"] for row in rows)  # one split, won, per metric and K


def test_no_split_done_is_said():
    assert (
        ensemble_variants.split_report(ensemble_size.VARIANTS, ensemble_size.OUT_DIR / "nothing here")
        == "no splits done"
    )


@pytest.mark.slow  # trains 5 + 3 tiny models
def test_the_first_three_of_five_members_predict_what_three_members_trained_alone_predict():
    split = quick_split()
    args = (split.train, split.task_keys, ensemble_variants.QUICK_BLEND)
    five = ensemble_variants.train_members(*args, n_members=5, setup_kwargs=split.setup_kwargs, quick=True)
    three = ensemble_variants.train_members(*args, n_members=3, setup_kwargs=split.setup_kwargs, quick=True)
    part = ensemble_size.first_members(five, 3)
    assert part.seeds == [0, 1, 2] and five.n_members == 5  # the ensemble itself is not cut
    predict = {"source": split.source, "target": split.target}
    np.testing.assert_allclose(
        as_dense(part.predict_perturbation(split.control, **predict).X),
        as_dense(three.predict_perturbation(split.control, **predict).X), rtol=1e-5, atol=1e-6,
    )  # fmt: skip
    assert not np.allclose(
        as_dense(part.predict_perturbation(split.control, **predict).X),
        as_dense(five.predict_perturbation(split.control, **predict).X),
    )


@pytest.mark.slow  # trains 5 tiny models twice
def test_quick_modes_score_every_member_count(tmp_path):
    ensemble_size.main(["--quick", "--out-dir", str(tmp_path)])
    for k in ensemble_size.MEMBERS:
        case = json.loads((tmp_path / f"members_{k}" / "synthetic__type_A__stimulated.json").read_text())
        assert case["members"] == k and set(case["scores"]) == {"pearson_delta_deg", "edist_scaled"}
    ensemble_size.main(["--quick", "--tuning", "synthetic:1:0", "--out-dir", str(tmp_path)])
    table = (tmp_path / "tuning" / "ensemble_size_tuning.md").read_text()
    assert table.count("| synthetic:1:0 |") == len(ensemble_size.MEMBERS) and "paired_rmse" in table
