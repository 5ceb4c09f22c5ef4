"""The EndpointSlice controller: discovery.k8s.io/v1 EndpointSlices of each selecting Service.

As kube-controller-manager's ``endpointslice`` controller, as an API client:
the pods a Service selects (see :func:`~fleet.controlplane._endpoints.selected_pods`;
terminating pods stay, with ``terminating: true``) become endpoints with
``addresses: [podIP]``, ``conditions`` (``ready``: Ready and not terminating;
``serving``: Ready; ``terminating``), ``nodeName`` and ``targetRef``; pods
resolving the Service's ports alike share slices of at most
``max_endpoints`` endpoints (100, ``--max-endpoints-per-slice``). Slices are
``addressType: IPv4``, named ``<service>-<random>`` (``generateName``),
labelled ``kubernetes.io/service-name`` and ``endpointslice.kubernetes.io/managed-by:
endpointslice-controller.k8s.io`` (plus the Service's labels), and owned by the
Service (so they go with it). Existing slices are updated in place, surplus
ones deleted, missing ones created; nothing is written when nothing changed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._endpoints import ServicePodIndex, resolve_ports, selected_pods
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podutil import is_ready
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import (
    ENDPOINTSLICES,
    PODS,
    SERVICES,
    EndpointsObject,
    KObject,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, Conflict, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = ["EndpointSliceController", "EndpointSliceSettings", "desired_slices"]

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"


@dataclass(frozen=True, slots=True)
class EndpointSliceSettings:
    """How the EndpointSlice controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """Services synced at once (``--concurrent-service-endpoint-syncs``)."""
    max_endpoints: int = 100
    """Endpoints per slice (``--max-endpoints-per-slice``)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1 or not 1 <= self.max_endpoints <= 1000:
            raise ConfigError("endpointslices: workers >= 1, 1 <= max_endpoints <= 1000")


def _endpoint(pod: KObject) -> dict[str, Any]:
    terminating = pod.metadata.deletion_timestamp is not None
    ready = is_ready(pod)
    endpoint: dict[str, Any] = {
        "addresses": [pod.status["podIP"]],
        "conditions": {
            "ready": ready and not terminating,
            "serving": ready,
            "terminating": terminating,
        },
    }
    if pod.spec.get("hostname"):
        endpoint["hostname"] = pod.spec["hostname"]
    if pod.spec.get("nodeName"):
        endpoint["nodeName"] = pod.spec["nodeName"]
    endpoint["targetRef"] = {
        "kind": "Pod",
        "namespace": pod.metadata.namespace,
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
    }
    return endpoint


def desired_slices(
    service: KObject, pods: Iterable[KObject], max_endpoints: int = 100
) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(endpoints, ports) of each slice ``service`` should have, in a stable order."""
    groups: dict[tuple[tuple[str, int, str, str], ...], list[dict[str, Any]]] = defaultdict(list)
    for pod in selected_pods(service, pods, include_terminating=True):
        ports = resolve_ports(service, pod)
        if ports is not None:
            groups[ports].append(_endpoint(pod))
    out = []
    for ports, endpoints in sorted(groups.items()):
        port_list = [
            {
                k: v
                for k, v in (("name", n), ("protocol", proto), ("port", p), ("appProtocol", ap))
                if k == "name" or v
            }
            for n, p, proto, ap in ports
        ]
        for i in range(0, len(endpoints), max_endpoints):
            out.append((endpoints[i : i + max_endpoints], port_list))
    return out


class EndpointSliceController:
    """Keeps each selecting Service's EndpointSlices, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: EndpointSliceSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.settings = s = settings if settings is not None else EndpointSliceSettings()
        self._rest = rest
        self._informers = informers
        self._services: Informer[KObject] = informers.get(SERVICES)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._slices: Informer[EndpointsObject] = informers.get_view(
            ENDPOINTSLICES, EndpointsObject
        )
        self._services.subscribe(self._on_service)
        self._pods.subscribe(self._on_pod)
        self._slices.subscribe(self._on_slice)
        self.queue = WorkQueue("endpointslices", max_keys=s.max_queue, clock=clock)
        self.index = ServicePodIndex()

    async def _on_service(self, event: WatchEvent[KObject]) -> None:
        self.index.on_service(event)
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_slice(self, event: WatchEvent[EndpointsObject]) -> None:
        labels = event.obj.metadata.labels
        if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and labels.get(SERVICE_NAME_LABEL):
            await self.queue.add(f"{event.obj.metadata.namespace}/{labels[SERVICE_NAME_LABEL]}")

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        changed, old_labels = self.index.on_pod(event)
        if changed:
            for key in self.index.services_of(event.obj, old_labels, self._services.store):
                await self.queue.add(key)

    def _owned(self, namespace: str, name: str) -> list[EndpointsObject]:
        return sorted(
            (
                s
                for s in self._slices.store.values()
                if s.metadata.namespace == namespace
                and s.metadata.labels.get(SERVICE_NAME_LABEL) == name
                and s.metadata.labels.get(MANAGED_BY_LABEL) == MANAGED_BY
            ),
            key=lambda s: s.metadata.name,
        )

    async def _sync(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        svc = self._services.store.get(key)
        existing = self._owned(namespace, name)
        try:
            if svc is None or not svc.spec.get("selector"):
                return  # the Service's deletion takes its slices (ownerReferences)
            want = desired_slices(
                svc, self.index.pods_in(namespace, self._pods.store), self.settings.max_endpoints
            )
            labels = {
                **svc.metadata.labels,
                SERVICE_NAME_LABEL: name,
                MANAGED_BY_LABEL: MANAGED_BY,
            }
            if not want:
                want = [([], [])]  # a Service with no endpoints keeps one empty slice
            for i, (endpoints, ports) in enumerate(want):
                body: dict[str, Any] = {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "generateName": f"{name}-",
                        "namespace": namespace,
                        "labels": labels,
                        "ownerReferences": [owner_reference(svc, "v1", "Service")],
                    },
                    "addressType": "IPv4",
                    "endpoints": endpoints or None,
                    "ports": ports or None,
                }
                if i < len(existing):
                    have = existing[i]
                    if (
                        have.endpoints == body["endpoints"]
                        and have.ports == body["ports"]
                        and have.metadata.labels == labels
                    ):
                        continue
                    body["metadata"]["name"] = have.metadata.name
                    body["metadata"]["resourceVersion"] = have.metadata.resource_version
                    await self._rest.replace(
                        ENDPOINTSLICES.path(namespace, have.metadata.name), body
                    )
                else:
                    await self._rest.create(ENDPOINTSLICES.path(namespace), body)
            for surplus in existing[len(want) :]:
                await self._rest.delete(
                    ENDPOINTSLICES.path(namespace, surplus.metadata.name),
                    preconditions_uid=surplus.metadata.uid,
                )
        except (NotFound, Conflict):
            self.queue.add_after(key, 0.5)
        except FleetError as exc:
            log.info("endpointslices %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._services, self._pods, self._slices)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)
