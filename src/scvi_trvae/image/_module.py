"""Convolutional trVAE module for images stored as flattened pixels in an AnnData."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module._constants import MODULE_KEYS
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Bernoulli, ContinuousBernoulli, Distribution, Normal, kl_divergence

from scvi_trvae._validation import value_chunks
from scvi_trvae.model._architecture import DEFAULT_N_HIDDEN, LayerWidths, resolve_n_layers
from scvi_trvae.model._mmd import BandwidthSpec
from scvi_trvae.model._module import (
    DEFAULT_KL_WEIGHT,
    DEFAULT_MMD_WEIGHT,
    MMD_LAYER_KEY,
    PX_MEAN_KEY,
    PX_SCALE_KEY,
    TRVAEModule,
)

if TYPE_CHECKING:
    from scvi_trvae.model._module import MMDTarget

ImageLikelihood = Literal["mse", "bernoulli", "continuous_bernoulli"]
IMAGE_LIKELIHOODS: tuple[str, ...] = ("mse", "bernoulli", "continuous_bernoulli")
#: Likelihood of image models unless told otherwise; measured in ``benchmarks/morpho_digits.py`` (``docs/images.md``).
DEFAULT_IMAGE_LIKELIHOOD: ImageLikelihood = "bernoulli"
#: Channels of the first convolution; each further stride-2 block doubles them.
BASE_CHANNELS = 32


@dataclass(frozen=True)
class ConvWidths:
    """Channels of the stride-2 convolution blocks, width of the dense encoder layer and of ``y``."""

    channels: tuple[int, ...]
    n_hidden: int
    n_mmd: int

    @classmethod
    def resolve(
        cls,
        n_hidden: int | None = None,
        n_layers: int | None = None,
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
    ) -> ConvWidths:
        """Check the widths (``hidden_layer_sizes`` are convolution channels here) and fill in the defaults."""
        if hidden_layer_sizes is None:
            n_layers = resolve_n_layers(n_layers, "n_layers (convolution blocks)")
            hidden_layer_sizes = [BASE_CHANNELS * 2**block for block in range(n_layers)]
        elif n_layers is not None:
            raise ValueError("Give the convolution channels either as hidden_layer_sizes or as n_layers, not both.")
        channels = LayerWidths.resolve(hidden_layer_sizes=hidden_layer_sizes).encoder  # positive integers
        dense = LayerWidths.resolve(
            n_hidden=DEFAULT_N_HIDDEN if n_hidden is None else n_hidden, n_layers=1, n_mmd=n_mmd
        )
        return cls(channels=channels, n_hidden=dense.encoder[0], n_mmd=dense.n_mmd)

    def describe(self, n_input: int, n_latent: int) -> str:
        """E.g. ``conv encoder 784 pixels -> 32 -> 64 channels -> 256 -> z 20; decoder z 20 -> y 256 -> 64 -> 32``."""
        channels = " -> ".join(str(c) for c in self.channels)
        reverse = " -> ".join(str(c) for c in self.channels[::-1])
        return (
            f"conv encoder {n_input} pixels -> {channels} channels -> {self.n_hidden} -> z {n_latent}; "
            f"decoder z {n_latent} -> y {self.n_mmd} -> {reverse} channels -> {n_input} pixels"
        )


def resolve_image_shape(image_shape: Sequence[int], n_input: int) -> tuple[int, int, int]:
    """Return ``image_shape`` as ``(channels, height, width)``, checked against the number of variables.

    Parameters
    ----------
    image_shape
        ``(height, width)`` for grey-scale images or ``(channels, height, width)``.
    n_input
        Number of variables of the AnnData: the flattened pixels, channels first.
    """
    try:
        shape = tuple(int(size) for size in image_shape)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"image_shape must be (height, width) or (channels, height, width), got {image_shape!r}."
        ) from error
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"image_shape must be (height, width) or (channels, height, width) of positive sizes, got {image_shape!r}."
        )
    if math.prod(shape) != n_input:
        raise ValueError(
            f"image_shape {shape} holds {math.prod(shape)} pixels, but the AnnData has {n_input} variables; "
            "X must hold each image flattened channels first (C x H x W values per row)."
        )
    return shape


def check_pixel_values(matrix, likelihood: str, is_count_data: bool) -> None:
    """Refuse registered data that an image likelihood cannot model: counts, or pixels outside [0, 1]."""
    if is_count_data:
        raise ValueError(
            "Image models read pixel intensities in [0, 1], but setup_anndata registered count data "
            "(is_count_data=True); register the pixels with is_count_data=False."
        )
    if likelihood not in IMAGE_LIKELIHOODS:
        raise ValueError(f"Image models support likelihood {IMAGE_LIKELIHOODS}, got {likelihood!r}.")
    low, high = np.inf, -np.inf
    for values in value_chunks(matrix):
        if values.size:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"Image models need pixel values in [0, 1]; the registered data range from {low:g} to {high:g}. "
            "Divide by the maximum intensity (e.g. 255) first."
        )


def _same_size_transpose(in_channels: int, out_channels: int, out_size: tuple[int, int]) -> nn.ConvTranspose2d:
    """Stride-2 transposed convolution that exactly inverts a stride-2, padding-1, 3x3 convolution's size."""
    output_padding = tuple(int(size % 2 == 0) for size in out_size)
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=output_padding)


def _identity(_: int) -> nn.Module:
    return nn.Identity()


def _convolutions(in_channels: int, widths: Sequence[int], use_batch_norm: bool) -> list[nn.Module]:
    """Stride-2 3x3 convolutions ``in_channels -> widths[0] -> ...``, each with batch norm (optional) and ReLU."""
    layers = []
    for out_channels in widths:
        layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)]
        layers += [nn.BatchNorm2d(out_channels) if use_batch_norm else nn.Identity(), nn.ReLU()]
        in_channels = out_channels
    return layers


def _transposed_convolutions(
    widths: Sequence[int], sizes: Sequence[tuple[int, int]], use_batch_norm: bool
) -> list[nn.Module]:
    """Mirror of :func:`_convolutions` up to ``widths[0]`` channels at ``sizes[1]`` (the last layer is built apart)."""
    layers = []
    for block in range(len(widths) - 1, 0, -1):
        layers += [_same_size_transpose(widths[block], widths[block - 1], sizes[block])]
        layers += [nn.BatchNorm2d(widths[block - 1]) if use_batch_norm else nn.Identity(), nn.ReLU()]
    return layers


class ConvTRVAEModule(TRVAEModule):
    r"""trVAE for images: convolutional encoder and decoder, MMD on the first decoder layer.

    The condition enters as in Lotfollahi et al. (arXiv:1910.01791, Morpho-MNIST and CelebA): a
    dense projection of its one-hot is reshaped into an extra image channel of the encoder input,
    and the one-hot is concatenated to ``z`` at the first (dense) decoder layer
    :math:`g_1(z, s) \to y`, which is where the MMD acts (``mmd_on="y"``). :math:`g_2(y)` is a
    dense layer reshaped into feature maps followed by stride-2 transposed convolutions.
    Extra categorical covariates are concatenated to the condition one-hot (the condition last,
    so that new conditions widen the last weight columns).

    Parameters
    ----------
    n_input
        Number of pixels (``channels * height * width``).
    n_conditions, n_cats_per_cov, n_latent, mmd_on, mmd_bandwidths
        As in :class:`~scvi_trvae.model.TRVAEModule`.
    n_hidden
        Width of the dense encoder layer (default 256).
    n_layers
        Stride-2 convolution blocks of the encoder (32, 64, 128... channels; default 2); the decoder mirrors them.
    dropout_rate
        Dropout after the dense encoder layer.
    use_batch_norm, use_layer_norm
        Batch normalisation of convolutions and dense layers; layer norm is not supported.
    likelihood
        ``"bernoulli"`` (binary cross-entropy on [0, 1] pixels), ``"continuous_bernoulli"``
        (the normalised version, Loaiza-Ganem & Cunningham 2019) or ``"mse"`` (Gaussian with unit
        variance on sigmoid outputs).
    dispersion
        Unused (count likelihoods only); accepted so that the dense and image modules share a signature.
    hidden_layer_sizes
        Channels of each convolution block instead of ``n_layers``, e.g. ``[32, 64, 128]``.
    n_mmd
        Width of the MMD layer ``y`` (default ``n_hidden``).
    image_shape
        ``(height, width)`` or ``(channels, height, width)``.
    """

    def __init__(
        self,
        n_input: int,
        n_conditions: int,
        n_cats_per_cov: Sequence[int] | None = None,
        n_hidden: int | None = None,
        n_latent: int = 20,
        n_layers: int | None = None,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        likelihood: ImageLikelihood = DEFAULT_IMAGE_LIKELIHOOD,
        dispersion: str = "gene",
        mmd_on: MMDTarget = "y",
        mmd_bandwidths: BandwidthSpec = "adaptive",
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
        *,
        image_shape: Sequence[int],
    ):
        BaseModuleClass.__init__(self)  # the dense layers of TRVAEModule.__init__ are not built
        if likelihood not in IMAGE_LIKELIHOODS:
            raise ValueError(f"Image models support likelihood {IMAGE_LIKELIHOODS}, got {likelihood!r}.")
        if mmd_on not in ("y", "z", None):
            raise ValueError(f"mmd_on must be 'y', 'z' or None, got {mmd_on!r}.")
        if use_layer_norm:
            raise ValueError("use_layer_norm is not supported by image models; use use_batch_norm.")
        self.image_shape = resolve_image_shape(image_shape, n_input)
        self.n_input, self.n_conditions, self.n_latent = n_input, n_conditions, n_latent
        self.n_cats_per_cov = [*(n_cats_per_cov or []), n_conditions]
        self.likelihood, self.dispersion, self.mmd_on = likelihood, dispersion, mmd_on
        self.mmd_bandwidths = mmd_bandwidths
        self.latent_distribution = "normal"

        channels, height, width = self.image_shape
        n_categories = sum(self.n_cats_per_cov)
        self.widths = ConvWidths.resolve(n_hidden, n_layers, hidden_layer_sizes, n_mmd)
        widths, n_hidden, n_mmd = list(self.widths.channels), self.widths.n_hidden, self.widths.n_mmd
        sizes = [(height, width)]
        for _ in widths:
            sizes.append(tuple((size + 1) // 2 for size in sizes[-1]))
        n_features = widths[-1] * sizes[-1][0] * sizes[-1][1]
        self._feature_shape = (widths[-1], *sizes[-1])

        norm1d = nn.BatchNorm1d if use_batch_norm else _identity
        self.condition_channel = nn.Linear(n_categories, height * width)
        self.z_encoder = nn.Sequential(
            *_convolutions(channels + 1, widths, use_batch_norm),
            nn.Flatten(),
            nn.Linear(n_features, n_hidden),
            norm1d(n_hidden),
            nn.ReLU(),
            nn.Dropout(dropout_rate),
        )
        self.z_mean_encoder = nn.Linear(n_hidden, n_latent)
        self.z_var_encoder = nn.Linear(n_hidden, n_latent)
        self.mmd_decoder = nn.Sequential(nn.Linear(n_latent + n_categories, n_mmd), norm1d(n_mmd), nn.ReLU())
        hidden_transposed = _transposed_convolutions(widths, sizes, use_batch_norm)  # built first: seeded init order
        self.image_decoder = nn.Sequential(
            nn.Linear(n_mmd, n_features),
            nn.ReLU(),
            nn.Unflatten(1, self._feature_shape),
            *hidden_transposed,
            _same_size_transpose(widths[0], channels, sizes[0]),
            nn.Flatten(),
        )

    def _category_one_hot(self, condition: torch.Tensor, cat_covs: torch.Tensor | None) -> torch.Tensor:
        codes = self._categorical_inputs(condition, cat_covs)
        one_hots = [
            F.one_hot(code.reshape(-1).long(), n_cats) for code, n_cats in zip(codes, self.n_cats_per_cov, strict=True)
        ]
        return torch.cat(one_hots, dim=1).float()

    @auto_move_data
    def inference(
        self, x: torch.Tensor, condition: torch.Tensor, cat_covs: torch.Tensor | None = None, n_samples: int = 1
    ) -> dict[str, torch.Tensor | Distribution]:
        """Encode images ``x`` (flattened) under ``condition``: posterior ``qz`` and a sample ``z``."""
        channels, height, width = self.image_shape
        images = x.reshape(-1, channels, height, width)
        condition_channel = self.condition_channel(self._category_one_hot(condition, cat_covs))
        encoder_input = torch.cat([images, condition_channel.reshape(-1, 1, height, width)], dim=1)
        hidden = self.z_encoder(encoder_input)
        qz = Normal(self.z_mean_encoder(hidden), torch.exp(self.z_var_encoder(hidden)).add(1e-4).sqrt())
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {MODULE_KEYS.QZ_KEY: qz, MODULE_KEYS.Z_KEY: z, MODULE_KEYS.LIBRARY_KEY: x.sum(dim=1, keepdim=True)}

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        condition: torch.Tensor,
        library: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Decode ``z`` under ``condition``: ``mmd_layer`` (``y``), ``px_mean`` = ``px_scale`` (pixels) and ``px``."""
        mmd_layer = self.mmd_decoder(torch.cat([z, self._category_one_hot(condition, cat_covs)], dim=-1))
        logits = self.image_decoder(mmd_layer)
        if self.likelihood == "continuous_bernoulli":
            px = ContinuousBernoulli(logits=logits, validate_args=False)
            px_mean = px.mean
        elif self.likelihood == "bernoulli":
            px = Bernoulli(logits=logits, validate_args=False)
            px_mean = px.mean
        else:
            px_mean = torch.sigmoid(logits)
            px = Normal(px_mean, 1.0)
        return {MMD_LAYER_KEY: mmd_layer, PX_SCALE_KEY: px_mean, PX_MEAN_KEY: px_mean, MODULE_KEYS.PX_KEY: px}

    def reconstruction_loss(self, x: torch.Tensor, generative_outputs: dict) -> torch.Tensor:
        """Per-image negative log-likelihood (up to a constant for ``"mse"``)."""
        px = generative_outputs[MODULE_KEYS.PX_KEY]
        if self.likelihood == "bernoulli":  # cross-entropy also for grey values in [0, 1]
            return F.binary_cross_entropy_with_logits(px.logits, x, reduction="none").sum(dim=-1)
        if self.likelihood == "continuous_bernoulli":
            return -px.log_prob(x).sum(dim=-1)
        return 0.5 * (x - generative_outputs[PX_MEAN_KEY]).pow(2).sum(dim=-1)

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | Distribution],
        generative_outputs: dict[str, torch.Tensor | Distribution],
        kl_weight: float = DEFAULT_KL_WEIGHT,
        mmd_weight: float = DEFAULT_MMD_WEIGHT,
    ) -> LossOutput:
        """``mean(reconstruction + kl_weight * KL) + mmd_weight * MMD``, as :meth:`TRVAEModule.loss`."""
        reconstruction = self.reconstruction_loss(tensors[REGISTRY_KEYS.X_KEY], generative_outputs)
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(dim=-1)
        mmd = self.mmd_penalty(tensors, inference_outputs, generative_outputs)
        loss = torch.mean(reconstruction + kl_weight * kl) + mmd_weight * mmd
        return LossOutput(
            loss=loss, reconstruction_loss=reconstruction, kl_local=kl, extra_metrics={"mmd": mmd.detach()}
        )
