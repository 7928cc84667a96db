"""The reference-shift benchmark's quick mode fits the pipeline once and scores every blend, then reuses its cache."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reference_shift


@pytest.mark.slow
def test_quick_mode_scores_each_kind_of_shift_and_caches(tmp_path, capsys):
    results = reference_shift.main(["--quick", "--out-dir", str(tmp_path)])
    assert [r["task"] for r in results] == ["synthetic:0"]
    rows = results[0]["rows"]
    for kind in reference_shift.SHIFT_KINDS:
        for what in ("blend at the chosen (w, lambda)", "blend at w = 0.5", "the shift alone"):
            scores = rows[f"{kind}: {what}"]
            assert set(scores) == {"pearson_delta_deg", "edist_scaled"} and scores["edist_scaled"] >= 0
    assert rows["pooled: the shift alone"] == pytest.approx(rows["balanced: the shift alone"])  # equal cells per type
    assert json.loads((tmp_path / "reference_shift_quick.json").read_text()) == results
    assert "ensemble alone" in capsys.readouterr().out
    assert reference_shift.main(["--quick", "--out-dir", str(tmp_path)]) == results  # from the cache
