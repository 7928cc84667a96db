from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from scvi_trvae.model._mmd import (
    ADAPTIVE_BANDWIDTH_MULTIPLIERS,
    LEGACY_BANDWIDTHS,
    condition_mmd,
    pairwise_squared_distances,
    resolve_bandwidths,
)


def brute_force_mmd(values: np.ndarray, codes: np.ndarray, bandwidths) -> float:
    """Loop over condition pairs and cell pairs, adaptive bandwidths from the pooled batch."""
    n = len(values)
    sq = np.array([[np.sum((values[i] - values[j]) ** 2) for j in range(n)] for i in range(n)])
    if bandwidths == "adaptive":
        mean_sq = sq.sum() / (n * (n - 1))
        h = [m * mean_sq for m in ADAPTIVE_BANDWIDTH_MULTIPLIERS]
    else:
        h = list(bandwidths)

    def k(i, j):
        return np.mean([np.exp(-sq[i, j] / hs) for hs in h])

    groups = {c: np.flatnonzero(codes == c) for c in np.unique(codes)}
    groups = {c: g for c, g in groups.items() if len(g) >= 2}
    values_per_pair = []
    for a, b in itertools.combinations(sorted(groups), 2):
        ga, gb = groups[a], groups[b]
        kaa = np.mean([k(i, j) for i in ga for j in ga])
        kbb = np.mean([k(i, j) for i in gb for j in gb])
        kab = np.mean([k(i, j) for i in ga for j in gb])
        values_per_pair.append(max(kaa + kbb - 2 * kab, 0.0))
    return float(np.mean(values_per_pair)) if values_per_pair else 0.0


@pytest.mark.parametrize("n_conditions", [2, 3, 5])
@pytest.mark.parametrize("bandwidths", ["adaptive", (0.5, 2.0, 8.0)])
def test_matches_brute_force(n_conditions, bandwidths):
    rng = np.random.default_rng(n_conditions)
    codes = rng.integers(0, n_conditions, size=30)
    values = rng.normal(size=(30, 4)) + codes[:, None] * 0.7
    got = condition_mmd(torch.tensor(values), torch.tensor(codes), n_conditions, bandwidths).item()
    assert got == pytest.approx(brute_force_mmd(values, codes, bandwidths), rel=1e-9, abs=1e-12)


def test_skips_conditions_with_fewer_than_two_cells():
    rng = np.random.default_rng(0)
    codes = np.array([0] * 10 + [1] * 10 + [2])  # condition 2 has a single cell
    values = rng.normal(size=(21, 3))
    got = condition_mmd(torch.tensor(values), torch.tensor(codes), 4, bandwidths=(1.0, 3.0)).item()
    assert got == pytest.approx(brute_force_mmd(values, codes, (1.0, 3.0)), rel=1e-9)
    only_pair = condition_mmd(torch.tensor(values[:20]), torch.tensor(codes[:20]), 4, bandwidths=(1.0, 3.0)).item()
    assert got == pytest.approx(only_pair, rel=1e-9)


def test_single_condition_gives_zero_attached_to_graph():
    values = torch.randn(8, 3, requires_grad=True)
    out = condition_mmd(values, torch.zeros(8, 1), 2)
    assert out.item() == 0.0
    out.backward()
    assert values.grad is not None


def test_weight_does_not_grow_with_number_of_conditions():
    torch.manual_seed(0)
    shifted = [torch.randn(40, 3) + 3 * c for c in range(2)]
    two = condition_mmd(torch.cat(shifted), torch.arange(2).repeat_interleave(40), 2)
    four = condition_mmd(
        torch.cat([*shifted, *(torch.randn(40, 3) + 3 * c for c in range(2))]),
        torch.tensor([0, 1, 2, 3]).repeat_interleave(40),
        4,
    )
    assert 0.25 * two < four < 4 * two


def test_separated_conditions_score_higher_and_gradients_flow():
    torch.manual_seed(0)
    codes = torch.arange(2).repeat_interleave(32)
    same = condition_mmd(torch.randn(64, 5), codes, 2)
    values = (torch.randn(64, 5) + codes[:, None] * 2.0).requires_grad_(True)
    apart = condition_mmd(values, codes, 2)
    assert apart > 5 * same
    apart.backward()
    assert torch.isfinite(values.grad).all() and values.grad.abs().sum() > 0


def test_adaptive_kernel_is_scale_invariant():
    torch.manual_seed(0)
    codes = torch.arange(2).repeat_interleave(20)
    values = torch.randn(40, 6) + codes[:, None]
    base = condition_mmd(values, codes, 2)
    assert condition_mmd(values * 1000.0, codes, 2).item() == pytest.approx(base.item(), rel=1e-5)
    assert condition_mmd(values * 1e-3, codes, 2).item() == pytest.approx(base.item(), rel=1e-4)


def test_legacy_bandwidths_are_mostly_inert_at_layer_scale():
    # at typical hidden-layer distances most of the fixed bandwidths give kernel values of ~0 or ~1
    torch.manual_seed(0)
    sq = pairwise_squared_distances(torch.randn(64, 256) * 2)
    off_diagonal = sq[~torch.eye(64, dtype=torch.bool)]
    legacy = resolve_bandwidths(sq, LEGACY_BANDWIDTHS)
    adaptive = resolve_bandwidths(sq, "adaptive")

    def informative(h):
        k = torch.exp(-off_diagonal[:, None] / h)
        return ((k > 0.01) & (k < 0.99)).float().mean(0)

    assert (informative(legacy) > 0.5).float().mean() < 0.3
    assert (informative(adaptive) > 0.5).all()


def test_rejects_bad_bandwidths():
    with pytest.raises(ValueError, match="bandwidths"):
        condition_mmd(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), 2, bandwidths="median")
    with pytest.raises(ValueError, match="positive"):
        condition_mmd(torch.randn(4, 2), torch.tensor([0, 0, 1, 1]), 2, bandwidths=(1.0, -1.0))
