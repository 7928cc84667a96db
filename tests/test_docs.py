from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import scvi_trvae
from scvi_trvae import TRVAE

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _public_names() -> list[str]:
    """Every public name: the package's ``__all__`` and each public submodule's public functions and classes."""
    names = []
    for name in scvi_trvae.__all__:
        module = getattr(scvi_trvae, name)
        if not hasattr(module, "__path__") and type(module).__name__ == "module":
            exported = getattr(module, "__all__", None)
            if exported is None:
                exported = [
                    n for n, obj in vars(module).items()
                    if not n.startswith("_") and callable(obj) and getattr(obj, "__module__", "") == module.__name__
                ]  # fmt: skip
            names += [f"{name}.{n}" for n in exported]
        else:
            names.append(name)
    return names


def test_api_page_lists_every_public_name():
    api = (DOCS / "api.md").read_text()
    listed = set(re.findall(r"^\s+([A-Za-z_][\w.]*)\s*$", api, flags=re.M))
    listed |= set(re.findall(r"^\.\. data:: ([\w.]+)", api, flags=re.M))
    missing = [name for name in _public_names() if name not in listed]
    assert not missing, f"docs/api.md does not list {missing}"


@pytest.mark.docs
def test_docs_build_without_warnings(tmp_path):
    for module in ("sphinx", "myst_nb", "sphinx_book_theme", "numpydoc"):
        pytest.importorskip(module)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "html" / "generated" / "scvi_trvae.TRVAE.html").exists()
    assert (tmp_path / "html" / "tutorials" / "kang_out_of_sample.html").exists()


@pytest.mark.parametrize("page", ["README.md", "docs/quickstart.md"])
def test_usage_examples_run_as_written(page, tmp_path, monkeypatch):
    """A page's Python blocks, run in order in one namespace; only training is shortened (2 epochs a fit)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(), flags=re.S)
    assert blocks, f"{page} has no usage example"
    train = TRVAE.train

    def short_train(self, *args, **kwargs):
        kwargs["max_epochs"] = 2
        kwargs["enable_progress_bar"] = False
        return train(self, *args, **kwargs)

    monkeypatch.setattr(TRVAE, "train", short_train)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
    plt.close("all")

    assert (tmp_path / "trvae_model" / "model.pt").exists()
    assert isinstance(namespace["model"], TRVAE)
    assert {"r2_mean_deg", "pearson_delta_deg", "edist_scaled"} <= set(namespace["scores"])
    assert namespace["pred"].n_obs == namespace["control"].n_obs
    if "ensemble" in namespace:  # the README's recommended pipeline
        assert namespace["pred"].var["trvae_shift_sd"].notna().all()
