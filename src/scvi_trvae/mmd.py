"""Deprecated: the MMD penalty's kernel is public in :mod:`scvi_trvae.model`.

``from scvi_trvae.model import condition_mmd, resolve_bandwidths, ...`` (the definition is in
``scvi_trvae/model/_mmd.py``). This module re-exports those names with a ``FutureWarning`` and will be
removed in a future release.
"""

from __future__ import annotations

import warnings

from .model._mmd import (
    ADAPTIVE_BANDWIDTH_MULTIPLIERS,
    LEGACY_BANDWIDTHS,
    condition_mmd,
    pairwise_squared_distances,
    resolve_bandwidths,
)

warnings.warn(
    "scvi_trvae.mmd is deprecated: import condition_mmd, resolve_bandwidths, pairwise_squared_distances, "
    "LEGACY_BANDWIDTHS and ADAPTIVE_BANDWIDTH_MULTIPLIERS from scvi_trvae.model.",
    FutureWarning,
    stacklevel=2,
)

__all__ = [
    "ADAPTIVE_BANDWIDTH_MULTIPLIERS",
    "LEGACY_BANDWIDTHS",
    "condition_mmd",
    "pairwise_squared_distances",
    "resolve_bandwidths",
]
