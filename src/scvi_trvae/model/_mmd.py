r"""Maximum mean discrepancy between the conditions of a minibatch.

For cells :math:`a_1..a_n` of condition :math:`A` and :math:`b_1..b_m` of condition :math:`B` the
(biased, V-statistic) squared MMD under a kernel :math:`k` is

.. math::

    \mathrm{MMD}^2(A, B) = \overline{k(a, a')} + \overline{k(b, b')} - 2\,\overline{k(a, b)},

where each bar is the mean over all pairs, diagonal included. The V-statistic is never negative
and is exactly zero for identical sets, which the unbiased U-statistic is not.

The kernel is a mixture of RBF kernels, :math:`k(u, v) = \frac{1}{S}\sum_s \exp(-\|u - v\|^2 / h_s)`.
With ``bandwidths="adaptive"`` (the default) :math:`h_s = m_s \cdot \bar d`, where
:math:`\bar d` is the mean squared distance between distinct cells of the minibatch (treated as a
constant, not differentiated) and :math:`m_s` are fixed multipliers. The kernel then stays
informative whatever the scale of the layer, and the network cannot lower the penalty by merely
shrinking or inflating the layer. A fixed list of bandwidths (as in the original trVAE code,
1e-6..1e6) mostly gives kernel values of exactly 0 or 1 at a layer's real distances:
``benchmarks/mmd_bandwidths.py`` measures this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

#: Multipliers of the mean squared distance that set the adaptive RBF bandwidths.
ADAPTIVE_BANDWIDTH_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)

#: The bandwidth list of the original trVAE implementation, kept for comparison.
LEGACY_BANDWIDTHS: tuple[float, ...] = (
    1e-6,
    1e-5,
    1e-4,
    1e-3,
    1e-2,
    1e-1,
    1,
    5,
    10,
    15,
    20,
    25,
    30,
    35,
    100,
    1e3,
    1e4,
    1e5,
    1e6,
)

BandwidthSpec = Literal["adaptive"] | Sequence[float]


def pairwise_squared_distances(values: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between all rows of ``values`` (``n x n``, non-negative).

    Rows are centred first: the distances do not change, but the ``|u|^2 + |v|^2 - 2 u.v``
    expansion no longer loses them to cancellation when the rows lie far from the origin.
    """
    values = values - values.mean(dim=0, keepdim=True)
    squared_norms = values.pow(2).sum(dim=1)
    distances = squared_norms[:, None] + squared_norms[None, :] - 2.0 * values @ values.T
    return distances.clamp_min(0.0)


def resolve_bandwidths(
    squared_distances: torch.Tensor, bandwidths: BandwidthSpec = "adaptive", tolerance: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Bandwidths :math:`h_s` of the RBF mixture for a matrix of squared distances.

    Parameters
    ----------
    squared_distances
        ``n x n`` squared distances of the pooled minibatch.
    bandwidths
        ``"adaptive"`` for :data:`ADAPTIVE_BANDWIDTH_MULTIPLIERS` times the mean squared distance
        between distinct cells, or an explicit sequence of bandwidths.

    Returns
    -------
    One-dimensional tensor of positive bandwidths.
    """
    if isinstance(bandwidths, str):
        if bandwidths != "adaptive":
            raise ValueError(f"bandwidths must be 'adaptive' or a sequence of positive floats, got {bandwidths!r}.")
        n_cells = squared_distances.shape[0]
        n_pairs = max(n_cells * (n_cells - 1), 1)
        mean_distance = (squared_distances.sum() / n_pairs).detach()
        mean_distance = torch.where(mean_distance > tolerance, mean_distance, torch.ones_like(mean_distance))
        multipliers = torch.as_tensor(ADAPTIVE_BANDWIDTH_MULTIPLIERS, dtype=squared_distances.dtype)
        return multipliers.to(squared_distances.device) * mean_distance
    values = torch.as_tensor(tuple(bandwidths), dtype=squared_distances.dtype, device=squared_distances.device)
    if values.ndim != 1 or len(values) == 0 or not bool((values > 0).all()):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive floats, got {bandwidths!r}.")
    return values


def rbf_mixture_kernel(squared_distances: torch.Tensor, bandwidths: torch.Tensor) -> torch.Tensor:
    r"""Mean over bandwidths of :math:`\exp(-d / h_s)`, elementwise on ``squared_distances``."""
    return torch.exp(-squared_distances[..., None] / bandwidths).mean(dim=-1)


def condition_mmd(
    values: torch.Tensor,
    conditions: torch.Tensor,
    n_conditions: int,
    bandwidths: BandwidthSpec = "adaptive",
) -> torch.Tensor:
    r"""Mean squared MMD over all pairs of conditions present in a minibatch.

    All pairs are computed in one pass: with :math:`W` the ``n x C`` one-hot matrix whose columns
    are divided by the condition sizes, :math:`W^\top K W` holds every within- and
    between-condition kernel mean. Conditions with fewer than two cells in the minibatch are
    skipped; averaging over pairs keeps the scale of the penalty independent of the number of
    conditions.

    Parameters
    ----------
    values
        ``n x d`` representation (the trVAE ``y`` layer, or ``z``).
    conditions
        Integer condition code of each row, shape ``(n,)`` or ``(n, 1)``.
    n_conditions
        Number of registered conditions (codes lie in ``0..n_conditions-1``).
    bandwidths
        See :func:`resolve_bandwidths`.

    Returns
    -------
    0-d tensor; zero (still attached to the graph) when fewer than two conditions qualify.
    """
    codes = conditions.reshape(-1).long()
    if codes.shape[0] != values.shape[0]:
        raise ValueError(f"{values.shape[0]} rows of values but {codes.shape[0]} condition codes.")
    squared_distances = pairwise_squared_distances(values)
    rounding = torch.finfo(values.dtype).eps * (1.0 + values.detach().pow(2).sum(dim=1).mean())
    kernel = rbf_mixture_kernel(squared_distances, resolve_bandwidths(squared_distances, bandwidths, rounding))

    one_hot = F.one_hot(codes, num_classes=n_conditions).to(values.dtype)
    sizes = one_hot.sum(dim=0)
    weights = one_hot / sizes.clamp_min(1.0)
    kernel_means = weights.T @ kernel @ weights
    within = torch.diagonal(kernel_means)
    squared_mmd = within[:, None] + within[None, :] - 2.0 * kernel_means

    qualifies = sizes >= 2
    pair_mask = torch.triu(qualifies[:, None] & qualifies[None, :], diagonal=1)
    if not bool(pair_mask.any()):
        return values.sum() * 0.0
    return squared_mmd[pair_mask].clamp_min(0.0).mean()
