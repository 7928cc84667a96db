"""Issue 13's methods: seed ensembles, self-tuning (inner leave-one-cell-type-out) and shift shrinkage.

Per split, three kinds of fits are cached (``benchmarks/cache/accuracy/<dataset>/<type>__<target>__...__code<v>/``,
``v`` the code version of the package and this module, :func:`fits_version`: fits and selections made by other
code are never read) and shared by every method below, so that each is trained once: ``ensemble_default/`` (a saved
:class:`~scvi_trvae.TRVAEEnsemble` of three default TRVAE fits, seeds 0-2, trained by
:func:`scvi_trvae.model_selection.train_ensemble`; ``members_default.npy`` holds its members' predictions),
``selection.json`` (:func:`scvi_trvae.model_selection.select_hyperparameters` on the split's
training cells only; ``selection_1_configs.json`` is the defaults alone, enough for the ensemble's weight) and
``ensemble_tuned/`` (three fits of the chosen configuration; the default ensemble when the defaults win).
Every blended row is :meth:`scvi_trvae.TRVAEEnsemble.predict_perturbation` of such an ensemble: the package's
own pipeline, for log-normalised and count data alike. Count data sets: the models use ``nb`` on the counts as
the benchmark's trVAE does, predict and blend on the ``log1p`` scale of counts per 10,000, and are scored
against the log-normalised ``split.control`` and ``split.real_target``."""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from scvi_trvae import TRVAEEnsemble, model_selection
from scvi_trvae._fitting import fresh_copy

from .expression import dense
from .paths import CACHE_DIR, REPO
from .registry import AUTO_EPOCHS, PACKAGE_SOURCES, hash_sources, register
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
INNER_FOLDS = model_selection.RECOMMENDED_INNER_FOLDS
#: Where the fits train: ``OOS_ACCELERATOR=gpu`` on a machine with CUDA (cached ensembles always load on the CPU).
ACCELERATOR = os.environ.get("OOS_ACCELERATOR", "cpu")


_scratch: list[Path] = []


def fits_version() -> str:
    """The code version of the cached fits and selections: a hash of the package and of this module."""
    return hash_sources((*PACKAGE_SOURCES, Path(__file__).resolve().relative_to(REPO).as_posix()))


def split_dir(split: Split, epochs: int | str = AUTO_EPOCHS) -> Path:
    """The cache folder of one split (and gene count, training length and code version).

    Runs of the models' own length are kept in :data:`ACCURACY_CACHE`, in a folder named with
    :func:`fits_version` so that a stale selection or ensemble never feeds a fresh result; fixed-epoch runs
    (``--quick``, tests) only in a temporary folder of this process, so that they never land in the
    repository's cache.
    """
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"{split.cell_type}__{split.target}__{split.train.n_vars}g__{epochs}")
    if epochs == AUTO_EPOCHS:
        return ACCURACY_CACHE / split.dataset / f"{name}__code{fits_version()}"
    if not _scratch:
        _scratch.append(Path(tempfile.mkdtemp(prefix="oos-ensembles-")))
    return _scratch[0] / split.dataset / name


def _steps(split: Split, epochs: int | str) -> int | None:
    """Minibatch steps of a run with a fixed number of epochs (None: the configurations' own)."""
    if epochs == AUTO_EPOCHS:
        return None
    return model_selection.training_steps(split.train.n_obs, int(epochs))


def default_config(split: Split, epochs: int | str) -> dict[str, Any]:
    """TRVAE's defaults, with the run's training length when it is fixed."""
    steps = _steps(split, epochs)
    return {**model_selection.DEFAULT_CONFIG, **({"training_steps": steps} if steps else {})}


def trained_ensemble(split: Split, epochs: int | str, config: dict[str, Any], name: str) -> TRVAEEnsemble:
    """Three fits of ``config`` (seeds 0-2) as a :class:`~scvi_trvae.TRVAEEnsemble`, saved in the split's cache."""
    path = split_dir(split, epochs) / name
    if (path / "ensemble.json").exists():
        return TRVAEEnsemble.load(path, adata=fresh_copy(split.train), accelerator="cpu")
    ensemble = model_selection.train_ensemble(
        split.train, condition_key=split.condition_key, config=config, seeds=ENSEMBLE_SEEDS,
        labels_key=split.cell_type_key, setup_kwargs=split.setup_kwargs, accelerator=ACCELERATOR,
    )  # fmt: skip
    ensemble.save(path, overwrite=True)
    return ensemble


#: ``(w, lambda, kind of reference shift, spread scaling)`` of the blend; ``(1, 1, "pooled", False)`` is the
#: ensemble alone.
Blend = tuple[float, float, str, bool]
UNBLENDED: Blend = (1.0, 1.0, "pooled", False)


def predict(split: Split, ensemble: TRVAEEnsemble, weights: Blend = UNBLENDED) -> np.ndarray:
    """The ensemble's prediction of the split's control cells with ``weights``: the package's own blend."""
    shift_weight, deviation_weight, kind, scaling = weights
    pred = ensemble.predict_perturbation(
        split.control, source=split.source, target=split.target, shift_weight=shift_weight,
        deviation_weight=deviation_weight, reference_shift=kind, spread_scaling=scaling,
    )  # fmt: skip
    return dense(pred.X)


def first_member(ensemble: TRVAEEnsemble) -> TRVAEEnsemble:
    """The ensemble of its first member alone (seed 0), sharing its model and settings."""
    single = copy.copy(ensemble)
    single.seeds, single.members = ensemble.seeds[:1], ensemble.members[:1]
    return single


def member_predictions(split: Split, epochs: int | str, config: dict[str, Any], name: str) -> np.ndarray:
    """Counterfactual predictions (seeds x cells x genes) of the members of :func:`trained_ensemble`, cached."""
    path = split_dir(split, epochs) / f"members_{name}.npy"
    if path.exists():
        return np.load(path)
    ensemble = trained_ensemble(split, epochs, config, f"ensemble_{name}")
    task = {"source": split.source, "target": split.target}
    preds = [dense(member.predict_perturbation(split.control, **task).X) for member in ensemble.members]
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
        progress_bar=False, setup_kwargs=split.setup_kwargs, accelerator=ACCELERATOR,
    )  # fmt: skip
    default_rows = result.summary[result.summary["config"] == 0]
    out = {
        "best_config": result.best_config,
        "best_shift_weight": result.best_shift_weight,
        "best_deviation_weight": result.best_deviation_weight,
        "best_reference_shift": result.best_reference_shift,
        "best_spread_scaling": result.best_spread_scaling,
        "default_shift_weight": float(default_rows.iloc[0]["shift_weight"]),
        "default_deviation_weight": float(default_rows.iloc[0]["deviation_weight"]),
        "default_reference_shift": str(default_rows.iloc[0]["reference_shift"]),
        "default_spread_scaling": bool(default_rows.iloc[0]["spread_scaling"]),
        "inner_cell_types": result.inner_cell_types,
        "seconds": result.seconds,
        "summary": result.summary.to_dict(orient="records"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    return out


def default_members(split: Split, epochs: int | str) -> np.ndarray:
    """Predictions of three default fits (seeds 0-2)."""
    return member_predictions(split, epochs, default_config(split, epochs), "default")


def default_ensemble(split: Split, epochs: int | str) -> TRVAEEnsemble:
    """The three default fits (seeds 0-2) as an ensemble."""
    return trained_ensemble(split, epochs, default_config(split, epochs), "ensemble_default")


def tuned_ensemble(split: Split, epochs: int | str) -> tuple[TRVAEEnsemble, Blend]:
    """The chosen configuration's ensemble (three seeds) and the chosen blend."""
    chosen = selection(split, epochs)
    best = chosen["best_config"]
    weights = _blend(chosen, "best")
    if best == default_config(split, epochs):
        return default_ensemble(split, epochs), weights
    return trained_ensemble(split, epochs, best, "ensemble_tuned"), weights


def default_weights(split: Split, epochs: int | str) -> Blend:
    """The blend (weights, reference shift, spread scaling) the inner validation chose for the default configuration.

    Read from the full selection where it was run, else from a selection of the defaults alone.
    """
    if (split_dir(split, epochs) / "selection.json").exists():
        chosen = selection(split, epochs)
    else:
        chosen = selection(split, epochs, n_configs=1)
    return _blend(chosen, "default")


def _blend(chosen: dict[str, Any], which: str) -> Blend:
    """The ``which`` (``"best"`` or ``"default"``) blend recorded in a cached :func:`selection`."""
    keys = ("shift_weight", "deviation_weight", "reference_shift", "spread_scaling")
    return tuple(chosen[f"{which}_{key}"] for key in keys)  # type: ignore[return-value]


def fit_predict_ensemble(split: Split, seed: int, epochs: int | str, *, shrink: bool = False) -> np.ndarray:
    """Mean of three default members; ``shrink``: blended with the weights the inner validation chose for them."""
    return predict(split, default_ensemble(split, epochs), default_weights(split, epochs) if shrink else UNBLENDED)


def fit_predict_self_tuned(split: Split, seed: int, epochs: int | str, *, ensemble: bool = False) -> np.ndarray:
    """The chosen configuration and weights: seed 0 alone, or the ensemble of three seeds."""
    tuned, weights = tuned_ensemble(split, epochs)
    return predict(split, tuned if ensemble else first_member(tuned), weights)


_SEEDS_NOTE = "seeds 0-2 inside"
register(
    "trVAE ensemble", fit_predict_ensemble, f"mean of 3 default TRVAE members ({_SEEDS_NOTE})", epochs=AUTO_EPOCHS,
    seeds="one",
)  # fmt: skip
register(
    "trVAE ensemble + shrink", fit_predict_ensemble,
    "the ensemble blended with a reference shift; w, lambda and its kind chosen by inner leave-one-type-out",
    epochs=AUTO_EPOCHS,
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
