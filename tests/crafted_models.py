"""Saved-model directories crafted to attack or break the loaders (shared by the persistence and CLI tests)."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import torch


class CreatesMarkerWhenUnpickled:
    """Unpickling this object runs a shell command that creates ``marker`` (what a malicious model would do)."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def malicious_model_dir(genuine_dir: Path, target_dir: Path, marker: Path) -> Path:
    """Copy a genuine saved model to ``target_dir`` and plant a code-running object in its ``model.pt``.

    The copy still holds everything a real model does (weights, registry, saved AnnData), so a
    loader that unpickled it without restriction would load it without error after creating ``marker``.
    """
    shutil.copytree(genuine_dir, target_dir)
    path = target_dir / "model.pt"
    content = torch.load(path, weights_only=False)  # our own file: trusted
    content["attr_dict"]["notes_"] = CreatesMarkerWhenUnpickled(marker)
    torch.save(content, path)
    return target_dir


def truncated_copy(genuine_dir: Path, target_dir: Path, keep_fraction: float = 0.5) -> Path:
    """Copy a saved model and cut its ``model.pt`` to ``keep_fraction`` of its bytes (0: an empty file)."""
    shutil.copytree(genuine_dir, target_dir)
    path = target_dir / "model.pt"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return target_dir
