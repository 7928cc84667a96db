"""The tutorial notebooks run end to end (few epochs, a subset of cells and genes) on the real data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SHARED_DATA

nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
import nbformat  # noqa: E402
from notebooks import execute, inject_parameters, scrub_outputs  # noqa: E402

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
QUICK = {"MAX_EPOCHS": 2, "MAX_CELLS": 60, "SEED": 0}
#: Text that must not reach the stored outputs: the machine's paths, and what the quiet library no longer prints.
MACHINE_PATHS = ("/work/", "/home/", "/root/", "/Users/", "site-packages", ".venv")
LIBRARY_NOISE = ("Tip: For seamless", "GPU available", "TPU available", "LeafSpec", "not setup with scvi-tools")

CASES = {
    "kang_out_of_sample": ("kang2018_pbmc_ifnb_lognorm.h5ad", {"N_GENES": 300, "PLOT_UMAPS": False}),
    "haber_three_conditions": ("haber2017_gut_3cond_lognorm.h5ad", {"N_GENES": 300}),
    "kang_counts_nb": ("kang2018_pbmc_ifnb_counts_100genes.h5ad", {}),
    "query_mapping": ("haber2017_gut_3cond_lognorm.h5ad", {"N_GENES": 200, "MAX_EPOCHS": 1, "MAX_CELLS": 40}),
    "recommended_pipeline": ("kang2018_pbmc_ifnb_lognorm.h5ad", {"N_GENES": 300}),
}


def test_every_tutorial_is_tested_and_listed():
    notebooks = {path.stem for path in TUTORIALS.glob("*.ipynb")}
    assert notebooks == set(CASES)
    index = (TUTORIALS / "index.md").read_text()
    assert all(name in index for name in notebooks)


def _output_texts(notebook: nbformat.NotebookNode) -> list[str]:
    """Every text of every output: streams, tracebacks and the text forms of rich outputs (not images)."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts += [output.get("text", ""), *output.get("traceback", [])]
            texts += [str(v) for k, v in output.get("data", {}).items() if k.startswith("text/")]
    return texts


@pytest.mark.parametrize("name", sorted(CASES))
def test_stored_outputs_hold_no_paths_or_library_noise(name):
    texts = _output_texts(nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4))
    found = {needle for text in texts for needle in MACHINE_PATHS + LIBRARY_NOISE if needle in text}
    assert not found, f"{name}.ipynb's stored outputs contain {sorted(found)}"


#: What a tutorial would need only if the library were noisy: it is quiet by default, and a tutorial shows that.
SILENCING = ("settings.verbosity", "filterwarnings", "simplefilter", "setLevel(", "logging.disable")


@pytest.mark.parametrize("name", sorted(CASES))
def test_tutorials_do_not_silence_the_library(name):
    notebook = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4)
    sources = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    found = {needle for source in sources for needle in SILENCING if needle in source}
    assert not found, f"{name}.ipynb silences logs or warnings itself: {sorted(found)}"


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_table_is_followed_by_a_comment_quoting_it(name):
    """After each stored table (a DataFrame or Series result), a markdown cell that quotes its numbers."""
    cells = nbformat.read(TUTORIALS / f"{name}.ipynb", as_version=4).cells
    tables = [
        (i, str(output["data"]["text/plain"]))
        for i, cell in enumerate(cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "execute_result"
        and ("<table" in str(output["data"].get("text/html", "")) or "dtype:" in str(output["data"]["text/plain"]))
    ]
    assert tables
    for i, table in tables:
        comment = cells[i + 1] if i + 1 < len(cells) else None
        assert comment is not None and comment.cell_type == "markdown", f"cell {i} of {name} has no comment"
        quoted = _numbers(comment.source) & _numbers(table)
        assert len(quoted) >= 2, f"the comment after cell {i} of {name} quotes none of its numbers"


def test_scrub_outputs_shortens_paths_and_drops_environment_noise():
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="/opt/venv/lib/python3.11/site-packages/tqdm/auto.py:21: "
                               "TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.\n"),
        nbformat.v4.new_output("stream", name="stderr", text="/work/x/src/scvi_trvae/metrics.py:273: Warning: w\n"),
        nbformat.v4.new_output("error", ename="E", evalue="", traceback=['File "/home/u/site-packages/a.py", line 1']),
    ]  # fmt: skip
    notebook = nbformat.v4.new_notebook(cells=[cell])
    scrub_outputs(notebook)
    assert [o.get("text") or o.traceback for o in cell.outputs] == [
        "scvi_trvae/metrics.py:273: Warning: w\n",
        ['File "a.py", line 1'],
    ]


def test_injected_parameters_replace_earlier_ones():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("N = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("N = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(N)"),
    ]
    inject_parameters(notebook, {"N": 3, "NAME": "x"})
    assert [cell.source.splitlines()[-1] for cell in notebook.cells] == ["N = 1", "NAME = 'x'", "print(N)"]
    assert "N = 3" in notebook.cells[1].source


@pytest.mark.tutorials
@pytest.mark.parametrize("name", sorted(CASES))
def test_tutorial_runs(name, monkeypatch):
    data_file, parameters = CASES[name]
    if not (SHARED_DATA / data_file).exists():
        pytest.skip(f"{data_file} not in {SHARED_DATA}")
    monkeypatch.setenv("SCVI_TRVAE_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the kernel's torch: one thread, like the rest of the suite
    notebook = execute(TUTORIALS / f"{name}.ipynb", {**QUICK, **parameters}, timeout=300)
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    noise = {needle for text in _output_texts(notebook) for needle in LIBRARY_NOISE if needle in text}
    assert not noise, f"the library printed {sorted(noise)}"
    texts = "".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        for o in cell.get("outputs", [])
    )
    assert "r2_mean_all" in texts  # the metrics table was produced
