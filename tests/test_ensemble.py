from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import scvi
import torch
from crafted_models import malicious_model_dir, truncated_copy
from make_fixtures import tiny_adata

from scvi_trvae import TRVAE, ModelFileError, TRVAEEnsemble, UnsafeModelFileError, baselines
from scvi_trvae._ensemble import MEMBER_MEANS_VARM, SHIFT_SD_LAYER, SHIFT_SD_VAR
from scvi_trvae.baselines import pooled_shift

KEYS = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}

TRAIN = {"max_epochs": 2, "batch_size": 32, "enable_progress_bar": False}


def _split(adata):
    held_out = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    control = train[((train.obs["cell_type"] == "type_A") & (train.obs["condition"] == "control")).to_numpy()].copy()
    return train, control


def _trained(adata, **kwargs):
    ensemble = TRVAEEnsemble(adata, n_members=2, **kwargs)
    assert ensemble.train(**TRAIN) is None  # as scvi-tools' train
    return ensemble


@pytest.fixture
def trained(small_adata):
    train, control = _split(small_adata)
    TRVAE.setup_anndata(train, condition_key="condition")
    return _trained(train, labels_key="cell_type"), train, control


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
    predict = {"source": "control", "target": "stimulated"}
    trvae = ensemble.predict_perturbation(control, source="control", target="stimulated")
    shift = pooled_shift(train, cell_type_key="cell_type", condition_key="condition", exclude=["type_A"],
                         source="control", target="stimulated")  # fmt: skip
    observed = np.asarray(control.X.toarray() if hasattr(control.X, "toarray") else control.X)
    # w = lambda = 0: the pooled shift alone; w = lambda: the older blend that shrank each cell with the mean
    zero = ensemble.predict_perturbation(control, shift_weight=0.0, deviation_weight=0.0, **predict)
    np.testing.assert_allclose(zero.X, np.clip(observed + shift, 0, None), rtol=1e-5, atol=1e-6)
    half = ensemble.predict_perturbation(control, shift_weight=0.5, deviation_weight=0.5, **predict)
    expected_half = np.clip(observed + 0.5 * (trvae.X - observed) + 0.5 * shift, 0, None)
    np.testing.assert_allclose(half.X, expected_half, rtol=1e-5, atol=1e-6)
    assert half.uns["trvae_prediction"]["shift_weight"] == 0.5
    assert half.uns["trvae_prediction"]["deviation_weight"] == 0.5
    # by default each cell keeps its whole deviation from the members' mean response
    pooled_mean = ensemble.predict_perturbation(control, shift_weight=0.0, **predict)
    response = trvae.X - observed
    expected = np.clip(observed + shift + (response - response.mean(0)), 0, None)
    np.testing.assert_allclose(pooled_mean.X, expected, rtol=1e-5, atol=1e-5)
    ensemble.labels_key = None
    with pytest.raises(ValueError, match="labels_key"):
        ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.5)
    with pytest.raises(ValueError, match="labels_key"):
        ensemble.predict_perturbation(control, source="control", target="stimulated", deviation_weight=0.5)
    # the older spelling: the cell types named at prediction time, with a FutureWarning
    with pytest.warns(FutureWarning, match="labels_key"):
        old = ensemble.predict_perturbation(control, shift_weight=0.5, deviation_weight=0.5, cell_type_key="cell_type",
                                            **predict)  # fmt: skip
    np.testing.assert_array_equal(old.X, half.X)
    with pytest.raises(ValueError, match="between 0 and 1"):
        ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=1.5)
    with pytest.raises(ValueError, match="deviation_weight must be finite and >= 0"):
        ensemble.predict_perturbation(control, deviation_weight=-1.0, **predict)


def test_reference_shift_kind_blends_each_predicted_type_with_its_own_shift(trained, tmp_path):
    ensemble, train, control = trained
    predict = {"source": "control", "target": "stimulated", "shift_weight": 0.0, "deviation_weight": 0.0}
    observed = np.asarray(control.X.toarray() if hasattr(control.X, "toarray") else control.X)
    for kind in baselines.REFERENCE_SHIFTS:
        pred = ensemble.predict_perturbation(control, reference_shift=kind, **predict)
        shift = baselines.reference_shift(train, kind, cell_type="type_A", **KEYS)
        np.testing.assert_allclose(pred.X, np.clip(observed + shift, 0, None), rtol=1e-5, atol=1e-6)
        assert pred.uns["trvae_prediction"]["reference_shift"] == kind
    # the ensemble's default kind is used, saved and loaded
    ensemble.reference_shift = "similarity"
    try:
        default = ensemble.predict_perturbation(control, **predict)
        ensemble.save(tmp_path / "ens")
    finally:
        ensemble.reference_shift = "pooled"
    loaded = TRVAEEnsemble.load(tmp_path / "ens", adata=train)
    assert loaded.reference_shift == "similarity"
    np.testing.assert_array_equal(loaded.predict_perturbation(control, **predict).X, default.X)
    with pytest.raises(ValueError, match="reference_shift must be one of"):
        ensemble.predict_perturbation(control, reference_shift="nearest", **predict)
    with pytest.raises(ValueError, match="reference_shift must be one of"):
        TRVAEEnsemble(train, reference_shift="nearest")


def test_spread_scaling_widens_each_types_observed_cells_by_the_other_types_spread(trained, tmp_path):
    ensemble, train, control = trained
    predict = {"source": "control", "target": "stimulated", "shift_weight": 0.5, "deviation_weight": 1.0}
    observed = np.asarray(control.X.toarray() if hasattr(control.X, "toarray") else control.X, dtype=np.float64)
    plain = ensemble.predict_perturbation(control, reference_shift="balanced", **predict)
    scaled = ensemble.predict_perturbation(control, reference_shift="balanced", spread_scaling=True, **predict)
    spread = baselines.reference_spread(train, "balanced", cell_type="type_A", **KEYS)
    unclipped = plain.X > 0
    expected = plain.X + (spread - 1.0) * (observed - observed.mean(0))
    np.testing.assert_allclose(scaled.X[unclipped], np.clip(expected, 0, None)[unclipped], rtol=1e-4, atol=1e-5)
    assert scaled.uns["trvae_prediction"]["spread_scaling"] and not plain.uns["trvae_prediction"]["spread_scaling"]
    # even w = lambda = 1 is blended when the spread is scaled
    alone = ensemble.predict_perturbation(control, source="control", target="stimulated")
    widened = ensemble.predict_perturbation(control, source="control", target="stimulated", spread_scaling=True)
    assert not np.allclose(alone.X, widened.X)
    # the ensemble's default is used, saved and loaded
    ensemble.spread_scaling = True
    try:
        ensemble.save(tmp_path / "ens")
    finally:
        ensemble.spread_scaling = False
    loaded = TRVAEEnsemble.load(tmp_path / "ens", adata=train)
    assert loaded.spread_scaling is True
    np.testing.assert_array_equal(loaded.predict_perturbation(control, source="control", target="stimulated").X,
                                  widened.X)  # fmt: skip
    with pytest.raises(ValueError, match="spread_scaling must be True or False"):
        TRVAEEnsemble(train, spread_scaling="yes")
    ensemble.labels_key = None
    try:
        with pytest.raises(ValueError, match="spread_scaling needs the cell types"):
            ensemble.predict_perturbation(control, source="control", target="stimulated", spread_scaling=True)
    finally:
        ensemble.labels_key = "cell_type"


def test_blend_false_predicts_the_members_alone_whatever_the_ensembles_blend(trained):
    ensemble, _, control = trained
    predict = {"source": "control", "target": "stimulated"}
    members = np.stack([m.predict_perturbation(control, **predict).X for m in ensemble.members]).mean(0)
    ensemble.shift_weight, ensemble.deviation_weight, ensemble.spread_scaling = 0.25, 0.5, True
    try:
        blended = ensemble.predict_perturbation(control, **predict)
        alone = ensemble.predict_perturbation(control, **predict, blend=False)
    finally:
        ensemble.shift_weight, ensemble.deviation_weight, ensemble.spread_scaling = 1.0, 1.0, False
    assert not np.allclose(blended.X, members)
    np.testing.assert_allclose(alone.X, members, rtol=1e-6)
    info = alone.uns["trvae_prediction"]
    assert (info["shift_weight"], info["deviation_weight"], info["spread_scaling"]) == (1.0, 1.0, False)
    for given in (
        {"shift_weight": 0.5},
        {"spread_scaling": False},
        {"deviation_weight": 1.0, "reference_shift": "pooled"},
    ):
        with pytest.raises(
            ValueError, match=f"blend=False predicts the ensemble unblended: do not pass .*{next(iter(given))}"
        ):
            ensemble.predict_perturbation(control, **predict, blend=False, **given)


def test_an_ensemble_saved_before_deviation_weight_keeps_its_blend(trained, tmp_path):
    ensemble, train, _ = trained
    ensemble.shift_weight = 0.25
    try:
        ensemble.save(tmp_path / "ens")
    finally:
        ensemble.shift_weight = 1.0
    manifest_path = tmp_path / "ens" / "ensemble.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["deviation_weight"] == 1.0 and manifest["labels_key"] == "cell_type"
    for key in ("deviation_weight", "labels_key", "reference_shift", "spread_scaling"):  # as version 0.1 wrote it
        del manifest[key]
    manifest_path.write_text(json.dumps(manifest))
    loaded = TRVAEEnsemble.load(tmp_path / "ens", adata=train)
    assert (loaded.shift_weight, loaded.deviation_weight) == (0.25, 0.25)
    assert loaded.labels_key is None and loaded.reference_shift == "pooled" and loaded.spread_scaling is False


def test_members_share_the_one_training_anndata(trained):
    ensemble, train, _ = trained
    assert all(member.adata is train for member in ensemble.members)  # no copy per member
    assert ensemble.adata is train


def test_labels_key_must_be_a_column(small_adata):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    with pytest.raises(KeyError, match="not_a_column"):
        TRVAEEnsemble(small_adata, labels_key="not_a_column")


def test_save_load_round_trip(trained, tmp_path):
    ensemble, train, control = trained
    ensemble.shift_weight = 0.75
    ensemble.save(tmp_path / "ens")
    with pytest.raises(ValueError, match="overwrite"):
        ensemble.save(tmp_path / "ens")
    loaded = TRVAEEnsemble.load(tmp_path / "ens", adata=train)
    assert loaded.seeds == [0, 1] and loaded.shift_weight == 0.75
    assert loaded.labels_key == "cell_type"
    kwargs = {"source": "control", "target": "stimulated"}
    np.testing.assert_array_equal(
        loaded.predict_perturbation(control, **kwargs).X, ensemble.predict_perturbation(control, **kwargs).X
    )
    assert loaded.members[1].adata is loaded.members[0].adata is loaded.adata  # one AnnData for all members
    with pytest.raises(ModelFileError, match=r"ensemble\.json"):
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
    ensemble.predict_perturbation(control, source="control", target="stimulated", shift_weight=0.5)
    np.testing.assert_array_equal(control.X, before.X)
    assert list(control.obs.columns) == list(before.obs.columns)
    assert list(control.layers) == list(before.layers)


@pytest.mark.slow  # a process pool
def test_parallel_members_equal_sequential(small_adata):
    train, control = _split(small_adata)
    TRVAE.setup_anndata(train, condition_key="condition")
    sequential, parallel = TRVAEEnsemble(train, n_members=2), TRVAEEnsemble(train, n_members=2)
    sequential.train(threads_per_job=1, **TRAIN)
    parallel.train(n_jobs=2, **TRAIN)
    kwargs = {"source": "control", "target": "stimulated"}
    np.testing.assert_allclose(
        parallel.predict_perturbation(control, **kwargs).X, sequential.predict_perturbation(control, **kwargs).X,
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


def test_members_are_seeded_without_touching_the_callers_seed_or_random_state(small_adata):
    train, control = _split(small_adata)
    TRVAE.setup_anndata(train, condition_key="condition")
    scvi.settings.seed = 123
    state = torch.get_rng_state()
    first = _trained(train)
    assert scvi.settings.seed == 123
    assert torch.equal(torch.get_rng_state(), state)
    second = _trained(train)
    kwargs = {"source": "control", "target": "stimulated"}
    members = [[m.predict_perturbation(control, **kwargs).X for m in e.members] for e in (first, second)]
    np.testing.assert_array_equal(members[0][0], members[1][0])  # same seeds, same members
    np.testing.assert_array_equal(members[0][1], members[1][1])
    assert not np.allclose(members[0][0], members[0][1])  # different seeds, different members


# ---------------------------------------------------------------------------------------------- saved ensembles
@pytest.fixture(scope="module")
def saved_ensemble(tmp_path_factory):
    """A tiny 2-member ensemble saved with its AnnData (read-only), and that AnnData."""
    adata = tiny_adata()
    TRVAE.setup_anndata(adata, condition_key="condition")
    ensemble = TRVAEEnsemble(adata, n_members=2, n_hidden=16, n_latent=4)
    ensemble.train(max_epochs=1, batch_size=16, enable_progress_bar=False, accelerator="cpu")
    directory = tmp_path_factory.mktemp("ensemble") / "ens"
    ensemble.save(directory, save_anndata=True)
    return directory, adata


def _edit_manifest(directory, **changes):
    path = directory / "ensemble.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _replace_member_1(directory, make, *args):
    """Replace member_1 by ``make(member_0, member_1, *args)`` (a crafted or truncated copy of member_0)."""
    shutil.rmtree(directory / "member_1")
    make(directory / "member_0", directory / "member_1", *args)


DAMAGED = [
    pytest.param(lambda d, m: shutil.rmtree(d / "member_1"), "{dir} does not match its ensemble.json: it lists 2 "
                 "members (seeds [0, 1]) but the directory holds member_0 (member_1 missing)", id="missing member"),
    pytest.param(lambda d, m: _replace_member_1(d, truncated_copy, 0.5),
                 "Member 1 of the ensemble in {dir} cannot be loaded: {dir}/member_1/model.pt is not a complete "
                 "model file", id="truncated member"),
    pytest.param(lambda d, m: (d / "ensemble.json").write_text("seeds: lots"),
                 "{dir}/ensemble.json is not valid JSON", id="settings not JSON"),
    pytest.param(lambda d, m: _edit_manifest(d, seeds=[0, 1, 2]),
                 "it lists 3 members (seeds [0, 1, 2]) but the directory holds member_0, member_1 (member_2 missing)",
                 id="settings list more members"),
    pytest.param(lambda d, m: _edit_manifest(d, seeds=[0]),
                 "it lists 1 members (seeds [0]) but the directory holds member_0, member_1 (also member_1, which it "
                 "does not list)", id="settings list fewer members"),
    pytest.param(lambda d, m: _edit_manifest(d, seeds="0,1", shift_weight=3),
                 "{dir}/ensemble.json is damaged or was edited: 'seeds' must be a list of one or more integers, got "
                 "'0,1'; 'shift_weight' must be a number between 0 and 1, got 3.", id="settings of wrong types"),
    pytest.param(lambda d, m: _edit_manifest(d, reference_shift="nearest"),
                 "{dir}/ensemble.json is damaged or was edited: 'reference_shift' must be one of ['pooled', "
                 "'balanced', 'similarity'], got 'nearest'.", id="unknown reference shift"),
    pytest.param(lambda d, m: _edit_manifest(d, spread_scaling="yes"),
                 "{dir}/ensemble.json is damaged or was edited: 'spread_scaling' must be true or false, got 'yes'.",
                 id="spread scaling not a bool"),
    pytest.param(lambda d, m: (d / "ensemble.json").unlink(),
                 "{dir} holds ensemble members (member_0, member_1) but no ensemble.json", id="settings missing"),
    pytest.param(lambda d, m: _replace_member_1(d, malicious_model_dir, m),
                 "Member 1 of the ensemble in {dir} cannot be loaded: Refusing to load {dir}/member_1/model.pt",
                 id="crafted member"),
]  # fmt: skip


@pytest.mark.parametrize(("damage", "message"), DAMAGED)
def test_damaged_ensemble_gets_one_clear_error_and_runs_nothing(saved_ensemble, tmp_path, damage, message):
    saved, _ = saved_ensemble
    directory = shutil.copytree(saved, tmp_path / "copy" / "ens")
    marker = tmp_path / "marker"
    damage(directory, marker)
    expected = UnsafeModelFileError if "Refusing" in message else ModelFileError
    with pytest.raises(expected, match=re.escape(message.format(dir=directory))):
        TRVAEEnsemble.load(directory)
    assert not marker.exists()


def _ensemble_prediction(ensemble, adata):
    return ensemble.predict_perturbation(adata, source="control", target="stimulated").X


def test_failed_save_leaves_the_previous_ensemble_loadable(saved_ensemble, tmp_path, monkeypatch):
    saved, adata = saved_ensemble
    target = shutil.copytree(saved, tmp_path / "ens")
    expected = _ensemble_prediction(TRVAEEnsemble.load(target), adata)
    other = TRVAEEnsemble.load(target)
    with torch.no_grad():
        next(other.members[0].module.parameters()).add_(1.0)  # a different first member
    real_save, calls = torch.save, []

    def disk_full_at_second_member(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_at_second_member)
    with pytest.raises(OSError, match="No space left"):
        other.save(target, overwrite=True, save_anndata=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(_ensemble_prediction(TRVAEEnsemble.load(target), adata), expected)
    assert sorted(os.listdir(tmp_path)) == ["ens"]  # no temporary directory left behind


def test_overwrite_with_fewer_members_keeps_other_files(saved_ensemble, tmp_path):
    saved, adata = saved_ensemble
    target = shutil.copytree(saved, tmp_path / "ens")
    (target / "notes.txt").write_text("mine")
    smaller = TRVAEEnsemble.load(target)
    smaller.seeds, smaller.members = smaller.seeds[:1], smaller.members[:1]
    smaller.save(target, overwrite=True)
    assert sorted(os.listdir(target)) == ["ensemble.json", "member_0", "notes.txt"]
    assert TRVAEEnsemble.load(target, adata=adata).n_members == 1
