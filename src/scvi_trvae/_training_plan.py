"""Training plan of :class:`~scvi_trvae.TRVAE`: scvi-tools' plan that stops at the first non-finite loss."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan
from torch.distributions import Distribution

#: What to try when a term of the loss goes non-finite.
_ADVICE = {
    "reconstruction": "check the input for extreme values and lower the learning rate (plan_kwargs={'lr': ...})",
    "KL": "lower the learning rate (plan_kwargs={'lr': ...}) or kl_weight",
    "MMD": "lower mmd_weight or the learning rate (plan_kwargs={'lr': ...})",
}
_DIVERGED_ADVICE = "lower the learning rate (plan_kwargs={'lr': ...}; the default is 1e-3)"
#: Largest absolute weight (when all are finite) reported as a sign of a diverged optimisation.
_DIVERGED_WEIGHT = 1e6


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message says where and which term."""


@contextmanager
def _distribution_validation(enabled: bool) -> Iterator[None]:
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


class TRVAETrainingPlan(TrainingPlan):
    """:class:`scvi.train.TrainingPlan` that raises :class:`NonFiniteLossError` on a NaN or infinite loss.

    Without the check a diverged optimisation either trains on with NaN weights (and gives NaN
    predictions) or fails deep inside ``torch.distributions`` with a message about invalid
    parameters. The loss of every training and validation minibatch is checked (one scalar per
    step); when it is not finite, or the forward pass produced non-finite distribution
    parameters, the reconstruction, KL and MMD terms are examined and the error names those that
    went non-finite, the epoch and the step, and whether the weights themselves have diverged.

    Parameters
    ----------
    module, **kwargs
        As in :class:`scvi.train.TrainingPlan`.
    """

    _stage: str = "training"
    _batch_idx: int = 0

    def training_step(self, batch, batch_idx):
        """Run the training step of :class:`scvi.train.TrainingPlan`, checking for a finite loss."""
        self._stage, self._batch_idx = "training", batch_idx
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch, batch_idx):
        """Run the validation step of :class:`scvi.train.TrainingPlan`, checking for a finite loss."""
        self._stage, self._batch_idx = "validation", batch_idx
        return super().validation_step(batch, batch_idx)

    def forward(self, *args, **kwargs):
        """Run the module's forward pass; raise :class:`NonFiniteLossError` when the loss is not finite."""
        try:
            outputs = super().forward(*args, **kwargs)
        except ValueError as error:  # torch.distributions refusing NaN / inf parameters
            if "invalid values" not in str(error):
                raise
            with _distribution_validation(False):
                outputs = super().forward(*args, **kwargs)
            self._raise_non_finite(outputs[-1] if isinstance(outputs[-1], LossOutput) else None, error)
        computed_loss = isinstance(outputs, tuple) and len(outputs) == 3 and isinstance(outputs[2], LossOutput)
        if computed_loss and not bool(torch.isfinite(outputs[2].loss).all()):
            self._raise_non_finite(outputs[2], None)
        return outputs

    def _raise_non_finite(self, loss_output: LossOutput | None, cause: BaseException | None) -> None:
        where = (
            f"at epoch {self.current_epoch + 1}, {self._stage} minibatch {self._batch_idx + 1} of the epoch "
            f"(global step {self.global_step})"
        )
        weights = [parameter.detach() for parameter in self.module.parameters()]
        n_bad_weights = sum(int((~torch.isfinite(w)).sum()) for w in weights)
        largest = max(
            (float(w.abs().max()) for w in weights if w.numel() and bool(torch.isfinite(w).all())), default=0.0
        )
        diverged = ""
        if n_bad_weights:
            diverged = f" {n_bad_weights} model weights are non-finite: an earlier optimizer step diverged."
        elif largest > _DIVERGED_WEIGHT:
            diverged = f" Model weights have grown to {largest:.3g}: an earlier optimizer step diverged."
        values = {}
        if loss_output is not None:
            terms = {
                "reconstruction": loss_output.reconstruction_loss_sum,
                "KL": loss_output.kl_local_sum,
                "MMD": (loss_output.extra_metrics or {}).get("mmd"),
            }
            values = {name: _as_float(value) for name, value in terms.items() if value is not None}
        bad = [name for name, value in values.items() if not math.isfinite(value)]
        if bad:
            advice = [_DIVERGED_ADVICE] if diverged else [_ADVICE[name] for name in bad]
            noun = "term" if len(bad) == 1 else "terms"
            message = (
                f"Non-finite {_join(bad)} {noun} ({', '.join(f'{name}={values[name]}' for name in bad)}) "
                f"{where}.{diverged} To fix: {'; '.join(advice)}."
            )
        elif loss_output is not None and cause is None:
            finite = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
            message = (
                f"Non-finite total loss ({_as_float(loss_output.loss)}) {where} although its terms are finite "
                f"({finite}): the weighted sum overflowed. To fix: lower mmd_weight or kl_weight."
            )
        else:
            message = f"Non-finite values in the forward pass {where}.{diverged} To fix: {_DIVERGED_ADVICE}."
        raise NonFiniteLossError(message) from cause


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _as_float(value) -> float:
    """Convert a tensor (summed) or number to a Python float."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().sum().cpu())
    return float(value)
