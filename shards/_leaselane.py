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

Each key the lane holds has one record (:class:`_Renewal`): the due time of its
next regular renewal, the attempts of the renewal under way, and where the key
is. The invariant: a held key is in exactly one place, as its record says:
a timer armed in :attr:`LeaseLane.timers` (at its regular due time, or its
retry's if sooner), queued for a writer, or out with one (one request of a key
out at a time, as a kubelet renews: a renewal due while the last one is out
goes when it is answered, on top of what it returned, instead of racing it into
a 409). Whether a request is the regular renewal or a retry is read off the due
time when it is written (the regular one is due: it is that one, and it arms the
next), never off what else of that key is in flight. It once was: a regular
renewal that came due while a 409 re-send of its key was out went as a "retry",
armed nothing, and the node's Lease was never renewed again (the failover test,
1 run in 3 on a loaded machine). :meth:`LeaseLane.lost` checks the invariant and
:meth:`LeaseLane.repair` re-arms any key that broke it (the owner runs it every
:data:`LANE_AUDIT_EVERY` seconds, with a WARNING and a metric: a bug to report).
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from fleet.errors import ApiError, FleetError, ServerError, TooManyRequests, TransportError
from fleet.kube import MAX_PIPELINE, BackoffPolicy, BatchRequest, Response, TokenBucket
from shards._timers import DelayQueue

__all__ = [
    "GIVE_WAY_AFTER",
    "LANE_AUDIT_EVERY",
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
LANE_AUDIT_EVERY = 5.0
"""Seconds between two checks of the lane's bookkeeping (:meth:`LeaseLane.repair`): a key
lost by a bug is renewed again well within a Lease's 40 s, for ~1 ms of CPU per 10,000 keys."""


class _Where(enum.Enum):
    """Where a key the lane holds is (see the module docstring's invariant)."""

    ARMED = "armed"
    """A timer in :attr:`LeaseLane.timers`: the regular renewal's, or its retry's if sooner."""
    READY = "ready"
    """Queued for a writer."""
    OUT = "out"
    """With a writer: its request being built, sent or answered."""


@dataclass(slots=True, eq=False)
class _Renewal:
    """What the lane knows of one key; compared by identity (a key cancelled and scheduled
    again gets a new record: answers to the old one's request no longer steer the key)."""

    due: float
    """The due time of the next regular renewal (set by :meth:`LeaseLane.schedule`)."""
    where: _Where = _Where.ARMED
    attempts: int = 0
    """Requests of the renewal under way that failed or met a 409."""
    retry_at: float | None = None
    """When the failed renewal goes again; None: it is not being retried."""
    fired: float | None = None
    """The due time of the timer that queued it (its lateness is measured from it)."""


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

    async def acquire(self, tokens: int = 1) -> None:
        await self._lane.give_way()
        await super().acquire(tokens)

    async def acquire_first(self, tokens: int = 1) -> None:
        await super().acquire(tokens)


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
        self._keys: dict[str, _Renewal] = {}
        """Every key the lane holds (scheduled and not cancelled)."""
        self._ready: deque[str] = deque()
        """Keys queued for a writer; an entry whose record is not READY is stale (skipped)."""
        self._has_ready = trio.Event()
        self._out: set[_Renewal] = set()
        """The records of the keys out with a writer."""
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
        self.repaired = 0
        """Keys :meth:`repair` found lost (see :meth:`lost`) and armed again: bugs."""

    # -- scheduling (sync) -----------------------------------------------------------------

    def schedule(self, key: str, when: float) -> None:
        """Renew ``key`` at ``when``, replacing any renewal it had (a retry included).

        A key out with a writer (its owner arms the next renewal while the lane asks
        for the current one, :meth:`LeaseOwner.lease_request`) is armed when its
        request is answered, at ``when`` or at once if that has passed."""
        rec = self._keys.get(key)
        if rec is None:
            self._keys[key] = rec = _Renewal(when)
        else:
            rec.due = when
            rec.attempts = 0
            rec.retry_at = None
            if rec.where is not _Where.ARMED:
                return  # queued or out: re-armed from rec.due when its request ends
        self.timers.schedule(key, when)

    def cancel(self, key: str) -> None:
        """No more renewals of ``key``; a request of it out is still answered to the owner."""
        rec = self._keys.pop(key, None)
        if rec is not None:
            self._out.discard(rec)
        self.timers.cancel(key)

    def __contains__(self, key: object) -> bool:
        """``key`` is held: armed, queued or out (see the module docstring)."""
        return key in self._keys

    def lost(self) -> list[str]:
        """Keys held but not where their record says: no timer, not queued, not out.

        Always empty unless the lane has a bug; such a key would never be renewed again.
        """
        ready = set(self._ready)
        timers = self.timers
        out = self._out
        lost: list[str] = []
        for key, rec in self._keys.items():
            where = rec.where
            if where is _Where.ARMED:
                held = key in timers
            elif where is _Where.READY:
                held = key in ready
            else:
                held = rec in out
            if not held:
                lost.append(key)
        return lost

    def repair(self) -> list[str]:
        """Arm every :meth:`lost` key again, due at once, with a WARNING each; returns them."""
        lost = self.lost()
        for key in lost:
            rec = self._keys[key]
            log.warning(
                "lease %s: lost by the lane (%s without being there), armed again: a bug",
                key,
                rec.where.value,
            )
            self._out.discard(rec)
            rec.attempts = 0
            rec.retry_at = None
            rec.due = min(rec.due, self._clock())  # renewed at once: it may be late already
            self._arm(key, rec)
        self.repaired += len(lost)
        return lost

    def _arm(self, key: str, rec: _Renewal) -> None:
        """Back to a timer: the regular renewal's, or the retry's if that is sooner."""
        rec.where = _Where.ARMED
        when = rec.due if rec.retry_at is None else min(rec.due, rec.retry_at)
        self.timers.schedule(key, when)

    def _queue(self, key: str, rec: _Renewal, fired: float | None) -> None:
        rec.where = _Where.READY
        rec.fired = fired
        self._ready.append(key)
        self._has_ready.set()

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
            for key, when in timers.pop_due(now):
                rec = self._keys.get(key)
                if rec is not None and rec.where is _Where.ARMED:
                    self._queue(key, rec, when)
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
            recs: list[_Renewal] = []
            dues: list[float | None] = []
            requests: list[BatchRequest] = []
            while ready and len(keys) < share:
                key = ready.popleft()
                rec = self._keys.get(key)
                if rec is None or rec.where is not _Where.READY:
                    continue  # cancelled, or queued twice (cancelled and scheduled again)
                request = self._take(key, rec)
                if request is not None:
                    keys.append(key)
                    recs.append(rec)
                    dues.append(rec.fired)
                    requests.append(request)
            self._maybe_clear()
            if not keys:
                continue
            bucket = self.bucket
            if bucket is not None:
                await bucket.acquire_first(len(keys))  # one checkpoint for the batch
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
            for key, rec, answer in zip(keys, recs, answers, strict=True):
                await self._answered(key, rec, answer)

    def _take(self, key: str, rec: _Renewal) -> BatchRequest | None:
        """Take queued ``key`` out for a writer: its request, or None (the key is armed
        again or, when its owner armed no renewal, dropped)."""
        now = self._clock()
        # The regular renewal is due: this request is it (whatever retry was under way)
        # and the owner arms the next one. Else it is a retry, or a re-send after a 409.
        retry = rec.due > now
        if not retry:
            rec.attempts = 0
            rec.retry_at = None
            rec.due = math.inf  # until the owner arms the next one (it does, as it builds this)
        rec.where = _Where.OUT
        self._out.add(rec)
        request = self._owner.lease_request(key, retry=retry)
        if request is not None:
            return request
        if self._keys.get(key) is rec:
            # Put off by its owner (armed again), a retry not sent (the regular renewal
            # stays), or no longer renewed (none armed: dropped until scheduled again).
            self._settle(key, rec)
        else:
            self._out.discard(rec)
        return None

    async def _answered(self, key: str, rec: _Renewal, answer: Response | TransportError) -> None:
        error: FleetError
        if isinstance(answer, Response):
            if answer.status != 429 and answer.status < 500:
                again = await self._tell(key, answer)
                if self._keys.get(key) is not rec:
                    self._out.discard(rec)
                    return  # cancelled meanwhile: its renewals are someone else's business
                if again:
                    rec.attempts += 1
                    if rec.attempts < self._max_attempts:
                        self._out.discard(rec)
                        self._queue(key, rec, None)  # at once, on top of the re-read Lease
                        return
                self._settle(key, rec)
                return
            try:
                answer.raise_for_status()
                return  # unreachable: 429 and 5xx raise
            except (TooManyRequests, ServerError) as exc:
                error = exc
        else:
            error = answer
        if self._keys.get(key) is not rec:
            self._out.discard(rec)
            return  # cancelled meanwhile (node stopped, fence closed): nothing to retry
        rec.attempts += 1
        if rec.attempts >= self._max_attempts:
            log.warning("lease %s: renewal failed after %d attempts: %s", key, rec.attempts, error)
            await self._tell(key, error)
            if self._keys.get(key) is rec:
                self._settle(key, rec)
            else:
                self._out.discard(rec)
            return
        retry_after = error.retry_after if isinstance(error, ApiError) else None
        if retry_after is None:
            b = self._backoff
            base = min(b.initial * b.factor ** (rec.attempts - 1), b.maximum)
            retry_after = base * (1.0 + b.jitter * self._rng.random())
        rec.retry_at = self._clock() + retry_after
        self._out.discard(rec)
        self._arm(key, rec)

    async def _tell(self, key: str, answer: Response | FleetError) -> bool:
        """The owner reads the answer; True: send again now (after a 409 and its re-read)."""
        try:
            return await self._owner.lease_answered(key, answer)
        except FleetError as exc:  # the re-read after a 409 failed: wait for the next one
            log.info("lease %s: %s", key, exc)
            return False

    def _settle(self, key: str, rec: _Renewal) -> None:
        """The renewal ended: the key waits for its next regular renewal (at once if due), or
        leaves the lane when its owner armed none."""
        self._out.discard(rec)
        rec.attempts = 0
        rec.retry_at = None
        if rec.due == math.inf:
            del self._keys[key]
        else:
            self._arm(key, rec)
