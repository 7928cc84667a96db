from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae.datasets import holdout_split

KEYS = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}


def test_holdout_split_parts(small_adata):
    before = small_adata.copy()
    split = holdout_split(small_adata, cell_type="type_B", **KEYS)
    types, conditions = small_adata.obs["cell_type"].to_numpy(), small_adata.obs["condition"].to_numpy()
    expected = (types == "type_B") & (conditions == "stimulated")
    np.testing.assert_array_equal(split.held_out, expected)
    assert list(split.real_target.obs_names) == list(small_adata.obs_names[expected])
    assert list(split.train.obs_names) == list(small_adata.obs_names[~expected])
    assert set(split.control.obs["cell_type"]) == {"type_B"} and set(split.control.obs["condition"]) == {"control"}
    assert set(split.control.obs_names) <= set(split.train.obs_names)
    assert not split.train.is_view and not split.control.is_view and not split.real_target.is_view
    split.train.X[:] = -1.0  # copies: the input is untouched
    np.testing.assert_array_equal(small_adata.X, before.X)
    assert list(small_adata.obs.columns) == list(before.obs.columns)


def test_holdout_split_errors_name_the_problem(small_adata):
    with pytest.raises(ValueError, match="'type_Z' in condition 'stimulated'"):
        holdout_split(small_adata, cell_type="type_Z", **KEYS)
    with pytest.raises(KeyError, match="'tissue' is not a column of adata"):
        holdout_split(small_adata, cell_type="type_A", **{**KEYS, "cell_type_key": "tissue"})
    only_stimulated = small_adata[small_adata.obs["condition"] == "stimulated"].copy()
    with pytest.raises(ValueError, match="in condition 'control'"):
        holdout_split(only_stimulated, cell_type="type_A", **KEYS)
