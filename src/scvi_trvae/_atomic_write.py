"""Replace a directory so that an interrupted write never leaves it half-written."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path


def replace_directory(target: str | os.PathLike, write: Callable[[Path], None], owned_names: Collection[str]) -> None:
    """Write a directory with ``write(staging)`` into a temporary directory beside ``target``, then move it in.

    A crash or a full disk while writing leaves ``target`` as it was. A ``target`` that holds only
    files named in ``owned_names`` (an earlier save) is swapped as a whole; one that also holds other
    files keeps them, and only the new files are moved in (each with an atomic rename), stale
    ``owned_names`` files being removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        write(staging)
        if not target.exists():
            staging.rename(target)
        elif set(os.listdir(target)) <= set(owned_names):
            _swap_directories(staging, target)
        else:
            written = set(os.listdir(staging))
            for name in written:
                os.replace(staging / name, target / name)
            for name in set(owned_names) - written:
                (target / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_directories(new: Path, target: Path) -> None:
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    previous = trash / target.name
    target.rename(previous)
    try:
        new.rename(target)
    except BaseException:
        previous.rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)
