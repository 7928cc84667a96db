"""User-facing trVAE model for images: :class:`ImageTRVAE`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from anndata import AnnData
from scvi import REGISTRY_KEYS

from scvi_trvae.model._model import TRVAE

from ._module import DEFAULT_IMAGE_LIKELIHOOD, ConvTRVAEModule, ImageLikelihood, check_pixel_values, resolve_image_shape

if TYPE_CHECKING:
    from scvi_trvae.model._mmd import BandwidthSpec
    from scvi_trvae.model._module import MMDTarget

__all__ = ["ImageTRVAE", "image_module"]


def image_module(model: TRVAE, likelihood: str | None, image_shape: Sequence[int], has_data: bool) -> tuple:
    """Return the image module class (bound to ``image_shape``) and its likelihood, checked against the data.

    Parameters
    ----------
    model
        The model being built, with its registry.
    likelihood
        The requested pixel likelihood; ``None`` for the default (``"bernoulli"``).
    image_shape
        ``(height, width)`` or ``(channels, height, width)``.
    has_data
        Whether the model has an AnnData whose pixels can be checked.

    Returns
    -------
    ``(module_cls, likelihood)``: a callable building :class:`ConvTRVAEModule` and the resolved likelihood.
    """
    if image_shape is None:
        raise ValueError("ImageTRVAE needs image_shape: (height, width) or (channels, height, width).")
    likelihood = likelihood or DEFAULT_IMAGE_LIKELIHOOD
    resolve_image_shape(image_shape, model.summary_stats.n_vars)
    is_count_data = bool(model.registry_["setup_args"]["is_count_data"])
    if has_data:
        check_pixel_values(model.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), likelihood, is_count_data)

    def module_cls(**kwargs) -> ConvTRVAEModule:
        return ConvTRVAEModule(**kwargs, image_shape=image_shape)

    return module_cls, likelihood


class ImageTRVAE(TRVAE):
    """trVAE for images: convolutional encoder and decoder, the MMD on the first decoder layer.

    The image half of Lotfollahi et al. (arXiv:1910.01791): transfer a style (thin strokes, a smile)
    to classes never seen in it. Images live in an AnnData like cells, one row per image, ``X`` the
    pixels in [0, 1] flattened channels first. Training, prediction, save/load and the latent and MMD
    representations are :class:`~scvi_trvae.TRVAE`'s; the module is :class:`~scvi_trvae.image.ConvTRVAEModule`.
    Query mapping (``load_query_data``) is untested for image models (``docs/images.md``).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    image_shape
        ``(height, width)`` or ``(channels, height, width)`` of the images flattened in ``X``.
    n_hidden
        Width of the dense encoder layer (default 256).
    n_latent
        Dimension of ``z``.
    n_layers
        Stride-2 convolution blocks of the encoder (32, 64, 128... channels; default 2).
    dropout_rate
        Dropout after the dense encoder layer.
    use_batch_norm, use_layer_norm
        Batch normalisation of convolutions and dense layers; layer norm is not supported.
    likelihood
        ``"bernoulli"`` (default), ``"continuous_bernoulli"`` or ``"mse"``.
    dispersion
        Unused (count likelihoods only); accepted so that saves of ``TRVAE(image_shape=...)`` load.
    mmd_on
        ``"y"`` (trVAE), ``"z"`` (MMD-CVAE) or ``None`` (CVAE).
    mmd_bandwidths
        RBF bandwidths of the MMD, as for :class:`~scvi_trvae.TRVAE`.
    hidden_layer_sizes
        Channels of each convolution block instead of ``n_layers``, e.g. ``[32, 64, 128]``.
    n_mmd
        Width of the MMD layer ``y`` (default ``n_hidden``).
    registry
        Registry of a saved model (used by :meth:`load` when no AnnData is given).

    Examples
    --------
    >>> from scvi_trvae import ImageTRVAE
    >>> ImageTRVAE.setup_anndata(digits, condition_key="style")
    >>> model = ImageTRVAE(digits, image_shape=(28, 28))
    >>> model.train(max_epochs=30, batch_size=128)
    >>> thin = model.predict_perturbation(source="normal", target="thin", mode="mean")
    """

    _module_cls = ConvTRVAEModule
    #: saves of image models made with ``TRVAE(image_shape=...)`` (before this class) load as ImageTRVAE
    _loadable_model_names = ("TRVAE",)

    def __init__(
        self,
        adata: AnnData | None = None,
        image_shape: Sequence[int] | None = None,
        n_hidden: int | None = None,
        n_latent: int = 20,
        n_layers: int | None = None,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        likelihood: ImageLikelihood | None = None,
        dispersion: str = "gene",
        mmd_on: MMDTarget = "y",
        mmd_bandwidths: BandwidthSpec = "adaptive",
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
        registry: dict | None = None,
    ):
        if image_shape is None:
            raise ValueError("ImageTRVAE needs image_shape: (height, width) or (channels, height, width).")
        super().__init__(
            adata, n_hidden=n_hidden, n_latent=n_latent, n_layers=n_layers, dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm, use_layer_norm=use_layer_norm, likelihood=likelihood, dispersion=dispersion,
            mmd_on=mmd_on,
            mmd_bandwidths=mmd_bandwidths, hidden_layer_sizes=hidden_layer_sizes, n_mmd=n_mmd,
            image_shape=image_shape, registry=registry,
        )  # fmt: skip
        self.init_params_ = self._get_init_params(locals())

    def _module_for(self, likelihood: str | None, image_shape: Sequence[int] | None, has_data: bool) -> tuple:
        return image_module(self, likelihood, image_shape, has_data)
