"""The trVAE torch module: a conditional VAE whose first decoder layer is MMD-regularised."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial
from scvi.module._constants import MODULE_KEYS  # scvi-tools' own modules import it from here
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from torch import nn
from torch.distributions import Distribution, Normal, kl_divergence

from scvi_trvae.data._sparse import is_sparse, row_sums, sparse_fc_layers, to_dense

from ._architecture import LayerWidths, layer_stack
from ._docstrings import trvae_dsp
from ._mmd import BandwidthSpec, condition_mmd

Likelihood = Literal["mse", "nb", "zinb"]
Dispersion = Literal["gene", "gene-condition"]
MMDTarget = Literal["y", "z"] | None

#: Default weight of the MMD term; chosen on the Kang NK split (see ``docs/defaults.md``).
DEFAULT_MMD_WEIGHT = 100.0
#: Default constant KL weight; chosen on the Kang NK split (see ``docs/defaults.md``).
DEFAULT_KL_WEIGHT = 0.1

_COUNT_LIKELIHOODS = ("nb", "zinb")

#: Keys of this module's own inputs and outputs (scvi-tools' ``MODULE_KEYS`` name the shared ones).
CONDITION_KEY = "condition"
MMD_LAYER_KEY = "mmd_layer"
PX_SCALE_KEY = "px_scale"
PX_MEAN_KEY = "px_mean"
#: Keys of :meth:`TRVAEModule.counterfactual`'s outputs.
COUNTERFACTUAL_KEY = "counterfactual"
DECODED_KEY = "decoded"
SHIFT_KEY = "shift"

#: Maps count-model expression proportions (and each cell's library size) to the scale of a prediction.
OutputScale = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def distribution_validation(enabled: bool) -> Iterator[None]:
    """Switch torch.distributions' argument checks on or off inside the block (restored after it)."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(enabled)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


@trvae_dsp.dedent
class TRVAEModule(BaseModuleClass):
    r"""Conditional VAE with an MMD penalty on the first decoder layer (trVAE).

    Encoder :math:`q(z \mid x, s)`; decoder split into :math:`g_1(z, s) \to y` (the "MMD layer")
    and :math:`g_2(y) \to` likelihood parameters. The loss per minibatch is
    ``mean(reconstruction + kl_weight * KL) + mmd_weight * MMD``, the MMD taken between the
    conditions of the minibatch on ``y`` (trVAE), on ``z`` (MMD-CVAE) or not at all (CVAE).

    The condition one-hot enters through :class:`scvi.nn.FCLayers` (``n_cat_list``) in the encoder
    and in :math:`g_1`, placed last among the categorical inputs so that
    :meth:`scvi.model.base.ArchesMixin.load_query_data` can append new conditions.

    Parameters
    ----------
    n_input
        Number of genes.
    n_conditions
        Number of registered conditions.
    n_cats_per_cov
        Number of categories of each extra categorical covariate (e.g. donor); these enter the
        encoder and :math:`g_1` like the condition, but are not MMD-balanced.
    %(param_network)s
    %(param_likelihood)s
    %(param_mmd)s
    %(param_widths)s
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
        likelihood: Likelihood = "mse",
        dispersion: Dispersion = "gene",
        mmd_on: MMDTarget = "y",
        mmd_bandwidths: BandwidthSpec = "adaptive",
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
    ):
        super().__init__()
        if likelihood not in ("mse", *_COUNT_LIKELIHOODS):
            raise ValueError(f"likelihood must be one of 'mse', 'nb', 'zinb', got {likelihood!r}.")
        if dispersion not in ("gene", "gene-condition"):
            raise ValueError(f"dispersion must be 'gene' or 'gene-condition', got {dispersion!r}.")
        if mmd_on not in ("y", "z", None):
            raise ValueError(f"mmd_on must be 'y', 'z' or None, got {mmd_on!r}.")
        self.widths = LayerWidths.resolve(n_hidden, n_layers, hidden_layer_sizes, n_mmd)
        self.n_input = n_input
        self.n_conditions = n_conditions
        self.n_latent = n_latent
        self.likelihood = likelihood
        self.dispersion = dispersion
        self.mmd_on = mmd_on
        self.mmd_bandwidths = mmd_bandwidths
        self.latent_distribution = "normal"

        cat_list = [*(n_cats_per_cov or []), n_conditions]
        hidden_kwargs = {"use_batch_norm": use_batch_norm, "use_layer_norm": use_layer_norm}
        encoder, decoder = self.widths.encoder, self.widths.decoder
        self.z_encoder = layer_stack(
            n_input, encoder, cat_list, dropout_rate=dropout_rate, inject_covariates=False, **hidden_kwargs
        )
        self.z_mean_encoder = nn.Linear(encoder[-1], n_latent)
        self.z_var_encoder = nn.Linear(encoder[-1], n_latent)
        self.mmd_decoder = layer_stack(n_latent, [self.widths.n_mmd], cat_list, dropout_rate=0.0, **hidden_kwargs)
        self.expression_decoder = (
            layer_stack(self.widths.n_mmd, decoder, dropout_rate=dropout_rate, **hidden_kwargs)
            if decoder
            else nn.Identity()
        )
        n_last = decoder[-1] if decoder else self.widths.n_mmd
        self.px_head = nn.Linear(n_last, n_input)
        if likelihood == "zinb":
            self.px_dropout_head = nn.Linear(n_last, n_input)
        if likelihood in _COUNT_LIKELIHOODS:
            n_dispersions = n_conditions if dispersion == "gene-condition" else 1
            self.px_r = nn.Parameter(torch.randn(n_input, n_dispersions))

    @property
    def is_count_model(self) -> bool:
        """Whether the likelihood is a count likelihood (``"nb"`` or ``"zinb"``)."""
        return self.likelihood in _COUNT_LIKELIHOODS

    def start_query_dispersions(self, n_reference: int, train_reference: bool = False) -> None:
        """Start the per-condition dispersions of conditions added by query mapping at the reference ones' mean.

        Unless ``train_reference``, only the new conditions' dispersions receive gradients.
        """
        if not self.is_count_model or self.n_conditions <= n_reference:
            return
        with torch.no_grad():
            self.px_r[:, n_reference:] = self.px_r[:, :n_reference].mean(dim=1, keepdim=True)
        if not train_reference:
            trainable = torch.zeros_like(self.px_r)
            trainable[:, n_reference:] = 1.0
            self.px_r.requires_grad_(True)
            self.px_r.register_hook(lambda grad: grad * trainable)

    @staticmethod
    def _categorical_inputs(condition: torch.Tensor, cat_covs: torch.Tensor | None) -> list[torch.Tensor]:
        covariates = list(torch.split(cat_covs.long(), 1, dim=1)) if cat_covs is not None else []
        return [*covariates, condition.long()]

    def _get_inference_input(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
        return {
            MODULE_KEYS.X_KEY: tensors[REGISTRY_KEYS.X_KEY],
            CONDITION_KEY: tensors[REGISTRY_KEYS.BATCH_KEY],
            MODULE_KEYS.CAT_COVS_KEY: tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    def _get_generative_input(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | Distribution],
        condition: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Collect generative inputs; ``condition`` overrides each cell's own label (counterfactual decoding)."""
        return {
            MODULE_KEYS.Z_KEY: inference_outputs[MODULE_KEYS.Z_KEY],
            CONDITION_KEY: tensors[REGISTRY_KEYS.BATCH_KEY] if condition is None else condition,
            MODULE_KEYS.LIBRARY_KEY: inference_outputs[MODULE_KEYS.LIBRARY_KEY],
            MODULE_KEYS.CAT_COVS_KEY: tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
        }

    @auto_move_data
    def inference(
        self, x: torch.Tensor, condition: torch.Tensor, cat_covs: torch.Tensor | None = None, n_samples: int = 1
    ) -> dict[str, torch.Tensor | Distribution]:
        """Encode ``x`` under ``condition``: posterior ``qz``, a sample ``z`` and the library size."""
        library = row_sums(x)
        encoder_input = torch.log1p(x) if self.is_count_model else x
        categorical = self._categorical_inputs(condition, cat_covs)
        if is_sparse(x):  # sparse until the first layer (``data/_sparse.py``)
            hidden = sparse_fc_layers(self.z_encoder, encoder_input, *categorical)
        else:
            hidden = self.z_encoder(encoder_input, *categorical)
        qz = Normal(self.z_mean_encoder(hidden), torch.exp(self.z_var_encoder(hidden)).add(1e-4).sqrt())
        z = qz.rsample() if n_samples == 1 else qz.rsample((n_samples,))
        return {MODULE_KEYS.QZ_KEY: qz, MODULE_KEYS.Z_KEY: z, MODULE_KEYS.LIBRARY_KEY: library}

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        condition: torch.Tensor,
        library: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor | Distribution]:
        """Decode ``z`` under ``condition``.

        Returns ``mmd_layer`` (``y``), ``px_scale`` (expression proportions for count
        likelihoods, the reconstruction itself for ``"mse"``), ``px_mean`` (expected value on the
        input scale) and ``px`` (the likelihood distribution).
        """
        mmd_layer = self.mmd_decoder(z, *self._categorical_inputs(condition, cat_covs))
        hidden = self.expression_decoder(mmd_layer)
        if not self.is_count_model:
            px_mean = F.relu(self.px_head(hidden))
            return {
                MMD_LAYER_KEY: mmd_layer,
                PX_SCALE_KEY: px_mean,
                PX_MEAN_KEY: px_mean,
                MODULE_KEYS.PX_KEY: Normal(px_mean, 1.0),
            }
        px_scale = torch.softmax(self.px_head(hidden), dim=-1)
        px_mean = library * px_scale
        if self.dispersion == "gene-condition":
            one_hot = F.one_hot(condition.reshape(-1).long(), self.n_conditions).to(z.dtype)
            theta = torch.exp(one_hot @ self.px_r.T)
        else:
            theta = torch.exp(self.px_r[:, 0])
        if self.likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(
                mu=px_mean, theta=theta, zi_logits=self.px_dropout_head(hidden), scale=px_scale
            )
        else:
            px = NegativeBinomial(mu=px_mean, theta=theta, scale=px_scale)
        return {MMD_LAYER_KEY: mmd_layer, PX_SCALE_KEY: px_scale, PX_MEAN_KEY: px_mean, MODULE_KEYS.PX_KEY: px}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | Distribution],
        generative_outputs: dict[str, torch.Tensor | Distribution],
        kl_weight: float = DEFAULT_KL_WEIGHT,
        mmd_weight: float = DEFAULT_MMD_WEIGHT,
    ) -> LossOutput:
        """``mean(reconstruction + kl_weight * KL) + mmd_weight * MMD`` over the minibatch.

        The unweighted MMD is reported as the extra metric ``mmd`` (``mmd_train`` and
        ``mmd_validation`` in ``model.history``).
        """
        x = to_dense(tensors[REGISTRY_KEYS.X_KEY])
        if self.is_count_model:
            reconstruction = -generative_outputs[MODULE_KEYS.PX_KEY].log_prob(x).sum(dim=-1)
        else:
            reconstruction = 0.5 * (x - generative_outputs[PX_MEAN_KEY]).pow(2).sum(dim=-1)
        qz = inference_outputs[MODULE_KEYS.QZ_KEY]
        kl = kl_divergence(qz, Normal(torch.zeros_like(qz.loc), torch.ones_like(qz.scale))).sum(dim=-1)
        mmd = self.mmd_penalty(tensors, inference_outputs, generative_outputs)
        loss = torch.mean(reconstruction + kl_weight * kl) + mmd_weight * mmd
        return LossOutput(
            loss=loss, reconstruction_loss=reconstruction, kl_local=kl, extra_metrics={"mmd": mmd.detach()}
        )

    def mmd_penalty(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict[str, torch.Tensor | Distribution],
        generative_outputs: dict[str, torch.Tensor | Distribution],
    ) -> torch.Tensor:
        """Unweighted MMD between the minibatch's conditions on the layer chosen by ``mmd_on``."""
        if self.mmd_on is None:
            return inference_outputs[MODULE_KEYS.Z_KEY].sum() * 0.0
        values = generative_outputs[MMD_LAYER_KEY] if self.mmd_on == "y" else inference_outputs[MODULE_KEYS.Z_KEY]
        return condition_mmd(values, tensors[REGISTRY_KEYS.BATCH_KEY], self.n_conditions, self.mmd_bandwidths)

    # ------------------------------------------------------------------ counterfactual decoding
    def _codes(self, like: torch.Tensor, condition: int | torch.Tensor, device: torch.device) -> torch.Tensor:
        """``condition`` for every cell: a tensor as it is, a code repeated in the shape of ``like``."""
        codes = condition if isinstance(condition, torch.Tensor) else torch.full_like(like, condition)
        return codes.to(device)

    def _expression(self, generative_outputs: dict, library: torch.Tensor, output_scale: OutputScale | None):
        """Expression on the prediction's scale: the mean for ``"mse"``, scaled proportions for counts."""
        if not self.is_count_model:
            return generative_outputs[PX_MEAN_KEY]
        proportions = generative_outputs[PX_SCALE_KEY]
        return proportions if output_scale is None else output_scale(proportions, library)

    @torch.inference_mode()
    def counterfactual(
        self,
        x: torch.Tensor,
        source: torch.Tensor,
        target: int | torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        *,
        noise: Sequence[torch.Tensor] = (),
        output_scale: OutputScale | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        r"""Predict the cells ``x`` of condition ``source`` under condition ``target``.

        Each cell is encoded under its own condition, its ``z`` decoded under ``target`` and under
        ``source``; the difference is the shift that ``target`` makes to that cell. Added to the
        observed cell (abduction, action, prediction) it keeps the cell's own variation, which a
        decoder mean smooths away: ``counterfactual = max(decoded + observed - reconstructed, 0)``.

        Parameters
        ----------
        x
            Expression (dense or sparse CSR), ``(n_cells, n_input)``.
        source
            Condition codes of the cells, ``(n_cells, 1)``, used to encode them and for the reconstruction.
        target
            Condition code (or one code per cell) to decode under.
        cat_covs
            Codes of the extra categorical covariates, ``(n_cells, n_covariates)``.
        noise
            Standard-normal draws of ``z``, each ``(n_cells, n_latent)``: one prediction per draw, with
            ``z = loc + scale * noise``. Empty (default): one prediction at the posterior mean.
        output_scale
            Count likelihoods: maps expression proportions and library sizes to the scale of the
            prediction (e.g. ``log1p(proportion * 1e4)``); ``None`` keeps proportions. Unused for ``"mse"``.

        Returns
        -------
        One dict per draw: ``decoded`` (the decoder's expression under ``target``), ``shift``
        (``decoded`` minus the reconstruction under ``source``) and ``counterfactual`` (the observed
        cell plus that shift, clipped at zero), each ``(n_cells, n_input)`` on the prediction's scale.
        """
        with distribution_validation(False):  # a few percent of prediction time; the values come from the model
            outputs = self.inference(x, source, cat_covs)
            qz, library = outputs[MODULE_KEYS.QZ_KEY], outputs[MODULE_KEYS.LIBRARY_KEY]
            observed = to_dense(x).to(library.device)
            if self.is_count_model:
                proportions = observed / library.clamp_min(1.0)
                observed = proportions if output_scale is None else output_scale(proportions, library)
            target_codes = self._codes(source, target, qz.loc.device)
            source_codes = source.to(qz.loc.device)
            predictions = []
            for draw in noise or [None]:
                z = qz.loc if draw is None else qz.loc + qz.scale * draw.to(qz.loc.device)
                decoded = self._expression(self.generative(z, target_codes, library, cat_covs), library, output_scale)
                reconstructed = self._expression(
                    self.generative(z, source_codes, library, cat_covs), library, output_scale
                )
                predictions.append({
                    DECODED_KEY: decoded,
                    SHIFT_KEY: decoded - reconstructed,
                    COUNTERFACTUAL_KEY: (decoded + observed - reconstructed).clamp_min(0.0),
                })  # fmt: skip
        return predictions

    @torch.inference_mode()
    def mmd_representation(
        self,
        x: torch.Tensor,
        condition: torch.Tensor,
        cat_covs: torch.Tensor | None = None,
        decode_condition: int | None = None,
    ) -> torch.Tensor:
        """Return the MMD layer ``y = g1(z, s)`` of cells ``x``, ``z`` at its posterior mean.

        Parameters
        ----------
        x
            Expression (dense or sparse CSR), ``(n_cells, n_input)``.
        condition
            Condition codes of the cells, ``(n_cells, 1)``, used to encode them.
        cat_covs
            Codes of the extra categorical covariates.
        decode_condition
            Decode every cell under this condition code; ``None``: under its own.

        Returns
        -------
        ``(n_cells, n_mmd)``.
        """
        outputs = self.inference(x, condition, cat_covs)
        z, library = outputs[MODULE_KEYS.QZ_KEY].loc, outputs[MODULE_KEYS.LIBRARY_KEY]
        codes = self._codes(condition, condition if decode_condition is None else decode_condition, z.device)
        return self.generative(z, codes, library, cat_covs)[MMD_LAYER_KEY]

    @torch.inference_mode()
    def sample(self, tensors: dict[str, torch.Tensor], n_samples: int = 1) -> torch.Tensor:
        """Draw from the likelihood given each cell's own condition; shape ``(n_samples, n, n_input)``."""
        draws = []
        for _ in range(n_samples):
            _, generative_outputs = self.forward(tensors, compute_loss=False)
            draws.append(generative_outputs[MODULE_KEYS.PX_KEY].sample())
        return torch.stack(draws)
