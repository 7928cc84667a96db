"""Score kept predictions with ``cell-eval`` (0.8.2, its own environment: ``make celleval-venv``).

The benchmark keeps the seed-0 prediction of each figure split (Kang NK, Haber Tuft) as ``.npy`` beside the cached
result. For one split this script builds, per method, cell-eval's two AnnData (``obs['target']``: the control
condition for the held-out type's control cells, the target condition for the real or the predicted cells), runs
``MetricsEvaluator(...).compute(profile="full")`` in ``.venv-celleval`` and its noise ceiling
(``compute_ceiling``) once, and writes the aggregated metrics to ``benchmarks/results/peers_celleval.json``.
With one perturbation per split, cell-eval's discrimination score ranks a prediction among one perturbation only
and is uninformative; predictions are clipped at 0 (cell-eval refuses negative values, which Gaussian decoders
give); the DE metrics (overlap, direction, Spearman of log-fold changes) and ``pearson_delta`` are. A prediction
cell-eval refuses outright (values above its log1p ceiling of 15) is recorded as ``{"refused": [reason]}``.

Other splits' predictions are kept by a benchmark run with ``--keep-predictions``; ``--cache-dir`` may name several
caches (the first holding a method's prediction wins), e.g. the peers' and a re-prediction of the pipeline from its
cached ensembles.

Usage::

    .venv/bin/python benchmarks/peers/celleval_score.py --dataset kang --cell-type NK CD4T \
        --cache-dir benchmarks/cache/full benchmarks/cache/celleval_preds

Without ``--cell-type`` every split of the data set is scored (each held-out type with each target condition, the
benchmark's splits). A split scored again keeps the earlier scores of methods whose prediction is not found now.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SCORE_FLAG = "--score-dir"


def score(directory: Path) -> None:
    """In the cell-eval environment: score every ``pred_*.h5ad`` against ``real.h5ad`` and the ceiling."""
    import anndata as ad
    from cell_eval import MetricsEvaluator

    options = json.loads((directory / "options.json").read_text())
    real = ad.read_h5ad(directory / "real.h5ad")
    out: dict[str, dict] = {}
    kwargs = {"control_pert": options["control"], "pert_col": "target", "num_threads": 1}
    for path in sorted(directory.glob("pred_*.h5ad")):
        method = path.stem.removeprefix("pred_")
        try:
            evaluator = MetricsEvaluator(ad.read_h5ad(path), real, outdir=str(directory / path.stem), **kwargs)
        except ValueError as error:  # e.g. "Invalid scale": a prediction above cell-eval's log1p ceiling of 15
            out[method] = {"refused": [str(error).split(". ")[0]]}
            continue
        _, agg = evaluator.compute(profile="full", write_csv=False)
        out[method] = agg.to_pandas().to_dict(orient="list")
    ceiling = MetricsEvaluator(None, real, outdir=str(directory / "ceiling"), **kwargs)
    _, agg = ceiling.compute_ceiling(profile="full", write_csv=False)
    out["noise ceiling"] = agg.to_pandas().to_dict(orient="list")
    (directory / "scores.json").write_text(json.dumps(out, default=str))


def _write_inputs(split, predictions: dict[str, Path], directory: Path) -> None:
    """``real.h5ad`` and one ``pred_METHOD.h5ad`` per kept prediction (the control cells in both)."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from oos.cache import slug
    from oos.expression import dense

    def pair(x_target: np.ndarray) -> ad.AnnData:
        x = np.vstack([dense(split.control.X), x_target]).astype(np.float32)
        labels = [split.source] * split.control.n_obs + [split.target] * len(x_target)
        return ad.AnnData(X=x, obs=pd.DataFrame({"target": labels}, index=[str(i) for i in range(len(x))]),
                          var=pd.DataFrame(index=split.train.var_names))  # fmt: skip

    pair(dense(split.real_target.X)).write_h5ad(directory / "real.h5ad")
    for method, path in predictions.items():
        # cell-eval refuses negative values ("Invalid scale"); decoder means of Gaussian models dip below 0
        pair(np.clip(np.load(path), 0.0, None)).write_h5ad(directory / f"pred_{slug(method)}.h5ad")
    (directory / "options.json").write_text(json.dumps({"control": split.source}))


def merge_scores(payload: dict, key: str, n_genes: int, scores: dict) -> None:
    """Put one split's new ``scores`` into ``payload``: they replace the same methods' earlier scores; the others'
    are kept (their predictions may be in a cache not given this time), unless the split's genes changed."""
    previous = payload.get(key, {})
    earlier = previous.get("scores", {}) if previous.get("n_genes") == n_genes else {}
    payload[key] = {"n_genes": n_genes, "scores": {**earlier, **scores}}


def main(argv: list[str] | None = None) -> None:
    """Per split: build the inputs (main environment), score them in the cell-eval environment, add them to the JSON."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from oos import paths
    from oos.cache import prediction_path
    from oos.datasets import DATASETS, load_dataset
    from oos.methods import METHODS
    from oos.splits import held_out_pairs, make_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="kang")
    parser.add_argument("--cell-type", nargs="+", help="held-out cell types (default: all of the data set's splits)")
    parser.add_argument(
        "--cache-dir", nargs="+", type=Path, default=[paths.CACHE_DIR / "full"],
        help="caches holding the kept predictions (.npy); the first with a method's prediction wins",
    )  # fmt: skip
    parser.add_argument(
        "--methods", nargs="+", choices=list(METHODS),
        help="score only these methods' predictions (default: every kept one); the others' earlier scores are kept",
    )  # fmt: skip
    parser.add_argument("--python", type=Path, default=paths.REPO / ".venv-celleval" / "bin" / "python")
    parser.add_argument("--output", type=Path, default=paths.RESULTS_DIR / "peers_celleval.json")
    args = parser.parse_args(argv)
    spec = DATASETS[args.dataset]
    adata = load_dataset(spec, paths.DATA_DIR)
    for cell_type, target in held_out_pairs(adata, args.dataset, spec, args.cell_type, min_cells=3):
        split = make_split(adata, args.dataset, spec, cell_type, target, spec.n_top_genes)
        predictions = {}
        for method in args.methods or METHODS:
            kept = (prediction_path(d, split, method) for d in args.cache_dir)
            found = next((path for path in kept if path.exists()), None)
            if found is not None:
                predictions[method] = found
        with tempfile.TemporaryDirectory() as tmp:
            _write_inputs(split, predictions, Path(tmp))
            subprocess.run([str(args.python), __file__, SCORE_FLAG, tmp], check=True, cwd=tmp)
            scores = json.loads((Path(tmp) / "scores.json").read_text())
        payload = json.loads(args.output.read_text()) if args.output.exists() else {}
        key = f"{args.dataset}/{cell_type}/{target}"
        merge_scores(payload, key, split.train.n_vars, scores)
        args.output.write_text(json.dumps(payload, indent=1) + "\n")
        print(f"{key}: scored {len(predictions)} predictions", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == SCORE_FLAG:
        score(Path(sys.argv[2]))
    else:
        main()
