from __future__ import annotations

from pathlib import Path

import pytest
import scvi
import torch
from make_fixtures import tiny_adata, train_tiny_model

from scvi_trvae.datasets import synthetic_perturbation

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCORER = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "score.py"


# the test models are tiny: one thread is faster than two (no synchronisation) and deterministic
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0
    yield


@pytest.fixture
def small_adata():
    """3 cell types x 2 conditions x 40 cells x 60 genes, log-normalised in X, counts in layers."""
    return synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=40, n_response_genes=12, seed=1)


@pytest.fixture
def three_condition_adata():
    return synthetic_perturbation(
        n_cell_types=2, n_genes=100, conditions=("control", "drug_a", "drug_b"), n_cells_per_group=30,
        n_response_genes=8, seed=2,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_trained_pair():
    """A tiny model (the recipe of the committed fixture) and its registered AnnData; read-only."""
    adata = tiny_adata()
    return train_tiny_model(adata), adata


@pytest.fixture
def tiny_fresh():
    """A new, unregistered AnnData of the committed fixture's recipe."""
    return tiny_adata()
