"""The peers (issue 23): released tools a scientist would pick instead of trVAE, each run in its own environment.

Each peer has a runner, ``benchmarks/peers/run_NAME.py``, that runs under ``.venv-peer-NAME/bin/python`` (made by
``make peer-NAME``, ``benchmarks/peers/peers.mk``) and speaks the protocol of ``benchmarks/peers/_protocol.py``:
it reads the split's training cells and the held-out type's control cells from one h5ad file and writes the
prediction (log-normalised, the split's genes) with its fit time and peak memory. Without its environment a peer is
"not run" (:class:`oos.registry.NotApplicable`) with the command that makes it.

Each run's ``meta.json`` (the runner's own fit time, peak memory, settings and versions) is kept under
``benchmarks/cache/peers/`` (:func:`meta_path`), beside the benchmark's cached scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np

from . import paths
from .registry import AUTO_EPOCHS, NotApplicable
from .splits import Split

#: The folder of the runners.
PEERS_DIR = paths.BENCH_DIR / "peers"
#: Where each run's meta.json is kept (git-ignored, beside the benchmark's cache).
META_DIR = paths.CACHE_DIR / "peers"


@dataclass(frozen=True)
class Peer:
    """A peer: the runner script and the environment it runs in."""

    #: Short name: ``run_NAME.py``, ``.venv-peer-NAME``, ``make peer-NAME``.
    name: str
    #: Override of the environment's Python (for tests); default ``.venv-peer-NAME/bin/python``.
    python_override: str | None = None
    #: Override of the runner (for tests); default ``benchmarks/peers/run_NAME.py``.
    runner_override: str | None = None
    #: Why the tutorial's training (``epochs="auto"``) is not run here, if it is not (a number of epochs still runs).
    not_at_tutorial_scale: str | None = None
    #: The environment's folder in the repository (default ``.venv-peer-NAME``) and the command that makes it.
    environment: str | None = None
    make_target: str | None = None

    @property
    def python(self) -> Path:
        """The environment's Python (``PEER_NAME_PYTHON`` in the environment overrides it)."""
        override = self.python_override or os.environ.get(f"PEER_{self.name.upper()}_PYTHON")
        folder = self.environment or f".venv-peer-{self.name}"
        return Path(override) if override else paths.REPO / folder / "bin" / "python"

    @property
    def make_command(self) -> str:
        return f"make {self.make_target or f'peer-{self.name}'}"

    @property
    def runner(self) -> Path:
        return Path(self.runner_override) if self.runner_override else PEERS_DIR / f"run_{self.name}.py"

    def check_runnable(self, epochs: int | str) -> None:
        """Raise :class:`NotApplicable` when this peer is not run here with ``epochs`` (and say why).

        Not at its tutorial's scale (unless ``PEER_NAME_CPU=1`` asks for a number of epochs), or its environment is
        absent or was not completed.
        """
        asked_on_cpu = os.environ.get(f"PEER_{self.name.upper()}_CPU")
        if self.not_at_tutorial_scale and (epochs == AUTO_EPOCHS or not asked_on_cpu):
            # even a few iterations take many minutes (the ODE solve of prediction through the full network)
            raise NotApplicable(f"{self.not_at_tutorial_scale}; set PEER_{self.name.upper()}_CPU=1 to run that")
        if not self.python.exists():
            raise NotApplicable(f"no {self.name} environment at {self.python}; create it with `{self.make_command}`")
        stamp = self.python.parent.parent / ".installed"
        if self.python_override is None and not stamp.exists():
            raise NotApplicable(
                f"the {self.name} environment is incomplete (no {stamp}: its install or import check failed); "
                f"see docs/peers.md and `{self.make_command}`"
            )


def runner_input(split: Split) -> ad.AnnData:
    """Training cells and the held-out type's control cells in one AnnData, told apart by ``obs['split']``."""
    keys = [split.condition_key, split.cell_type_key]
    parts = {"train": split.train, "predict": split.control}
    cells = ad.concat(parts, label="split", index_unique="-")
    obs = cells.obs[keys].astype(str)
    obs["split"] = cells.obs["split"].astype(str).to_numpy()
    obs["cell_id"] = np.concatenate([p.obs_names.to_numpy() for p in parts.values()])
    layers = {"counts": cells.layers["counts"]} if split.counts else {}
    return ad.AnnData(X=cells.X, obs=obs, var=cells.var[[]], layers=layers)


def meta_path(split: Split, peer: str, seed: int, epochs: int | str) -> Path:
    """Where the runner's meta.json of one run is kept (the split's genes and the epochs are in the name)."""
    from .cache import slug  # oos.cache imports the methods, which import this module

    name = f"{slug(split.cell_type)}__{slug(split.target)}__{split.train.n_vars}g__{slug(peer)}__seed{seed}__e{epochs}"
    return META_DIR / split.dataset / f"{name}.json"


def _environment(threads: int) -> dict[str, str]:
    """The runner's environment variables: one BLAS/OpenMP/XLA thread pool of ``threads``, CPU only."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[key] = str(threads)
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}"
    env["JAX_PLATFORMS"] = "cpu"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("PYTHONPATH", None)
    return env


def run_peer(peer: Peer, split: Split, seed: int, epochs: int | str, *, threads: int = 1) -> np.ndarray:
    """Fit ``peer`` on ``split`` in its environment; return the prediction of ``split.control`` under the target.

    ``epochs`` is :data:`oos.registry.AUTO_EPOCHS` for the peer's tutorial setting, or a number of epochs.
    The runner's meta.json is copied to :func:`meta_path`.
    """
    peer.check_runnable(epochs)
    with tempfile.TemporaryDirectory() as tmp:
        data_path, out_dir = Path(tmp) / "cells.h5ad", Path(tmp) / "out"
        # CPA's and scPRAM's anndata < 0.10 cannot read anndata 0.13's encoding of pandas 3 strings
        with ad.settings.override(allow_write_nullable_strings=False):
            runner_input(split).write_h5ad(data_path)
        command = [
            str(peer.python), str(peer.runner), str(data_path), str(out_dir),
            "--condition-key", split.condition_key, "--cell-type-key", split.cell_type_key,
            "--cell-type", split.cell_type, "--source", split.source, "--target", split.target,
            "--seed", str(seed), "--threads", str(threads),
        ]  # fmt: skip
        if epochs != AUTO_EPOCHS:
            command += ["--epochs", str(epochs)]
        env = _environment(threads) | {"PYTHONPATH": str(PEERS_DIR)}
        # in the temporary folder: some peers write files into the working directory (CPA: model.pt, history.csv)
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-3:]
            raise RuntimeError(f"{peer.name} runner failed (exit {result.returncode}): {' | '.join(tail)}")
        pred = np.load(out_dir / "pred.npy")
        target = meta_path(split, peer.name, seed, epochs)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out_dir / "meta.json", target)
    return pred


def read_meta(split: Split, peer: str, seed: int, epochs: int | str) -> dict | None:
    """The kept meta.json of a run, or None."""
    path = meta_path(split, peer, seed, epochs)
    return json.loads(path.read_text()) if path.exists() else None


def fit_predict_peer(split: Split, seed: int, epochs: int | str, *, peer: str) -> np.ndarray:
    """A peer as a benchmark method (:class:`oos.registry.FitPredict`)."""
    import torch

    return run_peer(PEERS[peer], split, seed, epochs, threads=max(torch.get_num_threads(), 1))


#: (method name, peer, description) of the registered peers, in table order.
PEER_METHODS: list[tuple[str, str, str]] = [
    (
        "scGen (pertpy)",
        "scgen",
        "pertpy 1.0.3 pt.tl.Scgen, its tutorial's training (100 epochs, batch 32, early stop 25)",
    ),
    ("CPA", "cpa", "cpa-tools 0.8.1, its Kang tutorial's settings; cell type as covariate"),
    ("biolord", "biolord", "biolord 0.0.3, its pipeline tutorial's settings; condition and cell type as attributes"),
    ("CellFlow", "cellflow", "cellflow-tools 0.0.9 (JAX, CPU), flow matching in PCA space"),
    ("scPRAM", "scpram", "scpram 0.0.3, its PBMC tutorial (100 epochs, predict with ratio 0.005)"),
]


#: The peers by short name.
PEERS: dict[str, Peer] = {peer: Peer(peer) for _, peer, _ in PEER_METHODS}
PEERS["cellflow"] = Peer(
    "cellflow",
    not_at_tutorial_scale=(
        "CellFlow's tutorial trains 500,000 iterations of a 59.4 M-parameter network (batch 1,024); measured here at "
        "about 20 s per iteration on one CPU thread (months); run fewer with --epochs CellFlow=N (iterations)"
    ),
)
#: This package's recommended pipeline through the same protocol, in its own environment: its fit time and peak
#: memory are measured as each peer's are (in the benchmark's process they would include everything run before).
OWN_PROCESS = (
    "trVAE ensemble + shrink (own process)",
    "trvae",
    "the recommended pipeline (fit_recommended) run like a peer: in a fresh process of .venv, timed and measured alike",
)
PEERS["trvae"] = Peer("trvae", environment=".venv", make_target=".venv/.installed")


def register_peers() -> None:
    """Register every peer, and the pipeline run like one, as benchmark methods (one seed: each is slow)."""
    from .registry import PACKAGE_SOURCES, register

    for name, peer, description in [*PEER_METHODS, OWN_PROCESS]:
        # a peer runs in its own environment: its results depend on its runner and the protocol, not on this package
        sources = (f"benchmarks/peers/run_{peer}.py", "benchmarks/peers/_protocol.py")
        if peer == OWN_PROCESS[1]:
            sources += PACKAGE_SOURCES
        register(
            name, fit_predict_peer, description, epochs=AUTO_EPOCHS, seeds="one", options={"peer": peer},
            sources=sources, check=PEERS[peer].check_runnable,
        )  # fmt: skip
