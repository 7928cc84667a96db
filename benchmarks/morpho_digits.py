"""Morpho-digits: stroke-thickness transfer to digits never seen thin or thick, scored against pixel truth.

A small stand-in for the trVAE paper's Morpho-MNIST experiment (Lotfollahi et al., arXiv:1910.01791,
Fig. 3), built from the 1,797 8x8 digits scikit-learn ships: each digit is upsampled smoothly (cubic)
to 20x20 and padded to 28x28 ("normal"), then eroded ("thin") and dilated ("thick") with a radius-1
disk. Models train on the normal strokes of every digit but on thin and thick strokes of digits 0-4
only; they then turn the normal digits 5-9 thin and thick. Every output has its true counterpart, so
each image is scored by pixel MSE, SSIM, the error of its stroke thickness (area / skeleton length
of the strokes above 0.5) and whether a digit classifier (logistic regression trained on the
even-numbered images of every style, scored on the odd-numbered ones) still reads the right digit.

Methods: trVAE (``mmd_on="y"``), MMD-CVAE (``mmd_on="z"``) and CVAE (``mmd_on=None``), all
``ImageTRVAE(image_shape=(28, 28))`` with the same network and training; plus trVAE with the other pixel
likelihoods (``--likelihoods``). Every (method, likelihood, seed) result is cached (predictions in an .npz file), so
an interrupted run resumes.

Usage (from the repository root)::

    python benchmarks/morpho_digits.py --threads 1          # full run (3 methods, 3 seeds)
    python benchmarks/morpho_digits.py --likelihoods continuous_bernoulli mse   # + trVAE's other likelihoods
    python benchmarks/morpho_digits.py --quick              # seconds: 300 images, 1 epoch, 1 seed

Outputs: ``benchmarks/results/morpho_digits.json`` and ``.md`` (table) and ``docs/figures/morpho_digits.png``;
with ``--output-dir DIR`` (default ``benchmarks/cache/morpho_quick`` in quick mode) all go under ``DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
METHODS = {"trVAE": "y", "MMD-CVAE": "z", "CVAE": None}
STYLES = ("normal", "thin", "thick")
TARGETS = ("thin", "thick")
SEEN_DIGITS = (0, 1, 2, 3, 4)
METRICS = ("mse", "ssim", "thickness_error", "accuracy")
LOWER_IS_BETTER = {"mse": True, "ssim": False, "thickness_error": True, "accuracy": False}
#: Bump when the data, training or scoring change, so that cached results are recomputed.
CACHE_REVISION = 1


# --------------------------------------------------------------------------- data
def upsample_digit(image: np.ndarray) -> np.ndarray:
    """An 8x8 digit (values 0-16) as a 28x28 image in [0, 1]: cubic upsampling to 20x20, 4-pixel border."""
    upsampled = np.clip(ndimage.zoom(image / 16.0, 2.5, order=3), 0.0, 1.0)
    return np.pad(upsampled, 4)


def stroke_styles(image: np.ndarray) -> dict[str, np.ndarray]:
    """Normal, thin (grey erosion) and thick (grey dilation) versions of one image, radius-1 disk."""
    disk = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)
    return {
        "normal": image,
        "thin": ndimage.grey_erosion(image, footprint=disk),
        "thick": ndimage.grey_dilation(image, footprint=disk),
    }


def morpho_digits(n_images: int | None = None) -> AnnData:
    """Every digit image in the three styles: X = flattened 28x28 pixels; obs digit, style, image_id."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    count = len(digits.images) if n_images is None else n_images
    pixels, rows = [], []
    for image_id in range(count):
        for style, image in stroke_styles(upsample_digit(digits.images[image_id])).items():
            pixels.append(image.ravel())
            rows.append({"digit": int(digits.target[image_id]), "style": style, "image_id": image_id})
    obs = pd.DataFrame(rows)
    obs.index = [f"{row.image_id}_{row.style}" for row in obs.itertuples()]
    obs["style"] = pd.Categorical(obs["style"], categories=list(STYLES))
    return AnnData(X=np.stack(pixels).astype(np.float32), obs=obs)


def training_mask(obs: pd.DataFrame) -> np.ndarray:
    """Normal strokes of every digit, thin and thick strokes of digits 0-4 only."""
    return ((obs["style"] == "normal") | obs["digit"].isin(SEEN_DIGITS)).to_numpy()


# --------------------------------------------------------------------------- scores
def stroke_thickness(image: np.ndarray) -> float:
    """Mean stroke width: area of the pixels above 0.5 over the length of their skeleton."""
    from skimage.morphology import skeletonize

    strokes = image > 0.5
    skeleton_length = skeletonize(strokes).sum()
    return float(strokes.sum() / skeleton_length) if skeleton_length else 0.0


def score_images(predicted: np.ndarray, truth: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per-image pixel MSE, SSIM (data range 1) and absolute stroke-thickness error."""
    from skimage.metrics import structural_similarity

    predicted_images, true_images = predicted.reshape(-1, *shape), truth.reshape(-1, *shape)
    return {
        "mse": ((predicted - truth) ** 2).mean(axis=1),
        "ssim": np.array(
            [structural_similarity(p, t, data_range=1.0) for p, t in zip(predicted_images, true_images, strict=True)]
        ),
        "thickness_error": np.array(
            [abs(stroke_thickness(p) - stroke_thickness(t)) for p, t in zip(predicted_images, true_images, strict=True)]
        ),
    }


def fit_digit_classifier(adata: AnnData):
    """Logistic regression on the even-numbered images of every style (the odd ones are scored)."""
    from sklearn.linear_model import LogisticRegression

    train = (adata.obs["image_id"] % 2 == 0).to_numpy()
    classifier = LogisticRegression(max_iter=300, C=0.1)
    return classifier.fit(adata.X[train], adata.obs["digit"].to_numpy()[train])


# --------------------------------------------------------------------------- models
def train_and_predict(adata: AnnData, mmd_on: str | None, likelihood: str, seed: int, args) -> dict[str, np.ndarray]:
    """Train one model on the training images and turn the normal held-out digits thin and thick."""
    import scvi

    from scvi_trvae import ImageTRVAE

    scvi.settings.seed = seed
    train = adata[training_mask(adata.obs)].copy()
    ImageTRVAE.setup_anndata(train, condition_key="style")
    model = ImageTRVAE(
        train,
        image_shape=(28, 28),
        n_hidden=args.n_hidden,
        n_latent=args.n_latent,
        likelihood=likelihood,
        mmd_on=mmd_on,
    )
    model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        kl_weight=args.kl_weight,
        mmd_weight=args.mmd_weight,
        plan_kwargs={"lr": args.lr},
        enable_progress_bar=False,
    )
    sources = adata[(adata.obs["style"] == "normal") & ~adata.obs["digit"].isin(SEEN_DIGITS)].copy()
    return {
        target: model.predict_perturbation(sources, source="normal", target=target, mode=args.mode).X
        for target in TARGETS
    }


def run_key(method: str, likelihood: str, seed: int, args) -> str:
    settings = {
        "revision": CACHE_REVISION, "method": method, "likelihood": likelihood, "seed": seed, "n_images": args.n_images,
        **{name: getattr(args, name) for name in ("epochs", "batch_size", "kl_weight", "mmd_weight", "lr", "mode",
                                                  "n_hidden", "n_latent")},
    }  # fmt: skip
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"{method}_{likelihood}_seed{seed}_{digest}"


def evaluate_run(adata: AnnData, classifier, method: str, likelihood: str, seed: int, args) -> dict:
    """Scores of one (method, likelihood, seed), from the cache when present; predictions kept for the figure."""
    cache = Path(args.cache_dir) / f"{run_key(method, likelihood, seed, args)}.npz"
    if cache.exists():
        stored = np.load(cache, allow_pickle=False)
        predictions, seconds = {target: stored[target] for target in TARGETS}, float(stored["seconds"])
        cpu_seconds = float(stored["cpu_seconds"]) if "cpu_seconds" in stored else None  # older cache files
    else:
        start, cpu_start = time.perf_counter(), time.process_time()
        predictions = train_and_predict(adata, METHODS[method], likelihood, seed, args)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        cache.parent.mkdir(parents=True, exist_ok=True)
        compact = {target: p.astype(np.float16) for target, p in predictions.items()}
        np.savez_compressed(cache, seconds=seconds, cpu_seconds=cpu_seconds, **compact)
        predictions = {target: p.astype(np.float16) for target, p in predictions.items()}
    held_out = adata.obs[~adata.obs["digit"].isin(SEEN_DIGITS)]
    rows = []
    for target in TARGETS:
        truth_obs = held_out[held_out["style"] == target]
        predicted = predictions[target].astype(np.float32)
        scores = score_images(predicted, adata[truth_obs.index].X, (28, 28))
        scored = (truth_obs["image_id"] % 2 == 1).to_numpy()
        correct = classifier.predict(predicted[scored]) == truth_obs["digit"].to_numpy()[scored]
        rows.append(
            {
                "method": method, "likelihood": likelihood, "seed": seed, "direction": f"normal→{target}",
                **{name: float(values.mean()) for name, values in scores.items()},
                "accuracy": float(correct.mean()), "train_seconds": round(seconds, 1),
                "train_cpu_seconds": None if cpu_seconds is None else round(cpu_seconds, 1),
            }
        )  # fmt: skip
    return {"rows": rows, "predictions": predictions}


# --------------------------------------------------------------------------- report
def summarise(rows: list[dict]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every metric, per method, likelihood and direction."""
    frame = pd.DataFrame(rows)
    grouped = frame.groupby(["direction", "method", "likelihood"], sort=False)[list(METRICS)]
    summary = grouped.mean().join(grouped.std(ddof=0), rsuffix="_sd").join(grouped.size().rename("n_seeds"))
    return summary.reset_index()


def paired_differences(rows: list[dict], likelihood: str) -> list[dict]:
    """trVAE minus each other method, seed by seed (same seed, same data): mean, sd and trVAE's wins."""
    frame = pd.DataFrame(rows)
    frame = frame[frame["likelihood"] == likelihood].set_index(["direction", "seed", "method"])[list(METRICS)]
    if "trVAE" not in frame.index.get_level_values("method"):
        return []
    trvae = frame.xs("trVAE", level="method")
    paired = []
    for method in sorted(set(frame.index.get_level_values("method")) - {"trVAE"}):
        difference = (trvae - frame.xs(method, level="method")).dropna()
        for direction, per_seed in difference.groupby(level="direction", sort=False):
            for metric in METRICS:
                values = per_seed[metric].to_numpy()
                better = values < 0 if LOWER_IS_BETTER[metric] else values > 0
                paired.append(
                    {"direction": direction, "versus": method, "metric": metric, "mean": float(values.mean()),
                     "sd": float(values.std()), "trvae_wins": int(better.sum()), "n_seeds": len(values)}
                )  # fmt: skip
    return paired


def paired_table(paired: list[dict]) -> str:
    """Markdown table of :func:`paired_differences`."""
    from scvi_trvae.metrics import markdown_table

    header = ["direction", "trVAE minus", "metric", "mean ± sd over seeds", "seeds trVAE better"]
    return markdown_table(
        header,
        [
            [row["direction"], row["versus"], row["metric"], f"{row['mean']:+.4f} ± {row['sd']:.4f}",
             f"{row['trvae_wins']}/{row['n_seeds']}"]
            for row in paired
        ],
    )  # fmt: skip


def results_table(summary: pd.DataFrame, reference: dict[str, dict[str, float]]) -> str:
    """Markdown table of the seed means ± standard deviations, with the unchanged input's scores."""
    from scvi_trvae.metrics import markdown_table

    header = ["direction", "method", "likelihood", "seeds", "pixel MSE ↓", "SSIM ↑", "thickness error ↓"]
    rows = [
        [row.direction, row.method, row.likelihood, str(row.n_seeds)]
        + [f"{getattr(row, m):.4f} ± {getattr(row, m + '_sd'):.4f}" for m in METRICS]
        for row in summary.itertuples()
    ]
    rows += [
        [direction, "input (normal digit, unchanged)", "–", "–", *(f"{scores[m]:.4f}" for m in METRICS)]
        for direction, scores in reference.items()
    ]
    return markdown_table([*header, "classifier accuracy ↑"], rows)


def identity_reference(adata: AnnData, classifier) -> dict[str, dict[str, float]]:
    """Scores of returning the normal input unchanged (the floor every model must beat), and truth accuracy."""
    held_out = adata.obs[~adata.obs["digit"].isin(SEEN_DIGITS)]
    sources = adata[held_out.index[held_out["style"] == "normal"]].X
    reference = {}
    for target in TARGETS:
        truth_obs = held_out[held_out["style"] == target]
        scores = score_images(sources, adata[truth_obs.index].X, (28, 28))
        scored = (truth_obs["image_id"] % 2 == 1).to_numpy()
        correct = classifier.predict(sources[scored]) == truth_obs["digit"].to_numpy()[scored]
        reference[f"normal→{target}"] = {name: float(v.mean()) for name, v in scores.items()} | {
            "accuracy": float(correct.mean()),
            "truth_accuracy": float(classifier.score(adata[truth_obs.index[scored]].X, truth_obs["digit"][scored])),
        }
    return reference


def figure_grid(adata: AnnData, predictions: dict[str, dict[str, np.ndarray]], path: Path, n_examples: int = 5):
    """Paper's Fig. 3 layout: per direction, rows input, each model's output, truth; one column per digit 5-9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held_out = adata.obs[~adata.obs["digit"].isin(SEEN_DIGITS)]
    sources = held_out[held_out["style"] == "normal"]
    columns = [int(np.flatnonzero(sources["digit"].to_numpy() == d)[0]) for d in sorted(set(sources["digit"]))]
    columns = columns[:n_examples]
    row_labels = ["input", *predictions, "truth"]
    fig, axes = plt.subplots(
        len(row_labels), 2 * len(columns), figsize=(2 * len(columns) * 0.9, len(row_labels) * 0.95), squeeze=False
    )
    for block, target in enumerate(TARGETS):
        truth = adata[held_out.index[held_out["style"] == target]].X
        for row, label in enumerate(row_labels):
            images = {"input": adata[sources.index].X, "truth": truth}.get(label)
            images = predictions[label][target] if images is None else images
            for column, position in enumerate(columns):
                axis = axes[row, block * len(columns) + column]
                axis.imshow(np.asarray(images[position], dtype=np.float32).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if column == 0 and block == 0:
                    axis.set_ylabel(label, fontsize=8)
                if row == 0 and column == len(columns) // 2:
                    axis.set_title(f"normal → {target} (digits never seen {target})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 images, 1 epoch, 1 seed (seconds)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--kl-weight", type=float, default=0.1)
    parser.add_argument("--mmd-weight", type=float, default=100.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-hidden", type=int, default=128)
    parser.add_argument("--n-latent", type=int, default=20)
    parser.add_argument("--mode", choices=["mean", "counterfactual"], default="mean")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--likelihood", default="bernoulli", help="pixel likelihood of the three methods")
    parser.add_argument(
        "--likelihoods", nargs="*", default=[], help="extra trVAE likelihoods to compare (continuous_bernoulli mse)"
    )
    parser.add_argument("--n-images", type=int, default=None, help="use the first N digit images (default all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.n_images, args.likelihoods = 1, 1, args.n_images or 300, []
    output = Path(args.output_dir) if args.output_dir else None
    if output is None and args.quick:
        output = REPO / "benchmarks" / "cache" / "morpho_quick"
    args.results_dir = output or REPO / "benchmarks" / "results"
    args.figure_path = (output or REPO / "docs" / "figures") / "morpho_digits.png"
    args.cache_dir = args.cache_dir or str((output or REPO / "benchmarks" / "cache") / "morpho_digits")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    adata = morpho_digits(args.n_images)
    classifier = fit_digit_classifier(adata)
    runs = [(method, args.likelihood) for method in args.methods]
    runs += [("trVAE", likelihood) for likelihood in args.likelihoods if likelihood != args.likelihood]
    rows, figure_predictions = [], {}
    for seed in range(args.seeds):
        for method, likelihood in runs:
            result = evaluate_run(adata, classifier, method, likelihood, seed, args)
            rows += result["rows"]
            if seed == 0 and likelihood == args.likelihood:
                figure_predictions[method] = result["predictions"]
            times = result["rows"][0]
            wall, cpu = times["train_seconds"], times["train_cpu_seconds"]
            print(f"seed {seed} {method} ({likelihood}): {wall} s, CPU {cpu} s", flush=True)
    summary = summarise(rows)
    reference = identity_reference(adata, classifier)
    paired = paired_differences(rows, args.likelihood)
    table = results_table(summary, reference) + "\n\n" + paired_table(paired)
    print(table)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("results_dir", "figure_path", "cache_dir")}
    payload = {
        "settings": settings, "rows": rows, "summary": summary.to_dict("records"), "paired": paired,
        "reference": reference,
    }  # fmt: skip
    (args.results_dir / "morpho_digits.json").write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    (args.results_dir / "morpho_digits.md").write_text(table + "\n")
    figure_grid(adata, figure_predictions, args.figure_path)
    return payload


if __name__ == "__main__":
    main()
