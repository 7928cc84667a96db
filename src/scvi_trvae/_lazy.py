"""Lazy (PEP 562) exports of a package: each public name is imported from its module on first access.

The package and its subpackages import nothing heavy at import time, so that ``import scvi_trvae`` and
the command line's ``--help`` do not load torch and scvi-tools.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, objects: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package`` for the names in ``objects``.

    Parameters
    ----------
    package
        The package's ``__name__``.
    objects
        Each public name, keyed to the module (relative to ``package``) that defines it.
    namespace
        The package's ``globals()``: an imported name is kept there, so it is imported once.

    Returns
    -------
    The module-level ``__getattr__`` and ``__dir__`` functions.
    """

    def __getattr__(name: str) -> Any:
        if name not in objects:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(objects[name], package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *objects})

    return __getattr__, __dir__
