from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae import TRVAE, TRVAEEnsemble
from scvi_trvae._ensemble import MEMBER_MEANS_VARM, SHIFT_SD_LAYER, SHIFT_SD_VAR
from scvi_trvae.baselines import pooled_shift

TRAIN = {"max_epochs": 2, "batch_size": 32, "enable_progress_bar": False}


def _split(adata):
    held_out = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    control = train[((train.obs["cell_type"] == "type_A") & (train.obs["condition"] == "control")).to_numpy()].copy()
    return train, control


@pytest.fixture
def trained(small_adata):
    train, control = _split(small_adata)
    TRVAE.setup_anndata(train, condition_key="condition")
    return TRVAEEnsemble(train, n_members=2).train(**TRAIN), train, control


def test_prediction_is_mean_of_members_with_spread(trained):
    ensemble, _, control = trained
    pred = ensemble.predict_perturbation(control, source="control", target="stimulated")
    members = np.stack(
        [m.predict_perturbation(control, source="control", target="stimulated").X for m in ensemble.members]
    )
    np.testing.assert_allclose(pred.X, members.mean(0), rtol=1e-6)
    np.testing.assert_allclose(pred.layers[SHIFT_SD_LAYER], members.std(0, ddof=1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pred.var[SHIFT_SD_VAR], members.mean(1).std(0, ddof=1), rtol=1e-5, atol=1e-7)
    assert pred.varm[MEMBER_MEANS_VARM].shape == (control.n_vars, 2)
    assert not np.allclose(members[0], members[1])  # different seeds, different members
    assert (pred.var[SHIFT_SD_VAR] > 0).all()
    assert pred.uns["trvae_prediction"]["seeds"] == [0, 1]
    assert list(pred.obs_names) == list(control.obs_names)
    assert (pred.obs["condition"] == "stimulated").all()


def test_shift_weight_blends_toward_pooled_shift(trained):
    ensemble, train, control = trained
    trvae = ensemble.predict_perturbation(control, source="control", target="stimulated")
    zero = ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.0,
                                         cell_type_key="cell_type")  # fmt: skip
    half = ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.5,
                                         cell_type_key="cell_type")  # fmt: skip
    shift = pooled_shift(train, cell_type_key="cell_type", condition_key="condition", exclude=["type_A"],
                         source="control", target="stimulated")  # fmt: skip
    observed = np.asarray(control.X.toarray() if hasattr(control.X, "toarray") else control.X)
    np.testing.assert_allclose(zero.X, np.clip(observed + shift, 0, None), rtol=1e-5, atol=1e-6)
    expected_half = np.clip(observed + 0.5 * (trvae.X - observed) + 0.5 * shift, 0, None)
    np.testing.assert_allclose(half.X, expected_half, rtol=1e-5, atol=1e-6)
    assert half.uns["trvae_prediction"]["shift_weight"] == 0.5
    with pytest.raises(ValueError, match="cell_type_key"):
        ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=1.5)


def test_save_load_round_trip(trained, tmp_path):
    ensemble, train, control = trained
    ensemble.shift_weight = 0.75
    ensemble.save(tmp_path / "ens")
    with pytest.raises(ValueError, match="overwrite"):
        ensemble.save(tmp_path / "ens")
    loaded = TRVAEEnsemble.load(tmp_path / "ens", adata=train)
    assert loaded.seeds == [0, 1] and loaded.shift_weight == 0.75
    kwargs = {"source": "control", "target": "stimulated", "cell_type_key": "cell_type"}
    np.testing.assert_array_equal(
        loaded.predict_perturbation(control, **kwargs).X, ensemble.predict_perturbation(control, **kwargs).X
    )
    with pytest.raises(FileNotFoundError, match=r"ensemble\.json"):
        TRVAEEnsemble.load(tmp_path, adata=train)


def test_bad_input(small_adata):
    with pytest.raises(ValueError, match="setup_anndata"):
        TRVAEEnsemble(small_adata.copy())
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    with pytest.raises(ValueError, match="distinct"):
        TRVAEEnsemble(small_adata, seeds=[1, 1])
    untrained = TRVAEEnsemble(small_adata, n_members=2)
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.predict_perturbation(source="control", target="stimulated")
    with pytest.raises(ValueError, match="n_jobs"):
        untrained.train(n_jobs=0)


def test_user_anndata_unchanged(trained):
    ensemble, _, control = trained
    before = control.copy()
    ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.5,
                                  cell_type_key="cell_type")  # fmt: skip
    np.testing.assert_array_equal(control.X, before.X)
    assert list(control.obs.columns) == list(before.obs.columns)
    assert list(control.layers) == list(before.layers)


@pytest.mark.slow  # a process pool
def test_parallel_members_equal_sequential(small_adata):
    train, control = _split(small_adata)
    TRVAE.setup_anndata(train, condition_key="condition")
    sequential = TRVAEEnsemble(train, n_members=2).train(threads_per_job=1, **TRAIN)
    parallel = TRVAEEnsemble(train, n_members=2).train(n_jobs=2, **TRAIN)
    kwargs = {"source": "control", "target": "stimulated"}
    np.testing.assert_allclose(
        parallel.predict_perturbation(control, **kwargs).X, sequential.predict_perturbation(control, **kwargs).X,
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip
