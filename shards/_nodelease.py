"""The Lease of every node of one shard: what it holds, create or adopt, each renewal, each answer.

:class:`NodeLeases` owns the node Leases of a shard, one record per Node CR
(``namespace/name``): the Lease as the last write returned it (trimmed to
what a renewal carries, :func:`~shards._nodeobj.trim_lease`), when its next
renewal is due, when it was last renewed. The node driver (``_kubelets``) only
says what happens to a node:

=====================  ==========================================================
call                   when
=====================  ==========================================================
:meth:`node`           the v1.Node was registered or adopted (its name and uid
                       go into the Lease's ownerReference and holder)
:meth:`ensure`         every sync of a driven node: create the Lease, or adopt
                       the one there; renewals start
:meth:`stop`           the node stops being driven (``suspend``): renewals stop
:meth:`park`           the fence closed: renewals stop, the Lease as last
                       written is kept aside for :meth:`resume`
:meth:`resume`         the fence reopened unbroken (no other shard can have
                       been given the node): renewals go on from the parked
                       Lease, the first due at once, through the lane
:meth:`release`        the fence reopened otherwise, or the CR is being
                       deleted: renewals stop and the Lease as last read is
                       forgotten (the apiserver may have changed it meanwhile)
:meth:`drop`           the CR is no longer this shard's: its record goes
=====================  ==========================================================

Renewals are sent by a :class:`~shards._leaselane.LeaseLane` this class builds
and tells when each Lease is due; the lane asks for each PUT when it writes
it (:meth:`lease_request`) and hands back each answer (:meth:`lease_answered`).
A renewal is a PUT every 10 s with jitter, timed from its due time (the body
is the Lease as the last write returned it, so a concurrent writer gets a 409:
re-read; where the Lease holds one of our own renewals, renewed; where another
writer renewed it (another shard taking the node over before this shard's watch
says so), the node is left alone for :data:`HANDOVER_WAIT` and handed back to its
sync, never renewed on top at once); 404 hands the node back to its sync
(``resync``), which creates the Lease again. A node served before has its Lease
renewed first thing on adoption (:meth:`NodeLeases.take_over`). Lateness against the due time
and renewals that came after the Lease expired are counted.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec
import trio
from prometheus_client import CollectorRegistry, Histogram

from fleet._metrics import FleetMetrics
from fleet._settings import ShardSettings
from fleet.errors import AlreadyExists, FleetError
from fleet.kube import BatchRequest, Requester, Response, resource_path
from fleet.machinery import JSON, MERGE_PATCH, format_micro_time
from shards._context import FencedRequester
from shards._leaselane import LANE_AUDIT_EVERY, LeaseLane
from shards._nodeobj import (
    LEASE_DURATION_SECONDS,
    LEASE_NAMESPACE,
    decode_lease,
    encode_lease,
    lease_body,
    renew_lease,
    trim_lease,
)
from shards._timers import jitter, spread

__all__ = ["LATE_AFTER", "NodeLeases", "lane_lag_histogram", "lease_path"]

log = logging.getLogger(__name__)

LATE_AFTER = 2.0
"""A Lease renewal later than this past its due time counts as late (the figure docs/performance.md reports)."""
PUT_OFF = 1.0
"""Seconds a renewal waits when the shard's own Lease is late for a moment (fence open)."""
ADOPT_WITHIN = 2.0
"""Seconds (at most: the renew interval if shorter) over which adopted Leases are first
renewed, so a thousand adoptions do not renew in one instant; well within the 40 s."""
SENT_KEPT = 16
"""Renewals remembered per node until one is answered: every attempt of several renewals in
a row whose answers were lost (the lane tries each up to five times). With 4, a landed
renewal of our own fell out of the window on a slow, lossy apiserver, was taken for another
writer's, and the node was let go (tests/shards/test_nodelease_renewing.py, 1 run in 5)."""
HANDOVER_WAIT = 2.0
"""Seconds a node whose Lease another writer renewed is left alone before its sync takes it
up again: time for this shard's watch to bring the CR's move, if it moved (a loaded
shard's watch lags by a second or so); the Lease was just renewed, so it costs nothing."""
_TAKEOVER_MILESTONES = frozenset({1, 10, 100})
"""Takeovers logged at INFO (then every thousandth): a failover's timeline in the log."""
_patch_encoder = msgspec.json.Encoder()
LANE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_lane_lag: weakref.WeakKeyDictionary[CollectorRegistry, Histogram] = weakref.WeakKeyDictionary()


def lane_lag_histogram(registry: CollectorRegistry) -> Histogram:
    """``kubemock_fleet_lease_lane_seconds{stage}`` on ``registry`` (one per registry).

    ``stage="due_to_sent"``: a node Lease renewal's due time to its PUT written
    (the lane's backlog); ``stage="sent_to_answered"``: written to its answer read
    (the server, plus the shard's own delay in reading).
    """
    histogram = _lane_lag.get(registry)
    if histogram is None:
        histogram = _lane_lag[registry] = Histogram(
            "kubemock_fleet_lease_lane_seconds",
            "Node Lease renewals: due -> PUT written, written -> answer read.",
            ["stage"],
            buckets=LANE_LAG_BUCKETS,
            registry=registry,
        )
    return histogram


def lease_path(name: str | None = None) -> str:
    """A node Lease's path (``kube-node-lease``), or its collection's."""
    return resource_path(
        "coordination.k8s.io", "v1", "leases", namespace=LEASE_NAMESPACE, name=name
    )


@dataclass(slots=True)
class _NodeLease:
    """One node's Lease, as far as the shard knows it."""

    name: str
    node_uid: str = ""
    body: bytes | None = None
    """The Lease as the last write returned it, trimmed; decoded for each renewal."""
    renewing: bool = False
    """The node is driven: renewals are sent."""
    due: float = 0.0
    """Due time of the next renewal."""
    renewing_due: float = 0.0
    """Due time of the renewal being sent (lateness is measured against it)."""
    ok: float | None = None
    """When a renewal (or the creation) last succeeded."""
    missed_counted: bool = False
    parked: bool = False
    """Renewing when the fence closed: :meth:`NodeLeases.resume` may take it up again."""
    sent: tuple[str, ...] = ()
    """The renewTimes of the renewals sent since the last answered success (the last
    :data:`SENT_KEPT`): a 409 on a Lease holding one of them is our own write landing late."""


class NodeLeases:
    """The node Leases of one shard; see the module docstring."""

    def __init__(
        self,
        sender: FencedRequester,
        *,
        register: Requester,
        settings: ShardSettings,
        metrics: FleetMetrics,
        resync: Callable[[str, float], None],
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        rng: random.Random,
        fresh: Callable[[], bool],
        fence_open: Callable[[], bool],
    ) -> None:
        """``sender``: renewals and their re-reads (``hot``, fenced); ``register``: creation
        and adoption (``hot`` or ``control``: ``REGISTER_ON_HOT``); ``resync(key, delay)``: the
        node's sync is to run in ``delay`` s (its Lease was deleted: the sync creates it
        again; another writer renewed it: the sync takes it up again);
        ``fresh`` and ``fence_open``: as :class:`~shards._context.ShardContext`'s."""
        self._sender = sender
        self._register = register
        self._settings = settings
        self._metrics = metrics
        self._resync = resync
        self._clock = clock
        self._wall = wall
        self._rng = rng
        self._fresh = fresh
        self._fence_open = fence_open
        self._leases: dict[str, _NodeLease] = {}
        self.taken_over = 0
        """Leases of nodes served before renewed by :meth:`take_over` (logged at milestones)."""
        lag = lane_lag_histogram(metrics.registry)
        due_to_sent = lag.labels(stage="due_to_sent").observe
        sent_to_answered = lag.labels(stage="sent_to_answered").observe

        def on_lag(backlog: float, answer: float) -> None:
            due_to_sent(backlog)
            sent_to_answered(answer)

        self.lane = LeaseLane(
            sender, self, rate=(settings.qps, settings.burst), clock=clock, rng=rng, on_lag=on_lag
        )
        """Sends every renewal: its own timers and writers (see :mod:`shards._leaselane`)."""
        bucket = self.lane.bucket
        assert bucket is not None  # a rate was given
        self.bucket = bucket
        """The token bucket the write queue is to share (the lane's writes go first)."""
        self.give_way = self.lane.give_way
        """Awaited by the shard's other busy tasks before each unit of work: waits while
        renewals are behind (:meth:`~shards._leaselane.LeaseLane.give_way`)."""

    # -- what the node driver says -------------------------------------------------------------

    def node(self, key: str, name: str, node_uid: str) -> None:
        """CR ``key``'s v1.Node ``name`` (uid ``node_uid``) was registered or adopted."""
        lease = self._leases.get(key)
        if lease is None:
            self._leases[key] = _NodeLease(name, node_uid)
        else:
            lease.name = name
            lease.node_uid = node_uid

    async def take_over(self, key: str, name: str) -> bool:
        """Renew the Lease of a node served before (a takeover from another shard, a
        restart, the fence reopening) at once, before any other work of its sync: one merge
        PATCH, no read first. False when there is no Lease (its sync creates one).

        A takeover is a race with the node Lease's duration: the dead shard's last
        renewal, its shard Lease expiring, the moves, then this; the GET of the Node, its
        label PATCH and the Lease GET an adoption makes came before the first renewal (and
        that one was spread over :data:`ADOPT_WITHIN` more), and at 500 nodes behind 64
        syncs on a loaded apiserver they took longer than the time left. The renewals go on
        from here (:meth:`ensure` finds the Lease known and renewing)."""
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _NodeLease(name)
        elif lease.body is not None and key in self.lane:
            return True  # renewing already
        now = format_micro_time(self._wall())
        patch = {
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                "renewTime": now,
            }
        }
        response = await self._register.request(
            "PATCH", lease_path(name), body=_patch_encoder.encode(patch), content_type=MERGE_PATCH
        )
        if response.status == 404:
            return False
        body = trim_lease(response.raise_for_status().content)
        if self._leases.get(key) is not lease:
            return True  # dropped meanwhile: no renewals for it
        lease.body = body
        lease.ok = self._clock()
        lease.missed_counted = False
        self._schedule(
            key, lease, self._clock() + jitter(self._interval(), self._jitter(), self._rng)
        )
        self.taken_over += 1
        if self.taken_over in _TAKEOVER_MILESTONES or self.taken_over % 1000 == 0:
            log.info("node Lease %s taken over (%d so far)", name, self.taken_over)
        return True

    async def ensure(self, key: str, *, node_created: bool = False) -> None:
        """Create the node's Lease, or adopt the one there; renewals go on from it.

        ``node_created``: the Node was POSTed just now, so its Lease is most likely
        missing too: POST at once; a leftover Lease costs a 409 and the GET.
        """
        lease = self._leases.get(key)
        if lease is None:
            return  # no node registered for it (dropped meanwhile)
        await self._create_or_adopt(key, lease, node_created=node_created)
        if self._leases.get(key) is lease:
            lease.renewing = True

    async def _create_or_adopt(self, key: str, lease: _NodeLease, *, node_created: bool) -> None:
        clock = self._clock
        if lease.body is None:
            response = (
                None
                if node_created
                else await self._register.request("GET", lease_path(lease.name))
            )
            if response is None or response.status == 404:
                body = encode_lease(lease_body(lease.name, lease.node_uid, self._wall()))
                response = await self._register.request(
                    "POST", lease_path(), body=body, content_type=JSON
                )
                try:
                    response.raise_for_status()
                except AlreadyExists:
                    response = await self._register.request("GET", lease_path(lease.name))
                    lease.body = trim_lease(response.raise_for_status().content)
                    self._schedule(key, lease, clock())
                    return
                lease.body = trim_lease(response.content)
                lease.ok = clock()
                self._schedule(
                    key, lease, clock() + jitter(self._interval(), self._jitter(), self._rng)
                )
                return
            lease.body = trim_lease(response.raise_for_status().content)
        if key not in self.lane:
            # Adopted (restart, takeover, resume): renew soon, spread.
            self._schedule(
                key, lease, clock() + spread(min(self._interval(), ADOPT_WITHIN), self._rng)
            )

    def stop(self, key: str) -> None:
        """No more renewals for ``key`` (until :meth:`ensure`); what it knows stays."""
        self.lane.cancel(key)
        lease = self._leases.get(key)
        if lease is not None:
            lease.renewing = False

    def release(self, key: str) -> None:
        """Stop, and forget the Lease as last read: the next :meth:`ensure` reads it again."""
        self.stop(key)
        lease = self._leases.get(key)
        if lease is not None:
            lease.body = None
            lease.parked = False

    def park(self, key: str) -> bool:
        """The fence closed: stop renewing, keep the Lease as last written for :meth:`resume`.

        True when it was being renewed (a node suspended or paused by its script is not,
        and is not resumed). A renewal out at the moment is still answered: its Lease
        becomes the one kept (or, met by another writer, none: it is not resumed)."""
        lease = self._leases.get(key)
        renewing = lease is not None and lease.renewing and lease.body is not None
        self.stop(key)
        if lease is not None:
            lease.parked = renewing
        return renewing

    def resume(self, key: str, when: float) -> bool:
        """The fence reopened unbroken: renew a parked Lease from ``when`` on, on top of
        the Lease as last written (a 409 from another writer is the lane's usual case: the
        node is left alone). False when there is none to resume (re-adopt it instead)."""
        lease = self._leases.get(key)
        if lease is None or not lease.parked or lease.body is None:
            return False
        lease.parked = False
        lease.renewing = True
        self._schedule(key, lease, when)
        return True

    def drop(self, key: str) -> None:
        """``key`` is no longer this shard's: nothing more about it."""
        self.lane.cancel(key)
        self._leases.pop(key, None)

    def lease_of(self, key: str) -> bytes | None:
        """The Lease of CR ``key`` as the last write returned it (trimmed); None: none known."""
        lease = self._leases.get(key)
        return None if lease is None else lease.body

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The lane's tasks and the self-check (:meth:`audit`), until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.lane.run)
            nursery.start_soon(self._audit_every, LANE_AUDIT_EVERY)
            task_status.started()

    async def _audit_every(self, period: float) -> None:
        while True:
            await trio.sleep(period)
            self.audit()

    def audit(self) -> int:
        """Find node Leases that should be renewing but never will be, and renew them now.

        Defence in depth against a bug in the lane's bookkeeping (it lost keys for good
        once, see :mod:`shards._leaselane`): a key the lane holds with no timer, not
        queued and not out (:meth:`~shards._leaselane.LeaseLane.repair`); a Lease being
        renewed, known, that the lane does not hold at all. Each is logged as a WARNING
        and counted (``kubemock_fleet_lease_lane_repaired{check}``); returns how many.
        """
        repaired = self._metrics.lease_lane_repaired
        lost = len(self.lane.repair())
        if lost:
            repaired.labels(check="lane").inc(lost)
        dropped = 0
        now = self._clock()
        for key, lease in self._leases.items():
            if lease.renewing and lease.body is not None and key not in self.lane:
                log.warning("lease %s: renewing but not in the lane, renewed now: a bug", key)
                self._schedule(key, lease, now)
                dropped += 1
        if dropped:
            repaired.labels(check="owner").inc(dropped)
        return lost + dropped

    # -- the renewals (asked by the lane) ------------------------------------------------------

    def _interval(self) -> float:
        return self._settings.node_lease_renew_interval

    def _jitter(self) -> float:
        return self._settings.renew_jitter

    def _schedule(self, key: str, lease: _NodeLease, when: float) -> None:
        lease.due = when
        self.lane.schedule(key, when)

    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
        """The PUT renewing ``key``'s Lease now (:class:`~shards._leaselane.LeaseOwner`).

        A regular renewal arms the next one from this one's due time (not from now), so
        a late renewal does not push every later one back, and a bunch does not persist;
        one later than a whole interval arms it from now.
        """
        lease = self._leases.get(key)
        if lease is None or not lease.renewing or lease.body is None:
            return None
        now = self._clock()
        if not self._fresh():
            if self._fence_open():
                # The shard's Lease is late this moment but the fence is open: renew once it
                # is fresh again (a closing fence cancels this; dropping it stopped the node).
                self._schedule(key, lease, now + PUT_OFF)
            return None
        duration = self._settings.node_lease_duration
        if lease.ok is not None and now - lease.ok > duration and not lease.missed_counted:
            self._metrics.lease_renewals_missed.labels(lease="node").inc()
            lease.missed_counted = True
        if not retry:  # a regular renewal: arm the next one
            lease.renewing_due = lease.due
            interval = jitter(self._interval(), self._jitter(), self._rng)
            due = lease.due + interval
            # Later than a whole interval (its last one was long out): the next from now, not
            # at once (the lane sends one request of a Lease at a time, see _leaselane).
            self._schedule(key, lease, due if due > now else now + interval)
        renewed = renew_lease(decode_lease(lease.body), self._wall(), node_uid=lease.node_uid)
        lease.sent = (*lease.sent[-(SENT_KEPT - 1) :], renewed.spec.renewTime or "")
        return BatchRequest("PUT", lease_path(lease.name), None, encode_lease(renewed), JSON)

    async def lease_answered(self, key: str, answer: Response | FleetError) -> bool:
        """The renewal's answer (:class:`~shards._leaselane.LeaseOwner`); True: send again."""
        lease = self._leases.get(key)
        if lease is None or not isinstance(answer, Response):
            return False
        if answer.status < 300:
            lease.body = trim_lease(answer.content)
            finished = self._clock()
            duration = self._settings.node_lease_duration
            if lease.ok is not None and finished - lease.ok > duration:
                if not lease.missed_counted:
                    self._metrics.lease_renewals_missed.labels(lease="node").inc()
            elif finished - lease.renewing_due > LATE_AFTER:
                self._metrics.lease_renewals_late.labels(lease="node").inc()
            lease.ok = finished
            lease.missed_counted = False
            lease.sent = ()
            return False
        if answer.status == 404:
            lease.body = None  # deleted: the sync re-creates it
            self._resync(key, 0.0)
            return False
        if answer.status == 409:
            response = await self._sender.request("GET", lease_path(lease.name))
            if response.status == 404:
                return False
            content = response.raise_for_status().content
            if self._leases.get(key) is not lease:
                return False
            if decode_lease(content).spec.renewTime in lease.sent:
                # Our own renewal landed after all (its answer was lost, a retry conflicted
                # with it): renewed.
                lease.body = trim_lease(content)
                lease.ok = self._clock()
                lease.sent = ()
                return False
            # Someone else renewed it: most likely another shard taking the node over (its
            # CR moved, and this shard's watch has not said so yet). Renewing on top would
            # drive the node from two shards; the node's sync takes it up again after
            # HANDOVER_WAIT if the CR is still this shard's (its watch will have said).
            log.info("node Lease %s renewed by another writer: leaving it a moment", lease.name)
            lease.body = None
            lease.sent = ()
            self._resync(key, HANDOVER_WAIT)
            return False
        try:
            answer.raise_for_status()
        except FleetError as exc:
            log.warning("lease %s: renewal refused: %s", key, exc)
        return False
