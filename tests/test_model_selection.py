from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scvi_trvae import _ensemble, model_selection
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
    """Every fit, in order: ("inner", its cells' obs, its configuration) or ("final", obs, the member's train args)."""
    fits = []
    original_fit, original_member = model_selection._train_model, _ensemble._train_member

    def recording_fit(adata, condition_key, config, *args, **kwargs):
        fits.append(("inner", adata.obs.copy(), dict(config)))
        return original_fit(adata, condition_key, config, *args, **kwargs)

    def recording_member(adata, setup_kwargs, model_kwargs, train_kwargs, *args):
        fits.append(("final", adata.obs.copy(), dict(train_kwargs)))
        return original_member(adata, setup_kwargs, model_kwargs, train_kwargs, *args)

    monkeypatch.setattr(model_selection, "_train_model", recording_fit)
    monkeypatch.setattr(_ensemble, "_train_member", recording_member)
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
    assert ensemble.model_kwargs["n_layers"] == selection.best_config["n_layers"]


def test_results_table_and_choice(outer_split):
    train, _ = outer_split
    result = _select(train)
    table, summary = result.table, result.summary
    assert len(table) == 2 * 2 * 3  # configs x folds x shift weights
    assert {"n_layers", "mmd_weight", "inner_cell_type", "shift_weight", "edist_scaled", "score"} <= set(table.columns)
    np.testing.assert_allclose(table["score"], table["pearson_delta_deg"] - table["edist_scaled"])
    assert len(summary) == 2 * 3 and summary["score"].is_monotonic_decreasing
    best = summary.iloc[0]
    assert result.best_shift_weight == best["shift_weight"]
    assert result.best_config == model_selection.candidate_configs(2, SPACE, 0)[int(best["config"])]
    # the default configuration is always the first candidate
    assert table.loc[table["config"] == 0, "n_layers"].eq(2).all()


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
    steps = 2 * int(np.ceil(train.n_obs / model_selection.BATCH_SIZE))
    assert [kind for kind, _, _ in recorded_fits] == ["inner", "inner", "final", "final"]  # 2 inner folds, 2 members
    assert all(config["training_steps"] == steps for kind, _, config in recorded_fits if kind == "inner")
    assert all(train_args["max_epochs"] == 2 for kind, _, train_args in recorded_fits if kind == "final")
    assert selection.best_config == {"training_steps": steps}  # the models keep every default but the length
    assert ensemble.n_members == 2 and ensemble.shift_weight == selection.best_shift_weight
    assert selection.best_shift_weight in model_selection.DEFAULT_SHIFT_WEIGHTS
