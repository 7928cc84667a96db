"""How every query method of :class:`~scvi_trvae.TRVAE` receives a user's AnnData."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from scvi_trvae._quiet import quiet
from scvi_trvae._validation import check_not_empty, check_same_genes, check_setup_columns, check_setup_values
from scvi_trvae.data._mudata import modality_with_genes


class QueryAnnDataMixin:
    """One entrance for the AnnData of query methods: checked, and registered on a copy when it is not.

    Mixed into :class:`~scvi_trvae.TRVAE` before scvi-tools' classes, so that scvi-tools' own
    query methods (``get_latent_representation`` and friends, through ``_validate_anndata``) take
    the same path as this package's.
    """

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True) -> AnnData:
        """scvi-tools' entrance for a user's AnnData, routed through :meth:`_query_anndata`."""
        with quiet():  # "Input AnnData not setup with scvi-tools..." only at verbosity <= INFO
            if adata is None:
                return super()._validate_anndata(None, copy_if_view=copy_if_view)
            return self._query_anndata(adata, copy_if_view=copy_if_view)[0]

    def _query_anndata(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | np.ndarray | None = None,
        conditions: Sequence[str] | None = None,
        copy_if_view: bool = True,
    ) -> tuple[AnnData, np.ndarray]:
        """Return the registered AnnData to read and the positions of its cells to use.

        Every AnnData a query method receives passes here once. Its genes must be the training
        genes. One this model registered is used as it is. Of any other only the selected cells
        are copied, and that copy is checked (obs columns, expression values) and registered: the
        user's object is never modified, and a large AnnData is not scanned beyond the cells
        asked for. Positions into a backed AnnData are sorted, the order in which its rows are read.
        """
        adata = modality_with_genes(adata, self.var_names_)  # a MuData: its RNA modality
        if adata is None:
            if self.adata is None:
                raise ValueError(
                    "This model has no AnnData (loaded without one, or trained from a datamodule): pass `adata=`."
                )
            adata = self.adata
        check_not_empty(adata)
        if self.var_names_ is not None:
            check_same_genes(adata, pd.Index(self.var_names_))
        registered = self.get_anndata_manager(adata) is not None
        setup_args = self.registry_["setup_args"]
        if not registered:
            check_setup_columns(
                adata, setup_args["condition_key"], setup_args.get("categorical_covariate_keys"),
                check_conditions=False, role=" of the model",
            )  # fmt: skip
        positions = self._selected_positions(adata, indices, conditions)
        if not registered:
            # copy=True: anndata 0.13's to_memory() of a backed view keeps X as an ArrayView, which torch's
            # loader does not turn into a tensor
            adata = adata[positions].to_memory(copy=True) if adata.isbacked else adata[positions].copy()
            check_setup_values(
                adata, setup_args.get("layer"), is_count_data=bool(setup_args.get("is_count_data")),
                allow_count_like=bool(setup_args.get("allow_count_like")),
            )  # fmt: skip
            positions = np.arange(adata.n_obs)
        return super()._validate_anndata(adata, copy_if_view=copy_if_view), positions

    def _selected_positions(
        self, adata: AnnData, indices: Sequence[int] | np.ndarray | None, conditions: Sequence[str] | None
    ) -> np.ndarray:
        """Positions of the cells of ``adata`` within ``indices`` whose condition is among ``conditions``."""
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
        return positions
