from __future__ import annotations

from scvi_trvae import demo, metrics


def test_markdown_table_rows_and_blank_cells():
    table = metrics.markdown_table(["a", "b", "c"], [["1", "2", "3"], ["x", "*note*", None], ["y", "", "z"]])
    assert table.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1 | 2 | 3 |", "| x | *note* | |", "| y |  | z |"]
    assert metrics.markdown_table(["only"], []) == "| only |\n|---|"


def test_demo_format_table_uses_the_markdown_table():
    scores = {key: 0.5 for key in metrics.METRIC_KEYS}
    text = demo.format_table({"m": scores, "n": {**scores, "pearson_delta_deg": float("nan")}})
    lines = text.splitlines()
    assert lines[0] == "| method | " + " | ".join(metrics.METRIC_KEYS) + " |"
    assert lines[2] == "| m |" + " 0.500 |" * len(metrics.METRIC_KEYS)
    assert "| n/a |" in lines[3]
