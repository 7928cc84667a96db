"""The benchmark's issue-13 methods (``benchmarks/oos/ensembles.py``) on a tiny synthetic split."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import accuracy  # noqa: E402
from oos import ensembles  # noqa: E402
from oos.methods import METHODS  # noqa: E402

from scvi_trvae._blend import blend_prediction  # noqa: E402
from scvi_trvae.baselines import reference_shift, reference_spread  # noqa: E402

NAMES = ["trVAE ensemble", "trVAE ensemble + shrink", "trVAE self-tuned", "trVAE self-tuned ensemble"]


@pytest.fixture
def split():
    return accuracy.quick_split()


def test_methods_registered_and_consistent(split):
    assert all(name in METHODS for name in NAMES)
    preds = {name: METHODS[name].fit(split, 0, 2) for name in NAMES}
    for pred in preds.values():
        assert pred.shape == (split.control.n_obs, split.control.n_vars) and np.isfinite(pred).all()
    folder = ensembles.split_dir(split, 2)
    assert ensembles.ACCURACY_CACHE not in folder.parents  # fixed-epoch runs stay out of the repository's cache
    members = ensembles.default_members(split, 2)  # the members' own predictions, from the cached ensemble
    assert members.shape[0] == 3 and (folder / "members_default.npy").exists()
    np.testing.assert_allclose(preds["trVAE ensemble"], members.mean(0), rtol=1e-6, atol=1e-6)
    chosen = ensembles.selection(split, 2)
    weights = ensembles.default_weights(split, 2)
    assert weights == (
        chosen["default_shift_weight"],
        chosen["default_deviation_weight"],
        chosen["default_reference_shift"],
        chosen["default_spread_scaling"],
    )
    # the row is the package's pipeline: the cached TRVAEEnsemble's own prediction with the chosen weights ...
    ensemble = ensembles.default_ensemble(split, 2)
    assert (folder / "ensemble_default" / "ensemble.json").exists() and ensemble.labels_key == split.cell_type_key
    np.testing.assert_allclose(preds["trVAE ensemble + shrink"], ensembles.predict(split, ensemble, weights), rtol=1e-6)
    # ... which is the blend of the members' mean with the chosen reference shift (and spread) of the other types
    task = {"cell_type_key": split.cell_type_key, "condition_key": split.condition_key,
            "cell_type": split.cell_type, "source": split.source, "target": split.target}  # fmt: skip
    shift = reference_shift(split.train, weights[2], **task)
    spread = reference_spread(split.train, weights[2], **task) if weights[3] else None
    expected = blend_prediction(split.control.X, members.mean(0), shift, *weights[:2], spread=spread)
    np.testing.assert_allclose(preds["trVAE ensemble + shrink"], expected, rtol=1e-5, atol=1e-5)
    # the selection saw only the training cells: the held-out type is not one of its inner folds
    assert "type_A" not in chosen["inner_cell_types"]


def test_uncertainty_spearman_ranks_genes_by_the_error_of_the_mean_shift():
    rng = np.random.default_rng(0)
    observed = rng.random((20, 30))
    spread = np.linspace(0.01, 1.0, 30)  # members disagree more on later genes
    members = observed[None] + rng.normal(0, 1, (3, 1, 1)) * spread
    real = observed + spread * 3.0  # ... and the mean shift misses those more
    rho, (sd, error) = accuracy.uncertainty_spearman(members, observed, real)
    assert rho > 0.99 and sd.shape == error.shape == (30,)


def test_accuracy_quick_mode_scores_every_method_and_the_uncertainty(tmp_path, monkeypatch):
    rows = accuracy.main(["--quick"])
    methods = {row["method"] for row in rows}
    assert {"trVAE ensemble", "trVAE ensemble + shrink", "trVAE self-tuned", "trVAE seed 0"} <= methods
    assert all(np.isfinite(row["edist_scaled"]) for row in rows)
    rho = next(row["uncertainty_spearman"] for row in rows if row["method"] == "trVAE ensemble")
    assert -1.0 <= rho <= 1.0
    folder = ensembles.split_dir(accuracy.quick_split(), 2)
    assert (folder / "uncertainty.json").exists() and (folder / "uncertainty.npz").exists()
    # the reliability figure of a cache holding that split
    monkeypatch.setattr(accuracy, "CACHE", folder.parent.parent)
    accuracy._reliability_figure(tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 1000


def test_cached_fits_are_kept_per_code_version(split, monkeypatch):
    folder = ensembles.split_dir(split)  # the models' own length: the repository's cache
    assert ensembles.ACCURACY_CACHE in folder.parents
    assert folder.name.endswith(f"__code{ensembles.fits_version()}") and len(ensembles.fits_version()) == 12
    monkeypatch.setattr(ensembles, "fits_version", lambda: "other")
    assert ensembles.split_dir(split) != folder  # a selection of other code is never read
