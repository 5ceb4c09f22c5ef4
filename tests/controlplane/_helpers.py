"""Object builders and waiting helpers for the control-plane tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

Obj = dict[str, Any]


def node(
    name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110",
    labels: dict[str, str] | None = None, taints: list[Obj] | None = None,
    ready: str = "True", unschedulable: bool = False,
) -> Obj:  # fmt: skip
    spec: Obj = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    alloc = {"cpu": cpu, "memory": memory, "pods": pods}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"capacity": alloc, "allocatable": alloc,
                   "conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]},
    }  # fmt: skip


def pod(
    name: str, *, namespace: str = "default", cpu: str | None = None, memory: str | None = None,
    labels: dict[str, str] | None = None, node_name: str | None = None, spec: Obj | None = None,
    phase: str = "Pending",
) -> Obj:  # fmt: skip
    requests: Obj = {}
    if cpu is not None:
        requests["cpu"] = cpu
    if memory is not None:
        requests["memory"] = memory
    container: Obj = {"name": "c", "image": "busybox"}
    if requests:
        container["resources"] = {"requests": requests}
    body_spec: Obj = {"containers": [container], **(spec or {})}
    if node_name:
        body_spec["nodeName"] = node_name
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": body_spec, "status": {"phase": phase},
    }  # fmt: skip


async def eventually(check: Callable[[], Any], *, within: float = 60.0, step: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``within`` (trio) seconds."""
    with trio.move_on_after(within):
        while True:
            result = check()
            if result:
                return result
            await trio.sleep(step)
    raise AssertionError(f"condition not met within {within} s: {check}")


def mark_ready(api: Any, namespace: str, name: str) -> None:
    """What a kubelet does once a pod's containers are up: Running and Ready."""
    from fleet.kube import MemoryApiserver

    stamp = MemoryApiserver.stamp
    obj = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    obj = {
        **obj,
        "status": {
            **obj.get("status", {}),
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp(api.now())}
            ],
        },
    }
    api.update("/api/v1/pods", obj)


async def fake_kubelets(api: Any, *, delay: float = 2.0, step: float = 0.5) -> None:
    """Make every pod Ready ``delay`` seconds after it was first seen, until cancelled."""
    seen: dict[str, float] = {}
    while True:
        now = trio.current_time()
        for obj in api.items("/api/v1/pods"):
            meta = obj["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            ready = any(
                c.get("type") == "Ready" for c in obj.get("status", {}).get("conditions") or []
            )
            if ready or meta.get("deletionTimestamp"):
                continue
            first = seen.setdefault(key, now)
            if now - first >= delay:
                mark_ready(api, meta["namespace"], meta["name"])
        await trio.sleep(step)
