"""The Lease lane's priority over other work (autojump clock).

Other tasks give way (:meth:`LeaseLane.give_way`) only while the lane could catch
up if it had the CPU: renewals waiting for a free writer, or due and not yet
taken. A lane whose writers all wait on a slow apiserver gains nothing from the
rest of the shard standing still: that is how a saturated apiserver used to
stall a shard's pods (seen in a kwok-ci run).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from fleet.errors import FleetError, TransportError
from fleet.kube import BatchRequest, Response
from shards._leaselane import GIVE_WAY_MAX, LeaseLane


class Owner:
    def lease_request(self, key: str) -> BatchRequest | None:
        return BatchRequest("PUT", f"/leases/{key}", body=b"{}")

    async def lease_answered(self, key: str, answer: Response | FleetError) -> bool:
        return False


class SlowServer:
    """Answers each batch after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches: list[int] = []

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        self.batches.append(len(requests))
        await trio.sleep(self.delay)
        return [Response(200, b"{}") for _ in requests]


async def waited(lane: LeaseLane) -> float:
    start = trio.current_time()
    await lane.give_way()
    return trio.current_time() - start


async def test_others_give_way_while_renewals_wait_for_a_free_writer(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The writers are not running (as when the process is too busy to run them).
    lane = LeaseLane(SlowServer(0.0), Owner(), writers=2)
    assert await waited(lane) == 0.0  # nothing due
    lane.schedule("a", trio.current_time())
    await trio.sleep(1.0)  # due, and well past the dispatcher's window
    assert lane.behind()
    assert await waited(lane) == GIVE_WAY_MAX


async def test_others_go_on_while_every_writer_waits_on_the_apiserver(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    server = SlowServer(5.0)
    lane = LeaseLane(server, Owner(), writers=2)
    await nursery.start(lane.run)
    now = trio.current_time()
    for i in range(10):
        lane.schedule(f"n{i}", now + i * 0.01)
    await trio.sleep(0.5)
    # Both writers are out with a batch each; the rest waits for them, not for CPU.
    assert len(server.batches) == 2 and sum(server.batches) < 10
    assert not lane.behind()
    assert await waited(lane) == 0.0
    await trio.sleep(20)
    assert sum(server.batches) == 10
    assert not lane.behind()
