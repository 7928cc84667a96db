"""trVAE for images: :class:`ImageTRVAE`, its convolutional module and the CelebA reader (``docs/images.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scvi_trvae._lazy import lazy_exports

_OBJECTS = {
    "ImageTRVAE": "._model",
    "ConvTRVAEModule": "._module",
}
__all__ = [
    "ConvTRVAEModule",
    "ImageTRVAE",
]
__getattr__, __dir__ = lazy_exports(__name__, _OBJECTS, globals())

if TYPE_CHECKING:
    from ._model import ImageTRVAE
    from ._module import ConvTRVAEModule
