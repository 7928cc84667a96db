r"""Demo: hold out one (cell type, condition) pair, train trVAE without it, predict it and score it.

The demo runs the recommended pipeline (``docs/ensembles.md``): a 3-seed :class:`~scvi_trvae.TRVAEEnsemble`
whose shift is blended with the pooled shift of the other cell types, the weight ``w`` chosen by inner
leave-one-cell-type-out on the training cells only (:func:`scvi_trvae.model_selection.fit_self_tuned`).
It prints that pipeline's scores beside one seed alone, the plain ensemble and the baselines.

Run ``python -m scvi_trvae.demo`` (the package's synthetic data set, with cell-type- and state-dependent
responses) or point it at an ``.h5ad``::

    python -m scvi_trvae.demo --data kang.h5ad --condition-key condition --cell-type-key cell_type \
        --source control --target stimulated --holdout NK
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import scvi
from scipy.stats import ConstantInputWarning

from . import baselines, metrics, model_selection, pl
from .datasets import holdout_split, synthetic_perturbation

#: ``state_dependence`` of the demo's synthetic data: responses partly shared, partly cell-type specific and
#: scaled by each cell's state, as IFN-beta responses are (``datasets.synthetic_perturbation``).
DEMO_STATE_DEPENDENCE = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="log-normalised .h5ad (default: the synthetic data set)")
    parser.add_argument("--condition-key", default="condition")
    parser.add_argument("--cell-type-key", default="cell_type")
    parser.add_argument("--source", default="control", help="condition to predict from")
    parser.add_argument("--target", default="stimulated", help="condition to predict")
    parser.add_argument("--holdout", default="type_A", help="cell type whose target cells are held out")
    parser.add_argument("--members", type=int, default=3, help="seeds in the ensemble (1: a single model)")
    parser.add_argument("--inner-folds", type=int, default=2, help="inner held-out cell types that choose w")
    parser.add_argument("--epochs", type=int, default=None, help="default: the pipeline's own training length")
    parser.add_argument(
        "--state-dependence", type=float, default=DEMO_STATE_DEPENDENCE,
        help="synthetic data only: how much responses depend on cell type and state (0: one shared response)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("demo_output"))
    return parser


def score_methods(
    predictions: dict[str, ad.AnnData], real_target: ad.AnnData, real_control: ad.AnnData, *, degs, seed: int
) -> dict[str, dict[str, float]]:
    """Score each method's prediction with :func:`~scvi_trvae.metrics.evaluate_prediction` on the same DEGs."""
    with warnings.catch_warnings():  # "no response" has no Δ-Pearson: NaN, shown as n/a, not a warning
        warnings.simplefilter("ignore", ConstantInputWarning)
        return {
            name: metrics.evaluate_prediction(pred, real_target, real_control, degs=degs, seed=seed)
            for name, pred in predictions.items()
        }


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """Format metrics as a markdown table, one row per method."""
    # Δ-Pearson of "no response" is undefined (a zero response): shown as n/a
    cells = [
        [name, *("n/a" if np.isnan(scores[k]) else f"{scores[k]:.3f}" for k in metrics.METRIC_KEYS)]
        for name, scores in rows.items()
    ]
    return metrics.markdown_table(["method", *metrics.METRIC_KEYS], cells)


def run(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Train, predict and score; write the reg-mean plot and the scores to ``args.output_dir``."""
    scvi.settings.seed = args.seed
    if args.data is None:
        adata = synthetic_perturbation(seed=args.seed, state_dependence=args.state_dependence)
    else:
        adata = ad.read_h5ad(args.data)
    keys = {"cell_type_key": args.cell_type_key, "condition_key": args.condition_key}
    task = {"source": args.source, "target": args.target}
    try:
        split = holdout_split(adata, cell_type=args.holdout, **keys, **task)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"Cannot hold out {args.holdout!r} in {args.target!r}: {error}") from error
    train, real_control, real_target = split.train, split.control, split.real_target
    print(
        f"Data: {adata.n_obs} cells x {adata.n_vars} genes; "
        f"holding out {real_target.n_obs} {args.holdout} {args.target} cells."
    )
    start = time.perf_counter()
    ensemble, selection = model_selection.fit_recommended(
        train, n_members=args.members, inner_folds=args.inner_folds, max_epochs=args.epochs, seed=args.seed,
        progress_bar=False, **keys, **task,
    )  # fmt: skip
    weight, deviation = selection.best_shift_weight, selection.best_deviation_weight
    print(
        f"Chose w = {weight:g}, lambda = {deviation:g} by inner leave-one-cell-type-out on the training cells "
        f"({', '.join(selection.inner_cell_types)}); trained {ensemble.n_members} member(s) "
        f"in {time.perf_counter() - start:.0f} s in all."
    )

    recommended = f"trVAE ensemble + shrink (w={weight:g}, lambda={deviation:g})"
    predict = {"cell_type_key": args.cell_type_key, **task}
    predictions = {
        f"trVAE (seed {args.seed})": ensemble.members[0].predict_perturbation(real_control, **task),
        f"trVAE ensemble ({ensemble.n_members} seeds)": ensemble.predict_perturbation(
            real_control, shift_weight=1.0, deviation_weight=1.0, **predict
        ),
        recommended: ensemble.predict_perturbation(real_control, **predict),
        "control + mean shift": baselines.mean_shift(train, cell_type=args.holdout, **keys, **task),
        "no response": baselines.no_response(train, cell_type=args.holdout, **keys, **task),
    }
    degs = metrics.top_degs(real_target, real_control)
    scores = score_methods(predictions, real_target, real_control, degs=degs, seed=args.seed)
    print()
    print(f"{args.holdout}: {args.source} -> {args.target}, predicted vs {real_target.n_obs} real held-out cells")
    print(format_table(scores))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.output_dir / "reg_mean_plot.png"
    pl.reg_mean_plot(
        predictions[recommended], real_target, real_control, degs=degs, show=False, save=plot_path,
        title=f"{recommended}: {args.holdout} {args.target} (held out)",
    )  # fmt: skip
    (args.output_dir / "scores.json").write_text(json.dumps(scores, indent=1))
    print(f"\nWrote {plot_path} and {args.output_dir / 'scores.json'}.")
    return scores


#: Loggers whose INFO lines (seeds set, devices found, AnnData setup transferred) would bury the demo's table.
_CHATTY_LOGGERS = ("scvi", "lightning.pytorch", "lightning.fabric")


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    """Keep scvi-tools' and Lightning's INFO lines and Lightning's warnings out of the demo's output, then restore."""
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    verbosity = scvi.settings.verbosity
    scvi.settings.verbosity = logging.WARNING
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning\.")
            yield
    finally:
        scvi.settings.verbosity = verbosity
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    with _libraries_quiet():
        run(args)


if __name__ == "__main__":
    main()
