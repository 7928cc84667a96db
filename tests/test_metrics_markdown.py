from __future__ import annotations

from helpers import table_rows

from scvi_trvae import demo, metrics


def test_markdown_table_rows_and_blank_cells():
    table = metrics.markdown_table(["a", "b", "c"], [["1", "2", "3"], ["x", "*note*", None], ["y", "", "z"]])
    assert table.splitlines() == [
        "| a   | b      | c   |",
        "|-----|--------|-----|",
        "| 1   | 2      | 3   |",
        "| x   | *note* |     |",
        "| y   |        | z   |",
    ]
    assert metrics.markdown_table(["only"], []) == "| only   |\n|--------|"


def test_markdown_table_writes_cells_as_given():
    table = metrics.markdown_table(["value"], [["0.500"], ["1e3"], ["n/a"]])
    assert table_rows(table) == [["value"], ["0.500"], ["1e3"], ["n/a"]]


def test_demo_format_table_uses_the_markdown_table():
    scores = {key: 0.5 for key in metrics.METRIC_KEYS}
    text = demo.format_table({"m": scores, "n": {**scores, "pearson_delta_deg": float("nan")}})
    rows = table_rows(text)
    assert rows[0] == ["method", *metrics.METRIC_KEYS]
    assert rows[1] == ["m"] + ["0.500"] * len(metrics.METRIC_KEYS)
    assert "n/a" in rows[2]
