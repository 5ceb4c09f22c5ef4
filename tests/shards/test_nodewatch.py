"""The shard's watch of its own Nodes (shards._nodewatch): what others write is noticed.

A real kubelet reads its Node every 10 s and patches when what it would report
differs from what is stored. The shard does it without a read per node: one
watch of the Nodes it labels as its own, echoes of its own writes skipped by
resourceVersion, and an immediate status PATCH where the stored conditions are
not what it reports (the node-lifecycle controller's ``Ready=Unknown``).
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import trio

from fleet._settings import FleetSettings
from fleet.coordinator import SHARD_LABEL
from shards import ShardEngine
from tests._memapi import BASE, MemoryApiserver, stamp, wall

CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
NODES = "/api/v1/nodes"


def node_cr(name: str, shard: str = "0", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "namespace": "default", "labels": {SHARD_LABEL: shard}},
        "spec": spec,
    }


async def start(api: MemoryApiserver, nursery: trio.Nursery, shard: str = "0") -> ShardEngine:
    engine = ShardEngine(FleetSettings(), shard, control=api, wall=wall, rng=random.Random(3))
    await nursery.start(engine.run)
    return engine


def unknown(node: dict[str, Any]) -> dict[str, Any]:
    """The node-lifecycle controller's status write for a node it presumes dead."""
    now = stamp(wall())
    conditions = []
    for c in node["status"]["conditions"]:
        conditions.append(
            {
                **c,
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastTransitionTime": now,
            }
        )
    return {"status": {"conditions": conditions}}


def conditions(api: MemoryApiserver, name: str) -> dict[str, str]:
    node = api.get(f"{NODES}/{name}")
    assert node is not None
    return {c["type"]: c["status"] for c in node["status"]["conditions"]}


async def test_ready_unknown_written_by_another_is_restored_at_once(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(30)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert node["metadata"]["labels"][SHARD_LABEL] == "0"  # what the shard's watch selects
    reads = len(api.log("GET", f"{NODES}/n1"))
    api.patch(f"{NODES}/n1/status", unknown(node))
    marked = trio.current_time()
    assert conditions(api, "n1")["Ready"] == "Unknown"
    await trio.sleep(1)
    assert conditions(api, "n1") == {
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
        "Ready": "True",
    }
    patches = api.log("PATCH", f"{NODES}/n1/status")
    assert len(patches) == 1  # the one restoring it (the test's own is not a seam call)
    assert patches[-1].at - marked < 1.0
    ready = next(
        c
        for c in api.get(f"{NODES}/n1")["status"]["conditions"]  # type: ignore[index]
        if c["type"] == "Ready"
    )
    assert ready["reason"] == "KubeletReady"
    assert ready["lastTransitionTime"] == stamp(
        BASE + timedelta(seconds=patches[-1].at)
    )  # a transition, as reported
    # No GET of the Node for it: the watch brought the change.
    assert len(api.log("GET", f"{NODES}/n1")) == reads


async def test_the_shards_own_status_writes_bring_no_report(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1", statusUpdatesInterval="1m"))
    engine = await start(api, nursery)
    await trio.sleep(185)
    # The three periodic reports (their echoes and the label write's are skipped).
    assert len(api.log("PATCH", f"{NODES}/n1/status")) == 3
    assert engine.nodes.restores == 0


async def test_a_change_others_make_to_what_the_kubelet_does_not_own_is_left_alone(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(30)
    extra = {"type": "NetworkUnavailable", "status": "False", "reason": "RouteCreated"}
    node = api.get(f"{NODES}/n1")
    assert node is not None
    api.patch(
        f"{NODES}/n1/status", {"status": {"conditions": [*node["status"]["conditions"], extra]}}
    )
    api.patch(f"{NODES}/n1", {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}})
    await trio.sleep(5)
    assert api.log("PATCH", f"{NODES}/n1/status") == []


async def test_a_node_of_another_shard_is_not_watched(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2", shard="1"))
    await start(api, nursery, "0")
    await start(api, nursery, "1")
    await trio.sleep(30)
    watches = api.log("WATCH", NODES)
    assert {c.params.get("labelSelector") for c in watches} == {
        f"{SHARD_LABEL}=0",
        f"{SHARD_LABEL}=1",
    }
    node = api.get(f"{NODES}/n2")
    assert node is not None
    api.patch(f"{NODES}/n2/status", unknown(node))
    await trio.sleep(1)
    assert conditions(api, "n2")["Ready"] == "True"
