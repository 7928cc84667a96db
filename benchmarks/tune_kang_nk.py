"""Tune trVAE's defaults on the Kang NK split only (the other cell types are the test).

Trains on every Kang PBMC except stimulated NK cells, predicts them from control NK cells in both
prediction modes and scores them. The split is the benchmark's own (``oos.splits.make_split``: genes
selected on the training cells, DEGs of real stimulated vs control NK), so with ``--genes 2000`` (the
default) the numbers are directly comparable with the Kang NK rows of ``docs/benchmarks.md``;
``--genes all`` keeps all 6,998 genes. One configuration per call; each call appends a JSON line to
``--output`` and prints it. ``--table`` prints every stored run as a markdown table instead.

    python benchmarks/tune_kang_nk.py --kl 0.1 --mmd 100 --seed 0
    python benchmarks/tune_kang_nk.py --table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from oos.datasets import DATASETS, load_dataset
from oos.paths import DATA_DIR, RESULTS_DIR
from oos.registry import AUTO_EPOCHS
from oos.splits import make_split

from scvi_trvae import TRVAE, metrics

RESULTS = RESULTS_DIR / "tune_kang_nk.jsonl"
TABLE_ARGS = ("genes", "epochs", "kl", "mmd", "mmd_on", "hidden", "latent", "layers", "dropout", "lr", "bs", "seed")
TABLE_METRICS = metrics.METRIC_KEYS
#: Settings of runs stored before the option existed.
OLD_RUN_DEFAULTS = {"genes": "all"}


def _genes(value: str) -> int | str:
    return value if value == "all" else int(value)


def _epochs(value: str) -> int | str:
    return value if value == AUTO_EPOCHS else int(value)


def runs_table(path: Path) -> str:
    """Every stored run (one row per run and prediction mode) as a markdown table."""
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for run in runs:
        settings = {**OLD_RUN_DEFAULTS, **run["args"]}
        for mode in ("counterfactual", "mean"):
            if mode not in run:
                continue
            cells = [str(settings.get(name, "")) for name in TABLE_ARGS]
            cells += [mode, *(f"{run[mode][name]:.3f}" for name in TABLE_METRICS)]
            rows.append(cells)
    return metrics.markdown_table([*TABLE_ARGS, "mode", *TABLE_METRICS], rows)


def tune_once(args: argparse.Namespace) -> dict[str, Any]:
    """Train one configuration on the Kang NK split and score both prediction modes."""
    import scvi

    spec = DATASETS["kang"]
    adata = load_dataset(spec, args.data_dir)
    n_top_genes = None if args.genes == "all" else args.genes
    split = make_split(adata, "kang", spec, "NK", "stimulated", n_top_genes)
    if args.threads > 0:  # after scanpy's gene selection, which resets torch's thread count
        torch.set_num_threads(args.threads)
    scvi.settings.seed = args.seed
    train = split.train.copy()
    TRVAE.setup_anndata(train, condition_key=spec.condition_key)
    model = TRVAE(
        train, n_hidden=args.hidden, n_latent=args.latent, n_layers=args.layers, dropout_rate=args.dropout,
        mmd_on=None if args.mmd_on == "none" else args.mmd_on,
    )  # fmt: skip
    start = time.perf_counter()
    model.train(
        max_epochs=None if args.epochs == AUTO_EPOCHS else args.epochs, kl_weight=args.kl, mmd_weight=args.mmd,
        batch_size=args.bs, plan_kwargs={"lr": args.lr}, accelerator="cpu", enable_progress_bar=False,
    )  # fmt: skip
    result: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items() if k not in ("output", "data_dir", "table", "threads")},
        "n_genes": int(train.n_vars),
        "epochs_trained": int(model.history["reconstruction_loss_train"].shape[0]),
        "train_s": round(time.perf_counter() - start, 1),
        "mmd_train_last": float(model.history["mmd_train"].iloc[-1, 0]),
        "recon_last": float(model.history["reconstruction_loss_train"].iloc[-1, 0]),
    }
    for mode in ("counterfactual", "mean"):
        pred = model.predict_perturbation(split.control.copy(), source=spec.control, target="stimulated", mode=mode)
        scores = metrics.evaluate_prediction(pred, split.real_target, split.control, degs=split.degs, seed=0)
        result[mode] = {k: round(float(scores[k]), 4) for k in TABLE_METRICS}
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line: one configuration (model settings default to TRVAE's), or ``--table``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genes", type=_genes, default=2000, help="number of HVGs, or 'all' (default 2000)")
    parser.add_argument("--epochs", type=_epochs, default=AUTO_EPOCHS, help="'auto' (the model's default) or N")
    parser.add_argument("--kl", type=float, default=0.1)
    parser.add_argument("--mmd", type=float, default=100.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--latent", type=int, default=20)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--mmd-on", default="y", choices=["y", "z", "none"])
    parser.add_argument("--bs", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the stored runs as a markdown table and exit")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.table:
        print(runs_table(args.output))
        return
    line = json.dumps(tune_once(args))
    print(line)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
