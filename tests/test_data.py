from __future__ import annotations

import numpy as np
import pytest

from scvi_trvae import TRVAE
from scvi_trvae.data import DistributedConditionBalancedSampler
from scvi_trvae.data._splitter import ConditionBalancedDataSplitter, ConditionBalancedSampler


def test_balanced_batches_on_imbalanced_conditions():
    codes = np.array([0] * 900 + [1] * 100)  # 90/10
    sampler = ConditionBalancedSampler(codes, batch_size=128, shuffle=True, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 8
    for batch in batches:
        assert len(batch) == 128
        assert np.bincount(codes[batch], minlength=2).tolist() == [64, 64]
    # the minority condition is cycled through without repeats inside a pass
    minority = [p for batch in batches for p in batch if codes[p] == 1]
    assert set(minority[:100]) == set(range(900, 1000))


def test_three_conditions_and_reproducible():
    codes = np.repeat([0, 1, 2], [50, 300, 20])
    first = list(ConditionBalancedSampler(codes, batch_size=30, shuffle=True, seed=3))
    again = list(ConditionBalancedSampler(codes, batch_size=30, shuffle=True, seed=3))
    assert first == again
    assert all(np.bincount(codes[b], minlength=3).tolist() == [10, 10, 10] for b in first)


def test_stratified_batches_visit_every_cell_once():
    codes = np.repeat([0, 1], [90, 10])
    batches = list(ConditionBalancedSampler(codes, batch_size=25, shuffle=False))
    flat = [p for b in batches for p in b]
    assert sorted(flat) == list(range(100))
    assert all(set(codes[b]) == {0, 1} for b in batches)


def test_batch_smaller_than_number_of_conditions_is_refused():
    with pytest.raises(ValueError, match="batch_size=2 is smaller than the 3 conditions"):
        ConditionBalancedSampler(np.array([0, 1, 2, 0]), batch_size=2)


def test_splitter_split_is_stratified_and_loaders_balanced(small_adata):
    adata = small_adata[:200].copy()  # type_A and part of type_B; conditions imbalanced below
    keep = np.r_[
        np.flatnonzero(adata.obs["condition"] == "control"), np.flatnonzero(adata.obs["condition"] != "control")[:12]
    ]
    adata = adata[keep].copy()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    splitter = ConditionBalancedDataSplitter(model.adata_manager, train_size=0.8, batch_size=16)
    splitter.setup()
    codes = splitter.condition_codes
    assert len(np.intersect1d(splitter.train_idx, splitter.val_idx)) == 0
    assert len(splitter.train_idx) + len(splitter.val_idx) + len(splitter.test_idx) == adata.n_obs
    for code in (0, 1):
        assert np.isin(np.flatnonzero(codes == code), splitter.train_idx).sum() >= 0.75 * (codes == code).sum()
    batch = next(iter(splitter.train_dataloader()))
    labels = batch["batch"].reshape(-1).long()
    assert batch["X"].shape == (16, adata.n_vars)
    assert labels.bincount(minlength=2).tolist() == [8, 8]
    val_cells = sum(b["X"].shape[0] for b in splitter.val_dataloader())
    assert val_cells == len(splitter.val_idx)


def test_splitter_uses_the_distributed_sampler_under_ddp(small_adata):
    TRVAE.setup_anndata(small_adata, condition_key="condition")
    model = TRVAE(small_adata)
    splitter = ConditionBalancedDataSplitter(model.adata_manager, distributed_sampler=True, batch_size=32)
    splitter.setup()
    sampler = splitter.train_dataloader().sampler
    assert isinstance(sampler, DistributedConditionBalancedSampler)
    assert (sampler.rank, sampler.num_replicas) == (0, 1)  # no process group: the whole data set
