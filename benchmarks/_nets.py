"""Small torch helpers shared by the baseline models of the benchmarks (scGen, SAUCIE-like, CycleGAN)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


def dense(matrix) -> np.ndarray:
    """A float32 dense copy of a (possibly sparse) cells x genes matrix."""
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def mlp(
    sizes: Sequence[int],
    *,
    batch_norm: bool = True,
    dropout: float = 0.0,
    activation: type[nn.Module] = nn.LeakyReLU,
) -> nn.Sequential:
    """Hidden layers ``Linear -> [BatchNorm] -> activation -> [Dropout]`` between consecutive ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers.append(nn.Linear(n_in, n_out))
        if batch_norm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return a NumPy generator seeded the same way."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def shuffled_batches(n_cells: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of shuffled minibatch indices; a last batch of one cell is dropped (BatchNorm needs two)."""
    order = rng.permutation(n_cells)
    for start in range(0, n_cells, batch_size):
        batch = order[start : start + batch_size]
        if len(batch) > 1:
            yield batch


def balanced_batches(codes: np.ndarray, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """One epoch of minibatches with every condition in equal numbers.

    Each condition contributes ``batch_size // C`` cells per batch, drawn without replacement from a
    shuffled copy of its cells that is refilled when exhausted; an epoch has as many batches as it takes
    to see ``len(codes)`` cells.
    """
    groups = [np.flatnonzero(codes == c) for c in np.unique(codes)]
    per_group = max(batch_size // len(groups), 1)
    queues = [rng.permutation(g) for g in groups]
    positions = [0] * len(groups)
    n_batches = max(int(np.ceil(len(codes) / (per_group * len(groups)))), 1)
    for _ in range(n_batches):
        parts = []
        for i, group in enumerate(groups):
            if positions[i] + per_group > len(queues[i]):
                queues[i] = rng.permutation(group)
                positions[i] = 0
            take = queues[i][positions[i] : positions[i] + per_group]
            positions[i] += per_group
            parts.append(take)
        batch = np.concatenate(parts)
        if len(batch) > 1:
            yield batch
