"""Saving and loading TRVAE models without running code from the model file.

scvi-tools 1.4 reads ``model.pt`` with ``torch.load(weights_only=False)``, which unpickles whatever
the file holds, so a shared model could run code on load. Here every read goes through
:func:`read_saved_model`: the pickle's globals are listed without unpickling anything and checked
against :data:`ALLOWED_GLOBALS` (exactly the types scvi-tools' save format holds), then the file
is read with ``torch.load(weights_only=True)`` restricted to that list. No path of
:class:`SafePersistenceMixin` calls scvi-tools' own readers. Saves are written to a temporary
directory beside the target and renamed into place (:func:`replace_directory`).
"""

from __future__ import annotations

import os
import pickle
import pickletools
import threading
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from numpy._core import multiarray
from pandas._libs.internals import _unpickle_block
from pandas.core.indexes.base import _new_Index
from pandas.core.internals.managers import BlockManager
from scvi.data import AnnDataManager
from scvi.model._utils import parse_device_args
from scvi.model.base import BaseModelClass

from scvi_trvae._validation import check_same_genes

from ._atomic_write import replace_directory
from ._history import ARROW_HINT, ARROW_STRING_GLOBALS, portable_history

MODEL_FILE = "model.pt"
ADATA_FILE = "adata.h5ad"
MDATA_FILE = "mdata.h5mu"

#: Everything besides tensors that a model saved by scvi-tools 1.4 holds: the registry (dicts,
#: ``defaultdict(dict)``, numpy arrays of strings and codes), numpy scalars in ``init_params_``,
#: and ``history_`` (pandas DataFrames, saved with numpy-backed labels: :func:`portable_history`). The second
#: entry is the name in the pickle (pandas 2's module path or pandas 3's top-level name); the
#: ``numpy.core`` names are those written by numpy 1.x. torch's restricted unpickler only fills
#: plain dicts, so the registry's ``defaultdict(dict)`` is read as a dict and converted back.
ALLOWED_GLOBALS: tuple[tuple[object, str], ...] = (
    (dict, "builtins.dict"),
    (bytes, "builtins.bytes"),
    (slice, "builtins.slice"),
    (lambda default_factory=None: {}, "collections.defaultdict"),  # read as a dict (see _restore_defaultdicts)
    (np.ndarray, "numpy.ndarray"),
    (np.dtype, "numpy.dtype"),
    (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
    (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
    (multiarray.scalar, "numpy._core.multiarray.scalar"),
    (multiarray.scalar, "numpy.core.multiarray.scalar"),
    (pd.DataFrame, "pandas.core.frame.DataFrame"),
    (pd.DataFrame, "pandas.DataFrame"),  # pandas 3 pickles its public classes under the top-level name
    (pd.Index, "pandas.core.indexes.base.Index"),
    (pd.Index, "pandas.Index"),
    (_new_Index, "pandas.core.indexes.base._new_Index"),
    (BlockManager, "pandas.core.internals.managers.BlockManager"),
    (_unpickle_block, "pandas._libs.internals._unpickle_block"),
    # not named in the pickle, but unpickling a numpy dtype builds an instance of one of these classes
    *(
        (getattr(np.dtypes, name), f"numpy.dtypes.{name}")
        for name in (
            *("ObjectDType", "StrDType", "BytesDType", "BoolDType", "Float16DType", "Float32DType", "Float64DType"),
            *("Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType"),
            "UInt64DType",
        )
    ),
)
_SAVED_KEYS = ("model_state_dict", "var_names", "attr_dict")
_RESTRICTED_LOAD = threading.Lock()  # the allow-list is process-wide while a load runs
_TRUST_HINT = "Only load models from sources you trust, and ask the sender for a model saved with scvi_trvae."


class ModelFileError(ValueError):
    """A saved model directory is missing, incomplete, damaged or of another model class."""


class UnsafeModelFileError(ModelFileError):
    """A ``model.pt`` holds objects that a saved model never contains; it was not unpickled."""


@dataclass
class SavedModel:
    """What a ``model.pt`` holds, read safely, and where it was read from."""

    path: Path
    state_dict: dict
    var_names: np.ndarray | dict
    attributes: dict

    @property
    def registry(self) -> dict:
        """The scvi-tools registry the model was set up with."""
        return self.attributes["registry_"]


# ---------------------------------------------------------------------------------------------- reading
def pickle_globals(path: Path) -> set[str]:
    """Names of the classes and functions the pickle of a ``torch.save`` file refers to, unpickling nothing."""
    with zipfile.ZipFile(path) as archive:
        records = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(records) != 1:
            raise ModelFileError(f"{path} is not a file written by torch.save (no single data.pkl record).")
        data = archive.read(records[0])
    names = set()
    for opcode, argument, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            module, name = argument.split(" ", 1)
            module, name = NAME_MAPPING.get((module, name), (IMPORT_MAPPING.get(module, module), name))
            names.add(f"{module}.{name}")
        elif opcode.name in ("STACK_GLOBAL", "INST", "OBJ"):  # never written by torch.save (protocol 2)
            names.add(f"<pickle opcode {opcode.name}>")
    return names


def _check_file(path: Path, directory: Path) -> None:
    if not directory.exists():
        hint = _leftover_hint(directory) or " Check the path; pass the directory that `model.save()` wrote."
        raise ModelFileError(f"No saved model at {directory}: the directory does not exist.{hint}")
    if not directory.is_dir():
        raise ModelFileError(f"{directory} is a file; pass the directory that `model.save()` wrote.")
    if not path.is_file():
        present = sorted(name for name in os.listdir(directory) if not name.startswith("."))
        hint = " The directory is empty" if not present else f" It holds: {', '.join(present[:10])}"
        hint += "; pass the directory that `model.save()` wrote."
        prefixed = [name[: -len(MODEL_FILE)] for name in present if name.endswith(MODEL_FILE) and name != path.name]
        if prefixed:
            hint = f" It holds {prefixed[0]}{MODEL_FILE}: was it saved with a prefix? Pass prefix={prefixed[0]!r}."
        elif "model_params.pt" in present:
            hint += " This is scvi-tools' format of before version 0.15, which TRVAE does not read."
        raise ModelFileError(f"{directory} is not a saved model directory: it has no {path.name}.{hint}")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(
            f"{path} is empty (0 bytes): the save that wrote it did not finish, or the copy was cut short. "
            "Save the model again, or copy the directory again from its source."
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a complete model file ({size} bytes, not a readable torch.save archive): it is "
            "truncated or damaged. Save the model again, or copy the directory again from its source."
        )


def _leftover_hint(directory: Path) -> str:
    """Point at the previous model that an interrupted :func:`replace_directory` left beside ``directory``."""
    parent = directory.parent if directory.parent.exists() else None
    leftovers = [] if parent is None else sorted(parent.glob(f".{directory.name}.replaced-*/{directory.name}"))
    if not leftovers:
        return ""
    return f" An interrupted save left the previous model in {leftovers[-1]}; move it back to {directory}."


def read_saved_model(
    dir_path: str | os.PathLike,
    prefix: str | None = None,
    model_class: str | None = None,
    allowed_classes: Collection[str] = (),
) -> SavedModel:
    """Read ``{prefix}model.pt`` of a saved model directory without executing anything it holds.

    Parameters
    ----------
    dir_path
        Directory written by ``model.save()``.
    prefix
        File name prefix given to ``save``.
    model_class
        Name of the class that must have saved the model (``None``: any scvi-tools model).
    allowed_classes
        Other class names accepted.

    Raises
    ------
    UnsafeModelFileError
        The file refers to a type outside :data:`ALLOWED_GLOBALS`; nothing was unpickled.
    ModelFileError
        The directory or file is missing, empty, truncated, not a scvi-tools model, or of another class.
    """
    directory = Path(dir_path)
    path = directory / f"{prefix or ''}{MODEL_FILE}"
    _check_file(path, directory)
    try:
        found = pickle_globals(path)
    except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as error:
        raise ModelFileError(f"{path} is damaged and cannot be read ({error}). Save the model again.") from error
    disallowed = sorted(found - {name for _, name in ALLOWED_GLOBALS} - set(torch_default_globals()))
    if disallowed:
        raise UnsafeModelFileError(
            f"Refusing to load {path}: it holds pickled objects of types that a saved model never contains "
            f"({', '.join(disallowed)}); unpickling them could run code, so nothing in the file was loaded. "
            + (ARROW_HINT if set(disallowed) <= ARROW_STRING_GLOBALS else _TRUST_HINT)
        )
    content = _load_restricted(path)
    _check_content(content, path)
    registry = content["attr_dict"]["registry_"]
    registry["field_registries"] = defaultdict(dict, registry.get("field_registries", {}))
    saved = SavedModel(path, content["model_state_dict"], content["var_names"], content["attr_dict"])
    saved_by = saved.registry.get("model_name")
    if model_class is not None and saved_by not in (model_class, *allowed_classes):
        raise ModelFileError(
            f"{directory} holds a saved {saved_by} model, not a {model_class} model; "
            f"load it with the class that saved it ({saved_by}.load)."
        )
    return saved


def torch_default_globals() -> list[str]:
    """Names that ``torch.load(weights_only=True)`` accepts without any allow-list (tensors, storages...)."""
    from torch import _weights_only_unpickler

    return list(_weights_only_unpickler._get_allowed_globals())


def _load_restricted(path: Path) -> dict:
    """``torch.load(weights_only=True)`` with :data:`ALLOWED_GLOBALS` added only for this call."""
    already = {id(entry) for entry in torch.serialization.get_safe_globals()}
    extra = [entry for entry in ALLOWED_GLOBALS if id(entry) not in already]
    try:
        with _RESTRICTED_LOAD, torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise UnsafeModelFileError(f"Refusing to load {path}: {reason} {_TRUST_HINT}") from error
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ModelFileError(f"{path} is damaged and cannot be read ({error}). Save the model again.") from error


def _check_content(content, path: Path) -> None:
    missing = [key for key in _SAVED_KEYS if not isinstance(content, dict) or key not in content]
    if missing:
        raise ModelFileError(f"{path} is not a model saved by scvi-tools: it lacks {', '.join(missing)}.")
    attributes, state_dict = content["attr_dict"], content["model_state_dict"]
    problems = []
    if not isinstance(attributes, dict) or not isinstance(attributes.get("registry_"), dict):
        problems.append("no registry")
    elif not isinstance(attributes["registry_"].get("setup_args"), dict):
        problems.append("no setup arguments")
    init_params = attributes.get("init_params_") if isinstance(attributes, dict) else None
    kwargs = init_params.get("kwargs", {}) if isinstance(init_params, dict) else None
    if not (
        isinstance(init_params.get("non_kwargs") if isinstance(init_params, dict) else None, dict)
        and isinstance(kwargs, dict)
        and all(isinstance(group, dict) for group in kwargs.values())
    ):
        problems.append("no constructor arguments")
    if not isinstance(state_dict, dict) or not all(
        isinstance(value, torch.Tensor) for key, value in state_dict.items() if key != "pyro_param_store"
    ):
        problems.append("no weights")
    if problems:
        raise ModelFileError(f"{path} is not a complete scvi-tools model file: {', '.join(problems)}.")


def _read_saved_data(saved: SavedModel, prefix: str | None):
    """Read the AnnData (or MuData) saved next to ``model.pt``; say what to pass when there is none."""
    is_mudata = saved.registry.get("setup_method_name") == "setup_mudata"
    path = saved.path.parent / f"{prefix or ''}{MDATA_FILE if is_mudata else ADATA_FILE}"
    if not path.exists():
        raise ModelFileError(
            f"{saved.path.parent} holds no saved data ({path.name}) and no adata was given. Pass the data the "
            "model was trained on, `TRVAE.load(dir_path, adata=adata)`, or adata=False to load the model "
            "without data (its query methods then need adata=)."
        )
    try:
        if is_mudata:
            import mudata

            return mudata.read_h5mu(path)
        import anndata

        return anndata.read_h5ad(path)
    except Exception as error:
        raise ModelFileError(
            f"{path} cannot be read ({error}); pass the training data with adata= or save the model again."
        ) from error


def _check_genes(adata, saved: SavedModel) -> None:
    if not isinstance(adata, AnnData) or isinstance(saved.var_names, dict):
        return
    try:
        check_same_genes(adata, pd.Index(saved.var_names))
    except ValueError as error:
        problem = str(error).split("; ")[0]
        raise ValueError(
            f"adata does not fit the model saved in {saved.path.parent}: {problem}. Pass an AnnData with the "
            f"model's {len(saved.var_names)} genes in their saved order; "
            f"`TRVAE.prepare_query_anndata(adata, {str(saved.path.parent)!r}, return_reference_var_names=True)` "
            "lists them."
        ) from None


def build_model(cls, saved: SavedModel, adata, device: torch.device):
    """Instantiate ``cls`` from what :func:`read_saved_model` read, as scvi-tools' ``load`` does."""
    registry = saved.registry
    if adata is not None:
        _check_genes(adata, saved)
        setup_method = getattr(cls, registry.get("setup_method_name", "setup_anndata"))
        setup_method(adata, source_registry=registry, **registry["setup_args"])
    init_params = saved.attributes["init_params_"]
    kwargs = {name: value for group in init_params.get("kwargs", {}).values() for name, value in group.items()}
    try:
        model = cls(adata, registry=registry, **init_params["non_kwargs"], **kwargs)
    except TypeError as error:
        raise ModelFileError(f"{saved.path} records settings this version of {cls.__name__} lacks: {error}.") from error
    for name, value in saved.attributes.items():
        # only the public attributes that `save` writes (names ending in "_"); never dunders
        if name.endswith("_") and not name.startswith("_") and name not in ("registry_", "init_params_"):
            setattr(model, name, value)
    model.module.on_load(model)
    state_dict = {key: value for key, value in saved.state_dict.items() if key != "pyro_param_store"}
    try:
        model.module.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ModelFileError(
            f"{saved.path} is inconsistent: its weights do not fit the architecture its settings describe "
            f"({str(error).splitlines()[0]}). The file is damaged or was edited; save the model again."
        ) from error
    model.to_device(device)
    model.module.eval()
    if adata is not None:
        model._validate_anndata(adata)
    return model


def saved_file_names(prefix: str | None) -> set[str]:
    """Return the names of the files ``save`` writes with ``prefix``."""
    return {f"{prefix or ''}{name}" for name in (MODEL_FILE, ADATA_FILE, MDATA_FILE)}


# ---------------------------------------------------------------------------------------------- model API
class SafePersistenceMixin:
    """``save``, ``load`` and every other scvi-tools method that reads a saved model, made safe.

    Placed before scvi-tools' mixins in a model's bases, it replaces ``BaseModelClass.load``,
    ``load_registry``, ``view_setup_args``, ``convert_legacy_save`` and ``ArchesMixin.prepare_query_*``
    (which unpickle ``model.pt`` with ``weights_only=False``) by readers of :func:`read_saved_model`.
    """

    #: Names of other model classes whose saves this class loads as its own (e.g. from before a rename).
    _loadable_model_names: tuple[str, ...] = ()

    def save(
        self,
        dir_path: str | os.PathLike,
        prefix: str | None = None,
        overwrite: bool = False,
        save_anndata: bool = False,
        save_kwargs: dict | None = None,
        **kwargs,
    ) -> None:
        """Save the model to a directory, atomically.

        The files (``model.pt``, and ``adata.h5ad`` with ``save_anndata=True``) are written to a
        temporary directory beside ``dir_path`` and renamed into place, so an interrupted save
        (a crash, a full disk) never leaves a half-written model where a good one was.

        Parameters
        ----------
        dir_path
            Directory to save to.
        prefix
            Prefix of the file names.
        overwrite
            Replace a model already saved in ``dir_path``. Other files in that directory are kept.
        save_anndata
            Also save the AnnData, with ``convert_strings_to_categoricals=False`` unless told
            otherwise (anndata's default would turn the user's string columns into categoricals in place).
        save_kwargs
            Keyword arguments of :func:`torch.save`.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.save` (``legacy_mudata_format``, and
            keyword arguments of :meth:`anndata.AnnData.write`).
        """
        target = Path(dir_path)
        if target.exists() and not target.is_dir():
            raise ValueError(f"{target} is a file; pass a directory to save the model to.")
        if target.exists() and not overwrite:
            raise ValueError(
                f"{target} already exists; pass overwrite=True to replace the model saved there, "
                "or choose another directory."
            )
        if save_anndata:
            kwargs.setdefault("convert_strings_to_categoricals", False)
        write = partial(
            super().save, prefix=prefix, overwrite=True, save_anndata=save_anndata, save_kwargs=save_kwargs, **kwargs
        )
        history = getattr(self, "history_", None)
        self.history_ = portable_history(history)
        try:
            replace_directory(target, lambda staging: write(str(staging)), saved_file_names(prefix))
        finally:
            self.history_ = history

    @classmethod
    def load(
        cls,
        dir_path: str | os.PathLike,
        adata: AnnData | bool | None = None,
        accelerator: str = "auto",
        device: int | str = "auto",
        prefix: str | None = None,
        backup_url: str | None = None,
        allowed_classes_names_list: list[str] | None = None,
    ):
        """Load a saved model, without running anything its files hold.

        ``model.pt`` is read with ``torch.load(weights_only=True)`` and an allow-list of the types
        a saved model holds; a file with anything else is refused (:class:`UnsafeModelFileError`)
        before it is unpickled. A missing, empty, truncated or foreign model gives a
        :class:`ModelFileError` naming the path and the problem.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            AnnData with the training genes, in order (it is registered like the training data).
            ``None``: the AnnData saved with the model (``save_anndata=True``); an error if there is
            none. ``False``: load without data (query methods then need ``adata=``).
        accelerator, device
            Where to put the model (as in :meth:`scvi.model.base.BaseModelClass.load`).
        prefix
            Prefix of the saved file names.
        backup_url
            URL to download ``model.pt`` from when it is not in ``dir_path``.
        allowed_classes_names_list
            Names of other model classes whose saves may be loaded.

        Returns
        -------
        The model, in evaluation mode.
        """
        _, _, torch_device = parse_device_args(
            accelerator=accelerator, devices=device, return_device="torch", validate_single_device=True
        )
        model_path = Path(dir_path) / f"{prefix or ''}{MODEL_FILE}"
        if backup_url is not None and not model_path.exists():
            from scvi.data._download import _download

            _download(backup_url, str(dir_path), model_path.name)
        allowed = (*cls._loadable_model_names, *(allowed_classes_names_list or ()))
        saved = read_saved_model(dir_path, prefix, cls.__name__, allowed)
        if adata is None:
            adata = _read_saved_data(saved, prefix)
        return build_model(cls, saved, adata if adata is not False else None, torch_device)

    @staticmethod
    def load_registry(dir_path: str | os.PathLike, prefix: str | None = None) -> dict:
        """Return the registry saved with a model (read safely, as :meth:`load` does)."""
        return read_saved_model(dir_path, prefix).registry

    @staticmethod
    def view_setup_args(dir_path: str | os.PathLike, prefix: str | None = None) -> None:
        """Print the arguments a saved model was set up with (read safely, as :meth:`load` does)."""
        import rich.pretty  # noqa: F401  (scvi-tools 1.4 calls rich.pretty without importing it)

        AnnDataManager.view_setup_method_args(read_saved_model(dir_path, prefix).registry)

    @classmethod
    def prepare_query_anndata(cls, adata, reference_model, return_reference_var_names: bool = False, inplace=True):
        """:meth:`scvi.model.base.ArchesMixin.prepare_query_anndata`, reading a saved reference safely."""
        if not isinstance(reference_model, BaseModelClass):
            reference_model = cls.load(reference_model, adata=False)
        return super().prepare_query_anndata(adata, reference_model, return_reference_var_names, inplace)

    @classmethod
    def prepare_query_mudata(cls, mdata, reference_model, return_reference_var_names: bool = False, inplace=True):
        """:meth:`scvi.model.base.ArchesMixin.prepare_query_mudata`, reading a saved reference safely."""
        if not isinstance(reference_model, BaseModelClass):
            reference_model = cls.load(reference_model, adata=False)
        return super().prepare_query_mudata(mdata, reference_model, return_reference_var_names, inplace)

    @classmethod
    def convert_legacy_save(cls, *args, **kwargs) -> None:
        """Not supported: scvi-tools' pre-0.15 format is read by unpickling arbitrary objects."""
        raise NotImplementedError(
            f"{cls.__name__} does not convert scvi-tools' pre-0.15 save format: reading it unpickles arbitrary "
            "objects, and no TRVAE model was ever saved in it."
        )
