"""Shard liveness by observation on the local clock, never by the Lease's timestamps."""

from __future__ import annotations

import trio

from fleet.coordinator._liveness import LeaseRecord, Liveness


def rec(renew: str, holder: str = "shard-0@h/1", duration: float = 15.0) -> LeaseRecord:
    return LeaseRecord(holder=holder, renew_time=renew, duration=duration)


async def test_alive_until_duration_after_last_observed_change(
    autojump_clock: trio.abc.Clock,
) -> None:
    live = Liveness(trio.current_time)
    start = trio.current_time()
    # The renewTime is years in the past by the local clock: irrelevant.
    assert live.observe("0", rec("2001-01-01T00:00:00.000000Z"))
    assert live.alive() == {"0"}
    assert live.next_expiry() == start + 15
    await trio.sleep(10)
    assert not live.observe("0", rec("2001-01-01T00:00:00.000000Z"))  # same record: no news
    await trio.sleep(5)
    assert live.next_expiry() is None  # 15 s after the change was seen: expired...
    assert live.alive() == {"0"} and live.unconfirmed() == ["0"]  # ...but not yet confirmed
    live.confirm("0", rec("2001-01-01T00:00:00.000000Z"))  # a fresh read: the same record
    assert live.alive() == set() and live.unconfirmed() == []
    assert live.observe("0", rec("2001-01-01T00:00:02.000000Z"))  # renewed: alive again
    assert live.alive() == {"0"}
    assert live.expiry("0") == trio.current_time() + 15


async def test_the_lease_duration_comes_from_the_lease(autojump_clock: trio.abc.Clock) -> None:
    live = Liveness(trio.current_time)
    live.observe("0", rec("t1", duration=4))
    live.observe("1", rec("t1", duration=40))
    await trio.sleep(5)
    assert live.unconfirmed() == ["0"]
    live.confirm("0", rec("t1", duration=4))
    assert live.alive() == {"1"}


async def test_released_or_deleted_lease_is_dead_at_once(autojump_clock: trio.abc.Clock) -> None:
    live = Liveness(trio.current_time)
    live.observe("0", rec("t1"))
    live.observe("1", rec("t1"))
    live.observe("0", rec("t2", holder=""))
    live.forget("1")
    assert live.alive() == set()
    assert live.expiry("0") is None


async def test_a_new_holder_identity_counts_as_a_change(autojump_clock: trio.abc.Clock) -> None:
    live = Liveness(trio.current_time)
    live.observe("0", rec("t1", holder="shard-0@h/1"))
    await trio.sleep(14)
    assert live.observe("0", rec("t1", holder="shard-0@h/2"))  # restarted shard, same time text
    await trio.sleep(14)
    assert live.alive() == {"0"} and live.unconfirmed() == []


async def test_an_expiry_counts_only_once_a_fresh_read_confirms_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The watch that feeds observations may be what failed: a re-read decides."""
    live = Liveness(trio.current_time)
    live.observe("0", rec("t1"))
    live.observe("1", rec("t1"))
    live.observe("2", rec("t1"))
    await trio.sleep(16)
    assert sorted(live.unconfirmed()) == ["0", "1", "2"]
    assert live.alive() == {"0", "1", "2"}  # no read yet: none is known dead
    live.confirm("0", rec("t1"))  # unchanged: dead
    live.confirm("1", rec("t9"))  # renewed meanwhile (the watch missed it): alive again
    live.confirm("2", None)  # the Lease is gone: forgotten
    assert live.alive() == {"1"} and live.unconfirmed() == []
    assert live.expiry("1") == trio.current_time() + 15
    assert live.expiry("2") is None
    await trio.sleep(15)
    assert live.unconfirmed() == ["1"]
    live.observe("0", rec("t2"))  # the dead shard renews: alive with no read needed
    assert live.alive() == {"0", "1"}
