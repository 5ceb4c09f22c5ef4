"""The shard Lease's renewer and its fence (autojump clock, in-memory apiserver)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from fleet.kube import MemoryApiserver
from shards._shardlease import ShardLease


def wall() -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=trio.current_time())


async def test_a_failed_renewal_is_tried_again_within_a_quarter_second(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Renewals every 1 s, deadline 4 s. Waiting a whole interval after each failure, an
    outage of 2.5 s could end 4 s after the last renewal and fence the shard (the fault
    suite, loaded: a renewal 1 s after the outage came too late); a retry every quarter
    second renews within 0.25 s of its end, so any outage under 2.75 s fences nobody."""
    server = MemoryApiserver()
    client = server.client()
    events: list[str] = []
    lease = ShardLease(
        client, namespace="kube-mock-system", shard="0", identity="shard-0@test/1",
        duration=5, renew_interval=1, renew_deadline=4, clock=trio.current_time, wall=wall,
        on_lost=lambda: events.append("lost"), on_regained=lambda: events.append("regained"),
    )  # fmt: skip
    await nursery.start(lease.run)
    await trio.sleep(2.95)  # the worst moment: just before a renewal is due
    assert lease.fresh() and events == ["regained"]
    client.broken = True
    await trio.sleep(2.5)
    client.broken = False
    assert lease.failures == 10  # at 3.0, 3.25, ... 5.25: not 3 (at 3, 4 and 5)
    await trio.sleep(0.3)
    assert lease.fresh() and events == ["regained"]
    renewed = lease.renewals
    await trio.sleep(3)
    assert lease.renewals == renewed + 3  # back to one a second

    client.broken = True  # an outage past the deadline does fence
    await trio.sleep(5)
    assert events == ["regained", "lost"]
    client.broken = False
    await trio.sleep(0.3)
    assert events == ["regained", "lost", "regained"]
