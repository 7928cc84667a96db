"""Issue 13's methods: seed ensembles, self-tuning (inner leave-one-cell-type-out) and shift shrinkage.

Per split, three kinds of fits are cached (``benchmarks/cache/accuracy/<dataset>/<type>__<target>/``) and
shared by every method below, so that each is trained once: ``members_default.npy`` (three default TRVAE
fits, seeds 0-2), ``selection.json`` (:func:`scvi_trvae.model_selection.select_hyperparameters` on the split's
training cells only; ``selection_1_configs.json`` is the defaults alone, enough for the ensemble's weight) and
``members_tuned.npy`` (three fits of the chosen configuration; the default members when the defaults win).
Count data sets: the models use ``nb`` on the counts as the benchmark's trVAE does, and everything is scored
and blended on the log-normalised scale of ``split.control``."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scvi_trvae import model_selection
from scvi_trvae._blend import blend_prediction
from scvi_trvae.baselines import pooled_shift

from .expression import dense
from .paths import CACHE_DIR
from .registry import AUTO_EPOCHS, register
from .splits import Split

ACCURACY_CACHE = CACHE_DIR / "accuracy"
ENSEMBLE_SEEDS = (0, 1, 2)
#: Candidates of the self-tuning in the benchmark (the defaults plus ``N_CONFIGS - 1`` draws).
SEARCH_SPACE = {
    "n_layers": (1, 2),
    "mmd_weight": (10.0, 100.0),
    "kl_weight": (0.01, 0.1),
    "training_steps": (750, 1500),
}
N_CONFIGS = 3
INNER_FOLDS = 2


_scratch: list[Path] = []


def split_dir(split: Split, epochs: int | str = AUTO_EPOCHS) -> Path:
    """The cache folder of one split (and gene count and training length).

    Runs of the models' own length are kept in :data:`ACCURACY_CACHE`; fixed-epoch runs (``--quick``, tests) only
    in a temporary folder of this process, so that they never land in the repository's cache.
    """
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"{split.cell_type}__{split.target}__{split.train.n_vars}g__{epochs}")
    if epochs == AUTO_EPOCHS:
        return ACCURACY_CACHE / split.dataset / name
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="oos-ensembles-")))
    return _scratch[0] / split.dataset / name


def _steps(split: Split, epochs: int | str) -> int | None:
    """Minibatch steps of a run with a fixed number of epochs (None: the configurations' own)."""
    if epochs == AUTO_EPOCHS:
        return None
    return int(epochs) * -(-split.train.n_obs // model_selection.BATCH_SIZE)


def default_config(split: Split, epochs: int | str) -> dict[str, Any]:
    """TRVAE's defaults, with the run's training length when it is fixed."""
    steps = _steps(split, epochs)
    return {**model_selection.DEFAULT_CONFIG, **({"training_steps": steps} if steps else {})}


def _setup_kwargs(split: Split) -> dict[str, Any]:
    return {"layer": "counts", "is_count_data": True} if split.counts else {}


def member_predictions(split: Split, epochs: int | str, config: dict[str, Any], name: str) -> np.ndarray:
    """Counterfactual predictions (seeds x cells x genes) of three fits of ``config``, cached."""
    path = split_dir(split, epochs) / f"{name}.npy"
    if path.exists():
        return np.load(path)
    preds = []
    for seed in ENSEMBLE_SEEDS:
        model = model_selection._train_model(
            split.train, split.condition_key, config, seed, _setup_kwargs(split), accelerator="cpu",
            enable_progress_bar=False,
        )  # fmt: skip
        preds.append(dense(model.predict_perturbation(split.control, source=split.source, target=split.target).X))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.stack(preds).astype(np.float32))
    return np.load(path)


def selection(split: Split, epochs: int | str, n_configs: int = N_CONFIGS) -> dict[str, Any]:
    """The inner selection on ``split.train`` (configuration, shift weights, table), cached.

    ``n_configs=1`` evaluates the defaults alone (the shift weight of the default members): the same
    folds and fits as the defaults' rows of the full selection, at a third of its cost.
    """
    name = "selection.json" if n_configs == N_CONFIGS else f"selection_{n_configs}_configs.json"
    path = split_dir(split, epochs) / name
    if path.exists():
        return json.loads(path.read_text())
    steps = _steps(split, epochs)
    space = {**SEARCH_SPACE, **({"training_steps": (steps,)} if steps else {})}
    result = model_selection.select_hyperparameters(
        split.train, cell_type_key=split.cell_type_key, condition_key=split.condition_key, source=split.source,
        target=split.target, n_configs=n_configs, search_space=space, max_inner_folds=INNER_FOLDS, seed=0,
        progress_bar=False, setup_kwargs=_setup_kwargs(split), accelerator="cpu",
    )  # fmt: skip
    default_rows = result.summary[result.summary["config"] == 0]
    out = {
        "best_config": result.best_config,
        "best_shift_weight": result.best_shift_weight,
        "best_deviation_weight": result.best_deviation_weight,
        "default_shift_weight": float(default_rows.iloc[0]["shift_weight"]),
        "default_deviation_weight": float(default_rows.iloc[0]["deviation_weight"]),
        "inner_cell_types": result.inner_cell_types,
        "seconds": result.seconds,
        "summary": result.summary.to_dict(orient="records"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    return out


def blend(split: Split, pred: np.ndarray, weight: float, deviation: float | None = None) -> np.ndarray:
    """The package's blend (``_blend.blend_prediction``) with the pooled shift of the other types.

    ``deviation`` None: ``lambda = w``, the blend used before the two weights were chosen apart.
    """
    shift = pooled_shift(
        split.train, cell_type_key=split.cell_type_key, condition_key=split.condition_key, exclude=[split.cell_type],
        source=split.source, target=split.target,
    )  # fmt: skip
    return blend_prediction(dense(split.control.X), pred, shift, weight, weight if deviation is None else deviation)


def default_members(split: Split, epochs: int | str) -> np.ndarray:
    """Predictions of three default fits (seeds 0-2)."""
    return member_predictions(split, epochs, default_config(split, epochs), "members_default")


def tuned_members(split: Split, epochs: int | str) -> tuple[np.ndarray, tuple[float, float]]:
    """Predictions of the chosen configuration (three seeds) and the chosen shift and deviation weights."""
    chosen = selection(split, epochs)
    best, weights = chosen["best_config"], (chosen["best_shift_weight"], chosen["best_deviation_weight"])
    if best == default_config(split, epochs):
        return default_members(split, epochs), weights
    return member_predictions(split, epochs, best, "members_tuned"), weights


def default_weights(split: Split, epochs: int | str) -> tuple[float, float]:
    """The shift and deviation weights the inner validation chose for the default configuration.

    Read from the full selection where it was run, else from a selection of the defaults alone.
    """
    if (split_dir(split, epochs) / "selection.json").exists():
        chosen = selection(split, epochs)
    else:
        chosen = selection(split, epochs, n_configs=1)
    return chosen["default_shift_weight"], chosen["default_deviation_weight"]


def fit_predict_ensemble(split: Split, seed: int, epochs: int | str, *, shrink: bool = False) -> np.ndarray:
    """Mean of three default members; ``shrink``: blended with the weight the inner validation chose for them."""
    mean = default_members(split, epochs).mean(0)
    return blend(split, mean, *default_weights(split, epochs)) if shrink else mean


def fit_predict_self_tuned(split: Split, seed: int, epochs: int | str, *, ensemble: bool = False) -> np.ndarray:
    """The chosen configuration and shift weight: seed 0 alone, or the mean of three seeds."""
    members, weights = tuned_members(split, epochs)
    return blend(split, members.mean(0) if ensemble else members[0], *weights)


_SEEDS_NOTE = "seeds 0-2 inside"
register(
    "trVAE ensemble", fit_predict_ensemble, f"mean of 3 default TRVAE members ({_SEEDS_NOTE})", epochs=AUTO_EPOCHS,
    seeds="one",
)  # fmt: skip
register(
    "trVAE ensemble + shrink", fit_predict_ensemble,
    "the ensemble blended with the pooled shift, w chosen by inner leave-one-type-out", epochs=AUTO_EPOCHS,
    seeds="one", options={"shrink": True},
)  # fmt: skip
register(
    "trVAE self-tuned", fit_predict_self_tuned,
    f"configuration and w chosen by inner leave-one-type-out ({N_CONFIGS} configs x {INNER_FOLDS} folds), seed 0",
    epochs=AUTO_EPOCHS, seeds="one",
)  # fmt: skip
register(
    "trVAE self-tuned ensemble", fit_predict_self_tuned,
    f"self-tuned configuration and w, 3 members ({_SEEDS_NOTE})", epochs=AUTO_EPOCHS, seeds="one",
    options={"ensemble": True},
)  # fmt: skip
