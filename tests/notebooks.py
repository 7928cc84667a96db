"""Execute a tutorial notebook with overridden parameters (papermill's convention, with nbclient).

The cell tagged ``parameters`` holds the defaults; the overrides go into a new cell right after it,
tagged ``injected-parameters``. Run as a script to refresh a notebook's stored outputs in place::

    SCVI_TRVAE_DATA_DIR=../shared/data python tests/notebooks.py tutorials/kang_out_of_sample.ipynb

Stored outputs go into the documentation, so the script scrubs them of the machine they ran on
(:func:`scrub_outputs`): warnings name their file from the package's folder on (``scanpy/...``), not
by its absolute path, and the kernel's complaint about missing ipywidgets is dropped.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient


def inject_parameters(notebook: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    """Insert ``name = value`` lines after the ``parameters`` cell (which must exist), replacing earlier ones."""
    notebook.cells = [cell for cell in notebook.cells if "injected-parameters" not in cell.metadata.get("tags", [])]
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    if not tagged:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    source = "# Parameters of this run\n" + "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    notebook.cells.insert(tagged[0] + 1, cell)


#: An absolute path up to the folder holding an installed package, or up to a checkout's ``src/``.
ABSOLUTE_PREFIX = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s:'\"]*?(?:site-packages|dist-packages|src)[\\/]")
#: stderr outputs about the executing Jupyter, not the tutorial (tqdm without ipywidgets).
ENVIRONMENT_NOISE = ("IProgress not found",)


def scrub_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop stderr outputs about the executing Jupyter and shorten absolute file paths in text outputs."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stderr":
                if any(noise in output.text for noise in ENVIRONMENT_NOISE):
                    continue
                output.text = ABSOLUTE_PREFIX.sub("", output.text)
            elif output.output_type == "error":
                output.traceback = [ABSOLUTE_PREFIX.sub("", line) for line in output.traceback]
            kept.append(output)
        cell.outputs = kept
    return notebook


def execute(path: Path, parameters: dict[str, Any] | None = None, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run every cell of the notebook at ``path`` (in its own folder) and return it with its outputs."""
    notebook = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(notebook, parameters)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return notebook


if __name__ == "__main__":
    for name in sys.argv[1:]:
        notebook_path = Path(name)
        nbformat.write(scrub_outputs(execute(notebook_path)), notebook_path)
        print(f"executed {notebook_path}")
