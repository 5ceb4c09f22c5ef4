"""One shard's kubelets on the real control plane (kube-apiserver and kube-controller-manager
v1.24 with ``--allocate-node-cidrs``): what a real kubelet gets right there.

- the node reports the apiserver's version;
- its podCIDR is the controller-manager's (the shard writes none), and its pods' IPs come
  from it;
- ``Ready=Unknown`` written by another (the node-lifecycle controller) is put right within
  seconds, as a kubelet that reads its Node every 10 s does;
- the Events a kubelet posts, source ``kubelet``: its node's (Starting, NodeHasSufficient*,
  NodeReady; NodeNotReady when it reports NotReady itself), its pods' (Pulling, Pulled,
  Created, Started; Killing on a graceful delete);
- a restarted shard reserves every Node's address before it gives a new node one.

In-process tests (the in-memory apiserver, autojump clock) cover each in detail:
test_nodewatch.py, test_versions.py, test_events.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from typing import Any

import pytest
import trio

from fleet._settings import FleetSettings, ShardSettings
from fleet.kube import Client, HotTransport, load_config
from fleet.realcp import RealControlPlaneSettings, RunningControlPlane
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine
from tests._apiserver import unique
from tests._polling import eventually

CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
NODES = "/api/v1/nodes"
PODS = "/api/v1/namespaces/default/pods"
SERVICE_RANGE = "10.96.0.0/12"
"""The Service range of kubeadm and kind (the session's control plane uses 10.96.0.0/16)."""
SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodescripts"


def ready(node: dict[str, Any]) -> str | None:
    for c in node.get("status", {}).get("conditions") or []:
        if c["type"] == "Ready":
            return str(c["status"])
    return None


@pytest.mark.real
async def test_a_kubelet_on_the_real_control_plane(
    real_control_plane: RunningControlPlane,
) -> None:
    config = load_config(real_control_plane.kubeconfig)
    # The shard stops (its nursery) before its transport closes: a write in flight on a
    # closed transport is an error of the shard's, not of the test.
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        namespaces = await client.list("/api/v1/namespaces")
        if FLEET_NAMESPACE not in {n["metadata"]["name"] for n in namespaces.items}:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        shard, name = unique("kubelet"), unique("kubelet-node")
        # Its controller-manager allocates podCIDRs, as `up --control-plane real` tells its
        # shards; `auto` would find out from the first node, unless a cold controller-manager
        # took longer than podCidrWait (the session's may have just started).
        settings = FleetSettings(shard=ShardSettings(pod_cidr_allocation="cluster"))
        engine = ShardEngine(settings, shard, control=client, hot=hot)
        await nursery.start(engine.run)
        cr = {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
            "spec": {},
        }
        await client.create(CRS, cr)

        async def registered() -> dict[str, Any] | None:
            nodes = await client.list(NODES, field_selector=f"metadata.name={name}")
            node = nodes.items[0] if nodes.items else None
            return node if node and ready(node) == "True" and node["spec"].get("podCIDR") else None

        node = await eventually("the node Ready with a podCIDR", 30, registered)
        version = (await client.get("/version"))["gitVersion"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == version
        assert node["metadata"]["labels"][SHARD_LABEL] == shard
        # Its InternalIP is clear of the cluster's Services (once 10.96.0.1, `kubernetes`'s).
        address = ipaddress.ip_address(str(internal_ip(node)))
        assert address not in ipaddress.ip_network(SERVICE_RANGE)

        # The controller-manager's podCIDR, read back; the shard wrote none.
        cidr = node["spec"]["podCIDR"]
        (default,) = [
            f.default for f in fields(RealControlPlaneSettings) if f.name == "cluster_cidr"
        ]
        cluster = ipaddress.ip_network(str(default))  # the session's: the default
        assert ipaddress.ip_network(cidr).subnet_of(cluster)  # type: ignore[arg-type]
        podcidr_writers = {
            m["manager"]
            for m in node["metadata"].get("managedFields") or []
            if "f:podCIDR" in str(m.get("fieldsV1"))
        }
        assert podcidr_writers and not any("kubemock-fleet" in w for w in podcidr_writers)

        async def taken() -> bool:  # from the shard's node watch, which may lag the list
            await trio.lowlevel.checkpoint()
            state = engine.nodes.state_of(name)
            return state is not None and state.spec is not None and state.spec.pod_cidrs == (cidr,)

        await eventually("the shard taking the controller-manager's podCIDR", 10, taken)

        # Ready=Unknown, as the node-lifecycle controller writes it: put right in seconds.
        conditions = [
            {
                **c,
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
            }
            for c in node["status"]["conditions"]
        ]
        await client.patch(
            f"{NODES}/{name}/status", {"status": {"conditions": conditions}}, patch_type="merge"
        )
        marked = trio.current_time()

        async def restored() -> bool:
            return ready(await client.get(f"{NODES}/{name}")) == "True"

        await eventually("Ready again", 10, restored)
        assert trio.current_time() - marked < 10  # a real kubelet: within ~10 s

        # The kubelet's Events.
        async def node_events() -> set[str] | None:
            events = await client.list(
                "/api/v1/namespaces/default/events", field_selector=f"involvedObject.name={name}"
            )
            reasons = {
                e["reason"] for e in events.items if e["source"].get("component") == "kubelet"
            }
            wanted = {"Starting", "NodeHasSufficientMemory", "NodeHasNoDiskPressure"}
            return reasons if wanted | {"NodeHasSufficientPID", "NodeReady"} <= reasons else None

        await eventually("the kubelet's node events", 10, node_events)

        # A pod: an IP from the controller-manager's podCIDR, and its container events.
        pod_name = unique("kubelet-pod")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name},
            "spec": {"nodeName": name, "containers": [{"name": "web", "image": "nginx:1.25"}]},
        }
        await client.create(PODS, pod)

        async def running() -> dict[str, Any] | None:
            status = (await client.get(f"{PODS}/{pod_name}")).get("status") or {}
            return status if status.get("phase") == "Running" and status.get("podIP") else None

        status = await eventually("the pod Running", 15, running)
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network(cidr)
        # A v1.24 kubelet writes no PodReadyToStartContainers (1.29) and no hostIPs.
        assert "PodReadyToStartContainers" not in {c["type"] for c in status["conditions"]}
        assert "hostIPs" not in status

        async def pod_events() -> bool:
            events = await client.list(
                "/api/v1/namespaces/default/events",
                field_selector=f"involvedObject.name={pod_name}",
            )
            reasons = [e["reason"] for e in events.items]
            return {"Pulling", "Pulled", "Created", "Started"} <= set(reasons)

        await eventually("the pod's container events", 10, pod_events)

        # A graceful delete: the kubelet stops the container (Killing), then deletes the pod.
        await client.delete(f"{PODS}/{pod_name}")

        async def killed() -> bool:
            events = await client.list(
                "/api/v1/namespaces/default/events",
                field_selector=f"involvedObject.name={pod_name}",
            )
            return "Killing" in {e["reason"] for e in events.items}

        await eventually("the pod's Killing event", 15, killed)

        # The kubelet itself reporting NotReady (a script's runtime down): NodeNotReady.
        script = unique("kubelet-notready")
        await client.create(
            SCRIPTS,
            {
                "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
                "kind": "NodeScript",
                "metadata": {"name": script},
                "spec": {
                    "steps": [{"after": "0s", "conditions": [{"type": "Ready", "status": "False"}]}]
                },
            },
        )
        await client.patch(
            f"{CRS}/{name}",
            {"metadata": {"annotations": {"zhizuqiu.github.com/nodeScript": script}}},
            patch_type="merge",
        )

        async def not_ready_event() -> bool:
            events = await client.list(
                "/api/v1/namespaces/default/events", field_selector=f"involvedObject.name={name}"
            )
            return any(
                e["reason"] == "NodeNotReady" and e["source"].get("component") == "kubelet"
                for e in events.items
            )

        await eventually("the kubelet's NodeNotReady event", 15, not_ready_event)
        await client.delete(f"{SCRIPTS}/{script}")
        await client.delete(f"{CRS}/{name}")

        async def gone() -> bool:
            nodes = await client.list(NODES, field_selector=f"metadata.name={name}")
            return not nodes.items

        await eventually("the node removed with its CR", 30, gone)
        nursery.cancel_scope.cancel()


def internal_ip(node: dict[str, Any]) -> str | None:
    for address in node.get("status", {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address["address"])
    return None


@pytest.mark.real
async def test_a_restarted_shard_gives_no_new_node_an_address_in_use(
    real_control_plane: RunningControlPlane,
) -> None:
    """A new CR was once given the InternalIP an existing, not yet adopted Node held; that
    node's sync then failed for ever and it went NotReady. Reserve first, then allocate."""
    config = load_config(real_control_plane.kubeconfig)
    settings = FleetSettings(shard=ShardSettings(pod_cidr_allocation="cluster"))
    shard = unique("addresses")

    def cr(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
            "spec": {},
        }

    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        namespaces = await client.list("/api/v1/namespaces")
        if FLEET_NAMESPACE not in {n["metadata"]["name"] for n in namespaces.items}:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})

        async def addresses(names: list[str]) -> dict[str, str] | None:
            nodes = {n["metadata"]["name"]: n for n in (await client.list(NODES)).items}
            got = {name: internal_ip(nodes[name]) for name in names if name in nodes}
            return got if len(got) == len(names) and all(got.values()) else None  # type: ignore[return-value]

        first = ShardEngine(settings, shard, control=client, hot=hot)
        scope = trio.CancelScope()

        async def run_first(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await first.run(task_status=task_status)

        await nursery.start(run_first)
        old = [unique("addr-old") for _ in range(4)]
        for name in old:
            await client.create(CRS, cr(name))
        await eventually("the first nodes registered", 30, lambda: addresses(old))
        scope.cancel()  # the shard stops; its Nodes stay
        new = [unique("addr-new") for _ in range(6)]
        for name in new:
            await client.create(CRS, cr(name))
        second = ShardEngine(settings, shard, control=client, hot=hot)
        await nursery.start(second.run)
        got = await eventually("every node registered", 30, lambda: addresses(old + new))
        others = [
            internal_ip(n)
            for n in (await client.list(NODES)).items
            if n["metadata"]["name"] not in got
        ]
        assert len(set(got.values())) == len(got), got
        assert not set(got.values()) & set(others), (got, others)
        # Gone before the shard stops (it holds their finalizers): no node of this test is
        # left NotReady on the session's control plane for the tests after it.
        for name in old + new:
            await client.delete(f"{CRS}/{name}")

        async def gone() -> bool:
            left = {n["metadata"]["name"] for n in (await client.list(NODES)).items}
            return not left & set(old + new)

        await eventually("the nodes removed with their CRs", 30, gone)
        nursery.cancel_scope.cancel()
