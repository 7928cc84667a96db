"""The out-of-sample benchmark's command line (``python benchmarks/out_of_sample.py --help``; code in ``oos/``)."""

from __future__ import annotations

from oos.cli import main

if __name__ == "__main__":
    main()
