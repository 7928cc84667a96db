from __future__ import annotations

import json
import logging
import math

import pytest
import scvi
from helpers import has_row
from scipy.stats import ConstantInputWarning

from scvi_trvae import TRVAEEnsemble, demo, model_selection

FAST = {"epochs": 2, "members": 2, "inner_folds": 1}


def test_demo_runs_the_recommended_pipeline_end_to_end(tmp_path, capsys, monkeypatch):
    calls = []
    predict = TRVAEEnsemble.predict_perturbation

    def recording(self, *args, **kwargs):
        calls.append(kwargs)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(TRVAEEnsemble, "predict_perturbation", recording)
    scores = demo.run(**FAST, cell_type="type_B", output_dir=tmp_path)
    # the plain ensemble is the members alone (unblended), whatever the pipeline chose
    plain = [call for call in calls if call.get("blend") is False]
    assert len(plain) == 1 and len(calls) == 2
    out = capsys.readouterr().out
    recommended = next(name for name in scores if name.startswith("trVAE ensemble + shrink (w="))
    expected = {"trVAE (seed 0)", "trVAE ensemble (2 seeds)", recommended, "control + mean shift", "no response"}
    assert set(scores) == expected
    assert all(has_row(out, name) for name in expected)
    # what it will do comes first, before any training
    plan = out.index("Data: synthetic")
    assert "Holding out the 150 type_B stimulated cells" in out and "3 model fits" in out
    assert plan < out.index("Chose w = ")
    assert "by inner leave-one-cell-type-out on the training cells" in out
    blend = recommended.removeprefix("trVAE ensemble + shrink (w=").removesuffix(")").removesuffix(", spread scaled")
    weight, deviation = blend.split(", lambda=")
    assert 0.0 <= float(weight) <= 1.0 and float(deviation) in model_selection.DEFAULT_DEVIATION_WEIGHTS
    # after the table: who won, from these scores
    assert demo.verdict(scores, recommended, name="the recommended pipeline") in out
    assert "the recommended pipeline beats" in out or "beats the recommended pipeline" in out
    assert out.index("| no response ") < out.index("In plain words:")
    # synthetic data: each cell's own truth, then who is closer to it
    assert (
        out.index("In plain words:") < out.index("Against each cell's own true response") < out.index("Cell by cell,")
    )
    assert has_row(out, "control + mean shift") and "| paired error " in out
    assert (tmp_path / "reg_mean_plot.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert set(saved) == expected
    assert saved["no response"]["edist_scaled"] == 1.0 or abs(saved["no response"]["edist_scaled"] - 1) < 1e-9
    assert scores["no response"]["r2_mean_deg"] < scores["control + mean shift"]["r2_mean_deg"]
    assert (saved["no response"]["cell_shift_r"], saved["no response"]["spread_ratio"]) == (0.0, 0.0)
    assert 0 < saved["control + mean shift"]["spread_ratio"] < 1  # a constant shift, varied only by the clip at 0
    assert saved[recommended]["paired_rmse"] == scores[recommended]["paired_rmse"] > 0


def test_demo_data_has_state_dependent_responses_by_default():
    import inspect

    assert inspect.signature(demo.run).parameters["state_dependence"].default == demo.DEMO_STATE_DEPENDENCE > 0


def test_demo_names_a_hold_out_that_does_not_exist(tmp_path):
    with pytest.raises(SystemExit, match="'type_Z'"):
        demo.run(epochs=1, output_dir=tmp_path, cell_type="type_Z")
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
        # the earlier option name --holdout still works
        argv = ["--epochs", "2", "--members", "2", "--inner-folds", "1", "--holdout", "type_B", "--output-dir"]
        with pytest.raises(SystemExit) as exited:
            demo.main([*argv, str(tmp_path)])
        assert exited.value.code == 0
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    captured = capsys.readouterr()
    assert has_row(captured.out, "control + mean shift") and "type_B: control -> stimulated" in captured.out
    assert "fit" in captured.err  # the pipeline's progress bar over its fits is not silenced
    assert not [r for r in records if r.levelno < logging.WARNING], [r.getMessage() for r in records]
    assert not [w for w in recwarn if issubclass(w.category, ConstantInputWarning) or "lightning" in w.filename]
    assert scvi.settings.verbosity == verbosity
    assert [logger.level for logger in loggers] == levels


def _scores(ours: tuple[float, float, float], theirs: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    keys = ("r2_mean_deg", "pearson_delta_deg", "edist_scaled")
    return {"trVAE": dict(zip(keys, ours, strict=True)), demo.MEAN_SHIFT: dict(zip(keys, theirs, strict=True))}


def test_verdict_when_the_mean_shift_wins_everywhere():
    said = demo.verdict(_scores((0.80, 0.885, 0.436), (0.90, 0.917, 0.418)), "trVAE")
    assert said.startswith(
        "control + mean shift beats trVAE on r² mean (DEG) 0.900 vs 0.800 and on Δ-Pearson (DEG) 0.917 vs 0.885 "
        "and on E-distance 0.418 vs 0.436"
    )
    assert "trVAE beats" not in said and "a constant shift" in said
    assert demo.verdict(_scores((0.80, 0.885, 0.436), (0.90, 0.917, 0.418)), "trVAE", name="the model").startswith(
        "control + mean shift beats the model on"
    )


def test_verdict_when_the_model_wins_everywhere():
    said = demo.verdict(_scores((0.95, 0.93, 0.20), (0.90, 0.91, 0.30)), "trVAE")
    assert said.startswith("trVAE beats control + mean shift on r² mean (DEG) 0.950 vs 0.900")
    assert "E-distance 0.200 vs 0.300" in said and "control + mean shift beats" not in said
    assert "captures a response" in said


def test_verdict_when_each_wins_somewhere():
    said = demo.verdict(_scores((0.95, 0.93, 0.30), (0.90, 0.91, 0.20)), "trVAE")
    assert (
        "trVAE beats control + mean shift on r² mean (DEG) 0.950 vs 0.900 and on Δ-Pearson (DEG) 0.930 vs 0.910" in said
    )
    assert "control + mean shift beats trVAE on E-distance 0.200 vs 0.300" in said
    assert "neither is better on every metric: trVAE gets the mean expression of the top DEGs and the direction" in said
    assert "control + mean shift the spread of the cells as a whole." in said


def test_verdict_treats_an_undefined_score_as_a_loss():
    said = demo.verdict(_scores((0.95, math.nan, 0.20), (0.90, 0.91, 0.30)), "trVAE")
    assert "control + mean shift beats trVAE on Δ-Pearson (DEG) 0.910 vs n/a" in said
    said = demo.verdict(_scores((0.95, 0.91, 0.20), (math.nan, math.nan, 0.30)), "trVAE")
    assert said.startswith("trVAE beats control + mean shift on r² mean (DEG) 0.950 vs n/a and on Δ-Pearson (DEG)")


def _truth(ours: tuple[float, float, float], theirs: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    keys = ("paired_rmse", "shift_error", "cell_shift_r")
    return {"trVAE": dict(zip(keys, ours, strict=True)), demo.MEAN_SHIFT: dict(zip(keys, theirs, strict=True))}


def test_ground_truth_verdict_names_the_closer_method_cell_by_cell_and_the_mean_that_costs_it():
    said = demo.ground_truth_verdict(_truth((1.381, 0.30, 0.42), (1.412, 0.25, 0.0)), "trVAE", name="the pipeline")
    assert said.startswith(
        "Cell by cell, the pipeline is closer than control + mean shift to each cell's own true response "
        "(paired error 1.381 vs 1.412): its per-cell shifts follow the cells' states (r = 0.420)"
    )
    assert (
        "The pipeline's mean response is further from the true mean response than that of control + mean shift "
        "(0.300 vs 0.250)"
        in said
        and "where it loses them" in said
    )
    said = demo.ground_truth_verdict(_truth((1.5, 0.2, 0.1), (1.4, 0.25, 0.0)), "trVAE")
    assert said.startswith("Cell by cell, control + mean shift is at least as close to each cell's own true response")
    assert "TrVAE's mean response is at least as close" in said and "where it loses" not in said
