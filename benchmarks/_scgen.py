"""A scGen-style baseline: an unconditional VAE plus latent vector arithmetic (Lotfollahi et al. 2019).

Architecture as published: encoder ``genes -> 800 -> 800`` (BatchNorm, LeakyReLU, dropout 0.2) to a
100-dimensional Gaussian latent space, a mirrored decoder with a ReLU output, a squared-error
reconstruction loss and a small KL weight (``5e-5``). The perturbation vector ``delta`` is the mean
latent code of the target condition minus that of the source condition, each computed after
resampling the cell types present in both conditions to equal sizes, so that no cell type dominates.
A cell is predicted by decoding its latent mean plus ``delta``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from _nets import mlp, seed_everything, shuffled_batches
from oos.expression import dense
from torch import nn


class ScGenVAE(nn.Module):
    """The scGen VAE: ``n_genes -> hidden... -> z`` and back."""

    def __init__(self, n_genes: int, n_hidden: int = 800, n_layers: int = 2, n_latent: int = 100, dropout: float = 0.2):
        super().__init__()
        hidden = [n_hidden] * n_layers
        self.encoder = mlp([n_genes, *hidden], dropout=dropout)
        self.mean = nn.Linear(n_hidden, n_latent)
        self.log_var = nn.Linear(n_hidden, n_latent)
        self.decoder = nn.Sequential(mlp([n_latent, *hidden], dropout=dropout), nn.Linear(n_hidden, n_genes), nn.ReLU())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance."""
        hidden = self.encoder(x)
        return self.mean(hidden), self.log_var(hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, log_var = self.encode(x)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return self.decoder(z), mean, log_var


def vae_loss(
    x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, kl_weight: float
) -> torch.Tensor:
    """Per-cell mean of ``0.5 * squared error + kl_weight * KL``, both summed over dimensions."""
    reconstruction = 0.5 * (x - x_hat).pow(2).sum(dim=1)
    kl = 0.5 * (log_var.exp() + mean.pow(2) - 1.0 - log_var).sum(dim=1)
    return (reconstruction + kl_weight * kl).mean()


def balanced_indices(cell_types: np.ndarray, keep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``keep`` cells with every cell type resampled (with replacement) to the largest type's size."""
    types = np.unique(cell_types[keep])
    groups = [np.flatnonzero(keep & (cell_types == t)) for t in types]
    size = max(len(g) for g in groups)
    return np.concatenate([rng.choice(g, size=size, replace=True) for g in groups])


def latent_delta(
    latent: np.ndarray,
    conditions: np.ndarray,
    cell_types: np.ndarray,
    source: str,
    target: str,
    rng: np.random.Generator,
) -> np.ndarray:
    """``mean z(target) - mean z(source)`` over class-balanced samples of the cell types seen in both.

    Both balanced samples are cut to the same number of cells before averaging.
    """
    shared = np.intersect1d(cell_types[conditions == source], cell_types[conditions == target])
    if len(shared) == 0:
        raise ValueError(f"No cell type has cells in both {source!r} and {target!r}.")
    in_shared = np.isin(cell_types, shared)
    from_source = balanced_indices(cell_types, in_shared & (conditions == source), rng)
    from_target = balanced_indices(cell_types, in_shared & (conditions == target), rng)
    n = min(len(from_source), len(from_target))
    from_source = rng.choice(from_source, size=n, replace=False)
    from_target = rng.choice(from_target, size=n, replace=False)
    return latent[from_target].mean(0) - latent[from_source].mean(0)


@dataclass
class ScGen:
    """Train the VAE on all training cells (conditions ignored), then predict with latent arithmetic."""

    n_hidden: int = 800
    n_layers: int = 2
    n_latent: int = 100
    dropout: float = 0.2
    kl_weight: float = 5e-5
    lr: float = 1e-3
    batch_size: int = 32
    seed: int = 0

    def fit(self, x: np.ndarray, epochs: int) -> ScGen:
        """Train on ``x`` (cells x genes, log-normalised) for ``epochs`` passes."""
        self.rng_ = seed_everything(self.seed)
        data = torch.from_numpy(dense(x))
        self.model_ = ScGenVAE(data.shape[1], self.n_hidden, self.n_layers, self.n_latent, self.dropout)
        optimizer = torch.optim.Adam(self.model_.parameters(), lr=self.lr)
        self.model_.train()
        for _ in range(epochs):
            for batch in shuffled_batches(len(data), self.batch_size, self.rng_):
                x_batch = data[batch]
                loss = vae_loss(x_batch, *self.model_(x_batch), kl_weight=self.kl_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        self.model_.eval()
        return self

    @torch.no_grad()
    def latent(self, x: np.ndarray) -> np.ndarray:
        """Posterior means of ``x``."""
        return self.model_.encode(torch.from_numpy(dense(x)))[0].numpy()

    @torch.no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decoder output for latent codes ``z``."""
        return self.model_.decoder(torch.from_numpy(np.asarray(z, dtype=np.float32))).numpy()

    def predict(
        self,
        x_train: np.ndarray,
        conditions: np.ndarray,
        cell_types: np.ndarray,
        x_source: np.ndarray,
        source: str,
        target: str,
    ) -> np.ndarray:
        """Decode ``z(x_source) + delta``, with ``delta`` estimated on the training cells."""
        delta = latent_delta(
            self.latent(x_train), np.asarray(conditions, dtype=str), np.asarray(cell_types, dtype=str),
            str(source), str(target), self.rng_,
        )  # fmt: skip
        return self.decode(self.latent(x_source) + delta)
