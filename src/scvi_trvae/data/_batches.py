"""Minibatches of positions grouped by condition, shared by the single-process and distributed samplers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def balanced_batches(
    positions_by_condition: list[np.ndarray], batch_size: int, n_batches: int, rng: np.random.Generator
) -> Iterator[list[int]]:
    """``n_batches`` minibatches of ``batch_size // C`` cells of each of the ``C`` conditions.

    A condition's cells are drawn without replacement and reshuffled once used up.
    """
    per_condition = batch_size // len(positions_by_condition)
    queues = [rng.permutation(positions) for positions in positions_by_condition]
    cursors = [0] * len(queues)
    for _ in range(n_batches):
        batch = []
        for i, positions in enumerate(positions_by_condition):
            taken = []
            while len(taken) < per_condition:
                if cursors[i] == len(queues[i]):
                    queues[i], cursors[i] = rng.permutation(positions), 0
                n_take = min(per_condition - len(taken), len(queues[i]) - cursors[i])
                taken.extend(queues[i][cursors[i] : cursors[i] + n_take].tolist())
                cursors[i] += n_take
            batch.extend(taken)
        yield batch


def stratified_batches(positions_by_condition: list[np.ndarray], n_batches: int) -> Iterator[list[int]]:
    """Every position once, in order, each of ``n_batches`` minibatches holding the conditions in proportion."""
    chunks = [np.array_split(positions, n_batches) for positions in positions_by_condition]
    for k in range(n_batches):
        batch = np.concatenate([condition_chunks[k] for condition_chunks in chunks])
        if len(batch):
            yield batch.tolist()
