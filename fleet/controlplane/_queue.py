"""A keyed work queue: many objects, few workers (client-go ``util/workqueue``).

A key (``namespace/name``) is queued at most once however often it is added
(the *dirty* set); a key being processed is never handed to a second worker
(the *processing* set), and if it is added meanwhile it is queued again when
the first worker calls :meth:`WorkQueue.done`. :meth:`WorkQueue.add_after`
keeps one due time per key (the earliest) in a heap that one timer task
drains, so a requeue never needs a task of its own.

Bounded: at most ``max_keys`` distinct keys wait; adding a new key beyond
that waits for room, passing the pressure back to the informer that feeds
it. The delayed set holds at most one entry per key.

With a ``priority`` function the waiting keys leave highest priority first, FIFO
among equals (kube-scheduler's activeQ: a heap by pod priority, then by the time the
pod was queued); a key's priority is read when it is queued.

A key whose processing raises is logged on one line, counted
(:attr:`WorkQueueStatistics.failures`) and queued again after a per-key
exponential backoff (``AddRateLimited`` in client-go): one bad object never
ends the worker, and so never the process (see ``_guard``).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from fleet.controlplane._guard import RetryBackoff, log_failure
from fleet.errors import ConfigError

__all__ = ["WorkQueue", "WorkQueueStatistics"]


@dataclass(frozen=True, slots=True)
class WorkQueueStatistics:
    depth: int
    """Keys waiting for a worker."""
    peak_depth: int
    processing: int
    delayed: int
    """Keys with a pending :meth:`WorkQueue.add_after`."""
    added: int
    """Adds of a key that was not already waiting."""
    failures: int = 0
    """Times processing a key raised (each one logged and retried with backoff)."""
    failing: int = 0
    """Keys whose last processing raised."""


class _ByPriority:
    """The waiting keys as a heap: highest priority first, then first queued."""

    def __init__(self, priority: Callable[[str], int]) -> None:
        self._priority = priority
        self._heap: list[tuple[int, int, str]] = []
        self._seq = itertools.count()

    def append(self, key: str) -> None:
        heapq.heappush(self._heap, (-self._priority(key), next(self._seq), key))

    def popleft(self) -> str:
        return heapq.heappop(self._heap)[2]

    def __len__(self) -> int:
        return len(self._heap)


class WorkQueue:
    """Deduplicating FIFO (or priority queue) of keys with delayed adds."""

    def __init__(
        self,
        name: str,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = trio.current_time,
        backoff: RetryBackoff | None = None,
        priority: Callable[[str], int] | None = None,
    ) -> None:
        if max_keys < 1:
            raise ConfigError(f"work queue {name}: max_keys must be >= 1, got {max_keys}")
        self.name = name
        self._max = max_keys
        self._clock = clock
        self._queue: deque[str] | _ByPriority = (
            deque() if priority is None else _ByPriority(priority)
        )
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._delayed: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._items = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()
        self._timer = trio.lowlevel.ParkingLot()
        self._peak = 0
        self._added = 0
        self._backoff = backoff if backoff is not None else RetryBackoff()
        self._failing: dict[str, int] = {}  # key -> consecutive failures
        self._failures = 0

    async def add(self, key: str) -> None:
        """Queue ``key`` unless it already waits; waits for room when ``max_keys`` wait."""
        while key not in self._dirty and len(self._dirty) >= self._max:
            await self._room.park()
        if not self.add_nowait(key):
            await trio.lowlevel.checkpoint()

    def add_nowait(self, key: str) -> bool:
        """Queue ``key`` if there is room (or it already waits); False when full."""
        if key in self._dirty:
            return True
        if len(self._dirty) >= self._max:
            return False
        self._dirty.add(key)
        self._added += 1
        if key not in self._processing:
            self._queue.append(key)
            self._peak = max(self._peak, len(self._queue))
            self._items.unpark()
        return True

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` after ``delay`` seconds (an earlier pending due time wins)."""
        due = self._clock() + max(0.0, delay)
        current = self._delayed.get(key)
        if current is not None and current <= due:
            return
        self._delayed[key] = due
        heapq.heappush(self._heap, (due, key))
        self._timer.unpark_all()

    async def get(self) -> str:
        """The next key; the caller must call :meth:`done` with it afterwards."""
        while not self._queue:
            await self._items.park()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        self._room.unpark()
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._items.unpark()

    async def work(self, process: Callable[[str], Awaitable[None]]) -> None:
        """One worker, until cancelled: take each key in turn, ``process`` it, mark it done.

        A key whose processing raises is retried after a per-key backoff.
        """
        while True:
            key = await self.get()
            try:
                await process(key)
            except Exception as exc:  # one object's error must not end the loop
                failures = self._failing[key] = self._failing.get(key, 0) + 1
                self._failures += 1
                delay = self._backoff.delay(failures)
                log_failure(self.name, key, exc, delay)
                self.add_after(key, delay)
            else:
                self._failing.pop(key, None)
            finally:
                self.done(key)

    def __len__(self) -> int:
        return len(self._queue)

    def statistics(self) -> WorkQueueStatistics:
        return WorkQueueStatistics(
            depth=len(self._queue),
            peak_depth=self._peak,
            processing=len(self._processing),
            delayed=len(self._delayed),
            added=self._added,
            failures=self._failures,
            failing=len(self._failing),
        )

    async def run_timer(self) -> None:
        """Move due delayed keys into the queue, until cancelled (one task per queue)."""
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, key = heapq.heappop(self._heap)
                if self._delayed.get(key) != due:
                    continue  # superseded by an earlier due time
                del self._delayed[key]
                await self.add(key)
            if self._heap:
                with trio.move_on_after(max(0.0, self._heap[0][0] - self._clock())):
                    await self._timer.park()
            else:
                await self._timer.park()
