"""Leader election through a Lease, with client-go's semantics.

Two coordinator replicas may run (deploy/ runs two); the one holding the
Lease ``kubemock-fleet-coordinator`` in the fleet namespace acts. The
algorithm is client-go's ``tools/leaderelection``:

* **Acquire**: every ``retry_period`` (jittered by a factor up to 1.2, as
  client-go's ``JitterUntil``), GET the Lease. Absent → create it holding it.
  Held by another whose record was seen to change less than
  ``lease_duration`` ago *on our own clock* → wait. Otherwise (expired by our
  observation, released, or ours) → PUT it with our identity, carrying the
  resourceVersion we read, so of two electors racing only one PUT succeeds
  (the other gets 409 Conflict).
* **Renew**: while leading, PUT a fresh ``renewTime`` every ``retry_period``.
  If no renewal has succeeded by ``renew_deadline`` after the *send* time of
  the last successful one, step down: cancel the leading work first, then
  compete again. Because ``renew_deadline < lease_duration`` and others
  measure ``lease_duration`` from when they *saw* that renewal (necessarily
  after we sent it), we stop acting before anyone else may take over.
* **Release**: on cancellation (shutdown), a leader writes an empty
  holderIdentity with a 1 s duration, so a standby takes over without
  waiting out the lease (client-go ``ReleaseOnCancel``).

Timestamps in the Lease come from the injected wall clock and are never
compared with the local clock.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fleet.coordinator._leases import (
    WallClock,
    create_lease,
    get_lease,
    micro_time,
    replace_lease,
    wall_clock,
)
from fleet.errors import ApiError, TransportError
from fleet.kube import Requester

__all__ = ["LeaderElector"]

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2
"""client-go's ``JitterFactor`` for the acquire loop: spreads competing replicas."""


class LeaderElector:
    """Competes for one Lease; runs ``lead()`` while holding it.

    ``is_leader`` tells the state now; ``leading`` is an event set while this
    elector leads (a fresh, unset event replaces it when leadership is lost).
    """

    def __init__(
        self,
        requester: Requester,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        clock: Callable[[], float] = trio.current_time,
        wall: WallClock = wall_clock,
        rng: random.Random | None = None,
        release_on_cancel: bool = True,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError(
                "leader election needs lease_duration > renew_deadline > retry_period > 0"
            )
        self._requester = requester
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._clock = clock
        self._wall = wall
        self._rng = rng or random.Random()
        self._release_on_cancel = release_on_cancel
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._is_leader = False
        self.leading = trio.Event()
        self._last_failure = "none"
        """Why the last acquire/renew attempt failed: said when leadership is lost."""

    @property
    def is_leader(self) -> bool:
        return self._is_leader

    async def run(
        self,
        lead: Callable[[], Awaitable[None]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Compete forever; while leading run ``lead()``, cancelled when leadership is lost."""
        task_status.started()
        try:
            while True:
                sent = await self._acquire()
                self._is_leader = True
                self.leading.set()
                log.info("%s: leading via Lease %s/%s", self.identity, self.namespace, self.name)
                async with trio.open_nursery() as nursery:

                    async def lead_then_stop() -> None:
                        await lead()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(lead_then_stop)
                    await self._renew(sent)
                    nursery.cancel_scope.cancel()
                self._step_down()
                log.warning(
                    "%s: lost leadership: not renewed within %g s (last failure: %s)",
                    self.identity,
                    self._renew_deadline,
                    self._last_failure,
                )
        finally:
            if self._is_leader:
                self._step_down()
                if self._release_on_cancel:
                    with trio.CancelScope(shield=True), trio.move_on_after(self._retry_period):
                        await self._release()

    def _step_down(self) -> None:
        self._is_leader = False
        self.leading = trio.Event()

    async def _acquire(self) -> float:
        """Loop until the Lease is ours; return the send time of the winning write."""
        while True:
            sent = self._clock()
            if await self._try_acquire_or_renew():
                return sent
            period = self._retry_period * (1 + self._rng.random() * JITTER_FACTOR)
            await trio.sleep(period)

    async def _renew(self, last_sent: float) -> None:
        """Renew every retry period; return when no renewal succeeded within renew_deadline."""
        while True:
            await trio.sleep(self._retry_period)
            deadline = last_sent + self._renew_deadline
            attempting = False
            with trio.move_on_at(deadline):
                while True:
                    sent = self._clock()
                    attempting = True
                    renewed = await self._try_acquire_or_renew()
                    attempting = False
                    if renewed:
                        last_sent = sent
                        break
                    await trio.sleep(self._retry_period)
            if attempting:
                late = self._clock() - sent
                self._last_failure = f"a renewal sent {late:.1f} s before was still unanswered"
            if last_sent + self._renew_deadline <= self._clock():
                return

    async def _try_acquire_or_renew(self) -> bool:
        now_text = micro_time(self._wall())
        try:
            lease = await get_lease(self._requester, self.namespace, self.name)
            if lease is None:
                spec = self._spec(now_text, acquire_time=now_text, transitions=0)
                created = await create_lease(self._requester, self.namespace, self.name, spec)
                self._observe(created["spec"], force=True)
                return True
            old = dict(lease.get("spec") or {})
            self._observe(old)
            holder = old.get("holderIdentity") or ""
            mine = holder == self.identity
            valid = self._observed_at + self._lease_duration > self._clock()
            if holder and valid and not mine:
                self._last_failure = f"held by {holder}"
                return False
            transitions = int(old.get("leaseTransitions") or 0)
            if mine:
                spec = self._spec(now_text, old.get("acquireTime") or now_text, transitions)
            else:
                spec = self._spec(now_text, now_text, transitions + 1)
            lease["spec"] = spec
            updated = await replace_lease(self._requester, lease)
            self._observe(updated["spec"], force=True)
            return True
        except (ApiError, TransportError) as exc:
            log.debug("%s: acquire/renew failed: %s", self.identity, exc)
            self._last_failure = str(exc)
            return False

    def _spec(self, renew_time: str, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": round(self._lease_duration),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    def _observe(self, spec: dict[str, Any], *, force: bool = False) -> None:
        if force or spec != self._observed_spec:
            self._observed_spec = spec
            self._observed_at = self._clock()

    async def _release(self) -> None:
        try:
            lease = await get_lease(self._requester, self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now_text = micro_time(self._wall())
            spec = dict(lease["spec"])
            spec.update(
                holderIdentity="", leaseDurationSeconds=1, renewTime=now_text, acquireTime=now_text
            )
            lease["spec"] = spec
            await replace_lease(self._requester, lease)
        except (ApiError, TransportError) as exc:
            log.warning("%s: could not release the Lease: %s", self.identity, exc)
