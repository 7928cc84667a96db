"""The per-epoch progress bar of :meth:`scvi_trvae.TRVAE.train`, drawn on stderr."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import ProgressBar

__all__ = ["StderrProgressBar", "with_progress_bar"]


class StderrProgressBar(ProgressBar):
    """One bar over a fit's epochs, with the training loss, on stderr (scvi-tools' own bar writes to stdout)."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._bar: Any = None

    @property
    def is_enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._enabled

    def disable(self) -> None:
        """Stop drawing the bar (Lightning calls this on processes other than the first)."""
        self._enabled = False

    def enable(self) -> None:
        """Draw the bar."""
        self._enabled = True

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Open the bar at the epoch training starts from (later than 0 when resumed)."""
        from tqdm.auto import tqdm

        self._bar = tqdm(
            total=trainer.max_epochs, initial=trainer.current_epoch, desc="Training", file=sys.stderr,
            disable=not self._enabled, dynamic_ncols=True,
        )  # fmt: skip

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Advance by one epoch and show the logged losses."""
        if self._bar is not None:
            metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
            self._bar.set_postfix(metrics, refresh=False)
            self._bar.update(1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def with_progress_bar(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Trainer arguments with the per-epoch bar drawn on stderr by :class:`StderrProgressBar`.

    Unchanged when the bar is off (``enable_progress_bar=False``), when Lightning's per-step bar is asked
    for (``simple_progress_bar=False``) or when ``callbacks`` already holds a progress bar.
    """
    callbacks = list(trainer_kwargs.get("callbacks") or [])
    if (
        not trainer_kwargs.get("enable_progress_bar", True)
        or not trainer_kwargs.get("simple_progress_bar", True)
        or any(isinstance(callback, ProgressBar) for callback in callbacks)
    ):
        return trainer_kwargs
    return {**trainer_kwargs, "simple_progress_bar": False, "callbacks": [*callbacks, StderrProgressBar()]}
