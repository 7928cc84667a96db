"""How informative is each RBF bandwidth at the real scale of the MMD layer?

Trains trVAE briefly, takes condition-balanced minibatches of its MMD layer ``y`` and reports, for
each bandwidth of the legacy fixed list (1e-6..1e6) and of the adaptive list, the fraction of
off-diagonal kernel values that are informative (between 0.01 and 0.99) and the share of the MMD
gradient each bandwidth would carry. A bandwidth whose kernel values are all ~0 or ~1 is inert.

    python benchmarks/mmd_bandwidths.py [--data ../shared/data/kang2018_pbmc_ifnb_lognorm.h5ad] [--epochs 30]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import anndata as ad
import numpy as np
import scvi
import torch

from scvi_trvae import TRVAE
from scvi_trvae._mmd import LEGACY_BANDWIDTHS, pairwise_squared_distances, resolve_bandwidths
from scvi_trvae.datasets import synthetic_perturbation

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang2018_pbmc_ifnb_lognorm.h5ad"


def informative_fractions(y: torch.Tensor, bandwidths: torch.Tensor) -> np.ndarray:
    """Fraction of off-diagonal kernel values in (0.01, 0.99) for each bandwidth."""
    squared = pairwise_squared_distances(y)
    off_diagonal = squared[~torch.eye(len(y), dtype=torch.bool)]
    kernel = torch.exp(-off_diagonal[:, None] / bandwidths)
    return ((kernel > 0.01) & (kernel < 0.99)).double().mean(0).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "mmd_bandwidths.json")
    args = parser.parse_args()
    scvi.settings.seed = 0
    adata = ad.read_h5ad(args.data) if args.data.exists() else synthetic_perturbation()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    model.train(max_epochs=args.epochs, enable_progress_bar=False)

    rng = np.random.default_rng(0)
    codes = adata.obs["condition"].cat.codes.to_numpy()
    batches = [
        np.concatenate([rng.choice(np.flatnonzero(codes == c), 64, replace=False) for c in (0, 1)]) for _ in range(10)
    ]
    y_batches = [torch.as_tensor(model.get_mmd_representation(indices=b), dtype=torch.float64) for b in batches]
    mean_squared = float(np.mean([pairwise_squared_distances(y).sum() / (len(y) * (len(y) - 1)) for y in y_batches]))

    rows = {}
    for name, spec in (("legacy", LEGACY_BANDWIDTHS), ("adaptive", "adaptive")):
        fractions = []
        for y in y_batches:
            bandwidths = resolve_bandwidths(pairwise_squared_distances(y), spec)
            fractions.append(informative_fractions(y, bandwidths))
        values = resolve_bandwidths(pairwise_squared_distances(y_batches[0]), spec).numpy()
        mean_fractions = np.mean(fractions, axis=0)
        rows[name] = {
            "bandwidths": [float(v) for v in values],
            "informative_fraction": [float(f) for f in mean_fractions],
            "n_informative_bandwidths": int((mean_fractions > 0.05).sum()),
            "n_bandwidths": len(values),
        }
    result = {"data": str(args.data if args.data.exists() else "synthetic"), "epochs": args.epochs,
              "mean_squared_distance_y": mean_squared, "kernels": rows}  # fmt: skip
    print(f"MMD layer y: mean squared distance between cells = {mean_squared:.3g}\n")
    print("| kernel | bandwidth | informative fraction |\n|---|---|---|")
    for name, row in rows.items():
        for h, f in zip(row["bandwidths"], row["informative_fraction"], strict=True):
            print(f"| {name} | {h:.3g} | {f:.3f} |")
    for name, row in rows.items():
        print(
            f"{name}: {row['n_informative_bandwidths']} of {row['n_bandwidths']} bandwidths informative (>5% of pairs)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
