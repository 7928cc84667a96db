"""Training plan of :class:`~scvi_trvae.TRVAE`: scvi-tools' plan that stops at the first non-finite loss."""

from __future__ import annotations

import math

import torch
from scvi.module.base import LossOutput
from scvi.train import TrainingPlan

from ._module import distribution_validation

#: What to try when a term of the loss goes non-finite.
_ADVICE = {
    "reconstruction": "check the input for extreme values and lower the learning rate (plan_kwargs={'lr': ...})",
    "KL": "lower the learning rate (plan_kwargs={'lr': ...}) or kl_weight",
    "MMD": "lower mmd_weight or the learning rate (plan_kwargs={'lr': ...})",
}
_DIVERGED_ADVICE = "lower the learning rate (plan_kwargs={'lr': ...}; the default is 1e-3)"
#: Largest absolute weight (when all are finite) reported as a sign of a diverged optimisation.
_DIVERGED_WEIGHT = 1e6
#: Devices whose fused Adam kernel is used: one kernel per step instead of a Python loop over the tensors
#: (on CPU with 12.5M parameters in 22 tensors, 6 ms per step against 67-86 ms; ``docs/performance.md``).
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message says where and which term."""


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
    _pending_non_finite: torch.Tensor | None = None
    _pending_since: int = 0

    _epoch_sums: dict[str, torch.Tensor] | None = None
    _epoch_cells: int = 0

    def training_step(self, batch, batch_idx):
        """Run a training step, checking for a finite loss; log the loss terms once per epoch.

        scvi-tools' step logs 6-7 values through Lightning on every step, about a quarter of a step's
        time for a small network on the CPU (``docs/performance.md``). Here the terms are summed on the
        device and logged as their epoch means on the epoch's last step: the same history, per epoch.
        With ``on_step=True`` logging, or an epoch of unknown length, scvi-tools' step runs unchanged.
        """
        self._stage, self._batch_idx = "training", batch_idx
        n_batches = self.trainer.num_training_batches
        if self.on_step or not math.isfinite(n_batches):
            return super().training_step(batch, batch_idx)
        if "kl_weight" in self.loss_kwargs:
            self.loss_kwargs.update({"kl_weight": self.kl_weight})
        _, _, loss_output = self.forward(batch, loss_kwargs=self.loss_kwargs)
        self._add_to_epoch(loss_output)
        if batch_idx + 1 >= n_batches:
            self._log_epoch_means()
        return loss_output.loss

    def _add_to_epoch(self, loss_output: LossOutput) -> None:
        n_cells = loss_output.n_obs_minibatch
        self.train_metrics["elbo_train"].update(
            reconstruction_loss=loss_output.reconstruction_loss_sum, kl_local=loss_output.kl_local_sum,
            kl_global=loss_output.kl_global_sum, n_obs_minibatch=n_cells,
        )  # fmt: skip
        terms = {"train_loss": loss_output.loss}
        for key in loss_output.extra_metrics_keys:
            value = loss_output.extra_metrics[key]
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                terms[f"{key}_train"] = value
        sums = self._epoch_sums if self._epoch_sums is not None else {}
        with torch.no_grad():
            for name, value in terms.items():
                weighted = value.detach().float() * n_cells
                sums[name] = sums[name] + weighted if name in sums else weighted
        self._epoch_sums, self._epoch_cells = sums, self._epoch_cells + n_cells

    def _log_epoch_means(self) -> None:
        sums, cells = self._epoch_sums or {}, max(self._epoch_cells, 1)
        self._epoch_sums, self._epoch_cells = None, 0
        for name, total in sums.items():
            self.log(name, total / cells, on_step=False, on_epoch=True, prog_bar=name == "train_loss",
                     sync_dist=self.use_sync_dist)  # fmt: skip
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, sync_dist=self.use_sync_dist)
        if "kl_weight" in self.loss_kwargs:
            self.log("kl_weight", float(self.kl_weight), on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        """Run the validation step of :class:`scvi.train.TrainingPlan`, checking for a finite loss."""
        self._stage, self._batch_idx = "validation", batch_idx
        return super().validation_step(batch, batch_idx)

    def compute_and_log_metrics(self, loss_output: LossOutput, metrics: dict, mode: str) -> None:
        """Log the loss terms as :class:`scvi.train.TrainingPlan` does, under ``no_grad`` instead of inference mode.

        scvi-tools runs this under ``torch.inference_mode()``, so Lightning's accumulators become
        inference tensors, and under DDP the epoch-end reduction (an in-place division) fails with
        "Inplace update to inference tensor outside InferenceMode".
        """
        with torch.no_grad():
            TrainingPlan.compute_and_log_metrics.__wrapped__(self, loss_output, metrics, mode)

    def _optimizer_creator_fn(self, optimizer_cls: type[torch.optim.Optimizer]):
        """Create Adam / AdamW with the fused kernel where every parameter supports it."""

        def create(params) -> torch.optim.Optimizer:
            params = list(params)
            fused = bool(params) and all(
                parameter.is_floating_point() and parameter.device.type in _FUSED_ADAM_DEVICES for parameter in params
            )
            return optimizer_cls(params, lr=self.lr, eps=self.eps, weight_decay=self.weight_decay, fused=fused or None)

        return create

    def forward(self, *args, **kwargs):
        """Run the module's forward pass; raise :class:`NonFiniteLossError` when the loss is not finite."""
        try:
            outputs = super().forward(*args, **kwargs)
        except ValueError as error:  # torch.distributions refusing NaN / inf parameters
            if "invalid values" not in str(error):
                raise
            with distribution_validation(False):
                outputs = super().forward(*args, **kwargs)
            self._raise_non_finite(outputs[-1] if isinstance(outputs[-1], LossOutput) else None, error)
        computed_loss = isinstance(outputs, tuple) and len(outputs) == 3 and isinstance(outputs[2], LossOutput)
        if computed_loss:
            self._check_finite(outputs[2])
        return outputs

    def _check_finite(self, loss_output: LossOutput) -> None:
        """Raise on a non-finite loss; on an accelerator only every ``trainer.log_every_n_steps`` steps.

        Reading the loss on the host waits for the device, so on a GPU the check of each step is
        accumulated on the device and read with the logging interval and at the epoch's end.
        """
        finite = torch.isfinite(loss_output.loss).all()
        if not self._defer_finite_check(loss_output.loss):
            if not bool(finite):
                self._raise_non_finite(loss_output, None)
            return
        if self._pending_non_finite is None:
            self._pending_non_finite, self._pending_since = ~finite, self.global_step
        else:
            self._pending_non_finite |= ~finite
        interval = max(int(getattr(self.trainer, "log_every_n_steps", 1) or 1), 1)
        if (self.global_step + 1) % interval == 0:
            self._read_pending_non_finite()

    def _defer_finite_check(self, loss: torch.Tensor) -> bool:
        return loss.device.type != "cpu" and self._stage == "training"

    def _read_pending_non_finite(self) -> None:
        pending, self._pending_non_finite = self._pending_non_finite, None
        if pending is not None and bool(pending):
            where = (
                f"between global steps {self._pending_since} and {self.global_step} (epoch {self.current_epoch + 1}; "
                "on an accelerator the loss is checked every `log_every_n_steps` steps)"
            )
            raise NonFiniteLossError(f"Non-finite training loss {where}. To fix: {_DIVERGED_ADVICE}.")

    def on_fit_end(self) -> None:
        """Return weights trained in reduced precision (``precision="bf16-true"``) to float32.

        Lightning converts the module for ``*-true`` precisions and leaves it so; every query
        method, :meth:`~scvi_trvae.TRVAE.save` and a later :meth:`~scvi_trvae.TRVAE.train` expect
        float32 weights, which hold the reduced-precision values exactly.
        """
        if any(p.is_floating_point() and p.dtype != torch.float32 for p in self.module.parameters()):
            self.module.float()
        super().on_fit_end()

    def on_train_epoch_end(self) -> None:
        """Read the accumulated finiteness check of the epoch's last steps."""
        self._read_pending_non_finite()
        super().on_train_epoch_end()

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
