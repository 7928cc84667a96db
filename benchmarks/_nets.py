"""Small torch helpers shared by the baseline models of the benchmarks (scGen, SAUCIE-like, CycleGAN)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn


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
