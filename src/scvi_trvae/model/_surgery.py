"""Reference mapping (scArches surgery) of :class:`~scvi_trvae.TRVAE`: new conditions onto a trained model."""

from __future__ import annotations

import pandas as pd
from anndata import AnnData
from scvi.model.base import ArchesMixin, BaseModelClass

from scvi_trvae._validation import check_same_genes


class ReferenceMappingMixin(ArchesMixin):
    """:meth:`load_query_data` with the genes checked, the reference read safely and query dispersions started."""

    @classmethod
    def load_query_data(
        cls, adata: AnnData | None = None, reference_model: str | BaseModelClass | None = None, **kwargs
    ):
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
        if not isinstance(reference_model, BaseModelClass):  # read the saved reference once, not once per use below
            reference_model = cls.load(reference_model, adata=False)  # read safely (SafePersistenceMixin)
        if adata is not None and not kwargs.get("inplace_subset_query_vars", False):
            reference_genes = cls.prepare_query_anndata(adata, reference_model, return_reference_var_names=True)
            check_same_genes(adata, pd.Index(reference_genes))
        n_reference = reference_model.module.n_conditions
        model = super().load_query_data(adata, reference_model, **kwargs)
        if getattr(model.module, "dispersion", None) == "gene-condition":
            model.module.start_query_dispersions(n_reference, train_reference=kwargs.get("unfrozen", False))
        return model
