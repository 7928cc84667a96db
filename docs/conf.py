"""Sphinx configuration of the scvi-trvae documentation (builds offline, with warnings as errors)."""

from __future__ import annotations

from importlib import metadata

project = "scvi-trvae"
author = "scvi-trvae developers"
try:
    release = metadata.version("scvi-trvae")
except metadata.PackageNotFoundError:  # building from a source tree that was not installed
    release = "0.0.0"
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.mathjax",
]
autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "none"  # numpydoc renders the types written in the docstrings
numpydoc_show_class_members = False  # autosummary lists the members
numpydoc_xref_param_type = False
# notebooks carry their stored outputs: the docs build never executes them (the tests do)
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# No intersphinx: the build must work offline (CI and the tests have no network).
html_theme = "sphinx_book_theme"
html_title = "scvi-trvae"
html_theme_options = {"repository_url": "https://github.com/scverse/scvi-trvae", "use_repository_button": True}
