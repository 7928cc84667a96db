"""Tests of distributed training: the condition-balanced DDP sampler, and two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from scvi_trvae.data import DistributedConditionBalancedSampler

TESTS = Path(__file__).parent
#: Seconds a two-process run may take before it is killed (it takes ~10 s alone on 2 cores).
DDP_TIMEOUT = 240

CODES = np.repeat([0, 1, 2], [50, 20, 10])  # imbalanced, as real conditions are


def _rank_samplers(num_replicas: int = 2, **kwargs) -> list[DistributedConditionBalancedSampler]:
    return [
        DistributedConditionBalancedSampler(
            CODES, batch_size=12, num_replicas=num_replicas, rank=rank, seed=4, **kwargs
        )
        for rank in range(num_replicas)
    ]


def test_every_rank_batch_holds_every_condition_equally():
    for sampler in _rank_samplers():
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4  # ceil(80 / (12 * 2))
        for batch in batches:
            assert np.bincount(CODES[batch], minlength=3).tolist() == [4, 4, 4]


def test_ranks_draw_disjoint_cells_and_together_cover_every_condition():
    samplers = _rank_samplers()
    for epoch in (0, 1):
        seen = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            seen.append({position for batch in sampler for position in batch})
        assert not seen[0] & seen[1]
        assert set(CODES[list(seen[0] | seen[1])]) == {0, 1, 2}


def test_shuffling_is_seeded_and_changes_with_the_epoch():
    first, again = _rank_samplers()[0], _rank_samplers()[0]
    assert list(first) == list(again)
    again.set_epoch(1)
    assert list(first) != list(again)


def test_validation_sharding_visits_every_cell_once():
    positions = [p for sampler in _rank_samplers(shuffle=False) for batch in sampler for p in batch]
    assert sorted(positions) == list(range(len(CODES)))


def test_too_few_cells_of_a_condition_for_the_processes_is_refused():
    with pytest.raises(ValueError, match="fewer than the 11 processes"):
        DistributedConditionBalancedSampler(CODES, batch_size=12, num_replicas=11, rank=0)


def _train(mode: str, tmp_path: Path, epochs: int) -> dict:
    output = tmp_path / f"{mode}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path]), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(TESTS / "ddp_train.py"), mode, str(output), str(epochs)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        log, _ = process.communicate(timeout=DDP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher's second rank is in the same session
        process.communicate()
        pytest.fail(f"{mode} training did not finish within {DDP_TIMEOUT} s")
    assert process.returncode == 0, log[-3000:]
    return json.loads(output.read_text())


@pytest.mark.slow  # starts two DDP processes
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_cpu_processes_train_like_one(tmp_path):
    single = _train("single", tmp_path, epochs=8)
    ddp = _train("ddp", tmp_path, epochs=8)
    assert ddp["world_size"] == 2 and ddp["sampler"] == "DistributedConditionBalancedSampler"
    assert ddp["steps"] == single["steps"] == 8 * 3  # 48 cells: 3 minibatches of 16 cells per epoch
    assert ddp["losses"][-1] < ddp["losses"][0] and single["losses"][-1] < single["losses"][0]
    # each process's MMD and batch norm see its own 8 cells instead of 16: a slightly higher loss
    np.testing.assert_allclose(ddp["losses"], single["losses"], rtol=0.1)


@pytest.mark.slow  # starts two DDP processes
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_two_devices_without_a_strategy_use_the_distributed_sampler(tmp_path):
    ddp = _train("ddp-no-strategy", tmp_path, epochs=1)
    assert ddp["world_size"] == 2 and ddp["sampler"] == "DistributedConditionBalancedSampler"
