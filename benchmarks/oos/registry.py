"""The registry of benchmark methods: adding a method is one :func:`register` call (see :mod:`oos.methods`)."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from .paths import REPO
from .splits import Split

#: What every trained method's result depends on by default: the whole package.
PACKAGE_SOURCES = ("src/scvi_trvae",)
#: Part of every method's code version: the scorer.
SCORER_SOURCES = ("src/scvi_trvae/metrics.py",)

#: Epochs of a method that picks its own from the data size (``TRVAE.train(max_epochs=None)``).
AUTO_EPOCHS = "auto"


class NotApplicable(Exception):
    """A method that cannot run on this kind of data set."""


class FitPredict(Protocol):
    """Train on ``split.train``; return the prediction for ``split.control`` under ``split.target``.

    The prediction is a dense cells x genes array on the scale of ``split.real_target``.
    """

    def __call__(self, split: Split, seed: int, epochs: int | str, **options: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class MethodSpec:
    """A method of the benchmark and how to run it."""

    fit_predict: FitPredict
    description: str
    #: Default training epochs (None: nothing is trained; "auto": the method picks them from the data size).
    epochs: int | str | None = None
    #: "all": every seed of --seeds; "one": seed 0 only (slow); "deterministic": no randomness, run once.
    seeds: Literal["all", "one", "deterministic"] = "all"
    #: Keyword arguments of ``fit_predict`` (e.g. the variant of a model).
    options: dict[str, Any] = field(default_factory=dict)
    #: The method needs raw counts (not run on log-normalised data sets).
    counts_only: bool = False
    #: Bump when this method's code changes: its cached results are refit, the other methods' stay valid.
    revision: int = 0
    #: Files or folders (relative to the repository) the result depends on, besides the module defining
    #: ``fit_predict`` and the scorer; hashed into :meth:`code_version`. Empty: the whole package.
    sources: tuple[str, ...] = ()
    #: Raises :class:`NotApplicable` (with the reason) when the method cannot run here with the given epochs;
    #: asked without fitting, so that ``--cached-only`` can give the reason a result is absent.
    check: Callable[[int | str], None] | None = None

    def code_version(self) -> str:
        """A hash of the source files this method's results depend on (see :func:`hash_sources`)."""
        module = Path(inspect.getsourcefile(self.fit_predict)).resolve()
        try:
            module_path = module.relative_to(REPO).as_posix()
        except ValueError:  # a method defined outside the repository (tests)
            module_path = str(module)
        return hash_sources((*(self.sources or PACKAGE_SOURCES), *SCORER_SOURCES, module_path))

    def seeds_for(self, n_seeds: int) -> list[int]:
        """The seeds this method is run with."""
        return list(range(n_seeds)) if self.seeds == "all" else [0]

    def seeds_label(self, seeds: Sequence[int]) -> str:
        """How the tables describe the seeds of this method."""
        if self.seeds == "deterministic":
            return "deterministic"
        return f"{len(seeds)}" + (" (one seed)" if self.seeds == "one" else "")

    def fit(self, split: Split, seed: int, epochs: int | str) -> np.ndarray:
        """Run ``fit_predict`` with this method's options."""
        return self.fit_predict(split, seed, epochs, **self.options)


#: Every method, in the order of the tables.
METHODS: dict[str, MethodSpec] = {}


def register(name: str, fit_predict: FitPredict, description: str, **settings: Any) -> MethodSpec:
    """Add a method to :data:`METHODS` (``settings``: the other fields of :class:`MethodSpec`)."""
    if name in METHODS:
        raise ValueError(f"a benchmark method named {name!r} is already registered")
    METHODS[name] = MethodSpec(fit_predict, description, **settings)
    return METHODS[name]


def hash_sources(paths: Sequence[str], root: Path = REPO) -> str:
    """The first 12 hex digits of a SHA-256 over the ``.py`` files at ``paths`` (files or folders under ``root``).

    Each file contributes its path relative to ``root`` and its bytes; missing paths contribute their name.
    Computed once per process and set of paths: a run's results carry the code it started with.
    """
    return _hash_sources(tuple(sorted(set(paths))), root)


@cache
def _hash_sources(paths: tuple[str, ...], root: Path) -> str:
    digest = hashlib.sha256()
    for name in paths:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() if file.is_relative_to(root) else name.encode())
            digest.update(file.read_bytes() if file.exists() else b"<missing>")
    return digest.hexdigest()[:12]
