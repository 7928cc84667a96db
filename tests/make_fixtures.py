"""Generate the committed saved-model fixture of ``tests/test_reliability.py``.

Run from the repository root with ``python tests/make_fixtures.py`` (CPU). It trains a tiny TRVAE for
one epoch on the suite's synthetic data, saves it with its AnnData to ``tests/fixtures/saved_model``
and stores the predictions of the saved model next to it. Regenerate only on purpose: the test
checks that models saved by earlier versions keep loading and predicting the same.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import anndata
import numpy as np
import scvi
import torch

import scvi_trvae
from scvi_trvae import TRVAE
from scvi_trvae.datasets import synthetic_perturbation

FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures" / "saved_model"
MODEL_DIR = FIXTURE_DIR / "model"
PREDICTION_FILE = FIXTURE_DIR / "expected_prediction.npy"
#: Outputs of every decoding path of the fixture model (:func:`decode_outputs`), stored exactly: written
#: with the code of commit cb9e7a5, before the counterfactual decode moved into ``TRVAEModule``
#: (issue 20), by ``python tests/make_fixtures.py --decode-only``. ``tests/test_prediction.py`` checks
#: that the refactored code still gives these arrays bit for bit.
DECODE_FILE = FIXTURE_DIR / "expected_decode.npz"
INFO_FILE = FIXTURE_DIR / "info.json"
#: Arguments of the stored prediction, all explicit so that later default changes do not matter.
PREDICTION_KWARGS = {"source": "control", "target": "stimulated", "mode": "counterfactual", "n_samples": 0}
SEED = 0


def tiny_adata() -> anndata.AnnData:
    """48 cells (2 cell types x 2 conditions x 12) x 30 genes; log-normalised X, counts in layers."""
    return synthetic_perturbation(
        n_cell_types=2, n_genes=30, n_cells_per_group=12, n_response_genes=6, n_marker_genes=5, seed=3
    )


def train_tiny_model(adata: anndata.AnnData, max_epochs: int = 1, **train_kwargs) -> TRVAE:
    """A small TRVAE trained on ``adata`` (set up here) with ``scvi.settings.seed = SEED``."""
    scvi.settings.seed = SEED
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, n_hidden=16, n_latent=4)
    train_kwargs.setdefault("batch_size", 16)
    train_kwargs.setdefault("enable_progress_bar", False)
    model.train(max_epochs=max_epochs, accelerator="cpu", **train_kwargs)
    return model


def decode_outputs(model: TRVAE) -> dict[str, np.ndarray]:
    """Predictions and MMD layers of ``model`` through each decoding path (modes, draws, condition override)."""
    pair = {"source": "control", "target": "stimulated"}
    return {
        "counterfactual": model.predict_perturbation(**pair, mode="counterfactual", n_samples=0).X,
        "mean": model.predict_perturbation(**pair, mode="mean", n_samples=0).X,
        "counterfactual_draws": model.predict_perturbation(**pair, mode="counterfactual", n_samples=2, seed=7).X,
        "mmd_layer_stimulated": model.get_mmd_representation(condition="stimulated"),
        "mmd_layer_own": model.get_mmd_representation(),
    }


def write_decode_outputs() -> None:
    """Store :func:`decode_outputs` of the committed fixture model in :data:`DECODE_FILE`."""
    np.savez_compressed(DECODE_FILE, **decode_outputs(TRVAE.load(MODEL_DIR, accelerator="cpu")))


def main() -> None:
    """Write the fixture (replacing an existing one)."""
    if "--decode-only" in sys.argv[1:]:
        write_decode_outputs()
        return
    if FIXTURE_DIR.exists():
        shutil.rmtree(FIXTURE_DIR)
    FIXTURE_DIR.mkdir(parents=True)
    model = train_tiny_model(tiny_adata())
    model.save(MODEL_DIR, save_anndata=True)
    loaded = TRVAE.load(MODEL_DIR, accelerator="cpu")
    prediction = loaded.predict_perturbation(**PREDICTION_KWARGS).X
    np.save(PREDICTION_FILE, prediction)
    info = {
        "generated_by": "python tests/make_fixtures.py",
        "scvi_trvae": scvi_trvae.__version__,
        "scvi_tools": scvi.__version__,
        "torch": torch.__version__,
        "anndata": version("anndata"),
        "python": sys.version.split()[0],
        "prediction_kwargs": PREDICTION_KWARGS,
    }
    INFO_FILE.write_text(json.dumps(info, indent=2) + "\n")
    write_decode_outputs()
    total = sum(path.stat().st_size for path in FIXTURE_DIR.rglob("*") if path.is_file())
    print(f"wrote {FIXTURE_DIR} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
