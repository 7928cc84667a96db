"""A CycleGAN baseline between two conditions (Zhu et al. 2017, applied to expression profiles).

Two generators map source -> target (``G``) and target -> source (``F``); two discriminators tell
real from generated cells of each condition. Generators are residual MLPs (``x + MLP(x)``, clipped
at zero by a ReLU), discriminators plain MLPs. Losses: least-squares adversarial terms, an L1 cycle
term ``|F(G(a)) - a| + |G(F(b)) - b|`` with weight 10, and an L1 identity term with weight 5 (as in
the CycleGAN paper's defaults: half the cycle weight). A source cell is predicted as ``G(cell)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from _nets import mlp, seed_everything
from oos.expression import dense
from torch import nn


class ResidualGenerator(nn.Module):
    """``relu(x + MLP(x))``: starts near the identity and keeps expression non-negative."""

    def __init__(self, n_genes: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.body = nn.Sequential(mlp([n_genes, *hidden], batch_norm=False), nn.Linear(hidden[-1], n_genes))
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def discriminator(n_genes: int, hidden: tuple[int, ...] = (256, 128)) -> nn.Sequential:
    """An MLP scoring how real a cell looks (one unbounded output, for the least-squares loss)."""
    return nn.Sequential(mlp([n_genes, *hidden], batch_norm=False), nn.Linear(hidden[-1], 1))


def _lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return (scores - (1.0 if real else 0.0)).pow(2).mean()


@dataclass
class CycleGAN:
    """Fit on unpaired source and target cells; predict target cells from source cells."""

    hidden: tuple[int, ...] = (256, 256)
    cycle_weight: float = 10.0
    identity_weight: float = 5.0
    lr: float = 2e-4
    batch_size: int = 64
    seed: int = 0

    def fit(self, x_source: np.ndarray, x_target: np.ndarray, epochs: int) -> CycleGAN:
        """Train for ``epochs`` passes over the larger of the two sets."""
        rng = seed_everything(self.seed)
        a, b = torch.from_numpy(dense(x_source)), torch.from_numpy(dense(x_target))
        n_genes = a.shape[1]
        self.g_ab_, self.g_ba_ = ResidualGenerator(n_genes, self.hidden), ResidualGenerator(n_genes, self.hidden)
        d_a, d_b = discriminator(n_genes), discriminator(n_genes)
        betas = (0.5, 0.999)
        opt_g = torch.optim.Adam([*self.g_ab_.parameters(), *self.g_ba_.parameters()], lr=self.lr, betas=betas)
        opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=self.lr, betas=betas)
        n_batches = max(int(np.ceil(max(len(a), len(b)) / self.batch_size)), 1)
        for _ in range(epochs):
            for _ in range(n_batches):
                real_a = a[rng.choice(len(a), size=min(self.batch_size, len(a)), replace=False)]
                real_b = b[rng.choice(len(b), size=min(self.batch_size, len(b)), replace=False)]
                fake_b, fake_a = self.g_ab_(real_a), self.g_ba_(real_b)
                cycle = (self.g_ba_(fake_b) - real_a).abs().mean() + (self.g_ab_(fake_a) - real_b).abs().mean()
                identity = (self.g_ab_(real_b) - real_b).abs().mean() + (self.g_ba_(real_a) - real_a).abs().mean()
                adversarial = _lsgan(d_b(fake_b), True) + _lsgan(d_a(fake_a), True)
                loss_g = adversarial + self.cycle_weight * cycle + self.identity_weight * identity
                opt_g.zero_grad()
                loss_g.backward()
                opt_g.step()
                loss_d = 0.5 * (
                    _lsgan(d_b(real_b), True) + _lsgan(d_b(fake_b.detach()), False)
                    + _lsgan(d_a(real_a), True) + _lsgan(d_a(fake_a.detach()), False)
                )  # fmt: skip
                opt_d.zero_grad()
                loss_d.backward()
                opt_d.step()
        self.g_ab_.eval()
        return self

    @torch.no_grad()
    def predict(self, x_source: np.ndarray) -> np.ndarray:
        """``G(x_source)``: source cells translated to the target condition."""
        return self.g_ab_(torch.from_numpy(dense(x_source))).numpy()
