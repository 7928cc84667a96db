from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scvi_trvae import baselines

KEYS = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}


def test_no_response_is_the_control_cells(small_adata):
    before = small_adata.copy()
    pred = baselines.no_response(small_adata, cell_type="type_B", **KEYS)
    control = small_adata[(small_adata.obs["cell_type"] == "type_B") & (small_adata.obs["condition"] == "control")]
    np.testing.assert_allclose(pred.X, control.X)
    assert (pred.obs["condition"] == "stimulated").all()
    np.testing.assert_array_equal(small_adata.X, before.X)
    assert list(small_adata.obs["condition"]) == list(before.obs["condition"])


def test_mean_shift_adds_pooled_shift_of_other_types(small_adata):
    pred = baselines.mean_shift(small_adata, cell_type="type_B", **KEYS)
    obs = small_adata.obs
    others = (obs["cell_type"] != "type_B").to_numpy()
    x = np.asarray(small_adata.X, dtype=np.float64)
    shift = x[others & (obs["condition"] == "stimulated").to_numpy()].mean(0) - x[
        others & (obs["condition"] == "control").to_numpy()
    ].mean(0)
    control = x[((obs["cell_type"] == "type_B") & (obs["condition"] == "control")).to_numpy()]
    np.testing.assert_allclose(pred.X, np.clip(control + shift, 0, None), rtol=1e-5, atol=1e-6)
    # the held-out type's own stimulated cells play no part
    without_target = small_adata[~((obs["cell_type"] == "type_B") & (obs["condition"] == "stimulated")).to_numpy()]
    np.testing.assert_allclose(baselines.mean_shift(without_target, cell_type="type_B", **KEYS).X, pred.X)


def test_errors(small_adata):
    with pytest.raises(ValueError, match="No cells of cell type 'type_Z'"):
        baselines.no_response(small_adata, cell_type="type_Z", **KEYS)
    only_b = small_adata[small_adata.obs["cell_type"] == "type_B"]
    with pytest.raises(ValueError, match="No other cell type"):
        baselines.mean_shift(only_b, cell_type="type_B", **KEYS)


def _own_shift(adata, cell_type):
    x, obs = np.asarray(adata.X, dtype=np.float64), adata.obs
    in_type = (obs["cell_type"] == cell_type).to_numpy()
    stimulated, control = (obs["condition"] == "stimulated").to_numpy(), (obs["condition"] == "control").to_numpy()
    return x[in_type & stimulated].mean(0) - x[in_type & control].mean(0)


def test_balanced_shift_is_the_mean_of_each_other_types_own_shift(small_adata):
    # type_A with a third of its stimulated cells: the pooled shift leans toward type_B, the balanced one does not
    obs = small_adata.obs
    drop = np.flatnonzero(((obs["cell_type"] == "type_A") & (obs["condition"] == "stimulated")).to_numpy())[:27]
    adata = small_adata[np.setdiff1d(np.arange(small_adata.n_obs), drop)].copy()
    balanced = baselines.pooled_shift(adata, exclude=["type_C"], balanced=True, **KEYS)
    expected = (_own_shift(adata, "type_A") + _own_shift(adata, "type_B")) / 2
    np.testing.assert_allclose(balanced, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(baselines.pooled_shift(adata, exclude=["type_C"], **KEYS), expected, atol=1e-3)
    pred = baselines.mean_shift(adata, cell_type="type_C", balanced=True, **KEYS)
    control = np.asarray(adata[(adata.obs["cell_type"] == "type_C") & (adata.obs["condition"] == "control")].X)
    np.testing.assert_allclose(pred.X, np.clip(control + balanced, 0, None), rtol=1e-5, atol=1e-6)
    # a type without cells in one of the conditions has no shift of its own and is left out
    no_control_c = adata[~((adata.obs["cell_type"] == "type_C") & (adata.obs["condition"] == "control"))]
    shift = baselines.pooled_shift(no_control_c, exclude=["type_B"], balanced=True, **KEYS)
    np.testing.assert_allclose(shift, _own_shift(adata, "type_A"), rtol=1e-5, atol=1e-6)


def test_cell_type_shifts_are_each_types_own_response(small_adata):
    shifts = baselines.cell_type_shifts(small_adata, **KEYS, exclude=["type_B"])
    obs = small_adata.obs
    x = np.asarray(small_adata.X, dtype=np.float64)
    assert "type_B" not in shifts.index and list(shifts.columns) == list(small_adata.var_names)
    for cell_type, row in shifts.iterrows():
        of_type = (obs["cell_type"] == cell_type).to_numpy()
        expected = x[of_type & (obs["condition"] == "stimulated").to_numpy()].mean(0) - x[
            of_type & (obs["condition"] == "control").to_numpy()
        ].mean(0)
        np.testing.assert_allclose(row.to_numpy(), expected, rtol=1e-10)
    balanced = baselines.pooled_shift(small_adata, **KEYS, exclude=["type_B"], balanced=True)
    np.testing.assert_allclose(balanced, shifts.to_numpy().mean(0), rtol=1e-12)


def test_cell_type_shifts_need_a_type_seen_in_both_conditions(small_adata):
    every_type = small_adata.obs["cell_type"].unique().tolist()
    with pytest.raises(ValueError, match="No other cell type has cells"):
        baselines.cell_type_shifts(small_adata, **KEYS, exclude=every_type)


def _four_types():
    """Types A, B, C near each other in source expression and D far away; each with its own response."""
    rng = np.random.default_rng(0)
    n_genes, blocks, shifts = 20, {}, {}
    for name, offset in {"A": 0.0, "B": 0.3, "C": 0.5, "D": 6.0}.items():
        base = np.full(n_genes, 2.0) + offset * (np.arange(n_genes) % 2)
        shifts[name] = np.full(n_genes, 1.0 if name != "D" else -1.0)
        blocks[name] = (base, shifts[name])
    xs, obs = [], []
    for name, (base, shift) in blocks.items():
        for condition, add in (("control", 0.0), ("stimulated", 1.0)):
            xs.append(base + add * shift + 0.05 * rng.standard_normal((15, n_genes)))
            obs += [(name, condition)] * 15
    adata = ad.AnnData(np.vstack(xs).astype(np.float32))
    adata.obs = pd.DataFrame(obs, columns=["cell_type", "condition"], index=adata.obs_names)
    return adata, shifts


def test_similarity_weights_favour_the_closest_types_and_use_no_target_cells():
    adata, shifts = _four_types()
    weights = baselines.similarity_weights(adata, cell_type="A", **KEYS)
    assert list(weights.index) == ["B", "C", "D"]
    np.testing.assert_allclose(weights.sum(), 1.0)
    assert weights["B"] > weights["C"] > weights["D"] and weights["D"] < 0.05
    shift = baselines.similarity_shift(adata, cell_type="A", **KEYS)
    np.testing.assert_allclose(shift, weights.to_numpy() @ np.stack([shifts[t] for t in "BCD"]), atol=0.05)
    # the pooled shift is pulled toward D's opposite response; the similarity shift stays near A's true +1
    pooled = baselines.pooled_shift(adata, exclude=["A"], **KEYS)
    assert np.abs(shift - 1.0).mean() < np.abs(pooled - 1.0).mean()
    # the held-out type's target cells change nothing
    held_out = ((adata.obs["cell_type"] == "A") & (adata.obs["condition"] == "stimulated")).to_numpy()
    adata_without = adata[~held_out].copy()
    np.testing.assert_allclose(baselines.similarity_shift(adata_without, cell_type="A", **KEYS), shift)
    # deterministic
    np.testing.assert_array_equal(baselines.similarity_shift(adata, cell_type="A", **KEYS), shift)


def test_similarity_bandwidth_and_mean_shift_option():
    adata, _ = _four_types()
    wide = baselines.similarity_weights(adata, cell_type="A", bandwidth=1e9, **KEYS)
    np.testing.assert_allclose(wide.to_numpy(), 1 / 3, rtol=1e-6)  # a huge bandwidth: the balanced shift
    np.testing.assert_allclose(
        baselines.similarity_shift(adata, cell_type="A", bandwidth=1e9, **KEYS),
        baselines.pooled_shift(adata, exclude=["A"], balanced=True, **KEYS), rtol=1e-5,
    )  # fmt: skip
    with pytest.raises(ValueError, match="bandwidth must be positive"):
        baselines.similarity_weights(adata, cell_type="A", bandwidth=0.0, **KEYS)
    pred = baselines.mean_shift(adata, cell_type="A", similarity=True, **KEYS)
    control = adata[(adata.obs["cell_type"] == "A").to_numpy() & (adata.obs["condition"] == "control").to_numpy()]
    expected = np.clip(control.X + baselines.similarity_shift(adata, cell_type="A", **KEYS), 0, None)
    np.testing.assert_allclose(pred.X, expected, rtol=1e-5, atol=1e-6)
    assert (pred.obs["condition"] == "stimulated").all()
    with pytest.raises(ValueError, match="Choose one"):
        baselines.mean_shift(adata, cell_type="A", balanced=True, similarity=True, **KEYS)


def test_reference_shift_is_one_of_the_three_shifts_without_the_excluded_types():
    adata, _ = _four_types()
    for kind, expected in (
        ("pooled", baselines.pooled_shift(adata, exclude=["A"], **KEYS)),
        ("balanced", baselines.pooled_shift(adata, exclude=["A"], balanced=True, **KEYS)),
        ("similarity", baselines.similarity_shift(adata, cell_type="A", **KEYS)),
    ):
        np.testing.assert_array_equal(baselines.reference_shift(adata, kind, cell_type="A", **KEYS), expected)
    # an excluded type (e.g. another predicted one) plays no part in any kind
    without_d = adata[(adata.obs["cell_type"] != "D").to_numpy()].copy()
    for kind in baselines.REFERENCE_SHIFTS:
        np.testing.assert_allclose(
            baselines.reference_shift(adata, kind, cell_type="A", exclude=["D"], **KEYS),
            baselines.reference_shift(without_d, kind, cell_type="A", **KEYS), rtol=1e-5, atol=1e-6,
        )  # fmt: skip
    weights = baselines.similarity_weights(adata, cell_type="A", exclude=["D"], **KEYS)
    assert list(weights.index) == ["B", "C"]
    # cells to predict that were never trained on: their own mean source expression is the centre
    is_a = (adata.obs["cell_type"] == "A").to_numpy()
    centre = adata[is_a & (adata.obs["condition"] == "control").to_numpy()].X.mean(0)
    untrained = baselines.reference_shift(adata[~is_a].copy(), "similarity", cell_type="A", centre=centre, **KEYS)
    np.testing.assert_allclose(
        untrained, baselines.reference_shift(adata, "similarity", cell_type="A", **KEYS), rtol=1e-2, atol=1e-3
    )
    with pytest.raises(ValueError, match="kind must be one of"):
        baselines.reference_shift(adata, "nearest", cell_type="A", **KEYS)


def _two_spreads():
    """Types whose cells spread twice (B) and four times (C) as wide under stimulation; A to predict."""
    rng = np.random.default_rng(3)
    n_genes, xs, obs = 8, [], []
    for name, (n_cells, widen) in {"A": (40, 1.0), "B": (60, 2.0), "C": (20, 4.0)}.items():
        noise = rng.standard_normal((2 * n_cells, n_genes))
        noise /= noise[:n_cells].std(0)  # source sd exactly 1 per gene: the ratios below are exact
        noise[n_cells:] /= noise[n_cells:].std(0)
        xs += [5.0 + 0.2 * noise[:n_cells], 5.0 + 0.2 * widen * noise[n_cells:]]
        obs += [(name, "control")] * n_cells + [(name, "stimulated")] * n_cells
    adata = ad.AnnData(np.vstack(xs).astype(np.float32))
    adata.obs = pd.DataFrame(obs, columns=["cell_type", "condition"], index=adata.obs_names)
    return adata


def test_reference_spread_is_the_weighted_ratio_of_the_other_types_spreads():
    adata = _two_spreads()
    c = baselines.SPREAD_OFFSET
    # B has 120 cells, C 40: cells weigh B three times; balanced weighs them equally
    pooled = (0.75 * 0.4 + 0.25 * 0.8 + c) / (0.2 + c)
    balanced = (0.5 * 0.4 + 0.5 * 0.8 + c) / (0.2 + c)
    for kind, expected in (("pooled", pooled), ("balanced", balanced)):
        np.testing.assert_allclose(baselines.reference_spread(adata, kind, cell_type="A", **KEYS), expected, rtol=1e-4)
    weights = baselines.similarity_weights(adata, cell_type="A", **KEYS)
    similar = (weights["B"] * 0.4 + weights["C"] * 0.8 + c) / (0.2 + c)
    np.testing.assert_allclose(
        baselines.reference_spread(adata, "similarity", cell_type="A", **KEYS), similar, rtol=1e-4
    )
    # without C, only B's doubling is left
    np.testing.assert_allclose(
        baselines.reference_spread(adata, "balanced", cell_type="A", exclude=["C"], **KEYS), (0.4 + c) / (0.2 + c),
        rtol=1e-4,
    )  # fmt: skip
    with pytest.raises(ValueError, match="kind must be one of"):
        baselines.reference_spread(adata, "widest", cell_type="A", **KEYS)


def test_mean_shift_with_a_scaled_spread_keeps_the_mean_and_widens_the_cells():
    adata = _two_spreads()
    plain = baselines.mean_shift(adata, cell_type="A", balanced=True, **KEYS).X
    scaled = baselines.mean_shift(adata, cell_type="A", balanced=True, scale_spread=True, **KEYS).X
    factor = baselines.reference_spread(adata, "balanced", cell_type="A", **KEYS)
    np.testing.assert_allclose(scaled.mean(0), plain.mean(0), rtol=1e-5)  # nothing clipped here
    np.testing.assert_allclose(scaled.std(0), plain.std(0) * factor, rtol=1e-4)
    mean = plain.mean(0)
    np.testing.assert_allclose(baselines.scaled_spread(plain, factor), mean + factor * (plain - mean), rtol=1e-6)


def test_spread_scaling_must_be_a_bool():
    assert baselines.check_spread_scaling(True) is True
    with pytest.raises(ValueError, match=r"spread_scaling must be True or False, got 'yes'"):
        baselines.check_spread_scaling("yes")
