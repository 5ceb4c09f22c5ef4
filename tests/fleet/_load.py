"""How long each process of a test stood ready to run while the machine ran something else.

The whole-fleet tests assert bounds on what the fleet did (a CR labelled within
2 s, a takeover within the Lease duration plus two renewals, moves at a bounded
rate). On a loaded machine (2 cores shared with other test runs) a process can
be runnable and still wait seconds for a CPU, and no code of ours could have
acted in that time. Linux counts exactly that wait per thread: the second
field of ``/proc/<pid>/schedstat`` is the time spent on a run queue, in
nanoseconds. :class:`RunQueueMeter` samples it for the test's own process (the
sandbox serves in it) and for each child process, so a test can allow for the
time the actors of a step were kept off the CPU, and only for that: on an
idle machine the allowance is ~0 and the bounds are what they always were.

Only the main thread is counted (``/proc/<pid>/schedstat`` is the thread-group
leader's): trio runs every task of our processes there. Without ``/proc``
(not Linux) every allowance is 0.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable

import trio

SAMPLE_INTERVAL = 0.1
"""Seconds between samples: an allowance overstates the wait by at most what one
sample interval on each side holds."""


def run_queue_wait(pid: int) -> float | None:
    """Seconds the main thread of ``pid`` has waited on a run queue so far (None: unknown)."""
    try:
        with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


class RunQueueMeter:
    """Samples the run-queue wait of a set of processes on the test's own clock."""

    def __init__(self) -> None:
        self.pids: set[int] = {os.getpid()}
        self._times: list[float] = []
        self._waits: list[dict[int, float]] = []
        self._last: dict[int, float] = {}

    def watch(self, *pids: int) -> None:
        self.pids.update(pids)

    def sample(self) -> None:
        for pid in self.pids:
            wait = run_queue_wait(pid)
            if wait is not None:  # a process that exited keeps its last value
                self._last[pid] = wait
        self._times.append(trio.current_time())
        self._waits.append(dict(self._last))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.sample()
        task_status.started()
        while True:
            await trio.sleep(SAMPLE_INTERVAL)
            self.sample()

    def stolen(self, pids: Iterable[int], start: float, end: float) -> float:
        """Seconds ``pids`` together waited for a CPU between ``start`` and ``end`` (at most)."""
        if not self._times or end <= start:
            return 0.0
        lo = max(0, bisect.bisect_right(self._times, start) - 1)
        hi = min(len(self._times) - 1, bisect.bisect_left(self._times, end))
        before, after = self._waits[lo], self._waits[hi]
        return sum(after.get(pid, 0.0) - before.get(pid, 0.0) for pid in pids)
