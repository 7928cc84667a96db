"""The benchmark's issue-13 methods (``benchmarks/oos/ensembles.py``) on a tiny synthetic split."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from oos import ensembles  # noqa: E402
from oos.datasets import DatasetSpec  # noqa: E402
from oos.methods import METHODS  # noqa: E402
from oos.splits import make_split  # noqa: E402

from scvi_trvae.datasets import synthetic_perturbation  # noqa: E402

NAMES = ["trVAE ensemble", "trVAE ensemble + shrink", "trVAE self-tuned", "trVAE self-tuned ensemble"]


@pytest.fixture
def split():
    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=40, n_response_genes=12, seed=1)
    adata.X = adata.X.astype(np.float32)
    spec = DatasetSpec(
        file="-", control="control", perturbed=("stimulated",), kind="lognorm", n_top_genes=None, description="-"
    )
    return make_split(adata, "synthetic", spec, "type_A", "stimulated", None)


def test_methods_registered_and_consistent(split):
    assert all(name in METHODS for name in NAMES)
    preds = {name: METHODS[name].fit(split, 0, 2) for name in NAMES}
    for pred in preds.values():
        assert pred.shape == (split.control.n_obs, split.control.n_vars) and np.isfinite(pred).all()
    folder = ensembles.split_dir(split, 2)
    assert ensembles.ACCURACY_CACHE not in folder.parents  # fixed-epoch runs stay out of the repository's cache
    members = np.load(folder / "members_default.npy")
    assert members.shape[0] == 3
    np.testing.assert_allclose(preds["trVAE ensemble"], members.mean(0), rtol=1e-6)
    chosen = ensembles.selection(split, 2)
    expected = ensembles.blend(split, members.mean(0), chosen["default_shift_weight"])
    np.testing.assert_allclose(preds["trVAE ensemble + shrink"], expected, rtol=1e-6)
    # the selection saw only the training cells: the held-out type is not one of its inner folds
    assert "type_A" not in chosen["inner_cell_types"]
