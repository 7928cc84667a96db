"""The training history in a form that pickles the same under pandas 2 and 3.

pandas 3 stores strings as Arrow arrays by default, so the loss names labelling each history table pickle as
pyarrow objects rebuilt by pyarrow's own functions, which the safe loader (:mod:`scvi_trvae.io._persistence`)
does not run. Saving the labels as plain numpy arrays keeps a saved model loadable under either pandas.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

#: Pickle globals a history labelled with Arrow-backed strings adds (pandas 3's default; as pandas 3 and pandas 2
#: name them): what a model saved by scvi-trvae 0.1 under pandas 3 holds beyond the allow-list.
ARROW_STRING_GLOBALS = {
    "pandas.DataFrame", "pandas.Index", "pandas.RangeIndex", "pandas.StringDtype", "pandas.arrays.ArrowStringArray",
    "pandas.NA", "pandas.core.arrays.string_.StringDtype", "pandas.core.arrays.string_arrow.ArrowStringArray",
    "pandas._libs.missing.NA", "pyarrow.lib._restore_array", "pyarrow.lib.py_buffer", "pyarrow.lib.type_for_alias",
}  # fmt: skip
ARROW_HINT = (
    "These are the Arrow-backed strings (pandas 3's default) labelling a training history, as scvi-tools saves "
    "them under pandas 3 and scvi-trvae 0.1 did; models saved by scvi-trvae now hold plain strings. Train the "
    "model again, or, only if you trust the file, read it with torch.load(path, weights_only=False) in a session "
    "of its own and save the model again with this version."
)


def _plain_index(index: pd.Index) -> pd.Index:
    """``index`` backed by a numpy array: strings as Python objects, numbers as they are."""
    if pd.api.types.is_string_dtype(index.dtype):  # pandas 3 would infer its string dtype again without dtype=object
        return pd.Index(np.asarray(index, dtype=object), dtype=object, name=index.name)
    return pd.Index(np.asarray(index), name=index.name)


def portable_history(history: Mapping[str, object] | None) -> dict[str, object] | None:
    """Copy of ``history`` (``model.history_``) whose tables have numpy-backed row and column labels."""
    if history is None:
        return None
    portable: dict[str, object] = {}
    for key, table in history.items():
        if isinstance(table, pd.DataFrame):
            table = table.copy()
            table.index, table.columns = _plain_index(table.index), _plain_index(table.columns)
        portable[key] = table
    return portable
