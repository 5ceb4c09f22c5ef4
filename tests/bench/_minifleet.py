"""A stand-in fleet for the bench runner's tests: in-process and fast, no shard processes.

It does, crudely and in one task per watch, what the fleet does for a bench:
each Node CR in ``namespace`` gets a core Node (the CR's name, its
``nodeConfig.labels``, Ready); each pod bound to one of those nodes is moved
to Running (PodScheduled, Initialized, ContainersReady and Ready conditions,
``startTime`` and the container's ``startedAt``), as a kubelet reports it; a
pod with a deletionTimestamp is deleted with grace 0, as a kubelet finishes a
deletion; a deleted CR takes its Node. No Leases, no heartbeats, no
finalizers: it is a test double, not the fleet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import trio

from fleet.api import GROUP, VERSION
from fleet.errors import AlreadyExists, Conflict, NotFound
from fleet.kube import Client, ObjectMeta, Reflector, WatchEvent


class _NodeConfig(msgspec.Struct, frozen=True):
    labels: dict[str, str] = {}


class _CRSpec(msgspec.Struct, rename="camel", frozen=True):
    node_config: _NodeConfig = _NodeConfig()


class _NodeCR(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: _CRSpec = _CRSpec()


class _PodSpec(msgspec.Struct, rename="camel", frozen=True):
    node_name: str = ""


class _PodStatus(msgspec.Struct, frozen=True):
    phase: str = ""


class _Pod(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: _PodSpec = _PodSpec()
    status: _PodStatus = _PodStatus()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MiniFleet:
    """Run with ``await nursery.start(MiniFleet(client, "kube-mock-system").run)``."""

    def __init__(self, client: Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.nodes: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            crs_send, crs_recv = trio.open_memory_channel[WatchEvent[_NodeCR]](256)
            pods_send, pods_recv = trio.open_memory_channel[WatchEvent[_Pod]](256)
            nursery.start_soon(self._crs, crs_recv)
            nursery.start_soon(self._pods, pods_recv)
            await nursery.start(
                Reflector(
                    self.client,
                    f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/nodes",
                    _NodeCR,
                ).run,
                crs_send,
            )
            await nursery.start(Reflector(self.client, "/api/v1/pods", _Pod).run, pods_send)
            task_status.started()

    async def _crs(self, receive: trio.MemoryReceiveChannel[WatchEvent[_NodeCR]]) -> None:
        async for event in receive:
            name = event.obj.metadata.name
            if event.type == "DELETED":
                self.nodes.discard(name)
                try:
                    await self.client.delete(f"/api/v1/nodes/{name}")
                except NotFound:
                    pass
            elif event.type == "ADDED" and name not in self.nodes:
                self.nodes.add(name)
                await self._register(name, dict(event.obj.spec.node_config.labels))

    async def _register(self, name: str, labels: dict[str, str]) -> None:
        now = _now()
        status: dict[str, Any] = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "capacity": {"cpu": "20", "memory": "100Gi", "pods": "200"},
            "allocatable": {"cpu": "20", "memory": "100Gi", "pods": "200"},
        }
        try:
            await self.client.create(
                "/api/v1/nodes",
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": {"type": "kubemock", **labels}},
                    "status": status,
                },
            )
        except AlreadyExists:
            pass
        await self.client.patch(
            f"/api/v1/nodes/{name}/status", {"status": status}, patch_type="merge"
        )

    async def _pods(self, receive: trio.MemoryReceiveChannel[WatchEvent[_Pod]]) -> None:
        async for event in receive:
            pod = event.obj
            if event.type == "DELETED" or pod.spec.node_name not in self.nodes:
                continue
            path = f"/api/v1/namespaces/{pod.metadata.namespace}/pods/{pod.metadata.name}"
            try:
                if pod.metadata.deletion_timestamp is not None:
                    await self.client.delete(
                        path, grace_period_seconds=0, preconditions_uid=pod.metadata.uid
                    )
                elif pod.status.phase in ("", "Pending"):
                    await self.client.patch(
                        f"{path}/status", {"status": _running()}, patch_type="merge"
                    )
            except (NotFound, Conflict):
                pass


def _running() -> dict[str, Any]:
    now = _now()
    conditions = [
        {"type": t, "status": "True", "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    return {
        "phase": "Running",
        "startTime": now,
        "conditions": conditions,
        "podIP": "10.0.0.1",
        "containerStatuses": [
            {
                "name": "pause",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "image": "registry.k8s.io/pause:3.9",
                "imageID": "",
                "state": {"running": {"startedAt": now}},
            }
        ],
    }
