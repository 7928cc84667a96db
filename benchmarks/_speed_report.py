"""The speed benchmark's report as markdown tables (``benchmarks/speed.py``)."""

from __future__ import annotations

from scvi_trvae.metrics import markdown_table

#: The issue's bound on peak RSS when training on the 1M-cell set read from disk.
DISK_RSS_TARGET_MB = 2048


def _value(result: dict | None, key: str, fmt: str = "{:.0f}") -> str:
    if not result:
        return "not run"
    if "error" in result:
        return "failed"
    return fmt.format(result[key])


def _ratio(ours: dict | None, theirs: dict | None, key: str = "cells_per_s") -> str:
    if not ours or not theirs or "error" in ours or "error" in theirs:
        return "n/a"
    return f"{ours[key] / theirs[key]:.2f}x"


def _floor_fraction(row: dict, result: dict | None, dtype: str = "float32") -> str:
    if not result or "error" in result or not row.get("gflops"):
        return "n/a"
    floor = row["gflops"][dtype] * 1e9 / row["flops_per_cell"]
    return f"{100 * result['cells_per_s'] / floor:.0f}%"


def training_table(rows: list[dict]) -> list[str]:
    header = [
        "data", "batch", "trVAE cells/s", "scArches cells/s", "ratio", "trVAE peak RSS MB", "scArches peak RSS MB",
        "trVAE % fp32 floor", "bf16-mixed cells/s", "bf16-mixed % fp32 floor",
    ]  # fmt: skip
    cells = []
    for row in rows:
        ours, theirs, bf16 = row.get("trvae"), row.get("scarches"), row.get("trvae_bf16_mixed")
        cells.append([
            row["data"], str(row["batch_size"]), _value(ours, "cells_per_s"), _value(theirs, "cells_per_s"),
            _ratio(ours, theirs), _value(ours, "peak_rss_mb"), _value(theirs, "peak_rss_mb"),
            _floor_fraction(row, ours), _value(bf16, "cells_per_s"), _floor_fraction(row, bf16),
        ])  # fmt: skip
    return [markdown_table(header, cells)]


def prediction_table(rows: list[dict]) -> list[str]:
    """One line per mode and precision; both precisions are compared with the same scArches forward."""
    header = ["prediction mode", "precision", "cells", "trVAE cells/s", "scArches forward cells/s (fp32)", "ratio",
              "trVAE peak above start MB", "scArches peak above start MB", "output MB"]  # fmt: skip
    cells = []
    for row in rows:
        theirs = row.get("scarches")
        for precision, key in (("fp32", "trvae"), ("bf16 autocast", "trvae_bf16_autocast")):
            ours = row.get(key)
            cells.append([
                row["mode"], precision, str(row["n_cells"]), _value(ours, "cells_per_s"),
                _value(theirs, "cells_per_s"), _ratio(ours, theirs), _value(ours, "peak_above_start_mb"),
                _value(theirs, "peak_above_start_mb"), _value(ours, "output_mb"),
            ])  # fmt: skip
    return [markdown_table(header, cells)]


def disk_table(disk: dict) -> list[str]:
    generation = disk.get("generation") or {}
    header = [f"training from a backed .h5ad ({disk['data']})", "batch", "trVAE cells/s", "trVAE peak RSS MB",
              f"under {DISK_RSS_TARGET_MB} MB"]  # fmt: skip
    cells = []
    for row in disk.get("rows", []):
        ours = row.get("trvae")
        under = (
            "n/a" if not ours or "error" in ours else ("yes" if ours["peak_rss_mb"] < DISK_RSS_TARGET_MB else "**no**")
        )
        cells.append([row["data"], str(row["batch_size"]), _value(ours, "cells_per_s"), _value(ours, "peak_rss_mb"),
                      under])  # fmt: skip
    lines = [markdown_table(header, cells)]
    if "error" in generation:
        lines += ["", "Writing the file failed; the rows above could not run."]
    elif generation:
        reused = " (file reused from the cache; figures of the run that wrote it)" if generation.get("cached") else ""
        lines += ["", f"Writing the file block by block, in its own process{reused}: "
                  f"{generation['wall_s']:.0f} s, peak RSS {generation['peak_rss_mb']:.0f} MB, "
                  f"file {generation['file_mb']:.0f} MB."]  # fmt: skip
    return lines


def gpu_lines(gpu: dict | None) -> list[str]:
    if not gpu or not gpu.get("rows"):
        reason = (gpu or {}).get("not_measured", "the GPU part was not run")
        return [f"GPU rows: not measured ({reason})."]
    header = ["data", "batch", "trVAE cells/s", "host peak RSS MB", "GPU peak allocated MB"]
    cells = [
        [row["data"], str(row["batch_size"]), *(_value(row.get("trvae"), key) for key in
                                                ("cells_per_s", "peak_rss_mb", "gpu_peak_mb"))]
        for row in gpu["rows"]
    ]  # fmt: skip
    title = f"GPU training ({gpu['device']}, this package only; data loading on one CPU thread):"
    return [title, "", markdown_table(header, cells)]


def markdown(report: dict) -> str:
    """The report as markdown tables; the parts that were not run say so."""
    lines: list[str] = []
    if report.get("training"):
        lines += [*training_table(report["training"]), ""]
    if report.get("prediction"):
        lines += [*prediction_table(report["prediction"]), ""]
    if report.get("disk"):
        lines += [*disk_table(report["disk"]), ""]
    if report.get("default_train"):
        cells = []
        for package, result in report["default_train"].items():
            stopped = "" if not result or result.get("finished", True) else f" (stopped at the {result['cap_s']} s cap)"
            cells.append([package, f"{_value(result, 'wall_s')}{stopped}", _value(result, "epochs")])
        lines += [markdown_table(["default train() on Kang", "wall s", "epochs"], cells), ""]
    lines += gpu_lines(report.get("gpu"))
    parts = report.get("parts", {})
    if parts:
        timings = ", ".join(f"{name} {part['wall_s']:.0f} s ({part['finished_at']})" for name, part in parts.items())
        lines += ["", f"Parts (wall time, finished at): {timings}."]
    return "\n".join(lines)
