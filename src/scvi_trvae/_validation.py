"""Checks of user input that raise (or warn) with messages naming the problem."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

_CHUNK_ROWS = 10_000


def expression_matrix(adata: AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]``, with a clear error when the layer is missing."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is empty (None); pass `layer=` to use a layer instead.")
        return adata.X
    if layer not in adata.layers:
        # anndata >= 0.13 lists X itself among the layers, under the key None
        available = sorted(key for key in adata.layers if key is not None)
        raise KeyError(f"Layer {layer!r} is not in adata.layers (available: {available}).")
    return adata.layers[layer]


def value_chunks(matrix) -> Iterator[np.ndarray]:
    """Yield the stored values of a dense, sparse or backed matrix, a block of rows at a time."""
    n_rows = matrix.shape[0]
    for start in range(0, n_rows, _CHUNK_ROWS):
        block = matrix[start : start + _CHUNK_ROWS]
        if sp.issparse(block):
            yield np.asarray(block.data)
        elif hasattr(block, "to_memory"):  # anndata's backed sparse dataset
            yield np.asarray(block.to_memory().data)
        else:
            yield np.asarray(block)


def check_expression_values(matrix, *, is_count_data: bool, where: str, allow_count_like: bool = False) -> None:
    """Refuse non-finite values, negative or fractional counts, and raw counts registered as log-normalised.

    Integer values above 30 registered as log-normalised (``is_count_data=False``) look like raw
    counts, on which the ``"mse"`` model trains to a huge loss: refused unless ``allow_count_like``.
    Values far above a log scale give a warning.

    Parameters
    ----------
    matrix
        Dense, sparse or backed expression matrix.
    is_count_data
        What the user registered.
    where
        Name of the matrix for messages, e.g. ``"adata.X"``.
    allow_count_like
        Accept count-like values registered as log-normalised.
    """
    check_value_chunks(
        value_chunks(matrix), is_count_data=is_count_data, where=where, allow_count_like=allow_count_like
    )


def check_value_chunks(
    chunks: Iterable[np.ndarray], *, is_count_data: bool, where: str, allow_count_like: bool = False
) -> None:
    """:func:`check_expression_values` on the stored values of a matrix given a chunk at a time."""
    all_integer, max_value, min_value = True, -np.inf, np.inf
    for values in chunks:
        if values.size == 0:
            continue
        if not np.isfinite(values).all():
            n_bad = int((~np.isfinite(values)).sum())
            raise ValueError(f"{where} contains {n_bad}+ non-finite values (NaN or inf); remove or impute them first.")
        min_value = min(min_value, float(values.min()))
        max_value = max(max_value, float(values.max()))
        all_integer = all_integer and bool(np.all(np.mod(values, 1) == 0))
    if is_count_data:
        if min_value < 0:
            raise ValueError(
                f"{where} has negative values (min {min_value:g}) but was registered as raw counts "
                "(is_count_data=True); count likelihoods need non-negative integer counts."
            )
        if not all_integer:
            raise ValueError(
                f"{where} has non-integer values but was registered as raw counts (is_count_data=True); "
                "pass the raw UMI counts (e.g. `layer='counts'`) or register log-normalised data with "
                "is_count_data=False and use likelihood='mse'."
            )
    elif all_integer and max_value > 30:
        if not allow_count_like:
            raise ValueError(
                f"{where} holds only integers up to {max_value:g}: it looks like raw counts, but was registered as "
                "log-normalised (is_count_data=False), on which the default likelihood 'mse' would train to a huge "
                "loss. Either register the counts for a count likelihood, `TRVAE.setup_anndata(adata, ..., "
                "layer='counts', is_count_data=True)` (likelihood 'nb' or 'zinb'), or log-normalise them first "
                "(scanpy.pp.normalize_total + scanpy.pp.log1p). If these values are meant as they are, pass "
                "allow_count_like=True."
            )
    elif max_value > 50:
        warnings.warn(
            f"{where} has values up to {max_value:g}, above the usual range of log-normalised expression.",
            UserWarning,
            stacklevel=4,
        )


def check_obs_keys(adata: AnnData, keys: Sequence[str], role: str) -> None:
    """Raise a KeyError naming every key missing from ``adata.obs``."""
    missing = [key for key in keys if key not in adata.obs.columns]
    if missing:
        raise KeyError(f"{role} {missing} not found in adata.obs (columns: {list(adata.obs.columns)}).")


class ObsKeyError(KeyError):
    """A key that names no column of ``adata.obs`` (a KeyError whose message prints as written, unquoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def listed(values: Iterable, limit: int = 20) -> str:
    """Quote the first ``limit`` values for a message: ``'a', 'b', ...``."""
    values = [str(value) for value in values]
    shown = ", ".join(repr(value) for value in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_task(adata: AnnData, cell_type_key: str, condition_key: str, source: str, target: str) -> None:
    """Check the keys and conditions of a task "predict ``target`` from ``source`` cells of each cell type".

    Raises
    ------
    ObsKeyError
        A key is not a column of ``adata.obs``.
    ValueError
        A column has missing values; ``source`` or ``target`` is not a condition of ``adata``, has no
        cells in it, or both are the same condition.
    """
    for role, key in (("cell_type_key", cell_type_key), ("condition_key", condition_key)):
        if key not in adata.obs.columns:
            raise ObsKeyError(f"{role} {key!r} is not a column of adata.obs; columns: {listed(adata.obs.columns)}.")
        n_missing = int(adata.obs[key].isna().sum())
        if n_missing:
            raise ValueError(
                f"adata.obs[{key!r}] ({role}) has {n_missing} missing values (NaN); label those cells or remove them."
            )
    column = adata.obs[condition_key]
    known = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column.astype(str))
    known = [str(value) for value in known]
    counts = column.astype(str).value_counts()
    keep = "keep the {0!r} cells of the other cell types in adata (the training cells); remove only those to predict"
    for role, condition in (("source", source), ("target", target)):
        if str(condition) not in known:
            hint = f"; {keep.format(condition)}" if role == "target" and len(known) < 2 else ""
            raise ValueError(
                f"unknown condition {condition!r} ({role}); known: {listed(known)} (adata.obs[{condition_key!r}])"
                f"{hint}."
            )
        if counts.get(str(condition), 0) == 0:
            raise ValueError(
                f"the {role} condition {condition!r} has no cells in adata (the training cells): "
                f"{keep.format(condition)}."
            )
    if str(source) == str(target):
        raise ValueError(f"source and target are the same condition ({source!r}); pass two different conditions.")


def check_condition_column(adata: AnnData, condition_key: str) -> None:
    """Require a condition column without missing values and with at least two conditions that have cells."""
    column = adata.obs[condition_key]
    if column.isna().any():
        raise ValueError(f"adata.obs[{condition_key!r}] has {int(column.isna().sum())} missing values.")
    present = pd.unique(column.astype(str))
    if len(present) < 2:
        raise ValueError(
            f"adata.obs[{condition_key!r}] holds a single condition ({list(present)}); trVAE needs at least two."
        )
    if isinstance(column.dtype, pd.CategoricalDtype):
        empty = [str(c) for c in column.cat.categories if c not in set(column)]
        if empty:
            warnings.warn(
                f"Categories {empty} of adata.obs[{condition_key!r}] have no cells; they are registered but "
                "never trained.",
                UserWarning,
                stacklevel=3,
            )


def check_same_genes(adata: AnnData, training_var_names: pd.Index) -> None:
    """Genes must be those the model was trained on, in the same order."""
    var_names = pd.Index(adata.var_names)
    if var_names.equals(pd.Index(training_var_names)):
        return
    if len(var_names) == len(training_var_names) and set(var_names) == set(training_var_names):
        raise ValueError(
            "adata has the training genes in a different order; reorder with `adata[:, model.adata.var_names]`."
        )
    missing = pd.Index(training_var_names).difference(var_names)
    extra = var_names.difference(pd.Index(training_var_names))
    described = [
        f"{len(genes)} {what} (e.g. {list(genes[:5])})"
        for what, genes in (("missing", missing), ("unexpected", extra))
        if len(genes)
    ]
    raise ValueError(
        f"adata's genes differ from the {len(training_var_names)} training genes: {', '.join(described)}; "
        "select the training genes with `adata[:, model.adata.var_names]` when adata holds them all."
    )


def check_loss_weight(value: float, name: str) -> None:
    """Refuse a loss weight that is not a finite number >= 0 (a negative weight would reward the term)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}; a negative weight would reward the term.")


#: ``plan_kwargs`` that would bypass :meth:`TRVAE.train`'s own (checked) loss-weight arguments.
_WEIGHT_PLAN_KWARGS = {"mmd_weight": "mmd_weight", "kl_weight": "kl_weight", "max_kl_weight": "kl_weight"}


def check_loss_weights(kl_weight: float, mmd_weight: float, plan_kwargs: dict) -> None:
    """Check the loss weights of :meth:`TRVAE.train`; refuse ``plan_kwargs`` that would override them."""
    for key, argument in _WEIGHT_PLAN_KWARGS.items():
        if key in plan_kwargs:
            raise ValueError(
                f"plan_kwargs[{key!r}] would override train's {argument} argument; "
                f"pass `train({argument}=...)` instead."
            )
    check_loss_weight(kl_weight, "kl_weight")
    check_loss_weight(mmd_weight, "mmd_weight")
    if "min_kl_weight" in plan_kwargs:
        check_loss_weight(plan_kwargs["min_kl_weight"], "plan_kwargs['min_kl_weight']")


def check_datamodule_registry(model_registry: dict, datamodule_registry: dict) -> None:
    """Refuse a datamodule whose genes, conditions or covariate categories are not the model's."""

    def registered(registry: dict) -> dict[str, list]:
        states = {key: field["state_registry"] for key, field in registry["field_registries"].items()}
        covariates = states.get("extra_categorical_covs", {}).get("mappings", {})
        return {
            "genes": [str(name) for name in states["X"]["column_names"]],
            "conditions": [str(name) for name in states["batch"]["categorical_mapping"]],
            "covariate categories": [(key, [str(c) for c in values]) for key, values in covariates.items()],
        }

    model, data = registered(model_registry), registered(datamodule_registry)
    differing = [name for name in model if model[name] != data[name]]
    if differing:
        raise ValueError(
            f"The datamodule's {' and '.join(differing)} differ from the model's; build the model from the "
            "datamodule it trains on: TRVAE(registry=datamodule.registry)."
        )


def check_not_empty(adata: AnnData) -> None:
    """Refuse an AnnData without cells or without genes."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"adata is empty ({adata.n_obs} cells x {adata.n_vars} genes).")


def check_setup_columns(
    adata: AnnData,
    condition_key: str,
    categorical_covariate_keys: Sequence[str] | None,
    *,
    check_conditions: bool,
    role: str = "",
) -> None:
    """Check the obs columns that :meth:`~scvi_trvae.TRVAE.setup_anndata` registers.

    Parameters
    ----------
    adata
        The AnnData to register.
    condition_key, categorical_covariate_keys
        The setup arguments.
    check_conditions
        Also require at least two conditions without missing values (a new registration; not for
        an AnnData mapped onto the conditions of a trained model).
    role
        Appended to the names of the keys in messages, e.g. ``" of the model"``.
    """
    check_obs_keys(adata, [condition_key], f"condition_key{role}")
    check_obs_keys(adata, categorical_covariate_keys or [], f"categorical_covariate_keys{role}")
    if check_conditions:
        check_condition_column(adata, condition_key)


def check_setup_values(
    adata: AnnData, layer: str | None, *, is_count_data: bool, allow_count_like: bool = False
) -> None:
    """Check the expression matrix that :meth:`~scvi_trvae.TRVAE.setup_anndata` registers."""
    check_expression_values(
        expression_matrix(adata, layer),
        is_count_data=is_count_data,
        where="adata.X" if layer is None else f"adata.layers[{layer!r}]",
        allow_count_like=allow_count_like,
    )


def resolve_likelihood(likelihood: str | None, is_count_data: bool) -> str:
    """Return the likelihood the registered data call for; refuse a requested one that does not fit them."""
    if likelihood is None:
        return "nb" if is_count_data else "mse"
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
    return likelihood
