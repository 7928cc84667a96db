from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
import pytest
import scvi

from scvi_trvae import TRVAE, _fitting, _inner_folds, model_selection
from scvi_trvae.datasets import synthetic_perturbation

SPACE = {"n_layers": (1, 2), "mmd_weight": (10.0, 100.0), "kl_weight": (0.1,), "training_steps": (4, 8)}
TASK = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}


@pytest.fixture
def outer_split():
    adata = synthetic_perturbation(
        n_cell_types=4, n_genes=40, n_cells_per_group=20, n_response_genes=8, n_marker_genes=5, seed=3
    )
    outer = ((adata.obs["cell_type"] == "type_A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    return adata[~outer].copy(), set(adata.obs_names[outer])


def _select(train, **kwargs):
    kwargs = {"n_configs": 2, "search_space": SPACE, "shift_weights": (0.0, 0.5, 1.0), "max_inner_folds": 2,
              "progress_bar": False, **kwargs}  # fmt: skip
    return model_selection.select_hyperparameters(train, **TASK, **kwargs)


@pytest.fixture
def recorded_fits(monkeypatch) -> list[tuple[str, pd.DataFrame, dict]]:
    """Every fit, in order: ("inner" or "final", its cells' obs, its train arguments).

    Every model is trained by ``_fitting.train_model``: inner fits register a copy (``setup_kwargs``), members
    train on the ensemble's shared AnnData.
    """
    fits = []
    original = _fitting.train_model

    def recording_fit(adata, seed, *, model_kwargs=None, setup_kwargs=None, threads=None, **train_kwargs):
        kind = "inner" if setup_kwargs is not None else "final"
        fits.append((kind, adata.obs.copy(), dict(train_kwargs)))
        return original(adata, seed, model_kwargs=model_kwargs, setup_kwargs=setup_kwargs, threads=threads,
                        **train_kwargs)  # fmt: skip

    monkeypatch.setattr(_fitting, "train_model", recording_fit)
    return fits


def test_selection_never_sees_outer_holdout(outer_split, recorded_fits):
    train, outer_cells = outer_split
    ensemble, selection = model_selection.fit_self_tuned(
        train, **TASK, n_members=2, n_configs=2, search_space=SPACE, shift_weights=(0.0, 1.0), max_inner_folds=2,
        progress_bar=False,
    )  # fmt: skip
    inner = [obs for kind, obs, _ in recorded_fits if kind == "inner"]
    final = [obs for kind, obs, _ in recorded_fits if kind == "final"]
    assert len(inner) == 2 * 2 and len(final) == 2  # configs x inner folds, then the members
    for obs in inner + final:
        assert not outer_cells & set(obs.index)
    # each inner fit misses exactly the target cells of one inner held-out type (type_A is not a fold)
    assert "type_A" not in selection.inner_cell_types
    for obs in inner:
        missing = train.obs.index.difference(obs.index)
        held = train.obs.loc[missing]
        assert len(missing) > 0 and held["cell_type"].nunique() == 1 and (held["condition"] == "stimulated").all()
        assert held["cell_type"].iloc[0] in selection.inner_cell_types
    for obs in final:
        assert set(obs.index) == set(train.obs_names)
    assert ensemble.shift_weight == selection.best_shift_weight
    assert ensemble.deviation_weight == selection.best_deviation_weight
    assert ensemble.reference_shift == selection.best_reference_shift
    assert ensemble.spread_scaling == selection.best_spread_scaling
    assert ensemble.model_kwargs["n_layers"] == selection.best_config["n_layers"]


def test_results_table_and_choice(outer_split):
    train, _ = outer_split
    result = _select(train)
    table, summary = result.table, result.summary
    n_deviation = len(model_selection.DEFAULT_DEVIATION_WEIGHTS)
    n_kinds = len(model_selection.DEFAULT_REFERENCE_SHIFTS)
    n_scalings = len(model_selection.DEFAULT_SPREAD_SCALINGS)
    # configs x folds x kinds of reference shift x spread scalings x shift weights x deviation weights
    assert len(table) == 2 * 2 * n_kinds * n_scalings * 3 * n_deviation
    columns = {"n_layers", "mmd_weight", "inner_cell_type", "reference_shift", "shift_weight", "deviation_weight",
               "edist_scaled", "score"}  # fmt: skip
    assert columns <= set(table.columns)
    assert set(table["reference_shift"]) == set(model_selection.DEFAULT_REFERENCE_SHIFTS)
    np.testing.assert_allclose(table["score"], table["pearson_delta_deg"] - table["edist_scaled"])
    assert len(summary) == 2 * n_kinds * n_scalings * 3 * n_deviation and summary["score"].is_monotonic_decreasing
    best = summary.iloc[0]
    assert result.best_shift_weight == best["shift_weight"]
    assert result.best_deviation_weight == best["deviation_weight"]
    assert result.best_reference_shift == best["reference_shift"]
    # with w = 1 and the spread as observed the reference shift plays no part: the same scores for every kind
    alone = table[(table["shift_weight"] == 1.0) & ~table["spread_scaling"]].pivot_table(
        index=["config", "inner_cell_type", "deviation_weight"], columns="reference_shift", values="score"
    )
    assert np.allclose(alone.to_numpy(), alone.to_numpy()[:, :1])
    # with w < 1 the kinds differ
    blended = table[table["shift_weight"] == 0.0].pivot_table(
        index=["config", "inner_cell_type", "deviation_weight"], columns="reference_shift", values="score"
    )
    assert not np.allclose(blended["pooled"], blended["similarity"])
    assert result.best_config == model_selection.candidate_configs(2, SPACE, 0)[int(best["config"])]
    # the default configuration is always the first candidate
    assert table.loc[table["config"] == 0, "n_layers"].eq(2).all()


def test_spread_scalings_are_scored_beside_the_observed_spread_and_chosen_with_the_rest(outer_split):
    train, _ = outer_split
    result = _select(train, n_configs=1, spread_scalings=(False, True))
    table = result.table
    assert set(table["spread_scaling"]) == {False, True}
    n_kinds, n_deviation = len(model_selection.DEFAULT_REFERENCE_SHIFTS), len(model_selection.DEFAULT_DEVIATION_WEIGHTS)
    assert len(table) == 2 * n_kinds * 2 * 3 * n_deviation  # folds x kinds x scalings x w x lambda
    best = result.summary.iloc[0]
    assert result.best_spread_scaling == bool(best["spread_scaling"])
    # the unscaled rows are those of a selection that never scales, score for score
    default = _select(train, n_configs=1, spread_scalings=(False,)).table
    unscaled = table[~table["spread_scaling"]].drop(columns="spread_scaling").reset_index(drop=True)
    pd.testing.assert_frame_equal(unscaled, default.drop(columns="spread_scaling"))
    # a scaled spread changes the distribution, not the mean response: the E-distance moves, Δ-Pearson barely
    pair = table.pivot_table(index=["inner_cell_type", "reference_shift", "shift_weight", "deviation_weight"],
                             columns="spread_scaling", values=["edist_scaled", "pearson_delta_deg"])  # fmt: skip
    assert not np.allclose(pair["edist_scaled"][True], pair["edist_scaled"][False])
    assert model_selection.select_hyperparameters.__kwdefaults__["spread_scalings"] == (False, True)


def test_reproducible_with_seed(outer_split):
    train, _ = outer_split
    first, second = _select(train, seed=5, n_configs=1), _select(train, seed=5, n_configs=1)
    pd.testing.assert_frame_equal(first.table, second.table)
    assert first.inner_cell_types == second.inner_cell_types


def test_time_budget_stops_after_defaults(outer_split):
    train, _ = outer_split
    result = _select(train, time_budget=0.0)
    assert result.stopped_early
    assert set(result.table["config"]) == {0}


def test_candidate_configs_distinct_and_bad_input(outer_split):
    configs = model_selection.candidate_configs(6, SPACE, seed=0)
    assert len(configs) == 6 and len({tuple(c.values()) for c in configs}) == 6
    assert len(model_selection.candidate_configs(100, SPACE, seed=0)) == 8  # all there are
    train, _ = outer_split
    only_one = train[train.obs["cell_type"].isin(["type_A", "type_B"]).to_numpy()].copy()
    with pytest.raises(ValueError, match="at least 2 cell types"):
        _select(only_one)


def test_fit_recommended_is_the_default_configuration_with_chosen_weight(outer_split, recorded_fits):
    train, _ = outer_split
    ensemble, selection = model_selection.fit_recommended(
        train, **TASK, n_members=2, max_epochs=2, progress_bar=False, enable_progress_bar=False
    )
    steps = model_selection.training_steps(train.n_obs, 2)
    available = model_selection.inner_cell_types(train, *TASK.values())
    n_inner = min(model_selection.RECOMMENDED_INNER_FOLDS, len(available))
    assert n_inner > 2  # the test data have more than the 2 folds of earlier versions
    assert [kind for kind, _, _ in recorded_fits] == ["inner"] * n_inner + ["final", "final"]  # 2 members
    inner = [(len(obs), args) for kind, obs, args in recorded_fits if kind == "inner"]
    assert all(args["max_epochs"] == _inner_folds.config_epochs(n, {"training_steps": steps}) for n, args in inner)
    assert all(train_args["max_epochs"] == 2 for kind, _, train_args in recorded_fits if kind == "final")
    assert selection.best_config == {"training_steps": steps}  # the models keep every default but the length
    assert ensemble.n_members == 2 and ensemble.shift_weight == selection.best_shift_weight
    assert ensemble.deviation_weight == selection.best_deviation_weight
    assert selection.best_shift_weight in model_selection.DEFAULT_SHIFT_WEIGHTS


@pytest.fixture
def train_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every TRVAE.train call, in order."""
    calls, original = [], TRVAE.train

    def recording_train(self, **kwargs):
        calls.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(TRVAE, "train", recording_train)
    return calls


QUICK = {"n_members": 2, "inner_folds": 2, "max_epochs": 1, "progress_bar": False}


def test_fit_recommended_passes_batch_size_to_every_fit(outer_split, train_calls):
    train, _ = outer_split
    model_selection.fit_recommended(train, **TASK, **QUICK, batch_size=16)
    assert len(train_calls) == 4 and all(call["batch_size"] == 16 for call in train_calls)


def _relabel(adata, key, mask, value):
    column = adata.obs[key].astype(object)
    column[mask] = value
    adata.obs[key] = column
    return adata


def _control_cells_only(adata, keep_category):
    adata = adata[(adata.obs["condition"] == "control").to_numpy()].copy()
    if keep_category:  # as pandas keeps it on subsetting (anndata's copy drops it)
        adata.obs["condition"] = pd.Categorical(adata.obs["condition"], categories=["control", "stimulated"])
    return adata


BAD_TASKS = [
    pytest.param(lambda a: a, {"cell_type_key": "celltype"}, KeyError,
                 "cell_type_key 'celltype' is not a column of adata.obs; columns: 'condition', 'cell_type', "
                 "'n_counts', 'response_strength'.", id="cell_type_key"),
    pytest.param(lambda a: a, {"condition_key": "treatment"}, KeyError,
                 "condition_key 'treatment' is not a column of adata.obs", id="condition_key"),
    pytest.param(lambda a: a, {"target": "salmonella"}, ValueError,
                 "unknown condition 'salmonella' (target); known: 'control', 'stimulated' (adata.obs['condition']).",
                 id="unknown target"),
    pytest.param(lambda a: a, {"source": "ctrl"}, ValueError, "unknown condition 'ctrl' (source); known: 'control'",
                 id="unknown source"),
    pytest.param(lambda a: a, {"source": "stimulated"}, ValueError, "source and target are the same condition",
                 id="same condition"),
    pytest.param(lambda a: _control_cells_only(a, keep_category=False), {}, ValueError,
                 "unknown condition 'stimulated' (target); known: 'control' (adata.obs['condition']); keep the "
                 "'stimulated' cells of the other cell types in adata (the training cells)", id="target removed"),
    pytest.param(lambda a: _control_cells_only(a, keep_category=True), {}, ValueError,
                 "the target condition 'stimulated' has no cells in adata (the training cells): keep the "
                 "'stimulated' cells", id="target category without cells"),
    pytest.param(lambda a: _relabel(a, "cell_type", np.arange(a.n_obs) < 3, np.nan), {}, ValueError,
                 "adata.obs['cell_type'] (cell_type_key) has 3 missing values (NaN)", id="NaN cell type"),
    pytest.param(lambda a: _relabel(a, "cell_type", np.ones(a.n_obs, bool), "T"), {}, ValueError,
                 "needs at least 2 cell types, but adata.obs['cell_type'] has 1 ('T').", id="one cell type"),
    pytest.param(lambda a: a[a.obs["cell_type"].isin(["type_A", "type_B"]).to_numpy()].copy(), {}, ValueError,
                 "needs at least 2 cell types with at least 3 cells in both 'control' and 'stimulated' (each is held "
                 "out in turn, predicted from its 'control' cells and scored on its 'stimulated' cells); adata has 1: "
                 "'type_B'. Cells per cell type (control / stimulated): type_A 20 / 0, type_B 20 / 20. Seen in one of "
                 "the two only (no inner fold): 'type_A'.", id="one-sided cell type"),
    pytest.param(lambda a: a, {"fold_source_cells": 0}, ValueError,
                 "fold_source_cells must be a positive number of cells, 'matched' or None, got 0.",
                 id="fold_source_cells"),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "task", "error", "message"), BAD_TASKS)
def test_bad_task_is_refused_before_any_training(outer_split, train_calls, edit, task, error, message):
    train, _ = outer_split
    with pytest.raises(error, match=re.escape(message)):
        model_selection.fit_recommended(edit(train), **{**TASK, **task}, **QUICK)
    assert train_calls == []


def _member_predictions(ensemble, adata):
    return [m.predict_perturbation(adata, source="control", target="stimulated").X for m in ensemble.members]


def test_fit_recommended_leaves_the_global_seed_alone(outer_split):
    train, _ = outer_split
    scvi.settings.seed = 123
    first, _ = model_selection.fit_recommended(train, **TASK, **QUICK)
    assert scvi.settings.seed == 123
    second, _ = model_selection.fit_recommended(train, **TASK, **QUICK)
    assert scvi.settings.seed == 123
    one, two = _member_predictions(first, train), _member_predictions(second, train)
    np.testing.assert_array_equal(one[0], two[0])  # reproducible
    np.testing.assert_array_equal(one[1], two[1])
    assert not np.allclose(one[0], one[1])  # members still differ


def test_fit_recommended_announces_its_fits_and_shows_one_bar(outer_split, train_calls, caplog, capsys):
    train, _ = outer_split
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="scvi_trvae.model_selection"):
        model_selection.fit_recommended(train, **TASK, **{**QUICK, "progress_bar": True}, enable_progress_bar=True)
    announced = [int(m) for r in caplog.records for m in re.findall(r"^(\d+) model fits", r.getMessage())]
    assert announced == [len(train_calls)] == [4]
    assert not any(call["enable_progress_bar"] for call in train_calls)  # the overall bar replaces the fits' own
    err = capsys.readouterr().err
    assert "trVAE fits" in err and "4/4" in err
    model_selection.fit_recommended(train, **TASK, **QUICK)
    assert "trVAE fits" not in capsys.readouterr().err


def test_matched_inner_folds_keep_as_few_control_cells_as_the_type_to_predict(outer_split, recorded_fits):
    train, _ = outer_split
    is_a = (train.obs["cell_type"] == "type_A").to_numpy()
    rare = train[~is_a | (np.cumsum(is_a) <= 6)].copy()  # type_A, the type to predict: 6 control cells
    _, selection = model_selection.fit_recommended(rare, **TASK, **QUICK, fold_source_cells="matched")
    assert selection.extra == {"fold_source_cells": 6}
    inner = [obs for kind, obs, _ in recorded_fits if kind == "inner"]
    assert len(inner) == 2
    for obs, held_out in zip(inner, selection.inner_cell_types, strict=True):
        counts = pd.crosstab(obs["cell_type"], obs["condition"])
        assert counts.loc[held_out, "control"] == 6 and held_out not in counts.index[counts["stimulated"] > 0]
        others = counts.drop(index=held_out)
        expected = pd.crosstab(rare.obs["cell_type"], rare.obs["condition"]).drop(index=held_out)
        pd.testing.assert_frame_equal(others, expected, check_names=False)
    for obs in (obs for kind, obs, _ in recorded_fits if kind == "final"):
        assert set(obs.index) == set(rare.obs_names)  # the members train on every cell
    assert not selection.table.empty


def test_inner_folds_keep_every_control_cell_by_default(outer_split, recorded_fits):
    train, _ = outer_split
    _, selection = model_selection.fit_recommended(train, **TASK, **QUICK)
    assert selection.extra == {}
    for obs, held_out in zip((o for k, o, _ in recorded_fits if k == "inner"), selection.inner_cell_types, strict=True):
        assert (obs["cell_type"] == held_out).sum() == 20  # its 20 control cells, its stimulated ones held out
