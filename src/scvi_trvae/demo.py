r"""Demo: hold out one (cell type, condition) pair, train trVAE without it, predict it and score it.

Run ``python -m scvi_trvae.demo`` (the package's synthetic data set) or point it at an ``.h5ad``::

    python -m scvi_trvae.demo --data kang.h5ad --condition-key condition --cell-type-key cell_type \
        --source control --target stimulated --holdout NK
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import scvi

from . import baselines, metrics, pl
from ._model import TRVAE
from .datasets import holdout_split, synthetic_perturbation


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="log-normalised .h5ad (default: the synthetic data set)")
    parser.add_argument("--condition-key", default="condition")
    parser.add_argument("--cell-type-key", default="cell_type")
    parser.add_argument("--source", default="control", help="condition to predict from")
    parser.add_argument("--target", default="stimulated", help="condition to predict")
    parser.add_argument("--holdout", default="type_A", help="cell type whose target cells are held out")
    parser.add_argument("--epochs", type=int, default=None, help="default: TRVAE.train's own default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=Path("demo_output"))
    return parser


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
    adata = synthetic_perturbation(seed=args.seed) if args.data is None else ad.read_h5ad(args.data)
    keys = {"cell_type_key": args.cell_type_key, "condition_key": args.condition_key, "cell_type": args.holdout}
    try:
        split = holdout_split(adata, source=args.source, target=args.target, **keys)
    except (KeyError, ValueError) as error:
        raise SystemExit(f"Cannot hold out {args.holdout!r} in {args.target!r}: {error}") from error
    train, real_control, real_target = split.train, split.control, split.real_target
    n_held_out = real_target.n_obs
    print(
        f"Data: {adata.n_obs} cells x {adata.n_vars} genes; "
        f"holding out {n_held_out} {args.holdout} {args.target} cells."
    )

    TRVAE.setup_anndata(train, condition_key=args.condition_key)
    model = TRVAE(train)
    start = time.perf_counter()
    model.train(max_epochs=args.epochs)
    print(f"Trained {len(model.history['train_loss'])} epochs in {time.perf_counter() - start:.0f} s.")

    predictions = {
        "trVAE": model.predict_perturbation(real_control, source=args.source, target=args.target),
        "control + mean shift": baselines.mean_shift(train, source=args.source, target=args.target, **keys),
        "no response": baselines.no_response(train, source=args.source, target=args.target, **keys),
    }
    degs = metrics.top_degs(real_target, real_control)
    scores = {
        name: metrics.evaluate_prediction(pred, real_target, real_control, degs=degs, seed=args.seed)
        for name, pred in predictions.items()
    }
    print()
    print(f"{args.holdout}: {args.source} -> {args.target}, predicted vs {n_held_out} real held-out cells")
    print(format_table(scores))

    args.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = args.output_dir / "reg_mean_plot.png"
    pl.reg_mean_plot(
        predictions["trVAE"], real_target, real_control, degs=degs, show=False, save=plot_path,
        title=f"trVAE: {args.holdout} {args.target} (held out)",
    )  # fmt: skip
    (args.output_dir / "scores.json").write_text(json.dumps(scores, indent=1))
    print(f"\nWrote {plot_path} and {args.output_dir / 'scores.json'}.")
    return scores


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    run(_parser().parse_args(argv))


if __name__ == "__main__":
    main()
