"""The control plane beside the real sandbox apiserver, over HTTP (real time, a few seconds)."""

from __future__ import annotations

from typing import Any

import trio

from fleet.controlplane import ControlPlane, ControlPlaneSettings, serve_control_plane
from fleet.kube import Client, load_config
from fleet.sandbox import RunningSandbox
from tests.controlplane._helpers import node

KUBECTL = "/usr/bin/kubectl"

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx",
                                                   "resources": {"requests": {"cpu": "100m"}}}]}}},
}  # fmt: skip


async def _poll(check: Any, within: float = 10.0) -> Any:
    with trio.move_on_after(within):
        while True:
            result = await check()
            if result:
                return result
            await trio.sleep(0.1)
    raise AssertionError(f"not met within {within} s")


async def test_deployment_pods_are_bound_to_ready_nodes(
    sandbox: RunningSandbox, nursery: trio.Nursery
) -> None:
    config = load_config(sandbox.kubeconfig)
    settings = ControlPlaneSettings(node_lifecycle=False)
    plane: ControlPlane = await nursery.start(serve_control_plane, config, settings)
    assert plane.scheduler is not None and plane.node_lifecycle is None
    async with Client(config) as client:
        for name in ("n1", "n2"):
            body = node(name)
            await client.create("/api/v1/nodes", {k: v for k, v in body.items() if k != "status"})
            await client.patch(
                f"/api/v1/nodes/{name}/status", {"status": body["status"]}, patch_type="merge"
            )
        await client.create("/apis/apps/v1/namespaces/default/deployments", DEPLOYMENT)

        async def bound() -> list[dict[str, Any]] | None:
            pods = (
                await client.list("/api/v1/namespaces/default/pods", label_selector="app=web")
            ).items
            if len(pods) == 5 and all(p["spec"].get("nodeName") for p in pods):
                return pods
            return None

        pods = await _poll(bound)
        assert {p["spec"]["nodeName"] for p in pods} == {"n1", "n2"}
        rs_names = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
        assert len(rs_names) == 1 and next(iter(rs_names)).startswith("web-")

        async def status() -> dict[str, Any] | None:
            d = await client.get("/apis/apps/v1/namespaces/default/deployments/web")
            st = d.get("status") or {}
            return st if st.get("replicas") == 5 and st.get("updatedReplicas") == 5 else None

        st = await _poll(status)
        conds = {c["type"]: c["reason"] for c in st["conditions"]}
        # Nothing runs the pods (no fleet here): they stay Pending, so not yet Available.
        assert conds == {
            "Available": "MinimumReplicasUnavailable",
            "Progressing": "ReplicaSetUpdated",
        }
        assert st["observedGeneration"] == 1

        # What the fleet's kubelets would do: Running and Ready.
        for p in pods:
            name = p["metadata"]["name"]
            await client.patch(f"/api/v1/namespaces/default/pods/{name}/status", {"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
            }}, patch_type="merge")  # fmt: skip
        rollout = await trio.run_process(
            [KUBECTL, "--kubeconfig", str(sandbox.kubeconfig), "rollout", "status", "deployment/web",
             "--timeout=20s"], capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert rollout.returncode == 0, rollout.stderr
        assert b'deployment "web" successfully rolled out' in rollout.stdout
        waited = await trio.run_process(
            [KUBECTL, "--kubeconfig", str(sandbox.kubeconfig), "wait", "--for=condition=Available",
             "deployment/web", "--timeout=20s"], capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert waited.returncode == 0, waited.stderr
