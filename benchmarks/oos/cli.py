"""Out-of-sample perturbation prediction: trVAE against the baselines of the trVAE paper and simple ones.

Reproduces the trVAE paper's out-of-sample experiments (Lotfollahi et al., arXiv:1910.01791) on the
data in ``../shared/data``: leave one (cell type, perturbed condition) out, train on everything else,
predict the held-out cells from the same type's control cells, and score with
:func:`scvi_trvae.metrics.evaluate_prediction` (DEGs of real target vs real control, computed once per
split and shared by all methods). Held-out cells take no part in training, gene selection or any
statistic a method fits.

Usage (from the repository root)::

    .venv/bin/python benchmarks/out_of_sample.py                 # everything (hours)
    .venv/bin/python benchmarks/out_of_sample.py --quick         # Kang NK, 500 genes, 1 seed, 3 epochs
    .venv/bin/python benchmarks/out_of_sample.py --datasets kang haber_hpoly --methods trVAE scGen \\
        --cell-types NK Tuft --seeds 2 --epochs trVAE=200 scGen=100
    .venv/bin/python benchmarks/out_of_sample.py --rebuild-cache  # the cache from the committed results
    .venv/bin/python benchmarks/out_of_sample.py --cached-only    # then docs/benchmarks.md from the cache

Every (dataset, held-out type, target, method, seed) result is cached as a JSON file under
``benchmarks/cache/full/`` (``benchmarks/cache/quick/cache/`` in quick mode), so an interrupted run resumes.
A cached result records its method's code version (a hash of the source files it depends on): a run fits a
result of earlier code again, ``--cached-only`` reports it marked as stale (``docs/benchmarks.md`` lists them).
The cache is not committed: ``--rebuild-cache`` writes it back from ``benchmarks/results/out_of_sample.json``
(without the seed-0 predictions that the figures are drawn from; rows keep the code version they record, rows
from before code versions are marked ``earlier``).

Adding a method to the committed results without refitting the others: ``--rebuild-cache``, then run only the
new method with ``--methods NEW --output-dir SOMEWHERE`` (a run writes the results file and the page with the
methods of that run only, so keep it away from the committed ones), then ``--cached-only`` with every method
of the committed file (its ``epochs`` keys) plus the new one. The other methods are read from the cache,
never refitted.
Outputs: ``benchmarks/results/out_of_sample.json`` (all rows), ``docs/benchmarks.md`` (tables) and
``docs/figures/`` (reg-mean, reg-var and gene-distribution plots); with ``--output-dir DIR`` (and in
quick mode, default ``benchmarks/cache/quick``) all three go under ``DIR`` instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .cache import rebuild_cache
from .datasets import DATASETS
from .figures import make_figures
from .methods import METHODS
from .paths import CACHE_DIR, DATA_DIR, REPO, RESULTS_DIR
from .report import console_summary, write_outputs
from .running import RunConfig, run_all

logger = logging.getLogger("out_of_sample")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``benchmarks/out_of_sample.py``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), help="default: all (quick: kang)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="default: all")
    parser.add_argument("--cell-types", nargs="+", help="held-out cell types (default: all; quick: NK)")
    parser.add_argument("--seeds", type=int, help="seeds of the multi-seed methods (default 3; quick 1)")
    parser.add_argument(
        "--epochs", nargs="+", metavar="N|METHOD=N",
        help="epochs for every method (N) or per method (METHOD=N); default per method (quick: 3)",
    )  # fmt: skip
    parser.add_argument(
        "--n-top-genes", type=int,
        help="HVGs per split for every data set (0: all genes); default per data set (quick: 500)",
    )  # fmt: skip
    parser.add_argument("--min-cells", type=int, default=3, help="skip splits with fewer control or target cells")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke run into its own output/cache")
    parser.add_argument("--output-dir", type=Path, help="write JSON, markdown and figures here")
    parser.add_argument(
        "--cache-dir", type=Path, help="default benchmarks/cache/full (quick: benchmarks/cache/quick/cache)"
    )
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads per fit (default 1; 0: torch's default). Several threads on a busy machine can be "
        "far slower than one: run data sets in parallel processes instead",
    )  # fmt: skip
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--cached-only", action="store_true", help="fit nothing: report what the cache holds")
    parser.add_argument(
        "--keep-predictions", action="store_true",
        help="keep the seed-0 prediction of every split beside its cached result (default: the figure splits' only), "
        "for scoring with cell-eval (benchmarks/peers/celleval_score.py)",
    )  # fmt: skip
    parser.add_argument(
        "--rebuild-cache", nargs="?", type=Path, const=RESULTS_DIR / "out_of_sample.json", metavar="RESULTS_JSON",
        help="write the cache (--cache-dir) back from a results file (default: the committed one) and exit",
    )  # fmt: skip
    return parser


def parse_epochs(values: Sequence[str] | None, methods: Sequence[str], quick: bool) -> dict[str, int | str | None]:
    """The epochs of each method: its default (3 in quick mode), ``N`` for all, ``METHOD=N`` for one."""
    epochs = {name: (3 if quick and METHODS[name].epochs else METHODS[name].epochs) for name in methods}
    for value in values or []:
        if "=" in value:
            name, number = value.rsplit("=", 1)
            if name not in METHODS:
                raise SystemExit(f"--epochs: unknown method {name!r}; choose from {list(METHODS)}")
            epochs[name] = int(number)
        else:
            epochs = {name: (int(value) if METHODS[name].epochs else None) for name in methods}
    return epochs


def _output_paths(output_dir: Path | None, quick: bool) -> tuple[Path, Path, Path]:
    """(results JSON, markdown report, figure folder)."""
    if output_dir is None and not quick:
        return RESULTS_DIR / "out_of_sample.json", REPO / "docs" / "benchmarks.md", REPO / "docs" / "figures"
    out = output_dir if output_dir is not None else CACHE_DIR / "quick"  # gitignored, next to the quick cache
    return out / "out_of_sample.json", out / "benchmarks.md", out / "figures"


def build_config(args: argparse.Namespace, argv: Sequence[str]) -> RunConfig:
    """Resolve the defaults (and quick mode) into a :class:`oos.running.RunConfig`."""
    quick = args.quick
    datasets = args.datasets or (["kang"] if quick else list(DATASETS))
    methods = args.methods or list(METHODS)
    if args.n_top_genes is not None:
        n_top_genes = {d: (args.n_top_genes or None) for d in datasets}
    else:
        n_top_genes = {d: (500 if quick else DATASETS[d].n_top_genes) for d in datasets}
    json_path, markdown_path, figure_dir = _output_paths(args.output_dir, quick)
    return RunConfig(
        datasets=datasets, methods=methods, cell_types=args.cell_types or (["NK"] if quick else None),
        n_seeds=args.seeds if args.seeds is not None else (1 if quick else 3),
        epochs=parse_epochs(args.epochs, methods, quick), n_top_genes=n_top_genes, min_cells=args.min_cells,
        data_dir=args.data_dir, cache_dir=args.cache_dir or (CACHE_DIR / ("quick/cache" if quick else "full")),
        json_path=json_path, markdown_path=markdown_path, figure_dir=None if args.no_figures else figure_dir,
        quick=quick, argv=list(argv), threads=args.threads, cached_only=args.cached_only,
        keep_predictions=args.keep_predictions,
    )  # fmt: skip


def _quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    # Δ-Pearson of "no response" is undefined (its response is exactly zero): NaN, reported as "—"
    warnings.filterwarnings("ignore", message="An input array is constant")


def _limit_numba_threads(threads: int) -> None:
    """Keep scanpy's numba kernels from resetting the OpenMP thread count that torch shares with them.

    numba's ``omp`` threading layer sets the process's OpenMP threads to its own count (all cores) when
    scanpy computes sparse means and variances, silently undoing ``torch.set_num_threads``.
    """
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:  # pragma: no cover - numba comes with scanpy
        pass


def run(config: RunConfig) -> list[dict[str, Any]]:
    """Run every split x method x seed, draw the figures and write the JSON and markdown; returns the rows."""
    start = time.perf_counter()
    rows, figure_splits = run_all(config)
    if config.figure_dir is not None:
        for split in figure_splits:
            try:
                make_figures(config, split)
            except Exception:  # figures must not cost the results
                logger.exception("figures of %s %s failed", split.dataset, split.cell_type)
    write_outputs(config, rows, time.perf_counter() - start)
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command-line entry point; returns the result rows (none with ``--rebuild-cache``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    _quiet()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        _limit_numba_threads(args.threads)
    config = build_config(args, argv)
    missing = [DATASETS[d].file for d in config.datasets if not (config.data_dir / DATASETS[d].file).exists()]
    if missing:
        raise SystemExit(f"data not found in {config.data_dir}: {missing}")
    if args.rebuild_cache is not None:
        n_written = rebuild_cache(args.rebuild_cache, config.data_dir, config.cache_dir)
        logger.info("wrote %d results from %s to %s", n_written, args.rebuild_cache, config.cache_dir)
        return []
    rows = run(config)
    print(console_summary(config, rows))
    return rows
