"""Data sets: a synthetic perturbation generator and loaders for public perturbation data.

:func:`synthetic_perturbation` simulates a small single-cell perturbation experiment with known ground truth
(the package's embedded default for the demo and the tests). :func:`kang2018` and :func:`haber2017` load the two
public data sets used in the trVAE and scGen papers.
"""

from __future__ import annotations

from scvi_trvae._ground_truth import ground_truth_scores, synthetic_true_response
from scvi_trvae.image._celeba import celeba as celeba

from ._holdout import HoldoutSplit, holdout_split
from ._public_data import KANG2018_SHA256, KANG2018_URL, DownloadError, haber2017, kang2018
from ._synthetic import synthetic_counterfactual, synthetic_perturbation

__all__ = [
    "KANG2018_SHA256",
    "KANG2018_URL",
    "DownloadError",
    "HoldoutSplit",
    "ground_truth_scores",
    "haber2017",
    "holdout_split",
    "kang2018",
    "synthetic_counterfactual",
    "synthetic_perturbation",
    "synthetic_true_response",
]
