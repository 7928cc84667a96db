"""How informative is each RBF bandwidth at the real scale of the MMD layer?

Trains trVAE briefly, takes condition-balanced minibatches of its MMD layer ``y`` and reports, for
each bandwidth of the legacy fixed list (1e-6..1e6) and of the adaptive list, the fraction of
off-diagonal kernel values that are informative (between 0.01 and 0.99) and the share of the MMD
gradient each bandwidth carries: the norm of the gradient (with respect to ``y``) of the MMD under
that bandwidth alone, over the sum of these norms for all bandwidths of the list. A bandwidth whose
kernel values are all ~0 or ~1 is inert and carries no gradient.

    python benchmarks/mmd_bandwidths.py [--data ../shared/data/kang2018_pbmc_ifnb_lognorm.h5ad] [--epochs 30]

Without the data file (or with ``--quick``: 1 epoch) it uses the package's synthetic data set.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scvi
import torch
from oos.paths import DATA_DIR, RESULTS_DIR

from scvi_trvae import TRVAE
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.model import LEGACY_BANDWIDTHS, condition_mmd, pairwise_squared_distances, resolve_bandwidths

DEFAULT_DATA = DATA_DIR / "kang2018_pbmc_ifnb_lognorm.h5ad"


def informative_fractions(y: torch.Tensor, bandwidths: torch.Tensor) -> np.ndarray:
    """Fraction of off-diagonal kernel values in (0.01, 0.99) for each bandwidth."""
    squared = pairwise_squared_distances(y)
    off_diagonal = squared[~torch.eye(len(y), dtype=torch.bool)]
    kernel = torch.exp(-off_diagonal[:, None] / bandwidths)
    return ((kernel > 0.01) & (kernel < 0.99)).double().mean(0).numpy()


def gradient_shares(y: torch.Tensor, codes: torch.Tensor, bandwidths: torch.Tensor) -> np.ndarray:
    """Each bandwidth's share of the MMD gradient: ``|d MMD_s / d y|`` over its sum over the bandwidths."""
    norms = []
    for bandwidth in bandwidths.tolist():
        cells = y.detach().clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(condition_mmd(cells, codes, 2, bandwidths=[bandwidth]), cells)
        norms.append(float(gradient.norm()))
    norms = np.asarray(norms)
    return norms / norms.sum() if norms.sum() > 0 else norms


def kernel_summary(y_batches: list[torch.Tensor], codes: torch.Tensor, spec: Any) -> dict[str, Any]:
    """Bandwidths (of the first batch), informative fractions and gradient shares (batch means) of a list."""
    fractions, shares = [], []
    for y in y_batches:
        bandwidths = resolve_bandwidths(pairwise_squared_distances(y), spec)
        fractions.append(informative_fractions(y, bandwidths))
        shares.append(gradient_shares(y, codes, bandwidths))
    values = resolve_bandwidths(pairwise_squared_distances(y_batches[0]), spec).numpy()
    mean_fractions = np.mean(fractions, axis=0)
    return {
        "bandwidths": [float(v) for v in values],
        "informative_fraction": [float(f) for f in mean_fractions],
        "gradient_share": [float(s) for s in np.mean(shares, axis=0)],
        "n_informative_bandwidths": int((mean_fractions > 0.05).sum()),
        "n_bandwidths": len(values),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="synthetic data, 1 epoch (a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "mmd_bandwidths.json")
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    use_data = args.data.exists() and not args.quick
    epochs = 1 if args.quick else args.epochs
    scvi.settings.seed = 0
    adata = ad.read_h5ad(args.data) if use_data else synthetic_perturbation()
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata)
    model.train(max_epochs=epochs, enable_progress_bar=False)

    rng = np.random.default_rng(0)
    conditions = adata.obs["condition"].cat.codes.to_numpy()
    batches = [
        np.concatenate([rng.choice(np.flatnonzero(conditions == c), 64, replace=False) for c in (0, 1)])
        for _ in range(10)
    ]
    y_batches = [torch.as_tensor(model.get_mmd_representation(indices=b), dtype=torch.float64) for b in batches]
    codes = torch.as_tensor(np.repeat([0, 1], 64))
    mean_squared = float(np.mean([pairwise_squared_distances(y).sum() / (len(y) * (len(y) - 1)) for y in y_batches]))
    rows = {
        name: kernel_summary(y_batches, codes, spec)
        for name, spec in (("legacy", LEGACY_BANDWIDTHS), ("adaptive", "adaptive"))
    }
    result = {"data": str(args.data if use_data else "synthetic"), "epochs": epochs,
              "mean_squared_distance_y": mean_squared, "kernels": rows}  # fmt: skip
    print(f"MMD layer y: mean squared distance between cells = {mean_squared:.3g}\n")
    print("| kernel | bandwidth | informative fraction | gradient share |\n|---|---|---|---|")
    for name, row in rows.items():
        for h, f, s in zip(row["bandwidths"], row["informative_fraction"], row["gradient_share"], strict=True):
            print(f"| {name} | {h:.3g} | {f:.3f} | {s:.3f} |")
    for name, row in rows.items():
        print(
            f"{name}: {row['n_informative_bandwidths']} of {row['n_bandwidths']} bandwidths informative (>5% of pairs)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.output}")
    return result


if __name__ == "__main__":
    main()
