"""The out-of-sample benchmark (``benchmarks/out_of_sample.py``) as a package, one module per idea.

- :mod:`oos.expression`: the expression scale every method is scored on (log1p of counts per 10,000).
- :mod:`oos.datasets`: the data sets and how they are read.
- :mod:`oos.splits`: a held-out (cell type, condition) split and its gene selection.
- :mod:`oos.registry`, :mod:`oos.methods`: the methods, each a function of one :class:`oos.splits.Split`,
  registered in order (``oos.scarches``: scArches, run in its own environment).
- :mod:`oos.cache`: one JSON file per result, and rebuilding them from a results file.
- :mod:`oos.running`: the run configuration and the loop over splits, methods and seeds.
- :mod:`oos.scoring`: medians over splits and spreads over seeds, as the tables show them.
- :mod:`oos.tables`, :mod:`oos.report`, :mod:`oos.figures`: the markdown report and its figures.
- :mod:`oos.cli`: the command line.

The package lives next to the scripts in ``benchmarks/``, which import it as ``oos``.
"""
