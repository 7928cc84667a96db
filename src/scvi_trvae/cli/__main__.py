"""``python -m scvi_trvae.cli``: the ``scvi-trvae`` command line."""

from __future__ import annotations

from . import main

main()
