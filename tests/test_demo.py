from __future__ import annotations

import json

import pytest

from scvi_trvae import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    scores = demo.run(
        demo._parser().parse_args(["--epochs", "2", "--output-dir", str(tmp_path), "--holdout", "type_B"])
    )
    out = capsys.readouterr().out
    assert "| trVAE |" in out and "| control + mean shift |" in out and "| no response |" in out
    assert (tmp_path / "reg_mean_plot.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert set(saved) == {"trVAE", "control + mean shift", "no response"}
    assert saved["no response"]["edist_scaled"] == 1.0 or abs(saved["no response"]["edist_scaled"] - 1) < 1e-9
    assert scores["no response"]["r2_mean_deg"] < scores["control + mean shift"]["r2_mean_deg"]


def test_demo_names_a_hold_out_that_does_not_exist(tmp_path):
    with pytest.raises(SystemExit, match="'type_Z'"):
        demo.run(demo._parser().parse_args(["--epochs", "1", "--output-dir", str(tmp_path), "--holdout", "type_Z"]))
    assert not (tmp_path / "scores.json").exists()
