from __future__ import annotations

import html
import inspect
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
        if inspect.ismodule(module):  # a module or a subpackage: its own public names
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


@pytest.mark.parametrize("page", ["README.md", "docs/installation.md"])
def test_install_commands_do_not_ask_pypi_for_the_package(page):
    """The package is not on PyPI: every ``pip install`` of it names the repository, a folder or a wheel."""
    commands = re.findall(r"pip install ([^`\n#]+)", (ROOT / page).read_text())
    assert any("git+https://github.com/scverse/scvi-trvae" in c for c in commands)
    by_name = [c for c in commands if re.search(r"scvi[-_]trvae", c) and not re.search(r"git\+|\.whl|^\.", c)]
    assert not by_name, f"{page} installs the package from PyPI: {by_name}"


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML documentation, built once for this module (warnings are errors)."""
    for module in ("sphinx", "myst_nb", "sphinx_book_theme", "numpydoc"):
        pytest.importorskip(module)
    out = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(out / "doctrees"),
         str(DOCS), str(out / "html")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-5000:]
    return out / "html"


def _page_text(path: Path) -> str:
    """The visible text of an HTML page: tags dropped, entities decoded, whitespace collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", path.read_text()))
    return " ".join(text.split())


def _plain_docstring_texts(obj: object) -> list[str]:
    """The summary and each parameter description of ``obj``'s docstring that carry no reST markup or quotes."""
    from numpydoc.docscrape import NumpyDocString

    doc = NumpyDocString(inspect.getdoc(obj))
    texts = [" ".join(doc["Summary"])] + [" ".join(p.desc) for p in doc["Parameters"]]
    markup = ("`", "*", "\\", '"', "'", "--", "...")  # rendered differently (roles, smart quotes, dashes)
    return [text for text in texts if text and not any(m in text for m in markup)]


@pytest.mark.docs
def test_docs_build_without_warnings(built_docs):
    assert (built_docs / "generated" / "scvi_trvae.TRVAE.html").exists()
    assert (built_docs / "tutorials" / "kang_out_of_sample.html").exists()


@pytest.mark.docs
def test_built_docs_hold_no_paths_or_library_noise(built_docs):
    """No page shows the building machine's paths (warnings in stored notebook outputs) or Lightning's tips."""
    needles = ("/work/", "/home/", "/root/", "/Users/", "site-packages", "Tip: For seamless", "GPU available")
    found = {
        (str(page.relative_to(built_docs)), needle)
        for page in built_docs.rglob("*.html")
        for needle in needles
        if needle in page.read_text()
    }
    assert not found, sorted(found)


@pytest.mark.docs
@pytest.mark.parametrize("name", ["TRVAE", "model_selection.fit_recommended", "pl.reg_mean_plot"])
def test_api_pages_render_docstrings(built_docs, name):
    """An API page shows its object's docstring (summary and parameters), not the raw autosummary stub."""
    obj = scvi_trvae
    for part in name.split("."):
        obj = getattr(obj, part)
    text = _page_text(built_docs / "generated" / f"scvi_trvae.{name}.html")
    assert ".. auto" not in text and ".. currentmodule::" not in text
    expected = _plain_docstring_texts(obj)
    assert expected, f"{name}'s docstring has no plain-text summary or parameter to look for"
    missing = [t for t in expected if t not in text]
    assert not missing, f"the page of {name} lacks {missing}"


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
