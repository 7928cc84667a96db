"""A SAUCIE-like baseline: a deterministic autoencoder with an MMD penalty between conditions.

As in SAUCIE's batch correction (Amodio et al. 2019), the conditions are made indistinguishable on a
hidden layer by a maximum-mean-discrepancy penalty, here on the bottleneck, and, as in the trVAE
paper's comparison, the decoder is given the condition so that it can put the condition's effect
back. Encoder ``genes -> 512 -> 256 -> 64`` (no condition), decoder ``[64, one-hot] -> 256 -> 512 ->
genes``, squared-error loss (scaled as trVAE's), no sampling. A cell is predicted by encoding it and decoding with the
target condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from _nets import mlp, seed_everything
from oos.expression import dense
from torch import nn

from scvi_trvae.data import ConditionBalancedSampler
from scvi_trvae.model import condition_mmd


class ConditionalAutoencoder(nn.Module):
    """Deterministic autoencoder whose decoder takes a one-hot condition."""

    def __init__(self, n_genes: int, n_conditions: int, hidden: tuple[int, ...] = (512, 256), n_bottleneck: int = 64):
        super().__init__()
        self.n_conditions = n_conditions
        self.encoder = nn.Sequential(mlp([n_genes, *hidden]), nn.Linear(hidden[-1], n_bottleneck))
        reversed_hidden = list(hidden[::-1])
        self.decoder = nn.Sequential(
            mlp([n_bottleneck + n_conditions, *reversed_hidden]), nn.Linear(reversed_hidden[-1], n_genes), nn.ReLU()
        )

    def decode(self, h: torch.Tensor, conditions: torch.Tensor) -> torch.Tensor:
        """Expression from bottleneck codes ``h`` under integer ``conditions``."""
        one_hot = F.one_hot(conditions.long(), self.n_conditions).to(h.dtype)
        return self.decoder(torch.cat([h, one_hot], dim=1))

    def forward(self, x: torch.Tensor, conditions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.decode(h, conditions), h


@dataclass
class SaucieLike:
    """Fit with condition-balanced minibatches.

    ``loss = mean over cells of 0.5 * squared error (summed over genes) + mmd_weight * MMD(bottleneck)``,
    the weighting of :class:`scvi_trvae.TRVAE`'s ``"mse"`` likelihood and its default MMD weight.
    """

    hidden: tuple[int, ...] = (512, 256)
    n_bottleneck: int = 64
    mmd_weight: float = 100.0
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0

    def fit(self, x: np.ndarray, conditions: np.ndarray, epochs: int) -> SaucieLike:
        """Train on ``x`` (cells x genes, log-normalised) with condition labels ``conditions``."""
        seed_everything(self.seed)
        self.conditions_, codes = np.unique(np.asarray(conditions, dtype=str), return_inverse=True)
        data, code_tensor = torch.from_numpy(dense(x)), torch.from_numpy(codes)
        self.model_ = ConditionalAutoencoder(data.shape[1], len(self.conditions_), self.hidden, self.n_bottleneck)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        sampler = ConditionBalancedSampler(codes, self.batch_size, shuffle=True, seed=self.seed)
        self.model_.train()
        for _ in range(epochs):
            for batch in sampler:
                x_batch, c_batch = data[batch], code_tensor[batch]
                x_hat, h = self.model_(x_batch, c_batch)
                reconstruction = 0.5 * (x_hat - x_batch).pow(2).sum(dim=1).mean()
                loss = reconstruction + self.mmd_weight * condition_mmd(h, c_batch, len(self.conditions_))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.model_.eval()
        return self

    def _code(self, condition: str) -> int:
        matches = np.flatnonzero(self.conditions_ == str(condition))
        if len(matches) == 0:
            raise ValueError(f"Unknown condition {condition!r}; trained on {list(self.conditions_)}.")
        return int(matches[0])

    @torch.no_grad()
    def predict(self, x: np.ndarray, target: str) -> np.ndarray:
        """Encode ``x`` and decode it under ``target``."""
        data = torch.from_numpy(dense(x))
        h = self.model_.encoder(data)
        codes = torch.full((len(data),), self._code(target), dtype=torch.long)
        return self.model_.decode(h, codes).numpy()
