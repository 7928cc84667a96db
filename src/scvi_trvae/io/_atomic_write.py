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
    entries named in ``owned_names`` (an earlier save) is swapped as a whole; one that also holds other
    entries keeps them, and only the new entries are moved in (each with an atomic rename, directories
    before files), stale ``owned_names`` entries being removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        write(staging)
        if not target.exists():
            staging.rename(target)
        elif set(os.listdir(target)) <= set(owned_names):
            swap_directories(staging, target)
        else:
            written = set(os.listdir(staging))
            for name in sorted(written, key=lambda name: (not (staging / name).is_dir(), name)):
                _replace_entry(staging / name, target / name)
            for name in set(owned_names) - written:
                _remove(target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _replace_entry(new: Path, existing: Path) -> None:
    if existing.is_dir() and not existing.is_symlink():
        swap_directories(new, existing)
    else:
        os.replace(new, existing)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def swap_directories(new: Path, target: Path) -> None:
    """Put directory ``new`` in the place of directory ``target``; on failure ``target`` is left as it was.

    Parameters
    ----------
    new
        The complete new directory (on the same file system as ``target``).
    target
        The existing directory to replace; removed once ``new`` is in place.
    """
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent))
    previous = trash / target.name
    target.rename(previous)
    try:
        new.rename(target)
    except BaseException:
        previous.rename(target)
        raise
    shutil.rmtree(trash, ignore_errors=True)
