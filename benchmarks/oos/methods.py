"""The benchmark's methods: one function per model, each taking a :class:`oos.splits.Split`, and their registration.

Adding a method is one :func:`oos.registry.register` call at the end of this file (or of another module
that this one imports).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from _cyclegan import CycleGAN
from _saucie import SaucieLike
from _scgen import ScGen

from scvi_trvae import baselines

from .expression import TARGET_LIBRARY_SIZE, dense
from .registry import AUTO_EPOCHS, METHODS, NotApplicable, register
from .scarches import fit_predict_scarches
from .splits import Split

__all__ = ["AUTO_EPOCHS", "METHODS", "NotApplicable", "register"]


def _trainer_kwargs() -> dict[str, Any]:
    return {"accelerator": "cpu", "enable_progress_bar": False}


def fit_predict_trvae(
    split: Split, seed: int, epochs: int | str, *, mmd_on: Literal["y", "z"] | None = "y", preset: str | None = None
) -> np.ndarray:
    """:class:`scvi_trvae.TRVAE` with its defaults (``nb`` on raw counts); ``mmd_on`` gives CVAE / MMD-CVAE.

    ``preset`` names a :meth:`scvi_trvae.TRVAE.paper_preset` instead: the paper's network and loss
    weights, ``mse`` on the log-normalised ``X`` as in the paper (also on count data sets).
    ``epochs="auto"`` keeps the model's own choice (about 1,500 minibatch steps).
    """
    import scvi

    from scvi_trvae import TRVAE

    scvi.settings.seed = seed
    train = split.train.copy()
    if preset is None:
        TRVAE.setup_anndata(
            train, condition_key=split.condition_key, layer="counts" if split.counts else None,
            is_count_data=split.counts,
        )  # fmt: skip
        model, train_kwargs = TRVAE(train, mmd_on=mmd_on), {}
    else:
        TRVAE.setup_anndata(train, condition_key=split.condition_key)
        arguments = TRVAE.paper_preset(preset)
        model, train_kwargs = TRVAE(train, **arguments["model"]), arguments["train"]
    model.train(max_epochs=None if epochs == AUTO_EPOCHS else epochs, **train_kwargs, **_trainer_kwargs())
    return dense(model.predict_perturbation(split.control, source=split.source, target=split.target).X)


def fit_predict_scvi(split: Split, seed: int, epochs: int | str) -> np.ndarray:
    """scVI with the condition as batch; decode the control cells under ``target`` (log1p CP10k)."""
    if not split.counts:
        raise NotApplicable("scVI models raw counts; this data set is log-normalised")
    import scvi

    scvi.settings.seed = seed
    train = split.train.copy()
    scvi.model.SCVI.setup_anndata(train, layer="counts", batch_key=split.condition_key)
    model = scvi.model.SCVI(train)
    model.train(max_epochs=epochs, **_trainer_kwargs())
    expression = model.get_normalized_expression(
        split.control.copy(), transform_batch=[split.target], library_size=TARGET_LIBRARY_SIZE, return_numpy=True
    )
    return np.log1p(np.asarray(expression, dtype=np.float32))


def fit_predict_scgen(split: Split, seed: int, epochs: int | str) -> np.ndarray:
    """scGen: VAE on log-normalised data, class-balanced latent arithmetic (``benchmarks/_scgen.py``)."""
    train = split.train
    model = ScGen(seed=seed).fit(train.X, epochs)
    return model.predict(
        train.X, train.obs[split.condition_key].to_numpy(), train.obs[split.cell_type_key].to_numpy(),
        split.control.X, split.source, split.target,
    )  # fmt: skip


def fit_predict_saucie(split: Split, seed: int, epochs: int | str) -> np.ndarray:
    """SAUCIE-like deterministic autoencoder with an MMD bottleneck (``benchmarks/_saucie.py``)."""
    model = SaucieLike(seed=seed).fit(split.train.X, split.train.obs[split.condition_key].to_numpy(), epochs)
    return model.predict(split.control.X, split.target)


def fit_predict_cyclegan(split: Split, seed: int, epochs: int | str) -> np.ndarray:
    """CycleGAN between the source and the target cells of the training set (``benchmarks/_cyclegan.py``)."""
    conditions = split.train.obs[split.condition_key].to_numpy()
    x = split.train.X
    model = CycleGAN(seed=seed).fit(x[conditions == split.source], x[conditions == split.target], epochs)
    return model.predict(split.control.X)


def fit_predict_no_response(split: Split, seed: int, epochs: int | str) -> np.ndarray:
    """The held-out type's control cells, unchanged."""
    return dense(split.control.X)


def fit_predict_mean_shift(
    split: Split, seed: int, epochs: int | str, *, balanced: bool = False, similarity: bool = False
) -> np.ndarray:
    """Control cells plus the other types' mean ``target - source`` shift (:func:`scvi_trvae.baselines.mean_shift`).

    ``balanced``: every other type's own shift weighs the same; ``similarity``: weighted by closeness of the
    types' training control cells to the held-out type's (a PCA of the training control cells).
    """
    pred = baselines.mean_shift(
        split.train, cell_type_key=split.cell_type_key, condition_key=split.condition_key, cell_type=split.cell_type,
        source=split.source, target=split.target, balanced=balanced, similarity=similarity,
    )  # fmt: skip
    if not np.array_equal(pred.obs_names, split.control.obs_names):
        raise RuntimeError("mean_shift returned cells other than the held-out type's control cells")
    return dense(pred.X)


# "auto": TRVAE.train(max_epochs=None), about 1,500 minibatch steps (80 epochs on the Kang NK split)
register(
    "trVAE", fit_predict_trvae, "scvi_trvae.TRVAE defaults (MMD on y)", epochs=AUTO_EPOCHS, options={"mmd_on": "y"}
)
register(
    "MMD-CVAE", fit_predict_trvae, "TRVAE with mmd_on='z'", epochs=AUTO_EPOCHS, seeds="one", options={"mmd_on": "z"}
)
register("CVAE", fit_predict_trvae, "TRVAE with mmd_on=None (no MMD)", epochs=AUTO_EPOCHS, options={"mmd_on": None})
register(
    "trVAE (paper network)", fit_predict_trvae,
    "TRVAE.paper_preset('kang'): 800-800-128, z 20, y 128, the paper's bandwidths and loss weights; mse on log data",
    epochs=AUTO_EPOCHS, options={"preset": "kang"},
)  # fmt: skip
register("scGen", fit_predict_scgen, "VAE 800-800, z 100 + balanced latent arithmetic", epochs=100, seeds="one")
register(
    "SAUCIE-like", fit_predict_saucie, "deterministic AE, MMD on bottleneck, conditional decoder", epochs=200,
    seeds="one", revision=1,  # 1: minibatches from scvi_trvae.data.ConditionBalancedSampler
)  # fmt: skip
register("CycleGAN", fit_predict_cyclegan, "residual MLP generators, LSGAN + cycle + identity", epochs=200, seeds="one")
register(
    "scVI", fit_predict_scvi, "scvi.model.SCVI, condition as batch, transform_batch", epochs=400, seeds="one",
    counts_only=True,
)  # fmt: skip
register(
    "scArches trVAE", fit_predict_scarches,
    "scarches.models.TRVAE 0.6.1, its defaults (MMD on z, 256-64, z 10; nb on counts), 400 epochs + early stop",
    epochs=AUTO_EPOCHS, seeds="one",
)  # fmt: skip
register(
    "scArches trVAE (paper)", fit_predict_scarches,
    "scarches.models.TRVAE, the paper's network (800-800-128, MMD on y, z 40, MMD weight 100, KL 5e-5; mse)",
    epochs=AUTO_EPOCHS, seeds="one", options={"settings": "paper"},
)  # fmt: skip
#: What the baselines' results depend on (their code version hashes these; see MethodSpec.sources)
BASELINE_SOURCES = ("src/scvi_trvae/baselines.py", "src/scvi_trvae/utils.py", "src/scvi_trvae/_validation.py")
register(
    "control + mean shift", fit_predict_mean_shift, "scvi_trvae.baselines.mean_shift", seeds="deterministic",
    sources=BASELINE_SOURCES,
)  # fmt: skip
register(
    "control + balanced mean shift", fit_predict_mean_shift,
    "scvi_trvae.baselines.mean_shift(balanced=True): the mean of the other types' own shifts", seeds="deterministic",
    options={"balanced": True}, sources=BASELINE_SOURCES,
)  # fmt: skip
register(
    "control + similarity mean shift", fit_predict_mean_shift,
    "scvi_trvae.baselines.mean_shift(similarity=True): the other types' shifts, softmax-weighted by closeness of "
    "their control cells to the held-out type's (PCA of the training control cells)",
    seeds="deterministic", options={"similarity": True}, sources=BASELINE_SOURCES,
)  # fmt: skip
register(
    "no response", fit_predict_no_response, "scvi_trvae.baselines.no_response", seeds="deterministic",
    sources=BASELINE_SOURCES,
)  # fmt: skip

# issue 13's methods (ensembles, self-tuning, shift shrinkage) register themselves after the ones above
from . import ensembles  # noqa: E402, F401

# issue 23's peers (released tools, each run in its own environment: benchmarks/peers/)
from .peers import register_peers  # noqa: E402

register_peers()
