"""``fleet.coordinator.serve_coordinator``, the coordinator process's composition root,
on the in-memory apiserver and trio's autojump clock.

What the root adds to :class:`Coordinator` (tests/coordinator/test_coordinator.py
drives that alone): the transport wrapped to count every request in the
coordinator's metrics, the identity on the leader Lease, ``/metrics`` and the
probes when asked, and on cancellation a stop that releases the leader Lease.
"""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from fleet._metrics import FleetMetrics
from fleet._settings import CoordinatorSettings, FleetSettings
from fleet.coordinator import Coordinator, owner, serve_coordinator
from fleet.kube import ClusterConfig, MemoryApiserver, resource_path
from fleet.wire import (
    API_VERSION,
    COORDINATOR_LEASE,
    FLEET_NAMESPACE,
    GROUP,
    NODE_PLURAL,
    SHARD_LABEL,
    VERSION,
    shard_lease_name,
)
from tests._scrape import free_port, get

CONFIG = ClusterConfig(server="https://memory.invalid")
"""Unused: the in-memory apiserver is passed as the transport."""
IDENTITY = "coordinator@test/1"
SHARDS = ("0", "1")
LEASES = resource_path("coordination.k8s.io", "v1", "leases", namespace=FLEET_NAMESPACE)
LEADER_LEASE = f"{LEASES}/{COORDINATOR_LEASE}"
CRS = resource_path(GROUP, VERSION, NODE_PLURAL, namespace="default")


def fleet_of_two(api: MemoryApiserver, nodes: int) -> None:
    """Two shards holding their Leases (a first sighting is a change: alive for 15 s) and
    ``nodes`` unassigned Node CRs."""
    for shard in SHARDS:
        api.create(
            LEASES,
            {
                "metadata": {"name": shard_lease_name(shard)},
                "spec": {"holderIdentity": f"shard-{shard}@test/1", "leaseDurationSeconds": 15},
            },
        )
    for i in range(nodes):
        api.create(CRS, {"apiVersion": API_VERSION, "kind": "Node", "metadata": {"name": f"n{i}"}})


def scraped(scrape: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``name`` in a scrape, by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scrape.decode())
        for sample in family.samples
        if sample.name == name
    }


async def test_serve_coordinator_elects_assigns_serves_and_releases(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    fleet_of_two(api, 20)
    port = free_port()
    settings = FleetSettings(coordinator=CoordinatorSettings(metrics_port=port))
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[Coordinator]) -> None:
        with scope:
            await serve_coordinator(
                settings, CONFIG, transport=api, serve_metrics=True, identity=IDENTITY,
                metrics=FleetMetrics(), wall=MemoryApiserver.wall, rng=random.Random(0),
                task_status=task_status,
            )  # fmt: skip
        stopped.set()

    coordinator: Coordinator = await nursery.start(serve)
    await trio.sleep(2)

    # Elected under the given identity, and every CR labelled with its rendezvous owner.
    assert coordinator.is_leader
    leader = api.get(LEADER_LEASE)
    assert leader is not None and leader["spec"]["holderIdentity"] == IDENTITY
    labels = {
        obj["metadata"]["name"]: obj["metadata"]["labels"][SHARD_LABEL] for obj in api.items(CRS)
    }
    assert labels == {name: owner(f"default/{name}", list(SHARDS)) for name in labels}
    assert set(labels.values()) == set(SHARDS)

    # Served on the settings' port: ready, leading, every request counted on the way through.
    assert await get(port, "/readyz") == (200, b"ok\n")
    status, scrape = await get(port, "/metrics")
    assert status == 200
    assert scraped(scrape, "kubemock_fleet_leader") == {(): 1.0}
    counted = scraped(scrape, "kubemock_fleet_requests_total")
    lease_post = (("code", "201"), ("resource", "leases.coordination.k8s.io"), ("verb", "POST"))
    assert counted[lease_post] == 1  # the leader Lease
    patches = (("code", "200"), ("resource", "nodes.mock.zhizuqiu.cn"), ("verb", "PATCH"))
    assert counted[patches] == 20

    # Cancelled: the leader Lease is released at once (a standby need not wait it out), the
    # port closes, and that release is the last request.
    scope.cancel()
    await stopped.wait()
    released = api.get(LEADER_LEASE)
    assert released is not None and released["spec"]["holderIdentity"] == ""
    assert api.calls[-1].method == "PUT" and api.calls[-1].path == LEADER_LEASE
    calls = len(api.calls)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    await trio.sleep(60)
    assert len(api.calls) == calls


async def test_serve_coordinator_without_metrics_opens_no_port(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """``up``'s in-process coordinator: ready at once (a standby is ready), no port opened."""
    api = MemoryApiserver()
    port = free_port()
    settings = FleetSettings(coordinator=CoordinatorSettings(metrics_port=port))
    coordinator: Coordinator = await nursery.start(
        partial(serve_coordinator, settings, CONFIG, transport=api, wall=MemoryApiserver.wall)
    )
    assert coordinator.ready()
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)
    nursery.cancel_scope.cancel()
