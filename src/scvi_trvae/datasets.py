"""Data sets: a synthetic perturbation generator and loaders for public perturbation data.

:func:`synthetic_perturbation` simulates a small single-cell perturbation experiment with known ground truth
(the package's embedded default for the demo and the tests). :func:`kang2018` and :func:`haber2017` load the two
public data sets used in the trVAE and scGen papers.
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import shutil
import string
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

import anndata
import numpy as np
import pandas as pd

from ._celeba import celeba as celeba

__all__ = ["KANG2018_URL", "haber2017", "kang2018", "synthetic_perturbation"]

#: Public download address of the scGen tutorial's ``train_pbmc.h5ad`` (Kang et al. 2018 PBMCs, control and
#: IFN-beta stimulated, log-normalized, ``obs`` columns ``condition`` and ``cell_type``).
KANG2018_URL = "https://drive.google.com/uc?export=download&id=1r87vhoLLq6PXAYdmyyd89zG90eJOFYLk"

_KANG2018_FILENAME = "kang2018_train_pbmc.h5ad"
_REQUIRED_OBS = ("condition", "cell_type")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_CACHE_ENV = "SCVI_TRVAE_CACHE_DIR"
_DOWNLOAD_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------------------------------------------------
# Synthetic perturbation data
# --------------------------------------------------------------------------------------------------------------------
def _cell_type_names(n: int) -> list[str]:
    """Return ``type_A``, ..., ``type_Z``, ``type_AA``, ... (spreadsheet-column style)."""
    letters = string.ascii_uppercase
    names = []
    for i in range(n):
        label = ""
        k = i + 1
        while k > 0:
            k, rem = divmod(k - 1, 26)
            label = letters[rem] + label
        names.append(f"type_{label}")
    return names


def _split_counts(total: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer parts proportional to ``proportions`` (largest-remainder rounding)."""
    exact = total * proportions
    counts = np.floor(exact).astype(int)
    remainder = total - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    return counts


def _check_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` after checking that it is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _resolve_proportions(conditions: list[str], condition_proportions: Mapping[str, float] | None) -> np.ndarray:
    if condition_proportions is None:
        return np.full(len(conditions), 1.0 / len(conditions))
    unknown = set(condition_proportions) - set(conditions)
    missing = set(conditions) - set(condition_proportions)
    if unknown or missing:
        raise ValueError(
            f"`condition_proportions` must have exactly the keys {conditions}; "
            f"missing {sorted(missing)}, unknown {sorted(map(str, unknown))}."
        )
    props = np.array([float(condition_proportions[c]) for c in conditions])
    if not np.all(np.isfinite(props)) or np.any(props <= 0):
        raise ValueError(
            f"`condition_proportions` values must be positive and finite, got {dict(condition_proportions)}."
        )
    return props / props.sum()


def synthetic_perturbation(
    n_cell_types: int = 5,
    n_genes: int = 500,
    conditions: Sequence[str] = ("control", "stimulated"),
    n_cells_per_group: int = 150,
    n_response_genes: int = 60,
    seed: int = 0,
    *,
    condition_proportions: Mapping[str, float] | None = None,
    n_marker_genes: int = 15,
    shared_response_fraction: float = 0.5,
    response_scale: float = 1.0,
    library_size: float = 2000.0,
) -> anndata.AnnData:
    r"""Simulate a single-cell perturbation experiment with known ground truth.

    Counts are drawn from a negative-binomial model. Each cell type has its own baseline program (a gene-wise
    log-mean base expression shared by all types, skewed so that most genes are lowly and few highly expressed, a
    small type-specific deviation for every gene and a block of up-regulated marker genes). Every condition other
    than the first (the control) has its own response made of

    * ``round(shared_response_fraction * n_response_genes)`` genes that respond in every cell type (an
      interferon-like program), with a magnitude that varies between cell types and genes, and
    * the remaining response genes, each of which responds in only one or a few cell types,

    with both up- and down-regulation. A cell type's response is therefore *not* the mean response of the other
    types, which is what makes out-of-sample prediction non-trivial. Each perturbed cell also has its own response
    strength (gamma distributed around 1), each cell a log-normal library size, and each gene a dispersion.

    For cell :math:`i` of type :math:`t` in condition :math:`k`, the expected count of gene :math:`g` is
    :math:`\ell_i \,\mathrm{softmax}_g(b_g + d_{tg} + s_i e_{ktg})` with library size :math:`\ell_i`, base
    abundance :math:`b_g`, cell-type program :math:`d_{tg}`, cell response strength :math:`s_i` (0 in the control)
    and true effect :math:`e_{ktg}` (stored in ``varm``); counts are negative binomial around it.

    Parameters
    ----------
    n_cell_types
        Number of cell types, named ``type_A``, ``type_B``, ....
    n_genes
        Number of genes, named ``gene_0000``, ``gene_0001``, ....
    conditions
        Condition names, the control first. At least two; each further condition gets its own response.
    n_cells_per_group
        Cells per (cell type, condition) group in a balanced design. With ``condition_proportions`` every cell
        type still has ``n_cells_per_group * len(conditions)`` cells, split between conditions by the proportions.
    n_response_genes
        Number of responding genes per perturbed condition, drawn independently per condition (so the sets of
        different conditions may overlap). About 55% are up-regulated, drawn mostly from lowly to moderately
        expressed genes (interferon-stimulated-gene like); the others are down-regulated and drawn mostly from
        moderately to highly expressed genes. This keeps the apparent shift of non-response genes through
        normalisation small.
    seed
        Seed of the random number generator; the same seed gives identical data.
    condition_proportions
        Optional mapping from every condition to a positive weight (normalised to sum to 1), e.g.
        ``{"control": 0.9, "stimulated": 0.1}`` for an imbalanced design.
    n_marker_genes
        Marker genes per cell type (disjoint between types and from the response genes).
    shared_response_fraction
        Fraction of each condition's response genes that respond in all cell types.
    response_scale
        Multiplier of all response effect sizes (log scale); 0 gives a data set without any response.
    library_size
        Median total count per cell.

    Returns
    -------
    anndata.AnnData
        ``X``: ``log1p`` of counts normalised to 10,000 per cell (dense ``float32``); ``layers["counts"]``: the raw
        counts (integer-valued ``float32``); ``obs``: categorical ``condition`` (control first) and ``cell_type``,
        plus ``n_counts`` and the per-cell ``response_strength`` (0 for control cells); ``var``: ``response_gene``
        (true in any perturbed condition), ``response_<condition>`` per perturbed condition, ``marker_gene`` and
        ``marker_cell_type``; ``varm["response_lfc_<condition>"]``: the true log-scale effects, genes x cell types in
        the order of the ``cell_type`` categories; ``uns["synthetic_perturbation"]``: the parameters used.

    Raises
    ------
    ValueError
        If an argument is out of range (e.g. fewer than two conditions or ``n_response_genes > n_genes``).

    Examples
    --------
    >>> adata = synthetic_perturbation(n_cell_types=3, n_genes=100, n_cells_per_group=20, n_response_genes=10)
    >>> adata.shape
    (120, 100)
    """
    n_cell_types = _check_int(n_cell_types, "n_cell_types")
    n_genes = _check_int(n_genes, "n_genes")
    n_cells_per_group = _check_int(n_cells_per_group, "n_cells_per_group")
    n_response_genes = _check_int(n_response_genes, "n_response_genes", minimum=0)
    n_marker_genes = _check_int(n_marker_genes, "n_marker_genes", minimum=0)
    seed = _check_int(seed, "seed", minimum=0)
    if isinstance(conditions, str):
        raise ValueError("`conditions` must be a sequence of condition names, not a single string.")
    conditions = [str(c) for c in conditions]
    if len(conditions) < 2:
        raise ValueError(f"`conditions` needs at least two conditions (control first), got {conditions}.")
    if len(set(conditions)) != len(conditions):
        raise ValueError(f"`conditions` must be unique, got {conditions}.")
    if any("/" in c or not c for c in conditions):
        raise ValueError(f"Condition names must be non-empty and must not contain '/', got {conditions}.")
    if n_response_genes > n_genes:
        raise ValueError(f"`n_response_genes` ({n_response_genes}) cannot exceed `n_genes` ({n_genes}).")
    if not 0.0 <= shared_response_fraction <= 1.0:
        raise ValueError(f"`shared_response_fraction` must lie in [0, 1], got {shared_response_fraction}.")
    if not np.isfinite(response_scale) or response_scale < 0:
        raise ValueError(f"`response_scale` must be finite and >= 0, got {response_scale}.")
    if not np.isfinite(library_size) or library_size <= 0:
        raise ValueError(f"`library_size` must be positive, got {library_size}.")
    proportions = _resolve_proportions(conditions, condition_proportions)
    cells_per_condition = _split_counts(n_cells_per_group * len(conditions), proportions)
    if np.any(cells_per_condition == 0):
        empty = [c for c, n in zip(conditions, cells_per_condition, strict=True) if n == 0]
        raise ValueError(
            f"`condition_proportions` leaves no cells in condition(s) {empty}; "
            "increase `n_cells_per_group` or those proportions."
        )

    rng = np.random.default_rng(seed)
    cell_types = _cell_type_names(n_cell_types)
    perturbed = conditions[1:]

    # Baseline: log-normal gene abundances (most genes low, a few high) and one program per cell type.
    base = rng.normal(0.0, 1.4, n_genes)
    type_logits = base[None, :] + rng.normal(0.0, 0.25, (n_cell_types, n_genes))
    type_lib_factor = rng.lognormal(0.0, 0.2, n_cell_types)
    theta = np.exp(rng.normal(np.log(4.0), 0.6, n_genes))  # NB inverse dispersion per gene

    # Responses: per perturbed condition, a shared and a type-specific block with type-dependent effect sizes.
    # Up-regulated genes come mostly from low/mid expression (interferon-stimulated-gene like), down-regulated
    # ones from mid/high expression; this keeps the shift of the other genes through normalisation small.
    rank = (np.argsort(np.argsort(base)) + 0.5) / n_genes
    up_weight = np.exp(-(((rank - 0.3) / 0.2) ** 2)) + 0.01
    down_weight = np.exp(-(((rank - 0.8) / 0.2) ** 2)) + 0.01
    max_types = max(1, n_cell_types // 2)
    effects = {}
    response_masks = {}
    for cond in perturbed:
        n_up = int(np.sum(rng.random(n_response_genes) < 0.55))
        up = rng.choice(n_genes, size=n_up, replace=False, p=up_weight / up_weight.sum())
        weight = down_weight.copy()
        weight[up] = 0.0
        down = rng.choice(n_genes, size=n_response_genes - n_up, replace=False, p=weight / weight.sum())
        genes = rng.permutation(np.concatenate([up, down]))
        sign = np.where(np.isin(genes, up), 1.0, -1.0)
        magnitude = np.minimum(rng.gamma(4.0, 0.3, n_response_genes), 3.0)
        n_shared = round(shared_response_fraction * n_response_genes)
        effect = np.zeros((n_cell_types, n_genes))
        # shared program: a type-level strength and gene x type variation around each gene's effect
        type_strength = rng.lognormal(0.0, 0.4, n_cell_types)
        variation = np.exp(rng.normal(0.0, 0.5, (n_cell_types, n_shared)))
        effect[:, genes[:n_shared]] = (sign * magnitude)[:n_shared] * type_strength[:, None] * variation
        # type-specific genes: each responds in one or a few cell types only
        for g, g_effect in zip(genes[n_shared:], (sign * magnitude)[n_shared:], strict=True):
            responders = rng.choice(n_cell_types, size=rng.integers(1, max_types + 1), replace=False)
            effect[responders, g] = g_effect * np.exp(rng.normal(0.0, 0.3, responders.size))
        effects[cond] = response_scale * np.clip(effect, -4.0, 4.0)
        mask = np.zeros(n_genes, dtype=bool)
        mask[genes] = response_scale > 0
        response_masks[cond] = mask
    any_response = np.logical_or.reduce([response_masks[c] for c in perturbed])

    # Marker genes, disjoint between types and from every response gene.
    free = np.flatnonzero(~any_response)
    if free.size < n_cell_types * n_marker_genes:
        raise ValueError(
            f"{n_cell_types} cell types x {n_marker_genes} marker genes do not fit in the {free.size} genes left "
            f"after the response genes; lower `n_marker_genes` or `n_response_genes`, or raise `n_genes`."
        )
    markers = rng.permutation(free)[: n_cell_types * n_marker_genes].reshape(n_cell_types, n_marker_genes)
    marker_cell_type = np.full(n_genes, "", dtype=object)
    for t in range(n_cell_types):
        type_logits[t, markers[t]] += rng.uniform(1.5, 3.0, n_marker_genes)
        marker_cell_type[markers[t]] = cell_types[t]

    # Cells, ordered by condition then cell type.
    obs_condition, obs_type, blocks = [], [], []
    strengths = []
    for c_idx, cond in enumerate(conditions):
        n_cells = int(cells_per_condition[c_idx])
        for t in range(n_cell_types):
            if c_idx == 0:
                strength = np.zeros(n_cells)
                logits = np.broadcast_to(type_logits[t], (n_cells, n_genes))
            else:
                strength = rng.gamma(6.0, 1.0 / 6.0, n_cells)
                logits = type_logits[t][None, :] + strength[:, None] * effects[cond][t][None, :]
            proportion = np.exp(logits - logits.max(axis=1, keepdims=True))
            proportion /= proportion.sum(axis=1, keepdims=True)
            lib = library_size * type_lib_factor[t] * rng.lognormal(0.0, 0.35, n_cells)
            mean = lib[:, None] * proportion
            blocks.append(rng.poisson(rng.gamma(theta[None, :], mean / theta[None, :])))
            strengths.append(strength)
            obs_condition += [cond] * n_cells
            obs_type += [cell_types[t]] * n_cells

    counts = np.vstack(blocks).astype(np.float32)
    totals = counts.sum(axis=1, dtype=np.float64)
    normalized = counts / np.maximum(totals, 1.0)[:, None] * 1e4
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(obs_condition, categories=conditions),
            "cell_type": pd.Categorical(obs_type, categories=cell_types),
            "n_counts": totals.astype(np.float32),
            "response_strength": np.concatenate(strengths).astype(np.float32),
        },
        index=pd.Index([f"cell_{i:05d}" for i in range(counts.shape[0])]),
    )
    width = max(4, len(str(n_genes - 1)))
    var = pd.DataFrame(index=pd.Index([f"gene_{g:0{width}d}" for g in range(n_genes)]))
    var["response_gene"] = any_response
    for cond in perturbed:
        var[f"response_{cond}"] = response_masks[cond]
    var["marker_gene"] = marker_cell_type != ""
    var["marker_cell_type"] = marker_cell_type.astype(str)

    adata = anndata.AnnData(X=np.log1p(normalized).astype(np.float32), obs=obs, var=var)
    adata.layers["counts"] = counts
    for cond in perturbed:
        adata.varm[f"response_lfc_{cond}"] = effects[cond].T.astype(np.float32)
    adata.uns["synthetic_perturbation"] = {
        "seed": seed,
        "n_cell_types": n_cell_types,
        "n_genes": n_genes,
        "n_cells_per_group": n_cells_per_group,
        "n_response_genes": n_response_genes,
        "n_marker_genes": n_marker_genes,
        "conditions": list(conditions),
        "control": conditions[0],
        "cell_types": cell_types,
        "condition_proportions": {c: float(p) for c, p in zip(conditions, proportions, strict=True)},
        "shared_response_fraction": float(shared_response_fraction),
        "response_scale": float(response_scale),
        "library_size": float(library_size),
    }
    return adata


# --------------------------------------------------------------------------------------------------------------------
# Public data sets
# --------------------------------------------------------------------------------------------------------------------
def _cache_dir() -> Path:
    """Directory for downloaded data: ``$SCVI_TRVAE_CACHE_DIR`` if set, else ``~/.cache/scvi_trvae``."""
    override = os.environ.get(_CACHE_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "scvi_trvae"


def _drive_confirm_url(page: bytes, url: str) -> str | None:
    """Return the follow-up address of a Google Drive "file too large to scan" page, if ``page`` is one."""
    text = page.decode("utf-8", errors="replace")
    form = re.search(r'<form[^>]*action="([^"]+)"', text)
    if form is None:
        return None
    fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', text))
    if not fields:
        return None
    action = urllib.parse.urljoin(url, html.unescape(form.group(1)))
    return f"{action}?{urllib.parse.urlencode({k: html.unescape(v) for k, v in fields.items()})}"


def _fetch(address: str, destination: Path) -> bool:
    """Write the body at ``address`` to ``destination``; return whether it is an HDF5 file."""
    with urllib.request.urlopen(address, timeout=_DOWNLOAD_TIMEOUT_S) as response, open(destination, "wb") as out:
        shutil.copyfileobj(response, out)
    with open(destination, "rb") as f:
        return f.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE


def _download(url: str, target: Path, name: str) -> None:
    """Download ``url`` to ``target`` through a temporary file in the same folder, renamed atomically.

    A Google Drive confirmation page is followed once; anything that is not an HDF5 file is rejected.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if not _fetch(url, tmp):
            follow_up = _drive_confirm_url(tmp.read_bytes()[:1_000_000], url)
            if follow_up is None or not _fetch(follow_up, tmp):
                raise OSError("the server did not return an HDF5 (.h5ad) file")
        os.replace(tmp, target)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(
            f"Could not download the {name} data from {url} to {target}: {err}. Download the .h5ad file by hand "
            f"and pass its location as `path=`."
        ) from err


def _load_h5ad(
    path: str | Path | None, url: str | None, cache_name: str, name: str, missing_hint: str
) -> anndata.AnnData:
    """Read a perturbation data set from ``path``, downloading it from ``url`` first where needed.

    Parameters
    ----------
    path
        File to read. If it does not exist and ``url`` is given, the file is downloaded there. If ``None``, the
        file ``cache_name`` in the cache directory is used (downloaded on first use).
    url
        Download address, or ``None`` if the data cannot be downloaded automatically.
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
        _download(url, target, name)
    adata = anndata.read_h5ad(target)
    missing = [key for key in _REQUIRED_OBS if key not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"The {name} data at {target} lacks the obs column(s) {missing}; expected {list(_REQUIRED_OBS)} "
            f"(found {list(adata.obs.columns)}). Rename the matching columns, e.g. "
            f"`adata.obs.rename(columns={{'cell_label': 'cell_type'}})`."
        )
    return adata


def kang2018(path: str | Path | None = None, *, url: str | None = None) -> anndata.AnnData:
    """Kang et al. (2018) PBMCs, control and IFN-beta stimulated, in the scGen preprocessing.

    Log-normalized expression with ``obs["condition"]`` (``control``/``stimulated``) and ``obs["cell_type"]``
    (the scGen tutorial's ``train_pbmc.h5ad``; raw data: GEO GSE96583).

    Parameters
    ----------
    path
        An ``.h5ad`` file. Read if it exists, otherwise downloaded there from ``url``. If ``None``, the file is
        kept in ``~/.cache/scvi_trvae/`` (or ``$SCVI_TRVAE_CACHE_DIR``) and downloaded only on first use.
    url
        Download address; defaults to :data:`KANG2018_URL`.

    Returns
    -------
    anndata.AnnData
        The data set.

    Raises
    ------
    RuntimeError
        If the download fails (the message names the address).
    ValueError
        If the file lacks the ``condition`` or ``cell_type`` column.
    """
    if url is None:
        url, cache_name = KANG2018_URL, _KANG2018_FILENAME
    else:
        cache_name = f"kang2018_{hashlib.sha1(url.encode()).hexdigest()[:10]}.h5ad"
    hint = f"It can be downloaded from {url} (the scGen tutorial's train_pbmc.h5ad)."
    return _load_h5ad(path, url, cache_name, "Kang 2018", hint)


def haber2017(path: str | Path | None = None) -> anndata.AnnData:
    """Haber et al. (2017) mouse small-intestine epithelium under infection, from a local ``.h5ad`` file.

    No public download address of a preprocessed file is known, so the file has to be provided. It needs
    ``obs["condition"]`` (e.g. ``Control``, ``Hpoly.Day10``, ``Salmonella``) and ``obs["cell_type"]``.

    Parameters
    ----------
    path
        The ``.h5ad`` file to read.

    Returns
    -------
    anndata.AnnData
        The data set.

    Raises
    ------
    ValueError
        If ``path`` is ``None`` or the file lacks the ``condition`` or ``cell_type`` column.
    FileNotFoundError
        If ``path`` does not exist.
    """
    hint = (
        "Get the data from GEO (accession GSE92332, Haber et al. 2017), or the preprocessed file used by trVAE, "
        "and save it as .h5ad with obs columns 'condition' and 'cell_type'."
    )
    return _load_h5ad(path, None, "haber2017.h5ad", "Haber 2017", hint)
