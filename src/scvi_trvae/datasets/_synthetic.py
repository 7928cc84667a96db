"""The synthetic perturbation generator (:func:`synthetic_perturbation`) and its ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anndata
import numpy as np
import pandas as pd

from scvi_trvae.utils import TARGET_LIBRARY_SIZE

from ._synthetic_design import SyntheticDesign


# --------------------------------------------------------------------------------------------------------------------
def _baseline_programs(
    design: SyntheticDesign, rng: np.random.Generator
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
    design: SyntheticDesign, base: np.ndarray, rng: np.random.Generator
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
    design: SyntheticDesign, up_weight: np.ndarray, down_weight: np.ndarray, rng: np.random.Generator
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
    design: SyntheticDesign, genes: np.ndarray, signed_magnitude: np.ndarray, rng: np.random.Generator
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
    design: SyntheticDesign, type_logits: np.ndarray, any_response: np.ndarray, rng: np.random.Generator
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


#: Genes whose expression follows each cell's state (with ``state_dependence > 0``) and their log-scale loading.
N_STATE_GENES, STATE_LOADING = 20, 1.0


def _cell_states(design: SyntheticDesign, taken: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's state ``u ~ N(0, 1)`` (in sampling order) and the mask of the genes that show it.

    Drawn from a generator of its own (``[seed, 1]``), so that ``state_dependence=0`` leaves the data of a seed
    exactly as without the option. The state genes are drawn among the genes not ``taken`` (response, markers).
    """
    n_cells = design.n_cell_types * int(design.cells_per_condition.sum())
    state_genes = np.zeros(design.n_genes, dtype=bool)
    if design.state_dependence == 0:
        return np.zeros(n_cells), state_genes
    rng = np.random.default_rng([design.seed, 1])
    free = np.flatnonzero(~taken)
    state_genes[rng.permutation(free)[: min(N_STATE_GENES, free.size)]] = True
    return rng.standard_normal(n_cells), state_genes


def _cell_logits(
    type_logits: np.ndarray, strength: np.ndarray, effect: np.ndarray, state: np.ndarray, state_genes: np.ndarray
) -> np.ndarray:
    """Log-abundances (cells x genes) of cells of one type: its program, ``strength`` times ``effect``, the state."""
    return type_logits[None, :] + strength[:, None] * effect[None, :] + STATE_LOADING * state[:, None] * state_genes


def _sample_cells(
    design: SyntheticDesign,
    type_logits: np.ndarray,
    type_lib_factor: np.ndarray,
    theta: np.ndarray,
    effects: dict[str, np.ndarray],
    rng: np.random.Generator,
    states: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, pd.DataFrame]:
    """Draw negative-binomial counts, ordered by condition then cell type; return them and their ``obs``.

    ``states``: each cell's state and the state genes (:func:`_cell_states`); the state moves the state genes in
    every condition and scales the response strength by ``exp(state_dependence * state)``.
    """
    state, state_genes = states
    obs_condition, obs_type, blocks, strengths = [], [], [], []
    first = 0
    for c_idx, cond in enumerate(design.conditions):
        n_cells = int(design.cells_per_condition[c_idx])
        for t, cell_type in enumerate(design.cell_types):
            cell_state = state[first : first + n_cells]
            first += n_cells
            if c_idx == 0:
                strength = np.zeros(n_cells)
            else:
                strength = rng.gamma(6.0, 1.0 / 6.0, n_cells) * np.exp(design.state_dependence * cell_state)
            effect = effects[cond][t] if c_idx else np.zeros(design.n_genes)
            logits = _cell_logits(type_logits[t], strength, effect, cell_state, state_genes)
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
    design: SyntheticDesign,
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
    state_dependence: float = 0.0,
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
    state_dependence
        How much a cell's response depends on its own state, as real interferon responses do (``0``, the default:
        not at all). Every cell gets a state :math:`u_i \sim N(0, 1)` that raises or lowers 20 "state genes"
        (outside the response and marker genes, in every condition, so the state is visible in the control cells)
        and multiplies the response strength :math:`s_i` of a perturbed cell by :math:`\exp(\text{state\_dependence}
        \cdot u_i)`. With ``shared_response_fraction`` below 1 the response is then part shared, part specific to
        the cell type, and scaled by each cell's state: a mean shift cannot predict it, a model that reads the
        control cell can. The state is then in ``obs["cell_state"]`` and the state genes in ``var["state_gene"]``.

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
    design = SyntheticDesign.validated(
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
        state_dependence=state_dependence,
    )
    rng = np.random.default_rng(design.seed)
    programs = _Programs.drawn(design, rng)
    counts, obs = _sample_cells(
        design, programs.type_logits, programs.type_lib_factor, programs.theta, programs.effects, rng, programs.states
    )
    adata = _assemble(design, counts, obs, programs.effects, programs.response_masks, programs.marker_cell_type)
    if design.state_dependence > 0:
        adata.obs["cell_state"] = programs.states[0].astype(np.float32)
        adata.var["state_gene"] = programs.states[1]
        adata.uns["synthetic_perturbation"]["state_dependence"] = float(design.state_dependence)
    return adata


@dataclass(frozen=True)
class _Programs:
    """Everything about a synthetic data set that is drawn before its cells: the truth behind every cell."""

    type_logits: np.ndarray
    type_lib_factor: np.ndarray
    theta: np.ndarray
    effects: dict[str, np.ndarray]
    response_masks: dict[str, np.ndarray]
    marker_cell_type: np.ndarray
    states: tuple[np.ndarray, np.ndarray]

    @classmethod
    def drawn(cls, design: SyntheticDesign, rng: np.random.Generator) -> _Programs:
        """Draw the programs from ``rng`` in a fixed order: the same seed gives the same data."""
        base, type_logits, type_lib_factor, theta = _baseline_programs(design, rng)
        effects, response_masks = _condition_responses(design, base, rng)
        any_response = np.logical_or.reduce(list(response_masks.values()))
        marker_cell_type = _add_marker_genes(design, type_logits, any_response, rng)
        states = _cell_states(design, any_response | (marker_cell_type != ""))
        return cls(type_logits, type_lib_factor, theta, effects, response_masks, marker_cell_type, states)


def synthetic_counterfactual(adata: anndata.AnnData, condition: str) -> np.ndarray:
    r"""Return the noise-free expression of each cell of a :func:`synthetic_perturbation` data set in ``condition``.

    For a cell of type :math:`t` with state :math:`u_i`, the log-normalised expression it would have in condition
    :math:`k` without sampling noise: ``log1p(10,000 * softmax(b + d_t + exp(state_dependence * u_i) * e_kt +
    u_i * state genes))``, the response strength at its expectation given the state (0 in the control). The
    difference between two conditions is that cell's own true response: the ground truth of a prediction for
    that cell, which no real data set has.

    Parameters
    ----------
    adata
        Cells of a data set made by :func:`synthetic_perturbation` (any subset of its cells and genes, with its
        ``uns["synthetic_perturbation"]``, ``obs["cell_type"]`` and, with ``state_dependence > 0``,
        ``obs["cell_state"]``).
    condition
        One of the data set's conditions.

    Returns
    -------
    Dense ``float32`` array, cells x genes, on the scale of the data set's ``X``.
    """
    params = adata.uns.get("synthetic_perturbation")
    if params is None or "cell_types" not in params:
        raise ValueError("adata was not made by scvi_trvae.datasets.synthetic_perturbation (no uns entry).")
    design = SyntheticDesign.validated(
        **{key: params[key] for key in _TRUTH_PARAMETERS}, state_dependence=params.get("state_dependence", 0.0)
    )
    if condition not in design.conditions:
        raise ValueError(f"unknown condition {condition!r}; known: {design.conditions}")
    programs = _Programs.drawn(design, np.random.default_rng(design.seed))
    width = max(4, len(str(design.n_genes - 1)))
    genes = pd.Index([f"gene_{g:0{width}d}" for g in range(design.n_genes)]).get_indexer(adata.var_names)
    if (genes < 0).any():
        raise ValueError("adata holds genes that its synthetic data set does not have.")
    types = pd.Index(design.cell_types).get_indexer(adata.obs["cell_type"].astype(str))
    state = adata.obs["cell_state"].to_numpy(float) if "cell_state" in adata.obs else np.zeros(adata.n_obs)
    perturbed = condition != design.conditions[0]
    expression = np.empty((adata.n_obs, len(genes)), dtype=np.float32)
    for t in np.unique(types):
        cells = types == t
        strength = np.exp(design.state_dependence * state[cells]) * perturbed
        effect = programs.effects[condition][t] if perturbed else np.zeros(design.n_genes)
        logits = _cell_logits(programs.type_logits[t], strength, effect, state[cells], programs.states[1])
        proportion = np.exp(logits - logits.max(axis=1, keepdims=True))
        proportion /= proportion.sum(axis=1, keepdims=True)
        expression[cells] = np.log1p(TARGET_LIBRARY_SIZE * proportion[:, genes])
    return expression


#: The entries of ``uns["synthetic_perturbation"]`` that fix the drawn programs.
_TRUTH_PARAMETERS = (
    "n_cell_types",
    "n_genes",
    "conditions",
    "n_cells_per_group",
    "n_response_genes",
    "seed",
    "n_marker_genes",
    "shared_response_fraction",
    "response_scale",
    "library_size",
    "condition_proportions",
)
