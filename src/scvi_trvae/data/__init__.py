"""Data plumbing: condition-balanced minibatches, distributed sampling, TileDB-SOMA, sparse input, MuData.

The splitter and samplers give every minibatch cells of each condition, which the MMD needs; the
distributed sampler splits that work across processes; the SOMA data module streams an experiment
that does not fit in memory; ``_sparse.py`` multiplies sparse minibatches into the first layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scvi_trvae._lazy import lazy_exports

_OBJECTS = {
    "ConditionBalancedDataSplitter": "._splitter",
    "ConditionBalancedSampler": "._splitter",
    "DistributedConditionBalancedSampler": "._distributed",
    "SOMAConditionBalancedDataModule": "._soma",
}
__all__ = [
    "ConditionBalancedDataSplitter",
    "ConditionBalancedSampler",
    "DistributedConditionBalancedSampler",
    "SOMAConditionBalancedDataModule",
]
__getattr__, __dir__ = lazy_exports(__name__, _OBJECTS, globals())

if TYPE_CHECKING:
    from ._distributed import DistributedConditionBalancedSampler
    from ._soma import SOMAConditionBalancedDataModule
    from ._splitter import ConditionBalancedDataSplitter, ConditionBalancedSampler
