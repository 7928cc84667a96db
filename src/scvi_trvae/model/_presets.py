"""Named configurations of :class:`~scvi_trvae.TRVAE`: the trVAE paper's networks and loss weights."""

from __future__ import annotations

import copy

from ._mmd import LEGACY_BANDWIDTHS

#: The paper's kernel is ``exp(-d / (2 sigma))`` over its 19 ``sigma``; ours is ``exp(-d / h)``, so ``h = 2 sigma``.
PAPER_BANDWIDTHS: tuple[float, ...] = tuple(2.0 * sigma for sigma in LEGACY_BANDWIDTHS)


def paper_loss_weights(*, eta: float, alpha: float, beta: float, batch_size: int, n_latent: int) -> dict[str, float]:
    r"""Translate the paper code's loss weights into ``kl_weight`` and ``mmd_weight`` of :meth:`TRVAE.train`.

    The paper's code (``reptrvae``) minimises, per minibatch of ``B`` cells,

    .. math::

        \eta \cdot \tfrac12 \sum_{b, g} (x_{bg} - \hat x_{bg})^2
        + \alpha \cdot \tfrac12\, \mathrm{mean}_{b, l}\big(e^{v_{bl}} + \mu_{bl}^2 - 1 - v_{bl}\big)
        + \beta \cdot \mathrm{MMD}^2,

    a sum over cells and genes, a mean over cells and latent dimensions. This package minimises

    .. math::

        \mathrm{mean}_b\big(\tfrac12 \textstyle\sum_g (x_{bg} - \hat x_{bg})^2 + w_{KL}\, \mathrm{KL}_b\big)
        + w_{MMD}\, \mathrm{MMD}^2

    with :math:`\mathrm{KL}_b` summed over the ``n_latent`` dimensions. Dividing the paper's loss by
    :math:`\eta B` gives ours with :math:`w_{KL} = \alpha / (\eta B\, n_{latent})` and
    :math:`w_{MMD} = \beta / (\eta B)`. Adam is (but for its epsilon) blind to a constant factor on
    the loss, so these weights train as the paper's do.
    """
    return {"kl_weight": alpha / (eta * batch_size * n_latent), "mmd_weight": beta / (eta * batch_size)}


_KANG_BATCH_SIZE = 128
_KANG_LATENT = 20

#: ``{"model": TRVAE(...) arguments, "train": TRVAE.train(...) arguments}`` of each preset.
_PAPER_PRESETS: dict[str, dict[str, dict]] = {
    "kang": {
        "model": {
            "hidden_layer_sizes": [800, 800, 128],
            "n_latent": _KANG_LATENT,
            "dropout_rate": 0.2,
            "use_batch_norm": True,
            "use_layer_norm": False,
            "likelihood": "mse",
            "mmd_on": "y",
            "mmd_bandwidths": PAPER_BANDWIDTHS,
        },
        "train": {
            "batch_size": _KANG_BATCH_SIZE,
            **paper_loss_weights(eta=100.0, alpha=1e-6, beta=500.0, batch_size=_KANG_BATCH_SIZE, n_latent=_KANG_LATENT),
            "plan_kwargs": {"lr": 1e-3},
        },
    },
}


def paper_preset(name: str) -> dict[str, dict]:
    """Return a copy of the arguments of a named preset; see :meth:`TRVAE.paper_preset`."""
    if name not in _PAPER_PRESETS:
        raise ValueError(f"Unknown paper preset {name!r}; available: {sorted(_PAPER_PRESETS)}.")
    return copy.deepcopy(_PAPER_PRESETS[name])
