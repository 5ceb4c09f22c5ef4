"""The Endpoints controller: each Service's ``Endpoints`` from the pods it selects.

As kube-controller-manager's ``endpoint`` controller, as an API client: for a
Service with a selector, the pods of its namespace that match it, have an IP,
have not finished and are not being deleted become addresses — under
``addresses`` when Ready (or ``publishNotReadyAddresses``), else under
``notReadyAddresses`` — each with its ``nodeName`` and a ``targetRef`` to the
pod (``hostname`` too when the pod's ``subdomain`` is the Service). Each
Service port resolves its ``targetPort`` (a number, or a container port's
name) per pod; pods resolving to the same ports share a subset. The
Endpoints object is named as the Service and carries its labels (plus
``service.kubernetes.io/headless`` for a headless one); it is created,
replaced when it differs, and deleted with the Service. Services without a
selector are left to their users.

:func:`selected_pods`, :func:`resolve_ports` and :class:`ServicePodIndex` are
shared with the EndpointSlice controller. The index keeps Services and pods by
namespace and drops pod events that change nothing an endpoint shows (most
of them at scale: the kubelets' status writes), so a sync looks at one
namespace and a pod event at that namespace's Services.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podutil import is_ready
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import ENDPOINTS, PODS, SERVICES, EndpointsObject, KObject
from fleet.controlplane._rest import Rest
from fleet.errors import AlreadyExists, ConfigError, Conflict, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = [
    "EndpointsController",
    "EndpointsSettings",
    "ServicePodIndex",
    "resolve_ports",
    "selected_pods",
]

log = logging.getLogger(__name__)

HEADLESS_LABEL = "service.kubernetes.io/headless"


@dataclass(frozen=True, slots=True)
class EndpointsSettings:
    """How the Endpoints controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """Services synced at once (``--concurrent-endpoint-syncs``)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("endpoints: workers must be >= 1")


def selected_pods(
    service: KObject, pods: Iterable[KObject], *, include_terminating: bool = False
) -> list[KObject]:
    """The pods a Service with a selector routes to, sorted by name."""
    selector = service.spec.get("selector") or {}
    found = []
    for pod in pods:
        if pod.metadata.namespace != service.metadata.namespace:
            continue
        if any(pod.metadata.labels.get(k) != v for k, v in selector.items()):
            continue
        if not pod.status.get("podIP") or pod.status.get("phase") in ("Succeeded", "Failed"):
            continue
        if pod.metadata.deletion_timestamp is not None and not include_terminating:
            continue
        found.append(pod)
    return sorted(found, key=lambda p: p.metadata.name)


def resolve_ports(service: KObject, pod: KObject) -> tuple[tuple[str, int, str, str], ...] | None:
    """(name, port, protocol, appProtocol) of each Service port on ``pod``; None if one cannot."""
    out = []
    for port in service.spec.get("ports") or ():
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, str) and not target.isdigit():
            number = None
            for container in pod.spec.get("containers") or ():
                for cport in container.get("ports") or ():
                    if cport.get("name") == target and (cport.get("protocol") or "TCP") == (
                        port.get("protocol") or "TCP"
                    ):
                        number = cport.get("containerPort")
            if number is None:
                return None
            target = number
        out.append(
            (
                str(port.get("name") or ""),
                int(target),
                str(port.get("protocol") or "TCP"),
                str(port.get("appProtocol") or ""),
            )
        )
    return tuple(out)


class ServicePodIndex:
    """Services and pods by namespace, and which pod events matter to endpoints."""

    def __init__(self) -> None:
        self.services: dict[str, set[str]] = defaultdict(set)
        self.pods: dict[str, set[str]] = defaultdict(set)
        self._shapes: dict[str, tuple[tuple[tuple[str, str], ...], tuple[object, ...]]] = {}

    def on_service(self, event: WatchEvent[KObject]) -> None:
        meta = event.obj.metadata
        keys = self.services[meta.namespace]
        if event.type == "DELETED":
            keys.discard(object_key(meta))
        else:
            keys.add(object_key(meta))

    def on_pod(self, event: WatchEvent[KObject]) -> tuple[bool, Mapping[str, str]]:
        """(whether endpoints may change, the labels the pod had before)."""
        pod = event.obj
        key = object_key(pod.metadata)
        old = self._shapes.pop(key, None)
        old_labels: Mapping[str, str] = dict(old[0]) if old else {}
        if event.type == "DELETED":
            self.pods[pod.metadata.namespace].discard(key)
            return True, old_labels
        self.pods[pod.metadata.namespace].add(key)
        shape = (
            tuple(sorted(pod.metadata.labels.items())),
            (
                pod.status.get("podIP"),
                pod.status.get("phase"),
                is_ready(pod),
                pod.metadata.deletion_timestamp is not None,
                pod.spec.get("nodeName"),
                pod.spec.get("hostname"),
                pod.spec.get("subdomain"),
            ),
        )
        self._shapes[key] = shape
        return shape != old, old_labels

    def services_of(
        self, pod: KObject, old_labels: Mapping[str, str], services: Mapping[str, KObject]
    ) -> list[str]:
        """The Services of the pod's namespace whose selector matches it, now or before."""
        found = []
        for key in self.services.get(pod.metadata.namespace, ()):
            svc = services.get(key)
            selector = (svc.spec.get("selector") or {}) if svc is not None else {}
            if selector and any(
                labels and all(labels.get(k) == v for k, v in selector.items())
                for labels in (pod.metadata.labels, old_labels)
            ):
                found.append(key)
        return found

    def pods_in(self, namespace: str, pods: Mapping[str, KObject]) -> list[KObject]:
        return [p for k in self.pods.get(namespace, ()) if (p := pods.get(k)) is not None]


def _address(pod: KObject, service: KObject) -> dict[str, Any]:
    address: dict[str, Any] = {"ip": pod.status["podIP"]}
    if pod.spec.get("hostname") and pod.spec.get("subdomain") == service.metadata.name:
        address["hostname"] = pod.spec["hostname"]
    if pod.spec.get("nodeName"):
        address["nodeName"] = pod.spec["nodeName"]
    address["targetRef"] = {
        "kind": "Pod",
        "namespace": pod.metadata.namespace,
        "name": pod.metadata.name,
        "uid": pod.metadata.uid,
    }
    return address


def desired_endpoints(service: KObject, pods: Iterable[KObject]) -> dict[str, Any]:
    """The Endpoints object for ``service`` (without resourceVersion)."""
    publish = bool(service.spec.get("publishNotReadyAddresses"))
    subsets: dict[tuple[tuple[str, int, str, str], ...], dict[str, list[Any]]] = {}
    for pod in selected_pods(service, pods):
        ports = resolve_ports(service, pod)
        if ports is None:
            continue
        subset = subsets.setdefault(ports, {"addresses": [], "notReadyAddresses": []})
        kind = "addresses" if publish or is_ready(pod) else "notReadyAddresses"
        subset[kind].append(_address(pod, service))
    out_subsets = []
    for ports, subset in subsets.items():
        entry: dict[str, Any] = {}
        for kind in ("addresses", "notReadyAddresses"):
            if subset[kind]:
                entry[kind] = sorted(subset[kind], key=lambda a: a["ip"])
        entry["ports"] = [
            {
                k: v
                for k, v in (("name", n), ("port", p), ("protocol", proto), ("appProtocol", ap))
                if v
            }
            for n, p, proto, ap in ports
        ]
        out_subsets.append(entry)
    labels = dict(service.metadata.labels)
    if service.spec.get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service.metadata.name, "namespace": service.metadata.namespace},
    }
    if labels:
        body["metadata"]["labels"] = labels
    if out_subsets:
        body["subsets"] = out_subsets
    return body


class EndpointsController:
    """Keeps each selecting Service's Endpoints, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: EndpointsSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.settings = s = settings if settings is not None else EndpointsSettings()
        self._rest = rest
        self._informers = informers
        self._services: Informer[KObject] = informers.get(SERVICES)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._endpoints: Informer[EndpointsObject] = informers.get_view(ENDPOINTS, EndpointsObject)
        self._services.subscribe(self._on_service)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("endpoints", max_keys=s.max_queue, clock=clock)
        self.index = ServicePodIndex()

    async def _on_service(self, event: WatchEvent[KObject]) -> None:
        self.index.on_service(event)
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        changed, old_labels = self.index.on_pod(event)
        if changed:
            for key in self.index.services_of(event.obj, old_labels, self._services.store):
                await self.queue.add(key)

    async def _sync(self, key: str) -> None:
        svc = self._services.store.get(key)
        current = self._endpoints.store.get(key)
        try:
            if svc is None:
                if current is not None:
                    await self._rest.delete(
                        ENDPOINTS.path(current.metadata.namespace, current.metadata.name),
                        preconditions_uid=current.metadata.uid,
                    )
                return
            if not svc.spec.get("selector"):
                return
            want = desired_endpoints(
                svc, self.index.pods_in(svc.metadata.namespace, self._pods.store)
            )
            path = ENDPOINTS.path(svc.metadata.namespace)
            if current is None:
                try:
                    await self._rest.create(path, want)
                except AlreadyExists:
                    self.queue.add_after(key, 0.5)  # our watch has not shown it yet
                return
            have_labels = dict(current.metadata.labels)
            have_subsets = current.subsets
            if have_labels == want["metadata"].get("labels", {}) and have_subsets == want.get(
                "subsets"
            ):
                return
            want["metadata"]["resourceVersion"] = current.metadata.resource_version
            await self._rest.replace(
                ENDPOINTS.path(svc.metadata.namespace, svc.metadata.name), want
            )
        except (NotFound, Conflict):
            self.queue.add_after(key, 0.5)
        except FleetError as exc:
            log.info("endpoints %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._services, self._pods, self._endpoints)
            for key in list(self._endpoints.store):  # Endpoints of Services deleted meanwhile
                if key not in self._services.store:
                    await self.queue.add(key)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)
