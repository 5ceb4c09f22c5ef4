"""Shard liveness, judged from shard Leases the way client-go leader election judges a lease.

A shard holds the Lease ``kubemock-fleet-shard-<K>`` in the fleet namespace and
renews it. The coordinator never compares the Lease's ``renewTime`` with its
own clock: the two machines' clocks may disagree by more than a lease
duration. Instead, like client-go's ``LeaderElector`` (``observedRecord`` /
``observedTime``), it remembers *when it last saw the record change*, on its
own monotonic clock, and calls the shard alive until

    expiry = last observed change + leaseDurationSeconds

A first sighting counts as a change, so a coordinator that has just started
gives every existing shard one full lease duration before it moves anything:
it errs towards waiting, never towards two shards driving one node.

A Lease whose ``holderIdentity`` is empty has been released: that shard is
dead at once. (A shard does not release its own on a clean stop: it leaves it
to expire, so one restarted within the duration keeps its nodes.) A deleted
Lease is forgotten, hence dead.

Expiry by observation is necessary, not sufficient: the coordinator's watch
may be the thing that failed (an apiserver restart, a relist in back-off)
while the shard kept renewing through its own connection. Moving a live
shard's CRs while its watch is down too lets two shards drive one node, so
an expired shard stays *unconfirmed*, still counted alive, until a fresh read
of its Lease (:meth:`Liveness.confirm`) shows the same record: only then is
it dead. A read that fails leaves it unconfirmed; the coordinator errs
towards waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["LeaseRecord", "Liveness"]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The parts of a Lease's spec whose change shows the holder is alive."""

    holder: str
    """``spec.holderIdentity``; empty when released."""
    renew_time: str
    """``spec.renewTime`` exactly as written (opaque: compared, never parsed)."""
    duration: float
    """``spec.leaseDurationSeconds``, or the configured default when absent."""


@dataclass(slots=True)
class _Observed:
    record: LeaseRecord
    since: float
    confirmed: bool = False
    """A read after the expiry showed this same record: the shard is dead."""


class Liveness:
    """Which shards are alive, from the Lease records observed and the local clock.

    ``clock`` is the coordinator's monotonic clock (``trio.current_time`` in
    production and under the autojump clock in tests).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._observed: dict[str, _Observed] = {}

    def observe(self, shard: str, record: LeaseRecord) -> bool:
        """Record a sighting of ``shard``'s Lease; True when the record changed."""
        seen = self._observed.get(shard)
        if seen is not None and seen.record == record:
            return False
        self._observed[shard] = _Observed(record, self._clock())
        return True

    def confirm(self, shard: str, record: LeaseRecord | None) -> None:
        """What a fresh read of an expired shard's Lease found (None: no Lease)."""
        if record is None:
            self.forget(shard)
        elif not self.observe(shard, record):
            self._observed[shard].confirmed = True

    def forget(self, shard: str) -> None:
        """The shard's Lease was deleted."""
        self._observed.pop(shard, None)

    def expiry(self, shard: str) -> float | None:
        """When ``shard`` stops counting as alive (local clock); None if unknown or released."""
        seen = self._observed.get(shard)
        if seen is None or not seen.record.holder:
            return None
        return seen.since + seen.record.duration

    def alive(self) -> frozenset[str]:
        """The shards not known dead: Lease changed within its duration, or not yet confirmed."""
        now = self._clock()
        return frozenset(
            shard
            for shard, seen in self._observed.items()
            if (expiry := self.expiry(shard)) is not None and (now < expiry or not seen.confirmed)
        )

    def unconfirmed(self) -> list[str]:
        """Shards whose Lease expired by observation, to be read again before they count dead."""
        now = self._clock()
        return [
            shard
            for shard, seen in self._observed.items()
            if (expiry := self.expiry(shard)) is not None and now >= expiry and not seen.confirmed
        ]

    def next_expiry(self) -> float | None:
        """The earliest future expiry among live shards: when ``alive()`` next shrinks."""
        now = self._clock()
        upcoming = [
            expiry
            for shard in self._observed
            if (expiry := self.expiry(shard)) is not None and expiry > now
        ]
        return min(upcoming, default=None)
