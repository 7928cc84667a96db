"""Condition-balanced minibatches: a sampler and the :class:`~scvi.dataloaders.DataSplitter` that uses it.

The MMD penalty compares conditions inside each minibatch, so every training minibatch must hold
every condition, in about equal numbers, however imbalanced the data set is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch
from anndata.abc import CSRDataset
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.dataloaders import DataSplitter
from scvi.nn import FCLayers
from torch.utils.data import DataLoader, Dataset, Sampler

from ._batches import balanced_batches, stratified_batches
from ._distributed import DistributedConditionBalancedSampler, process_group
from ._sparse import use_sparse_input


class ConditionBalancedSampler(Sampler[list[int]]):
    """Yields minibatches (lists of positions) that hold every condition.

    Parameters
    ----------
    condition_codes
        Integer condition of each position ``0..n-1`` of the data set being sampled.
    batch_size
        Cells per minibatch. With ``shuffle=True`` each present condition gets
        ``batch_size // n_present_conditions`` cells.
    shuffle
        ``True`` (training): random balanced minibatches; a condition's cells are drawn without
        replacement and reshuffled once used up, so small conditions are revisited more often.
        An epoch has ``ceil(n / batch_size)`` minibatches.
        ``False`` (validation, prediction): every cell exactly once, in a fixed order, each
        minibatch holding the conditions in their overall proportions.
    seed
        Seed of the random generator (``shuffle=True`` only); defaults to ``scvi.settings.seed``.
    """

    def __init__(self, condition_codes: np.ndarray, batch_size: int, shuffle: bool = True, seed: int | None = None):
        self.condition_codes = np.asarray(condition_codes).reshape(-1)
        if len(self.condition_codes) == 0:
            raise ValueError("Cannot sample minibatches from an empty set of cells.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.positions_by_condition = [
            np.flatnonzero(self.condition_codes == code) for code in np.unique(self.condition_codes)
        ]
        n_present = len(self.positions_by_condition)
        if shuffle and self.batch_size < n_present:
            raise ValueError(
                f"batch_size={batch_size} is smaller than the {n_present} conditions to balance; "
                f"use a batch_size of at least {2 * n_present} (two cells per condition)."
            )
        self.n_batches = math.ceil(len(self.condition_codes) / self.batch_size)
        self._rng = np.random.default_rng(settings.seed if seed is None else seed)

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            yield from balanced_batches(self.positions_by_condition, self.batch_size, self.n_batches, self._rng)
        else:
            yield from stratified_batches(self.positions_by_condition, self.n_batches)


class ConditionBalancedDataSplitter(DataSplitter):
    """:class:`~scvi.dataloaders.DataSplitter` with condition-stratified splits and balanced minibatches.

    The train/validation/test split is drawn within each condition, so every condition reaches the
    training set. Training minibatches come from :class:`ConditionBalancedSampler` with
    ``shuffle=True``; validation and test minibatches visit every cell once, in proportion.

    Parameters
    ----------
    adata_manager
        Manager of an AnnData set up with :meth:`scvi_trvae.TRVAE.setup_anndata`.
    train_size, validation_size, shuffle_set_split, load_sparse_tensor, pin_memory, external_indexing
        As in :class:`~scvi.dataloaders.DataSplitter`.
    sparse_input
        Give the expression matrix to the encoder as a sparse tensor (its first layer then
        multiplies sparse by dense). ``"auto"`` (default): when the registered matrix is sparse
        CSR and sparse is measured faster (:func:`scvi_trvae.data._sparse.use_sparse_input`: at most
        10% non-zero and ``batch_size >= 256``). Pass it with
        ``train(datasplitter_kwargs={"sparse_input": True})``.
    distributed_sampler
        Set by scvi-tools for a DDP strategy. Under DDP (also when Lightning starts it for
        ``devices > 1`` without a strategy) minibatches come from
        :class:`~scvi_trvae.data.DistributedConditionBalancedSampler`: every process balances the
        conditions on its own disjoint share of the cells.
    **kwargs
        ``batch_size`` and keyword arguments of :class:`torch.utils.data.DataLoader`.
    """

    def __init__(
        self,
        adata_manager: AnnDataManager,
        train_size: float | None = None,
        validation_size: float | None = None,
        shuffle_set_split: bool = True,
        load_sparse_tensor: bool = False,
        pin_memory: bool = False,
        external_indexing: list[np.ndarray] | None = None,
        distributed_sampler: bool = False,
        sparse_input: bool | str = "auto",
        **kwargs,
    ):
        self.distributed_sampler = distributed_sampler
        self.batch_size = int(kwargs.pop("batch_size", None) or settings.batch_size)
        super().__init__(
            adata_manager,
            train_size=train_size,
            validation_size=validation_size,
            shuffle_set_split=shuffle_set_split,
            load_sparse_tensor=load_sparse_tensor,
            pin_memory=pin_memory,
            external_indexing=external_indexing,
            **kwargs,
        )
        self.condition_codes = adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY).reshape(-1)
        density = csr_density(adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY))
        if sparse_input == "auto":
            sparse_input = use_sparse_input(density, self.batch_size)
        elif sparse_input and density is None:
            raise ValueError("sparse_input=True needs a sparse CSR expression matrix; the registered one is not.")
        self.load_sparse_tensor = self.load_sparse_tensor or bool(sparse_input)
        self.sparse_input = bool(sparse_input)

    def setup(self, stage: str | None = None):
        """Split indices into train/validation/test sets within each condition."""
        if self.external_indexing is not None or not self.shuffle_set_split:
            super().setup(stage)
            return
        n_obs = len(self.condition_codes)
        validation_fraction = self.n_val / n_obs
        train_fraction = self.n_train / n_obs
        rng = np.random.RandomState(seed=settings.seed)
        train, validation, test = [], [], []
        for code in np.unique(self.condition_codes):
            positions = rng.permutation(np.flatnonzero(self.condition_codes == code))
            n_val = math.floor(validation_fraction * len(positions))
            n_train = min(math.ceil(train_fraction * len(positions)), len(positions) - n_val)
            validation.append(positions[:n_val])
            train.append(positions[n_val : n_val + n_train])
            test.append(positions[n_val + n_train :])
        self.train_idx, self.val_idx, self.test_idx = (
            np.sort(np.concatenate(part)) for part in (train, validation, test)
        )

    def _dataset(self, indices: np.ndarray) -> Dataset:
        """Return the cells at ``indices`` as a dataset indexed by lists of positions ``0..len(indices)-1``."""
        return self.adata_manager.create_torch_dataset(indices=indices, load_sparse_tensor=self.load_sparse_tensor)

    def _loader(self, indices: np.ndarray, shuffle: bool) -> DataLoader:
        dataset = self._dataset(indices)
        codes = self.condition_codes[indices]
        if self.distributed_sampler or process_group()[1] > 1:
            sampler = DistributedConditionBalancedSampler(codes, self.batch_size, shuffle=shuffle)
        else:
            sampler = ConditionBalancedSampler(codes, self.batch_size, shuffle=shuffle)
        return DataLoader(
            dataset, sampler=sampler, batch_size=None, pin_memory=self.pin_memory, **self.data_loader_kwargs
        )

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """Make every tensor dense except the expression matrix with ``sparse_input``."""
        # the sparse first layer needs an FCLayers encoder (not, e.g., the image model's convolutions)
        module = getattr(getattr(self.trainer, "lightning_module", None), "module", None)
        sparse_encoder = module is None or isinstance(getattr(module, "z_encoder", None), FCLayers)
        for key, value in batch.items():
            layout = value.layout if isinstance(value, torch.Tensor) else None
            kept_sparse = (
                self.sparse_input and sparse_encoder and key == REGISTRY_KEYS.X_KEY and layout == torch.sparse_csr
            )
            if layout in (torch.sparse_csr, torch.sparse_csc) and not kept_sparse:
                batch[key] = value.to_dense()
        return batch

    def train_dataloader(self) -> DataLoader:
        """Condition-balanced, shuffled minibatches of the training cells."""
        return self._loader(self.train_idx, shuffle=True)

    def val_dataloader(self) -> DataLoader | None:
        """Every validation cell once, conditions in proportion within each minibatch."""
        return self._loader(self.val_idx, shuffle=False) if len(self.val_idx) else None

    def test_dataloader(self) -> DataLoader | None:
        """Every test cell once, conditions in proportion within each minibatch."""
        return self._loader(self.test_idx, shuffle=False) if len(self.test_idx) else None


def epochs_for_steps(n_obs: int, batch_size: int, steps: int) -> int:
    """Return the epochs that make at least ``steps`` minibatches of ``batch_size`` out of ``n_obs`` cells (>= 1)."""
    return max(1, math.ceil(steps / math.ceil(n_obs / batch_size)))


def steps_for_epochs(n_obs: int, batch_size: int, epochs: int) -> int:
    """Return the minibatches of ``batch_size`` in ``epochs`` passes over ``n_obs`` cells (the last one partial)."""
    return epochs * math.ceil(n_obs / batch_size)


def csr_density(matrix) -> float | None:
    """Fraction of non-zero entries of a CSR matrix, in memory or backed; ``None`` for any other."""
    n_entries = max(matrix.shape[0] * matrix.shape[1], 1)
    if isinstance(matrix, sp.csr_matrix | sp.csr_array):
        return matrix.nnz / n_entries
    if isinstance(matrix, CSRDataset):
        return int(matrix.group["indptr"][-1]) / n_entries
    return None
