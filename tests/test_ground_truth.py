"""``scvi_trvae._ground_truth``: scores against each cell's own true response (synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae.datasets import ground_truth_scores, holdout_split, synthetic_perturbation, synthetic_true_response


@pytest.fixture(scope="module")
def type_b():
    adata = synthetic_perturbation(n_cells_per_group=40, state_dependence=1.0, seed=3)
    split = holdout_split(
        adata, cell_type="type_B", cell_type_key="cell_type", condition_key="condition", source="control",
        target="stimulated",
    )  # fmt: skip
    return adata, split.control


def test_true_response_is_the_counterfactual_difference_on_the_held_out_types_genes(type_b):
    adata, control = type_b
    response, genes = synthetic_true_response(control, "control", "stimulated")
    assert response.shape == control.shape
    # the control's categories lost the other types: the genes still are type_B's (the data set's second column)
    assert list(control.obs["cell_type"].cat.categories) == ["type_B"]
    np.testing.assert_array_equal(genes, np.flatnonzero(adata.varm["response_lfc_stimulated"][:, 1]))
    assert not np.array_equal(genes, np.flatnonzero(adata.varm["response_lfc_stimulated"][:, 0]))
    assert (response[:, genes].std(0) > 1e-3).all()  # state-dependent: cells of one type respond differently
    # the response genes move most (the others only through the library size)
    assert np.abs(response[:, genes]).mean() > 2 * np.abs(np.delete(response, genes, axis=1)).mean()


def test_scores_of_the_truth_itself_of_no_response_and_of_a_constant_shift(type_b):
    _, control = type_b
    response, genes = synthetic_true_response(control, "control", "stimulated")
    x = control.X
    perfect = ground_truth_scores(x + response, control, response, genes)
    assert perfect["paired_rmse"] == pytest.approx(0, abs=1e-6) and perfect["shift_error"] == pytest.approx(0, abs=1e-6)
    assert perfect["cell_shift_r"] == pytest.approx(1) and perfect["spread_ratio"] == pytest.approx(1)
    none = ground_truth_scores(control, control, response, genes)
    assert none["paired_rmse"] == pytest.approx(np.sqrt((response[:, genes] ** 2).mean()), rel=1e-6)
    assert (none["cell_shift_r"], none["spread_ratio"]) == (0.0, 0.0)
    shift = ground_truth_scores(x + response.mean(0), control, response, genes)
    assert shift["shift_error"] == pytest.approx(0, abs=1e-6) and shift["spread_ratio"] == pytest.approx(0, abs=1e-6)
    assert 0 < shift["paired_rmse"] < none["paired_rmse"]
    mask = np.zeros(control.n_vars, dtype=bool)
    mask[genes] = True
    assert ground_truth_scores(control, control, response, mask) == none
    assert ground_truth_scores(control, control, response, control.var_names[genes]) == none  # names, via AnnData


def test_a_constant_true_response_has_no_per_cell_scores_and_shapes_must_match():
    control = np.zeros((5, 3))
    constant = np.tile([1.0, -1.0, 0.5], (5, 1))
    scores = ground_truth_scores(control + 1, control, constant)
    assert np.isnan(scores["cell_shift_r"]) and np.isnan(scores["spread_ratio"])
    assert scores["paired_rmse"] == pytest.approx(np.sqrt((0 + 4 + 0.25) / 3))
    with pytest.raises(ValueError, match="cells x genes of the control"):
        ground_truth_scores(control[:4], control, constant)


def test_scores_on_random_data_of_the_truth_itself_and_of_a_constant_shift():
    rng = np.random.default_rng(0)
    control = rng.random((50, 8))
    truth = rng.normal(1.0, 0.5, (50, 8))
    genes = np.arange(4)
    perfect = ground_truth_scores(control + truth, control, truth, genes)
    assert perfect["paired_rmse"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["shift_error"] == pytest.approx(0.0, abs=1e-12)
    assert perfect["cell_shift_r"] == pytest.approx(1.0)
    assert perfect["spread_ratio"] == pytest.approx(1.0)
    constant = ground_truth_scores(control + truth.mean(0), control, truth, genes)
    assert constant["shift_error"] == pytest.approx(0.0, abs=1e-12)
    assert constant["cell_shift_r"] == 0.0 and constant["spread_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert constant["paired_rmse"] == pytest.approx(truth[:, genes].std(0).__pow__(2).mean() ** 0.5)
