"""The trVAE model: the user-facing class, the torch module, its training plan, the MMD and prediction.

:class:`TRVAE` (``_model.py``) is assembled from mixins, the way scvi-tools composes its models:
prediction (``_prediction.py``), query AnnData and reference mapping (``_query.py``) and safe
save/load (:mod:`scvi_trvae.io`). :class:`TRVAEModule` (``_module.py``) holds the maths, including the
counterfactual decode; :class:`TRVAETrainingPlan` adds the MMD weight and non-finite-loss checks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scvi_trvae._lazy import lazy_exports

_OBJECTS = {
    "TRVAE": "._model",
    "TRVAEModule": "._module",
    "TRVAETrainingPlan": "._training_plan",
    "NonFiniteLossError": "._training_plan",
    "condition_mmd": "._mmd",
    "pairwise_squared_distances": "._mmd",
    "resolve_bandwidths": "._mmd",
    "ADAPTIVE_BANDWIDTH_MULTIPLIERS": "._mmd",
    "LEGACY_BANDWIDTHS": "._mmd",
}
__all__ = [
    "ADAPTIVE_BANDWIDTH_MULTIPLIERS",
    "LEGACY_BANDWIDTHS",
    "TRVAE",
    "NonFiniteLossError",
    "TRVAEModule",
    "TRVAETrainingPlan",
    "condition_mmd",
    "pairwise_squared_distances",
    "resolve_bandwidths",
]
__getattr__, __dir__ = lazy_exports(__name__, _OBJECTS, globals())

if TYPE_CHECKING:
    from ._mmd import (
        ADAPTIVE_BANDWIDTH_MULTIPLIERS,
        LEGACY_BANDWIDTHS,
        condition_mmd,
        pairwise_squared_distances,
        resolve_bandwidths,
    )
    from ._model import TRVAE
    from ._module import TRVAEModule
    from ._training_plan import NonFiniteLossError, TRVAETrainingPlan
