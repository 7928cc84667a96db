"""Training and prediction are quiet by default; ``scvi_trvae.utils.settings.verbosity`` brings the details back."""

from __future__ import annotations

import logging
import warnings

import pytest
import scipy.sparse as sp

from scvi_trvae import TRVAE
from scvi_trvae._quiet import CHATTY_LOGGERS
from scvi_trvae.model import _prediction
from scvi_trvae.utils import settings

#: What scvi-tools and Lightning print around a fit and a prediction when left alone.
NOISE = (
    "GPU available",
    "TPU available",
    "Tip:",
    "LeafSpec",
    "log_every_n_steps",
    "Sparse CSR",
    "not setup with scvi-tools",
    "appears to be a copy",
    "`Trainer.fit` stopped",
)
LOGGERS = ("", "scvi", "lightning.pytorch", "lightning.fabric")


def _fit_and_predict(adata, **train_kwargs) -> list[str]:
    """Train one epoch and predict; return the messages of every warning raised (all recorded)."""
    TRVAE.setup_anndata(adata, condition_key="condition")
    model = TRVAE(adata, n_hidden=16, n_latent=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=1, **train_kwargs)
        control = adata[adata.obs["condition"] == "control"].copy()  # a copy: scvi-tools transfers the setup
        model.predict_perturbation(control, source="control", target="stimulated")
        model.get_latent_representation(control)
    return [str(w.message) for w in caught]


@pytest.fixture
def verbosity():
    """Restore the package's verbosity after the test."""
    before = settings.verbosity
    yield settings
    settings.verbosity = before


@pytest.mark.parametrize("sparse", [False, True])
def test_fit_and_predict_are_quiet_by_default(small_adata, sparse, capsys, caplog, monkeypatch):
    if sparse:  # sparse CSR minibatches: torch's beta notes (printed once per process, so first run alone)
        small_adata.X = sp.csr_matrix(small_adata.X)
        monkeypatch.setattr(_prediction, "use_sparse_input", lambda density, batch_size: True)
    caplog.set_level(logging.DEBUG)
    filters = list(warnings.filters)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}

    messages = _fit_and_predict(small_adata)

    out, err = capsys.readouterr()
    printed = "\n".join([out, err, caplog.text, *messages])
    assert not [noise for noise in NOISE if noise in printed], printed
    assert out == ""  # the progress bar is on stderr, and it is the only line
    assert "\n" not in err.strip()  # one line, redrawn in place (\r)
    assert err.strip().startswith("Training")
    assert warnings.filters == filters
    assert {name: logging.getLogger(name).level for name in LOGGERS} == levels


def test_no_progress_bar_prints_nothing(small_adata, capsys):
    _fit_and_predict(small_adata, enable_progress_bar=False)
    assert capsys.readouterr() == ("", "")


def test_verbosity_info_brings_the_details_back(small_adata, capsys, caplog, verbosity):
    verbosity.verbosity = "INFO"
    caplog.set_level(logging.DEBUG)
    # loggers at their defaults, whatever earlier tests left (the benchmarks' scripts set Lightning's to ERROR)
    for name in ("lightning", *CHATTY_LOGGERS):
        caplog.set_level(logging.NOTSET, logger=name)
    messages = _fit_and_predict(small_adata, enable_progress_bar=False)
    out, err = capsys.readouterr()
    printed = "\n".join([out, err, caplog.text, *messages])
    assert "GPU available" in printed
    assert "appears to be a copy" in printed or "not setup with scvi-tools" in printed
    assert any("LeafSpec" in message for message in messages)


def test_verbosity_accepts_levels_and_names_only(verbosity):
    verbosity.verbosity = logging.DEBUG
    assert verbosity.verbosity == logging.DEBUG
    verbosity.verbosity = "error"
    assert verbosity.verbosity == logging.ERROR
    with pytest.raises(ValueError, match="logging level"):
        verbosity.verbosity = "chatty"
