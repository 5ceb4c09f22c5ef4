"""Node Lease renewals in a lane of their own: own timers, own writers, pipelined PUTs.

A Lease renewal must not wait behind anything: not behind registrations, not
behind a flood of pod status PATCHes (those can wait, a Lease cannot: 40 s
after its last renewal the node goes NotReady). So renewals do not go through
the engine's timer workers and the shared :class:`~fleet.kube._writequeue.WriteQueue`
(kwok's known weakness at a few thousand nodes is exactly late renewals);
:class:`LeaseLane` keeps:

- its own :class:`~shards._timers.DelayQueue` of node keys, each due at its
  renewal time. The next renewal is armed from the *due* time (due + 10 s
  with jitter), not from when the last one fired or finished, so a bunch of
  late renewals does not stay a bunch;
- one dispatcher task: it sleeps until the earliest due time plus
  ``window`` (a few tens of ms, well inside the 2 s a renewal may be late),
  takes everything due by then and hands it to
- ``writers`` tasks, each sending its share (at least :data:`LANE_MIN_BATCH`, so a
  quiet lane keeps to a few connections) as one pipelined batch
  (:meth:`~fleet.kube._transport.HotTransport.request_batch` through the
  fenced requester; sequential requests on any other requester): a second of
  renewals of a 10,000-node shard costs tens of task switches, not thousands.

The lane is a sender: what is sent and what an answer means is its owner's
business (:class:`LeaseOwner`, :class:`~shards._nodelease.NodeLeases`, which
builds the lane and tells it when each Lease is due): the owner builds each PUT
body when it is written and reads each answer. The lane adds retries:
429/5xx/transport errors come back after a backoff (Retry-After when given), up
to ``max_attempts``; the regular renewal after that stays where it was. Writes
count against a token bucket (``shard.qps``) the lane builds and the write
queue is given (:attr:`LeaseLane.bucket`), taken ahead of the pod writes
waiting there.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from fleet.errors import ApiError, FleetError, ServerError, TooManyRequests, TransportError
from fleet.kube import MAX_PIPELINE, BackoffPolicy, BatchRequest, Response, TokenBucket
from shards._timers import DelayQueue

__all__ = [
    "GIVE_WAY_AFTER",
    "LANE_MIN_BATCH",
    "LANE_WINDOW",
    "LANE_WRITERS",
    "BatchSender",
    "LaneFirstBucket",
    "LeaseLane",
    "LeaseOwner",
]

log = logging.getLogger(__name__)

LANE_WRITERS = 128
"""Writer tasks of the lane: each sends one pipelined batch at a time on one connection.
kube-apiserver (Go's HTTP/1.1 server) answers the requests of one connection one after
another, each waiting for its etcd commit: the lane's concurrency on a real apiserver is
its connections in use, not its pipeline depth. With 4, a loaded kube-apiserver renewed
~40 Leases/s where 5,000 nodes need 500; with 32, ~300/s at kwok-ci load with the machine
at 1.2 of its 2 cores (latency-bound, not CPU-bound); real kubelets hold a connection
each. A quiet lane uses a few of them (:data:`LANE_MIN_BATCH`)."""
LANE_MIN_BATCH = 8
"""Fewest renewals a writer takes while more are ready: a quiet lane uses a few connections
with short pipelines; a backlog (a slow apiserver) spreads over up to :data:`LANE_WRITERS`."""
LANE_WINDOW = 0.05
"""Seconds the dispatcher waits past the earliest due time so renewals due close together
go as one batch: 50 batches a second at 1,000 renewals/s, each at most 50 ms late."""
MAX_ATTEMPTS = 5
"""Requests per renewal before it is given up (the next regular one is already armed)."""
BACKOFF = BackoffPolicy(initial=0.5, maximum=8.0, jitter=0.5)
"""As the write queue's: a failed renewal is retried well within the Lease's 40 s."""
GIVE_WAY_AFTER = 0.1
"""Seconds past due (beyond the dispatcher's window) after which the lane counts as behind:
other work (timers, the pod consumer, the write queue's writers) waits for it to catch up."""
GIVE_WAY_MAX = 1.0
"""Longest a task waits in :meth:`LeaseLane.give_way` at a time, so nothing starves."""


class LaneFirstBucket(TokenBucket):
    """The write queue's token bucket, giving way to the Lease lane that built it.

    Writes through :meth:`acquire` (the write queue's) first wait while the lane is
    behind (:meth:`LeaseLane.give_way`); the lane takes its tokens with
    :meth:`acquire_first`, from the same bucket, without waiting for anyone.
    """

    def __init__(
        self, lane: LeaseLane, rate: float, burst: int, *, clock: Callable[[], float]
    ) -> None:
        super().__init__(rate, burst, clock=clock)
        self._lane = lane

    async def acquire(self) -> None:
        await self._lane.give_way()
        await super().acquire()

    async def acquire_first(self) -> None:
        await super().acquire()


class BatchSender(Protocol):
    """What the lane sends through: :class:`shards._context.FencedRequester`."""

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]: ...


class LeaseOwner(Protocol):
    """Builds renewals and reads their answers (:class:`~shards._nodelease.NodeLeases`)."""

    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
        """The PUT renewing ``key``'s Lease now, or None when it is not to be renewed.

        ``retry``: an earlier attempt failed and this one sends it again (the next
        regular renewal is armed already)."""
        ...

    async def lease_answered(self, key: str, answer: Response | FleetError) -> bool:
        """Handle the answer; True when the renewal should be sent again now (after a 409)."""
        ...


class LeaseLane:
    """Due-time-scheduled, batched, pipelined node Lease renewals; see the module docstring."""

    def __init__(
        self,
        sender: BatchSender,
        owner: LeaseOwner,
        *,
        rate: tuple[float, int] | None = None,
        clock: Callable[[], float] = trio.current_time,
        on_lag: Callable[[float, float], None] | None = None,
        writers: int = LANE_WRITERS,
        window: float = LANE_WINDOW,
        max_attempts: int = MAX_ATTEMPTS,
        backoff: BackoffPolicy = BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._sender = sender
        self._owner = owner
        self.bucket: LaneFirstBucket | None = (
            None if rate is None else LaneFirstBucket(self, rate[0], rate[1], clock=clock)
        )
        """The token bucket (``rate``: requests per second and burst) the lane shares with
        the write queue, which is given it; None: renewals are not rate limited."""
        self._clock = clock
        self._writers = writers
        self._window = window
        self._max_attempts = max_attempts
        self._backoff = backoff
        self.timers: DelayQueue[str] = DelayQueue(clock=clock)
        self._ready: deque[str] = deque()
        self._has_ready = trio.Event()
        self._attempts: dict[str, int] = {}
        """Keys whose renewal failed and is being retried: attempts made so far."""
        self._regular: dict[str, float] = {}
        """Keys being retried: the due time of their next regular renewal."""
        self._due: dict[str, float] = {}
        """Keys handed to the writers: the time they were due (for :attr:`on_lag`)."""
        self._on_lag = on_lag
        """Told ``(due -> request written, written -> answer read)`` in seconds for each
        renewal sent: the lane's own backlog apart from the server's (and reading's) delay."""
        self._clear = trio.Event()
        """Set when the lane caught up (see :meth:`give_way`); replaced while it is behind."""
        self._sending = 0
        """Writers out on the apiserver with a batch."""
        self.gave_way = 0
        """Times a task waited for the lane in :meth:`give_way`."""
        self.batches = 0
        self.sent = 0

    # -- scheduling (sync) -----------------------------------------------------------------

    def schedule(self, key: str, when: float) -> None:
        """Renew ``key`` at ``when``, replacing any renewal it had (a retry included)."""
        self._attempts.pop(key, None)
        self._regular.pop(key, None)
        self.timers.schedule(key, when)

    def cancel(self, key: str) -> None:
        self._attempts.pop(key, None)
        self._regular.pop(key, None)
        self.timers.cancel(key)

    def __contains__(self, key: object) -> bool:
        return key in self.timers

    # -- priority ----------------------------------------------------------------------------

    def behind(self) -> bool:
        """Renewals are due and could be written if the lane had the CPU: waiting for a writer
        while one is free (not out on the apiserver), or overdue past the dispatcher.

        With every writer waiting on the apiserver the lane is not behind for want of CPU:
        holding the rest of the shard back would not speed it up (a saturated apiserver
        answering slowly made every other task wait :data:`GIVE_WAY_MAX` per step)."""
        if self._ready:
            return self._sending < self._writers
        due = self.timers.next_due()
        return due is not None and due < self._clock() - self._window - GIVE_WAY_AFTER

    async def give_way(self) -> None:
        """Wait (at most :data:`GIVE_WAY_MAX`) while the lane is behind; at once otherwise.

        trio has no task priorities: the shard's other busy tasks (registrations, the
        pod flood) call this before each unit of work, so a CPU-bound process spends
        its time on overdue renewals first.
        """
        if not self.behind():
            return
        self.gave_way += 1
        with trio.move_on_after(GIVE_WAY_MAX):
            while self.behind():
                if self._clear.is_set():
                    self._clear = trio.Event()
                await self._clear.wait()

    def _maybe_clear(self) -> None:
        if not self._clear.is_set() and not self.behind():
            self._clear.set()

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self._writers):
                nursery.start_soon(self._writer)
            nursery.start_soon(self._dispatch)
            task_status.started()

    async def _dispatch(self) -> None:
        timers = self.timers
        while True:
            now = self._clock()
            due = timers.pop_due(now)
            if due:
                self._due.update(due)
                self._ready.extend(key for key, _when in due)
                self._has_ready.set()
            deadline = timers.next_due()
            if deadline is None:
                deadline = math.inf
            else:
                deadline = max(deadline + self._window, now + self._window)
            await timers.wait_until(deadline)

    async def _writer(self) -> None:
        ready = self._ready
        while True:
            while not ready:
                if self._has_ready.is_set():
                    self._has_ready = trio.Event()
                await self._has_ready.wait()
            share = min(MAX_PIPELINE, max(LANE_MIN_BATCH, -(-len(ready) // self._writers)))
            keys: list[str] = []
            dues: list[float | None] = []
            requests: list[BatchRequest] = []
            while ready and len(keys) < share:
                key = ready.popleft()
                due_at = self._due.pop(key, None)
                request = self._owner.lease_request(key, retry=key in self._attempts)
                if request is not None:
                    keys.append(key)
                    dues.append(due_at)
                    requests.append(request)
            self._maybe_clear()
            if not keys:
                continue
            bucket = self.bucket
            if bucket is not None:
                for _ in keys:
                    await bucket.acquire_first()
            sent = self._clock()
            self._sending += 1
            self._maybe_clear()  # every writer out: those giving way go on (see behind)
            try:
                answers = await self._sender.request_batch(requests)
            finally:
                self._sending -= 1
                self._maybe_clear()
            self.batches += 1
            self.sent += len(keys)
            on_lag = self._on_lag
            if on_lag is not None:
                took = self._clock() - sent
                for due_at in dues:
                    if due_at is not None:
                        on_lag(max(0.0, sent - due_at), took)
            for key, answer in zip(keys, answers, strict=True):
                await self._answered(key, answer)

    async def _answered(self, key: str, answer: Response | TransportError) -> None:
        error: FleetError
        if isinstance(answer, Response):
            if answer.status != 429 and answer.status < 500:
                await self._settled(key, answer)
                return
            try:
                answer.raise_for_status()
                return  # unreachable: 429 and 5xx raise
            except (TooManyRequests, ServerError) as exc:
                error = exc
        else:
            error = answer
        attempts = self._attempts.get(key, 0) + 1
        if attempts >= self._max_attempts:
            log.warning("lease %s: renewal failed after %d attempts: %s", key, attempts, error)
            await self._settled(key, error)
            return
        regular_due = self.timers.due_time(key)
        if regular_due is None and key not in self._regular:
            return  # cancelled meanwhile (node stopped, fence closed): nothing to retry
        retry_after = error.retry_after if isinstance(error, ApiError) else None
        if retry_after is None:
            b = self._backoff
            base = min(b.initial * b.factor ** (attempts - 1), b.maximum)
            retry_after = base * (1.0 + b.jitter * self._rng.random())
        if regular_due is not None:
            self._regular[key] = regular_due
        self._attempts[key] = attempts
        self.timers.schedule(key, self._clock() + retry_after)

    async def _settled(self, key: str, answer: Response | FleetError) -> None:
        """The renewal ended: the owner reads the answer; the regular renewal comes back."""
        attempts = self._attempts.pop(key, 0) + 1
        regular = self._regular.pop(key, None)
        try:
            again = await self._owner.lease_answered(key, answer)
        except FleetError as exc:  # the re-read after a 409 failed: wait for the next one
            log.info("lease %s: %s", key, exc)
            again = False
        if regular is not None and key not in self.timers:
            self.timers.schedule(key, regular)
        if again and attempts < self._max_attempts:
            self._attempts[key] = attempts  # a retry: its next regular renewal stays armed
            self._ready.append(key)
            self._has_ready.set()
