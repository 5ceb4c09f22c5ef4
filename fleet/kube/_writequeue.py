"""Batched, coalesced writes: the shard's one path for PATCHes and PUTs to the apiserver.

Thousands of fake kubelets want to write (Lease renewals, node and pod
status) far more often than any one object needs writing. The queue keeps at
most one pending write per key (an object, e.g. ``pods/ns/name/status``) and
sends only the newest, through a fixed pool of ``workers`` behind a token
bucket (``qps``, ``burst``): many objects, few tasks (kwok's node-lease
controller), and a rate the apiserver can be told about.

Per key, writes never overlap and never reorder: a write submitted while the
same key is in flight waits until that one has finished, then goes (client-go
``util/workqueue``'s *dirty* and *processing* sets). A write whose request is
identical to the last one sent successfully for its key is dropped as a no-op
(kwok's ``checkNeedPatch``), unless it is marked ``force`` (a Lease renewal
must go even if its body repeats).

Failures, per write: 429 waits Retry-After (else the backoff) and retries;
5xx and transport errors back off and retry, up to ``max_attempts``; a newer
write for the same key submitted meanwhile replaces the retry; 404 drops the
write (the object is gone); 409 asks the write's ``on_conflict`` for a fresh
write (built from a re-read object) and sends that, or gives up on None.
Any other error fails the write. A write whose ``wanted`` says no when its turn comes
ends unsent. Every write ends in exactly one
:class:`WriteResult`, given to its ``on_result`` callback.

When ``max_pending`` distinct keys are waiting, :meth:`WriteQueue.submit`
*waits* for room rather than dropping: a write carries state the apiserver
must eventually see (a pod reaching Running, a Lease renewal), so losing one
silently would be wrong, while waiting passes the pressure back to the
producer (the timer loop) where it shows as lag. A submit for a key already
pending never waits: it replaces the pending write in place.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import trio

from fleet.errors import (
    ApiError,
    ConfigError,
    Conflict,
    FleetError,
    NotFound,
    ServerError,
    TooManyRequests,
    TransportError,
)
from fleet.kube._backoff import BackoffPolicy
from fleet.kube._ratelimit import TokenBucket
from fleet.kube._seam import Requester, Response

__all__ = [
    "ConflictHandler",
    "ResultCallback",
    "Write",
    "WriteOutcome",
    "WriteQueue",
    "WriteQueueSettings",
    "WriteQueueStatistics",
    "WriteResult",
]

log = logging.getLogger(__name__)

WriteOutcome = Literal["sent", "noop", "superseded", "withdrawn", "gone", "conflict", "failed"]
"""How a write ended: sent (2xx); noop (same as the last sent, dropped); superseded (a
newer write for its key replaced it before it was sent); withdrawn (its ``wanted`` said no
before it was sent); gone (404); conflict (409 and ``on_conflict`` gave up, or there was
none); failed (attempts exhausted, or an error that retrying cannot fix)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    key: str
    outcome: WriteOutcome
    response: Response | None = None
    """The 2xx answer, when sent."""
    error: FleetError | None = None
    """The last error, when not sent."""
    attempts: int = 0
    """Requests made for this write (conflict re-tries included)."""

    @property
    def ok(self) -> bool:
        """The apiserver holds what this write (or a newer one) said."""
        return self.outcome in ("sent", "noop", "superseded")


ConflictHandler = Callable[[Conflict], Awaitable["Write | None"]]
"""Called after a 409: re-read the object and return a fresh write, or None to give up."""

ResultCallback = Callable[[WriteResult], None]
"""Told how a write ended. Called from a writer task: must not block."""


@dataclass(frozen=True, slots=True)
class Write:
    """One request to send: what, where, and what to do on conflict."""

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    params: Mapping[str, str] | None = None
    on_conflict: ConflictHandler | None = field(default=None, compare=False)
    on_result: ResultCallback | None = field(default=None, compare=False)
    force: bool = False
    """Send even if identical to the last write sent for the key (e.g. a Lease renewal, or a
    write its caller has already diffed); a forced write is not remembered for the no-op check."""
    wanted: Callable[[], bool] | None = field(default=None, compare=False)
    """Asked right before each attempt is sent: False ends the write ``withdrawn``, unsent.
    A shard's node and pod status writes ask whether it still drives the object: one that
    waited in the queue while the node moved to another shard must not be sent after the
    new owner's first write (two shards driving one node)."""

    def fingerprint(self) -> bytes:
        """A digest of the request; equal digests mean the write would change nothing."""
        digest = hashlib.blake2b(digest_size=16)
        for part in (self.method, self.path, repr(sorted((self.params or {}).items()))):
            digest.update(part.encode())
            digest.update(b"\0")
        digest.update(self.body)
        return digest.digest()


@dataclass(frozen=True, slots=True)
class WriteQueueSettings:
    """Limits of one write queue."""

    workers: int = 16
    """Writer tasks, hence requests in flight. 16 keeps a 2-core host's h11 transport near its
    best cost per request (DESIGN: ~80 us at 16 in flight) without crowding the apiserver."""
    qps: float = 1000.0
    """Average writes per second. 10,000 fake nodes renewing Leases every 10 s need 1,000/s
    (DESIGN); lower it to spare a small control plane."""
    burst: int = 1000
    """Writes that may go at once after a quiet spell: one second's worth at ``qps``."""
    max_pending: int = 20_000
    """Distinct keys waiting to be sent; submit waits beyond it. Two writes per node for a
    10,000-node shard (its Lease and its status), as coalescing keeps one per key."""
    max_attempts: int = 5
    """Requests per write before it fails. With ``backoff`` that spans ~10-20 s, more than
    an apiserver restart's blip and less than a 40 s Lease duration."""
    backoff: BackoffPolicy = field(
        default_factory=lambda: BackoffPolicy(initial=0.5, maximum=8.0, jitter=0.5)
    )
    """Delays between attempts of one write: shorter than the reflector's, because a write
    is waited for (a Lease renewal is due), and jittered so a failed burst does not return
    as a burst."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"write queue: workers must be >= 1, got {self.workers}")
        if self.max_pending < 1:
            raise ConfigError(f"write queue: max_pending must be >= 1, got {self.max_pending}")
        if self.max_attempts < 1:
            raise ConfigError(f"write queue: max_attempts must be >= 1, got {self.max_attempts}")
        if self.qps <= 0 or self.burst < 1:
            raise ConfigError(
                f"write queue: need qps > 0, burst >= 1, got {self.qps}, {self.burst}"
            )


@dataclass(frozen=True, slots=True)
class WriteQueueStatistics:
    depth: int
    """Keys waiting to be sent."""
    peak_depth: int
    """Highest ``depth`` seen."""
    in_flight: int
    """Keys being sent (or waiting between attempts) by a worker."""
    waiting_submitters: int
    """submit() calls waiting for room."""
    sent: int
    coalesced: int
    """Writes replaced by a newer one for the same key before being sent."""
    noop_dropped: int
    gone_dropped: int
    retried: int
    """Attempts after the first (429, 5xx, transport errors, conflicts)."""
    failed: int
    """Writes that ended ``failed`` or ``conflict``."""


class WriteQueue:
    """Coalesces writes per key and sends them with ``workers`` tasks at ``qps``."""

    def __init__(
        self,
        requester: Requester,
        settings: WriteQueueSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
        limiter: TokenBucket | None = None,
    ) -> None:
        self._requester = requester
        self.settings = s = settings if settings is not None else WriteQueueSettings()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.limiter = limiter if limiter is not None else TokenBucket(s.qps, s.burst, clock=clock)
        """Tokens for every write sent: ``settings.qps``, or the bucket given (one shared
        with another sender, which ``settings.qps`` and ``burst`` then do not describe)."""
        self._pending: dict[str, Write] = {}
        self._in_flight: set[str] = set()
        self._last_sent: dict[str, bytes] = {}
        # Keys that are pending and not in flight, in submission order. Never holds
        # more keys than are pending, so sends to it never block.
        self._ready_send, self._ready_receive = trio.open_memory_channel[str](s.max_pending)
        self._room = trio.Semaphore(s.max_pending)  # one unit per pending key; FIFO
        self._idle = trio.Event()
        self._idle.set()
        self._peak = 0
        self._sent = 0
        self._coalesced = 0
        self._noop = 0
        self._gone = 0
        self._retried = 0
        self._failed = 0

    # -- producer side ---------------------------------------------------------

    async def submit(self, key: str, write: Write) -> None:
        """Queue ``write`` for ``key``, replacing a pending one; waits while the queue is full."""
        if key in self._pending:
            self._replace(key, write)
            await trio.lowlevel.checkpoint()
            return
        if key not in self._in_flight and self._is_noop(key, write):
            self._noop += 1
            self._finish(key, write, "noop")
            await trio.lowlevel.checkpoint()
            return
        await self._room.acquire()
        if key in self._pending:  # another submit for this key got room first
            self._room.release()
            self._replace(key, write)
            return
        self._pending[key] = write
        self._peak = max(self._peak, len(self._pending))
        if self._idle.is_set():
            self._idle = trio.Event()
        if key not in self._in_flight:
            self._ready_send.send_nowait(key)

    async def write(self, key: str, write: Write) -> WriteResult:
        """Submit ``write`` and wait until it has ended; also calls its own ``on_result``."""
        done = trio.Event()
        results: list[WriteResult] = []
        inner = write.on_result

        def on_result(result: WriteResult) -> None:
            results.append(result)
            done.set()
            if inner is not None:
                inner(result)

        await self.submit(key, replace(write, on_result=on_result))
        await done.wait()
        return results[0]

    def forget(self, key: str) -> None:
        """Drop what the queue remembers of ``key`` (its object was deleted)."""
        self._last_sent.pop(key, None)

    async def join(self) -> None:
        """Wait until nothing is pending or in flight."""
        while not self._idle.is_set():
            await self._idle.wait()

    def statistics(self) -> WriteQueueStatistics:
        return WriteQueueStatistics(
            depth=len(self._pending),
            peak_depth=self._peak,
            in_flight=len(self._in_flight),
            waiting_submitters=self._room.statistics().tasks_waiting,
            sent=self._sent,
            coalesced=self._coalesced,
            noop_dropped=self._noop,
            gone_dropped=self._gone,
            retried=self._retried,
            failed=self._failed,
        )

    def _replace(self, key: str, write: Write) -> None:
        old = self._pending[key]
        self._pending[key] = write
        self._coalesced += 1
        self._finish(key, old, "superseded")

    def _is_noop(self, key: str, write: Write) -> bool:
        return not write.force and self._last_sent.get(key) == write.fingerprint()

    def _finish(
        self,
        key: str,
        write: Write,
        outcome: WriteOutcome,
        *,
        response: Response | None = None,
        error: FleetError | None = None,
        attempts: int = 0,
    ) -> None:
        if outcome in ("failed", "conflict"):
            self._failed += 1
            log.warning("write %s %s (%s) %s: %s", write.method, write.path, key, outcome, error)
        if write.on_result is not None:
            write.on_result(WriteResult(key, outcome, response, error, attempts))

    # -- workers ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the writer tasks until cancelled. Pending writes are dropped on cancellation."""
        async with trio.open_nursery() as nursery:
            for _ in range(self.settings.workers):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for key in self._ready_receive:
            write = self._pending.pop(key)
            self._room.release()
            self._in_flight.add(key)
            try:
                await self._send(key, write)
            finally:
                self._in_flight.discard(key)
                if key in self._pending:
                    # Submitted while this one was in flight: its turn comes now.
                    self._ready_send.send_nowait(key)
                elif not self._pending and not self._in_flight:
                    self._idle.set()

    async def _send(self, key: str, write: Write) -> None:
        """Send one write to its end, retrying as the module docstring says."""
        backoff = self.settings.backoff.start(clock=self._clock, rng=self._rng)
        attempts = 0
        while True:
            if self._is_noop(key, write):
                self._noop += 1
                self._finish(key, write, "noop", attempts=attempts)
                return
            await self.limiter.acquire()
            if write.wanted is not None and not write.wanted():
                self._finish(key, write, "withdrawn", attempts=attempts)
                return
            attempts += 1
            try:
                response = await self._requester.request(
                    write.method,
                    write.path,
                    params=write.params,
                    body=write.body,
                    content_type=write.content_type,
                )
                response.raise_for_status()
            except NotFound as exc:
                self._last_sent.pop(key, None)
                self._gone += 1
                self._finish(key, write, "gone", error=exc, attempts=attempts)
                return
            except Conflict as exc:
                fresh = await self._resolve(key, write, exc, attempts)
                if fresh is None:
                    return
                self._retried += 1
                # A conflict is cured by re-reading, not by waiting: go again at once.
                write = fresh
                continue
            except (TooManyRequests, ServerError, TransportError) as exc:
                if attempts >= self.settings.max_attempts:
                    self._finish(key, write, "failed", error=exc, attempts=attempts)
                    return
                retry_after = exc.retry_after if isinstance(exc, ApiError) else None
                delay = retry_after if retry_after is not None else backoff.next_delay()
                log.debug(
                    "write %s %s: %s; retrying in %.2f s", write.method, write.path, exc, delay
                )
                self._retried += 1
                await trio.sleep(delay)
                if key in self._pending:
                    # A newer write for this key arrived while we waited: send that instead.
                    self._coalesced += 1
                    self._finish(key, write, "superseded", error=exc, attempts=attempts)
                    return
                continue
            except ApiError as exc:
                self._finish(key, write, "failed", error=exc, attempts=attempts)
                return
            self._sent += 1
            if write.force:
                # The caller diffs for itself (pod status, Lease renewals): a digest per key
                # would be ~200 B never read, times 100,000 pods.
                self._last_sent.pop(key, None)
            else:
                self._last_sent[key] = write.fingerprint()
            self._finish(key, write, "sent", response=response, attempts=attempts)
            return

    async def _resolve(self, key: str, write: Write, exc: Conflict, attempts: int) -> Write | None:
        """The fresh write after a 409, or None when the write has ended."""
        if write.on_conflict is None or attempts >= self.settings.max_attempts:
            self._finish(key, write, "conflict", error=exc, attempts=attempts)
            return None
        try:
            fresh = await write.on_conflict(exc)
        except FleetError as error:  # the re-read failed: this write cannot be mended
            self._finish(key, write, "failed", error=error, attempts=attempts)
            return None
        if fresh is None:
            self._finish(key, write, "conflict", error=exc, attempts=attempts)
            return None
        if fresh.on_result is None and write.on_result is not None:
            fresh = replace(fresh, on_result=write.on_result)  # the caller still wants to know
        return fresh
