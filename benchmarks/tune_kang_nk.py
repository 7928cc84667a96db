"""Tune trVAE's defaults on the Kang NK split only (the other cell types are the test).

Trains on every Kang PBMC except stimulated NK cells, predicts them from control NK cells in both
prediction modes and scores them with the project's independent scorer (``../shared/bench/score.py``).
One configuration per call; each call appends a JSON line to ``--output`` and prints it.

    python benchmarks/tune_kang_nk.py --epochs 80 --kl 0.1 --mmd 100 --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import anndata as ad
import scvi

from scvi_trvae import TRVAE

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=80)
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
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "tune_kang_nk.jsonl")
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("shared_score", SHARED / "bench" / "score.py")
    scorer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scorer)
    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(SHARED / "data" / "kang2018_pbmc_ifnb_lognorm.h5ad")
    adata.X = adata.X.toarray()
    held_out = ((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "stimulated")).to_numpy()
    train = adata[~held_out].copy()
    TRVAE.setup_anndata(train, condition_key="condition")
    model = TRVAE(
        train, n_hidden=args.hidden, n_latent=args.latent, n_layers=args.layers, dropout_rate=args.dropout,
        mmd_on=None if args.mmd_on == "none" else args.mmd_on,
    )  # fmt: skip
    start = time.perf_counter()
    model.train(
        max_epochs=args.epochs, kl_weight=args.kl, mmd_weight=args.mmd, batch_size=args.bs,
        plan_kwargs={"lr": args.lr}, enable_progress_bar=False,
    )  # fmt: skip
    result = {
        "args": {k: v for k, v in vars(args).items() if k != "output"},
        "train_s": round(time.perf_counter() - start, 1),
        "mmd_train_last": float(model.history["mmd_train"].iloc[-1, 0]),
        "recon_last": float(model.history["reconstruction_loss_train"].iloc[-1, 0]),
    }
    control = adata[((adata.obs["cell_type"] == "NK") & (adata.obs["condition"] == "control")).to_numpy()]
    real = adata[held_out]
    for mode in ("counterfactual", "mean"):
        pred = model.predict_perturbation(control.copy(), source="control", target="stimulated", mode=mode)
        scores = scorer.score(control.X, real.X, pred.X, adata.var_names)
        result[mode] = {k: round(v, 4) for k, v in scores.items() if isinstance(v, float)}
    line = json.dumps(result)
    print(line)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("a") as handle:
        handle.write(line + "\n")


if __name__ == "__main__":
    main()
