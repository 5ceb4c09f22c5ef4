"""``shards.serve_shard``, the shard process's composition root, on the in-memory apiserver.

What the root adds to the engine (tests/shards/test_engine.py drives that alone):
the transport wrapped to count every request in the shard's metrics, the
identity on its shard Lease, ``/metrics`` and the probes when asked, and a
clean stop on cancellation. On trio's autojump clock.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from fleet._metrics import FleetMetrics
from fleet._settings import FleetSettings, ShardSettings
from fleet.kube import ClusterConfig, MemoryApiserver
from fleet.wire import SHARD_LABEL
from shards import ShardEngine, serve_shard
from tests._scrape import free_port, get

CONFIG = ClusterConfig(server="https://memory.invalid")
"""Unused: the in-memory apiserver is passed as the transport."""
IDENTITY = "shard-0@test/1"
CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
NODES = "/api/v1/nodes"
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
SHARD_LEASE = (
    "/apis/coordination.k8s.io/v1/namespaces/kube-mock-system/leases/kubemock-fleet-shard-0"
)


def node_cr(name: str, shard: str) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
        "spec": {},
    }


def requests_counted(scrape: bytes) -> dict[tuple[str, str, str], float]:
    """``kubemock_fleet_requests_total`` of a scrape: (verb, resource, code) -> count."""
    found: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(scrape.decode()):
        for sample in family.samples:
            if sample.name == "kubemock_fleet_requests_total":
                labels = sample.labels
                found[(labels["verb"], labels["resource"], labels["code"])] = sample.value
    return found


async def test_serve_shard_registers_renews_serves_and_stops_clean(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("mine", "0"))
    api.create(CRS, node_cr("theirs", "1"))
    port = free_port()
    # The in-memory apiserver allocates no podCIDRs, like the sandbox: the shard does.
    settings = FleetSettings(shard=ShardSettings(metrics_port=port, pod_cidr_allocation="shard"))
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[ShardEngine]) -> None:
        with scope:
            await serve_shard(
                settings, 0, CONFIG, transport=api, serve_metrics=True, identity=IDENTITY,
                metrics=FleetMetrics(), wall=MemoryApiserver.wall, rng=random.Random(7),
                task_status=task_status,
            )  # fmt: skip
        stopped.set()

    engine: ShardEngine = await nursery.start(serve)
    assert engine.shard == "0"
    await trio.sleep(5)

    # The Node CR labelled for shard 0 is registered, with its node Lease; the other is not.
    assert api.get(f"{NODES}/mine") is not None
    assert api.get(f"{NODE_LEASES}/mine") is not None
    assert api.get(f"{NODES}/theirs") is None
    # The shard Lease is held under the given identity, created at 0 and renewed at 2 and 4.
    lease = api.get(SHARD_LEASE)
    assert lease is not None and lease["spec"]["holderIdentity"] == IDENTITY
    assert [c.at for c in api.log("PATCH", SHARD_LEASE)] == [2.0, 4.0]

    # Served on the settings' port: ready, and every request counted on the way through.
    assert await get(port, "/readyz") == (200, b"ok\n")
    status, scrape = await get(port, "/metrics")
    assert status == 200
    counted = requests_counted(scrape)
    assert counted[("POST", "leases.coordination.k8s.io", "201")] == 2  # shard + node Lease
    assert counted[("PATCH", "leases.coordination.k8s.io", "200")] == 2  # shard Lease
    assert counted[("POST", "nodes", "201")] == 1
    assert counted[("LIST", "nodes.mock.zhizuqiu.cn", "200")] == 1

    # Cancelled: everything stops at once, the port closes, no request follows.
    calls = len(api.calls)
    last_renewed = api.get(SHARD_LEASE)
    cancelled = trio.current_time()
    scope.cancel()
    await stopped.wait()
    assert trio.current_time() == cancelled
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    await trio.sleep(60)
    assert len(api.calls) == calls
    # The shard Lease is left as last renewed, not released: the coordinator lets it
    # expire after its duration, and a shard restarted within it keeps its nodes.
    assert api.get(SHARD_LEASE) == last_renewed


async def test_serve_shard_without_metrics_opens_no_port(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """``up``'s in-process shards: nothing listens on the settings' metrics port."""
    api = MemoryApiserver()
    port = free_port()
    settings = FleetSettings(shard=ShardSettings(metrics_port=port, pod_cidr_allocation="shard"))
    engine: ShardEngine = await nursery.start(
        partial(serve_shard, settings, 0, CONFIG, transport=api, wall=MemoryApiserver.wall)
    )
    assert engine.ready()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    nursery.cancel_scope.cancel()
