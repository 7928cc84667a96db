"""The checked arguments of :func:`~scvi_trvae.datasets.synthetic_perturbation`."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def _cell_type_names(n: int) -> list[str]:
    """Return ``type_A``, ..., ``type_Z``, ``type_AA``, ... (spreadsheet-column style)."""
    letters = string.ascii_uppercase
    names = []
    for i in range(n):
        label = ""
        k = i + 1
        while k > 0:
            k, rem = divmod(k - 1, 26)
            label = letters[rem] + label
        names.append(f"type_{label}")
    return names


def _split_counts(total: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``proportions`` (largest-remainder rounding)."""
    exact = total * proportions
    counts = np.floor(exact).astype(int)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def _check_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` after checking that it is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _resolve_proportions(conditions: list[str], condition_proportions: Mapping[str, float] | None) -> np.ndarray:
    if condition_proportions is None:
        return np.full(len(conditions), 1.0 / len(conditions))
    unknown = set(condition_proportions) - set(conditions)
    missing = set(conditions) - set(condition_proportions)
    if unknown or missing:
        raise ValueError(
            f"`condition_proportions` must have exactly the keys {conditions}; "
            f"missing {sorted(missing)}, unknown {sorted(map(str, unknown))}."
        )
    props = np.array([float(condition_proportions[c]) for c in conditions])
    if not np.all(np.isfinite(props)) or np.any(props <= 0):
        raise ValueError(
            f"`condition_proportions` values must be positive and finite, got {dict(condition_proportions)}."
        )
    return props / props.sum()


@dataclass(frozen=True)
class SyntheticDesign:
    """The checked arguments of :func:`synthetic_perturbation`."""

    n_cell_types: int
    n_genes: int
    conditions: list[str]
    n_cells_per_group: int
    n_response_genes: int
    seed: int
    n_marker_genes: int
    shared_response_fraction: float
    response_scale: float
    library_size: float
    state_dependence: float
    proportions: np.ndarray
    cells_per_condition: np.ndarray

    @property
    def cell_types(self) -> list[str]:
        return _cell_type_names(self.n_cell_types)

    @property
    def perturbed(self) -> list[str]:
        return self.conditions[1:]

    @classmethod
    def validated(
        cls, *, conditions: Sequence[str], condition_proportions: Mapping[str, float] | None, **values
    ) -> SyntheticDesign:
        """Check every argument and derive the number of cells per condition."""
        for name, minimum in [("n_cell_types", 1), ("n_genes", 1), ("n_cells_per_group", 1)]:
            values[name] = _check_int(values[name], name, minimum)
        for name in ("n_response_genes", "n_marker_genes", "seed"):
            values[name] = _check_int(values[name], name, minimum=0)
        names = _check_conditions(conditions)
        if values["n_response_genes"] > values["n_genes"]:
            raise ValueError(
                f"`n_response_genes` ({values['n_response_genes']}) cannot exceed `n_genes` ({values['n_genes']})."
            )
        fraction, scale, library_size = (
            values["shared_response_fraction"], values["response_scale"], values["library_size"]
        )  # fmt: skip
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"`shared_response_fraction` must lie in [0, 1], got {fraction}.")
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"`response_scale` must be finite and >= 0, got {scale}.")
        if not np.isfinite(library_size) or library_size <= 0:
            raise ValueError(f"`library_size` must be positive, got {library_size}.")
        if not np.isfinite(values["state_dependence"]) or values["state_dependence"] < 0:
            raise ValueError(f"`state_dependence` must be finite and >= 0, got {values['state_dependence']}.")
        proportions = _resolve_proportions(names, condition_proportions)
        cells_per_condition = _split_counts(values["n_cells_per_group"] * len(names), proportions)
        if np.any(cells_per_condition == 0):
            empty = [c for c, n in zip(names, cells_per_condition, strict=True) if n == 0]
            raise ValueError(
                f"`condition_proportions` leaves no cells in condition(s) {empty}; "
                "increase `n_cells_per_group` or those proportions."
            )
        return cls(conditions=names, proportions=proportions, cells_per_condition=cells_per_condition, **values)


def _check_conditions(conditions: Sequence[str]) -> list[str]:
    """Return the condition names as strings after checking there are at least two, unique and '/'-free."""
    if isinstance(conditions, str):
        raise ValueError("`conditions` must be a sequence of condition names, not a single string.")
    names = [str(c) for c in conditions]
    if len(names) < 2:
        raise ValueError(f"`conditions` needs at least two conditions (control first), got {names}.")
    if len(set(names)) != len(names):
        raise ValueError(f"`conditions` must be unique, got {names}.")
    if any("/" in c or not c for c in names):
        raise ValueError(f"Condition names must be non-empty and must not contain '/', got {names}.")
    return names
