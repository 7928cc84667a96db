"""Tests of the peers (issue 23): the runner protocol with a fake peer, and each real peer's quick run where its
environment exists (``make peer-NAME``; skipped otherwise).

``benchmarks/`` is on the test path (``pythonpath`` in ``pyproject.toml``), as it is for its scripts.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import numpy as np
import pytest
import torch
from oos import cli, paths, peers
from oos.datasets import DatasetSpec
from oos.methods import METHODS
from oos.registry import AUTO_EPOCHS, NotApplicable
from oos.splits import make_split

from scvi_trvae.datasets import synthetic_perturbation
from scvi_trvae.metrics import METRIC_KEYS

KANG = paths.DATA_DIR / "kang2018_pbmc_ifnb_lognorm.h5ad"

#: A fake peer: control cells plus the mean (target - control) shift of the training cells, on the protocol.
FAKE_RUNNER = """
import numpy as np
from _protocol import cells_to_predict, main, training_cells


def fit_predict(cells, args):
    train = training_cells(cells)
    x = np.asarray(train.X.todense() if hasattr(train.X, "todense") else train.X)
    condition = train.obs[args.condition_key].to_numpy()
    shift = x[condition == args.target].mean(0) - x[condition == args.source].mean(0)
    control = cells_to_predict(cells)
    assert (control.obs[args.cell_type_key] == args.cell_type).all()
    assert (control.obs[args.condition_key] == args.source).all()
    assert set(control.obs["cell_id"]) <= set(train.obs["cell_id"])  # the control cells are training cells too
    x_control = np.asarray(control.X.todense() if hasattr(control.X, "todense") else control.X)
    return x_control + shift, {"epochs": args.epochs, "seed": args.seed, "threads": args.threads}


if __name__ == "__main__":
    main(fit_predict, ["numpy", "not-a-distribution"])
"""


@pytest.fixture
def toy_split():
    adata = synthetic_perturbation(n_cell_types=3, n_genes=60, n_cells_per_group=30, n_response_genes=6, seed=0)
    spec = DatasetSpec(
        file="toy.h5ad", control="control", perturbed=("stimulated",), kind="lognorm", n_top_genes=None,
        description="toy",
    )  # fmt: skip
    return make_split(adata, "toy", spec, "type_A", "stimulated", None)


@pytest.fixture
def fake_peer(tmp_path, monkeypatch):
    runner = tmp_path / "run_fake.py"
    runner.write_text(textwrap.dedent(FAKE_RUNNER))
    monkeypatch.setattr(peers, "META_DIR", tmp_path / "meta")
    return peers.Peer("fake", python_override=sys.executable, runner_override=str(runner))


def test_runner_input_marks_training_and_predicted_cells(toy_split):
    cells = peers.runner_input(toy_split)
    split = cells.obs["split"].to_numpy()
    assert (split == "train").sum() == toy_split.train.n_obs and (split == "predict").sum() == toy_split.control.n_obs
    assert list(cells.obs.loc[split == "predict", "cell_id"]) == list(toy_split.control.obs_names)
    assert "stimulated" not in set(cells.obs.loc[(cells.obs["cell_type"] == "type_A").to_numpy(), "condition"])
    assert not cells.layers  # log-normalised data set: no counts travel


def test_fake_peer_follows_the_protocol(fake_peer, toy_split):
    pred = peers.run_peer(fake_peer, toy_split, seed=3, epochs=2)
    x = lambda a: np.asarray(a.X.todense() if hasattr(a.X, "todense") else a.X)  # noqa: E731
    conditions = toy_split.train.obs["condition"].to_numpy()
    shift = x(toy_split.train)[conditions == "stimulated"].mean(0) - x(toy_split.train)[conditions == "control"].mean(0)
    np.testing.assert_allclose(pred, x(toy_split.control) + shift, rtol=1e-5, atol=1e-5)
    meta = peers.read_meta(toy_split, "fake", 3, 2)
    assert meta["settings"] == {"epochs": 2, "seed": 3, "threads": 1}
    assert meta["peak_rss_mb"] > 10 and meta["fit_predict_seconds"] >= 0
    assert meta["versions"]["not-a-distribution"] == "absent" and meta["versions"]["numpy"] == np.__version__


def test_fake_peer_tutorial_epochs_pass_no_epochs(fake_peer, toy_split):
    peers.run_peer(fake_peer, toy_split, seed=0, epochs=AUTO_EPOCHS)
    assert peers.read_meta(toy_split, "fake", 0, AUTO_EPOCHS)["settings"]["epochs"] is None


def test_a_benchmark_run_keeps_the_runners_meta_beside_its_own_cache(fake_peer, toy_split, tmp_path, monkeypatch):
    from oos import running

    monkeypatch.setattr(running, "plan_splits", lambda config: [])  # no data: only where this run keeps things
    cache_dir = tmp_path / "elsewhere" / "full"
    config = cli.build_config(cli.build_parser().parse_args(["--cache-dir", str(cache_dir), "--no-figures"]), [])
    running.run_all(config)
    peers.run_peer(fake_peer, toy_split, seed=0, epochs=1)
    assert peers.read_meta(toy_split, "fake", 0, 1) is not None
    assert [p.relative_to(tmp_path / "elsewhere" / "peers") for p in (tmp_path / "elsewhere").rglob("*.json")]
    assert paths.peer_meta_dir(paths.CACHE_DIR / "full") == paths.CACHE_DIR / "peers"  # the default stays


def test_a_peer_too_slow_at_tutorial_scale_runs_only_when_asked(fake_peer, toy_split, monkeypatch):
    slow = peers.Peer("fake", fake_peer.python_override, fake_peer.runner_override, not_at_tutorial_scale="months")
    with pytest.raises(NotApplicable, match="months"):
        peers.run_peer(slow, toy_split, seed=0, epochs=AUTO_EPOCHS)
    with pytest.raises(NotApplicable, match="PEER_FAKE_CPU=1"):
        peers.run_peer(slow, toy_split, seed=0, epochs=1)
    monkeypatch.setenv("PEER_FAKE_CPU", "1")
    assert peers.run_peer(slow, toy_split, seed=0, epochs=1).shape == toy_split.control.shape
    assert "500,000 iterations" in peers.PEERS["cellflow"].not_at_tutorial_scale


def test_a_failing_runner_names_its_error(tmp_path, toy_split, monkeypatch):
    runner = tmp_path / "run_broken.py"
    runner.write_text("raise ImportError('cannot import name multipletests')\n")
    monkeypatch.setattr(peers, "META_DIR", tmp_path / "meta")
    broken = peers.Peer("broken", python_override=sys.executable, runner_override=str(runner))
    with pytest.raises(RuntimeError, match=r"broken runner failed.*multipletests"):
        peers.run_peer(broken, toy_split, seed=0, epochs=1)


def test_missing_or_incomplete_environment_is_not_applicable(tmp_path, toy_split, monkeypatch):
    monkeypatch.setenv("PEER_NOPE_PYTHON", str(tmp_path / "absent" / "bin" / "python"))
    with pytest.raises(NotApplicable, match="make peer-nope"):
        peers.run_peer(peers.Peer("nope"), toy_split, seed=0, epochs=1)
    python = tmp_path / "venv" / "bin" / "python"  # exists, but no .installed stamp: its import check failed
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    monkeypatch.setenv("PEER_HALF_PYTHON", str(python))
    with pytest.raises(NotApplicable, match="incomplete"):
        peers.run_peer(peers.Peer("half"), toy_split, seed=0, epochs=1)


def test_peers_are_registered_with_one_seed_and_their_tutorial_epochs():
    for name, peer, _ in peers.PEER_METHODS:
        spec = METHODS[name]
        assert spec.options == {"peer": peer} and spec.seeds == "one" and spec.epochs == AUTO_EPOCHS
        assert (peers.PEERS_DIR / f"run_{peer}.py").exists()


def _installed(peer: str) -> bool:
    return (peers.PEERS[peer].python.parent.parent / ".installed").exists()


def test_the_pipeline_runs_like_a_peer_in_the_package_environment():
    name, peer, _ = peers.OWN_PROCESS
    assert METHODS[name].options == {"peer": peer} and METHODS[name].seeds == "one"
    assert peers.PEERS[peer].python == paths.REPO / ".venv" / "bin" / "python"
    assert "src/scvi_trvae" in METHODS[name].sources  # its results depend on the package, unlike a peer's


def test_a_peer_says_why_it_cannot_run_without_fitting(monkeypatch, tmp_path):
    with pytest.raises(NotApplicable, match="500,000 iterations"):
        METHODS["CellFlow"].check(AUTO_EPOCHS)
    monkeypatch.setenv("PEER_SCPRAM_PYTHON", str(tmp_path / "absent" / "python"))
    with pytest.raises(NotApplicable, match="make peer-scpram"):
        METHODS["scPRAM"].check(AUTO_EPOCHS)


@pytest.mark.slow  # each peer's quick run on the Kang NK split (500 genes, 3 epochs/iterations; 10 s to 2 min)
@pytest.mark.parametrize(("name", "peer"), [(name, peer) for name, peer, _ in [*peers.PEER_METHODS, peers.OWN_PROCESS]])
def test_peer_quick_run(name, peer, tmp_path, monkeypatch):
    monkeypatch.setattr(peers, "META_DIR", peers.META_DIR)  # the run points it beside its cache: restored after
    if peer == "cellflow":
        pytest.skip("CellFlow is not run on CPU: even 3 iterations and a prediction take over 15 minutes here")
    if not _installed(peer):
        pytest.skip(f"no {peer} environment ({peers.PEERS[peer].make_command})")
    if not KANG.exists():
        pytest.skip(f"shared data not found: {KANG}")
    argv = ["--quick", "--methods", name, "--threads", "1", "--no-figures", "--output-dir", str(tmp_path),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    threads = torch.get_num_threads()
    try:
        rows = cli.main(argv)
    finally:
        torch.set_num_threads(threads)
    (row,) = rows
    assert row["status"] == "ok", row.get("reason")
    assert row["n_genes"] == 500 and row["n_control"] == 517 and row["epochs"] == 3
    assert all(row[k] is not None and math.isfinite(row[k]) for k in METRIC_KEYS)
    payload = json.loads((tmp_path / "out_of_sample.json").read_text())
    assert payload["rows"][0]["method"] == name
    assert list((tmp_path / "peers" / "kang").glob(f"NK__stimulated__500g__{peer}__seed0__e3.json"))
