from __future__ import annotations

import json
import shutil

import anndata
import numpy as np
import pytest
from scipy.stats import ConstantInputWarning
from typer.testing import CliRunner

from scvi_trvae import TRVAE, TRVAEEnsemble, __version__, model_selection
from scvi_trvae.cli import TRAINING_RECORD, app
from scvi_trvae.datasets import synthetic_perturbation

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.h5ad"
    synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=30, n_response_genes=8, seed=1).write_h5ad(
        path
    )
    return path


@pytest.fixture(scope="module")
def model_dir(data_file):
    out = data_file.parent / "model"
    out.mkdir()  # an existing empty folder is fine
    result = invoke(
        "train", data_file, "--condition-key", "condition", "--holdout-key", "cell_type", "--holdout", "type_A",
        "--holdout-condition", "stimulated", "--max-epochs", "1", "--accelerator", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


HOLD_OUT_A = ["--holdout-key", "cell_type", "--holdout", "type_A", "--holdout-condition", "stimulated"]


@pytest.fixture(scope="module")
def ensemble_dir(data_file):
    """The recommended pipeline from the command line: 2 members, w chosen by inner held-out cell types."""
    out = data_file.parent / "ensemble"
    result = invoke(
        "train", data_file, "--condition-key", "condition", *HOLD_OUT_A, "--members", "2", "--shift-source", "control",
        "--max-epochs", "1", "--accelerator", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_train_excludes_and_records_the_held_out_cells(data_file, model_dir):
    adata = anndata.read_h5ad(data_file)
    expected = adata.obs_names[
        ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    ].tolist()
    record = json.loads((model_dir / TRAINING_RECORD).read_text())
    assert record["holdout"]["cells"] == expected
    assert record["holdout"]["n_cells"] == 30
    assert record["n_training_cells"] == adata.n_obs - 30
    assert record["epochs"] == 1
    # the saved model itself was set up on the training cells only
    model = TRVAE.load(str(model_dir), adata=False)
    assert model.summary_stats["n_cells"] == adata.n_obs - 30


def test_predict_then_evaluate(data_file, model_dir, tmp_path, recwarn):
    pred_path = tmp_path / "pred.h5ad"
    result = invoke(
        "predict", model_dir, data_file, "--source", "control", "--target", "stimulated",
        "--cells-key", "cell_type", "--cells", "type_A", "--n-samples", "2", "--out", pred_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = anndata.read_h5ad(pred_path)
    assert pred.n_obs == 2 * 30  # two draws for each of the 30 control type_A cells
    assert (pred.obs["condition"].astype(str) == "stimulated").all()
    assert np.isfinite(pred.X).all()

    out_dir = tmp_path / "evaluation"
    result = invoke(
        "evaluate", pred_path, data_file, "--condition-key", "condition", "--cells-key", "cell_type",
        "--cells", "type_A", "--control", "control", "--target", "stimulated", "--out-dir", out_dir, "--n-degs", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| trVAE |" in result.output
    assert "| control + mean shift |" in result.output
    scores = json.loads((out_dir / "scores.json").read_text())
    assert set(scores) == {"trVAE", "control + mean shift", "no response"}
    assert scores["trVAE"]["n_pred"] == 60
    assert scores["trVAE"]["n_real"] == 30
    assert 0.0 <= scores["trVAE"]["r2_mean_all"] <= 1.0
    for figure in ("reg_mean.png", "reg_var.png", "top_genes.png"):
        assert (out_dir / figure).stat().st_size > 1000
    assert np.isnan(scores["no response"]["pearson_delta_all"])  # shown as n/a, without SciPy's warning
    assert not [w for w in recwarn if issubclass(w.category, ConstantInputWarning)]


def test_recommended_pipeline_trains_and_predicts_like_the_python_api(data_file, ensemble_dir, tmp_path):
    record = json.loads((ensemble_dir / TRAINING_RECORD).read_text())
    assert record["members"] == 2 and record["holdout"]["n_cells"] == 30
    assert record["shift_weight"] in model_selection.DEFAULT_SHIFT_WEIGHTS
    ensemble = TRVAEEnsemble.load(ensemble_dir)  # saved with its training cells: no AnnData needed
    assert ensemble.shift_weight == record["shift_weight"] and ensemble.adata.n_obs == record["n_training_cells"]

    pred_path = tmp_path / "pred.h5ad"
    result = invoke(
        "predict", ensemble_dir, data_file, "--source", "control", "--target", "stimulated",
        "--cells-key", "cell_type", "--cells", "type_A", "--out", pred_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = anndata.read_h5ad(pred_path)
    adata = anndata.read_h5ad(data_file)
    control_a = np.flatnonzero(
        ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "control")).to_numpy()
    )
    expected = ensemble.predict_perturbation(
        adata, source="control", target="stimulated", indices=control_a, cell_type_key="cell_type"
    )
    np.testing.assert_allclose(pred.X, expected.X, rtol=1e-6)
    assert list(pred.obs_names) == list(adata.obs_names[control_a])
    assert pred.uns["trvae_prediction"]["n_members"] == 2
    assert pred.uns["trvae_prediction"]["shift_weight"] == record["shift_weight"]
    assert (pred.var["trvae_shift_sd"] >= 0).all()


def test_plain_ensemble_predicts_without_cell_types(data_file, tmp_path):
    out = tmp_path / "plain"
    result = invoke(
        "train", data_file, "--condition-key", "condition", *HOLD_OUT_A, "--members", "2", "--max-epochs", "1",
        "--accelerator", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / TRAINING_RECORD).read_text())["shift_weight"] == 1.0
    result = invoke("predict", out, data_file, "--source", "control", "--target", "stimulated", "--out", out / "p.h5ad")
    assert result.exit_code == 0, result.output
    pred = anndata.read_h5ad(out / "p.h5ad")
    assert pred.n_obs == 90 and pred.uns["trvae_prediction"]["seeds"].tolist() == [0, 1]


def test_blending_ensemble_needs_the_cell_types(data_file, ensemble_dir, tmp_path):
    blending = tmp_path / "blending"
    shutil.copytree(ensemble_dir, blending)
    manifest = json.loads((blending / "ensemble.json").read_text())
    (blending / "ensemble.json").write_text(json.dumps({**manifest, "shift_weight": 0.5}))
    result = invoke("predict", blending, data_file, "--source", "control", "--target", "stimulated", "--out", "p.h5ad")
    assert result.exit_code == 1
    assert "w = 0.5" in result.stderr and "--cells-key" in result.stderr


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"scvi-trvae {__version__}"


def test_demo_passes_its_arguments_through():
    result = invoke("demo", "--help")
    assert result.exit_code == 0
    assert "--holdout" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{missing}", "--condition-key", "condition", "--out", "{tmp}/m"], "no such file"),
        (["train", "{data}", "--condition-key", "treatment", "--out", "{tmp}/m"], "'treatment' is not an obs column"),
        (
            ["train", "{data}", "--condition-key", "condition", "--holdout-key", "cell_type", "--holdout", "NK",
             "--holdout-condition", "stimulated", "--out", "{tmp}/m"],
            "unknown cell_type value(s) ['NK']",
        ),
        (["train", "{data}", "--condition-key", "condition", "--holdout", "type_A", "--out", "{tmp}/m"], "go together"),
        (["train", "{data}", "--condition-key", "condition", "--layer", "raw", "--out", "{tmp}/m"], "no layer 'raw'"),
        (["predict", "{tmp}", "{data}", "--source", "control", "--target", "stimulated", "--out", "{tmp}/p.h5ad"],
         "does not hold a saved scvi-trvae model"),
        (["predict", "{tmp}/nowhere", "{data}", "--source", "control", "--target", "x", "--out", "{tmp}/p.h5ad"],
         "no such model folder"),
        (["predict", "{model}", "{data}", "--source", "control", "--target", "drug", "--out", "{tmp}/p.h5ad"],
         "does not know condition 'drug'"),
        (["predict", "{model}", "{data}", "--source", "ctrl", "--target", "stimulated", "--out", "{tmp}/p.h5ad"],
         "unknown condition value(s) ['ctrl']"),
        (["predict", "{model}", "{missing}", "--source", "control", "--target", "stimulated", "--out", "{tmp}/p.h5ad"],
         "no such file"),
        (["train", "{data}", "--condition-key", "condition", "--shift-source", "control", "--out", "{tmp}/m"],
         "--shift-source needs --holdout-key"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--shift-source", "ctrl", "--out", "{tmp}/m"],
         "unknown condition value(s) ['ctrl']"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--shift-source", "control", "--counts",
          "--out", "{tmp}/m"], "cannot be used with counts"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--shift-source", "control",
          "--batch-size", "64", "--out", "{tmp}/m"], "drop --batch-size"),
        (["predict", "{ensemble}", "{data}", "--source", "control", "--target", "stimulated", "--n-samples", "2",
          "--out", "{tmp}/p.h5ad"], "drop --n-samples and --mode"),
        (["evaluate", "{data}", "{data}", "--condition-key", "condition", "--cells-key", "cell_type", "--cells", "NK",
          "--control", "control", "--target", "stimulated"], "unknown cell_type value(s) ['NK']"),
        (["evaluate", "{notanh5ad}", "{data}", "--condition-key", "condition", "--cells-key", "cell_type", "--cells",
          "type_A", "--control", "control", "--target", "stimulated"], "not a readable .h5ad file"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_without_traceback(args, message, data_file, model_dir, ensemble_dir, tmp_path):
    not_h5ad = tmp_path / "notes.h5ad"
    not_h5ad.write_text("not hdf5")
    places = {
        "{missing}": str(tmp_path / "missing.h5ad"), "{data}": str(data_file), "{model}": str(model_dir),
        "{notanh5ad}": str(not_h5ad), "{tmp}": str(tmp_path), "{ensemble}": str(ensemble_dir),
    }  # fmt: skip
    filled = []
    for arg in args:
        for key, value in places.items():
            arg = arg.replace(key, value)
        filled.append(arg)
    result = invoke(*filled)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert message in lines[0]
    assert "Traceback" not in result.output


def test_train_refuses_to_overwrite_a_model(data_file, model_dir):
    result = invoke("train", data_file, "--condition-key", "condition", "--out", model_dir)
    assert result.exit_code == 1
    assert "--overwrite" in result.stderr
