"""Seed ensembles of :class:`~scvi_trvae.TRVAE`: K independently seeded models trained on the same data.

The ensemble's counterfactual prediction of a cell is its own observation plus the members' mean
predicted shift (each member's target decoding minus its source decoding), so the real cell-to-cell
variation of the observed cells stays in the prediction. The members' disagreement about the shift is
returned with it as a per-gene and per-(cell, gene) standard deviation.
"""

from __future__ import annotations

import json
import os
import random
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import scvi
import torch
from anndata import AnnData
from scvi.data import _constants

from ._blend import blend_prediction, check_blend_weight
from ._quiet import quiet
from .baselines import pooled_shift
from .io._atomic_write import replace_directory
from .io._persistence import ModelFileError
from .model._model import TRVAE
from .utils import as_dense

#: ``layers`` key of the per-(cell, gene) sd over members of the predicted shift.
SHIFT_SD_LAYER = "trvae_shift_sd"
#: ``var`` column of the per-gene sd over members of the cell-averaged predicted shift.
SHIFT_SD_VAR = "trvae_shift_sd"
#: ``varm`` key of each member's cell-averaged prediction (genes x members).
MEMBER_MEANS_VARM = "trvae_member_means"
_MANIFEST = "ensemble.json"
_MEMBER_DIR = re.compile(r"member_(\d+)")


def _dense(matrix) -> np.ndarray:
    return as_dense(matrix, dtype=np.float32)


def fresh_copy(adata: AnnData) -> AnnData:
    """Copy ``adata`` without scvi-tools' registration marks, so that registering it leaves ``adata`` alone."""
    copy = adata.copy()
    for key in (_constants._SCVI_UUID_KEY, _constants._MANAGER_UUID_KEY):
        copy.uns.pop(key, None)
    return copy


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block after ``scvi.settings.seed = seed``, then give the caller back its seed and random states.

    What the block draws (initial weights, minibatches, dropout) depends on ``seed`` alone, and the
    caller's ``scvi.settings.seed`` and the random states of Python, numpy and torch are as they were.
    """
    previous = scvi.settings.seed
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    with quiet():  # Lightning's "Seed set to" line
        scvi.settings.seed = seed
    try:
        yield
    finally:
        with quiet():
            scvi.settings.seed = previous  # re-seeds everything, so the states are put back afterwards
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _train_member(
    adata: AnnData,
    setup_kwargs: dict[str, Any],
    model_kwargs: dict[str, Any],
    train_kwargs: dict[str, Any],
    seed: int,
    threads: int | None,
) -> TRVAE:
    """Build and train one member on a registered copy of ``adata``, seeded with ``seed`` (see :func:`seeded`)."""
    if threads is not None:
        torch.set_num_threads(threads)
    with seeded(seed):
        adata = fresh_copy(adata)
        TRVAE.setup_anndata(adata, **setup_kwargs)
        model = TRVAE(adata, **model_kwargs)
        model.train(**train_kwargs)
    return model


def _train_member_to_disk(directory: str, *args: Any) -> str:
    """Process-pool entry point: train one member and save it (models are passed back on disk)."""
    _train_member(*args).save(directory, overwrite=True)
    return directory


class TRVAEEnsemble:
    """K independently seeded :class:`~scvi_trvae.TRVAE` models trained on the same data.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`scvi_trvae.TRVAE.setup_anndata` (its setup is reused for every
        member; it is not modified).
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
    **model_kwargs
        Passed to :class:`~scvi_trvae.TRVAE` for every member (``n_layers``, ``mmd_on``...).

    Examples
    --------
    >>> ensemble = scvi_trvae.TRVAEEnsemble(adata, n_members=3)
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
        **model_kwargs: Any,
    ):
        seeds = list(range(n_members)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) < 1 or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be one or more distinct integers, got {seeds}.")
        manager = TRVAE._get_most_recent_anndata_manager(adata)
        if manager is None:
            raise ValueError("adata is not registered: call scvi_trvae.TRVAE.setup_anndata(adata, ...) first.")
        self.adata = adata
        self.seeds = seeds
        self.shift_weight = check_blend_weight(shift_weight, "shift_weight")
        self.deviation_weight = check_blend_weight(deviation_weight, "deviation_weight", upper=None)
        self.model_kwargs = dict(model_kwargs)
        self.setup_kwargs = {k: v for k, v in manager.registry["setup_args"].items() if v is not None}
        self.members: list[TRVAE] = []

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    @property
    def is_trained(self) -> bool:
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
    ) -> TRVAEEnsemble:
        """Train every member with :meth:`scvi_trvae.TRVAE.train` (same arguments, its own seed).

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
        jobs = [(self.adata, self.setup_kwargs, self.model_kwargs, train_kwargs, seed) for seed in self.seeds]
        done = member_done or (lambda k: None)
        if n_jobs == 1:
            self.members = []
            for k, job in enumerate(jobs):
                self.members.append(_train_member(*job, threads_per_job))
                done(k)
            return self
        threads = 1 if threads_per_job is None else threads_per_job
        with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(n_jobs, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_train_member_to_disk, os.path.join(tmp, f"member_{k}"), *job, threads)
                for k, job in enumerate(jobs)
            ]
            self.members = []
            for k, future in enumerate(futures):
                self.members.append(TRVAE.load(future.result(), adata=self._member_adata()))
                done(k)
        return self

    def _member_adata(self) -> AnnData:
        adata = fresh_copy(self.adata)
        TRVAE.setup_anndata(adata, **self.setup_kwargs)
        return adata

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
    ) -> AnnData:
        """Predict ``source`` cells under ``target``: each cell's observation plus the members' mean shift.

        Every member predicts in ``"counterfactual"`` mode (its shift added to the cell's own
        observation, clipped at zero); the ensemble's ``X`` is their mean, i.e. the observation plus
        the mean of the members' (clipped) shifts.

        Parameters
        ----------
        adata, source, target, indices, batch_size
            As in :meth:`scvi_trvae.TRVAE.predict_perturbation`.
        shift_weight, deviation_weight
            ``w`` and ``lambda`` in ``x + w * m + (1 - w) * pooled + lambda * d``, with ``m`` the members' mean
            response over the predicted cells of a cell type and ``d`` each cell's deviation from it (defaults:
            the ensemble's). The pooled shift is that of the training cells of all cell types except those of
            the predicted cells. Anything but ``w = lambda = 1`` needs ``cell_type_key`` and a model of
            log-normalised data (``likelihood='mse'``), where the prediction is on the scale of ``X``.
        cell_type_key
            ``obs`` column of cell types, needed unless ``w = lambda = 1``.

        Returns
        -------
        The AnnData of :meth:`scvi_trvae.TRVAE.predict_perturbation` (mode ``"counterfactual"``) with
        ``X`` the ensemble's prediction, and the members' spread of the predicted shift:
        ``layers['trvae_shift_sd']`` per cell and gene (sd over members, ``ddof=1``; 0 for one member),
        ``var['trvae_shift_sd']`` per gene (sd over members of the cell-averaged shift: large values
        mark genes whose predicted response the members disagree on), and
        ``varm['trvae_member_means']`` each member's cell-averaged prediction (genes x members).
        ``uns['trvae_prediction']`` records ``n_members``, ``seeds``, ``shift_weight`` and ``deviation_weight``.
        """
        self._check_trained()
        weight = check_blend_weight(self.shift_weight if shift_weight is None else shift_weight, "shift_weight")
        deviation = self.deviation_weight if deviation_weight is None else deviation_weight
        deviation = check_blend_weight(deviation, "deviation_weight", upper=None)
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
        if (weight, deviation) != (1.0, 1.0):
            out.X = self._blend(out, adata, source, target, (weight, deviation), cell_type_key)
        info = out.uns["trvae_prediction"]
        info.update(n_members=self.n_members, seeds=list(self.seeds), shift_weight=weight, deviation_weight=deviation)
        return out

    def _blend(
        self, pred: AnnData, adata: AnnData | None, source: str, target: str, weights: tuple[float, float],
        cell_type_key: str | None,
    ) -> np.ndarray:  # fmt: skip
        """:func:`~scvi_trvae._blend.blend_prediction` of the ensemble's prediction, per cell type."""
        if self.members[0].module.is_count_model:
            raise ValueError(
                "shift_weight < 1 or deviation_weight != 1 needs a model of log-normalised data (likelihood='mse')."
            )
        if cell_type_key is None or cell_type_key not in pred.obs:
            raise ValueError(
                "shift_weight < 1 or deviation_weight != 1 needs cell_type_key, an obs column of the cells "
                f"(got {cell_type_key!r})."
            )
        reference = self.adata if adata is None else adata
        types = pred.obs[cell_type_key].astype(str).to_numpy()
        shift = pooled_shift(
            self.adata, cell_type_key=cell_type_key, condition_key=self.members[0].condition_key,
            exclude=np.unique(types), source=source, target=target,
        )  # fmt: skip
        return blend_prediction(_dense(reference[pred.obs_names].X), _dense(pred.X), shift, *weights, groups=types)

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
            "model_kwargs": self.model_kwargs,
        }  # fmt: skip

        def write(staging: Path) -> None:
            for k, member in enumerate(self.members):
                member.save(staging / f"member_{k}", save_anndata=save_anndata and k == 0)
            (staging / _MANIFEST).write_text(json.dumps(manifest, indent=1))

        stale_members = _member_names(target) if target.is_dir() else []
        owned = {_MANIFEST, *stale_members, *(f"member_{k}" for k in range(self.n_members))}
        replace_directory(target, write, owned)

    @classmethod
    def load(cls, dir_path: str | Path, adata: AnnData | None = None) -> TRVAEEnsemble:
        """Load an ensemble written by :meth:`save`; each member with :meth:`scvi_trvae.TRVAE.load`.

        Parameters
        ----------
        dir_path
            Directory written by :meth:`save`.
        adata
            The training AnnData (needed unless it was saved with ``save_anndata=True``).

        Raises
        ------
        ModelFileError
            ``dir_path`` holds no saved ensemble, or a damaged one: ``ensemble.json`` missing, unreadable
            or edited, a member missing or beyond those it lists, or a member's files damaged.
        UnsafeModelFileError
            A member's ``model.pt`` holds objects that a saved model never contains (nothing was unpickled).
        """
        dir_path = Path(dir_path)
        manifest = _read_manifest(dir_path)
        first = _load_member(dir_path, 0, adata)
        members = [first] + [_load_member(dir_path, k, first.adata) for k in range(1, len(manifest["seeds"]))]
        ensemble = cls.__new__(cls)
        ensemble.adata = first.adata
        ensemble.seeds = [int(s) for s in manifest["seeds"]]
        ensemble.shift_weight = float(manifest["shift_weight"])
        # saved before deviation_weight existed: the blend then shrank the deviations with the mean
        ensemble.deviation_weight = float(manifest.get("deviation_weight", manifest["shift_weight"]))
        ensemble.model_kwargs = dict(manifest["model_kwargs"])
        ensemble.setup_kwargs = {k: v for k, v in first.registry_["setup_args"].items() if v is not None}
        ensemble.members = members
        return ensemble


class _NoEnsembleError(ModelFileError, FileNotFoundError):
    """A directory without ``ensemble.json`` or members: no ensemble was saved there (it may hold one model)."""


def _member_names(directory: Path) -> list[str]:
    return sorted((n for n in os.listdir(directory) if _MEMBER_DIR.fullmatch(n)), key=lambda n: int(n[7:]))


def _read_manifest(directory: Path) -> dict[str, Any]:
    """Read ``ensemble.json`` and check it against the members in ``directory``; one clear error for each problem."""
    if not directory.is_dir():
        raise _NoEnsembleError(f"No saved ensemble at {directory}: the directory does not exist.")
    path, present = directory / _MANIFEST, _member_names(directory)
    if not path.is_file():
        if present:
            raise ModelFileError(
                f"{directory} holds ensemble members ({', '.join(present)}) but no {_MANIFEST}: the save that "
                "wrote it did not finish, or the file was deleted. Save the ensemble again."
            )
        raise _NoEnsembleError(f"{directory} holds no saved TRVAEEnsemble ({_MANIFEST} is missing).")
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path} is not valid JSON ({error}): it is damaged or was edited.") from error
    problems = _manifest_problems(manifest)
    if problems:
        raise ModelFileError(f"{path} is damaged or was edited: {'; '.join(problems)}. Save the ensemble again.")
    listed = [f"member_{k}" for k in range(len(manifest["seeds"]))]
    missing, extra = [n for n in listed if n not in present], [n for n in present if n not in listed]
    if missing or extra:
        problem = f"{', '.join(missing)} missing" if missing else f"also {', '.join(extra)}, which it does not list"
        raise ModelFileError(
            f"{directory} does not match its {_MANIFEST}: it lists {len(listed)} members (seeds {manifest['seeds']}) "
            f"but the directory holds {', '.join(present) or 'none'} ({problem}). A member was deleted or added, or "
            f"{_MANIFEST} was edited; save the ensemble again."
        )
    return manifest


def _manifest_problems(manifest: Any) -> list[str]:
    if not isinstance(manifest, dict):
        return [f"it holds a {type(manifest).__name__}, not the ensemble's settings"]
    problems = [f"no {key!r}" for key in ("seeds", "shift_weight", "model_kwargs") if key not in manifest]
    seeds, weight = manifest.get("seeds", [0]), manifest.get("shift_weight", 1.0)
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        problems.append(f"'seeds' must be a list of one or more integers, got {seeds!r}")
    elif len(set(seeds)) != len(seeds):
        problems.append(f"'seeds' must be distinct, got {seeds!r}")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= weight <= 1.0:
        problems.append(f"'shift_weight' must be a number between 0 and 1, got {weight!r}")
    deviation = manifest.get("deviation_weight", 1.0)
    if isinstance(deviation, bool) or not isinstance(deviation, int | float) or not 0.0 <= deviation < float("inf"):
        problems.append(f"'deviation_weight' must be a number >= 0, got {deviation!r}")
    if not isinstance(manifest.get("model_kwargs", {}), dict):
        problems.append(f"'model_kwargs' must be a mapping, got {manifest['model_kwargs']!r}")
    return problems


def _load_member(directory: Path, k: int, adata: AnnData | None) -> TRVAE:
    """:meth:`TRVAE.load` of member ``k``; its errors say which member of which ensemble failed."""
    try:
        return TRVAE.load(str(directory / f"member_{k}"), adata=adata)
    except ModelFileError as error:
        raise type(error)(f"Member {k} of the ensemble in {directory} cannot be loaded: {error}") from error
