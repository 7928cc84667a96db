"""Collect the peers' cached results into ``benchmarks/results/peers.json`` and print them as a markdown table.

The peers run through the benchmark (``benchmarks/out_of_sample.py --methods CPA scPRAM ...``), which caches each
result under ``benchmarks/cache/full/`` and each runner's ``meta.json`` (fit time, peak memory, settings, versions)
under ``benchmarks/cache/peers/``. This script joins them and adds, for the same splits (same genes and training
cells), the reference rows of ``benchmarks/results/out_of_sample.json`` (trVAE, the benchmark's scGen, the baselines).

Usage (from the repository root)::

    .venv/bin/python benchmarks/peers/report.py                  # write the JSON, print the table
    .venv/bin/python benchmarks/peers/report.py --cache-dir benchmarks/cache/quick/cache --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmark package ``oos``

from oos import paths
from oos.cache import json_safe, slug
from oos.peers import META_DIR, PEER_METHODS

#: Reference methods of the benchmark shown beside the peers.
REFERENCES = ["trVAE ensemble + shrink", "trVAE", "scGen", "control + mean shift", "no response"]
#: Ours, counted against each peer: the recommended pipeline and the single default model (seed 0).
OURS = ("trVAE ensemble + shrink", "trVAE")
#: The split the defaults were tuned on: shown, never counted.
TUNING_SPLIT = ("kang", "NK")
#: Metrics of the win counts, and whether higher is better.
WIN_METRICS = {"pearson_delta_deg": ("Δ-Pearson (DEG)", True), "edist_scaled": ("E-dist (scaled)", False)}
#: Metrics in the table (keys of the benchmark's rows), with their column titles.
COLUMNS = {
    "r2_mean_all": "r² mean (all)", "r2_mean_deg": "r² mean (DEG)", "r2_var_all": "r² var (all)",
    "pearson_delta_all": "Δ-Pearson (all)", "pearson_delta_deg": "Δ-Pearson (DEG)", "edist_scaled": "E-dist (scaled)",
}  # fmt: skip
SPLIT = ("dataset", "cell_type", "target")


def peer_rows(cache_dir: Path) -> list[dict[str, Any]]:
    """Every cached peer result (status ok or failed), with the runner's meta.json where kept."""
    rows = []
    for name, peer, _ in PEER_METHODS:
        for path in sorted(cache_dir.glob(f"*/*__{slug(name)}__seed*.json")):
            row = {k: v for k, v in json.loads(path.read_text()).items() if k != "key"}
            meta_name = (
                f"{slug(row['cell_type'])}__{slug(row['target'])}__{row['n_genes']}g__{peer}__seed{row['seed']}"
                f"__e{row.get('epochs')}.json"
            )
            meta_path = META_DIR / row["dataset"] / meta_name
            row["runner"] = json.loads(meta_path.read_text()) if meta_path.exists() else None
            rows.append(row)
    return rows


def reference_rows(results: Path, splits: set[tuple[str, str, str, int, int]]) -> list[dict[str, Any]]:
    """Seed-0 rows of the reference methods on the same splits (same genes and training cells)."""
    payload = json.loads(results.read_text())
    return [
        row for row in payload["rows"]
        if row["method"] in REFERENCES and row["seed"] == 0
        and (*(row[k] for k in SPLIT), row["n_genes"], row["n_train"]) in splits
    ]  # fmt: skip


def _cell(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table per split: method, metrics, seconds (the benchmark's around the whole runner call, and the runner's
    own around fit and predict), the runner's peak resident memory."""
    lines = []
    for split in dict.fromkeys(tuple(r[k] for k in SPLIT) for r in rows):
        mine = [r for r in rows if tuple(r[k] for k in SPLIT) == split]
        first = mine[0]
        lines += [
            f"**{split[0]}: {split[1]} {first['source']} → {split[2]}** ({first['n_genes']} genes, "
            f"{first['n_train']} training cells, {first['n_control']} control → {first['n_target']} target)",
            "",
            "| method | " + " | ".join(COLUMNS.values()) + " | fit s | runner fit s | peak MiB |",
            "|---|" + "---|" * (len(COLUMNS) + 3),
        ]
        for row in mine:
            if row["status"] != "ok":
                lines.append(f"| {row['method']} | {row['status']}: {row.get('reason', '')} |")
                continue
            runner = row.get("runner") or {}
            peak, inner = runner.get("peak_rss_mb"), runner.get("fit_predict_seconds")
            metrics = " | ".join(_cell(row.get(k)) for k in COLUMNS)
            fit = row.get("fit_seconds")
            lines.append(
                f"| {row['method']} | {metrics} | {'—' if fit is None else f'{fit:.0f}'} | "
                f"{'—' if inner is None else f'{inner:.0f}'} | {'—' if peak is None else f'{peak:.0f}'} |"
            )
        lines.append("")
    return "\n".join(lines)


def _scores(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, float]]]:
    """``{split: {method: {metric: value}}}`` of the rows that ran (Kang NK, the tuning split, left out)."""
    table: dict[tuple, dict[str, dict[str, float]]] = {}
    for row in rows:
        split = tuple(row[k] for k in SPLIT)
        if row.get("status", "ok") != "ok" or split[:2] == TUNING_SPLIT:
            continue
        table.setdefault(split, {})[row["method"]] = {k: row.get(k) for k in WIN_METRICS}
    return table


def win_counts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired wins of each of :data:`OURS` against each peer, per data set and overall (without the tuning split).

    A win is a strictly better value on a split where both ran (and the metric is defined for both). Returns one
    record per (ours, peer, data set or ``"all"``, metric): ``wins``, ``splits`` and the splits the peer won,
    with the margins (the peer's lead, positive).
    """
    table, records = _scores(rows), []
    peers = [name for name, _, _ in PEER_METHODS]
    for ours in OURS:
        for peer in peers:
            for metric, (_, higher) in WIN_METRICS.items():
                paired = {
                    split: (methods[ours][metric], methods[peer][metric])
                    for split, methods in table.items()
                    if ours in methods and peer in methods
                    and None not in (methods[ours][metric], methods[peer][metric])
                }  # fmt: skip
                for dataset in [*sorted({split[0] for split in paired}), "all"]:
                    mine = {s: v for s, v in paired.items() if dataset in ("all", s[0])}
                    lost = {
                        s: (b - a if higher else a - b) for s, (a, b) in mine.items() if (a > b) != higher or a == b
                    }
                    records.append({
                        "ours": ours, "peer": peer, "dataset": dataset, "metric": metric, "splits": len(mine),
                        "wins": len(mine) - len(lost), "peer_wins": {" ".join(s): m for s, m in lost.items()},
                    })  # fmt: skip
    return records


def wins_markdown(records: list[dict[str, Any]]) -> str:
    """The overall win counts as a table, then the splits each peer won with its margin."""
    lines = [
        "**Paired wins** over the splits where both ran (Kang NK, the tuning split, left out): ours / splits.",
        "",
        "| ours | peer | " + " | ".join(label for label, _ in WIN_METRICS.values()) + " |",
        "|---|---|" + "---|" * len(WIN_METRICS),
    ]
    overall = [r for r in records if r["dataset"] == "all"]
    for ours in OURS:
        for peer in dict.fromkeys(r["peer"] for r in overall):
            cells = [
                next(r for r in overall if (r["ours"], r["peer"], r["metric"]) == (ours, peer, m)) for m in WIN_METRICS
            ]
            if cells[0]["splits"]:
                lines.append(f"| {ours} | {peer} | " + " | ".join(f"{c['wins']}/{c['splits']}" for c in cells) + " |")
    lines += ["", *per_dataset_markdown(records)]
    losses = [r for r in overall if r["ours"] == OURS[0] and r["peer_wins"]]
    if losses:
        lines += ["", f"Splits a peer won against {OURS[0]} (the peer's lead):", ""]
        for r in losses:
            won = ", ".join(f"{s} (+{m:.3f})" for s, m in r["peer_wins"].items())
            lines.append(f"- {r['peer']}, {WIN_METRICS[r['metric']][0]}: {won}")
    return "\n".join(lines)


def per_dataset_markdown(records: list[dict[str, Any]]) -> list[str]:
    """The wins of :data:`OURS` ``[0]`` per data set: one row per data set, one column per peer (Δ-Pearson / E)."""
    mine = [r for r in records if r["ours"] == OURS[0] and r["dataset"] != "all"]
    peers = list(dict.fromkeys(r["peer"] for r in mine))
    labels = " / ".join(label for label, _ in WIN_METRICS.values())
    lines = [f"Per data set, {OURS[0]} against each peer ({labels}: ours / splits):", "",
             "| data set | " + " | ".join(peers) + " |", "|---|" + "---|" * len(peers)]  # fmt: skip
    for dataset in sorted({r["dataset"] for r in mine}):
        cells = []
        for peer in peers:
            pair = [next((r for r in mine if (r["peer"], r["dataset"], r["metric"]) == (peer, dataset, m)), None)
                    for m in WIN_METRICS]  # fmt: skip
            counts = [f"{r['wins']}/{r['splits']}" if r and r["splits"] else "—" for r in pair]
            cells.append("not run" if set(counts) == {"—"} else " / ".join(counts))
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> str:
    """Collect, write (unless ``--no-write``) and return the markdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=paths.CACHE_DIR / "full")
    parser.add_argument("--results", type=Path, default=paths.RESULTS_DIR / "out_of_sample.json")
    parser.add_argument("--output", type=Path, default=paths.RESULTS_DIR / "peers.json")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    peers = peer_rows(args.cache_dir)
    splits = {(*(r[k] for k in SPLIT), r["n_genes"], r["n_train"]) for r in peers}
    references = reference_rows(args.results, splits) if args.results.exists() else []
    rows = sorted(peers + references, key=lambda r: tuple(r[k] for k in SPLIT))
    wins = win_counts(rows)
    if not args.no_write:
        args.output.write_text(json.dumps(json_safe({"rows": rows, "wins": wins}), indent=1) + "\n")
    text = wins_markdown(wins) + "\n\n" + markdown(rows)
    print(text)
    return text


if __name__ == "__main__":
    main()
