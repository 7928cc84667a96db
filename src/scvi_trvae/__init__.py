"""scvi-trvae: trVAE for out-of-sample perturbation prediction, as an scvi-tools model.

The public names are imported on first access (PEP 562), so ``import scvi_trvae`` and the
command line's ``--help`` do not load torch and scvi-tools; ``from scvi_trvae import TRVAE`` works as usual.
The package's rooms (``docs/architecture.md``): :mod:`scvi_trvae.model` (the model, its module and
training plan), :mod:`scvi_trvae.data` (minibatches and data sources), :mod:`scvi_trvae.image` (the
image model), :mod:`scvi_trvae.io` (saving, loading, checkpoints) and :mod:`scvi_trvae.datasets`.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("scvi-trvae")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

#: Each public class, keyed by name, with the module that defines it.
_OBJECTS: dict[str, str] = {
    "TRVAE": ".model._model",
    "TRVAEEnsemble": "._ensemble",
    "ImageTRVAE": ".image._model",
    "SOMAConditionBalancedDataModule": ".data._soma",
    "ModelFileError": ".io._persistence",
    "UnsafeModelFileError": ".io._persistence",
    "NonFiniteLossError": ".model._training_plan",
}
#: Names that moved out of the top level (issue 20): each still works, with a FutureWarning naming its new home.
_MOVED: dict[str, str] = {
    "ConditionBalancedDataSplitter": "scvi_trvae.data",
    "ConditionBalancedSampler": "scvi_trvae.data",
    "DistributedConditionBalancedSampler": "scvi_trvae.data",
    "ConvTRVAEModule": "scvi_trvae.image",
    "TRVAEModule": "scvi_trvae.model",
    "TRVAETrainingPlan": "scvi_trvae.model",
    "TrainingCheckpoint": "scvi_trvae.io",
    "condition_mmd": "scvi_trvae.model",
}
_SUBMODULES = ("baselines", "data", "datasets", "image", "io", "metrics", "model", "model_selection", "pl", "utils")

__all__ = [
    "TRVAE",
    "ImageTRVAE",
    "ModelFileError",
    "NonFiniteLossError",
    "SOMAConditionBalancedDataModule",
    "TRVAEEnsemble",
    "UnsafeModelFileError",
    "baselines",
    "datasets",
    "metrics",
    "model_selection",
    "pl",
    "utils",
]


def __getattr__(name: str) -> Any:
    """Import a public class or submodule on its first access and keep it in the package."""
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _OBJECTS:
        value = getattr(importlib.import_module(_OBJECTS[name], __name__), name)
    elif name in _MOVED:
        warnings.warn(
            f"scvi_trvae.{name} moved to {_MOVED[name]}.{name}; import it from there "
            f"(`from {_MOVED[name]} import {name}`). The old name will be removed in a future release.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)  # not cached: each use warns
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the names that __getattr__ provides
    from . import baselines, datasets, metrics, model_selection, pl, utils
    from ._ensemble import TRVAEEnsemble
    from .data import SOMAConditionBalancedDataModule
    from .image import ImageTRVAE
    from .io import ModelFileError, UnsafeModelFileError
    from .model import TRVAE, NonFiniteLossError
