"""Import check of a peer's environment (``python check_import.py NAME``): prints the versions, fails if absent.

Standard library only at module level, so that it runs in any peer environment.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

#: The module each peer is used through, and the distributions whose versions are printed.
MODULES = {
    "scgen": ("pertpy", ["pertpy", "scvi-tools", "jax", "anndata", "scanpy"]),
    "cpa": ("cpa", ["cpa-tools", "scvi-tools", "torch", "anndata", "scanpy"]),
    "biolord": ("biolord", ["biolord", "scvi-tools", "torch", "anndata", "scanpy"]),
    "cellflow": ("cellflow", ["cellflow-tools", "jax", "ott-jax", "anndata", "scanpy"]),
    "scpram": ("scpram", ["scpram", "torch", "anndata", "scanpy", "pot"]),
}


def main(name: str) -> None:
    """Import the peer ``name``'s module and print the versions of its main distributions."""
    module, distributions = MODULES[name]
    importlib.import_module(module)
    versions = {d: importlib.metadata.version(d) for d in distributions}
    print(name, " ".join(f"{d}=={v}" for d, v in versions.items()))


if __name__ == "__main__":
    main(sys.argv[1])
