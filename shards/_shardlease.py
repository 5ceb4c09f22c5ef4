"""The shard's own Lease, and the fence it puts around everything the shard drives.

Shard K holds ``kubemock-fleet-shard-<K>`` in the fleet namespace
(docs/architecture.md), renewed every ``coordinator.shardRenewInterval``
(2 s; a failed renewal is tried again after :data:`RETRY_AFTER_FAILURE`)
with a fresh renewTime, so the coordinator sees the record change
(fleet.coordinator ``_liveness`` judges a shard alive by observing changes,
never by comparing clocks).

A renewal is one JSON patch that tests the holder and sets renewTime, not a PUT
of the last copy read: on a saturated apiserver a renewal outlived its attempt,
landed, and every PUT after it carried a stale resourceVersion (409, then a GET
and a PUT, which outlived the next attempt in turn), so a shard renewing through
an apiserver answering in 2-3 s fenced itself again and again (`bench kwok-ci
--control-plane real`). The test keeps what the resourceVersion guarded: a
Lease someone else holds is never renewed blindly, it is read and taken back.

The fence (``_coordinator``'s docstring): a shard that has not renewed
successfully within ``coordinator.shardRenewDeadline`` (10 s) stops driving
every node, before the coordinator (which waits a whole
``shardLeaseDuration``, 15 s, after the last change it saw) can hand its CRs
to another shard. :meth:`ShardLease.fresh` is the live test, measured from
the moment the last successful renewal was *sent*, so it never errs late;
the engine checks it before every node write (through a gate on its
requesters) and gets ``on_lost`` / ``on_regained`` callbacks on each
transition to cancel or re-adopt its nodes.

Continuity (:meth:`ShardLease.unbroken`): when the fence reopens, may the shard
simply resume its nodes, or could another shard have been given them meanwhile?
The coordinator counts a shard dead only after it saw no change of its Lease for
``leaseDurationSeconds`` *and* a fresh GET shows the record it last saw, i.e. only
at a moment G with no renewal landing in the whole ``leaseDurationSeconds``
before G. Every renewal this shard knows succeeded landed between its send
(``S``) and the moment its answer was read (``A``). So if a renewal is answered
less than the duration after the previous successful one was *sent*
(``A_next - S_prev < duration``, the shard's own monotonic clock), no moment
between the two landings can have been such a G, and a run of renewals each
within that of the one before (a *tenure*, :attr:`ShardLease.tenure`) leaves the
coordinator no moment to declare the shard dead from its first landing to its
last. A tenure also ends where the Lease may have changed hands: the create, a
PUT taking it back from another holder (or an emptied one: dead at once to the
coordinator), a changed ``leaseTransitions``. The duration is the smaller of the
configured one and the whole seconds written in the Lease (the coordinator reads
the latter); the clocks of the shard and the coordinator are assumed to run at
one rate (the fence's own argument assumes it too). A fence that closes and
reopens within one tenure is unbroken: no dead-shard move of this shard's CRs
can have happened while it was closed (a handover between live shards needs the
shard's own release, which a fenced shard cannot write). A gap that broke the
tenure while the fence looked open (an attempt started just before the deadline
and answered late) closes and reopens the fence, so the engine re-adopts the
careful way; a Lease taken back while the fence is open ends the tenure
without closing it (as before).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import msgspec
import trio

from fleet.errors import FleetError
from fleet.kube import Requester, resource_path
from fleet.machinery import JSON, JSON_PATCH, format_micro_time
from fleet.wire import shard_lease_name
from shards._nodeobj import Lease, LeaseMeta, LeaseSpec, decode_lease, encode_lease

__all__ = ["ATTEMPT_SHARE", "RETRY_AFTER_FAILURE", "ShardLease"]

_RENEWED = "renewed"
"""An attempt's outcome: the Lease this shard held, renewed by a holder-tested PATCH."""
_ACQUIRED = "acquired"
"""An attempt's outcome: the Lease created, or taken back from another (or no) holder."""

log = logging.getLogger(__name__)

ATTEMPT_SHARE = 0.5
"""An attempt may last this share of the renew deadline (at least an interval): long enough
for an apiserver answering in seconds, short enough that a request hung on a dead
connection is dropped and tried again on a fresh one before the fence closes."""
RETRY_AFTER_FAILURE = 0.25
"""Seconds before a failed renewal is tried again (at most the renew interval): an outage
shorter than the renew deadline minus this never fences the shard. Waiting a whole
interval after an outage of 2.5 s fenced shards at a 4 s deadline (the fault suite, on a
loaded machine); it is one small request a shard, so retrying fast costs nothing."""


def _lease_path(namespace: str, name: str | None = None) -> str:
    return resource_path("coordination.k8s.io", "v1", "leases", namespace=namespace, name=name)


class ShardLease:
    """Creates and renews one shard Lease; tells the engine when the fence closes and opens."""

    def __init__(
        self,
        requester: Requester,
        *,
        namespace: str,
        shard: str,
        identity: str,
        duration: float,
        renew_interval: float,
        renew_deadline: float,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        on_lost: Callable[[], None] = lambda: None,
        on_regained: Callable[[], None] = lambda: None,
    ) -> None:
        self._requester = requester
        self.namespace = namespace
        self.name = shard_lease_name(shard)
        self.identity = identity
        self._duration = max(1, round(duration))
        self._interval = renew_interval
        self._deadline = renew_deadline
        self._attempt_timeout = max(renew_interval, renew_deadline * ATTEMPT_SHARE)
        self._clock = clock
        self._wall = wall
        self._on_lost = on_lost
        self._on_regained = on_regained
        self._lease: Lease | None = None
        self._last_ok: float | None = None
        self._active = False
        self._continuity = min(float(duration), float(self._duration))
        """Seconds from a successful renewal's send within which the next one must be
        answered for the coordinator to have had no moment to count the shard dead (the
        module docstring): the configured duration, or the whole seconds the Lease says
        if fewer (the coordinator reads those)."""
        self.tenure = 0
        """Runs of successful renewals with no gap the coordinator could count as death
        (the module docstring); a new one starts at the first renewal and after each gap."""
        self._transitions: int | None = None
        """``leaseTransitions`` as the last successful renewal returned it."""
        self._closed_in: int | None = None
        """The tenure the fence last closed in."""
        self.renewals = 0
        self.failures = 0

    def fresh(self) -> bool:
        """True while the last successful renewal was sent within the renew deadline."""
        return self._last_ok is not None and self._clock() - self._last_ok <= self._deadline

    @property
    def active(self) -> bool:
        """The fence as last reported through the callbacks (open = True)."""
        return self._active

    def unbroken(self) -> bool:
        """True when the fence is open again within the tenure it last closed in: no other
        shard can have been given this shard's CRs while it was closed (module docstring).
        False before the fence ever closed (the first opening adopts everything)."""
        return self._active and self._closed_in == self.tenure

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew until cancelled. Reports started at once: the fence starts closed."""
        task_status.started()
        while True:
            sent = self._clock()
            outcome: str | None = None
            with trio.move_on_after(self._attempt_timeout) as attempt:
                outcome = await self._attempt()
            if attempt.cancelled_caught:
                log.info(
                    "shard lease %s: renewal unanswered after %.1f s",
                    self.name,
                    self._attempt_timeout,
                )
            ok = outcome is not None
            if ok:
                self._carry_on(acquired=outcome == _ACQUIRED)
                self._last_ok = sent
                self.renewals += 1
            else:
                self.failures += 1
            self._check()
            wake = sent + (self._interval if ok else min(self._interval, RETRY_AFTER_FAILURE))
            if self._active and self._last_ok is not None:
                wake = min(wake, self._last_ok + self._deadline + 1e-6)
            await trio.sleep_until(max(wake, trio.current_time()))
            self._check()

    def _carry_on(self, *, acquired: bool) -> None:
        """A renewal just succeeded (before ``_last_ok`` moves to it): does it continue the
        tenure, or did the coordinator have a moment to count the shard dead since the last?"""
        transitions = self._lease.spec.leaseTransitions if self._lease is not None else None
        changed = transitions != self._transitions
        self._transitions = transitions
        last = self._last_ok
        gap = last is not None and self._clock() - last >= self._continuity
        if not (acquired or changed or gap or last is None):
            return
        if gap and self._active and last is not None:
            # A gap the fence did not see (an attempt begun just before the deadline,
            # answered late): closed now, in the tenure it broke, so the reopening just
            # after re-adopts every node the careful way.
            log.warning(
                "shard lease %s: renewed %.1f s after the last one was sent: fenced",
                self.name,
                self._clock() - last,
            )
            self._close()
        self.tenure += 1

    def _close(self) -> None:
        self._active = False
        self._closed_in = self.tenure
        self._on_lost()

    def _check(self) -> None:
        fresh = self.fresh()
        if fresh == self._active:
            return
        if fresh:
            self._active = True
            log.info(
                "shard lease %s renewed: driving nodes (%s)",
                self.name,
                "resumed: unbroken" if self.unbroken() else "re-adopted",
            )
            self._on_regained()
        else:
            log.warning("shard lease %s not renewed for %.0f s: fenced", self.name, self._deadline)
            self._close()

    async def _attempt(self) -> str | None:
        """One renewal: :data:`_RENEWED`, :data:`_ACQUIRED`, or None when it failed."""
        try:
            if self._lease is None:
                self._lease, created = await self._read_or_create()
                if created:
                    return _ACQUIRED  # the create was this round's renewal
                if self._lease.spec.holderIdentity != self.identity:
                    self._lease = await self._put(self._renewed(self._lease))
                    return _ACQUIRED
            self._lease = await self._patch()
            return _RENEWED
        except FleetError as exc:
            log.info("shard lease %s: renewal failed: %s", self.name, exc)
            self._lease = None  # re-read next time (409, 404, anything)
            return None

    def _renewed(self, lease: Lease) -> Lease:
        now = format_micro_time(self._wall())
        spec = lease.spec
        if spec.holderIdentity != self.identity:
            spec = msgspec.structs.replace(
                spec,
                holderIdentity=self.identity,
                acquireTime=now,
                leaseTransitions=(spec.leaseTransitions or 0) + 1,
            )
        spec = msgspec.structs.replace(spec, leaseDurationSeconds=self._duration, renewTime=now)
        return msgspec.structs.replace(lease, spec=spec)

    async def _read_or_create(self) -> tuple[Lease, bool]:
        response = await self._requester.request("GET", _lease_path(self.namespace, self.name))
        if response.status != 404:
            return decode_lease(response.raise_for_status().content), False
        now = format_micro_time(self._wall())
        body = Lease(
            kind="Lease",
            apiVersion="coordination.k8s.io/v1",
            metadata=LeaseMeta(name=self.name, namespace=self.namespace),
            spec=LeaseSpec(
                holderIdentity=self.identity,
                leaseDurationSeconds=self._duration,
                renewTime=now,
                acquireTime=now,
                leaseTransitions=0,
            ),
        )
        response = await self._requester.request(
            "POST", _lease_path(self.namespace), body=encode_lease(body), content_type=JSON
        )
        return decode_lease(response.raise_for_status().content), True

    async def _patch(self) -> Lease:
        """Renew a Lease this shard holds: the holder tested, renewTime set, one round trip."""
        ops = [
            {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
            {"op": "add", "path": "/spec/renewTime", "value": format_micro_time(self._wall())},
            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": self._duration},
        ]
        response = await self._requester.request(
            "PATCH",
            _lease_path(self.namespace, self.name),
            body=msgspec.json.encode(ops),
            content_type=JSON_PATCH,
        )
        return decode_lease(response.raise_for_status().content)

    async def _put(self, lease: Lease) -> Lease:
        response = await self._requester.request(
            "PUT",
            _lease_path(self.namespace, self.name),
            body=encode_lease(lease),
            content_type=JSON,
        )
        return decode_lease(response.raise_for_status().content)
