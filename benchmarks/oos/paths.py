"""Where the benchmark finds its data and writes its outputs."""

from __future__ import annotations

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO = BENCH_DIR.parent
#: The shared data sets (outside the repository).
DATA_DIR = REPO.parent / "shared" / "data"
RESULTS_DIR = BENCH_DIR / "results"
CACHE_DIR = BENCH_DIR / "cache"
#: Python of the separate environment with scArches (``make scarches-venv``); ``SCARCHES_PYTHON`` overrides it.
SCARCHES_PYTHON = Path(os.environ.get("SCARCHES_PYTHON", REPO / ".venv-scarches" / "bin" / "python"))


def peer_meta_dir(cache_dir: Path) -> Path:
    """Where the peers' runners' meta.json files are kept for the benchmark cache ``cache_dir``: beside it.

    ``benchmarks/cache/full`` keeps them in ``benchmarks/cache/peers``; a run with its own ``--cache-dir`` keeps
    them in a ``peers`` folder beside that cache, so that it never writes into another run's.
    """
    return Path(cache_dir).parent / "peers"
