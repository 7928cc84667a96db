"""Reading and checking a saved :class:`~scvi_trvae.TRVAEEnsemble`'s directory (``ensemble.json`` and its members)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._calibration import calibration_problems
from .baselines import reference_shift_problem
from .io._persistence import ModelFileError
from .model._model import TRVAE

MANIFEST = "ensemble.json"
_MEMBER_DIR = re.compile(r"member_(\d+)")

if TYPE_CHECKING:
    from anndata import AnnData


class NoEnsembleError(ModelFileError, FileNotFoundError):
    """A directory without ``ensemble.json`` or members: no ensemble was saved there (it may hold one model)."""


def member_names(directory: Path) -> list[str]:
    return sorted((n for n in os.listdir(directory) if _MEMBER_DIR.fullmatch(n)), key=lambda n: int(n[7:]))


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read ``ensemble.json`` and check it against the members in ``directory``; one clear error for each problem."""
    if not directory.is_dir():
        raise NoEnsembleError(f"No saved ensemble at {directory}: the directory does not exist.")
    path, present = directory / MANIFEST, member_names(directory)
    if not path.is_file():
        if present:
            raise ModelFileError(
                f"{directory} holds ensemble members ({', '.join(present)}) but no {MANIFEST}: the save that "
                "wrote it did not finish, or the file was deleted. Save the ensemble again."
            )
        raise NoEnsembleError(f"{directory} holds no saved TRVAEEnsemble ({MANIFEST} is missing).")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is not valid JSON ({error}): it is damaged or was edited.") from error
    problems = _manifest_problems(manifest)
    if problems:
        raise ModelFileError(f"{path} is damaged or was edited: {'; '.join(problems)}. Save the ensemble again.")
    listed = [f"member_{k}" for k in range(len(manifest["seeds"]))]
    missing, extra = [n for n in listed if n not in present], [n for n in present if n not in listed]
    if missing or extra:
        problem = f"{', '.join(missing)} missing" if missing else f"also {', '.join(extra)}, which it does not list"
        raise ModelFileError(
            f"{directory} does not match its {MANIFEST}: it lists {len(listed)} members (seeds {manifest['seeds']}) "
            f"but the directory holds {', '.join(present) or 'none'} ({problem}). A member was deleted or added, or "
            f"{MANIFEST} was edited; save the ensemble again."
        )
    return manifest


def _manifest_problems(manifest: Any) -> list[str]:
    if not isinstance(manifest, dict):
        return [f"it holds a {type(manifest).__name__}, not the ensemble's settings"]
    problems = [f"no {key!r}" for key in ("seeds", "shift_weight", "model_kwargs") if key not in manifest]
    seeds, weight = manifest.get("seeds", [0]), manifest.get("shift_weight", 1.0)
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.append(f"'seeds' must be a list of one or more integers, got {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"'seeds' must be distinct, got {seeds!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
        problems.append(f"'shift_weight' must be a number between 0 and 1, got {weight!r}")
    deviation = manifest.get("deviation_weight", 1.0)
    if isinstance(deviation, bool) or not isinstance(deviation, int | float) or not 0.0 <= deviation < float("inf"):
        problems.append(f"'deviation_weight' must be a number >= 0, got {deviation!r}")
    reference = manifest.get("reference_shift", "pooled")  # absent from ensembles saved before it existed
    if (problem := reference_shift_problem(reference, "'reference_shift'")) is not None:
        problems.append(problem)
    if not isinstance(scaling := manifest.get("spread_scaling", False), bool):  # absent from older ensembles
        problems.append(f"'spread_scaling' must be true or false, got {scaling!r}")
    labels_key = manifest.get("labels_key")  # absent from ensembles saved before version 0.2
    if labels_key is not None and not isinstance(labels_key, str):
        problems.append(f"'labels_key' must be an obs column name or null, got {labels_key!r}")
    problems += calibration_problems(manifest.get("calibration"))
    if not isinstance(manifest.get("model_kwargs", {}), dict):
        problems.append(f"'model_kwargs' must be a mapping, got {manifest['model_kwargs']!r}")
    return problems


def load_member(directory: Path, k: int, adata: AnnData | bool | None, **load_kwargs: Any) -> TRVAE:
    """:meth:`TRVAE.load` of member ``k``; its errors say which member of which ensemble failed."""
    try:
        return TRVAE.load(str(directory / f"member_{k}"), adata=adata, **load_kwargs)
    except ModelFileError as error:
        raise type(error)(f"Member {k} of the ensemble in {directory} cannot be loaded: {error}") from error
