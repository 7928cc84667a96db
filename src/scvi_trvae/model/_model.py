"""User-facing trVAE model."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalJointObsField, CategoricalObsField, LayerField
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin, VAEMixin
from scvi.utils import setup_anndata_dsp

from scvi_trvae._quiet import quiet, settings
from scvi_trvae._threads import training_threads
from scvi_trvae._validation import (
    check_datamodule_registry,
    check_loss_weights,
    check_not_empty,
    check_setup_columns,
    check_setup_values,
    resolve_likelihood,
)
from scvi_trvae.data._mudata import registered_modality
from scvi_trvae.data._mudata import setup_mudata as _setup_mudata
from scvi_trvae.data._splitter import ConditionBalancedDataSplitter, epochs_for_steps
from scvi_trvae.io._checkpoint import InterruptibleTrainRunner
from scvi_trvae.io._persistence import SafePersistenceMixin
from scvi_trvae.utils import TARGET_LIBRARY_SIZE

from ._docstrings import trvae_dsp
from ._module import DEFAULT_KL_WEIGHT, DEFAULT_MMD_WEIGHT, TRVAEModule
from ._prediction import DEFAULT_PREDICTION_MODE, SOURCE_COLUMN
from ._prediction_mixin import PredictionMixin
from ._presets import paper_preset
from ._progress_bar import with_progress_bar
from ._query import QueryAnnDataMixin
from ._surgery import ReferenceMappingMixin
from ._training_plan import TRVAETrainingPlan

if TYPE_CHECKING:
    from mudata import MuData

    from ._mmd import BandwidthSpec
    from ._module import Dispersion, Likelihood, MMDTarget

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_PREDICTION_MODE", "DEFAULT_TARGET_LIBRARY_SIZE", "SOURCE_COLUMN", "TRVAE"]

#: Library size of count-model predictions unless told otherwise (:data:`scvi_trvae.utils.TARGET_LIBRARY_SIZE`).
DEFAULT_TARGET_LIBRARY_SIZE = TARGET_LIBRARY_SIZE
#: Minibatch steps that ``train(max_epochs=None)`` aims for; measured on the Kang NK split (``docs/defaults.md``).
DEFAULT_TRAINING_STEPS = 1500


@trvae_dsp.dedent
class TRVAE(
    SafePersistenceMixin,
    PredictionMixin,
    QueryAnnDataMixin,
    VAEMixin,
    ReferenceMappingMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """trVAE: conditional VAE with an MMD-regularised decoder layer, for out-of-sample perturbation prediction.

    Implements Lotfollahi et al., "Conditional out-of-sample generation for unpaired data using
    trVAE" (arXiv:1910.01791) on scvi-tools. Encode cells of one condition with their own label
    and decode them with another to predict how they would look under it.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    %(param_network)s
    %(param_likelihood)s
    %(param_mmd)s
    %(param_widths)s
    image_shape
        Deprecated: use :class:`~scvi_trvae.ImageTRVAE` for images (``docs/images.md``); given here, it
        still builds the image model, with a ``FutureWarning``.
    registry
        Registry of a saved model (used by :meth:`load` when no AnnData is given) or of a datamodule
        (``TRVAE(registry=datamodule.registry)``, :class:`~scvi_trvae.SOMAConditionBalancedDataModule`).

    Examples
    --------
    >>> import scvi_trvae
    >>> adata = scvi_trvae.datasets.synthetic_perturbation()
    >>> scvi_trvae.TRVAE.setup_anndata(adata, condition_key="condition")
    >>> model = scvi_trvae.TRVAE(adata)
    >>> model.train(max_epochs=50)
    >>> control_nk = adata[adata.obs["cell_type"] == "type_A"].copy()
    >>> predicted = model.predict_perturbation(control_nk, source="control", target="stimulated")

    The paper's Kang network and loss weights (:meth:`paper_preset`):

    >>> preset = scvi_trvae.TRVAE.paper_preset("kang")
    >>> model = scvi_trvae.TRVAE(adata, **preset["model"])
    >>> model.train(**preset["train"])
    """

    _module_cls = TRVAEModule
    _data_splitter_cls = ConditionBalancedDataSplitter
    _training_plan_cls = TRVAETrainingPlan
    _train_runner_cls = InterruptibleTrainRunner  # Ctrl-C stops training and keeps a usable model

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int | None = None,
        n_latent: int = 20,
        n_layers: int | None = None,
        dropout_rate: float = 0.1,
        use_batch_norm: bool = True,
        use_layer_norm: bool = False,
        likelihood: Likelihood | None = None,
        dispersion: Dispersion = "gene",
        mmd_on: MMDTarget = "y",
        mmd_bandwidths: BandwidthSpec = "adaptive",
        hidden_layer_sizes: Sequence[int] | None = None,
        n_mmd: int | None = None,
        image_shape: Sequence[int] | None = None,
        registry: dict | None = None,
    ):
        adata = registered_modality(type(self), adata)  # a MuData: its RNA modality (setup_mudata)
        super().__init__(adata, registry=registry)
        if image_shape is not None and type(self)._module_cls is TRVAEModule:
            warnings.warn(
                "TRVAE(image_shape=...) is deprecated: use scvi_trvae.ImageTRVAE(adata, image_shape=...) "
                "(set up with ImageTRVAE.setup_anndata) for images; see docs/images.md.",
                FutureWarning,
                stacklevel=2,
            )
        module_cls, likelihood = self._module_for(likelihood, image_shape, adata is not None)
        self.var_names_ = np.asarray(adata.var_names if adata is not None else self.get_var_names(), dtype=str)
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
            hidden_layer_sizes=hidden_layer_sizes,
            n_mmd=n_mmd,
        )
        self._model_summary_string = (
            f"{type(self).__name__} model: {self.summary_stats.n_vars} genes, conditions {list(self.conditions)}, "
            f"likelihood={likelihood!r}, mmd_on={mmd_on!r}, dropout_rate={dropout_rate}; layers: "
            f"{self.module.widths.describe(self.summary_stats.n_vars, n_latent)}"
        )
        self.init_params_ = self._get_init_params(locals())

    def _module_for(self, likelihood: str | None, image_shape: Sequence[int] | None, has_data: bool) -> tuple:
        """Return the module class to build and its likelihood, checked against the registered data."""
        if image_shape is not None:  # deprecated: the image model through TRVAE
            from scvi_trvae.image._model import image_module

            return image_module(self, likelihood, image_shape, has_data)
        is_count_data = bool(self.registry_["setup_args"]["is_count_data"])
        return self._module_cls, resolve_likelihood(likelihood, is_count_data)

    @staticmethod
    def paper_preset(name: str = "kang") -> dict[str, dict]:
        """Arguments reproducing a configuration of the trVAE paper (``docs/model.md``, "The paper's network").

        ``"kang"``: encoder 800 -> 800 -> 128 -> ``z`` 20, decoder ``z`` -> ``y`` 128 -> 800 -> 800,
        MMD on ``y`` with the paper's 19 fixed RBF bandwidths, dropout 0.2, minibatches of 128, and
        the paper's loss weights (eta 100, alpha 1e-6, beta 500) translated to this package's loss.

        Returns
        -------
        A new ``{"model": {...}, "train": {...}}``: ``TRVAE(adata, **preset["model"])`` then
        ``model.train(**preset["train"])`` (add ``max_epochs`` or other arguments as needed).
        """
        return paper_preset(name)

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
        allow_count_like: bool = False,
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
            (``"mse"``); such data that look like raw counts (only integers, some above 30) are
            refused: register the counts with ``layer=..., is_count_data=True`` for a count
            likelihood, or log-normalise them first.
        allow_count_like
            Accept count-like values registered with ``is_count_data=False`` (for data that are
            meant as they are); recorded with the setup, so the model's query data are accepted too.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        check_not_empty(adata)
        # a transfer from a saved model (source_registry) keeps that model's conditions
        check_setup_columns(
            adata, condition_key, categorical_covariate_keys, check_conditions=kwargs.get("source_registry") is None
        )
        check_setup_values(adata, layer, is_count_data=is_count_data, allow_count_like=allow_count_like)
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=is_count_data),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, condition_key),
            CategoricalJointObsField(REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        condition_key: str = "condition",
        categorical_covariate_keys: list[str] | None = None,
        is_count_data: bool = False,
        modalities: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        """Register the RNA modality of a MuData for trVAE.

        The modality named by ``modalities["rna_layer"]`` is registered with :meth:`setup_anndata`;
        the model trains on it, and every method that takes an AnnData also takes the MuData and
        reads that modality. The other modalities are not used.

        Parameters
        ----------
        mdata
            MuData holding the RNA modality.
        rna_layer
            Layer of the RNA modality to use; ``None`` for its ``X``.
        condition_key
            Column of the RNA modality's ``obs`` with each cell's condition.
        categorical_covariate_keys
            Columns of the RNA modality's ``obs`` with extra categorical covariates.
        is_count_data
            As in :meth:`setup_anndata`.
        modalities
            Setup argument -> modality name; ``{"rna_layer": "rna"}`` is required. ``condition_key``
            and ``categorical_covariate_keys`` may only name the RNA modality too.
        **kwargs
            Passed to :meth:`setup_anndata`.

        Examples
        --------
        >>> TRVAE.setup_mudata(mdata, condition_key="condition", modalities={"rna_layer": "rna"})
        >>> model = TRVAE(mdata)
        """
        _setup_mudata(
            cls, mdata, rna_layer=rna_layer, condition_key=condition_key,
            categorical_covariate_keys=categorical_covariate_keys, is_count_data=is_count_data,
            modalities=modalities, **kwargs,
        )  # fmt: skip

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
        (:class:`~scvi_trvae.data.ConditionBalancedSampler`); the train/validation split is drawn
        within each condition.

        Parameters
        ----------
        max_epochs
            Number of passes through the data. ``None``: enough epochs for about
            ``DEFAULT_TRAINING_STEPS`` (1,500) minibatch steps, between 20 and 400 (80 epochs for the
            2,351 training cells of the Kang NK split, where 60-80 epochs beat 200; ``docs/defaults.md``).
        batch_size
            Minibatch size; each of ``C`` conditions contributes ``batch_size // C`` cells. With
            ``datamodule=`` the datamodule's own ``batch_size`` is used instead.
        kl_weight
            Constant weight of the KL term. For a warm-up pass ``plan_kwargs={"n_epochs_kl_warmup": n}``
            (the weight then rises from 0, or ``plan_kwargs["min_kl_weight"]``, to ``kl_weight``).
        mmd_weight
            Weight of the MMD term.
        early_stopping
            Stop when ``validation_loss`` (which includes the MMD term) stops improving; see
            :class:`scvi.train.Trainer` for ``early_stopping_patience`` and friends.
        plan_kwargs
            Keyword arguments of :class:`scvi.train.TrainingPlan` (e.g. ``lr``, ``weight_decay``).
            The loss weights are set with ``kl_weight`` and ``mmd_weight`` only: ``mmd_weight``,
            ``kl_weight`` or ``max_kl_weight`` here is an error.
        **kwargs
            Passed to :meth:`scvi.model.base.UnsupervisedTrainingMixin.train` (``train_size``,
            ``validation_size``, ``accelerator``, ``check_val_every_n_epoch``, trainer arguments...),
            or ``datamodule``: a :class:`~scvi_trvae.SOMAConditionBalancedDataModule` to train from,
            with the model's genes, conditions and covariate categories (checked).

        Returns
        -------
        What scvi-tools' training runner returns; the losses are in ``model.history``
        (``reconstruction_loss_*``, ``kl_local_*``, ``mmd_*``, ``train_loss_*``, ``validation_loss``).
        """
        plan_kwargs = self._training_plan_kwargs(kl_weight, mmd_weight, plan_kwargs)
        if early_stopping:
            kwargs.setdefault("early_stopping_monitor", "validation_loss")
        datamodule = kwargs.get("datamodule")
        if hasattr(datamodule, "registry"):
            check_datamodule_registry(self.registry_, datamodule.registry)
        n_obs = self.adata.n_obs if self.adata is not None else getattr(datamodule, "n_obs", None)
        if max_epochs is None and n_obs is not None:
            epochs = epochs_for_steps(n_obs, getattr(datamodule, "batch_size", batch_size), DEFAULT_TRAINING_STEPS)
            max_epochs = min(max(epochs, 20), 400)
        # quiet: scvi-tools' and Lightning's details only at verbosity <= INFO; threads: settings.num_threads
        with quiet(), training_threads(settings.num_threads):
            return super().train(
                max_epochs=max_epochs,
                batch_size=batch_size,
                early_stopping=early_stopping,
                plan_kwargs=plan_kwargs,
                **with_progress_bar(kwargs),
            )

    def _training_plan_kwargs(self, kl_weight: float, mmd_weight: float, plan_kwargs: dict | None) -> dict:
        """Build the training plan's arguments, with the loss weights checked and set from one place each."""
        plan_kwargs = dict(plan_kwargs or {})
        check_loss_weights(kl_weight, mmd_weight, plan_kwargs)
        warmup = plan_kwargs.get("n_epochs_kl_warmup") or plan_kwargs.get("n_steps_kl_warmup")
        plan_kwargs.setdefault("n_epochs_kl_warmup", None)
        plan_kwargs.setdefault("min_kl_weight", 0.0 if warmup else kl_weight)
        plan_kwargs.update(max_kl_weight=kl_weight, mmd_weight=mmd_weight)
        if any(not parameter.requires_grad for parameter in self.module.parameters()):
            # a query model from load_query_data: weight decay would slowly move the frozen weights
            plan_kwargs.setdefault("weight_decay", 0.0)
        return plan_kwargs

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        with quiet():  # "Input AnnData not setup with scvi-tools..." only at verbosity <= INFO
            return super()._validate_anndata(adata, copy_if_view=copy_if_view)
