"""The MMD penalty's kernel, public for analysis: bandwidth lists, distances and the penalty itself.

See :mod:`scvi_trvae._mmd` for the definition; ``benchmarks/mmd_bandwidths.py`` uses these to measure
how informative each bandwidth is at the real scale of a trained model's MMD layer.
"""

from __future__ import annotations

from ._mmd import (
    ADAPTIVE_BANDWIDTH_MULTIPLIERS,
    LEGACY_BANDWIDTHS,
    condition_mmd,
    pairwise_squared_distances,
    resolve_bandwidths,
)

__all__ = [
    "ADAPTIVE_BANDWIDTH_MULTIPLIERS",
    "LEGACY_BANDWIDTHS",
    "condition_mmd",
    "pairwise_squared_distances",
    "resolve_bandwidths",
]
