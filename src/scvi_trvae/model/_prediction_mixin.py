"""Counterfactual prediction and the MMD layer: the query methods of :class:`~scvi_trvae.TRVAE`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from anndata import AnnData
from scvi import settings

from scvi_trvae._quiet import quiet

from ._prediction import (
    DEFAULT_PREDICTION_MODE,
    PredictionMode,
    PredictionRequest,
    mmd_representation,
    predict_expression,
    prediction_anndata,
    prediction_minibatches,
)


class PredictionMixin:
    """:meth:`predict_perturbation` and :meth:`get_mmd_representation` of a trVAE model.

    Mixed into :class:`~scvi_trvae.TRVAE` (and so :class:`~scvi_trvae.ImageTRVAE`); the decoding itself
    is the module's (:meth:`~scvi_trvae.model.TRVAEModule.counterfactual`).
    """

    @torch.inference_mode()
    def predict_perturbation(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        mode: PredictionMode = DEFAULT_PREDICTION_MODE,
        n_samples: int = 0,
        library_size: float | Literal["observed"] | None = None,
        log1p: bool | None = None,
        seed: int | None = None,
    ) -> AnnData:
        """Predict how the cells of condition ``source`` would look under condition ``target``.

        Each source cell is encoded with its own label and decoded with ``target``.

        Parameters
        ----------
        adata
            AnnData with the training genes (default: the model's). Only its cells of condition
            ``source`` (within ``indices``) are used. It is not modified.
        source, target
            Registered conditions (any two distinct ones).
        indices
            Positions (or a boolean mask) of ``adata``'s cells to consider.
        batch_size
            Minibatch size (default 1024: no gradients are kept, and large minibatches run faster).
        mode
            ``"counterfactual"`` (default): decode under ``target`` and add each cell's own
            residual (observed minus its reconstruction under ``source``), clipped at zero; this
            keeps the real cell-to-cell variation that a decoder mean smooths away (abduction,
            action, prediction). ``"mean"``: the decoder mean under ``target``.
        n_samples
            ``0`` (default): deterministic, ``z`` is the posterior mean. ``k > 0``: ``k`` draws of
            ``z`` per cell, returned as ``k`` stacked copies of the cells (obs ``trvae_draw``).
        library_size
            Count likelihoods only: expression is returned as ``proportion * library_size``;
            ``1e4`` by default (as ``scanpy.pp.normalize_total(target_sum=1e4)``), or
            ``"observed"`` for each source cell's own total count.
        log1p
            Count likelihoods only: return ``log1p`` of that (default ``True``, the usual
            log-normalised scale). For ``"mse"`` the output is on the scale of the training data.
        seed
            Seed of the draws when ``n_samples > 0`` (default ``scvi.settings.seed``, or 0 when unset).

        Returns
        -------
        A new AnnData: ``X`` the predicted expression (dense float32), ``var`` copied, ``obs``
        copied from the source cells with the condition column set to ``target`` and
        ``obs['trvae_source_condition']`` set to ``source``, and ``uns['trvae_prediction']``
        recording how it was made.
        """
        self._check_if_trained(warn=True)
        source_code = self._condition_code(source, "source")
        request = PredictionRequest.checked(
            self.module, mode=mode, n_samples=n_samples, library_size=library_size, log1p=log1p,
            source=str(source), target=str(target), source_code=source_code,
            target_code=self._condition_code(target, "target"),
            seed=seed if seed is not None else (settings.seed or 0),
        )  # fmt: skip
        with quiet():  # scvi-tools' setup transfer and torch's sparse-CSR notes only at verbosity <= INFO
            adata, positions = self._query_anndata(adata, indices, [self.conditions[source_code]])
            self.module.eval()
            minibatches = prediction_minibatches(self, adata, positions, batch_size)
            predicted = predict_expression(self.module, request, minibatches, len(positions))
        return prediction_anndata(predicted, adata.obs.iloc[positions], adata.var, request, self)

    @torch.inference_mode()
    def get_mmd_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        condition: str | None = None,
    ) -> np.ndarray:
        """Return the MMD layer ``y = g1(z, s)`` of each cell (``z`` at its posterior mean).

        Parameters
        ----------
        adata
            AnnData with the training genes (default: the model's); not modified.
        indices
            Positions (or a boolean mask) of cells to use.
        batch_size
            Minibatch size.
        condition
            Decode every cell under this condition instead of its own.

        Returns
        -------
        Array of shape ``(n_cells, n_mmd)``, ``n_mmd`` the width of the MMD layer.
        """
        self._check_if_trained(warn=True)
        override = None if condition is None else self._condition_code(condition, "requested")
        with quiet():
            adata, positions = self._query_anndata(adata, indices)
            self.module.eval()
            minibatches = prediction_minibatches(self, adata, positions, batch_size)
            return mmd_representation(self.module, minibatches, override)
