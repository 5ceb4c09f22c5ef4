"""The DaemonSet controller: one pod of a DaemonSet's template on every eligible node.

As kube-controller-manager's ``daemonset`` controller, as an API client:

- a node is eligible when it matches the template's ``nodeSelector`` and has
  no ``NoSchedule``/``NoExecute`` taint the pod does not tolerate, counting
  the tolerations the controller adds to every daemon pod (not-ready and
  unreachable ``NoExecute``; disk-, memory-, pid-pressure and unschedulable
  ``NoSchedule``; network-unavailable for ``hostNetwork`` pods);
- each daemon pod is pinned to its node with required node affinity on
  ``metadata.name`` (``matchFields``) and bound by the scheduler, as since
  1.12; it carries the template's labels plus ``controller-revision-hash``
  and ``pod-template-generation``, and a controller ownerReference;
- a node without a pod gets one, a node with several keeps the oldest, pods
  on ineligible or vanished nodes and failed pods are deleted;
- ``RollingUpdate``: pods of an older template are replaced while at most
  ``maxUnavailable`` (1 by default; a number or a percentage of the desired
  nodes) nodes lack an available pod; pods already unavailable go first;
  ``OnDelete`` replaces only what users delete;
- status: ``desiredNumberScheduled``, ``currentNumberScheduled``,
  ``numberMisscheduled``, ``numberReady``, ``numberAvailable`` (Ready for
  ``minReadySeconds``), ``numberUnavailable`` (omitted at 0),
  ``updatedNumberScheduled``, ``observedGeneration`` — what ``kubectl rollout
  status ds`` reads.

Left out: required node affinity on labels, ``maxSurge``, ControllerRevision
objects (the hash is this project's, as for Deployments).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._deployments import pod_template_hash
from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._jobs import merge_patch_body
from fleet.controlplane._podcontrol import Expectations, PodDeleter
from fleet.controlplane._podutil import is_ready, ready_since, untolerated
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import (
    DAEMONSETS,
    NODES,
    PODS,
    KObject,
    controlled,
    controller_of,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = ["DAEMON_TOLERATIONS", "DaemonSetController", "DaemonSetSettings"]

log = logging.getLogger(__name__)

CONTROLLER = "daemonset-controller"
"""The events' source component, as kube-controller-manager names this controller."""
REVISION_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
"""What ``util.AddOrUpdateDaemonPodTolerations`` gives every daemon pod."""
_HOST_NETWORK_TOLERATION = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


_OMIT_EMPTY = (
    "numberAvailable",
    "numberUnavailable",
    "updatedNumberScheduled",
    "observedGeneration",
)
"""DaemonSetStatus fields with ``omitempty``: absent at 0."""
_MANAGED = frozenset(
    {"currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady",
     *_OMIT_EMPTY}
)  # fmt: skip


SLOW_START_INITIAL_BATCH = 1
"""controller.SlowStartInitialBatchSize: the first batch of creations is one pod."""
SLOW_START_MAX_BATCH = 64
"""Creations in flight at most: the doubling stops here (the real one stops at the burst,
250; the sandbox's one Python process gains nothing from more, a real apiserver neither
from one client's)."""


@dataclass(frozen=True, slots=True)
class DaemonSetSettings:
    """How the DaemonSet controller works; defaults are kube-controller-manager's."""

    workers: int = 2
    """DaemonSets synced at once (``--concurrent-daemonset-syncs``)."""
    burst_pods: int = 500
    """Pods created or deleted per sync at most (slow-start batches in the real one)."""
    status_delay: float = 0.5
    """Seconds a pod's status change waits before its DaemonSet is synced, gathering the
    changes of many pods into one sync (creations and deletions sync at once)."""
    expectations_timeout: float = 300.0
    """Seconds after which unobserved creations/deletions are presumed lost (client-go)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1 or self.burst_pods < 1:
            raise ConfigError("daemonsets: workers and burst_pods must be >= 1")


def _tolerations(template_spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    tolerations = [dict(t) for t in template_spec.get("tolerations") or ()]
    extra = list(DAEMON_TOLERATIONS)
    if template_spec.get("hostNetwork"):
        extra.append(_HOST_NETWORK_TOLERATION)
    for t in extra:
        if not any(
            o.get("key") == t["key"] and o.get("effect") == t["effect"] for o in tolerations
        ):
            tolerations.append(dict(t))
    return tolerations


def target_node(pod: KObject) -> str:
    """The node a daemon pod is for: where it is bound, or where its affinity pins it."""
    if pod.spec.get("nodeName"):
        return str(pod.spec["nodeName"])
    required = ((pod.spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    for term in required.get("nodeSelectorTerms") or ():
        for field in term.get("matchFields") or ():
            if field.get("key") == "metadata.name" and field.get("values"):
                return str(field["values"][0])
    return ""


def _pin(spec: dict[str, Any], node: str) -> None:
    """``ReplaceDaemonSetPodNodeNameNodeAffinity``."""
    pin = [{"key": "metadata.name", "operator": "In", "values": [node]}]
    affinity = dict(spec.get("affinity") or {})
    node_affinity = dict(affinity.get("nodeAffinity") or {})
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = [dict(t) for t in required.get("nodeSelectorTerms") or ()]
    for term in terms:
        term["matchFields"] = pin
    required["nodeSelectorTerms"] = terms or [{"matchFields": pin}]
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    affinity["nodeAffinity"] = node_affinity
    spec["affinity"] = affinity


def _created(pod: KObject) -> float:
    ts = pod.metadata.creation_timestamp
    return ts.timestamp() if ts is not None else 0.0


class DaemonSetController:
    """Keeps a daemon pod on each eligible node, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: DaemonSetSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else DaemonSetSettings()
        self._rest = rest
        self._wall = wall_clock
        self._informers = informers
        self._sets: Informer[KObject] = informers.get(DAEMONSETS)
        self._nodes: Informer[KObject] = informers.get(NODES)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._sets.subscribe(self._on_set)
        self._nodes.subscribe(self._on_node)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("daemonsets", max_keys=s.max_queue, clock=clock)
        self.expectations = Expectations(s.expectations_timeout, clock)
        self._pod_deleter = PodDeleter(
            rest, self._sets, DAEMONSETS, CONTROLLER, self.expectations, self.queue, events
        )
        self._owned: dict[str, set[str]] = defaultdict(set)
        self._node_shapes: dict[str, tuple[object, ...]] = {}
        """Node -> what of it decides eligibility (labels, taints, unschedulable)."""

    async def _on_set(self, event: WatchEvent[KObject]) -> None:
        key = object_key(event.obj.metadata)
        if event.type == "DELETED":
            self.expectations.forget(key)
            self._owned.pop(event.obj.metadata.uid, None)
        await self.queue.add(key)

    async def _on_node(self, event: WatchEvent[KObject]) -> None:
        """Every DaemonSet looks again, unless only the node's status moved (its kubelet's
        heartbeats: ``shouldIgnoreNodeUpdate``) — at thousands of nodes that is most events."""
        node = event.obj
        name = node.metadata.name
        shape = (
            tuple(sorted(node.metadata.labels.items())),
            repr(node.spec.get("taints")),
            bool(node.spec.get("unschedulable")),
        )
        if event.type == "DELETED":
            self._node_shapes.pop(name, None)
        elif self._node_shapes.get(name) == shape:
            return
        else:
            self._node_shapes[name] = shape
        for key in list(self._sets.store):
            await self.queue.add(key)

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        ref = controller_of(pod.metadata)
        if ref is None or ref.kind != "DaemonSet":
            return
        key = object_key(pod.metadata)
        owner_key = f"{pod.metadata.namespace}/{ref.name}"
        owned = self._owned[ref.uid]
        if event.type == "DELETED":
            if key in owned:
                owned.discard(key)
                self.expectations.observe(owner_key, deletes=1)
        elif key not in owned:
            owned.add(key)
            self.expectations.observe(owner_key, adds=1)
        else:
            # A pod's own progress (bound, started, ready) only moves the status: at
            # thousands of pods a sync per event was the control plane's main cost
            # (each sync walks every node), so such events are gathered for a moment.
            self.queue.add_after(owner_key, self.settings.status_delay)
            return
        await self.queue.add(owner_key)

    @staticmethod
    def _eligible(
        selector: Mapping[str, str], tolerations: list[dict[str, Any]], node: KObject
    ) -> bool:
        if any(node.metadata.labels.get(k) != v for k, v in selector.items()):
            return False
        taints = node.spec.get("taints")
        return not taints or untolerated(taints, tolerations) is None

    async def _sync(self, key: str) -> None:
        ds = self._sets.store.get(key)
        if ds is None:
            return
        try:
            await self._sync_set(key, ds)
        except NotFound:
            return
        except FleetError as exc:
            log.info("daemonset %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def _sync_set(self, key: str, ds: KObject) -> None:
        pods = controlled(ds.metadata.uid, self._owned.get(ds.metadata.uid, ()), self._pods.store)
        by_node: dict[str, list[KObject]] = defaultdict(list)
        for pod in pods:
            if pod.metadata.deletion_timestamp is None:
                by_node[target_node(pod)].append(pod)
        template = ds.spec.get("template") or {}
        revision = pod_template_hash(template)
        min_ready = int(ds.spec.get("minReadySeconds") or 0)
        now = self._wall()
        create: list[str] = []
        doomed: list[KObject] = []
        eligible: list[str] = []
        misscheduled = 0
        tmpl_spec = template.get("spec") or {}
        selector = tmpl_spec.get("nodeSelector") or {}
        tolerations = _tolerations(tmpl_spec)
        for name, node in sorted(self._nodes.store.items()):
            node_pods = by_node.pop(name, [])
            if len(node_pods) > 1:
                node_pods.sort(key=_created)
            if not self._eligible(selector, tolerations, node):
                misscheduled += bool(node_pods)
                doomed += node_pods
                continue
            eligible.append(name)
            if not node_pods:
                create.append(name)
                continue
            failed = [p for p in node_pods if p.status.get("phase") == "Failed"]
            running = [p for p in node_pods if p.status.get("phase") != "Failed"]
            doomed += failed + running[1:]
            if not running:
                create.append(name)
        for orphaned in by_node.values():  # pods of nodes that are gone
            doomed += orphaned

        # Rolling update: replace old pods while few enough nodes lack an available pod.
        def available(p: KObject) -> bool:
            since = ready_since(p)
            return is_ready(p) and (
                min_ready == 0 or (since is not None and now - since >= min_ready)
            )

        doomed_keys = {id(p) for p in doomed}
        node_pod = {
            target_node(p): p
            for p in sorted(pods, key=_created, reverse=True)
            if p.metadata.deletion_timestamp is None and id(p) not in doomed_keys
        }
        strategy = ds.spec.get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate":
            budget = _max_unavailable(strategy, len(eligible))
            unavailable = sum(
                1 for n in eligible if n not in node_pod or not available(node_pod[n])
            )
            old = [
                node_pod[n]
                for n in eligible
                if n in node_pod and node_pod[n].metadata.labels.get(REVISION_LABEL) != revision
            ]
            for pod in sorted(old, key=available):  # the unavailable ones first
                if not available(pod):
                    doomed.append(pod)
                elif unavailable < budget:
                    doomed.append(pod)
                    unavailable += 1
        if self.expectations.satisfied(key) and ds.metadata.deletion_timestamp is None:
            burst = self.settings.burst_pods
            await self._pod_deleter.delete(key, doomed[:burst])
            await self._create(key, ds, create[:burst], revision)
        await self._write_status(ds, eligible, node_pod, misscheduled, revision, available)
        if min_ready:
            self.queue.add_after(key, float(min_ready))

    async def _create(self, key: str, ds: KObject, nodes: list[str], revision: str) -> None:
        """Create the pods of ``nodes`` in slow-start batches (1, 2, 4, ... at once, as
        ``slowStartBatch`` does): one at a time, 5,000 nodes took minutes of round trips; a
        batch with a failure ends the creations, the rest waits for the next sync."""
        if not nodes:
            return
        self.expectations.expect(key, len(nodes), 0)
        remaining, size = list(nodes), SLOW_START_INITIAL_BATCH
        while remaining:
            batch, remaining = remaining[:size], remaining[size:]
            failed: list[str] = []
            async with trio.open_nursery() as nursery:
                for node in batch:
                    nursery.start_soon(self._create_one, key, ds, node, revision, failed)
            if failed:
                self.expectations.observe(key, adds=len(failed) + len(remaining))
                self.queue.add_after(key, 1.0)
                return
            size = min(2 * size, SLOW_START_MAX_BATCH)

    async def _create_one(
        self, key: str, ds: KObject, node: str, revision: str, failed: list[str]
    ) -> None:
        template = ds.spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        spec = dict(template.get("spec") or {})
        spec["tolerations"] = _tolerations(spec)
        _pin(spec, node)
        labels = {
            **(tmeta.get("labels") or {}),
            REVISION_LABEL: revision,
            GENERATION_LABEL: str(ds.metadata.generation),
        }
        meta: dict[str, Any] = {
            "generateName": f"{ds.metadata.name}-",
            "namespace": ds.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(ds, DAEMONSETS.api_version, "DaemonSet")],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        try:
            created = await self._rest.create(PODS.path(ds.metadata.namespace), body)
        except FleetError as exc:
            log.info("daemonset %s: creating a pod for %s failed: %s", key, node, exc)
            failed.append(node)
            return
        name = (created.get("metadata") or {}).get("name", "")
        self._events.record(
            ds, DAEMONSETS, "Normal", "SuccessfulCreate", f"Created pod: {name}", CONTROLLER
        )

    async def _write_status(
        self,
        ds: KObject,
        eligible: list[str],
        node_pod: Mapping[str, KObject],
        misscheduled: int,
        revision: str,
        available: Callable[[KObject], bool],
    ) -> None:
        on = [node_pod[n] for n in eligible if n in node_pod]
        status: dict[str, Any] = {
            "currentNumberScheduled": len(on),
            "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": len(eligible),
            "numberReady": sum(1 for p in on if is_ready(p)),
            "observedGeneration": ds.metadata.generation,
            "updatedNumberScheduled": sum(
                1 for p in on if p.metadata.labels.get(REVISION_LABEL) == revision
            ),
            "numberAvailable": sum(1 for p in on if available(p)),
        }
        status["numberUnavailable"] = status["desiredNumberScheduled"] - status["numberAvailable"]
        for name in _OMIT_EMPTY:
            if not status[name]:
                del status[name]
        kept = {k: v for k, v in ds.status.items() if k not in _MANAGED}
        merged = {**kept, **status}
        if merged == ds.status:
            return
        await self._rest.merge_patch(
            DAEMONSETS.path(ds.metadata.namespace, ds.metadata.name, "status"),
            {"status": merge_patch_body(ds.status, merged)},
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._sets, self._nodes, self._pods)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)


def _max_unavailable(strategy: Mapping[str, Any], desired: int) -> int:
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1)
    if isinstance(value, str) and value.endswith("%"):
        try:
            return max(1, math.ceil(int(value[:-1]) * desired / 100)) if desired else 1
        except ValueError:
            return 1
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return 1
