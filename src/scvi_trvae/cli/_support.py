"""Plumbing of the command line: the options' earlier names, and outputs moved into place whole.

Kept free of torch, scvi-tools and anndata, so that ``--help`` and argument errors answer at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from typer.core import TyperCommand

from scvi_trvae.io._atomic_write import swap_directories

if TYPE_CHECKING:
    import anndata as ad
    import numpy as np

TRAINING_RECORD = "scvi_trvae_training.json"
"""File written beside the saved model by ``train``: the data, keys, held-out cells and settings used."""

#: Option names of earlier versions, each with the name that replaced it: still accepted, not shown in ``--help``.
OLD_OPTION_NAMES: dict[str, str] = {
    "--holdout-key": "--cell-type-key",
    "--cells-key": "--cell-type-key",
    "--holdout": "--cell-type",
    "--cells": "--cell-type",
    "--holdout-condition": "--target",
    "--shift-source": "--source",
    "--control": "--source",
}


def _current_name(arg: str) -> str:
    name, equals, value = arg.partition("=")
    return OLD_OPTION_NAMES[name] + equals + value if name in OLD_OPTION_NAMES else arg


class Command(TyperCommand):
    """A typer command that also accepts the options' earlier names (:data:`OLD_OPTION_NAMES`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Rename earlier option names to the current ones (up to a ``--``), then parse as usual."""
        end = args.index("--") if "--" in args else len(args)
        return super().parse_args(ctx, [_current_name(arg) for arg in args[:end]] + args[end:])


class CliError(Exception):
    """Bad input to a command: reported as one line, without a traceback."""


def read_h5ad(path: Path) -> ad.AnnData:
    """Read an ``.h5ad`` file, or say in one line that it is missing or not one."""
    import anndata as ad

    if not path.is_file():
        raise CliError(f"no such file: {path}")
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # h5py/anndata raise many types for a file that is not an .h5ad
        raise CliError(f"{path} is not a readable .h5ad file ({type(err).__name__}: {err})") from err


def obs_values(adata: ad.AnnData, key: str, path: Path) -> np.ndarray:
    """Return obs column ``key`` of ``adata`` (read from ``path``) as strings, or name the columns there are."""
    if key not in adata.obs:
        raise CliError(f"{key!r} is not an obs column of {path}; columns: {', '.join(map(str, adata.obs.columns))}")
    return adata.obs[key].astype(str).to_numpy()


def check_values(values: np.ndarray, wanted: Sequence[str], key: str) -> None:
    """Refuse values of ``wanted`` absent from ``values`` (obs column ``key``), listing those present."""
    present = set(values)
    unknown = [v for v in wanted if v not in present]
    if unknown:
        raise CliError(f"unknown {key} value(s) {unknown}; present: {sorted(present)}")


class OutputExistsError(FileExistsError):
    """The output path is taken and ``--overwrite`` was not given."""


def _taken(out: Path) -> bool:
    """Whether ``out`` holds something: a file, or a folder that is not empty."""
    return out.exists() and (not out.is_dir() or any(out.iterdir()))


def refuse_existing(out: Path, overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` naming ``out`` and ``--overwrite`` when ``out`` is taken."""
    if not overwrite and _taken(out):
        raise OutputExistsError(f"{out} already exists; pass --overwrite to replace it")


@contextmanager
def staged_output(out: Path, *, overwrite: bool, directory: bool) -> Iterator[Path]:
    """Yield a temporary path beside ``out`` to write to; move it to ``out`` whole when the block succeeds.

    An error or an interruption inside the block leaves ``out`` as it was and removes the temporary
    path. The move is one rename: without ``overwrite`` it fails when ``out`` was taken meanwhile (by
    another run), so two runs never mix their files; with ``overwrite`` the last run's output wins whole.
    An empty folder at ``out`` counts as free.
    """
    refuse_existing(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=f".{out.stem}.writing-", suffix=out.suffix, dir=out.parent)
        os.close(handle)
        staging = Path(name)
    try:
        yield staging
        _move_into_place(staging, out, overwrite)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.unlink(missing_ok=True)


def _move_into_place(staging: Path, out: Path, overwrite: bool) -> None:
    if overwrite and _taken(out):
        if staging.is_dir():
            swap_directories(staging, out)
        else:
            os.replace(staging, out)
        return
    try:
        if staging.is_dir():
            os.rename(staging, out)  # replaces an empty folder, fails on a taken one
        else:
            os.link(staging, out)  # creates out, fails when it exists
    except OSError as err:
        if _taken(out):
            raise OutputExistsError(
                f"{out} was written by another run meanwhile; pass --overwrite to replace it"
            ) from err
        raise
