"""Parameter descriptions shared by :class:`~scvi_trvae.TRVAE` and :class:`~scvi_trvae.model.TRVAEModule` (docrep)."""

from __future__ import annotations

from docrep import DocstringProcessor

_network = """\
n_hidden
    Width of every hidden layer, the MMD layer ``y`` included (256 by default). Not with
    ``hidden_layer_sizes``.
n_latent
    Dimension of the latent space ``z``.
n_layers
    Hidden layers of the encoder (2 by default); the decoder mirrors them: ``y`` then
    ``n_layers - 1`` hidden layers. Not with ``hidden_layer_sizes``.
dropout_rate
    Dropout after hidden layers of the encoder and of the decoder after ``y`` (``y`` itself has
    none, so that the MMD compares deterministic functions of ``z``).
use_batch_norm, use_layer_norm
    Normalisation of hidden layers."""

_likelihood = """\
likelihood
    ``"mse"`` (Gaussian with unit variance, for log-normalised data; decoder outputs pass through
    a ReLU so they are non-negative), ``"nb"`` or ``"zinb"`` (raw counts; the mean is the
    observed library size times a softmax over genes).
dispersion
    Inverse dispersion of the count likelihoods: ``"gene"`` or ``"gene-condition"``."""

_mmd = """\
mmd_on
    ``"y"`` (trVAE: the first decoder layer), ``"z"`` (MMD-CVAE baseline) or ``None`` (plain CVAE).
mmd_bandwidths
    ``"adaptive"`` (RBF bandwidths scaled to the layer's distances) or a sequence of fixed
    bandwidths; see :func:`scvi_trvae.model.resolve_bandwidths`."""

_widths = """\
hidden_layer_sizes
    Width of each hidden layer of the encoder, e.g. ``[800, 800, 128]`` (the paper's Kang
    network), instead of ``n_hidden`` and ``n_layers``. The decoder mirrors it:
    ``z -> y (128) -> 800 -> 800 -> genes``.
n_mmd
    Width of the MMD layer ``y`` (the first decoder layer); by default the last encoder width."""

#: ``%(param_network)s``, ``%(param_likelihood)s``, ``%(param_mmd)s`` and ``%(param_widths)s`` in a docstring decorated
#: with ``@trvae_dsp.dedent``.
trvae_dsp = DocstringProcessor(
    param_network=_network, param_likelihood=_likelihood, param_mmd=_mmd, param_widths=_widths
)
