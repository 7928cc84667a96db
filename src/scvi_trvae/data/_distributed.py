"""Condition-balanced minibatches for distributed (DDP) training: one disjoint share of cells per process."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch.distributed as dist
from scvi import settings
from torch.utils.data import DistributedSampler, Sampler

from ._batches import balanced_batches, stratified_batches


def process_group() -> tuple[int, int]:
    """``(rank, world_size)`` of the running torch.distributed group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DistributedConditionBalancedSampler(DistributedSampler):
    """Yields this process's minibatches; each holds every condition, processes see disjoint cells.

    At every epoch each condition's cells are shuffled with a generator seeded by ``(seed, epoch)``,
    the same in every process, and dealt round-robin to the ``num_replicas`` processes; each process
    then draws balanced minibatches of ``batch_size`` cells from its own share, as
    :class:`~scvi_trvae.data.ConditionBalancedSampler` does from all cells. The effective minibatch is
    ``batch_size * num_replicas`` cells, and every process yields the same number of minibatches
    per epoch (``ceil(n / (batch_size * num_replicas))``), as DDP's gradient synchronisation needs.

    A :class:`torch.utils.data.DistributedSampler` by type (not by its dataset-based constructor), so
    that Lightning does not wrap it in another distributed sampler that would split its minibatches.

    Parameters
    ----------
    condition_codes
        Integer condition of each position ``0..n-1`` of the data set being sampled.
    batch_size
        Cells per minibatch and process.
    num_replicas, rank
        Number of processes and this one's rank; default: those of the running process group.
    shuffle
        ``True`` (training): balanced random minibatches. ``False`` (validation): each cell once,
        in one process, conditions in proportion.
    seed
        Seed shared by all processes; defaults to ``scvi.settings.seed`` (0 when unset).
    """

    def __init__(
        self,
        condition_codes: np.ndarray,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
    ):
        Sampler.__init__(self)
        group_rank, group_size = process_group()
        self.num_replicas = group_size if num_replicas is None else int(num_replicas)
        self.rank = group_rank if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank must be in [0, {self.num_replicas}), got {self.rank}.")
        codes = np.asarray(condition_codes).reshape(-1)
        self.positions_by_condition = [np.flatnonzero(codes == code) for code in np.unique(codes)]
        smallest = min((len(p) for p in self.positions_by_condition), default=0)
        if shuffle and smallest < self.num_replicas:
            raise ValueError(
                f"A condition has {smallest} training cells, fewer than the {self.num_replicas} processes: "
                "every process needs cells of every condition. Train on fewer devices."
            )
        if shuffle and batch_size < len(self.positions_by_condition):
            raise ValueError(
                f"batch_size={batch_size} is smaller than the {len(self.positions_by_condition)} conditions to balance."
            )
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed if seed is not None else (settings.seed or 0))
        self.n_batches = max(math.ceil(len(codes) / (self.batch_size * self.num_replicas)), 1)
        self.epoch = 0
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (Lightning calls this at every epoch's start); it reseeds the shuffling."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_batches

    def own_positions(self) -> list[np.ndarray]:
        """Return the positions of each condition that this process uses in this epoch."""
        if not self.shuffle:
            return [positions[self.rank :: self.num_replicas] for positions in self.positions_by_condition]
        shared = np.random.default_rng([self.seed, self.epoch])
        return [
            shared.permutation(positions)[self.rank :: self.num_replicas] for positions in self.positions_by_condition
        ]

    def __iter__(self) -> Iterator[list[int]]:
        own = self.own_positions()
        if not self.shuffle:
            yield from stratified_batches(own, self.n_batches)
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank])
        yield from balanced_batches(own, self.batch_size, self.n_batches, rng)
