from __future__ import annotations

import json
import logging

import pytest
import scvi
from scipy.stats import ConstantInputWarning

from scvi_trvae import demo, model_selection


def test_demo_runs_the_recommended_pipeline_end_to_end(tmp_path, capsys):
    fast = ["--epochs", "2", "--members", "2", "--inner-folds", "1"]
    args = [*fast, "--holdout", "type_B", "--output-dir", str(tmp_path)]
    scores = demo.run(demo._parser().parse_args(args))
    out = capsys.readouterr().out
    recommended = next(name for name in scores if name.startswith("trVAE ensemble + shrink (w="))
    expected = {"trVAE (seed 0)", "trVAE ensemble (2 seeds)", recommended, "control + mean shift", "no response"}
    assert set(scores) == expected
    assert all(f"| {name} |" in out for name in expected)
    assert "Chose w = " in out and "by inner leave-one-cell-type-out on the training cells" in out
    weight, deviation = recommended.removeprefix("trVAE ensemble + shrink (w=").removesuffix(")").split(", lambda=")
    assert 0.0 <= float(weight) <= 1.0 and float(deviation) in model_selection.DEFAULT_DEVIATION_WEIGHTS
    assert (tmp_path / "reg_mean_plot.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert set(saved) == expected
    assert saved["no response"]["edist_scaled"] == 1.0 or abs(saved["no response"]["edist_scaled"] - 1) < 1e-9
    assert scores["no response"]["r2_mean_deg"] < scores["control + mean shift"]["r2_mean_deg"]


def test_demo_data_has_state_dependent_responses_by_default():
    assert demo._parser().parse_args([]).state_dependence == demo.DEMO_STATE_DEPENDENCE > 0


def test_demo_names_a_hold_out_that_does_not_exist(tmp_path):
    with pytest.raises(SystemExit, match="'type_Z'"):
        demo.run(demo._parser().parse_args(["--epochs", "1", "--output-dir", str(tmp_path), "--holdout", "type_Z"]))
    assert not (tmp_path / "scores.json").exists()


def test_demo_command_prints_its_table_without_library_info_or_warnings(tmp_path, capsys, recwarn):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(name) for name in ("scvi", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    verbosity = scvi.settings.verbosity
    for logger in loggers:
        logger.addHandler(handler)
    try:
        demo.main(["--epochs", "2", "--members", "2", "--inner-folds", "1", "--output-dir", str(tmp_path)])
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    assert "| control + mean shift |" in capsys.readouterr().out
    assert not [r for r in records if r.levelno < logging.WARNING], [r.getMessage() for r in records]
    assert not [w for w in recwarn if issubclass(w.category, ConstantInputWarning) or "lightning" in w.filename]
    assert scvi.settings.verbosity == verbosity
    assert [logger.level for logger in loggers] == levels
