"""Training from a TileDB-SOMA experiment with condition-balanced minibatches.

scvi-tools 1.4's :class:`scvi.dataloaders.TileDBDataModule` streams shuffled chunks through
``tiledbsoma_ml.ExperimentDataset``, which forms the minibatches itself: their composition cannot
be chosen, so they do not hold every condition. This module keeps everything of the in-memory path
except where the expression rows come from. The obs columns (small) are read once and registered
with :meth:`~scvi_trvae.TRVAE.setup_anndata` on an AnnData whose ``X`` is an empty sparse matrix;
the split and the minibatches are :class:`~scvi_trvae.data.ConditionBalancedDataSplitter`'s; only each
minibatch's rows of ``X`` are read from the SOMA array, by their ``soma_joinid``.

Re-batching tiledbsoma-ml's stream instead (buffering streamed cells per condition) was not chosen:
with imbalanced conditions the buffers grow with the imbalance, an epoch no longer visits each cell
a known number of times, and the balancing logic of ``_batches.py`` would be written twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scvi import REGISTRY_KEYS
from torch.utils.data import Dataset

from scvi_trvae._validation import check_value_chunks
from scvi_trvae.model._model import TRVAE

from ._splitter import ConditionBalancedDataSplitter

if TYPE_CHECKING:
    from collections.abc import Iterator

    import tiledbsoma

__all__ = ["SOMAConditionBalancedDataModule", "SOMARowReader"]


def _import_tiledbsoma():
    try:
        import tiledbsoma
    except ImportError as error:
        raise ImportError(
            "Training from a TileDB-SOMA experiment needs `tiledbsoma`: pip install 'scvi-trvae[soma]'."
        ) from error
    return tiledbsoma


class SOMARowReader:
    """Reads rows of a SOMA sparse ``X`` layer as a dense float32 block, one minibatch at a time.

    The array is opened on the first read in each process and kept open. A pickled reader (a
    DataLoader worker's copy) opens its own, with a context of the same TileDB configuration and
    timestamp (a context itself does not pickle).

    Parameters
    ----------
    array_uri
        URI of the :class:`tiledbsoma.SparseNDArray` (``experiment.ms[measurement].X[layer].uri``).
    var_joinids
        Sorted ``soma_joinid`` of the genes to read: the columns of every block, in this order.
    context
        :class:`tiledbsoma.SOMATileDBContext` to open the array with (``None``: the default).
    """

    def __init__(self, array_uri: str, var_joinids: np.ndarray, context: tiledbsoma.SOMATileDBContext | None = None):
        self.array_uri = array_uri
        self.var_joinids = np.asarray(var_joinids, dtype=np.int64)
        self.context = context
        self._array = None

    def __getstate__(self) -> dict:
        context = self.context
        settings = None if context is None else {"tiledb_config": context.tiledb_config, "timestamp": context.timestamp}
        return {**self.__dict__, "_array": None, "context": settings}

    def __setstate__(self, state: dict) -> None:
        settings = state.pop("context")
        self.__dict__.update(state)
        self.context = None if settings is None else _import_tiledbsoma().SOMATileDBContext(**settings)

    def read(self, obs_joinids: np.ndarray) -> np.ndarray:
        """Rows ``obs_joinids`` (in this order, repeats allowed), shape ``(len(obs_joinids), n_genes)``."""
        if self._array is None:
            self._array = _import_tiledbsoma().SparseNDArray.open(self.array_uri, context=self.context)
        unique, inverse = np.unique(np.asarray(obs_joinids, dtype=np.int64), return_inverse=True)
        table = self._array.read(coords=(unique, self.var_joinids)).tables().concat()
        block = np.zeros((len(unique), len(self.var_joinids)), dtype=np.float32)
        rows = np.searchsorted(unique, table["soma_dim_0"].to_numpy())
        columns = np.searchsorted(self.var_joinids, table["soma_dim_1"].to_numpy())
        block[rows, columns] = table["soma_data"].to_numpy()
        return block[inverse]


class _SOMAMinibatchDataset(Dataset):
    """The registered obs tensors of a list of positions, with their ``X`` rows read from SOMA."""

    def __init__(self, obs_tensors: Dataset, reader: SOMARowReader, obs_joinids: np.ndarray):
        self.obs_tensors = obs_tensors
        self.reader = reader
        self.obs_joinids = obs_joinids

    def __len__(self) -> int:
        return len(self.obs_joinids)

    def __getitem__(self, positions: list[int]) -> dict[str, np.ndarray]:
        positions = list(positions)
        tensors = self.obs_tensors[positions]
        tensors[REGISTRY_KEYS.X_KEY] = self.reader.read(self.obs_joinids[positions])
        return tensors


class SOMAConditionBalancedDataModule(ConditionBalancedDataSplitter):
    """Condition-balanced minibatches of a TileDB-SOMA experiment, read from disk one minibatch at a time.

    Pass it to :meth:`~scvi_trvae.TRVAE.train` as ``datamodule`` and build the model from its
    :attr:`registry`. Every training minibatch holds ``batch_size // C`` cells of each of the
    ``C`` conditions; the train/validation split is drawn within each condition
    (:class:`~scvi_trvae.data.ConditionBalancedDataSplitter`). The selected cells' obs columns are read
    into memory when the module is made; ``X`` is not: its values are checked in streamed chunks,
    and during training each minibatch's rows are read by ``soma_joinid``.

    The registry is that of :meth:`~scvi_trvae.TRVAE.setup_anndata` (genes named by
    ``var_names_column``, ``layer=None``), so the trained model predicts, saves and loads like
    one trained on an in-memory AnnData: give its query methods an AnnData with the same genes,
    e.g. ``tiledbsoma.io.to_anndata`` of the cells to predict.

    Parameters
    ----------
    experiment
        URI of a SOMA experiment or an open :class:`tiledbsoma.Experiment` (its URI and context are used).
    condition_key
        Column of the experiment's obs with each cell's condition; at least two conditions.
    measurement_name
        Measurement holding the expression, e.g. ``"RNA"``.
    layer_name
        Layer of the measurement's ``X`` to train on (a sparse array); ``tiledbsoma.io.from_anndata``
        writes an AnnData's ``X`` as ``"data"``.
    categorical_covariate_keys
        obs columns of extra categorical covariates, as in :meth:`~scvi_trvae.TRVAE.setup_anndata`.
    is_count_data
        As in :meth:`~scvi_trvae.TRVAE.setup_anndata`: ``True`` for raw counts.
    obs_value_filter, var_value_filter
        SOMA value filters selecting the cells and genes to train on, e.g.
        ``"not (cell_type == 'NK' and condition == 'stimulated')"`` to hold out cells.
    var_names_column
        Column of the measurement's var with the gene names (``tiledbsoma.io.from_anndata``'s
        default ``"var_id"``).
    batch_size
        Cells per minibatch (``train``'s own ``batch_size`` is not used with a datamodule).
    train_size, validation_size
        As in :class:`~scvi.dataloaders.DataSplitter`.
    **kwargs
        Keyword arguments of :class:`torch.utils.data.DataLoader` (e.g. ``num_workers``). Workers
        are started with ``multiprocessing_context="spawn"`` (TileDB is not fork-safe: forked
        workers hang) and kept between epochs (``persistent_workers=True``) unless told otherwise.

    Examples
    --------
    >>> datamodule = SOMAConditionBalancedDataModule(
    ...     "experiment_uri", condition_key="condition", measurement_name="RNA", layer_name="data"
    ... )
    >>> model = scvi_trvae.TRVAE(registry=datamodule.registry)
    >>> model.train(max_epochs=50, datamodule=datamodule)
    >>> model.predict_perturbation(control_cells, source="control", target="stimulated")
    """

    def __init__(
        self,
        experiment: str | tiledbsoma.Experiment,
        condition_key: str,
        *,
        measurement_name: str,
        layer_name: str,
        categorical_covariate_keys: list[str] | None = None,
        is_count_data: bool = False,
        obs_value_filter: str | None = None,
        var_value_filter: str | None = None,
        var_names_column: str = "var_id",
        batch_size: int = 128,
        train_size: float | None = None,
        validation_size: float | None = None,
        **kwargs,
    ):
        tiledbsoma = _import_tiledbsoma()
        self.experiment_uri = experiment if isinstance(experiment, str) else experiment.uri
        context = None if isinstance(experiment, str) else experiment.context
        obs_columns = [condition_key, *(categorical_covariate_keys or [])]
        with tiledbsoma.Experiment.open(self.experiment_uri, context=context) as opened:
            array = _expression_array(opened, measurement_name, layer_name)
            obs = _read_axis(opened.obs, obs_columns, obs_value_filter, "obs", "cells")
            var = _read_axis(opened.ms[measurement_name].var, [var_names_column], var_value_filter, "var", "genes")
            self.obs_joinids = obs["soma_joinid"].to_numpy()
            self.reader = SOMARowReader(array.uri, var["soma_joinid"].to_numpy(), context)
            # the registration of the in-memory path, on the obs columns and an X without entries
            proxy = AnnData(
                X=sp.csr_matrix((len(obs), len(var)), dtype=np.float32),
                obs=_categorical(obs[obs_columns]).set_axis(obs["soma_joinid"].astype(str).to_numpy()),
                var=pd.DataFrame(index=pd.Index(var[var_names_column].astype(str), name=None)),
            )
            TRVAE.setup_anndata(
                proxy, condition_key=condition_key, categorical_covariate_keys=categorical_covariate_keys,
                is_count_data=is_count_data,
            )  # fmt: skip
            where = f"ms[{measurement_name!r}].X[{layer_name!r}]"  # scanned after the cheap checks of obs
            check_value_chunks(self._value_chunks(array), is_count_data=is_count_data, where=where)
        self.measurement_name, self.layer_name = measurement_name, layer_name
        if kwargs.get("num_workers", 0) > 0:
            kwargs.setdefault("multiprocessing_context", "spawn")
            kwargs.setdefault("persistent_workers", True)  # a spawned worker takes seconds to start
        super().__init__(
            TRVAE._get_most_recent_anndata_manager(proxy, required=True),
            train_size=train_size,
            validation_size=validation_size,
            batch_size=batch_size,
            sparse_input=False,
            **kwargs,
        )

    @property
    def registry(self) -> dict:
        """The registry to build the model from: ``TRVAE(registry=datamodule.registry)``."""
        return self.adata_manager.registry

    @property
    def n_obs(self) -> int:
        """Number of selected cells."""
        return len(self.obs_joinids)

    @property
    def n_vars(self) -> int:
        """Number of selected genes."""
        return len(self.reader.var_joinids)

    def _dataset(self, indices: np.ndarray) -> Dataset:
        obs_keys = [key for key in self.adata_manager.data_registry if key != REGISTRY_KEYS.X_KEY]
        obs_tensors = self.adata_manager.create_torch_dataset(indices=indices, data_and_attributes=obs_keys)
        return _SOMAMinibatchDataset(obs_tensors, self.reader, self.obs_joinids[indices])

    def _value_chunks(self, array: tiledbsoma.SparseNDArray) -> Iterator[np.ndarray]:
        """Yield the stored values of the selected cells and genes, as SOMA streams them."""
        for table in array.read(coords=(self.obs_joinids, self.reader.var_joinids)).tables():
            yield table["soma_data"].to_numpy()


def _expression_array(experiment: tiledbsoma.Experiment, measurement_name: str, layer_name: str):
    """Return the experiment's sparse ``X`` layer, with errors naming what is missing."""
    if measurement_name not in experiment.ms:
        raise KeyError(
            f"Measurement {measurement_name!r} is not in the SOMA experiment {experiment.uri!r} "
            f"(measurements: {sorted(experiment.ms.keys())})."
        )
    layers = experiment.ms[measurement_name].X
    if layer_name not in layers:
        raise KeyError(
            f"X layer {layer_name!r} is not in measurement {measurement_name!r} (layers: {sorted(layers.keys())})."
        )
    array = layers[layer_name]
    if array.soma_type != "SOMASparseNDArray":
        raise TypeError(
            f"X layer {layer_name!r} is a {array.soma_type}; only a sparse X layer (SOMASparseNDArray) is read by rows."
        )
    return array


def _read_axis(dataframe, columns: list[str], value_filter: str | None, axis: str, what: str) -> pd.DataFrame:
    """``soma_joinid`` and ``columns`` of the rows of an obs/var dataframe that pass ``value_filter``, by joinid."""
    missing = [column for column in columns if column not in dataframe.schema.names]
    if missing:
        raise KeyError(f"Column(s) {missing} not found in the SOMA {axis} (columns: {dataframe.schema.names}).")
    table = dataframe.read(column_names=["soma_joinid", *columns], value_filter=value_filter).concat()
    frame = table.to_pandas().sort_values("soma_joinid", ignore_index=True)
    if len(frame) == 0:
        passing = f" pass the value filter {value_filter!r}" if value_filter else ""
        raise ValueError(f"No {what} in the SOMA {axis}{passing}.")
    return frame


def _categorical(obs: pd.DataFrame) -> pd.DataFrame:
    """Columns as categoricals holding only the categories present (a filter may have removed some)."""
    return obs.apply(lambda column: column.astype("category").cat.remove_unused_categories())
