"""Data sets: a synthetic perturbation generator and loaders for public perturbation data.

:func:`synthetic_perturbation` simulates a small single-cell perturbation experiment with known ground truth
(the package's embedded default for the demo and the tests). :func:`kang2018` and :func:`haber2017` load the two
public data sets used in the trVAE and scGen papers.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata
import numpy as np
import pandas as pd

from ._celeba import celeba as celeba
from ._holdout import HoldoutSplit, holdout_split
from ._public_data import KANG2018_SHA256, KANG2018_URL, DownloadError, haber2017, kang2018
from .utils import TARGET_LIBRARY_SIZE

__all__ = [
    "KANG2018_SHA256",
    "KANG2018_URL",
    "DownloadError",
    "HoldoutSplit",
    "haber2017",
    "holdout_split",
    "kang2018",
    "synthetic_perturbation",
]


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


@dataclass(frozen=True)
class _SyntheticDesign:
    """The checked arguments of :func:`synthetic_perturbation`."""

    n_cell_types: int
    n_genes: int
    conditions: list[str]
    n_cells_per_group: int
    n_response_genes: int
    seed: int
    n_marker_genes: int
    shared_response_fraction: float
    response_scale: float
    library_size: float
    proportions: np.ndarray
    cells_per_condition: np.ndarray

    @property
    def cell_types(self) -> list[str]:
        return _cell_type_names(self.n_cell_types)

    @property
    def perturbed(self) -> list[str]:
        return self.conditions[1:]

    @classmethod
    def validated(
        cls, *, conditions: Sequence[str], condition_proportions: Mapping[str, float] | None, **values
    ) -> _SyntheticDesign:
        """Check every argument and derive the number of cells per condition."""
        for name, minimum in [("n_cell_types", 1), ("n_genes", 1), ("n_cells_per_group", 1)]:
            values[name] = _check_int(values[name], name, minimum)
        for name in ("n_response_genes", "n_marker_genes", "seed"):
            values[name] = _check_int(values[name], name, minimum=0)
        names = _check_conditions(conditions)
        if values["n_response_genes"] > values["n_genes"]:
            raise ValueError(
                f"`n_response_genes` ({values['n_response_genes']}) cannot exceed `n_genes` ({values['n_genes']})."
            )
        fraction, scale, library_size = (
            values["shared_response_fraction"], values["response_scale"], values["library_size"]
        )  # fmt: skip
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"`shared_response_fraction` must lie in [0, 1], got {fraction}.")
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"`response_scale` must be finite and >= 0, got {scale}.")
        if not np.isfinite(library_size) or library_size <= 0:
            raise ValueError(f"`library_size` must be positive, got {library_size}.")
        proportions = _resolve_proportions(names, condition_proportions)
        cells_per_condition = _split_counts(values["n_cells_per_group"] * len(names), proportions)
        if np.any(cells_per_condition == 0):
            empty = [c for c, n in zip(names, cells_per_condition, strict=True) if n == 0]
            raise ValueError(
                f"`condition_proportions` leaves no cells in condition(s) {empty}; "
                "increase `n_cells_per_group` or those proportions."
            )
        return cls(conditions=names, proportions=proportions, cells_per_condition=cells_per_condition, **values)


def _check_conditions(conditions: Sequence[str]) -> list[str]:
    """Return the condition names as strings after checking there are at least two, unique and '/'-free."""
    if isinstance(conditions, str):
        raise ValueError("`conditions` must be a sequence of condition names, not a single string.")
    names = [str(c) for c in conditions]
    if len(names) < 2:
        raise ValueError(f"`conditions` needs at least two conditions (control first), got {names}.")
    if len(set(names)) != len(names):
        raise ValueError(f"`conditions` must be unique, got {names}.")
    if any("/" in c or not c for c in names):
        raise ValueError(f"Condition names must be non-empty and must not contain '/', got {names}.")
    return names


def _baseline_programs(
    design: _SyntheticDesign, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw gene abundances (log-normal: most genes low, a few high), one program per cell type and dispersions.

    Returns the base log-abundance per gene, the cell types' logits (types x genes), a library-size factor per
    type and the negative-binomial inverse dispersion per gene.
    """
    base = rng.normal(0.0, 1.4, design.n_genes)
    type_logits = base[None, :] + rng.normal(0.0, 0.25, (design.n_cell_types, design.n_genes))
    type_lib_factor = rng.lognormal(0.0, 0.2, design.n_cell_types)
    theta = np.exp(rng.normal(np.log(4.0), 0.6, design.n_genes))
    return base, type_logits, type_lib_factor, theta


def _condition_responses(
    design: _SyntheticDesign, base: np.ndarray, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw every perturbed condition's true effects (types x genes) and its response-gene mask.

    Up-regulated genes come mostly from low/mid expression (interferon-stimulated-gene like), down-regulated
    ones from mid/high expression; this keeps the shift of the other genes through normalisation small.
    """
    rank = (np.argsort(np.argsort(base)) + 0.5) / design.n_genes
    up_weight = np.exp(-(((rank - 0.3) / 0.2) ** 2)) + 0.01
    down_weight = np.exp(-(((rank - 0.8) / 0.2) ** 2)) + 0.01
    effects, response_masks = {}, {}
    for cond in design.perturbed:
        genes, signed_magnitude = _draw_response_genes(design, up_weight, down_weight, rng)
        effect = _response_effects(design, genes, signed_magnitude, rng)
        effects[cond] = design.response_scale * np.clip(effect, -4.0, 4.0)
        mask = np.zeros(design.n_genes, dtype=bool)
        mask[genes] = design.response_scale > 0
        response_masks[cond] = mask
    return effects, response_masks


def _draw_response_genes(
    design: _SyntheticDesign, up_weight: np.ndarray, down_weight: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one condition's response genes (about 55% up) in random order and their signed effect sizes."""
    n_genes, n_response = design.n_genes, design.n_response_genes
    n_up = int(np.sum(rng.random(n_response) < 0.55))
    up = rng.choice(n_genes, size=n_up, replace=False, p=up_weight / up_weight.sum())
    weight = down_weight.copy()
    weight[up] = 0.0
    down = rng.choice(n_genes, size=n_response - n_up, replace=False, p=weight / weight.sum())
    genes = rng.permutation(np.concatenate([up, down]))
    sign = np.where(np.isin(genes, up), 1.0, -1.0)
    magnitude = np.minimum(rng.gamma(4.0, 0.3, n_response), 3.0)
    return genes, sign * magnitude


def _response_effects(
    design: _SyntheticDesign, genes: np.ndarray, signed_magnitude: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Spread one condition's gene effects over the cell types: a shared block and a type-specific block."""
    n_types = design.n_cell_types
    n_shared = round(design.shared_response_fraction * design.n_response_genes)
    effect = np.zeros((n_types, design.n_genes))
    # shared program: a type-level strength and gene x type variation around each gene's effect
    type_strength = rng.lognormal(0.0, 0.4, n_types)
    variation = np.exp(rng.normal(0.0, 0.5, (n_types, n_shared)))
    effect[:, genes[:n_shared]] = signed_magnitude[:n_shared] * type_strength[:, None] * variation
    # type-specific genes: each responds in one or a few cell types only
    max_types = max(1, n_types // 2)
    for g, g_effect in zip(genes[n_shared:], signed_magnitude[n_shared:], strict=True):
        responders = rng.choice(n_types, size=rng.integers(1, max_types + 1), replace=False)
        effect[responders, g] = g_effect * np.exp(rng.normal(0.0, 0.3, responders.size))
    return effect


def _add_marker_genes(
    design: _SyntheticDesign, type_logits: np.ndarray, any_response: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Up-regulate a block of marker genes per cell type in ``type_logits`` (in place); return each gene's type.

    Marker genes are disjoint between types and from every response gene; non-markers get ``""``.
    """
    n_types, n_markers = design.n_cell_types, design.n_marker_genes
    free = np.flatnonzero(~any_response)
    if free.size < n_types * n_markers:
        raise ValueError(
            f"{n_types} cell types x {n_markers} marker genes do not fit in the {free.size} genes left "
            f"after the response genes; lower `n_marker_genes` or `n_response_genes`, or raise `n_genes`."
        )
    markers = rng.permutation(free)[: n_types * n_markers].reshape(n_types, n_markers)
    marker_cell_type = np.full(design.n_genes, "", dtype=object)
    for t, cell_type in enumerate(design.cell_types):
        type_logits[t, markers[t]] += rng.uniform(1.5, 3.0, n_markers)
        marker_cell_type[markers[t]] = cell_type
    return marker_cell_type


def _sample_cells(
    design: _SyntheticDesign,
    type_logits: np.ndarray,
    type_lib_factor: np.ndarray,
    theta: np.ndarray,
    effects: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw negative-binomial counts, ordered by condition then cell type; return them and their ``obs``."""
    obs_condition, obs_type, blocks, strengths = [], [], [], []
    for c_idx, cond in enumerate(design.conditions):
        n_cells = int(design.cells_per_condition[c_idx])
        for t, cell_type in enumerate(design.cell_types):
            if c_idx == 0:
                strength = np.zeros(n_cells)
                logits = np.broadcast_to(type_logits[t], (n_cells, design.n_genes))
            else:
                strength = rng.gamma(6.0, 1.0 / 6.0, n_cells)
                logits = type_logits[t][None, :] + strength[:, None] * effects[cond][t][None, :]
            proportion = np.exp(logits - logits.max(axis=1, keepdims=True))
            proportion /= proportion.sum(axis=1, keepdims=True)
            lib = design.library_size * type_lib_factor[t] * rng.lognormal(0.0, 0.35, n_cells)
            mean = lib[:, None] * proportion
            blocks.append(rng.poisson(rng.gamma(theta[None, :], mean / theta[None, :])))
            strengths.append(strength)
            obs_condition += [cond] * n_cells
            obs_type += [cell_type] * n_cells
    counts = np.vstack(blocks).astype(np.float32)
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(obs_condition, categories=design.conditions),
            "cell_type": pd.Categorical(obs_type, categories=design.cell_types),
            "n_counts": counts.sum(axis=1, dtype=np.float64).astype(np.float32),
            "response_strength": np.concatenate(strengths).astype(np.float32),
        },
        index=pd.Index([f"cell_{i:05d}" for i in range(counts.shape[0])]),
    )
    return counts, obs


def _assemble(
    design: _SyntheticDesign,
    counts: np.ndarray,
    obs: pd.DataFrame,
    effects: dict[str, np.ndarray],
    response_masks: dict[str, np.ndarray],
    marker_cell_type: np.ndarray,
) -> anndata.AnnData:
    """Build the AnnData: log-normalised ``X``, raw counts, the truth in ``var``/``varm`` and the parameters."""
    totals = counts.sum(axis=1, dtype=np.float64)
    normalized = counts / np.maximum(totals, 1.0)[:, None] * TARGET_LIBRARY_SIZE
    width = max(4, len(str(design.n_genes - 1)))
    var = pd.DataFrame(index=pd.Index([f"gene_{g:0{width}d}" for g in range(design.n_genes)]))
    var["response_gene"] = np.logical_or.reduce(list(response_masks.values()))
    for cond in design.perturbed:
        var[f"response_{cond}"] = response_masks[cond]
    var["marker_gene"] = marker_cell_type != ""
    var["marker_cell_type"] = marker_cell_type.astype(str)

    adata = anndata.AnnData(X=np.log1p(normalized).astype(np.float32), obs=obs, var=var)
    adata.layers["counts"] = counts
    for cond in design.perturbed:
        adata.varm[f"response_lfc_{cond}"] = effects[cond].T.astype(np.float32)
    adata.uns["synthetic_perturbation"] = {
        "seed": design.seed,
        "n_cell_types": design.n_cell_types,
        "n_genes": design.n_genes,
        "n_cells_per_group": design.n_cells_per_group,
        "n_response_genes": design.n_response_genes,
        "n_marker_genes": design.n_marker_genes,
        "conditions": list(design.conditions),
        "control": design.conditions[0],
        "cell_types": design.cell_types,
        "condition_proportions": {c: float(p) for c, p in zip(design.conditions, design.proportions, strict=True)},
        "shared_response_fraction": float(design.shared_response_fraction),
        "response_scale": float(design.response_scale),
        "library_size": float(design.library_size),
    }
    return adata


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
    design = _SyntheticDesign.validated(
        n_cell_types=n_cell_types,
        n_genes=n_genes,
        conditions=conditions,
        n_cells_per_group=n_cells_per_group,
        n_response_genes=n_response_genes,
        seed=seed,
        condition_proportions=condition_proportions,
        n_marker_genes=n_marker_genes,
        shared_response_fraction=shared_response_fraction,
        response_scale=response_scale,
        library_size=library_size,
    )
    # The steps draw from one generator in a fixed order: the same seed gives the same data.
    rng = np.random.default_rng(design.seed)
    base, type_logits, type_lib_factor, theta = _baseline_programs(design, rng)
    effects, response_masks = _condition_responses(design, base, rng)
    any_response = np.logical_or.reduce(list(response_masks.values()))
    marker_cell_type = _add_marker_genes(design, type_logits, any_response, rng)
    counts, obs = _sample_cells(design, type_logits, type_lib_factor, theta, effects, rng)
    return _assemble(design, counts, obs, effects, response_masks, marker_cell_type)
