"""Why does trVAE lose to a mean shift where responses depend on cell state? Diagnosis on ground truth.

``scvi_trvae.datasets.synthetic_perturbation(state_dependence=S)`` knows every cell's true counterfactual
(:func:`~scvi_trvae.datasets.synthetic_counterfactual`). ``type_A`` stimulated cells are held out and predicted
from ``type_A`` control cells by model variants and baselines; each prediction is scored with the package's
metrics (Δ-Pearson on the DEGs, scaled E-distance) and against each cell's own truth, the cell's observed control
expression plus its true response ``truth(stimulated) - truth(control)``
(:func:`scvi_trvae.datasets.ground_truth_scores`, which ``make demo`` prints too):

* ``paired_rmse``: root mean squared difference to that paired truth over the cells and the true response genes;
* ``shift_error``: RMSE of the predicted mean response (over cells) against the true mean response, all genes:
  how well the type's response is predicted, whatever the single cells do;
* ``cell_shift_r``: Pearson r, over cells x response genes, of each cell's predicted response minus the mean
  predicted response against the same for the true response: does the prediction follow each cell's state?
* ``spread_ratio``: standard deviation over cells of the predicted response, divided by that of the true one
  (mean over the response genes); 0 for a constant shift.

Every (state dependence, seed, variant) prediction is cached in ``benchmarks/cache/synthetic_state/``; results go to
``benchmarks/results/synthetic_state.json`` and a markdown table. ``--quick`` runs a tiny version (the suite runs it).

``--transfer-bound`` fits nothing: per seed, it scores the mean shift against ``control + other types' true mean
response`` (the pooled shift without sampling noise) on Δ-Pearson (DEG), to
``benchmarks/results/synthetic_transfer_bound.json`` and ``.md``.

    python benchmarks/synthetic_state.py --state-dependence 0 1 --seeds 0 1 2
    python benchmarks/synthetic_state.py --transfer-bound --state-dependence 0 1 --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from scipy.stats import ConstantInputWarning

from scvi_trvae import TRVAE, baselines, metrics, model_selection
from scvi_trvae._blend import blend_prediction
from scvi_trvae.datasets import ground_truth_scores, holdout_split, synthetic_perturbation, synthetic_true_response
from scvi_trvae.utils import as_dense

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "synthetic_state.json"
TRANSFER_RESULTS = "synthetic_transfer_bound.json"
CACHE = BENCH / "cache" / "synthetic_state"
KEYS = {"cell_type_key": "cell_type", "condition_key": "condition", "source": "control", "target": "stimulated"}
HELD_OUT = "type_A"
DIAGNOSTICS = ("paired_rmse", "shift_error", "cell_shift_r", "spread_ratio")
SCORES = ("pearson_delta_deg", "edist_scaled", *DIAGNOSTICS)


@dataclass(frozen=True)
class Variant:
    """One way to predict: a TRVAE fit (model and train arguments) and a prediction mode, or a baseline."""

    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    mode: str = "counterfactual"
    epochs_factor: float = 1.0
    pipeline: bool = False

    @property
    def fit_key(self) -> str:
        """Variants with the same fit share it (e.g. the two prediction modes)."""
        return json.dumps([self.model, self.train, self.epochs_factor], sort_keys=True)


VARIANTS: dict[str, Variant] = {
    "trVAE (defaults)": Variant(),
    "trVAE, mode='mean'": Variant(mode="mean"),
    "CVAE (no MMD)": Variant(model={"mmd_on": None}),
    "trVAE, MMD weight 10": Variant(train={"mmd_weight": 10.0}),
    "trVAE, MMD weight 1": Variant(train={"mmd_weight": 1.0}),
    "trVAE, MMD weight 300": Variant(train={"mmd_weight": 300.0}),
    "trVAE, MMD weight 1000": Variant(train={"mmd_weight": 1000.0}),
    "trVAE, latent 10": Variant(model={"n_latent": 10}),
    "trVAE, KL weight 0.01": Variant(train={"kl_weight": 0.01}),
    "trVAE, 3x training": Variant(epochs_factor=3.0),
    "trVAE, no batch norm": Variant(model={"use_batch_norm": False}),
    "trVAE, layer norm": Variant(model={"use_batch_norm": False, "use_layer_norm": True}),
    "trVAE, no dropout": Variant(model={"dropout_rate": 0.0}),
    "trVAE, dropout 0.2": Variant(model={"dropout_rate": 0.2}),
    "trVAE, dropout 0.3": Variant(model={"dropout_rate": 0.3}),
    "trVAE, dropout 0.5": Variant(model={"dropout_rate": 0.5}),
    "trVAE, MMD on z": Variant(model={"mmd_on": "z"}),
    "recommended pipeline": Variant(pipeline=True),
}
MEAN_SHIFT = "control + mean shift"
#: The pooled shift without sampling noise (:func:`other_types_true_shift`).
TRANSFER = "control + other types' true mean response"
BASELINES = (
    MEAN_SHIFT,
    "control + balanced mean shift",
    TRANSFER,
    "control + true mean response",
    "no response",
)
#: Predictions derived from a trVAE's (see ``DERIVED_FROM``): ``(w, lambda)`` in
#: ``x + w * m + (1 - w) * pooled + lambda * d_i`` (``m`` trVAE's mean response over the cells, ``d_i`` cell i's
#: deviation from it); ``lambda=None`` is the ensemble's earlier blend, ``x + w * (m + d_i) + (1 - w) * pooled``.
DERIVED = {
    "blend w=0.5 (current)": (0.5, None),
    "pooled mean + trVAE deviations": (0.0, 1.0),
    "pooled mean + 2x trVAE deviations": (0.0, 2.0),
    "w=0.5 mean + trVAE deviations": (0.5, 1.0),
}
#: The variants ``DERIVED`` predictions are made from, and the prefix of their names.
DERIVED_FROM = {"trVAE (defaults)": "", "trVAE, no batch norm": "no batch norm: "}


def synthetic_split(state_dependence: float, seed: int, quick: bool):
    """The data set of one (state dependence, seed) and its hold-out split."""
    size = {"n_cell_types": 3, "n_genes": 200, "n_cells_per_group": 40} if quick else {}
    adata = synthetic_perturbation(seed=seed, state_dependence=state_dependence, **size)
    return adata, holdout_split(adata, cell_type=HELD_OUT, **KEYS)


def fit(split, variant: Variant, seed: int, epochs: int) -> TRVAE:
    """Train one TRVAE of ``variant`` on the split's training cells."""
    scvi.settings.seed = seed
    train = split.train.copy()
    TRVAE.setup_anndata(train, condition_key=KEYS["condition_key"])
    model = TRVAE(train, **variant.model)
    model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, **variant.train)
    return model


def pipeline_predictions(split, seed: int, max_epochs: int | None, path: Path) -> dict[str, np.ndarray]:
    """:func:`~scvi_trvae.model_selection.fit_recommended` on the training cells: its prediction and its members' mean.

    Cached in ``path`` (the recommended prediction) and ``path`` with ``members`` (w = lambda = 1).
    """
    members_path = path.with_name(path.stem + "_members.npy")
    if not (path.exists() and members_path.exists()):
        ensemble, _ = model_selection.fit_recommended(
            split.train, **KEYS, seed=seed, max_epochs=max_epochs, progress_bar=False, accelerator="cpu"
        )
        predict = {"source": "control", "target": "stimulated"}  # the ensemble knows its labels_key
        np.save(path, ensemble.predict_perturbation(split.control, **predict).X)
        plain = ensemble.predict_perturbation(split.control, blend=False, **predict)
        np.save(members_path, plain.X)
        blend = {"shift_weight": ensemble.shift_weight, "deviation_weight": ensemble.deviation_weight}
        path.with_suffix(".json").write_text(json.dumps({**blend, "spread_scaling": ensemble.spread_scaling}))
    return {"recommended pipeline": np.load(path), "trVAE ensemble (the pipeline's 3 members)": np.load(members_path)}


def baseline_prediction(name: str, split, truth_response: np.ndarray) -> np.ndarray:
    """One of ``BASELINES`` for the held-out type's control cells."""
    control = as_dense(split.control.X)
    if name in ("control + mean shift", "control + balanced mean shift"):
        return baselines.mean_shift(split.train, cell_type=HELD_OUT, balanced="balanced" in name, **KEYS).X
    if name == "control + true mean response":  # knows the held-out type's true mean response: no method can
        return np.clip(control + truth_response.mean(0), 0.0, None)
    if name == TRANSFER:
        return np.clip(control + other_types_true_shift(split), 0.0, None)
    return control


def other_types_true_shift(split) -> np.ndarray:
    """The pooled mean shift without sampling noise: the mean true response of the other types' control cells.

    What a perfect estimate of the other types' response transfers to the held-out type; the rest of its true
    response is its own, which no training cell shows.
    """
    train = split.train
    others = (train.obs["cell_type"].astype(str) != HELD_OUT) & (train.obs["condition"].astype(str) == "control")
    response, _ = synthetic_true_response(train[others.to_numpy()], "control", "stimulated")
    return response.mean(0)


def run_case(state_dependence: float, seed: int, variants: dict[str, Variant], quick: bool, cache: Path) -> dict:
    """Scores of every variant and baseline on one (state dependence, seed); predictions cached per variant."""
    _, split = synthetic_split(state_dependence, seed, quick)
    control = as_dense(split.control.X)
    truth_response, genes = synthetic_true_response(split.control, "control", "stimulated", HELD_OUT)
    base_epochs = 2 if quick else None
    if base_epochs is None:
        n_batches = -(-split.train.n_obs // 128)
        base_epochs = min(max(-(-1500 // n_batches), 20), 400)  # TRVAE.train's default length
    predictions, models = {}, {}
    for name, variant in variants.items():
        path = cache / f"s{state_dependence:g}_seed{seed}_{name}.npy"
        if variant.pipeline:
            predictions.update(pipeline_predictions(split, seed, 2 if quick else None, path))
            continue
        if not path.exists():
            if variant.fit_key not in models:
                epochs = max(1, round(base_epochs * variant.epochs_factor))
                models[variant.fit_key] = fit(split, variant, seed, epochs)
            model = models[variant.fit_key]
            predicted = model.predict_perturbation(split.control, source="control", target="stimulated",
                                                   mode=variant.mode)  # fmt: skip
            np.save(path, predicted.X)
        predictions[name] = np.load(path)
    for name in BASELINES:
        predictions[name] = baseline_prediction(name, split, truth_response)
    pooled = baselines.pooled_shift(split.train, exclude=[HELD_OUT], **KEYS)
    for base, prefix in DERIVED_FROM.items():
        if base not in predictions:
            continue
        for name, (weight, spread) in DERIVED.items():
            deviation = weight if spread is None else spread
            predictions[prefix + name] = blend_prediction(control, predictions[base], pooled, weight, deviation)
    degs = metrics.top_degs(split.real_target, split.control)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)  # "no response" has no Δ-Pearson
        for name, pred in predictions.items():
            standard = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=degs, seed=0)
            row = {key: float(standard[key]) for key in ("pearson_delta_deg", "edist_scaled")}
            row.update(ground_truth_scores(pred, control, truth_response, genes))
            scores[name] = row
    return scores


def transfer_bound(state_dependences: list[float], seeds: list[int], quick: bool) -> pd.DataFrame:
    """Per (state dependence, seed): Δ-Pearson (DEG) of the observed mean shift and of the noise-free transfer.

    No fit: how often would a perfect estimate of the other types' mean response beat the mean shift?
    """
    rows = []
    for state_dependence in state_dependences:
        for seed in seeds:
            _, split = synthetic_split(state_dependence, seed, quick)
            truth_response, _ = synthetic_true_response(split.control, "control", "stimulated", HELD_OUT)
            degs = metrics.top_degs(split.real_target, split.control)
            row = {"state_dependence": state_dependence, "seed": seed}
            for name in (MEAN_SHIFT, TRANSFER):
                pred = baseline_prediction(name, split, truth_response)
                row[name] = float(metrics.pearson_delta(pred, split.real_target, split.control, genes=degs))
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["transfer wins"] = frame[TRANSFER] > frame[MEAN_SHIFT]
    return frame


def summary_table(results: dict) -> pd.DataFrame:
    """Mean over seeds of every score, one row per (state dependence, method)."""
    rows = [
        {"state_dependence": float(s), "method": method, **scores}
        for s, seeds in results.items()
        for per_method in seeds.values()
        for method, scores in per_method.items()
    ]
    frame = pd.DataFrame(rows)
    return frame.groupby(["state_dependence", "method"], sort=False)[list(SCORES)].mean().round(3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dependence", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS),
                        help="model variants to fit (none: the baselines only, every stored score kept)")  # fmt: skip
    parser.add_argument("--transfer-bound", action="store_true",
                        help=f"no fit: per seed, Δ-Pearson (DEG) of {MEAN_SHIFT!r} and {TRANSFER!r}")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny data, 2 epochs, one case, three variants")
    parser.add_argument("--out-dir", type=Path, default=None, help="results and cache here (default: the repo's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.transfer_bound:  # no fit; --quick: tiny data, the seeds as given
        write_transfer_bound(args)
        return
    if args.quick:
        args.state_dependence, args.seeds = [1.0], [0]
        args.variants = ["trVAE (defaults)", "trVAE, mode='mean'", "recommended pipeline"]
    results_path = (args.out_dir / RESULTS.name) if args.out_dir else RESULTS
    cache = (args.out_dir / "cache") if args.out_dir else CACHE
    cache.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.exists() and not args.quick else {}
    variants = {name: VARIANTS[name] for name in args.variants}
    for state_dependence in args.state_dependence:
        for seed in args.seeds:
            scores = run_case(state_dependence, seed, variants, args.quick, cache)
            # merged: a run of some variants keeps the others' stored scores (the baselines are recomputed)
            results.setdefault(f"{state_dependence:g}", {}).setdefault(str(seed), {}).update(scores)
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps({"quick": args.quick, **results}, indent=1) if args.quick else
                                    json.dumps(results, indent=1))  # fmt: skip
            print(f"state_dependence={state_dependence:g}, seed {seed}: done", flush=True)
    table = summary_table({k: v for k, v in results.items() if k != "quick"})
    print(table.to_markdown())
    (results_path.with_suffix(".md")).write_text(table.to_markdown() + "\n")


def write_transfer_bound(args: argparse.Namespace) -> None:
    """``--transfer-bound``: the per-seed table and how often the transfer wins, as JSON and markdown."""
    frame = transfer_bound(args.state_dependence, args.seeds, args.quick)
    path = (args.out_dir or RESULTS.parent) / TRANSFER_RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"quick": args.quick, "rows": frame.to_dict(orient="records")}, indent=1))
    counts = frame.groupby("state_dependence")["transfer wins"].agg(["sum", "size"])
    lines = [f"state dependence {s:g}: the transfer beats the mean shift in {n} of {k} seeds"
             for s, (n, k) in counts.iterrows()]  # fmt: skip
    text = frame.round(4).to_markdown(index=False) + "\n\n" + "\n".join(lines) + "\n"
    print(text)
    path.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
