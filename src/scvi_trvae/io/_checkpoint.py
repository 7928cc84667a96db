"""Training that survives interruption: epoch checkpoints that resume exactly, and a usable model after Ctrl-C."""

from __future__ import annotations

import json
import signal
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from scvi.model.base import BaseModelClass
from scvi.train import TrainRunner

from ._atomic_write import replace_directory
from ._history import portable_history
from ._persistence import MODEL_FILE, UnsafeModelFileError, pickle_globals, torch_default_globals

#: Lightning's training state (weights, optimiser, loop counters, random states) inside a checkpoint directory.
STATE_FILE = "training_state.ckpt"


class TrainingCheckpoint(Callback):
    """Checkpoint training every ``every_n_epochs`` epochs so that an interrupted run can resume.

    Pass it to :meth:`~scvi_trvae.TRVAE.train` in ``callbacks``. Every ``every_n_epochs`` epochs
    (and after the last one) ``dirpath`` is replaced, atomically, by a saved model (``model.pt``,
    loadable with :meth:`~scvi_trvae.TRVAE.load`) and Lightning's training state
    (``training_state.ckpt``: optimiser, epoch, the random states of dropout and of the
    condition-balanced minibatches, and the loss history). Resuming from it with
    ``ckpt_path=checkpoint.resume_path`` continues to the requested ``max_epochs`` and gives the
    same weights and losses as an uninterrupted run (exactly on CPU; on GPU up to its usual
    non-determinism). The same call starts from scratch when no checkpoint exists yet, so a
    script can simply be run again after a crash.

    Parameters
    ----------
    dirpath
        Directory of the checkpoint; it holds the latest one only.
    every_n_epochs
        Save after every ``every_n_epochs``-th epoch.

    Examples
    --------
    >>> checkpoint = scvi_trvae.io.TrainingCheckpoint("trvae_checkpoint", every_n_epochs=10)
    >>> model.train(max_epochs=400, callbacks=[checkpoint], ckpt_path=checkpoint.resume_path)
    """

    def __init__(self, dirpath: str | Path, every_n_epochs: int = 1):
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}.")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self._restored: dict | None = None
        self._trainer = None
        self._history: dict[str, pd.DataFrame] | None = None  # the history being saved by _save

    @property
    def resume_path(self) -> str | None:
        """Path of the training state to pass as ``ckpt_path``, or ``None`` when there is no checkpoint yet.

        The file is checked to hold nothing but tensors and plain values before Lightning reads it.
        """
        path = self.dirpath / STATE_FILE
        if not path.is_file():
            return None
        unexpected = sorted(pickle_globals(path) - set(torch_default_globals()))
        if unexpected:
            raise UnsafeModelFileError(
                f"Refusing to resume from {path}: it holds pickled objects of types that a training checkpoint "
                f"never contains ({', '.join(unexpected)}); unpickling them could run code."
            )
        return str(path)

    # ------------------------------------------------------------------ saving
    def setup(self, trainer, pl_module, stage: str) -> None:
        """Keep the trainer, whose sampler and logger :meth:`state_dict` reads."""
        self._trainer = trainer

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Save after every ``every_n_epochs``-th epoch and after the last one."""
        epochs_done = trainer.current_epoch + 1
        if epochs_done % self.every_n_epochs == 0 or epochs_done == trainer.max_epochs:
            self._save(trainer)

    def _save(self, trainer) -> None:
        model = trainer._model  # set by scvi-tools' TrainRunner for its own SaveCheckpoint
        self._history = history = _combined_history(model, _logged_history(trainer))
        splitter = trainer.datamodule
        saved_state = {name: getattr(model, name) for name in ("history_", "is_trained_")}
        model.history_, model.is_trained_ = portable_history(history), True
        model.train_indices, model.validation_indices, model.test_indices = (
            getattr(splitter, name, None) for name in ("train_idx", "val_idx", "test_idx")
        )

        def write(staging: Path) -> None:
            BaseModelClass.save(model, str(staging), overwrite=True)
            trainer.save_checkpoint(staging / STATE_FILE, weights_only=False)

        try:
            replace_directory(self.dirpath, write, {MODEL_FILE, STATE_FILE})
        finally:
            model.history_, model.is_trained_ = saved_state["history_"], saved_state["is_trained_"]
            self._history = None

    def state_dict(self) -> dict:
        """Random states and history, stored in the training state when it is saved."""
        trainer = self._trainer
        sampler_rng = _train_sampler_rng(trainer)
        history = self._history
        if history is None:  # Lightning saving on its own (e.g. a ModelCheckpoint callback)
            history = _combined_history(trainer._model, _logged_history(trainer))
        return {
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "sampler_rng": None if sampler_rng is None else json.dumps(sampler_rng.bit_generator.state),
            "history": {
                key: {"epochs": frame.index.tolist(), "values": frame.iloc[:, 0].astype(float).tolist()}
                for key, frame in history.items()
            },
            "history_index_names": {key: frame.index.name for key, frame in history.items()},
        }

    # ------------------------------------------------------------------ resuming
    def load_state_dict(self, state_dict: dict) -> None:
        """Keep the saved states until training starts (the data loaders do not exist yet)."""
        self._restored = state_dict

    def on_train_start(self, trainer, pl_module) -> None:
        """On resume: restore the random states and the history saved with the checkpoint."""
        if self._restored is None:
            return
        state, self._restored = self._restored, None
        sampler_rng = _train_sampler_rng(trainer)
        if sampler_rng is not None and state["sampler_rng"] is not None:
            sampler_rng.bit_generator.state = json.loads(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        # An uninterrupted run creates the next epoch's data-loader iterator at this point, which
        # draws one seed from torch's generator; a resumed run created it before the states were
        # restored. Draw it here so that the two runs continue with the same random stream.
        torch.empty((), dtype=torch.int64).random_()
        model = trainer._model
        model.history_ = {
            key: pd.DataFrame(
                {key: entry["values"]},
                index=pd.Index(entry["epochs"], name=state["history_index_names"].get(key)),
            )
            for key, entry in state["history"].items()
        }
        model.is_trained_ = True  # scvi-tools then appends the new epochs to this history


def _train_sampler_rng(trainer) -> np.random.Generator | None:
    """Return the random generator of the training minibatch sampler (:class:`ConditionBalancedSampler`)."""
    loader = trainer.train_dataloader if trainer is not None else None
    return getattr(getattr(loader, "sampler", None), "_rng", None)


def _logged_history(trainer) -> dict[str, pd.DataFrame]:
    """Return the run's history so far, with the epoch whose metrics are still to reach the logger."""
    history = {key: frame.copy() for key, frame in (getattr(trainer.logger, "history", None) or {}).items()}
    connector = trainer._logger_connector  # the epoch's metrics reach the logger after the epoch-end hooks
    pending = connector.metrics["log"] if connector._first_loop_iter is None else {}
    for key, value in pending.items():
        if key in ("epoch", "step"):
            continue
        frame = history.setdefault(key, pd.DataFrame(columns=[key]).rename_axis("epoch"))
        frame.loc[trainer.current_epoch, key] = float(value)
    return history


def _combined_history(model, run_history: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Append the run's history to the model's earlier one, as scvi-tools does after training."""
    earlier = model.history_ if model.is_trained_ and isinstance(model.history_, dict) else {}
    combined = dict(run_history)
    for key, before in earlier.items():
        if key in run_history:
            after = run_history[key].copy()
            after.index = pd.Index(np.arange(len(before), len(before) + len(after)), name=before.index.name)
            combined[key] = pd.concat([before, after])
        else:
            combined[key] = before
    return combined


class InterruptibleTrainRunner(TrainRunner):
    """scvi-tools' :class:`~scvi.train.TrainRunner` that turns Ctrl-C into an orderly stop.

    Lightning answers Ctrl-C by tearing training down and raising ``SystemExit``. This runner
    catches that, leaves the model usable (evaluation mode, on its device, marked trained when at
    least one epoch completed, history kept), restores the Ctrl-C handler Lightning disabled, and
    warns with what was kept and how to resume.
    """

    def __call__(self):
        """Run training; return normally after Ctrl-C, with a warning."""
        sigint_handler = signal.getsignal(signal.SIGINT)
        try:
            return super().__call__()
        except (KeyboardInterrupt, SystemExit) as error:
            if not (isinstance(error, KeyboardInterrupt) or isinstance(error.__context__, KeyboardInterrupt)):
                raise
        if threading.current_thread() is threading.main_thread() and sigint_handler is not None:
            signal.signal(signal.SIGINT, sigint_handler)
        self._keep_interrupted_model()
        return None

    def _keep_interrupted_model(self) -> None:
        model, trainer = self.model, self.trainer
        completed, requested = trainer.current_epoch, trainer.max_epochs
        model.train_indices, model.validation_indices, model.test_indices = (
            getattr(self.data_splitter, name, None) for name in ("train_idx", "val_idx", "test_idx")
        )
        model.module.eval()
        model.to_device(self.device)
        model.trainer = trainer
        model.is_trained_ = bool(model.is_trained_ or completed > 0)
        state = (
            f"it keeps its weights at that point ({completed} complete epochs) and can be used and saved"
            if model.is_trained_
            else "no epoch completed, so the model is not trained"
        )
        warnings.warn(
            f"Training was interrupted (Ctrl-C) during epoch {completed + 1} of {requested}: {state}. "
            f"To continue to {requested} epochs, train with a scvi_trvae.io.TrainingCheckpoint in `callbacks` and "
            "pass ckpt_path=checkpoint.resume_path (see docs/persistence.md).",
            UserWarning,
            stacklevel=4,
        )
