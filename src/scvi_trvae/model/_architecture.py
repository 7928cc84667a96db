"""Layer widths of the trVAE network: the uniform form (``n_hidden``, ``n_layers``) and the per-layer form."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scvi.nn import FCLayers

#: Width of every hidden layer when neither ``n_hidden`` nor ``hidden_layer_sizes`` is given.
DEFAULT_N_HIDDEN = 256
#: Hidden layers of the encoder when neither ``n_layers`` nor ``hidden_layer_sizes`` is given.
DEFAULT_N_LAYERS = 2


def resolve_n_layers(n_layers, what: str = "n_layers") -> int:
    """Return ``n_layers`` (its default when ``None``), checked to be a whole number of at least 1."""
    n_layers = DEFAULT_N_LAYERS if n_layers is None else n_layers
    if isinstance(n_layers, bool) or not isinstance(n_layers, int | np.integer) or n_layers < 1:
        raise ValueError(f"{what} must be at least 1, got {n_layers!r}.")
    return int(n_layers)


def _check_width(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class LayerWidths:
    """Widths of the network's hidden layers.

    The encoder runs ``genes -> encoder[0] -> ... -> encoder[-1] -> z``; the decoder mirrors it,
    ``z -> y (n_mmd wide) -> decoder[0] -> ... -> genes``, with ``decoder = encoder[-2::-1]``.
    """

    encoder: tuple[int, ...]
    n_mmd: int

    @classmethod
    def resolve(
        cls,
        n_hidden: int | None = None,
        n_layers: int | None = None,
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
    ) -> LayerWidths:
        """Check either form of the widths and return them; see :class:`~scvi_trvae.TRVAE`'s parameters."""
        if hidden_layer_sizes is None:
            n_layers = resolve_n_layers(n_layers)
            width = _check_width(DEFAULT_N_HIDDEN if n_hidden is None else n_hidden, "n_hidden")
            encoder = (width,) * n_layers
        else:
            if n_hidden is not None or n_layers is not None:
                raise ValueError(
                    "Give the hidden layers either as hidden_layer_sizes or as n_hidden / n_layers, not both "
                    f"(got hidden_layer_sizes={hidden_layer_sizes!r}, n_hidden={n_hidden!r}, n_layers={n_layers!r})."
                )
            if isinstance(hidden_layer_sizes, str | bytes) or not isinstance(hidden_layer_sizes, Sequence):
                raise ValueError(f"hidden_layer_sizes must be a list of widths, got {hidden_layer_sizes!r}.")
            if len(hidden_layer_sizes) == 0:
                raise ValueError("hidden_layer_sizes is empty; give at least one width, e.g. [800, 800, 128].")
            encoder = tuple(_check_width(w, f"hidden_layer_sizes[{i}]") for i, w in enumerate(hidden_layer_sizes))
        n_mmd = encoder[-1] if n_mmd is None else _check_width(n_mmd, "n_mmd")
        return cls(encoder=encoder, n_mmd=n_mmd)

    @property
    def decoder(self) -> tuple[int, ...]:
        """Hidden layers of the decoder after the MMD layer ``y``."""
        return self.encoder[-2::-1]

    def describe(self, n_input: int, n_latent: int) -> str:
        """Describe the layers, e.g. ``encoder 2000 -> 800 -> 128 -> z 20; decoder z 20 -> y 128 -> 800 -> 2000``."""
        encoder = " -> ".join(str(w) for w in (n_input, *self.encoder))
        decoder = " -> ".join(str(w) for w in (*self.decoder, n_input))
        return f"encoder {encoder} -> z {n_latent}; decoder z {n_latent} -> y {self.n_mmd} -> {decoder}"


def layer_stack(n_in: int, widths: Sequence[int], n_cat_list: Sequence[int] | None = None, **kwargs) -> FCLayers:
    """:class:`scvi.nn.FCLayers` ``n_in -> widths[0] -> ... -> widths[-1]``, each layer its own width.

    ``FCLayers`` gives every hidden layer one width; this builds each layer with it and joins them
    under the names ``FCLayers`` uses (``fc_layers.Layer i``), so that equal widths give the very
    same module, parameter names and random initialisation as one ``FCLayers`` call, and
    :meth:`scvi.model.base.ArchesMixin.load_query_data` finds the layers it freezes. The
    categorical covariates enter the first layer, and every layer when ``inject_covariates=True``.
    """
    inject = kwargs.get("inject_covariates", True)
    stack = FCLayers(n_in=n_in, n_out=widths[0], n_cat_list=n_cat_list, n_layers=1, **kwargs)
    layer_cats = n_cat_list if inject else None
    for i, (width_in, width_out) in enumerate(itertools.pairwise(widths), start=1):
        layer = FCLayers(n_in=width_in, n_out=width_out, n_cat_list=layer_cats, n_layers=1, **kwargs)
        stack.fc_layers.add_module(f"Layer {i}", layer.fc_layers[0])
    return stack
