"""Seed ensembles of :class:`~scvi_trvae.TRVAE`: K independently seeded models trained on the same data.

The ensemble's counterfactual prediction of a cell is its own observation plus the members' mean
predicted shift (each member's target decoding minus its source decoding), so the real cell-to-cell
variation of the observed cells stays in the prediction. The members' disagreement about the shift is
returned with it as a per-gene and per-(cell, gene) standard deviation.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from . import _fitting
from ._blend import blend_prediction, check_blend_weight, on_prediction_scale
from ._ensemble_files import MANIFEST, load_member, member_names, read_manifest
from ._few_shot import annotate_response
from ._fitting import fresh_copy, seeded  # noqa: F401  (imported from here before _fitting existed)
from ._validation import listed
from .baselines import check_reference_shift, check_spread_scaling, reference_shift, reference_spread
from .io._atomic_write import replace_directory
from .model._model import TRVAE
from .utils import as_dense

#: ``layers`` key of the per-(cell, gene) sd over members of the predicted shift.
SHIFT_SD_LAYER = "trvae_shift_sd"
#: ``var`` column of the per-gene sd over members of the cell-averaged predicted shift.
SHIFT_SD_VAR = "trvae_shift_sd"
#: ``varm`` key of each member's cell-averaged prediction (genes x members).
MEMBER_MEANS_VARM = "trvae_member_means"


def _dense(matrix) -> np.ndarray:
    return as_dense(matrix, dtype=np.float32)


def _train_member_to_disk(directory: str, adata: AnnData, seed: int, threads: int, **kwargs: Any) -> str:
    """Process-pool entry point: train one member and save it (models are passed back on disk)."""
    _fitting.train_model(adata, seed, threads=threads, **kwargs).save(directory, overwrite=True)
    return directory


class TRVAEEnsemble:
    """K independently seeded :class:`~scvi_trvae.TRVAE` models trained on the same data.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`scvi_trvae.TRVAE.setup_anndata`: every member is built on it and trains
        on it (one AnnData shared by all, not one copy each); it is not modified.
    n_members
        Number of members (ignored when ``seeds`` is given).
    seeds
        One seed per member (default ``0 .. n_members - 1``): member ``k`` is initialised and trained
        after ``scvi.settings.seed = seeds[k]``; the caller's ``scvi.settings.seed`` and random states
        are restored after each member.
    shift_weight
        Default weight ``w`` of the members' mean response in :meth:`predict_perturbation`; ``1`` keeps the
        trVAE mean response alone, below 1 it is shrunk toward the pooled shift of the other cell types.
    deviation_weight
        Default weight ``lambda`` of each cell's deviation from the members' mean response in
        :meth:`predict_perturbation` (``1``: kept whole; ``docs/accuracy.md``).
    reference_shift
        Default kind of the shift of the other cell types blended in when ``w < 1``: ``"pooled"``,
        ``"balanced"`` or ``"similarity"`` (:func:`scvi_trvae.baselines.reference_shift`). Saved with the ensemble.
    spread_scaling
        Default of :meth:`predict_perturbation`'s ``spread_scaling``: scale the observed cells' spread around their
        mean by the other cell types' (:func:`scvi_trvae.baselines.reference_spread`). Saved with the ensemble.
    labels_key
        ``obs`` column of cell types (scvi-tools' name for it): the groups of the blend, needed unless
        ``w = lambda = 1``. Saved with the ensemble.
    **model_kwargs
        Passed to :class:`~scvi_trvae.TRVAE` for every member (``n_layers``, ``mmd_on``...).

    Examples
    --------
    >>> scvi_trvae.TRVAE.setup_anndata(adata, condition_key="condition")
    >>> ensemble = scvi_trvae.TRVAEEnsemble(adata, n_members=3, labels_key="cell_type")
    >>> ensemble.train(max_epochs=50)
    >>> pred = ensemble.predict_perturbation(control_cells, source="control", target="stimulated")
    >>> pred.var["trvae_shift_sd"]  # members' disagreement about each gene's shift
    """

    def __init__(
        self,
        adata: AnnData,
        n_members: int = 3,
        seeds: Sequence[int] | None = None,
        shift_weight: float = 1.0,
        deviation_weight: float = 1.0,
        labels_key: str | None = None,
        reference_shift: str = "pooled",
        spread_scaling: bool = False,
        **model_kwargs: Any,
    ):
        seeds = list(range(n_members)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) < 1 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be one or more distinct integers, got {seeds}.")
        manager = TRVAE._get_most_recent_anndata_manager(adata)
        if manager is None:
            raise ValueError("adata is not registered: call scvi_trvae.TRVAE.setup_anndata(adata, ...) first.")
        if labels_key is not None and labels_key not in adata.obs:
            raise KeyError(f"labels_key {labels_key!r} is not a column of adata.obs.")
        self.adata = adata
        self.seeds = seeds
        self.shift_weight = check_blend_weight(shift_weight, "shift_weight")
        self.deviation_weight = check_blend_weight(deviation_weight, "deviation_weight", upper=None)
        self.reference_shift = check_reference_shift(reference_shift)
        self.spread_scaling = check_spread_scaling(spread_scaling)
        self.labels_key = labels_key
        self.model_kwargs = dict(model_kwargs)
        self.setup_kwargs = {k: v for k, v in manager.registry["setup_args"].items() if v is not None}
        self.members: list[TRVAE] = []
        #: The intervals' calibration (:func:`scvi_trvae._calibration.calibrate`; set by ``fit_recommended``).
        self.calibration: dict[str, Any] | None = None

    @property
    def n_members(self) -> int:
        """Number of members (seeds)."""
        return len(self.seeds)

    @property
    def is_trained(self) -> bool:
        """Whether every member is trained (or loaded)."""
        return len(self.members) == self.n_members

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "not trained"
        return f"TRVAEEnsemble of {self.n_members} TRVAE models (seeds {self.seeds}), {state}"

    def train(
        self,
        n_jobs: int = 1,
        threads_per_job: int | None = None,
        member_done: Callable[[int], object] | None = None,
        **train_kwargs: Any,
    ) -> None:
        """Train every member with :meth:`scvi_trvae.TRVAE.train` (same arguments, its own seed).

        Each member is trained by :func:`scvi_trvae._fitting.train_model` on the ensemble's AnnData.
        Like scvi-tools' ``train``, this returns ``None`` (it returned the ensemble before version 0.2).

        Parameters
        ----------
        n_jobs
            ``1``: one member after the other in this process. ``> 1``: that many worker processes
            (each saves its member, which is loaded here). Same seeds, same members either way.
        threads_per_job
            Torch threads of each worker (default 1 when ``n_jobs > 1``: several processes on few
            cores are faster with one thread each).
        member_done
            Called with each member's index once it is trained (e.g. to advance a progress bar).
        **train_kwargs
            Passed to :meth:`scvi_trvae.TRVAE.train` (``max_epochs``, ``kl_weight``, ``accelerator``...).
        """
        if n_jobs < 1:
            raise ValueError(f"n_jobs must be >= 1, got {n_jobs}.")
        done = member_done or (lambda k: None)
        self.members = []
        if n_jobs == 1:
            for k, seed in enumerate(self.seeds):
                model = _fitting.train_model(
                    self.adata, seed, model_kwargs=self.model_kwargs, threads=threads_per_job, **train_kwargs
                )
                self.members.append(model)
                done(k)
            return
        threads = 1 if threads_per_job is None else threads_per_job
        # a worker process has no registration of its own: it registers its copy with the ensemble's setup
        job = {"model_kwargs": self.model_kwargs, "setup_kwargs": self.setup_kwargs, **train_kwargs}
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_member_to_disk, os.path.join(tmp, f"member_{k}"), self.adata, seed, threads, **job)
                for k, seed in enumerate(self.seeds)
            ]
            for k, future in enumerate(futures):
                self.members.append(TRVAE.load(future.result(), adata=self.adata))
                done(k)

    def _check_trained(self) -> None:
        if not self.is_trained:
            raise RuntimeError("The ensemble is not trained: call .train() (or load a saved ensemble) first.")

    def predict_perturbation(
        self,
        adata: AnnData | None = None,
        *,
        source: str,
        target: str,
        indices: Sequence[int] | np.ndarray | None = None,
        batch_size: int | None = None,
        shift_weight: float | None = None,
        deviation_weight: float | None = None,
        cell_type_key: str | None = None,
        measured: AnnData | None = None,
        reference_shift: str | None = None,
        spread_scaling: bool | None = None,
        blend: bool = True,
    ) -> AnnData:
        """Predict ``source`` cells under ``target``: each cell's observation plus the members' mean shift.

        Every member predicts in ``"counterfactual"`` mode (its shift added to the cell's own
        observation, clipped at zero); the ensemble's ``X`` is their mean, i.e. the observation plus
        the mean of the members' (clipped) shifts. Models of counts (``likelihood='nb'`` or ``'zinb'``)
        predict on the ``log1p`` scale of counts per 10,000 (:func:`~scvi_trvae._blend.on_prediction_scale`),
        and their blend is computed on that scale too.

        Parameters
        ----------
        adata, source, target, indices, batch_size
            As in :meth:`scvi_trvae.TRVAE.predict_perturbation`.
        shift_weight, deviation_weight
            ``w`` and ``lambda`` in ``x + w * m + (1 - w) * pooled + lambda * d``, with ``m`` the members' mean
            response over the predicted cells of a cell type and ``d`` each cell's deviation from it (defaults:
            the ensemble's). ``pooled`` is the reference shift of the training cells of all cell types except those
            of the predicted cells, per predicted cell type. Anything but ``w = lambda = 1`` needs the ensemble's
            ``labels_key``.
        cell_type_key
            Deprecated: pass ``labels_key`` to :class:`TRVAEEnsemble` instead (a :class:`FutureWarning`;
            when given, it is used instead of ``labels_key``).
        measured
            The few-shot path: cells of the predicted cell type measured under ``target`` (same genes). Their
            mean response ``r_k`` corrects the predicted one by empirical-Bayes shrinkage,
            ``r = r_model + omega * (r_k - r_model)`` with ``omega = tau2 / (tau2 + s2 / k)`` per gene
            (:mod:`scvi_trvae._few_shot`; ``tau2`` from the calibration, ``s2`` the within-type variance of
            the training types under ``target``), and every predicted cell is shifted by ``r - r_model``.
            They are inputs only, never in the output. Needs a calibrated ensemble (``fit_recommended``).
        reference_shift
            The kind of reference shift (default: the ensemble's; :func:`scvi_trvae.baselines.reference_shift`).
        spread_scaling
            Replace each observed cell ``x`` by its type's mean observation plus its deviation from that mean
            scaled, per gene, by the training cells' ratio of ``target`` to ``source`` spread in the other cell
            types (:func:`scvi_trvae.baselines.reference_spread`, weighted as the reference shift's kind weighs
            them); default: the ensemble's. Needs ``labels_key`` like the blend.
        blend
            ``False``: the members' mean prediction alone, the ensemble unblended (``w = lambda = 1``, the spread as
            observed), whatever the ensemble's own blend; then none of ``shift_weight``, ``deviation_weight``,
            ``reference_shift`` and ``spread_scaling`` may be given.

        Returns
        -------
        The AnnData of :meth:`scvi_trvae.TRVAE.predict_perturbation` (mode ``"counterfactual"``) with
        ``X`` the ensemble's prediction, and the members' spread of the predicted shift:
        ``layers['trvae_shift_sd']`` per cell and gene (sd over members, ``ddof=1``; 0 for one member),
        ``var['trvae_shift_sd']`` per gene (sd over members of the cell-averaged shift: large values
        mark genes whose predicted response the members disagree on), and
        ``varm['trvae_member_means']`` each member's cell-averaged prediction (genes x members).
        ``var['trvae_shift']`` is the predicted mean response (mean prediction minus mean observation of the
        predicted cells, per gene, on the prediction scale) and, for a
        calibrated ensemble (``fit_recommended``) with ``labels_key``, ``var['trvae_shift_lower']`` /
        ``var['trvae_shift_upper']`` its interval at the calibrated level
        (``uns['trvae_prediction']['interval_level']``; choose it with ``fit_recommended``'s ``interval_level``):
        ``shift ± quantile * scale``, the scale being the spread of the response across the training cell types
        (:mod:`scvi_trvae._intervals`).
        ``uns['trvae_prediction']`` records ``n_members``, ``seeds``, ``shift_weight``, ``deviation_weight``,
        ``reference_shift`` and ``spread_scaling``.
        """
        self._check_trained()
        if not blend:
            given = {"shift_weight": shift_weight, "deviation_weight": deviation_weight,
                     "reference_shift": reference_shift, "spread_scaling": spread_scaling}  # fmt: skip
            if named := [name for name, value in given.items() if value is not None]:
                raise ValueError(f"blend=False predicts the ensemble unblended: do not pass {listed(named)} with it.")
            shift_weight, deviation_weight, spread_scaling = 1.0, 1.0, False
        weight = check_blend_weight(self.shift_weight if shift_weight is None else shift_weight, "shift_weight")
        deviation = self.deviation_weight if deviation_weight is None else deviation_weight
        deviation = check_blend_weight(deviation, "deviation_weight", upper=None)
        kind = check_reference_shift(self.reference_shift if reference_shift is None else reference_shift)
        scaling = check_spread_scaling(self.spread_scaling if spread_scaling is None else spread_scaling)
        labels_key = self._labels_key(cell_type_key)
        out = self._members_prediction(adata, source, target, indices, batch_size)
        if (weight, deviation) != (1.0, 1.0) or scaling:
            out.X = self._blend(out, adata, source, target, (weight, deviation, kind, scaling), labels_key)
        info = out.uns["trvae_prediction"]
        info.update(
            n_members=self.n_members, seeds=list(self.seeds), shift_weight=weight, deviation_weight=deviation,
            reference_shift=kind, spread_scaling=scaling,
        )  # fmt: skip
        reference = self.adata if adata is None else adata
        annotate_response(self, out, reference, (source, target), labels_key, measured)
        return out

    def _labels_key(self, cell_type_key: str | None) -> str | None:
        if cell_type_key is None:
            return self.labels_key
        warnings.warn(
            "cell_type_key of TRVAEEnsemble.predict_perturbation is deprecated: pass labels_key= to "
            "TRVAEEnsemble(...) (fit_recommended and fit_self_tuned set it) and predict without it.",
            FutureWarning,
            stacklevel=3,
        )
        return cell_type_key

    def _members_prediction(self, adata, source, target, indices, batch_size) -> AnnData:
        """Return the members' mean counterfactual prediction, their spread in ``layers``, ``var`` and ``varm``."""
        preds = [
            member.predict_perturbation(
                adata, source=source, target=target, indices=indices, batch_size=batch_size, mode="counterfactual"
            )
            for member in self.members
        ]
        stacked = np.stack([_dense(p.X) for p in preds])
        out = preds[0]
        out.X = stacked.mean(0)
        ddof = 1 if self.n_members > 1 else 0
        out.layers[SHIFT_SD_LAYER] = stacked.std(0, ddof=ddof).astype(np.float32)
        member_means = stacked.mean(1)
        out.var[SHIFT_SD_VAR] = member_means.std(0, ddof=ddof).astype(np.float32)
        out.varm[MEMBER_MEANS_VARM] = member_means.T.astype(np.float32)
        return out

    def _blend(
        self, pred: AnnData, adata: AnnData | None, source: str, target: str,
        weights: tuple[float, float, str, bool], labels_key: str | None,
    ) -> np.ndarray:  # fmt: skip
        """:func:`~scvi_trvae._blend.blend_prediction` of the ensemble's prediction, per cell type.

        ``weights`` are ``(w, lambda, kind of reference shift, spread scaling)``. The observed cells and each
        predicted type's reference shift and spread (of the training cells of the other types: none of the
        predicted types) are taken on the scale of the prediction (:func:`~scvi_trvae._blend.on_prediction_scale`),
        as the inner folds take them.
        """
        if labels_key is None or labels_key not in pred.obs:
            raise ValueError(
                "shift_weight < 1, deviation_weight != 1 or spread_scaling needs the cell types: create the "
                f"ensemble with labels_key=, an obs column of the cells (got {labels_key!r})."
            )
        reference = self.adata if adata is None else adata
        member = self.members[0]
        types = pred.obs[labels_key].astype(str).to_numpy()
        training = on_prediction_scale(member, self.adata)
        observed = _dense(on_prediction_scale(member, reference[pred.obs_names]).X)
        predicted, blended = _dense(pred.X), np.empty(observed.shape, dtype=np.float32)
        predicted_types = np.unique(types)
        shift = spread = None  # pooled and balanced ones leave out every predicted type: the same for all of them
        for cell_type in predicted_types:
            rows = types == cell_type
            if shift is None or weights[2] == "similarity":
                keys = {
                    "cell_type_key": labels_key, "condition_key": member.condition_key, "cell_type": cell_type,
                    "exclude": predicted_types, "source": source, "target": target, "centre": observed[rows].mean(0),
                }  # fmt: skip
                shift = reference_shift(training, weights[2], **keys)
                spread = reference_spread(training, weights[2], **keys) if weights[3] else None
            blended[rows] = blend_prediction(observed[rows], predicted[rows], shift, *weights[:2], spread=spread)
        return blended

    # ------------------------------------------------------------------ persistence
    def save(self, dir_path: str | Path, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Save the ensemble atomically: each member with :meth:`TRVAE.save` (``member_<k>``) and ``ensemble.json``.

        Everything is written to a temporary directory beside ``dir_path`` and renamed into place (as
        :meth:`scvi_trvae.TRVAE.save` does), so an interrupted save never leaves a half-written ensemble
        where a good one was.

        Parameters
        ----------
        dir_path
            Directory to save to.
        overwrite
            Replace an ensemble saved in ``dir_path``; other files in that directory are kept.
        save_anndata
            Also save the training AnnData (with the first member).
        """
        self._check_trained()
        target = Path(dir_path)
        if target.exists() and not target.is_dir():
            raise ValueError(f"{target} is a file; pass a directory to save the ensemble to.")
        if target.exists() and any(target.iterdir()) and not overwrite:
            raise ValueError(f"{target} exists and is not empty; pass overwrite=True to replace it.")
        manifest = {
            "seeds": self.seeds, "shift_weight": self.shift_weight, "deviation_weight": self.deviation_weight,
            "reference_shift": self.reference_shift, "spread_scaling": self.spread_scaling,
            "labels_key": self.labels_key, "model_kwargs": self.model_kwargs, "calibration": self.calibration,
        }  # fmt: skip

        def write(staging: Path) -> None:
            for k, member in enumerate(self.members):
                member.save(staging / f"member_{k}", save_anndata=save_anndata and k == 0)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))

        stale_members = member_names(target) if target.is_dir() else []
        owned = {MANIFEST, *stale_members, *(f"member_{k}" for k in range(self.n_members))}
        replace_directory(target, write, owned)

    @classmethod
    def load(
        cls, dir_path: str | Path, adata: AnnData | None = None, accelerator: str = "auto", device: int | str = "auto",
    ) -> TRVAEEnsemble:  # fmt: skip
        """Load an ensemble written by :meth:`save`; each member with :meth:`scvi_trvae.TRVAE.load` (safely).

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save` (by any version: one saved before ``labels_key`` existed loads
            without it, one saved before ``deviation_weight`` existed with ``lambda = w``).
        adata
            The training AnnData (needed unless it was saved with ``save_anndata=True``); the members share it.
        accelerator, device
            Where to put the members (as in :meth:`scvi_trvae.TRVAE.load`).

        Returns
        -------
        The ensemble, its members in evaluation mode.

        Raises
        ------
        ModelFileError
            ``dir_path`` holds no saved ensemble, or a damaged one: ``ensemble.json`` missing, unreadable
            or edited, a member missing or beyond those it lists, or a member's files damaged.
        UnsafeModelFileError
            A member's ``model.pt`` holds objects that a saved model never contains (nothing was unpickled).
        """
        dir_path = Path(dir_path)
        manifest = read_manifest(dir_path)
        where = {"accelerator": accelerator, "device": device}
        first = load_member(dir_path, 0, adata, **where)
        members = [first] + [load_member(dir_path, k, first.adata, **where) for k in range(1, len(manifest["seeds"]))]
        ensemble = cls.__new__(cls)
        ensemble.adata = first.adata
        ensemble.seeds = [int(s) for s in manifest["seeds"]]
        ensemble.shift_weight = float(manifest["shift_weight"])
        # saved before deviation_weight existed: the blend then shrank the deviations with the mean
        ensemble.deviation_weight = float(manifest.get("deviation_weight", manifest["shift_weight"]))
        ensemble.labels_key = manifest.get("labels_key")  # saved before labels_key existed: None
        ensemble.reference_shift = manifest.get("reference_shift", "pooled")  # saved before it existed: pooled
        ensemble.spread_scaling = manifest.get("spread_scaling", False)  # saved before it existed: as observed
        ensemble.model_kwargs = dict(manifest["model_kwargs"])
        ensemble.setup_kwargs = {k: v for k, v in first.registry_["setup_args"].items() if v is not None}
        ensemble.members = members
        ensemble.calibration = manifest.get("calibration")  # saved before intervals existed: None
        return ensemble
