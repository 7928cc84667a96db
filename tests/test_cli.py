from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest
from helpers import has_row
from scipy.stats import ConstantInputWarning
from typer.testing import CliRunner

from scvi_trvae import TRVAE, TRVAEEnsemble, __version__, model_selection
from scvi_trvae.cli import TRAINING_RECORD, app
from scvi_trvae.cli._support import OutputExistsError, staged_output
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.demo import verdict

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
        "train", data_file, "--condition-key", "condition", "--cell-type-key", "cell_type", "--cell-type", "type_A",
        "--target", "stimulated", "--max-epochs", "1", "--accelerator", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


HOLD_OUT_A = ["--cell-type-key", "cell_type", "--cell-type", "type_A", "--target", "stimulated"]


@pytest.fixture(scope="module")
def ensemble_dir(data_file):
    """The recommended pipeline from the command line: 2 members, w chosen by inner held-out cell types."""
    out = data_file.parent / "ensemble"
    result = invoke(
        "train", data_file, "--condition-key", "condition", *HOLD_OUT_A, "--members", "2", "--source", "control",
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
        "--cell-type-key", "cell_type", "--cell-type", "type_A", "--n-samples", "2", "--out", pred_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = anndata.read_h5ad(pred_path)
    assert pred.n_obs == 2 * 30  # two draws for each of the 30 control type_A cells
    assert (pred.obs["condition"].astype(str) == "stimulated").all()
    assert np.isfinite(pred.X).all()

    out_dir = tmp_path / "evaluation"
    result = invoke(
        "evaluate", pred_path, data_file, "--condition-key", "condition", "--cell-type-key", "cell_type",
        "--cell-type", "type_A", "--source", "control", "--target", "stimulated", "--out-dir", out_dir,
        "--n-degs", "10",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert has_row(result.output, "trVAE")
    assert has_row(result.output, "control + mean shift")
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
        "--cell-type-key", "cell_type", "--cell-type", "type_A", "--out", pred_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    pred = anndata.read_h5ad(pred_path)
    adata = anndata.read_h5ad(data_file)
    control_a = np.flatnonzero(
        ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "control")).to_numpy()
    )
    assert ensemble.labels_key == "cell_type"  # the saved ensemble knows its cell types
    expected = ensemble.predict_perturbation(adata, source="control", target="stimulated", indices=control_a)
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
    assert "w = 0.5" in result.stderr and "--cell-type-key" in result.stderr


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"scvi-trvae {__version__}"


def test_demo_passes_its_arguments_through():
    result = invoke("demo", "--help")
    assert result.exit_code == 0
    assert "--cell-type" in result.output and "--holdout" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "{missing}", "--condition-key", "condition", "--out", "{tmp}/m"], "no such file"),
        (["train", "{data}", "--condition-key", "treatment", "--out", "{tmp}/m"], "'treatment' is not an obs column"),
        (
            ["train", "{data}", "--condition-key", "condition", "--cell-type-key", "cell_type", "--cell-type", "NK",
             "--target", "stimulated", "--out", "{tmp}/m"],
            "unknown cell_type value(s) ['NK']",
        ),
        (["train", "{data}", "--condition-key", "condition", "--cell-type", "type_A", "--out", "{tmp}/m"],
         "go together"),
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
        (["train", "{data}", "--condition-key", "condition", "--source", "control", "--out", "{tmp}/m"],
         "--source needs --cell-type-key"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--source", "ctrl", "--out", "{tmp}/m"],
         "unknown condition value(s) ['ctrl']"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--source", "control", "--counts",
          "--out", "{tmp}/m"], "cannot be used with counts"),
        (["train", "{data}", "--condition-key", "condition", *HOLD_OUT_A, "--source", "control",
          "--batch-size", "64", "--out", "{tmp}/m"], "drop --batch-size"),
        (["predict", "{ensemble}", "{data}", "--source", "control", "--target", "stimulated", "--n-samples", "2",
          "--out", "{tmp}/p.h5ad"], "drop --n-samples and --mode"),
        (["evaluate", "{data}", "{data}", "--condition-key", "condition", "--cell-type-key", "cell_type",
          "--cell-type", "NK", "--source", "control", "--target", "stimulated"], "unknown cell_type value(s) ['NK']"),
        (["evaluate", "{notanh5ad}", "{data}", "--condition-key", "condition", "--cell-type-key", "cell_type",
          "--cell-type", "type_A", "--source", "control", "--target", "stimulated"], "not a readable .h5ad file"),
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


# ------------------------------------------------------------------------------------------- start-up and vocabulary
def test_the_command_line_starts_without_the_heavy_stack():
    code = "import scvi_trvae.cli, sys; print('torch' in sys.modules, 'scvi' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    code = "import scvi_trvae, sys; scvi_trvae.__version__; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_the_package_imports_its_public_names_on_first_access():
    import scvi_trvae

    assert set(scvi_trvae.__all__) <= set(dir(scvi_trvae))
    assert scvi_trvae.TRVAE is TRVAE and scvi_trvae.metrics.__name__ == "scvi_trvae.metrics"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        scvi_trvae.nothing  # noqa: B018


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "demo"])
def test_help_shows_one_vocabulary(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "--cell-type-key" in result.output
    for old in ("--holdout-key", "--holdout ", "--holdout-condition", "--shift-source", "--cells", "--control"):
        assert old not in result.output


def test_earlier_option_names_still_work(data_file, model_dir, tmp_path):
    new = tmp_path / "new.h5ad"
    old = tmp_path / "old.h5ad"
    common = ["predict", model_dir, data_file, "--source", "control", "--target", "stimulated", "--n-samples", "1"]
    assert invoke(*common, "--cell-type-key", "cell_type", "--cell-type", "type_A", "--out", new).exit_code == 0
    result = invoke(*common, "--cells-key", "cell_type", "--cells=type_A", "--out", old)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(anndata.read_h5ad(new).X, anndata.read_h5ad(old).X)

    scores = {}
    for name, names in {
        "new": ("--cell-type-key", "--cell-type", "--source"),
        "old": ("--cells-key", "--cells", "--control"),
    }.items():
        result = invoke(
            "evaluate", new, data_file, "--condition-key", "condition", names[0], "cell_type", names[1], "type_A",
            names[2], "control", "--target", "stimulated", "--n-degs", "10", "--out-dir", tmp_path / name,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        scores[name] = json.loads((tmp_path / name / "scores.json").read_text())
    assert scores["new"] == scores["old"]


def test_earlier_option_names_train_the_same_model(data_file, model_dir, tmp_path):
    out = tmp_path / "old_names"
    result = invoke(
        "train", data_file, "--condition-key", "condition", "--holdout-key", "cell_type", "--holdout", "type_A",
        "--holdout-condition", "stimulated", "--max-epochs", "1", "--accelerator", "cpu", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    old, new = (json.loads((d / TRAINING_RECORD).read_text()) for d in (out, model_dir))
    assert old["holdout"] == new["holdout"] and old["n_training_cells"] == new["n_training_cells"]
    old_weights, new_weights = (TRVAE.load(str(d), adata=False).module.state_dict() for d in (out, model_dir))
    for name, value in new_weights.items():
        np.testing.assert_allclose(old_weights[name].numpy(), value.numpy(), atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------------------------- genes
def test_predict_names_the_missing_genes_in_command_line_terms(data_file, model_dir, tmp_path):
    adata = anndata.read_h5ad(data_file)
    fewer = tmp_path / "fewer.h5ad"
    adata[:, 5:].copy().write_h5ad(fewer)
    result = invoke("predict", model_dir, fewer, "--source", "control", "--target", "stimulated", "--out", "p.h5ad")
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert f"lacks 5 of the model's {adata.n_vars} genes" in message
    assert ", ".join(adata.var_names[:3]) in message
    assert "DATA must hold every gene the model was trained on" in message and str(data_file.resolve()) in message
    assert "adata[" not in message and "var_names" not in message


def test_predict_takes_the_model_genes_from_a_file_with_more_genes_in_another_order(data_file, model_dir, tmp_path):
    adata = anndata.read_h5ad(data_file)
    shuffled = adata[:, ::-1].copy()
    shuffled.var_names = shuffled.var_names.astype(str)
    extra = anndata.AnnData(np.ones((adata.n_obs, 2), dtype=np.float32), obs=adata.obs)
    extra.var_names = ["extra_1", "extra_2"]
    wider = anndata.concat([shuffled, extra], axis=1, merge="first")
    wider.write_h5ad(tmp_path / "wider.h5ad")
    args = ["--source", "control", "--target", "stimulated"]
    assert invoke("predict", model_dir, data_file, *args, "--out", tmp_path / "a.h5ad").exit_code == 0
    result = invoke("predict", model_dir, tmp_path / "wider.h5ad", *args, "--out", tmp_path / "b.h5ad")
    assert result.exit_code == 0, result.output
    a, b = anndata.read_h5ad(tmp_path / "a.h5ad"), anndata.read_h5ad(tmp_path / "b.h5ad")
    assert list(b.var_names) == list(a.var_names)
    np.testing.assert_allclose(b.X, a.X, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------- outputs
def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_outputs_are_kept_without_overwrite(data_file, model_dir, tmp_path):
    pred = tmp_path / "p.h5ad"
    pred.write_text("earlier prediction")
    args = ["predict", model_dir, data_file, "--source", "control", "--target", "stimulated", "--out", pred]
    result = invoke(*args)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {pred} already exists; pass --overwrite to replace it"
    assert pred.read_text() == "earlier prediction"
    assert invoke(*args, "--overwrite").exit_code == 0
    assert anndata.read_h5ad(pred).n_obs == 90

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "notes.txt").write_text("mine")
    result = invoke(
        "evaluate", pred, data_file, "--condition-key", "condition", "--cell-type-key", "cell_type", "--cell-type",
        "type_A", "--source", "control", "--target", "stimulated", "--out-dir", evaluation,
    )  # fmt: skip
    assert result.exit_code == 1 and f"{evaluation} already exists" in result.stderr and "--overwrite" in result.stderr
    assert _tree(evaluation) == {Path("notes.txt"): b"mine"}
    assert not list(tmp_path.glob(".*writing-*"))


@pytest.mark.parametrize("where", ["training", "saving"])
def test_an_interrupted_train_leaves_no_half_written_model(data_file, model_dir, tmp_path, monkeypatch, where):
    def interrupted_train(self, *args, **kwargs):
        raise RuntimeError("interrupted")

    def interrupted_save(self, dir_path, **kwargs):
        Path(dir_path, "model.pt").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(TRVAE, "train" if where == "training" else "save", interrupted_train
                        if where == "training" else interrupted_save)  # fmt: skip
    fresh = tmp_path / "fresh"
    train = ["train", data_file, "--condition-key", "condition", "--max-epochs", "1", "--accelerator", "cpu"]
    result = invoke(*train, "--out", fresh)
    assert result.exit_code != 0
    assert not fresh.exists()
    kept = tmp_path / "kept"
    shutil.copytree(model_dir, kept)
    before = _tree(kept)
    result = invoke(*train, "--out", kept, "--overwrite")
    assert result.exit_code != 0
    assert _tree(kept) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]  # no temporary folder left behind


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_writers_of_one_output_never_mix_their_files(tmp_path, overwrite):
    out = tmp_path / "model"
    writers = [staged_output(out, overwrite=overwrite, directory=True) for _ in range(2)]
    first, second = (writer.__enter__() for writer in writers)  # both start while out is free
    (first / "a.txt").write_text("first")
    (second / "b.txt").write_text("second")
    writers[0].__exit__(None, None, None)
    if overwrite:  # the last writer wins, whole
        writers[1].__exit__(None, None, None)
        assert _tree(out) == {Path("b.txt"): b"second"}
    else:  # the later writer fails without touching the earlier output
        with pytest.raises(OutputExistsError, match="another run"):
            writers[1].__exit__(None, None, None)
        assert _tree(out) == {Path("a.txt"): b"first"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_an_overwriting_writer_replaces_the_output_whole(tmp_path):
    out = tmp_path / "evaluation"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_output(out, overwrite=True, directory=True) as staging:
        (staging / "new.txt").write_text("new")
    assert _tree(out) == {Path("new.txt"): b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation"]


def test_evaluate_says_who_won(data_file, model_dir, tmp_path):
    pred = tmp_path / "p.h5ad"
    args = ["--source", "control", "--target", "stimulated"]
    assert invoke("predict", model_dir, data_file, *args, "--cell-type-key", "cell_type", "--cell-type", "type_A",
                  "--out", pred).exit_code == 0  # fmt: skip
    result = invoke("evaluate", pred, data_file, "--condition-key", "condition", "--cell-type-key", "cell_type",
                    "--cell-type", "type_A", *args, "--n-degs", "10", "--out-dir", tmp_path / "e")  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert verdict(scores, "trVAE") in result.output
