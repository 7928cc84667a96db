"""scvi-trvae: trVAE for out-of-sample perturbation prediction, as an scvi-tools model.

The public names are imported on first access (PEP 562), so ``import scvi_trvae`` and the
command line's ``--help`` do not load torch and scvi-tools; ``from scvi_trvae import TRVAE`` works as usual.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("scvi-trvae")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

#: Each public class or function, keyed by name, with the private module that defines it.
_OBJECTS: dict[str, str] = {
    "TRVAE": "._model",
    "ConditionBalancedDataSplitter": "._data",
    "ConditionBalancedSampler": "._data",
    "ConvTRVAEModule": "._conv_module",
    "DistributedConditionBalancedSampler": "._distributed",
    "ModelFileError": "._persistence",
    "NonFiniteLossError": "._training_plan",
    "SOMAConditionBalancedDataModule": "._soma",
    "TRVAEEnsemble": "._ensemble",
    "TRVAEModule": "._module",
    "TRVAETrainingPlan": "._training_plan",
    "TrainingCheckpoint": "._checkpoint",
    "UnsafeModelFileError": "._persistence",
    "condition_mmd": "._mmd",
}
_SUBMODULES = ("baselines", "datasets", "metrics", "model_selection", "pl", "utils")

__all__ = [
    "TRVAE",
    "ConditionBalancedDataSplitter",
    "ConditionBalancedSampler",
    "ConvTRVAEModule",
    "DistributedConditionBalancedSampler",
    "ModelFileError",
    "NonFiniteLossError",
    "SOMAConditionBalancedDataModule",
    "TRVAEEnsemble",
    "TRVAEModule",
    "TRVAETrainingPlan",
    "TrainingCheckpoint",
    "UnsafeModelFileError",
    "baselines",
    "condition_mmd",
    "datasets",
    "metrics",
    "model_selection",
    "pl",
    "utils",
]


def __getattr__(name: str) -> Any:
    """Import a public class, function or submodule on its first access and keep it in the package."""
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _OBJECTS:
        value = getattr(importlib.import_module(_OBJECTS[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the names that __getattr__ provides
    from . import baselines, datasets, metrics, model_selection, pl, utils
    from ._checkpoint import TrainingCheckpoint
    from ._conv_module import ConvTRVAEModule
    from ._data import ConditionBalancedDataSplitter, ConditionBalancedSampler
    from ._distributed import DistributedConditionBalancedSampler
    from ._ensemble import TRVAEEnsemble
    from ._mmd import condition_mmd
    from ._model import TRVAE
    from ._module import TRVAEModule
    from ._persistence import ModelFileError, UnsafeModelFileError
    from ._soma import SOMAConditionBalancedDataModule
    from ._training_plan import NonFiniteLossError, TRVAETrainingPlan
