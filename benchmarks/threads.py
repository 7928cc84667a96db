"""How torch's thread count changes training time on an idle and on a busy machine.

Trains the same model (``TRVAE`` on ``synthetic_perturbation``, fixed seed and epochs) in a fresh Python for
each torch thread count, once on its own and once beside background jobs that keep the cores busy, and prints
the training wall time of each (imports excluded). Two kinds of background job:

* ``spin``: pure-Python busy loops, one core each (any CPU-bound job);
* ``torch``: processes multiplying matrices with torch's default thread count (another training run, a test
  suite), whose OpenMP threads compete with the measured run's for the same cores.

    python benchmarks/threads.py [--threads 1 2 auto] [--loads none spin:2 torch:2] [--epochs 100] [--quick]

A number sets torch's thread count before training (with ``settings.num_threads = None``, so the package
leaves it alone); ``auto`` leaves torch's default and lets the package choose (``settings.num_threads =
"auto"``, its default). Each result is written to ``benchmarks/results/threads.json`` as it lands, and a
rerun with the same settings skips the results already there. The table also gives the load average each
run started under.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from oos.paths import RESULTS_DIR

from scvi_trvae.metrics import markdown_table

#: The measured run: train one model and print the training wall time in seconds (the last line).
TRAIN_SCRIPT = """
import sys, time, torch
threads = sys.argv[1]
epochs, cells, genes = (int(a) for a in sys.argv[2:5])
from scvi_trvae import TRVAE
from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.utils import settings
settings.verbosity = 40
if threads == "auto":
    settings.num_threads = "auto"
else:
    settings.num_threads = None
    torch.set_num_threads(int(threads))
adata = synthetic_perturbation(n_cells_per_group=cells, n_genes=genes, seed=0)
TRVAE.setup_anndata(adata, condition_key="condition")
model = TRVAE(adata)
start = time.perf_counter()
model.train(max_epochs=epochs, accelerator="cpu", enable_progress_bar=False)
print(time.perf_counter() - start)
"""

#: Background jobs, by kind: each runs until it is killed.
LOAD_SCRIPTS = {
    "spin": "while True: pass",
    "torch": "import torch\na = torch.randn(512, 512)\nwhile True: a = torch.tanh(a @ a / 512)",
}


def parse_load(spec: str) -> tuple[str, int]:
    """``"none"`` -> ("none", 0); ``"spin:2"`` -> ("spin", 2)."""
    if spec == "none":
        return "none", 0
    kind, _, count = spec.partition(":")
    if kind not in LOAD_SCRIPTS or not count.isdigit():
        raise argparse.ArgumentTypeError(f"load {spec!r}: use 'none' or KIND:N with KIND in {sorted(LOAD_SCRIPTS)}")
    return kind, int(count)


def start_load(kind: str, count: int) -> list[subprocess.Popen]:
    """Start ``count`` background jobs of ``kind`` (torch's default threads: no OMP_NUM_THREADS for them)."""
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
    jobs = [subprocess.Popen([sys.executable, "-c", LOAD_SCRIPTS[kind]], env=env) for _ in range(count)]
    time.sleep(2.0 if kind == "torch" else 0.5)  # let them import and start working
    return jobs


def train_time(threads: str, epochs: int, cells: int, genes: int) -> float:
    """Training seconds of one run in a fresh Python."""
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_NUM_THREADS", "MKL_NUM_THREADS"}}
    args = [sys.executable, "-c", TRAIN_SCRIPT, str(threads), str(epochs), str(cells), str(genes)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"training run failed ({done.returncode}): {done.stderr[-800:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _key(row: dict) -> tuple:
    return row["load"], row["load_jobs"], row["threads"], row["repeat"]


def measure(
    threads: Sequence[str], loads: Sequence[tuple[str, int]], settings: dict, repeats: int, out: Path
) -> list[dict]:
    """One row per (load, thread count, repeat), the thread counts alternating inside each load.

    Rows already in ``out`` from a run with the same ``settings`` are kept and not measured again; each new row
    is written to ``out`` as soon as it is measured.
    """
    rows = []
    if out.exists():
        stored = json.loads(out.read_text())
        if stored.get("settings") == settings:
            rows = stored["rows"]
    done = {_key(row) for row in rows}
    for kind, count in loads:
        load = kind if count else "none"
        todo = [(r, n) for r in range(repeats) for n in threads if (load, count, n, r) not in done]
        if not todo:
            continue
        jobs = start_load(kind, count) if count else []
        try:
            for repeat, n in todo:
                load_average = os.getloadavg()[0]
                seconds = train_time(n, settings["epochs"], settings["cells_per_group"], settings["genes"])
                rows.append(
                    {"load": load, "load_jobs": count, "threads": n, "repeat": repeat, "train_s": seconds,
                     "load_average_1min": load_average}
                )  # fmt: skip
                out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
                print(f"load {load}:{count}  threads {n}  train {seconds:.1f} s", file=sys.stderr)
        finally:
            for job in jobs:
                job.kill()
                job.wait()
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table: training seconds per load (rows) and thread count (columns), repeats averaged."""
    threads = sorted({row["threads"] for row in rows}, key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0))
    loads = list(dict.fromkeys((row["load"], row["load_jobs"]) for row in rows))
    names = {"auto": "auto (the package's choice)", "1": "1 thread"}
    header = ["background jobs", *(names.get(n, f"{n} threads") for n in threads)]
    cells = []
    for kind, count in loads:
        row = ["none" if not count else f"{count} x {kind}"]
        for n in threads:
            times = [r["train_s"] for r in rows if (r["load"], r["load_jobs"], r["threads"]) == (kind, count, n)]
            row.append(f"{sum(times) / len(times):.1f} s" if times else None)
        cells.append(row)
    return markdown_table(header, cells)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", nargs="+", default=["1", "2", "auto"])
    parser.add_argument("--loads", type=parse_load, nargs="+", default=["none", "spin:2", "torch:2"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--cells-per-group", type=int, default=150)
    parser.add_argument("--genes", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 epochs, small data, one background job, once")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "threads.json")
    args = parser.parse_args(argv)
    loads = [parse_load(s) if isinstance(s, str) else s for s in args.loads]
    if args.quick:
        args.epochs, args.cells_per_group, args.genes, args.repeats = 2, 20, 200, 1
        loads = [("none", 0), ("spin", 1)]
    settings = {"epochs": args.epochs, "cells_per_group": args.cells_per_group, "genes": args.genes,
                "cpu_count": os.cpu_count(), "quick": args.quick}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = measure(args.threads, loads, settings, args.repeats, args.out)
    result = {"settings": settings, "rows": rows}
    print(table(rows))
    return result


if __name__ == "__main__":
    main()
