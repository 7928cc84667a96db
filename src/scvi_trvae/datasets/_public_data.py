"""Loaders of the public perturbation data sets and the pooch download code they share (see :mod:`.datasets`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import anndata
import pooch
import requests

#: Public download address of the scGen tutorial's ``train_pbmc.h5ad`` (Kang et al. 2018 PBMCs, control and
#: IFN-beta stimulated, log-normalized, ``obs`` columns ``condition`` and ``cell_type``). Google Drive's
#: ``usercontent`` address with ``confirm=t`` serves large files directly, without the "cannot scan" page.
KANG2018_URL = (
    "https://drive.usercontent.google.com/download?id=1r87vhoLLq6PXAYdmyyd89zG90eJOFYLk&export=download&confirm=t"
)
#: SHA-256 of the file at :data:`KANG2018_URL`, or ``None`` where it has not been recorded: then the download is
#: not checked and pooch logs the hash it saw, to pass as ``known_hash=`` from then on.
KANG2018_SHA256: str | None = None

_KANG2018_FILENAME = "kang2018_train_pbmc.h5ad"
_REQUIRED_OBS = ("condition", "cell_type")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CACHE_ENV = "SCVI_TRVAE_CACHE_DIR"
_DOWNLOAD_TIMEOUT_S = 120.0


class DownloadError(RuntimeError):
    """A data set could not be downloaded (offline, unreachable, checksum mismatch or not an ``.h5ad`` file)."""


def _cache_dir() -> Path:
    """Directory for downloaded data: ``$SCVI_TRVAE_CACHE_DIR`` if set, else pooch's user cache (``scvi_trvae``)."""
    override = os.environ.get(_CACHE_ENV)
    return Path(override).expanduser() if override else Path(pooch.os_cache("scvi_trvae"))


def _download(url: str, known_hash: str | None, target: Path, name: str) -> None:
    """Download ``url`` to ``target`` with pooch (progress bar, checksum, temporary file renamed when complete).

    Every failure becomes a one-line :class:`DownloadError` naming the address and the way out (``path=``).
    """
    hint = "Download the .h5ad file by hand and pass its location as `path=`."
    downloader = pooch.HTTPDownloader(progressbar=True, timeout=_DOWNLOAD_TIMEOUT_S)
    try:
        pooch.retrieve(url, known_hash, fname=target.name, path=target.parent, downloader=downloader)
    except ValueError as err:  # pooch's checksum mismatch (the partial file is already removed)
        if "hash" not in str(err):
            raise
        raise DownloadError(
            f"The {name} data downloaded from {url} does not match its checksum {known_hash} (the file on the "
            f"server changed or the transfer was corrupted). {hint}"
        ) from err
    except (requests.ConnectionError, requests.Timeout) as err:
        raise DownloadError(f"Could not reach {url} to download the {name} data (offline?). {hint}") from err
    except (requests.RequestException, OSError) as err:
        reason = " ".join(str(err).split())
        raise DownloadError(f"Could not download the {name} data from {url} to {target}: {reason}. {hint}") from err
    with open(target, "rb") as f:
        is_hdf5 = f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
    if not is_hdf5:
        target.unlink()
        raise DownloadError(f"The server at {url} did not return an HDF5 (.h5ad) file for the {name} data. {hint}")


def _load_h5ad(
    path: str | Path | None, url: str | None, known_hash: str | None, cache_name: str, name: str, missing_hint: str
) -> anndata.AnnData:
    """Read a perturbation data set from ``path``, downloading it from ``url`` first where needed.

    Parameters
    ----------
    path
        File to read. If it exists it is read as it is (no network, no checksum). If it does not exist and ``url``
        is given, the file is downloaded there. If ``None``, the file ``cache_name`` in the cache directory is used
        (downloaded on first use).
    url
        Download address, or ``None`` if the data cannot be downloaded automatically.
    known_hash
        Checksum of the download in pooch's form (``"sha256:..."``), or ``None`` to skip the check.
    cache_name
        File name in the cache directory.
    name
        Name of the data set for messages.
    missing_hint
        Where to get the data, for the error raised when it is not available.

    Returns
    -------
    anndata.AnnData
        The data, with ``obs`` columns ``condition`` and ``cell_type`` checked to exist.
    """
    if path is None:
        if url is None:
            raise ValueError(f"The {name} data cannot be downloaded automatically; pass `path=`. {missing_hint}")
        target = _cache_dir() / cache_name
    else:
        target = Path(path).expanduser()
    if not target.exists():
        if url is None:
            raise FileNotFoundError(f"No {name} data at {target}. {missing_hint}")
        _download(url, known_hash, target, name)
    adata = anndata.read_h5ad(target)
    missing = [key for key in _REQUIRED_OBS if key not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"The {name} data at {target} lacks the obs column(s) {missing}; expected {list(_REQUIRED_OBS)} "
            f"(found {list(adata.obs.columns)}). Rename the matching columns, e.g. "
            f"`adata.obs.rename(columns={{'cell_label': 'cell_type'}})`."
        )
    return adata


def kang2018(
    path: str | Path | None = None, *, url: str | None = None, known_hash: str | None = None
) -> anndata.AnnData:
    """Kang et al. (2018) PBMCs, control and IFN-beta stimulated, in the scGen preprocessing.

    Log-normalized expression with ``obs["condition"]`` (``control``/``stimulated``) and ``obs["cell_type"]``
    (the scGen tutorial's ``train_pbmc.h5ad``; raw data: GEO GSE96583). Downloads go through :mod:`pooch`
    (progress bar, checksum when known, cache).

    Parameters
    ----------
    path
        An ``.h5ad`` file. Read if it exists, otherwise downloaded there from ``url``. If ``None``, the file is
        kept in the user cache (``~/.cache/scvi_trvae/`` on Linux, or ``$SCVI_TRVAE_CACHE_DIR``) and downloaded
        only on first use.
    url
        Download address; defaults to :data:`KANG2018_URL`.
    known_hash
        Checksum of the download in pooch's form, e.g. ``"sha256:3b1c..."``; defaults to :data:`KANG2018_SHA256`
        for the default address and to no check for another one.

    Returns
    -------
    anndata.AnnData
        The data set.

    Raises
    ------
    DownloadError
        If the download fails (offline, unreachable, checksum mismatch, not an ``.h5ad`` file); the one-line
        message names the address.
    ValueError
        If the file lacks the ``condition`` or ``cell_type`` column.
    """
    if url is None:
        url, cache_name = KANG2018_URL, _KANG2018_FILENAME
        known_hash = KANG2018_SHA256 if known_hash is None else known_hash
    else:
        cache_name = f"kang2018_{hashlib.sha1(url.encode()).hexdigest()[:10]}.h5ad"
    hint = f"It can be downloaded from {url} (the scGen tutorial's train_pbmc.h5ad)."
    return _load_h5ad(path, url, known_hash, cache_name, "Kang 2018", hint)


def haber2017(
    path: str | Path | None = None, *, url: str | None = None, known_hash: str | None = None
) -> anndata.AnnData:
    """Haber et al. (2017) mouse small-intestine epithelium under infection, from a local ``.h5ad`` file.

    No public download address of a preprocessed file is known, so the file has to be provided (or its address
    given as ``url``). It needs ``obs["condition"]`` (e.g. ``Control``, ``Hpoly.Day10``, ``Salmonella``) and
    ``obs["cell_type"]``.

    Parameters
    ----------
    path
        The ``.h5ad`` file to read; downloaded there from ``url`` if it does not exist and ``url`` is given.
    url
        Optional download address of such a file (downloaded with :mod:`pooch`, cached as for :func:`kang2018`
        when ``path`` is ``None``).
    known_hash
        Checksum of the download in pooch's form (``"sha256:..."``), or ``None`` to skip the check.

    Returns
    -------
    anndata.AnnData
        The data set.

    Raises
    ------
    ValueError
        If neither ``path`` nor ``url`` is given, or the file lacks the ``condition`` or ``cell_type`` column.
    FileNotFoundError
        If ``path`` does not exist and no ``url`` is given.
    DownloadError
        If the download from ``url`` fails.
    """
    hint = (
        "Get the data from GEO (accession GSE92332, Haber et al. 2017), or the preprocessed file used by trVAE, "
        "and save it as .h5ad with obs columns 'condition' and 'cell_type'."
    )
    cache_name = "haber2017.h5ad" if url is None else f"haber2017_{hashlib.sha1(url.encode()).hexdigest()[:10]}.h5ad"
    return _load_h5ad(path, url, known_hash, cache_name, "Haber 2017", hint)
