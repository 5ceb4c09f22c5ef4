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
import trio.testing

from fleet.errors import FleetError, TransportError
from fleet.kube import BatchRequest, Response
from shards._leaselane import GIVE_WAY_MAX, LeaseLane
from tests._busy import Spinner


class Owner:
    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
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


class SerialServer:
    """Answers the requests of a batch one after another, as kube-apiserver does those of
    one HTTP/1.1 connection, each waiting ``per_request`` seconds (its etcd commit)."""

    def __init__(self, per_request: float) -> None:
        self.per_request = per_request
        self.in_flight = 0
        self.most_in_flight = 0

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await trio.sleep(self.per_request * len(requests))
        self.in_flight -= 1
        return [Response(200, b"{}") for _ in requests]


class Renewing(Owner):
    """Re-arms each renewal 10 s after it was due, as the node driver does; notes lateness."""

    def __init__(self) -> None:
        self.lane: LeaseLane | None = None
        self.due: dict[str, float] = {}
        self.late: list[float] = []

    def lease_request(self, key: str, *, retry: bool) -> BatchRequest | None:
        assert self.lane is not None
        due = self.due[key]
        self.late.append(trio.current_time() - due)
        self.due[key] = due + 10.0
        self.lane.schedule(key, due + 10.0)
        return super().lease_request(key, retry=retry)


async def test_a_commit_bound_apiserver_gets_renewals_on_many_connections(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """2,000 nodes renewing every 10 s against 25 ms a commit, one connection serial: 200
    renewals/s need 5 connections busy at once. On 4 the lane fell behind for good (the
    real control plane's kwok-ci: renewals missed, nodes NotReady); now none is late."""
    owner = Renewing()
    lane = LeaseLane(SerialServer(0.025), owner)
    owner.lane = lane
    await nursery.start(lane.run)
    start = trio.current_time()
    for i in range(2000):
        owner.due[f"n{i}"] = start + i * 0.005  # spread over the first 10 s
        lane.schedule(f"n{i}", owner.due[f"n{i}"])
    await trio.sleep(60)
    assert len(owner.late) >= 2000 * 5
    assert max(owner.late) < 1.0, max(owner.late)


async def test_a_batch_of_renewals_waits_one_round_of_a_busy_loop_for_its_tokens(
    mock_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """Tokens taken one per renewal cost a batch of 64 as many rounds of the event loop: with
    thousands of watches runnable, renewals of 10,000 kubelet-profile nodes went seconds
    late at half a core. The batch takes its tokens in one step."""
    server = SlowServer(0.0)
    lane = LeaseLane(server, Owner(), rate=(2000.0, 400), writers=1)
    await nursery.start(lane.run)
    spinner = Spinner()

    now = trio.current_time()
    for i in range(64):
        lane.schedule(f"n{i}", now)
    nursery.start_soon(spinner.spin)
    mock_clock.jump(1.0)  # all due, past the dispatcher's window
    before = spinner.rounds
    while sum(server.batches) < 64:
        await trio.lowlevel.checkpoint()
    assert server.batches == [64]
    assert spinner.rounds - before < 16, spinner.rounds - before
