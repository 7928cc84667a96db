"""Keep scvi-tools' and Lightning's chatter out of the package's own calls, unless asked for (``settings.verbosity``).

Nothing is changed at import: :func:`quiet` raises the chatty loggers' levels and ignores the known noisy
warnings only while a training or query call runs, then restores the loggers and the warning filters.
Only the standard library is imported here, so that ``scvi_trvae.utils`` (which re-exports ``settings``)
stays light; the progress bar is in ``_progress_bar.py``.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["CHATTY_LOGGERS", "NOISY_WARNINGS", "Settings", "quiet", "settings"]

#: Loggers whose INFO lines are details: devices found, Lightning's tips, "fit stopped", AnnData setup transferred.
CHATTY_LOGGERS = ("scvi", "lightning.pytorch", "lightning.fabric")
#: Regular expressions of warnings that give users of this package nothing to act on.
NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # a torch deprecation raised inside Lightning
    r"The number of training batches .* is smaller than the logging interval",
    r"Sparse CSR tensor support is in beta",
    r"Sparse invariant checks",
    r".*does not have many workers",
    r"Found \d+ module\(s\) in eval mode",  # query models keep their frozen layers in eval mode on purpose
)


class Settings:
    """Settings of scvi-trvae: ``scvi_trvae.utils.settings``.

    ``verbosity`` (a :mod:`logging` level or its name, ``logging.WARNING`` by default) decides what
    training and prediction print besides their progress bar: at ``WARNING`` or above, scvi-tools' and
    Lightning's INFO lines (devices found, tips, AnnData setup transferred) and the warnings in
    :data:`NOISY_WARNINGS` are held back during the package's calls; at ``INFO`` or below they all show.

    ``num_threads`` decides how many threads torch uses while a model trains: ``"auto"`` (the default) no more
    than torch's own setting and the cores that other processes leave free when training starts (on a busy
    machine torch's one thread per core slows training 10-20x; ``docs/performance.md``), an ``int`` exactly
    that many, ``None`` torch's setting untouched. torch's setting is restored after each training call.
    """

    def __init__(self) -> None:
        self._verbosity = logging.WARNING
        self._num_threads: int | str | None = "auto"

    @property
    def verbosity(self) -> int:
        """Logging level below which scvi-tools' and Lightning's messages are held back during the package's calls."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, level: int | str) -> None:
        value = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"verbosity must be a logging level or its name (e.g. 'INFO'), not {level!r}.")
        self._verbosity = value

    @property
    def num_threads(self) -> int | str | None:
        """Threads torch uses while a model trains: ``"auto"``, a positive ``int`` or ``None`` (torch's own)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: int | str | None) -> None:
        valid_int = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not (value is None or value == "auto" or valid_int):
            raise ValueError(f"num_threads must be 'auto', a positive int or None, not {value!r}.")
        self._num_threads = value

    def __repr__(self) -> str:
        return f"Settings(verbosity={logging.getLevelName(self._verbosity)!r}, num_threads={self._num_threads!r})"


#: The package's settings (``scvi_trvae.utils.settings``).
settings = Settings()


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hold back the chatty loggers' messages and the noisy warnings below ``settings.verbosity``, then restore.

    Only this block is affected: the loggers' levels and the warning filters are as before on exit.
    """
    if settings.verbosity <= logging.INFO:
        yield
        return
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(max(level, settings.verbosity))
    try:
        with warnings.catch_warnings():
            for message in NOISY_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
