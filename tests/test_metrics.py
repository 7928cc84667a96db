from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import load_script
from scipy.stats import ConstantInputWarning, linregress

from scvi_trvae import metrics

SHARED = Path(__file__).parents[1].parent / "shared"
SCORE_PY = SHARED / "bench" / "score.py"
KANG = SHARED / "data" / "kang2018_pbmc_ifnb_lognorm.h5ad"
KEYS = {
    "n_pred",
    "n_real",
    "r2_mean_all",
    "r2_var_all",
    "r2_mean_deg",
    "r2_var_deg",
    "pearson_delta_all",
    "pearson_delta_deg",
    "edist_scaled",
}


def _lognormal_like(rng: np.random.Generator, n_cells: int, n_genes: int, scale: np.ndarray) -> np.ndarray:
    """log1p of Poisson counts, with a gene-specific rate ``scale`` (cells x genes, float64)."""
    return np.log1p(rng.poisson(scale, size=(n_cells, n_genes))).astype(np.float64)


def _synthetic(seed: int = 0, n_genes: int = 120):
    rng = np.random.default_rng(seed)
    base = rng.gamma(1.0, 1.5, size=n_genes)
    effect = np.exp(rng.normal(0.0, 0.6, size=n_genes))
    ctrl = _lognormal_like(rng, 80, n_genes, base)
    tgt = _lognormal_like(rng, 90, n_genes, base * effect)
    pred = _lognormal_like(rng, 70, n_genes, base * effect**0.8)
    return ctrl, tgt, pred


def _adata(x: np.ndarray, sparse: bool = False) -> ad.AnnData:
    a = ad.AnnData(sp.csr_matrix(x) if sparse else x.copy())
    a.var_names = [f"g{i}" for i in range(x.shape[1])]
    return a


def _load_score():
    if not SCORE_PY.exists():
        pytest.skip(f"{SCORE_PY} not found")
    return load_script("shared_bench_score", SCORE_PY)


# --- hand-computable cases ------------------------------------------------------------------------------


def test_perfect_prediction():
    ctrl, tgt, _ = _synthetic()
    assert metrics.r2_mean(tgt, tgt) == pytest.approx(1.0)
    assert metrics.r2_var(tgt, tgt) == pytest.approx(1.0)
    assert metrics.pearson_delta(tgt, tgt, ctrl) == pytest.approx(1.0)
    assert metrics.edistance(tgt, tgt) == pytest.approx(0.0, abs=1e-12)
    # same cells, a different order: the subsample is the whole set, so E = 0 exactly
    assert metrics.edistance_scaled(tgt[::-1], tgt, ctrl) == pytest.approx(0.0, abs=1e-9)


def test_predicting_control_scores_one():
    ctrl, tgt, _ = _synthetic()
    assert metrics.edistance_scaled(ctrl, tgt, ctrl) == pytest.approx(1.0, abs=1e-12)


def test_r2_small_hand_case():
    # means of real: (1, 2, 3); means of pred: (2, 4, 7) -> r = 0.9933..., r² = 0.98684...
    real = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    pred = np.array([[2.0, 4.0, 7.0], [2.0, 4.0, 7.0]])
    expected = np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1] ** 2
    assert metrics.r2_mean(pred, real) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.986842105263, abs=1e-9)
    assert metrics.r2_mean(pred, real) == pytest.approx(linregress([1, 2, 3], [2, 4, 7]).rvalue ** 2, abs=1e-12)


def test_r2_var_hand_case():
    # variances (ddof=0) of real: (0, 1, 4); of pred: (0, 0.25, 1) -> exactly proportional, r² = 1
    real = np.array([[0.0, 0.0, 0.0], [0.0, 2.0, 4.0]])
    pred = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 2.0]])
    assert metrics.r2_var(pred, real) == pytest.approx(1.0, abs=1e-12)
    assert metrics.r2_var(pred, real, genes=[0, 2]) == pytest.approx(1.0, abs=1e-12)


def test_edistance_hand_case():
    # 1-D points {0} and {1}: 2 * 1 - 0 - 0 = 2; {0, 2} and {1}: 2 * 1 - (0 + 2 + 2 + 0) / 4 - 0 = 1
    assert metrics.edistance(np.array([[0.0]]), np.array([[1.0]])) == pytest.approx(2.0)
    assert metrics.edistance(np.array([[0.0], [2.0]]), np.array([[1.0]])) == pytest.approx(1.0)
    # Euclidean, not squared: {(0, 0)} vs {(3, 4)} gives 2 * 5
    assert metrics.edistance(np.zeros((1, 2)), np.array([[3.0, 4.0]])) == pytest.approx(10.0)


def test_pearson_delta_hand_case():
    ctrl = np.array([[1.0, 1.0, 1.0]])
    real = np.array([[2.0, 1.0, 0.0]])  # delta (1, 0, -1)
    pred = np.array([[3.0, 1.0, -1.0]])  # delta (2, 0, -2): perfectly correlated
    assert metrics.pearson_delta(pred, real, ctrl) == pytest.approx(1.0)
    anti = np.array([[0.0, 1.0, 2.0]])
    assert metrics.pearson_delta(anti, real, ctrl) == pytest.approx(-1.0)


@pytest.mark.parametrize(("a", "b"), [(2.0, 0.5), (-3.0, 1.0), (0.1, -7.0)])
def test_r2_invariant_to_affine_maps(a, b):
    _, tgt, pred = _synthetic()
    ref_mean, ref_var = metrics.r2_mean(pred, tgt), metrics.r2_var(pred, tgt)
    # an affine map of every cell maps per-gene means affinely: r² unchanged
    assert metrics.r2_mean(a * pred + b, tgt) == pytest.approx(ref_mean, abs=1e-10)
    assert metrics.r2_mean(pred, a * tgt + b) == pytest.approx(ref_mean, abs=1e-10)
    # variances scale by a²; adding b leaves them unchanged
    assert metrics.r2_var(a * pred + b, tgt) == pytest.approx(ref_var, abs=1e-10)
    assert 0.0 < ref_mean < 1.0 and 0.0 < ref_var < 1.0


# --- inputs ---------------------------------------------------------------------------------------------


def test_input_types_agree():
    ctrl, tgt, pred = _synthetic()
    dense = metrics.evaluate_prediction(pred, tgt, ctrl, n_degs=20)
    sparse = metrics.evaluate_prediction(sp.csr_matrix(pred), sp.csc_matrix(tgt), sp.csr_matrix(ctrl), n_degs=20)
    adatas = metrics.evaluate_prediction(_adata(pred), _adata(tgt, sparse=True), _adata(ctrl), n_degs=20)
    assert set(dense) == KEYS
    for k in KEYS:
        assert sparse[k] == pytest.approx(dense[k], abs=1e-12), k
        assert adatas[k] == pytest.approx(dense[k], abs=1e-12), k


def test_gene_selection_by_index_mask_and_name():
    ctrl, tgt, pred = _synthetic()
    idx = np.array([3, 7, 11, 20, 42, 80])
    mask = np.zeros(tgt.shape[1], dtype=bool)
    mask[idx] = True
    names = [f"g{i}" for i in idx]
    expected = metrics.r2_mean(pred[:, idx], tgt[:, idx])
    for sel in (idx, list(idx), mask):
        assert metrics.r2_mean(pred, tgt, genes=sel) == pytest.approx(expected, abs=1e-12)
    assert metrics.r2_mean(_adata(pred), _adata(tgt), genes=names) == pytest.approx(expected, abs=1e-12)
    assert metrics.r2_var(_adata(pred), tgt, genes=names) == pytest.approx(
        metrics.r2_var(pred[:, idx], tgt[:, idx]), abs=1e-12
    )
    assert metrics.pearson_delta(pred, _adata(tgt), ctrl, genes=names) == pytest.approx(
        metrics.pearson_delta(pred[:, idx], tgt[:, idx], ctrl[:, idx]), abs=1e-12
    )
    # the same DEGs given as indices or names give the same scores
    by_idx = metrics.evaluate_prediction(_adata(pred), _adata(tgt), _adata(ctrl), degs=idx)
    by_name = metrics.evaluate_prediction(_adata(pred), _adata(tgt), _adata(ctrl), degs=names)
    assert by_idx == by_name
    assert by_idx["r2_mean_deg"] == pytest.approx(expected, abs=1e-12)


def test_gene_selection_errors():
    _, tgt, pred = _synthetic()
    with pytest.raises(ValueError, match="AnnData"):
        metrics.r2_mean(pred, tgt, genes=["g1", "g2"])
    with pytest.raises(KeyError, match="nope"):
        metrics.r2_mean(pred, _adata(tgt), genes=["g1", "nope"])
    with pytest.raises(ValueError, match="mask"):
        metrics.r2_mean(pred, tgt, genes=np.ones(5, dtype=bool))
    with pytest.raises(IndexError):
        metrics.r2_mean(pred, tgt, genes=[0, tgt.shape[1]])
    with pytest.raises(ValueError, match="same genes"):
        metrics.r2_mean(pred[:, :-1], tgt)


def test_inputs_not_mutated():
    ctrl, tgt, pred = _synthetic()
    a_pred, a_tgt, a_ctrl = _adata(pred), _adata(tgt, sparse=True), _adata(ctrl)
    a_tgt.obs["condition"] = "stimulated"
    snapshot = (pred.copy(), a_tgt.X.copy(), ctrl.copy())
    obs_before, uns_before = a_tgt.obs.copy(), dict(a_tgt.uns)
    res = metrics.evaluate_prediction(a_pred, a_tgt, a_ctrl, n_degs=20)
    metrics.top_degs(a_tgt, a_ctrl)
    assert np.isfinite(res["edist_scaled"])
    np.testing.assert_array_equal(a_pred.X, snapshot[0])
    np.testing.assert_array_equal(a_tgt.X.toarray(), snapshot[1].toarray())
    np.testing.assert_array_equal(a_ctrl.X, snapshot[2])
    pd.testing.assert_frame_equal(a_tgt.obs, obs_before)
    assert dict(a_tgt.uns) == uns_before
    assert "rank_genes_groups" not in a_tgt.uns and "rank_genes_groups" not in a_ctrl.uns


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_prediction_raises(bad):
    ctrl, tgt, pred = _synthetic()
    pred = pred.copy()
    pred[3, 5] = bad
    with pytest.raises(ValueError, match="non-finite"):
        metrics.evaluate_prediction(pred, tgt, ctrl)


def test_top_degs_directions():
    rng = np.random.default_rng(1)
    n_genes = 40
    ctrl = rng.normal(2.0, 0.3, size=(60, n_genes))
    tgt = rng.normal(2.0, 0.3, size=(60, n_genes))
    tgt[:, [5, 6]] += 2.0  # strongly up
    tgt[:, [30, 31]] -= 1.5  # strongly down
    deg = metrics.top_degs(tgt, ctrl, n_up=2, n_down=2)
    assert deg.dtype.kind == "i" and len(deg) == 4
    assert set(deg[:2]) == {5, 6}
    assert set(deg[2:]) == {30, 31}
    # gene labels do not change the result
    names = [f"gene{i}" for i in range(n_genes)]
    np.testing.assert_array_equal(metrics.top_degs(tgt, ctrl, 2, 2, gene_names=names), deg)
    np.testing.assert_array_equal(metrics.top_degs(_adata(tgt), _adata(ctrl), 2, 2), deg)


def test_edistance_scaled_subsampling_and_components():
    ctrl, tgt, pred = _synthetic()
    full = metrics.edistance_scaled(pred, tgt, ctrl)
    sub = metrics.edistance_scaled(pred, tgt, ctrl, max_cells=30, n_comps=5, seed=3)
    assert full > 0 and sub > 0
    assert sub == metrics.edistance_scaled(pred, tgt, ctrl, max_cells=30, n_comps=5, seed=3)


# --- cross-check with the project's independent scorer --------------------------------------------------


def _assert_same_as_score(ref: dict, got: dict):
    assert "error" not in ref
    assert set(got) == KEYS == set(ref)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-10, rel=0), k


def test_matches_score_py_synthetic():
    score = _load_score()
    rng = np.random.default_rng(7)
    n_genes = 300
    base = rng.gamma(0.8, 1.0, size=n_genes)
    effect = np.exp(rng.normal(0.0, 0.7, size=n_genes))
    ctrl = _lognormal_like(rng, 150, n_genes, base)
    tgt = _lognormal_like(rng, 170, n_genes, base * effect)
    pred = _lognormal_like(rng, 130, n_genes, base * effect**0.7) + rng.normal(0, 0.05, size=(130, n_genes))
    genes = [f"gene{i}" for i in range(n_genes)]
    ref = score.score(sp.csr_matrix(ctrl), tgt, pred, genes, n_degs=100, seed=0)
    _assert_same_as_score(ref, metrics.evaluate_prediction(pred, sp.csr_matrix(tgt), ctrl))
    np.testing.assert_array_equal(
        metrics.top_degs(tgt, ctrl, n_up=50, n_down=50), score.top_degs(ctrl, tgt, genes, 100)
    )
    # another seed and DEG count
    ref = score.score(ctrl, tgt, pred, genes, n_degs=40, seed=5)
    _assert_same_as_score(ref, metrics.evaluate_prediction(pred, tgt, ctrl, n_degs=40, seed=5))


def test_matches_score_py_on_kang_nk_mean_shift_baseline():
    score = _load_score()
    if not KANG.exists():
        pytest.skip(f"{KANG} not found")
    adata = ad.read_h5ad(KANG)
    nk = (adata.obs["cell_type"] == "NK").to_numpy()
    ctrl = (adata.obs["condition"] == "control").to_numpy()
    stim = (adata.obs["condition"] == "stimulated").to_numpy()
    x = adata.X
    shift = np.asarray(x[~nk & stim].mean(0)).ravel() - np.asarray(x[~nk & ctrl].mean(0)).ravel()
    real_ctrl, real_tgt = adata[nk & ctrl], adata[nk & stim]
    pred = real_ctrl.X.toarray().astype(np.float64) + shift

    got = metrics.evaluate_prediction(pred, real_tgt, real_ctrl)
    ref = score.score(real_ctrl.X, real_tgt.X, pred, adata.var_names)
    _assert_same_as_score(ref, got)
    assert (got["n_pred"], got["n_real"]) == (517, 646)
    # the strong baseline of the evaluation notes: high r², low scaled E-distance
    assert got["r2_mean_deg"] > 0.85 and got["pearson_delta_deg"] > 0.85 and got["edist_scaled"] < 0.3
    # predicting "no response" is worse on everything that measures the response
    with pytest.warns(ConstantInputWarning):  # its response is zero everywhere: Δ-Pearson undefined
        none = metrics.evaluate_prediction(real_ctrl, real_tgt, real_ctrl, degs=metrics.top_degs(real_tgt, real_ctrl))
    assert np.isnan(none["pearson_delta_all"])
    assert none["edist_scaled"] == pytest.approx(1.0, abs=1e-12)
    assert none["r2_mean_deg"] < got["r2_mean_deg"]


def test_gene_selection_helpers_are_public():
    adata = ad.AnnData(np.zeros((2, 4)))
    adata.var_names = ["a", "b", "c", "d"]
    names = metrics.var_names_of(np.zeros((2, 4)), adata)
    assert list(names) == ["a", "b", "c", "d"]
    np.testing.assert_array_equal(metrics.gene_indices(["c", "a"], 4, names), [2, 0])
    np.testing.assert_array_equal(metrics.gene_indices([True, False, False, True], 4), [0, 3])
    np.testing.assert_array_equal(metrics.gene_indices(None, 3), [0, 1, 2])
    assert metrics.var_names_of(np.zeros((2, 4))) is None


def test_evaluate_prediction_densifies_each_matrix_once(monkeypatch):
    rng = np.random.default_rng(0)
    control, target = rng.random((30, 20)), rng.random((25, 20)) + np.linspace(0, 1, 20)
    pred = target + rng.normal(0, 0.1, target.shape)
    expected = metrics.evaluate_prediction(pred, target, control)
    calls = []
    original = metrics.as_dense

    def counting(x, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("name"))
        return original(x, *args, **kwargs)

    monkeypatch.setattr(metrics, "as_dense", counting)
    got = metrics.evaluate_prediction(sp.csr_matrix(pred), sp.csr_matrix(target), sp.csr_matrix(control))
    assert sorted(calls) == ["pred", "real_control", "real_target"]  # once each, not once per metric
    assert got == pytest.approx(expected, rel=1e-12)
