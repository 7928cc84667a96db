"""Shared helpers of the test suite."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(name: str, path: Path) -> ModuleType:
    """Import the Python file ``path`` (a script outside any package) as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_train(model, **kwargs):
    kwargs.setdefault("max_epochs", 2)
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("enable_progress_bar", False)
    model.train(**kwargs)
    return model


def table_rows(text: str) -> list[list[str]]:
    """The cells of every row of the markdown tables in ``text`` (header rows included, rules left out), stripped."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and set(line) - set("|-: "):
            rows.append([cell.strip() for cell in line[1:-1].split("|")])
    return rows


def has_row(text: str, *cells: str) -> bool:
    """Whether a row of a markdown table in ``text`` starts with ``cells``."""
    return any(row[: len(cells)] == list(cells) for row in table_rows(text))
