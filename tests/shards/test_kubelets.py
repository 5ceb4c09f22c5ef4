"""NodeDriver (shards._kubelets): what registration costs in requests, what a node keeps, claims.

The engine runs against the stateful in-memory apiserver on trio's autojump
clock, as in ``test_engine.py``; these tests look at the requests themselves.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import trio

from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
from fleet.kube import BaseRequester, MemoryApiserver, Response, StreamResponse
from fleet.wire import NODE_CR_ANNOTATION, SHARD_LABEL
from shards import ShardEngine
from shards._nodeobj import decode_lease

wall = MemoryApiserver.wall

GROUP = "mock.zhizuqiu.cn"
CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
OTHER_CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/other/nodes"
NODES = "/api/v1/nodes"
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def node_cr(name: str, shard: str = "0", namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "Node",
        "metadata": {"name": name, "namespace": namespace, "labels": {SHARD_LABEL: shard}},
        "spec": spec,
    }


def v1_node(name: str, owner: str, ip: str, cidr: str) -> dict[str, Any]:
    """A v1.Node as some earlier shard registered it."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": {NODE_CR_ANNOTATION: owner}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


class _Hot(BaseRequester):
    """The same apiserver as a second requester (the CLI's ``hot``), noting what it was sent."""

    def __init__(self, api: MemoryApiserver) -> None:
        self.api = api
        self.sent: list[tuple[str, str]] = []

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
        self.sent.append((method, path))
        return await self.api.request(
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
        return self.api.stream(method, path, params=params, headers=headers)


async def start(
    api: MemoryApiserver, nursery: trio.Nursery, hot: _Hot | None = None
) -> tuple[ShardEngine, trio.CancelScope]:
    # The in-memory apiserver allocates no podCIDRs, like the sandbox: the shard does.
    shard = ShardSettings(pod_cidr_allocation="shard")
    settings = FleetSettings(shard=shard, coordinator=CoordinatorSettings())
    engine = ShardEngine(settings, "0", control=api, hot=hot, wall=wall, rng=random.Random(7))
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await engine.run(task_status=task_status)

    await nursery.start(run)
    return engine, scope


def registration_calls(api: MemoryApiserver, name: str) -> list[tuple[str, str]]:
    """The requests about one node's Node, Lease and CR status, in order (renewals aside)."""
    paths = (NODES, f"{NODES}/{name}", NODE_LEASES, f"{NODE_LEASES}/{name}", f"{CRS}/{name}/status")
    return [
        (c.method, c.path)
        for c in api.calls
        if c.path in paths
        and c.method not in ("PUT", "WATCH")
        and (c.method, c.path) != ("GET", NODES)
    ]  # lists of Nodes aside (start-up reservation, node watch)


# -- round trips ---------------------------------------------------------------------------


async def test_a_new_node_registers_in_three_requests(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(30)
    # No GET before the POSTs: a CR no shard has served has no Node, and a Node created
    # now has no Lease; the CR status is written once.
    assert registration_calls(api, "n1") == [
        ("POST", NODES),
        ("POST", NODE_LEASES),
        ("PATCH", f"{CRS}/n1/status"),
    ]
    node = api.get(f"{NODES}/n1")
    lease = api.get(f"{NODE_LEASES}/n1")
    assert node is not None and lease is not None
    assert lease["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    assert len(api.log("PUT", f"{NODE_LEASES}/n1")) >= 2  # and it renews
    # Registered with the status it wants: no report until one is due.
    assert api.log("PATCH", f"{NODES}/n1/status") == []


async def test_a_nodes_own_requests_go_through_hot(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # Its Node, its Lease, and its CR's finalizer and status: httpx's pool (``control``)
    # spent most of the shard's CPU matching 64 syncs to its connections.
    api = MemoryApiserver()
    hot = _Hot(api)
    api.create(CRS, node_cr("n1"))  # no finalizer yet
    await start(api, nursery, hot)
    await trio.sleep(5)
    assert ("POST", NODES) in hot.sent and ("POST", NODE_LEASES) in hot.sent
    assert ("PATCH", f"{CRS}/n1") in hot.sent  # the finalizer
    assert ("PATCH", f"{CRS}/n1/status") in hot.sent
    assert [c.path for c in api.log("PATCH", f"{CRS}/n1/status")] == [f"{CRS}/n1/status"]


async def test_restart_reads_before_it_writes(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    _, scope = await start(api, nursery)
    await trio.sleep(5)
    scope.cancel()
    await trio.sleep(1)
    del api.calls[:]
    await start(api, nursery)
    await trio.sleep(30)
    # The CR status names the node: a shard served it, so its Lease is renewed first (one
    # PATCH, no read: a takeover races the Lease's duration), then the Node read and adopted.
    assert registration_calls(api, "n1") == [
        ("PATCH", f"{NODE_LEASES}/n1"),
        ("GET", f"{NODES}/n1"),
    ]
    assert api.log("PUT", f"{NODE_LEASES}/n1")


async def test_a_node_already_there_is_adopted_after_the_409(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(NODES, v1_node("n1", "default/n1", "10.99.0.7", "10.250.1.0/24"))
    uid = api.get(f"{NODES}/n1")["metadata"]["uid"]  # type: ignore[index]
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(30)
    assert registration_calls(api, "n1")[:4] == [
        ("POST", NODES),
        ("GET", f"{NODES}/n1"),
        ("PATCH", f"{NODES}/n1"),  # the labels the CR owns
        ("GET", f"{NODE_LEASES}/n1"),  # not created by us now: it may be there
    ]
    node = api.get(f"{NODES}/n1")
    assert node is not None and node["metadata"]["uid"] == uid
    state = engine.nodes.state_of("n1")
    assert state is not None and state.spec is not None
    assert state.spec.internal_ips == ("10.99.0.7",)
    assert state.spec.pod_cidrs == ("10.250.1.0/24",)
    lease = api.get(f"{NODE_LEASES}/n1")
    assert lease is not None and lease["metadata"]["ownerReferences"][0]["uid"] == uid
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    ready = {c["type"]: c["status"] for c in cr["status"]["conditions"]}
    assert ready == {"Registered": "True", "Ready": "True"}


async def test_a_node_of_another_cr_is_a_conflict_after_the_409(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(NODES, v1_node("n1", "elsewhere/n1", "10.99.0.7", "10.250.1.0/24"))
    before = api.get(f"{NODES}/n1")
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(30)
    assert api.get(f"{NODES}/n1") == before
    assert api.get(f"{NODE_LEASES}/n1") is None
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    registered = next(c for c in cr["status"]["conditions"] if c["type"] == "Registered")
    assert (registered["status"], registered["reason"]) == ("False", "NameConflict")


async def test_a_leftover_lease_of_a_new_node_is_adopted_and_renewed(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    leftover = api.create(
        NODE_LEASES,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40},
        },
    )
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(15)
    assert registration_calls(api, "n1")[:3] == [
        ("POST", NODES),
        ("POST", NODE_LEASES),  # 409
        ("GET", f"{NODE_LEASES}/n1"),
    ]
    renewals = api.log("PUT", f"{NODE_LEASES}/n1")
    assert renewals
    # Renewed on top of the Lease that was there (its resourceVersion), so no 409 came back.
    assert (
        renewals[0].body["metadata"]["resourceVersion"] == leftover["metadata"]["resourceVersion"]
    )
    lease = api.get(f"{NODE_LEASES}/n1")
    assert lease is not None and lease["metadata"]["uid"] == leftover["metadata"]["uid"]


class _NoStatusEcho(MemoryApiserver):
    """A CR status write brings no watch event (as with the bench's stub apiserver)."""

    def _record(self, type_: str, rkey: tuple[str, str], obj: Any, before: Any) -> None:
        if type_ == "MODIFIED" and rkey == (GROUP, "nodes") and before is not None:
            if obj.get("spec") == before.get("spec") and obj.get("status") != before.get("status"):
                return
        super()._record(type_, rkey, obj, before)


async def test_the_cr_status_is_written_once_without_the_watch_echoing_it(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = _NoStatusEcho()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(5)
    assert len(api.log("PATCH", f"{CRS}/n1/status")) == 1
    state = engine.nodes.states["default/n1"]
    assert state.cr.status == {}  # the watch never brought it
    assert state.cr_status_now["nodeName"] == "n1"  # the write's answer did
    engine.nodes.fence_regained()  # every CR synced again
    await trio.sleep(5)
    assert len(api.log("PATCH", f"{CRS}/n1/status")) == 1


# -- what a node keeps ---------------------------------------------------------------------


async def test_status_and_lease_are_kept_as_json(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    engine, _ = await start(api, nursery)
    await trio.sleep(15)
    state = engine.nodes.state_of("n1")
    assert state is not None
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert state.status == node["status"]
    # Kept deflated against a typical status: a fraction of its JSON.
    assert len(state.packed_status) * 5 < len(msgspec.json.encode(node["status"]))
    assert state.status is not state.status  # a private copy each time
    lease = engine.leases.lease_of(state.key)
    assert isinstance(lease, bytes)
    stored = api.get(f"{NODE_LEASES}/n1")
    assert stored is not None
    assert decode_lease(lease).metadata.resourceVersion == stored["metadata"]["resourceVersion"]
    assert b"managedFields" not in lease
    # A change is reported, and the answer's status becomes what the node keeps.
    api.patch(f"{CRS}/n1", {"spec": {"nodeConfig": {"cpu": "4"}}})
    await trio.sleep(2)
    node = api.get(f"{NODES}/n1")
    assert node is not None and node["status"]["capacity"]["cpu"] == "4"
    assert state.status == node["status"]


async def test_equal_nodes_share_their_capacity_and_labels(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    for name in ("n1", "n2"):
        api.create(CRS, node_cr(name, nodeConfig={"cpu": "8", "labels": {"zone": "a"}}))
    api.create(CRS, node_cr("n3", nodeConfig={"cpu": "4", "labels": {"zone": "a"}}))
    engine, _ = await start(api, nursery)
    await trio.sleep(5)
    specs = [engine.nodes.state_of(n) for n in ("n1", "n2", "n3")]
    one, two, three = (s.spec for s in specs if s is not None)
    assert one is not None and two is not None and three is not None
    assert one.capacity is two.capacity and one.labels is two.labels
    assert three.capacity is not one.capacity and three.labels is one.labels
    assert dict(three.capacity)["cpu"] == "4"


# -- claims --------------------------------------------------------------------------------


async def test_claims_follows_the_crs_of_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(OTHER_CRS, node_cr("n1", namespace="other"))  # same name: a conflict, still ours
    api.create(CRS, node_cr("n2", shard="1"))
    api.create(CRS, node_cr("bad", nodeConfig={"cpu": "lots"}))  # never registers
    engine, _ = await start(api, nursery)
    nodes = engine.nodes
    await trio.sleep(5)
    assert nodes.claims("n1") and nodes.claims("bad")
    assert not nodes.claims("n2") and not nodes.claims("nobody")
    # One of the two CRs naming n1 leaves the shard: the other still claims it.
    api.patch(f"{CRS}/n1", {"metadata": {"labels": {SHARD_LABEL: "1"}}})
    await trio.sleep(1)
    assert nodes.claims("n1")
    api.patch(f"{OTHER_CRS}/n1", {"metadata": {"labels": {SHARD_LABEL: "1"}}})
    await trio.sleep(1)
    assert not nodes.claims("n1")
    # A CR moving in is claimed at once, before it is registered.
    api.patch(f"{CRS}/n2", {"metadata": {"labels": {SHARD_LABEL: "0"}}})
    await trio.sleep(0.001)
    assert nodes.claims("n2")
    assert set(nodes._claims) == {s.name for s in nodes.states.values()}


class _Listener:
    """Notes, as each node stops being driven, whether the shard still claims it."""

    def __init__(self, engine: ShardEngine) -> None:
        self.engine = engine
        self.removed: list[tuple[str, bool]] = []

    def node_added(self, name: str, state: Any) -> None:
        pass

    def node_removed(self, name: str) -> None:
        self.removed.append((name, self.engine.nodes.claims(name)))

    def pod_cidrs_arrived(self, name: str) -> None:
        pass

    def kubelet_restarted(self, name: str) -> None:
        pass


async def test_claims_is_settled_before_the_node_is_removed(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(CRS, node_cr("n2"))
    engine, _ = await start(api, nursery)
    listener = _Listener(engine)
    engine.nodes._listener = listener
    await trio.sleep(5)
    # Moved to another shard: no longer claimed when the pod side hears of it (let go).
    api.patch(f"{CRS}/n1", {"metadata": {"labels": {SHARD_LABEL: "1"}}})
    await trio.sleep(1)
    assert listener.removed == [("n1", False)]
    # The fence closes: still claimed (the pod side keeps its pods for re-adoption).
    engine.nodes.fence_lost()
    assert listener.removed == [("n1", False), ("n2", True)]


async def test_a_new_node_is_reported_every_interval_without_the_watch_echoing_its_cr(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # A Node created with the status it wants is not reported at once, but its periodic
    # reports are armed all the same (no re-sync from a CR watch echo needed).
    api = _NoStatusEcho()
    api.create(CRS, node_cr("n1", statusUpdatesInterval="1m"))
    await start(api, nursery)
    await trio.sleep(185)
    assert len(api.log("PATCH", f"{NODES}/n1/status")) == 3


# -- addresses after a restart ---------------------------------------------------------------


def first_addresses(count: int) -> list[str]:
    """The first node addresses a lone shard 0 hands out (network address skipped)."""
    network = ipaddress.ip_network(str(ShardSettings().node_ip_range))
    return [str(network[i]) for i in range(1, count + 1)]


async def test_a_new_cr_is_not_given_the_address_of_a_node_not_yet_adopted(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # A restart: "old" was registered by an earlier run with the range's first address
    # and its CR says so; "new" is a CR no shard has served, synced first (list order).
    first, second = first_addresses(2)
    api = MemoryApiserver()
    api.create(NODES, v1_node("old", "default/old", first, "10.250.1.0/24"))
    api.create(CRS, node_cr("old"))
    api.patch(f"{CRS}/old/status", {"status": {"nodeName": "old"}})
    api.create(CRS, node_cr("a-new"))
    engine, _ = await start(api, nursery)
    await trio.sleep(30)
    nodes = {n: engine.nodes.state_of(n) for n in ("old", "a-new")}
    assert all(s is not None and s.driving for s in nodes.values())
    assert nodes["old"].spec.internal_ips == (first,)  # type: ignore[union-attr]
    assert nodes["a-new"].spec.internal_ips == (second,)  # type: ignore[union-attr]
    stored = api.get(f"{NODES}/a-new")
    assert stored is not None
    assert {"type": "InternalIP", "address": second} in stored["status"]["addresses"]


async def test_an_adopted_node_keeps_its_address_even_if_the_books_gave_it_away(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # The start-up list failed, so "a-new" got the address "old" holds: "old" is adopted all
    # the same (a duplicate, logged), rather than its sync failing forever.
    (first,) = first_addresses(1)
    api = MemoryApiserver()
    api.create(NODES, v1_node("old", "default/old", first, "10.250.1.0/24"))
    api.create(CRS, node_cr("old"))
    api.patch(f"{CRS}/old/status", {"status": {"nodeName": "old"}})
    api.create(CRS, node_cr("a-new"))
    listed = False

    def fail_first_list(method: str, path: str) -> Response | None:
        nonlocal listed
        if method == "GET" and path == NODES and not listed:
            listed = True
            return Response(503, b"{}")
        return None

    api.fail = fail_first_list
    engine, _ = await start(api, nursery)
    await trio.sleep(30)
    old = engine.nodes.state_of("old")
    assert old is not None and old.driving and old.spec is not None
    assert old.spec.internal_ips == (first,)
    cr = api.get(f"{CRS}/old")
    assert cr is not None
    assert {c["type"]: c["status"] for c in cr["status"]["conditions"]}["Ready"] == "True"


async def test_a_taint_of_its_own_dropped_by_another_writer_is_written_again(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """kube-controller-manager's condition taint PATCH (from its cache's stale copy)
    replaced the whole list right after a script step's taint landed: the shard's node
    watch sees its own taint gone and writes it again, keeping the other writer's."""
    api = MemoryApiserver()
    gpu = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    api.create(CRS, node_cr("n1", nodeConfig={"taints": [gpu]}))
    await start(api, nursery)
    await trio.sleep(5)
    node = api.get(f"{NODES}/n1")
    assert node is not None and node["spec"]["taints"] == [gpu]
    pressure = {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}
    answer = await api.request(
        "PATCH",
        f"{NODES}/n1",
        body=json.dumps({"spec": {"taints": [pressure]}}).encode(),
        content_type="application/merge-patch+json",
    )
    answer.raise_for_status()
    await trio.sleep(3)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert sorted(t["key"] for t in node["spec"]["taints"]) == [pressure["key"], gpu["key"]]


async def test_a_taint_it_removed_put_back_by_another_writer_is_removed_again(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """The other way round: a stale copy written back brings a taint the CR (or script) no
    longer has; the shard removes it again and keeps the other writer's own."""
    api = MemoryApiserver()
    gpu = {"key": "nvidia.com/gpu", "effect": "NoSchedule"}
    api.create(CRS, node_cr("n1", nodeConfig={"taints": [gpu]}))
    await start(api, nursery)
    await trio.sleep(5)
    cr = api.get(f"{CRS}/n1")
    assert cr is not None
    cr["spec"]["nodeConfig"]["taints"] = []
    answer = await api.request("PUT", f"{CRS}/n1", body=json.dumps(cr).encode())
    answer.raise_for_status()
    await trio.sleep(3)
    node = api.get(f"{NODES}/n1")
    assert node is not None and not node["spec"].get("taints")
    pressure = {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}
    answer = await api.request(
        "PATCH",
        f"{NODES}/n1",
        body=json.dumps({"spec": {"taints": [gpu, pressure]}}).encode(),
        content_type="application/merge-patch+json",
    )
    answer.raise_for_status()
    await trio.sleep(3)
    node = api.get(f"{NODES}/n1")
    assert node is not None
    assert [t["key"] for t in node["spec"]["taints"]] == [pressure["key"]]
