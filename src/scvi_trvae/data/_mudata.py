"""MuData support: trVAE models the RNA modality of a :class:`mudata.MuData`.

:meth:`TRVAE.setup_mudata <scvi_trvae.TRVAE.setup_mudata>` registers the RNA modality (an AnnData held by the
MuData) with :meth:`TRVAE.setup_anndata <scvi_trvae.TRVAE.setup_anndata>`, so training, prediction and every
input check run on that AnnData, and the model and its saved form are those of an AnnData model. Wherever the
model accepts an AnnData it also accepts the MuData, and reads the RNA modality from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anndata import AnnData
from mudata import MuData

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

_MODALITY_ARGS = ("rna_layer", "condition_key", "categorical_covariate_keys")


def _rna_modality_name(mdata: MuData, modalities: dict[str, str] | None) -> str:
    """Check ``modalities`` the way scvi-tools' ``setup_mudata`` does and return the RNA modality's name."""
    if modalities is None or modalities.get("rna_layer") is None:
        raise ValueError(
            "`modalities` must name the RNA modality, e.g. modalities={'rna_layer': 'rna'}; "
            f"the MuData has the modalities {list(mdata.mod)}."
        )
    extra = set(modalities) - set(_MODALITY_ARGS)
    if extra:
        raise ValueError(f"Extraneous modality mapping(s) {sorted(extra)}; allowed keys: {list(_MODALITY_ARGS)}.")
    name = modalities["rna_layer"]
    if name not in mdata.mod:
        raise ValueError(f"No modality {name!r} in the MuData; its modalities are {list(mdata.mod)}.")
    for arg in ("condition_key", "categorical_covariate_keys"):
        if modalities.get(arg, name) != name:
            raise ValueError(
                f"trVAE reads {arg} from the RNA modality's obs, but `modalities` maps it to "
                f"{modalities[arg]!r}. Copy the column into mdata[{name!r}].obs."
            )
    return name


def setup_mudata(
    model_cls: Any,
    mdata: MuData,
    *,
    rna_layer: str | None,
    condition_key: str,
    categorical_covariate_keys: list[str] | None,
    is_count_data: bool,
    modalities: dict[str, str] | None,
    **kwargs: Any,
) -> None:
    """Register the RNA modality of ``mdata`` with ``model_cls.setup_anndata`` (see ``TRVAE.setup_mudata``)."""
    if not isinstance(mdata, MuData):
        raise TypeError(f"setup_mudata needs a MuData, got {type(mdata).__name__}; use setup_anndata for an AnnData.")
    name = _rna_modality_name(mdata, modalities)
    rna = mdata.mod[name]
    if condition_key not in rna.obs and condition_key in mdata.obs:
        raise ValueError(
            f"{condition_key!r} is a column of mdata.obs but not of mdata[{name!r}].obs, where trVAE reads it; "
            f"copy it there: mdata[{name!r}].obs[{condition_key!r}] = mdata.obs[{condition_key!r}]."
        )
    model_cls.setup_anndata(
        rna,
        condition_key=condition_key,
        layer=rna_layer,
        categorical_covariate_keys=categorical_covariate_keys,
        is_count_data=is_count_data,
        **kwargs,
    )


def registered_modality(model_cls: Any, data: AnnData | MuData | None) -> AnnData | None:
    """Return the modality of ``data`` registered by ``setup_mudata`` (``data`` itself unless a MuData)."""
    if not isinstance(data, MuData):
        return data
    registered = [mod for mod in data.mod.values() if model_cls._get_most_recent_anndata_manager(mod) is not None]
    if len(registered) != 1:
        raise ValueError(
            f"Expected one modality of the MuData registered with {model_cls.__name__}.setup_mudata, "
            f"found {len(registered)} among {list(data.mod)}."
        )
    return registered[0]


def modality_with_genes(data: AnnData | MuData | None, genes: Sequence[str] | np.ndarray | None) -> AnnData | None:
    """Return the modality of ``data`` whose features are ``genes`` (``data`` itself unless a MuData)."""
    if not isinstance(data, MuData):
        return data
    if genes is None:
        raise ValueError("This model does not know its genes; pass the RNA modality (an AnnData) instead.")
    wanted = set(map(str, genes))
    matches = [name for name, mod in data.mod.items() if set(map(str, mod.var_names)) == wanted]
    if len(matches) != 1:
        raise ValueError(
            f"Expected one modality of the MuData with the model's {len(wanted)} genes, found {matches or 'none'} "
            f"among {list(data.mod)}; pass the RNA modality (an AnnData), e.g. mdata['rna']."
        )
    return data.mod[matches[0]]
