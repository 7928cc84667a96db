"""The one way the package trains one :class:`~scvi_trvae.TRVAE`: seeded, on a shared or a freshly registered AnnData.

:func:`train_model` is called by every member of a :class:`~scvi_trvae.TRVAEEnsemble`, by every inner fit of
:mod:`scvi_trvae.model_selection` and by the benchmark (issue 22: "one function trains one model").
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import scvi
import torch
from scvi.data import _constants

from ._quiet import quiet
from .model._model import TRVAE

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["fresh_copy", "seeded", "train_model"]


def fresh_copy(adata: AnnData) -> AnnData:
    """Copy ``adata`` without scvi-tools' registration marks, so that registering it leaves ``adata`` alone.

    Parameters
    ----------
    adata
        Any AnnData, registered or not.

    Returns
    -------
    A full copy whose ``uns`` lacks scvi-tools' ``_scvi_uuid`` and ``_scvi_manager_uuid``.
    """
    copy = adata.copy()
    for key in (_constants._SCVI_UUID_KEY, _constants._MANAGER_UUID_KEY):
        copy.uns.pop(key, None)
    return copy


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block after ``scvi.settings.seed = seed``, then give the caller back its seed and random states.

    What the block draws (initial weights, minibatches, dropout) depends on ``seed`` alone, and the
    caller's ``scvi.settings.seed`` and the random states of Python, numpy and torch are as they were.

    Parameters
    ----------
    seed
        The seed of the block.
    """
    previous = scvi.settings.seed
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    with quiet():  # Lightning's "Seed set to" line
        scvi.settings.seed = seed
    try:
        yield
    finally:
        with quiet():
            scvi.settings.seed = previous  # re-seeds everything, so the states are put back afterwards
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def train_model(
    adata: AnnData,
    seed: int,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    setup_kwargs: Mapping[str, Any] | None = None,
    threads: int | None = None,
    **train_kwargs: Any,
) -> TRVAE:
    """Build and train one :class:`~scvi_trvae.TRVAE` on ``adata``, seeded with ``seed`` (see :func:`seeded`).

    Parameters
    ----------
    adata
        The training cells. With ``setup_kwargs=None`` it must be registered with
        :meth:`scvi_trvae.TRVAE.setup_anndata` and is used as it is (models trained on it share it: an
        ensemble's members hold one AnnData, not one copy each); otherwise a :func:`fresh_copy` of it is
        registered with ``setup_kwargs`` and ``adata`` is left alone.
    seed
        ``scvi.settings.seed`` while the model is built and trained; the caller's seed and random states
        are restored afterwards.
    model_kwargs
        Passed to :class:`~scvi_trvae.TRVAE` (``n_layers``, ``likelihood``...).
    setup_kwargs
        Arguments of :meth:`scvi_trvae.TRVAE.setup_anndata` (``condition_key``, ``layer``...), or ``None``.
    threads
        Torch threads to set first (``None``: leave them).
    **train_kwargs
        Passed to :meth:`scvi_trvae.TRVAE.train` (``max_epochs``, ``batch_size``, ``accelerator``...).

    Returns
    -------
    The trained model.
    """
    if threads is not None:
        torch.set_num_threads(threads)
    with seeded(seed):
        if setup_kwargs is not None:
            adata = fresh_copy(adata)
            TRVAE.setup_anndata(adata, **setup_kwargs)
        model = TRVAE(adata, **(model_kwargs or {}))
        model.train(**train_kwargs)
    return model
