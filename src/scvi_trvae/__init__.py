"""scvi-trvae: trVAE for out-of-sample perturbation prediction, as an scvi-tools model."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("scvi-trvae")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

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
