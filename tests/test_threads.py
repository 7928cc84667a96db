"""torch's thread count during training: chosen from the free cores, set as asked, always restored."""

from __future__ import annotations

import pytest
import torch

from scvi_trvae import _threads
from scvi_trvae._threads import busy_cores, choose_thread_count, training_threads
from scvi_trvae.utils import settings


@pytest.mark.parametrize(
    ("current", "cores", "busy", "expected"),
    [
        (2, 2, 0, 2),  # idle machine: torch's own setting
        (2, 2, 1, 1),  # one core busy elsewhere
        (2, 2, 4, 1),  # oversubscribed: never below one thread
        (16, 16, 2.5, 13),  # a busy reading of 2.5 threads takes 3 cores
        (4, 16, 0, 4),  # never more than torch's setting (a user's torch.set_num_threads)
        (4, 16, None, 4),  # nothing known (not Linux): unchanged
    ],
)
def test_choose_thread_count(current, cores, busy, expected):
    assert choose_thread_count(current, cores, busy) == expected


def _fake_proc(tmp_path, procs_running, own_states):
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nprocs_running {procs_running}\nprocs_blocked 0\n")
    for i, state in enumerate(own_states):
        task = tmp_path / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (python (worker)) {state} 1 2 3")
    return tmp_path


def test_busy_cores_counts_other_processes_only(tmp_path):
    proc = _fake_proc(tmp_path, procs_running=5, own_states=["R", "S", "R"])
    assert busy_cores(samples=3, interval=0, proc=proc) == 3


def test_busy_cores_is_none_without_proc(tmp_path):
    assert busy_cores(samples=1, proc=tmp_path / "absent") is None


def test_busy_cores_reads_this_machine():
    busy = busy_cores(samples=2, interval=0)
    assert busy is None or busy >= 0


@pytest.mark.parametrize(("setting", "expected"), [(1, 1), (3, 3), (None, None)])
def test_training_threads_sets_and_restores(setting, expected):
    before = torch.get_num_threads()
    with training_threads(setting) as used:
        assert used == expected
        assert torch.get_num_threads() == (before if expected is None else expected)
    assert torch.get_num_threads() == before


def test_training_threads_auto_uses_the_free_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(_threads, "busy_cores", lambda: 10**6)  # every core busy
    with training_threads("auto") as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_training_threads_restores_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), training_threads(1):
        raise RuntimeError("training failed")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("value", ["auto", 1, 8, None])
def test_settings_num_threads_accepts(value, monkeypatch):
    monkeypatch.setattr(settings, "_num_threads", "auto")
    settings.num_threads = value
    assert settings.num_threads == value


@pytest.mark.parametrize("value", [0, -1, "all", 1.5, True])
def test_settings_num_threads_rejects(value):
    with pytest.raises(ValueError, match="num_threads must be"):
        settings.num_threads = value


def test_train_uses_the_setting_and_restores_torch(small_adata, monkeypatch):
    from scvi_trvae import TRVAE

    seen = []
    original = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), original(n)))
    before = torch.get_num_threads()
    monkeypatch.setattr(settings, "_num_threads", before + 1)
    adata = small_adata.copy()
    TRVAE.setup_anndata(adata, condition_key="condition")
    TRVAE(adata, n_hidden=8, n_latent=2).train(max_epochs=1, batch_size=32)
    assert seen[0] == before + 1 and seen[-1] == before and torch.get_num_threads() == before
