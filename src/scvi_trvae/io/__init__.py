"""Files: safe loading and atomic saving of models, exact-resume training checkpoints.

``_persistence.py`` reads a saved model without unpickling anything outside an allow-list
(:class:`UnsafeModelFileError`) and writes saves atomically through ``_atomic_write.py``, which the
ensemble and the command line use too; ``_checkpoint.py`` holds :class:`TrainingCheckpoint`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scvi_trvae._lazy import lazy_exports

_OBJECTS = {
    "ModelFileError": "._persistence",
    "UnsafeModelFileError": "._persistence",
    "TrainingCheckpoint": "._checkpoint",
}
__all__ = [
    "ModelFileError",
    "TrainingCheckpoint",
    "UnsafeModelFileError",
]
__getattr__, __dir__ = lazy_exports(__name__, _OBJECTS, globals())

if TYPE_CHECKING:
    from ._checkpoint import TrainingCheckpoint
    from ._persistence import ModelFileError, UnsafeModelFileError
