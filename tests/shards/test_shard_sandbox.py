"""One shard against the real sandbox apiserver, over the real client and hot transport."""

from __future__ import annotations

from typing import Any

import trio

from fleet._settings import FleetSettings
from fleet.api import crd_manifests
from fleet.kube import Client, HotTransport, load_config
from fleet.sandbox import RunningSandbox
from fleet.wire import SHARD_LABEL
from shards import ShardEngine

CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
PODS = "/api/v1/namespaces/default/pods"


async def _get(client: Client, path: str) -> dict[str, Any] | None:
    response = await client.request("GET", path)
    if response.status == 404:
        return None
    return await client.get(path)


async def test_cr_to_ready_node_and_pod_running(
    nursery: trio.Nursery, sandbox: RunningSandbox
) -> None:
    config = load_config(sandbox.kubeconfig)
    client = Client(config)
    hot = HotTransport(config)
    async with client, hot:
        for crd in crd_manifests():
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        if await _get(client, "/api/v1/namespaces/kube-mock-system") is None:
            await client.create("/api/v1/namespaces", {"metadata": {"name": "kube-mock-system"}})
        engine = ShardEngine(FleetSettings(), "0", control=client, hot=hot)
        await nursery.start(engine.run)
        cr = {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": "sb-node", "labels": {SHARD_LABEL: "0"}},
            "spec": {"nodeConfig": {"cpu": "4"}},
        }
        await client.create(CRS, cr)
        with trio.fail_after(5):
            while True:
                node = await _get(client, "/api/v1/nodes/sb-node")
                lease = await _get(
                    client, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/sb-node"
                )
                ready = [
                    c
                    for c in ((node or {}).get("status") or {}).get("conditions") or []
                    if c["type"] == "Ready" and c["status"] == "True"
                ]
                if ready and lease is not None:
                    break
                await trio.sleep(0.05)
        assert node is not None and lease is not None
        assert node["status"]["capacity"]["cpu"] == "4"
        assert lease["spec"]["holderIdentity"] == "sb-node"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "sb-pod",
                "annotations": {"zhizuqiu.github.com/delayRunning": "1s"},
            },
            "spec": {"nodeName": "sb-node", "containers": [{"name": "c", "image": "nginx"}]},
        }
        created = trio.current_time()
        await client.create(PODS, pod)
        seen_pending = False
        with trio.fail_after(4):
            while True:
                obj = await _get(client, f"{PODS}/sb-pod")
                current = ((obj or {}).get("status") or {}).get("phase")
                if current == "Pending" and (obj or {})["status"].get("containerStatuses"):
                    seen_pending = True
                if current == "Running":
                    break
                await trio.sleep(0.05)
        took = trio.current_time() - created
        assert seen_pending
        assert 0.0 < took < 2.5  # 1 s after creation (creationTimestamp has whole seconds)
        cr_now = await client.get(f"{CRS}/sb-node")
        conditions = {c["type"]: c["status"] for c in cr_now["status"]["conditions"]}
        assert conditions == {"Registered": "True", "Ready": "True"}
