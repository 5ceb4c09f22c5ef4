"""The kubelet traffic profile against the recorded kubelet, on the autojump clock.

The reference is ``apiserver-transcripts/kubelet-requests.md`` (a v1.24 kubelet,
idle with pods, t = 266...889 s): per minute, Node GET 5.97, Lease PUT 5.87,
status PATCH 0.19, and 9 watches re-opened by 6 informers in 10.39 min. The
in-memory apiserver ends each watch at its ``timeoutSeconds`` as kube-apiserver
does, so re-watches come when they would.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import trio

from fleet._settings import FleetSettings, ShardSettings
from fleet.errors import TransportError
from fleet.kube import MAX_PIPELINE, BatchRequest, Client, MemoryApiserver, Response, load_config
from fleet.wire import FLEET_NAMESPACE, KUBELET_RESTART_ANNOTATION, SHARD_LABEL
from shards import ShardEngine, serve_shard
from tests._apiserver import Apiserver, install_fleet_crds, unique
from tests.shards.test_engine import CRS, node_cr, pod, settings

wall = MemoryApiserver.wall

NODES = 20
WARM_UP = 266.0
WINDOW = 889.0 - 266.0
"""The recording's own window, t = 266...889 s after the kubelet started (10.39 min): its
informers' first watches, opened at start, end in [300, 600) s, so re-watches in that
window are not yet spread evenly; the same window on the same clock compares like with
like."""
RECORDED_PER_MINUTE = {
    "GET nodes/<name>": 5.97,
    "PUT leases": 5.87,
    "PATCH nodes/status": 0.19,
    "WATCH (all informers)": 9 / 10.39,
}
"""The recorded kubelet's steady state (kubelet-requests.md §3), per node per minute."""
TOLERANCE = 0.10


def _kind(method: str, path: str, params: dict[str, str]) -> str:
    parts = path.strip("/").split("/")
    if method == "WATCH":
        return "WATCH (all informers)"
    if path.startswith("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"):
        return f"{method} leases"
    if path.startswith("/api/v1/nodes/") and path.endswith("/status"):
        return f"{method} nodes/status"
    if path.startswith("/api/v1/nodes/") and len(parts) == 4:
        return f"{method} nodes/<name>"
    return f"{method} {'/'.join(p for p in parts if p not in ('api', 'apis', 'v1'))}"


async def _kubelet_fleet(
    api: MemoryApiserver, nursery: trio.Nursery, *, nodes: int = NODES
) -> ShardEngine:
    for index in range(nodes):
        api.create(CRS, node_cr(f"n{index}"))
        api.create("/api/v1/namespaces/default/pods", pod(f"p{index}", f"n{index}"))
    engine = ShardEngine(
        settings(traffic_profile="kubelet", events=False),
        "0",
        control=api,
        wall=wall,
        rng=random.Random(11),
    )
    await nursery.start(engine.run)
    return engine


async def test_kubelet_profile_matches_the_recorded_kubelet_per_node(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver(end_watches=True)
    engine = await _kubelet_fleet(api, nursery)
    await trio.sleep(WARM_UP)
    start = len(api.calls)
    await trio.sleep(WINDOW)
    window = Counter(_kind(c.method, c.path, dict(c.params)) for c in api.calls[start:])
    per_minute = {kind: window[kind] / NODES / (WINDOW / 60) for kind in RECORDED_PER_MINUTE}
    for kind, recorded in RECORDED_PER_MINUTE.items():
        assert abs(per_minute[kind] - recorded) <= TOLERANCE * recorded, (kind, per_minute)
    # The kubelet watches again from where it was; it lists only at start.
    assert not [c for c in api.calls[start:] if c.method == "GET" and "limit" in c.params]
    # Node GETs come from the watch cache, as the kubelet's do.
    gets = [c for c in api.calls[start:] if _kind(c.method, c.path, {}) == "GET nodes/<name>"]
    assert {c.params.get("resourceVersion") for c in gets} == {"0"}
    assert engine.traffic is not None and engine.traffic.stats.nodes == NODES


class _SlowBatches(MemoryApiserver):
    """Answers each batch holding Node GETs a second late, and records those batches (once
    answered)."""

    def __init__(self) -> None:
        super().__init__(end_watches=True)
        self.node_get_batches: list[int] = []

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        gets = [r for r in requests if _kind(r.method, r.path, {}) == "GET nodes/<name>"]
        if gets:
            await trio.sleep(1.0)
        answers = await super().request_batch(requests)
        if gets:
            self.node_get_batches.append(len(gets))
        return answers


async def test_node_gets_due_together_go_as_one_pipelined_batch(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """1,000 GETs a second one by one were a quarter of a 10,000-node shard's CPU: those due
    while the getters are busy (here: a slow apiserver) go together, at the same rate."""
    api = _SlowBatches()
    engine = await _kubelet_fleet(api, nursery, nodes=200)
    await trio.sleep(60)
    start = len(api.node_get_batches)
    await trio.sleep(60)
    batches = api.node_get_batches[start:]
    # 200 nodes, one GET each per 10 s: 1,200 a minute, in batches of several.
    assert abs(sum(batches) - 1200) <= 0.05 * 1200, sum(batches)
    assert len(batches) < sum(batches) / 3, batches
    assert max(batches) <= MAX_PIPELINE
    # None sent on its own beside the batches.
    gets = [c for c in api.calls if _kind(c.method, c.path, {}) == "GET nodes/<name>"]
    assert len(gets) == sum(api.node_get_batches)
    assert engine.traffic is not None and engine.traffic.stats.node_gets >= 1200


async def test_kubelet_profile_start_up_lists_watches_and_creates_csinode(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver(end_watches=True)
    await _kubelet_fleet(api, nursery)
    await trio.sleep(30)
    lists = Counter(
        (c.path, c.params.get("fieldSelector", ""))
        for c in api.calls
        if c.method == "GET" and "limit" in c.params and "kubemock" not in c.path
    )
    # Per node: its own Node, its pods, the ConfigMap its pods' token volume names; once.
    assert lists[("/api/v1/nodes", "metadata.name=n3")] == 1
    assert lists[("/api/v1/pods", "spec.nodeName=n3")] == 1
    assert lists[("/api/v1/namespaces/default/configmaps", "metadata.name=kube-root-ca.crt")] == (
        NODES
    )
    for cluster_wide in (
        "/apis/node.k8s.io/v1/runtimeclasses",
        "/apis/storage.k8s.io/v1/csidrivers",
        "/api/v1/services",
    ):
        assert lists[(cluster_wide, "")] == NODES
    # client-go informers list from the watch cache (resourceVersion=0), the node's pod
    # reflector too (recorded: `?fieldSelector=spec.nodeName=hollow-1&limit=500&resourceVersion=0`) ...
    informer_lists = [
        c
        for c in api.calls
        if c.method == "GET"
        and ("runtimeclasses" in c.path or c.path == "/api/v1/pods")
        and "limit" in c.params
    ]
    assert {c.path for c in informer_lists} == {
        "/apis/node.k8s.io/v1/runtimeclasses",
        "/api/v1/pods",
    }
    assert {(c.params.get("resourceVersion"), c.params["limit"]) for c in informer_lists} == {
        ("0", "500")
    }
    # ... and hold one watch each, with the kubelet's parameters.
    watches = [c for c in api.calls if c.method == "WATCH" and c.path.endswith("/csidrivers")]
    assert len(watches) == NODES
    assert all(
        c.params["allowWatchBookmarks"] == "true" and 300 <= int(c.params["timeoutSeconds"]) <= 600
        for c in watches
    )
    csinode = api.get("/apis/storage.k8s.io/v1/csinodes/n3")
    node = api.get("/api/v1/nodes/n3")
    assert csinode is not None and node is not None
    assert csinode["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]


async def test_lean_profile_sends_none_of_it(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver(end_watches=True)
    api.create(CRS, node_cr("n0"))
    engine = ShardEngine(settings(events=False), "0", control=api, wall=wall, rng=random.Random(3))
    await nursery.start(engine.run)
    await trio.sleep(60)
    assert engine.traffic is None
    assert not api.log("GET", "/api/v1/nodes/n0")
    assert not api.log(prefix="/apis/storage.k8s.io")
    assert not api.log(prefix="/apis/node.k8s.io")


async def test_a_node_no_longer_driven_stops_its_traffic(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver(end_watches=True)
    engine = await _kubelet_fleet(api, nursery)
    await trio.sleep(30)
    api.patch(f"{CRS}/n0", {"spec": {"suspend": True}})
    await trio.sleep(5)
    assert engine.traffic is not None
    assert engine.traffic.stats.nodes == NODES - 1
    since = len(api.calls)
    await trio.sleep(60)
    assert not [c for c in api.calls[since:] if c.path.endswith("/n0") or "=n0" in str(c.params)]


async def test_a_kubelet_restart_starts_that_nodes_informers_over(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver(end_watches=True)
    engine = await _kubelet_fleet(api, nursery)
    await trio.sleep(30)
    since = len(api.calls)
    api.patch(f"{CRS}/n3", {"metadata": {"annotations": {KUBELET_RESTART_ANNOTATION: "r1"}}})
    await trio.sleep(15)
    lists = Counter(
        (c.path, c.params.get("fieldSelector", ""))
        for c in api.calls[since:]
        if c.method == "GET" and "limit" in c.params and "kubemock" not in c.path
    )
    # n3's informers, pods and ConfigMap listed again (and no other node's) ...
    assert lists[("/api/v1/nodes", "metadata.name=n3")] == 1
    assert lists[("/api/v1/pods", "spec.nodeName=n3")] == 1
    assert lists[("/apis/storage.k8s.io/v1/csidrivers", "")] == 1
    assert lists[("/api/v1/namespaces/default/configmaps", "metadata.name=kube-root-ca.crt")] == 1
    assert not [key for key in lists if key[1] == "metadata.name=n4"]
    # ... its CSINode read again; every node still driven, with its traffic.
    assert api.log("GET", "/apis/storage.k8s.io/v1/csinodes/n3")[-1].at >= api.calls[since].at
    assert engine.restarts.restarts == 1
    assert engine.traffic is not None and engine.traffic.stats.nodes == NODES


async def test_each_node_watches_on_one_http2_connection_of_its_own(
    nursery: trio.Nursery, apiserver: Apiserver
) -> None:
    """``serve_shard`` against the sandbox and kube-apiserver: a node's informers and its pod
    watch are streams of ONE HTTP/2 connection of its own, made once."""
    config = load_config(apiserver.kubeconfig)
    shard_id = 7000 + int(unique("h2shard").rpartition("-")[2])  # the real one is shared
    names = [unique("h2node") for _ in range(3)]
    async with Client(config) as client:
        await install_fleet_crds(client)
        namespaces = {
            n["metadata"]["name"] for n in (await client.list("/api/v1/namespaces")).items
        }
        if FLEET_NAMESPACE not in namespaces:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        allocation: Literal["cluster", "shard"] = (
            "cluster" if apiserver.real is not None else "shard"
        )
        settings = FleetSettings(
            shard=ShardSettings(traffic_profile="kubelet", pod_cidr_allocation=allocation)
        )
        scope = trio.CancelScope()

        async def run_shard(task_status: trio.TaskStatus[ShardEngine]) -> None:
            with scope:
                await serve_shard(settings, shard_id, config, task_status=task_status)

        engine: ShardEngine = await nursery.start(run_shard)
        try:
            for name in names:
                await client.create(
                    "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes",
                    {
                        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
                        "kind": "Node",
                        "metadata": {"name": name, "labels": {SHARD_LABEL: str(shard_id)}},
                        "spec": {},
                    },
                )
            traffic = engine.traffic
            assert traffic is not None
            # 5: RuntimeClasses, CSIDrivers, Services, its Node, its pods.
            with trio.fail_after(30):
                while True:
                    conns = [traffic.connection(name) for name in names]
                    if all(c is not None and c.streams >= 5 for c in conns):
                        break
                    await trio.sleep(0.2)
            await trio.sleep(1)
            for conn in conns:
                assert conn is not None and conn.opened == 1 and conn.streams == 5
        finally:
            scope.cancel()
            for name in names:
                await client.request(
                    "DELETE", f"/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes/{name}"
                )
