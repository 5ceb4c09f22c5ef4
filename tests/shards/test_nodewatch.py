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

from fleet._settings import FleetSettings, ShardSettings
from fleet.kube import MemoryApiserver, Response
from fleet.wire import SHARD_LABEL
from shards import ShardEngine

BASE = MemoryApiserver.BASE
stamp = MemoryApiserver.stamp
wall = MemoryApiserver.wall

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


# -- podCIDRs: the cluster's where it allocates them, the shard's where nobody does ----------------


async def start_with(api: MemoryApiserver, nursery: trio.Nursery, **shard: Any) -> ShardEngine:
    settings = FleetSettings(shard=ShardSettings(**shard))
    engine = ShardEngine(settings, "0", control=api, wall=wall, rng=random.Random(3))
    await nursery.start(engine.run)
    return engine


def cidr_writes(api: MemoryApiserver, name: str) -> list[Any]:
    return [c for c in api.log("PATCH", f"{NODES}/{name}") if "podCIDR" in str(c.body)]


async def kube_controller_manager(api: MemoryApiserver, name: str, cidr: str) -> None:
    """Its range allocator: the podCIDR of a new Node, a moment after it appears."""
    for _ in range(200):  # polls, as the apiserver's watch is the shard's to use here
        if api.get(f"{NODES}/{name}") is not None:
            break
        await trio.sleep(0.05)
    await trio.sleep(0.2)
    api.patch(f"{NODES}/{name}", {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}})


async def test_podcidrs_the_cluster_allocates_are_left_to_it_and_read_back(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    nursery.start_soon(kube_controller_manager, api, "n1", "10.244.3.0/24")
    engine = await start(api, nursery)  # podCidrAllocation: auto
    await trio.sleep(30)
    (post,) = [c for c in api.log("POST", NODES)]
    assert "podCIDR" not in post.body["spec"]  # left to the cluster
    assert cidr_writes(api, "n1") == []  # and never written after the wait
    state = engine.nodes.state_of("n1")
    assert state is not None and state.spec is not None and state.pool is not None
    assert state.spec.pod_cidrs == ("10.244.3.0/24",)
    assert state.pool.allocate("default/p1") == ("10.244.3.2",)  # pod IPs from the cluster's
    # Settled: a later node waits for the cluster too.
    api.create(CRS, node_cr("n2"))
    nursery.start_soon(kube_controller_manager, api, "n2", "10.244.4.0/24")
    await trio.sleep(30)
    assert cidr_writes(api, "n2") == []
    state = engine.nodes.state_of("n2")
    assert state is not None and state.spec is not None
    assert state.spec.pod_cidrs == ("10.244.4.0/24",)


async def test_where_nobody_allocates_podcidrs_pods_get_the_shards_ips_after_the_wait(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Under ``auto`` no podCIDR is ever written: a kube-controller-manager allocating node
    CIDRs that starts (or restarts) later exits on one outside its --cluster-cidr."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine = await start(api, nursery)  # podCidrAllocation: auto, and nobody allocates
    await trio.sleep(4)
    state = engine.nodes.state_of("n1")
    assert state is not None and state.pool is None  # waiting for the cluster's
    await trio.sleep(26)
    assert cidr_writes(api, "n1") == []
    node = api.get(f"{NODES}/n1")
    assert node is not None and "podCIDR" not in node["spec"]
    state = engine.nodes.state_of("n1")
    assert state is not None and state.spec is not None and state.pool is not None
    assert state.spec.pod_cidrs == ()
    first = state.pool.allocate("default/p1")
    # Settled: a later node has its pool at once, still with nothing written.
    api.create(CRS, node_cr("n2"))
    await trio.sleep(1)
    later = engine.nodes.state_of("n2")
    assert later is not None and later.pool is not None
    assert later.pool.allocate("default/p2") != first
    assert cidr_writes(api, "n2") == [] and "podCIDR" not in api.log("POST", NODES)[-1].body["spec"]
    # And a podCIDR the cluster writes after all is taken up.
    api.patch(f"{NODES}/n2", {"spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}})
    await trio.sleep(1)
    assert later.spec is not None and later.spec.pod_cidrs == ("10.244.9.0/24",)
    assert later.pool is not None and later.pool.allocate("default/p3") == ("10.244.9.2",)


async def test_cluster_allocation_is_never_second_guessed(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine = await start_with(api, nursery, pod_cidr_allocation="cluster")
    await trio.sleep(60)
    assert cidr_writes(api, "n1") == []
    state = engine.nodes.state_of("n1")
    assert state is not None and state.driving and state.pool is None
    # A podCIDR in the CR is the user's: written whatever the setting.
    api.create(CRS, node_cr("n2", nodeConfig={"podCIDR": "10.9.0.0/24"}))
    await trio.sleep(5)
    node = api.get(f"{NODES}/n2")
    assert node is not None and node["spec"]["podCIDR"] == "10.9.0.0/24"


async def test_a_refused_node_list_does_not_hold_up_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # RBAC of an older deploy/ (no list/watch on nodes), or an apiserver stub that has none.
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))

    def forbid_lists(method: str, path: str) -> Response | None:
        if method == "GET" and path == NODES:
            return Response(403, b'{"kind":"Status","code":403,"reason":"Forbidden"}')
        return None

    api.fail = forbid_lists
    with trio.fail_after(30):  # the shard used to wait for the node list, for ever
        engine = await start(api, nursery)
    await trio.sleep(10)
    state = engine.nodes.state_of("n1")
    assert state is not None and state.driving
    assert engine.ready()


async def test_a_pod_running_before_its_nodes_podcidr_came_gets_an_ip_from_it(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    from tests.shards.test_engine import PODS, pod

    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start_with(api, nursery, pod_cidr_allocation="cluster")
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(5)
    obj = api.get(f"{PODS}/p")
    assert obj is not None and obj["status"]["phase"] == "Running"
    assert "podIP" not in obj["status"]  # no CIDR yet, no IP
    api.patch(f"{NODES}/n1", {"spec": {"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.9.0/24"]}})
    await trio.sleep(2)
    obj = api.get(f"{PODS}/p")
    assert obj is not None and obj["status"]["podIP"] == "10.244.9.2"
