"""deploy/'s workloads on the real control plane (kube-scheduler, kube-controller-manager v1.24).

Found there: the fleet's own coordinator and shard pods were scheduled onto the fake
nodes its shards register, which then reported them Running; and a v1.24 StatefulSet
pod has no ``apps.kubernetes.io/pod-index`` label, so a shard's id must come from its
pod name's ordinal. Here a shard drives one fake node, Ready and schedulable (a copy
of the coordinator's pod without the node affinity lands on it), while deploy/'s
coordinator and shard pods stay Pending with kube-scheduler's own "didn't match Pod's
node affinity" reason, and each shard pod's name gives its ordinal. The static checks
of the same manifests are in tests/test_deploy.py and tests/shards/test_placement.py;
the shard id resolution alone in test_shard_id.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from fleet._settings import FleetSettings, ShardSettings
from fleet.cli._shard import resolve_shard_id
from fleet.errors import AlreadyExists, NotFound
from fleet.kube import Client, HotTransport, load_config
from fleet.realcp import RunningControlPlane
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine
from tests._apiserver import unique
from tests._polling import eventually

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
POD_INDEX = "apps.kubernetes.io/pod-index"
PATHS = {
    "Service": f"/api/v1/namespaces/{FLEET_NAMESPACE}/services",
    "Deployment": f"/apis/apps/v1/namespaces/{FLEET_NAMESPACE}/deployments",
    "StatefulSet": f"/apis/apps/v1/namespaces/{FLEET_NAMESPACE}/statefulsets",
}


def _workloads() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for name in ("coordinator.yaml", "shards.yaml"):
        text = (DEPLOY / name).read_text(encoding="utf-8")
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _scheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == "PodScheduled":
            return dict(c)
    return None


@pytest.mark.real
async def test_deploy_keeps_the_fleet_off_its_own_nodes_on_a_real_scheduler(
    real_control_plane: RunningControlPlane,
) -> None:
    config = load_config(real_control_plane.kubeconfig)
    docs = _workloads()
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        try:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        except AlreadyExists:
            pass
        shard, node = unique("deploy"), unique("deploy-node")
        settings = FleetSettings(shard=ShardSettings(pod_cidr_allocation="cluster"))
        await nursery.start(ShardEngine(settings, shard, control=client, hot=hot).run)
        cr = {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": node, "labels": {SHARD_LABEL: shard}},
            "spec": {"nodeConfig": {"cpu": "16", "memory": "64Gi"}},
        }
        await client.create(CRS, cr)

        # A copy of the coordinator's pod without the affinity, pinned to the fake node:
        # scheduled there and run, so that node takes such pods but for the affinity.
        (coordinator,) = [d for d in docs if d["kind"] == "Deployment"]
        control_spec = copy.deepcopy(coordinator["spec"]["template"]["spec"])
        del control_spec["affinity"]
        control_spec["nodeSelector"] = {"kubernetes.io/hostname": node}
        control_spec.pop("serviceAccountName", None)
        control = unique("deploy-control")
        pods = f"/api/v1/namespaces/{FLEET_NAMESPACE}/pods"
        await client.create(pods, {"metadata": {"name": control}, "spec": control_spec})

        async def control_running() -> bool:
            pod = await client.get(f"{pods}/{control}")
            return bool(
                pod["spec"].get("nodeName") == node and pod["status"].get("phase") == "Running"
            )

        created: list[tuple[str, str]] = []
        try:
            await eventually("the control pod Running on the fake node", 60, control_running)
            for doc in docs:
                await client.create(PATHS[doc["kind"]], doc)
                created.append((doc["kind"], doc["metadata"]["name"]))
            want = {
                "kubemock-fleet-coordinator": coordinator["spec"]["replicas"],
                "kubemock-fleet-shard": next(
                    d["spec"]["replicas"] for d in docs if d["kind"] == "StatefulSet"
                ),
            }

            async def all_unschedulable() -> list[dict[str, Any]] | None:
                got = [
                    p
                    for p in (await client.list(pods)).items
                    if p["metadata"]["name"].startswith(tuple(want))
                ]
                bound = {
                    p["metadata"]["name"]: p["spec"]["nodeName"]
                    for p in got
                    if p["spec"].get("nodeName")
                }
                assert not bound, f"deploy/'s pods scheduled onto nodes: {bound}"
                counts = {k: sum(p["metadata"]["name"].startswith(k) for p in got) for k in want}
                decided = all((_scheduled(p) or {}).get("reason") == "Unschedulable" for p in got)
                return got if counts == want and decided else None

            fleet_pods = await eventually(
                "deploy/'s pods seen by kube-scheduler", 60, all_unschedulable
            )
            for pod in fleet_pods:
                assert not pod["spec"].get("nodeName"), pod["metadata"]["name"]
                message = (_scheduled(pod) or {}).get("message", "")
                assert "didn't match Pod's node affinity" in message, message
            shard_pods = sorted(
                (p for p in fleet_pods if p["metadata"]["name"].startswith("kubemock-fleet-shard")),
                key=lambda p: str(p["metadata"]["name"]),
            )
            # v1.24: no pod-index label for the downward API; the name's ordinal is the id.
            assert all(POD_INDEX not in p["metadata"].get("labels", {}) for p in shard_pods)
            ids = [resolve_shard_id("", {"POD_NAME": p["metadata"]["name"]}) for p in shard_pods]
            assert ids == list(range(len(shard_pods)))
        finally:
            for kind, name in reversed(created):
                try:
                    await client.delete(f"{PATHS[kind]}/{name}", propagation_policy="Background")
                except NotFound:
                    pass
            await client.delete(f"{pods}/{control}", grace_period_seconds=0)
            await client.delete(f"{CRS}/{node}")

            async def node_gone() -> bool:
                nodes = await client.list("/api/v1/nodes", field_selector=f"metadata.name={node}")
                return not nodes.items

            await eventually("the fake node removed with its CR", 30, node_gone)
            nursery.cancel_scope.cancel()
