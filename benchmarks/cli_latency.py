"""How long the command line takes to answer ``--help`` and argument errors.

Times, in a fresh Python each time, ``scvi-trvae --help``, ``scvi-trvae train --help``, an argument error
(``scvi-trvae evaluate`` without its arguments) and a bare ``import scvi_trvae``; prints the median and
the slowest of the repeats and writes them to ``benchmarks/results/cli_latency.json``.

    python benchmarks/cli_latency.py [--repeats 5] [--before DIR] [--quick] [--out PATH]

``--before DIR`` times the same commands on another copy of the package's sources as well (``DIR``
holds ``scvi_trvae/``), e.g. an earlier commit's: ``git archive REV src | tar -x -C /tmp/old`` then
``--before /tmp/old/src``. ``--quick`` runs each command once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from oos.paths import REPO, RESULTS_DIR

#: What is timed: a name and the arguments of ``python``, with the exit status each one should end with.
COMMANDS: dict[str, tuple[list[str], int]] = {
    "scvi-trvae --help": (["-m", "scvi_trvae.cli", "--help"], 0),
    "scvi-trvae train --help": (["-m", "scvi_trvae.cli", "train", "--help"], 0),
    "scvi-trvae evaluate (argument error)": (["-m", "scvi_trvae.cli", "evaluate"], 2),
    "import scvi_trvae": (["-c", "import scvi_trvae"], 0),
}


def time_command(args: list[str], expected_status: int, src: Path, repeats: int) -> list[float]:
    """Wall times (s) of ``repeats`` runs of ``python ARGS`` with the package taken from ``src``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != expected_status:
            raise RuntimeError(f"python {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
    return times


def measure(sources: dict[str, Path], repeats: int) -> list[dict]:
    """Time every command of :data:`COMMANDS` with every source tree: one row per (command, tree)."""
    rows = []
    for command, (args, status) in COMMANDS.items():
        for tree, src in sources.items():
            times = time_command(args, status, src, repeats)
            rows.append(
                {"command": command, "tree": tree, "median_s": statistics.median(times), "max_s": max(times),
                 "repeats": repeats, "times_s": times}
            )  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    """Markdown table of the rows: command, tree, median and slowest time."""
    lines = ["| command | sources | median (s) | slowest (s) |", "|---|---|---|---|"]
    lines += [f"| {r['command']} | {r['tree']} | {r['median_s']:.2f} | {r['max_s']:.2f} |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another source tree (holding scvi_trvae/) to time as well")
    parser.add_argument("--quick", action="store_true", help="one run of each command")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "cli_latency.json")
    args = parser.parse_args(argv)
    sources = {"this tree": REPO / "src"}
    if args.before is not None:
        sources["before"] = args.before
    rows = measure(sources, 1 if args.quick else args.repeats)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"python": sys.version.split()[0], "cpu_count": os.cpu_count(), "rows": rows}
    if args.before is not None:
        result["before"] = str(args.before)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Wrote {args.out}.")
    return rows


if __name__ == "__main__":
    main()
