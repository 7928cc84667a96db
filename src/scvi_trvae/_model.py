"""User-facing trVAE model."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, CategoricalObsField, LayerField
from scvi.model.base import ArchesMixin, BaseModelClass, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from ._conv_module import DEFAULT_IMAGE_LIKELIHOOD, ConvTRVAEModule, ImageLikelihood, check_pixel_values
from ._data import ConditionBalancedDataSplitter
from ._module import (
    DEFAULT_KL_WEIGHT,
    DEFAULT_MMD_WEIGHT,
    Dispersion,
    Likelihood,
    MMDTarget,
    TRVAEModule,
)
from ._training_plan import TRVAETrainingPlan
from ._validation import (
    check_condition_column,
    check_expression_values,
    check_loss_weight,
    check_obs_keys,
    check_same_genes,
    check_unregistered_anndata,
    expression_matrix,
)

if TYPE_CHECKING:
    from ._mmd import BandwidthSpec

logger = logging.getLogger(__name__)

PredictionMode = Literal["counterfactual", "mean"]
#: Default of :meth:`TRVAE.predict_perturbation`; measured on the Kang NK split (``docs/defaults.md``).
DEFAULT_PREDICTION_MODE: PredictionMode = "counterfactual"
#: Library size of count-model predictions unless told otherwise: counts per 10,000, as ``normalize_total``.
DEFAULT_TARGET_LIBRARY_SIZE = 1e4
#: Minibatch steps that ``train(max_epochs=None)`` aims for; measured on the Kang NK split (``docs/defaults.md``).
DEFAULT_TRAINING_STEPS = 1500
#: obs column of predictions recording the condition each predicted cell was encoded from.
SOURCE_COLUMN = "trvae_source_condition"


class TRVAE(VAEMixin, ArchesMixin, UnsupervisedTrainingMixin, BaseModelClass):
    """trVAE: conditional VAE with an MMD-regularised decoder layer, for out-of-sample perturbation prediction.

    Implements Lotfollahi et al., "Conditional out-of-sample generation for unpaired data using
    trVAE" (arXiv:1910.01791) on scvi-tools. Encode cells of one condition with their own label
    and decode them with another to predict how they would look under it.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Width of the hidden layers (and of the MMD layer ``y``).
    n_latent
        Dimension of the latent space ``z``.
    n_layers
        Hidden layers of the encoder; the decoder mirrors them (``y`` plus ``n_layers - 1``).
    dropout_rate
        Dropout rate of hidden layers (not of ``y``).
    use_batch_norm, use_layer_norm
        Normalisation of hidden layers.
    likelihood
        ``"mse"`` for log-normalised data, ``"nb"`` / ``"zinb"`` for raw counts. Defaults to
        ``"nb"`` when :meth:`setup_anndata` registered counts (``is_count_data=True``), else ``"mse"``.
        Image models: ``"bernoulli"`` (default), ``"continuous_bernoulli"`` or ``"mse"`` on [0, 1] pixels.
    dispersion
        ``"gene"`` or ``"gene-condition"`` inverse dispersion of the count likelihoods.
    mmd_on
        ``"y"`` (trVAE, default), ``"z"`` (MMD-CVAE baseline) or ``None`` (plain CVAE).
    mmd_bandwidths
        ``"adaptive"`` (RBF bandwidths scaled to the layer's distances) or a sequence of bandwidths.
    image_shape
        ``(height, width)`` or ``(channels, height, width)`` of images held flattened in ``X``
        (channels first): selects the convolutional :class:`~scvi_trvae.ConvTRVAEModule`
        (``n_layers`` stride-2 convolution blocks; ``docs/images.md``). ``None``: the dense model.
    registry
        Registry of a saved model; used by :meth:`load` when no AnnData is given.

    Examples
    --------
    >>> import scvi_trvae
    >>> adata = scvi_trvae.datasets.synthetic_perturbation()
    >>> scvi_trvae.TRVAE.setup_anndata(adata, condition_key="condition")
    >>> model = scvi_trvae.TRVAE(adata)
    >>> model.train(max_epochs=50)
    >>> control_nk = adata[adata.obs["cell_type"] == "type_A"].copy()
    >>> predicted = model.predict_perturbation(control_nk, source="control", target="stimulated")
    """

    _module_cls = TRVAEModule
    _data_splitter_cls = ConditionBalancedDataSplitter
    _training_plan_cls = TRVAETrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int = 256,
        n_latent: int = 20,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        likelihood: Likelihood | ImageLikelihood | None = None,
        dispersion: Dispersion = "gene",
        mmd_on: MMDTarget = "y",
        mmd_bandwidths: BandwidthSpec = "adaptive",
        image_shape: tuple[int, ...] | None = None,
        registry: dict | None = None,
    ):
        super().__init__(adata, registry=registry)
        is_count_data = bool(self.registry_["setup_args"]["is_count_data"])
        if image_shape is not None:
            likelihood = likelihood or DEFAULT_IMAGE_LIKELIHOOD
            if adata is not None:
                check_pixel_values(self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY), likelihood, is_count_data)
        if likelihood is None:
            likelihood = "nb" if is_count_data else "mse"
        if likelihood in ("nb", "zinb") and not is_count_data:
            raise ValueError(
                f"likelihood={likelihood!r} needs raw counts, but setup_anndata registered log-normalised data "
                "(is_count_data=False). Register counts with `TRVAE.setup_anndata(..., layer='counts', "
                "is_count_data=True)` or use likelihood='mse'."
            )
        if likelihood == "mse" and is_count_data:
            raise ValueError(
                "likelihood='mse' is for log-normalised data, but setup_anndata registered raw counts "
                "(is_count_data=True). Use likelihood='nb' or 'zinb', or register log-normalised data."
            )
        self.var_names_ = None if adata is None else np.asarray(adata.var_names, dtype=str)
        module_cls = self._module_cls if image_shape is None else partial(ConvTRVAEModule, image_shape=image_shape)
        self.module = module_cls(
            n_input=self.summary_stats.n_vars,
            n_conditions=self.summary_stats.n_batch,
            n_cats_per_cov=self._n_cats_per_cov(),
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            use_batch_norm=use_batch_norm,
            use_layer_norm=use_layer_norm,
            likelihood=likelihood,
            dispersion=dispersion,
            mmd_on=mmd_on,
            mmd_bandwidths=mmd_bandwidths,
        )
        self._model_summary_string = (
            f"TRVAE model: {self.summary_stats.n_vars} genes, conditions {list(self.conditions)}, "
            f"likelihood={likelihood!r}, mmd_on={mmd_on!r}, n_latent={n_latent}, n_hidden={n_hidden}, "
            f"n_layers={n_layers}, dropout_rate={dropout_rate}"
        )
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ registration
    @classmethod
    @setup_anndata_dsp.dedent
    def setup_anndata(
        cls,
        adata: AnnData,
        condition_key: str,
        layer: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        is_count_data: bool = False,
        **kwargs,
    ) -> None:
        """Register an AnnData for trVAE.

        Adds scvi-tools' registration to ``adata`` (``adata.obs['_scvi_batch']`` and friends,
        ``adata.uns['_scvi_uuid']`` and ``adata.uns['_scvi_manager_uuid']``); nothing else is changed.

        Parameters
        ----------
        %(param_adata)s
        condition_key
            Column of ``adata.obs`` with the condition (e.g. control / stimulated) of each cell;
            at least two conditions. Stored in scvi-tools' ``batch`` slot.
        %(param_layer)s
        categorical_covariate_keys
            obs columns of extra categorical covariates (e.g. donor) given to the encoder and
            decoder alongside the condition.
        is_count_data
            ``True`` when the registered matrix holds raw counts (for ``"nb"``/``"zinb"``):
            checked to be non-negative integers. ``False`` (default) for log-normalised data
            (``"mse"``); a warning is given when such data look like counts.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        if adata.n_obs == 0 or adata.n_vars == 0:
            raise ValueError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
        check_obs_keys(adata, [condition_key], "condition_key")
        check_obs_keys(adata, categorical_covariate_keys or [], "categorical_covariate_keys")
        if kwargs.get("source_registry") is None:  # a transfer from a saved model keeps its conditions
            check_condition_column(adata, condition_key)
        matrix = expression_matrix(adata, layer)
        check_expression_values(
            matrix, is_count_data=is_count_data, where="adata.X" if layer is None else f"adata.layers[{layer!r}]"
        )
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=is_count_data),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, condition_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    def _field_state(self, registry_key: str) -> dict:
        return self.registry_["field_registries"][registry_key]["state_registry"]

    def _n_cats_per_cov(self) -> list[int]:
        return list(self._field_state(REGISTRY_KEYS.CAT_COVS_KEY).get("n_cats_per_key", []))

    @property
    def condition_key(self) -> str:
        """The obs column holding the condition."""
        return self._field_state(REGISTRY_KEYS.BATCH_KEY)["original_key"]

    @property
    def conditions(self) -> np.ndarray:
        """Registered conditions, in the order of their codes."""
        return np.asarray(self._field_state(REGISTRY_KEYS.BATCH_KEY)["categorical_mapping"])

    def _condition_code(self, condition: str, role: str) -> int:
        matches = np.flatnonzero(self.conditions.astype(str) == str(condition))
        if len(matches) == 0:
            raise ValueError(f"Unknown {role} condition {condition!r}; registered conditions: {list(self.conditions)}.")
        return int(matches[0])

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        batch_size: int = 128,
        kl_weight: float = DEFAULT_KL_WEIGHT,
        mmd_weight: float = DEFAULT_MMD_WEIGHT,
        early_stopping: bool = False,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train with condition-balanced minibatches.

        Every training minibatch holds every condition in about equal numbers
        (:class:`~scvi_trvae.ConditionBalancedSampler`); the train/validation split is drawn
        within each condition.

        Parameters
        ----------
        max_epochs
            Number of passes through the data. ``None``: enough epochs for about
            ``DEFAULT_TRAINING_STEPS`` (1,500) minibatch steps, between 20 and 400 (80 epochs for the
            2,351 training cells of the Kang NK split, where 60-80 epochs beat 200; ``docs/defaults.md``).
        batch_size
            Minibatch size; each of ``C`` conditions contributes ``batch_size // C`` cells.
        kl_weight
            Constant weight of the KL term. For a warm-up pass ``plan_kwargs={"n_epochs_kl_warmup": n}``
            (the weight then rises from 0 to ``kl_weight``).
        mmd_weight
            Weight of the MMD term.
        early_stopping
            Stop when ``validation_loss`` (which includes the MMD term) stops improving; see
            :class:`scvi.train.Trainer` for ``early_stopping_patience`` and friends.
        plan_kwargs
            Keyword arguments of :class:`scvi.train.TrainingPlan` (e.g. ``lr``, ``weight_decay``).
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``train_size``,
            ``validation_size``, ``accelerator``, ``check_val_every_n_epoch``, trainer arguments...).

        Returns
        -------
        What scvi-tools' training runner returns; the losses are in ``model.history``
        (``reconstruction_loss_*``, ``kl_local_*``, ``mmd_*``, ``train_loss_*``, ``validation_loss``).
        """
        check_loss_weight(kl_weight, "kl_weight")
        check_loss_weight(mmd_weight, "mmd_weight")
        plan_kwargs = dict(plan_kwargs or {})
        warmup = plan_kwargs.get("n_epochs_kl_warmup") or plan_kwargs.get("n_steps_kl_warmup")
        plan_kwargs.setdefault("n_epochs_kl_warmup", None)
        plan_kwargs.setdefault("max_kl_weight", kl_weight)
        plan_kwargs.setdefault("min_kl_weight", 0.0 if warmup else kl_weight)
        plan_kwargs.setdefault("mmd_weight", mmd_weight)
        if any(not parameter.requires_grad for parameter in self.module.parameters()):
            # a query model from load_query_data: weight decay would slowly move the frozen weights
            plan_kwargs.setdefault("weight_decay", 0.0)
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
        if max_epochs is None and self.adata is not None:
            steps_per_epoch = math.ceil(self.adata.n_obs / batch_size)
            max_epochs = min(max(math.ceil(DEFAULT_TRAINING_STEPS / steps_per_epoch), 20), 400)
        return super().train(
            max_epochs=max_epochs,
            batch_size=batch_size,
            early_stopping=early_stopping,
            plan_kwargs=plan_kwargs,
            **kwargs,
        )

    # ------------------------------------------------------------------ queries
    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        """Return ``adata`` registered with this model, checking and copying it if it is not.

        An AnnData this model has not registered is checked (:func:`check_unregistered_anndata`)
        and copied before registration, so that no query method modifies the user's object.
        """
        if adata is not None and not self._check_anndata(adata):
            adata = adata.to_memory() if adata.isbacked else adata.copy()
        return super()._validate_anndata(adata, copy_if_view=copy_if_view)

    def _check_anndata(self, adata: AnnData) -> bool:
        """Check the genes of ``adata``, and its content if unregistered; return whether it is registered."""
        if self.var_names_ is not None:
            check_same_genes(adata, pd.Index(self.var_names_))
        registered = self.get_anndata_manager(adata) is not None
        if not registered:
            check_unregistered_anndata(self, adata)
        return registered

    def _prediction_input(
        self, adata: AnnData | None, indices: Sequence[int] | np.ndarray | None, conditions: Sequence[str] | None
    ) -> tuple[AnnData, np.ndarray]:
        """Return the registered AnnData to read and the positions of its cells to use.

        Of an AnnData not registered with this model only the selected cells are copied and
        registered; the user's object is never modified. Positions into a backed AnnData are
        sorted, the order in which its rows are read.
        """
        if adata is None:
            if self.adata is None:
                raise ValueError("This model was loaded without its AnnData; pass `adata=`.")
            adata = self.adata
        registered = self._check_anndata(adata)
        positions = np.arange(adata.n_obs)
        if indices is not None:
            indices = np.asarray(indices)
            positions = positions[indices] if indices.dtype == bool else indices.astype(int)
        if adata.isbacked:
            positions = np.sort(positions)
        if conditions is not None:
            labels = adata.obs[self.condition_key].to_numpy().astype(str)[positions]
            positions = positions[np.isin(labels, [str(c) for c in conditions])]
        if len(positions) == 0:
            raise ValueError(
                f"No cells of condition(s) {list(conditions or [])} in the selected cells of adata "
                f"(column {self.condition_key!r})."
            )
        if not registered:
            adata = adata[positions].to_memory() if adata.isbacked else adata[positions].copy()
            positions = np.arange(adata.n_obs)
        return super()._validate_anndata(adata), positions

    def _output_scale(
        self, proportions: torch.Tensor, library: torch.Tensor, library_size: float | str, log1p: bool
    ) -> torch.Tensor:
        """Expression proportions of a count model on the returned scale."""
        scaled = proportions * (library if library_size == "observed" else float(library_size))
        return torch.log1p(scaled) if log1p else scaled

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
            Minibatch size (default ``scvi.settings.batch_size``).
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
        if mode not in ("counterfactual", "mean"):
            raise ValueError(f"mode must be 'counterfactual' or 'mean', got {mode!r}.")
        if n_samples < 0:
            raise ValueError(f"n_samples must be >= 0, got {n_samples}.")
        source_code = self._condition_code(source, "source")
        target_code = self._condition_code(target, "target")
        if source_code == target_code:
            raise ValueError(f"source and target are the same condition ({source!r}); nothing to predict.")
        if self.module.is_count_model:
            library_size = DEFAULT_TARGET_LIBRARY_SIZE if library_size is None else library_size
            log1p = True if log1p is None else log1p
        elif library_size is not None or log1p is not None:
            raise ValueError("library_size and log1p apply to count likelihoods only; this model uses 'mse'.")

        adata, positions = self._prediction_input(adata, indices, [self.conditions[source_code]])
        self.module.eval()
        generator = torch.Generator().manual_seed(seed if seed is not None else (settings.seed or 0))
        n_draws = max(n_samples, 1)
        draws: list[list[np.ndarray]] = [[] for _ in range(n_draws)]
        for tensors in self._make_data_loader(adata=adata, indices=positions, batch_size=batch_size, shuffle=False):
            inference_inputs = self.module._get_inference_input(tensors)
            outputs = self.module.inference(**inference_inputs)
            qz, library = outputs["qz"], outputs["library"]
            x = inference_inputs["x"].to(library.device)
            cat_covs = inference_inputs["cat_covs"]
            conditions = {
                code: torch.full_like(inference_inputs["condition"], code, device=library.device)
                for code in (source_code, target_code)
            }
            for draw in range(n_draws):
                if n_samples == 0:
                    z = qz.loc
                else:
                    noise = torch.randn(qz.loc.shape, generator=generator).to(qz.loc.device)
                    z = qz.loc + qz.scale * noise
                predicted = self._decode_expression(z, conditions[target_code], library, cat_covs, library_size, log1p)
                if mode == "counterfactual":
                    reconstructed = self._decode_expression(
                        z, conditions[source_code], library, cat_covs, library_size, log1p
                    )
                    observed = (
                        self._output_scale(x / library.clamp_min(1.0), library, library_size, log1p)
                        if self.module.is_count_model
                        else x
                    )
                    predicted = (predicted + observed - reconstructed).clamp_min(0.0)
                draws[draw].append(predicted.cpu().numpy())

        return self._prediction_anndata(
            adata, positions, [np.concatenate(parts) for parts in draws], source, target, mode, n_samples,
            library_size, log1p,
        )  # fmt: skip

    def _decode_expression(
        self,
        z: torch.Tensor,
        condition: torch.Tensor,
        library: torch.Tensor,
        cat_covs: torch.Tensor | None,
        library_size: float | str | None,
        log1p: bool | None,
    ) -> torch.Tensor:
        """Decode ``z`` under ``condition``: the decoder mean on the returned scale."""
        outputs = self.module.generative(z=z, condition=condition, library=library, cat_covs=cat_covs)
        if not self.module.is_count_model:
            return outputs["px_mean"]
        return self._output_scale(outputs["px_scale"], library, library_size, log1p)

    def _prediction_anndata(
        self,
        adata: AnnData,
        positions: np.ndarray,
        draws: list[np.ndarray],
        source: str,
        target: str,
        mode: str,
        n_samples: int,
        library_size: float | str | None,
        log1p: bool | None,
    ) -> AnnData:
        obs = adata.obs.iloc[positions]
        obs = obs.loc[:, [c for c in obs.columns if not str(c).startswith("_scvi")]].copy()
        categories = [str(c) for c in self.conditions]
        obs[SOURCE_COLUMN] = pd.Categorical([str(source)] * len(obs), categories=categories)
        obs[self.condition_key] = pd.Categorical([str(target)] * len(obs), categories=categories)
        if n_samples > 0:
            stacked = []
            for draw in range(n_samples):
                obs_draw = obs.copy()
                obs_draw["trvae_draw"] = draw
                obs_draw.index = [f"{name}-draw{draw}" for name in obs.index]
                stacked.append(obs_draw)
            obs = pd.concat(stacked)
        uns = {
            "source": str(source),
            "target": str(target),
            "mode": mode,
            "n_samples": int(n_samples),
            "likelihood": self.module.likelihood,
            "mmd_on": str(self.module.mmd_on),
            "condition_key": self.condition_key,
        }
        if self.module.is_count_model:
            uns["library_size"] = str(library_size)
            uns["log1p"] = bool(log1p)
        return AnnData(
            X=np.concatenate(draws).astype(np.float32),
            obs=obs,
            var=adata.var.copy(),
            uns={"trvae_prediction": uns},
        )

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
        Array of shape ``(n_cells, n_hidden)``.
        """
        self._check_if_trained(warn=True)
        adata, positions = self._prediction_input(adata, indices, None)
        override = None if condition is None else self._condition_code(condition, "requested")
        self.module.eval()
        layers = []
        for tensors in self._make_data_loader(adata=adata, indices=positions, batch_size=batch_size, shuffle=False):
            inference_inputs = self.module._get_inference_input(tensors)
            outputs = self.module.inference(**inference_inputs)
            own = inference_inputs["condition"].to(outputs["library"].device)
            codes = own if override is None else torch.full_like(own, override)
            generative = self.module.generative(
                z=outputs["qz"].loc, condition=codes, library=outputs["library"], cat_covs=inference_inputs["cat_covs"]
            )
            layers.append(generative["mmd_layer"].cpu().numpy())
        return np.concatenate(layers)

    def save(self, dir_path: str, *args, **kwargs) -> None:
        """Save the model (see :meth:`scvi.model.base.BaseModelClass.save`).

        With ``save_anndata=True`` the AnnData is written with
        ``convert_strings_to_categoricals=False`` unless told otherwise, because anndata's default
        would turn the user's string obs/var columns into categoricals in place.
        """
        kwargs.setdefault("convert_strings_to_categoricals", False)
        super().save(dir_path, *args, **kwargs)

    # ------------------------------------------------------------------ reference mapping
    @classmethod
    def load_query_data(cls, adata: AnnData | None = None, reference_model: str | TRVAE | None = None, **kwargs):
        """Map a query data set (possibly with new conditions) onto a trained reference.

        Wraps :meth:`scvi.model.base.ArchesMixin.load_query_data`: new conditions are appended
        and only their weights (and the condition-injected layers' one-hot columns) train. With
        ``dispersion="gene-condition"`` the new conditions' dispersions start at the mean of the
        reference ones and stay trainable. Train the returned model with :meth:`train` (weight
        decay is off for query models).

        Parameters
        ----------
        adata
            Query AnnData with the reference genes and the reference ``condition_key`` column.
        reference_model
            A trained :class:`TRVAE` or the directory it was saved to.
        **kwargs
            Passed to :meth:`scvi.model.base.ArchesMixin.load_query_data` (e.g. ``unfrozen``,
            ``freeze_dropout``).
        """
        if reference_model is None:
            raise ValueError("reference_model is required (a trained TRVAE or the directory it was saved to).")
        if not isinstance(reference_model, TRVAE):  # read the saved reference once, not once per use below
            reference_model = cls.load(reference_model, adata=None)
        if adata is not None and not kwargs.get("inplace_subset_query_vars", False):
            reference_genes = cls.prepare_query_anndata(adata, reference_model, return_reference_var_names=True)
            check_same_genes(adata, pd.Index(reference_genes))
        n_reference = reference_model.module.n_conditions
        model = super().load_query_data(adata, reference_model, **kwargs)
        module = model.module
        if module.is_count_model and module.dispersion == "gene-condition" and module.n_conditions > n_reference:
            with torch.no_grad():
                module.px_r[:, n_reference:] = module.px_r[:, :n_reference].mean(dim=1, keepdim=True)
            if not kwargs.get("unfrozen", False):
                trainable = torch.zeros_like(module.px_r)
                trainable[:, n_reference:] = 1.0
                module.px_r.requires_grad_(True)
                module.px_r.register_hook(lambda grad: grad * trainable)
        return model
