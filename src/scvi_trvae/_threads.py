"""How many threads torch uses while the package trains: no more than the cores other processes leave free.

torch starts one OpenMP thread per physical core, and every operation waits for all of them. When other jobs
keep those cores busy, each operation waits for the thread the scheduler left out, and training slows down
10-20x where one thread would have slowed 1.5-2x (``benchmarks/threads.py``; ``docs/performance.md``).
:func:`training_threads` therefore lowers torch's thread count, for the duration of one training call, to the
cores that no other process is running on when it starts (``settings.num_threads = "auto"``, the default), or
sets it to what the user chose, and restores torch's own setting afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["busy_cores", "choose_thread_count", "training_threads"]

logger = logging.getLogger(__name__)


def _running_threads(stat: str) -> int:
    """``procs_running`` of the text of ``/proc/stat``: threads of the whole machine running or ready to run."""
    for line in stat.splitlines():
        if line.startswith("procs_running"):
            return int(line.split()[1])
    raise ValueError("no procs_running line")


def _own_running_threads(task_dir: Path) -> int:
    """Threads of this process in state R (running or ready), from ``/proc/self/task/*/stat``."""
    running = 0
    for stat in task_dir.glob("*/stat"):
        with contextlib.suppress(OSError):
            # the state follows the command name, which is in parentheses and may hold spaces
            if stat.read_text().rsplit(")", 1)[1].split()[0] == "R":
                running += 1
    return running


def busy_cores(samples: int = 5, interval: float = 0.01, proc: Path = Path("/proc")) -> float | None:
    """Median number of other processes' threads running or ready to run, over ``samples`` readings.

    Read from Linux's ``/proc``; ``None`` where it cannot be read (other systems), so nothing is changed there.
    """
    readings = []
    try:
        for i in range(samples):
            if i:
                time.sleep(interval)
            total = _running_threads((proc / "stat").read_text())
            readings.append(max(0, total - _own_running_threads(proc / "self" / "task")))
    except (OSError, ValueError, IndexError):
        return None
    return statistics.median(readings)


def choose_thread_count(current: int, cores: int, busy: float | None) -> int:
    """Threads for training: at most ``current`` (torch's setting), no more than the cores not ``busy``, at least 1."""
    if busy is None:
        return current
    return max(1, min(current, cores - math.ceil(busy)))


@contextlib.contextmanager
def training_threads(setting: int | str | None) -> Iterator[int | None]:
    """Set torch's thread count for one training call from ``setting``, then restore torch's own.

    ``"auto"``: :func:`choose_thread_count` from the cores other processes are busy on now; an ``int``: that
    many threads; ``None``: torch's setting is left alone. Yields the thread count used (``None``: unchanged).
    """
    import torch

    before = torch.get_num_threads()
    if setting is None:
        yield None
        return
    if setting == "auto":
        busy = busy_cores()
        threads = choose_thread_count(before, os.cpu_count() or 1, busy)
        if threads != before:
            logger.info("%s of %s cores busy with other processes: training with %d torch threads", busy,
                        os.cpu_count(), threads)  # fmt: skip
    else:
        threads = int(setting)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
