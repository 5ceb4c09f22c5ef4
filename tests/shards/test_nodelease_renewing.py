"""Node Leases keep renewing over a slow, lossy apiserver (NodeLeases on MemoryApiserver,
autojump clock).

The failover test's lost Leases, end to end: answers slower than the renew interval
(the next renewal goes before the last one's answer was read, with its stale
resourceVersion: 409, re-read, sent again) and writes applied by the apiserver whose
answers never came (ReadTimeout). Every node's Lease is renewed every interval once
the apiserver is quick again, and the self-check (:meth:`NodeLeases.audit`) never
finds a Lease it has to repair.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from itertools import pairwise

import pytest
import trio

from fleet._metrics import FleetMetrics
from fleet._settings import ShardSettings
from fleet.errors import ReadTimeout, TransportError
from fleet.kube import BaseRequester, BatchRequest, MemoryApiserver, Response, StreamResponse
from shards._context import FencedRequester
from shards._nodelease import NodeLeases

INTERVAL = 2.0
NODES = 30
ROUGH_UNTIL = 40.0
"""Seconds of a slow, lossy apiserver; quick and reliable after."""

Plan = Callable[[BatchRequest], tuple[float, bool]]
"""``request -> (delay, answered)``: each request is applied at once; its answer is read
``delay`` later, or (``answered`` False) is lost: a ReadTimeout after ``delay``."""


class Lagging(BaseRequester):
    """``server`` behind a connection that is slow to answer and sometimes loses an answer."""

    def __init__(self, server: MemoryApiserver, plan: Plan) -> None:
        self.server = server
        self.plan = plan

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.server.request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self.server.stream(method, path, params=params, headers=headers)

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        answers: list[Response | TransportError] = []
        delay = 0.0
        for r in requests:
            answer = await self.server.request(
                r.method, r.path, params=r.params, body=r.body, content_type=r.content_type
            )
            wait, answered = self.plan(r)
            delay = max(delay, wait)
            answers.append(answer if answered else ReadTimeout("no complete answer"))
        await trio.sleep(delay)
        return answers


def leases(server: MemoryApiserver, plan: Plan) -> NodeLeases:
    settings = ShardSettings(node_lease_renew_interval=INTERVAL, renew_jitter=0.04)

    def wall() -> datetime:
        return MemoryApiserver.wall()

    return NodeLeases(
        FencedRequester(Lagging(server, plan), lambda: True, field_manager="shard-0"),
        register=server,
        settings=settings,
        metrics=FleetMetrics(),
        resync=lambda key, delay: None,
        clock=trio.current_time,
        wall=wall,
        rng=random.Random(1),
        fresh=lambda: True,
        fence_open=lambda: True,
    )


@pytest.fixture
async def server() -> AsyncIterator[MemoryApiserver]:
    yield MemoryApiserver()


def renewals(server: MemoryApiserver, name: str, since: float) -> list[float]:
    return [
        w.at
        for w in server.writes
        if w.method == "PUT" and w.path.endswith(f"/leases/{name}") and w.at >= since
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_node_lease_keeps_renewing_over_a_slow_lossy_apiserver(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    server: MemoryApiserver,
    caplog: pytest.LogCaptureFixture,
    seed: int,
) -> None:
    rng = random.Random(seed)

    def plan(_r: BatchRequest) -> tuple[float, bool]:
        if trio.current_time() > ROUGH_UNTIL:
            return 0.01, True
        return rng.choice((0.01, 0.2, 1.0, 2.2, 3.0)), rng.random() > 0.1

    node_leases = leases(server, plan)
    await nursery.start(node_leases.run)
    keys = [f"ns/n{i}" for i in range(NODES)]
    for i, key in enumerate(keys):
        node_leases.node(key, f"n{i}", f"uid-{i}")
        await node_leases.ensure(key, node_created=True)
    while trio.current_time() < ROUGH_UNTIL + 30.0:
        await trio.sleep(0.5)
        assert not node_leases.lane.lost()
        assert node_leases.audit() == 0
    quiet = ROUGH_UNTIL + 5.0
    for i in range(NODES):
        times = renewals(server, f"n{i}", since=quiet)
        assert len(times) >= 10, (keys[i], renewals(server, f"n{i}", since=0.0)[-8:])
        gaps = [b - a for a, b in pairwise([quiet, *times])]
        assert max(gaps) < INTERVAL * 1.2, (keys[i], gaps)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_the_self_check_renews_a_lease_the_lane_lost(
    autojump_clock: trio.abc.Clock,
    nursery: trio.Nursery,
    server: MemoryApiserver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key dropped behind the lane's back (as a bug would) is found by the periodic
    self-check, logged, counted, and renewed again."""
    node_leases = leases(server, lambda _r: (0.01, True))
    await nursery.start(node_leases.run)
    node_leases.node("ns/a", "a", "uid-a")
    node_leases.node("ns/b", "b", "uid-b")
    await node_leases.ensure("ns/a", node_created=True)
    await node_leases.ensure("ns/b", node_created=True)
    await trio.sleep(5.0)
    lane = node_leases.lane
    lane.timers.cancel("ns/a")  # held, armed, but no timer: lost to the lane
    lane._keys.pop("ns/b")  # renewing, but the lane does not hold it at all
    assert lane.lost() == ["ns/a"]
    await trio.sleep(10.0)  # one self-check at least
    assert not lane.lost() and "ns/b" in lane
    for name in ("a", "b"):
        assert len(renewals(server, name, since=trio.current_time() - 4.0)) >= 1, name
    metric = node_leases._metrics.lease_lane_repaired
    assert metric.labels(check="lane")._value.get() == 1
    assert metric.labels(check="owner")._value.get() == 1
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2 and "ns/a" in warned[0] and "ns/b" in warned[1], warned
