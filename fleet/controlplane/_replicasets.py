"""The ReplicaSet controller: keeps ``spec.replicas`` pods of a ReplicaSet's template alive.

As kube-controller-manager's ``replicaset`` controller: pods belong to the
ReplicaSet named by their controller ownerReference (uid checked); active
pods (not finished, not being deleted) are counted; missing ones are created
from the template (``generateName: <rs>-``, ownerReference with
``controller`` and ``blockOwnerDeletion``), surplus ones deleted, those least
along first (unscheduled, Pending, not Ready, Ready for less time, more
restarts, newest). *Expectations* remember the creations and deletions in
flight, so a sync that runs before the watch has shown them does not act
twice; they expire after ``expectations_timeout``, as client-go's do.
Status: ``replicas``, ``fullyLabeledReplicas``, ``readyReplicas``,
``availableReplicas`` (Ready for ``minReadySeconds``) and
``observedGeneration``, written only when they change.

Adoption of orphans that match the selector is left out: pods are owned by
the ReplicaSet that made them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podcontrol import Expectations, PodDeleter
from fleet.controlplane._podutil import is_active, is_ready, ready_since
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import PODS, REPLICASETS, KObject, controlled, controller_of
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key
from fleet.machinery import label_selector_from_dict

__all__ = ["ReplicaSetController", "ReplicaSetSettings"]

log = logging.getLogger(__name__)

CONTROLLER = "replicaset-controller"
"""The events' source component, as kube-controller-manager names this controller."""
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


@dataclass(frozen=True, slots=True)
class ReplicaSetSettings:
    """How the ReplicaSet controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """ReplicaSets synced at once (``--concurrent-replicaset-syncs``)."""
    burst_replicas: int = 500
    """Pods created or deleted per sync at most (the controller's ``BurstReplicas``)."""
    expectations_timeout: float = 300.0
    """Seconds after which unobserved creations/deletions are presumed lost (client-go)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1 or self.burst_replicas < 1:
            raise ConfigError("replicasets: workers and burst_replicas must be >= 1")


def _deletion_rank(pod: KObject) -> tuple[Any, ...]:
    """Sort key: the pods to delete first come first (``controller.ActivePods`` order)."""
    since = ready_since(pod)
    restarts = sum(
        int(c.get("restartCount") or 0) for c in pod.status.get("containerStatuses") or ()
    )
    created = (
        pod.metadata.creation_timestamp.timestamp() if pod.metadata.creation_timestamp else 0.0
    )
    return (
        bool(pod.spec.get("nodeName")),
        _PHASE_RANK.get(str(pod.status.get("phase")), 1),
        is_ready(pod),
        -(since or 0.0),
        -restarts,
        -created,
    )


def owner_reference(owner: KObject, api_version: str, kind: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version, "kind": kind, "name": owner.metadata.name,
        "uid": owner.metadata.uid, "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip


class ReplicaSetController:
    """Reconciles ReplicaSets against their pods, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: ReplicaSetSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else ReplicaSetSettings()
        self._rest = rest
        self._clock = clock
        self._wall = wall_clock
        self._informers = informers
        self._sets: Informer[KObject] = informers.get(REPLICASETS)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._sets.subscribe(self._on_set)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("replicasets", max_keys=s.max_queue, clock=clock)
        self.expectations = Expectations(s.expectations_timeout, clock)
        self._pod_deleter = PodDeleter(
            rest, self._sets, REPLICASETS, CONTROLLER, self.expectations, self.queue, events
        )
        self._owned: dict[str, set[str]] = defaultdict(set)
        """ReplicaSet uid -> keys of the pods it controls."""
        self._deleting: set[str] = set()
        """Pods whose deletion has been observed (deletionTimestamp set)."""

    async def _on_set(self, event: WatchEvent[KObject]) -> None:
        key = object_key(event.obj.metadata)
        if event.type == "DELETED":
            self.expectations.forget(key)
            self._owned.pop(event.obj.metadata.uid, None)
        await self.queue.add(key)

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        key = object_key(pod.metadata)
        ref = controller_of(pod.metadata)
        if ref is None or ref.kind != "ReplicaSet":
            return
        owner_key = f"{pod.metadata.namespace}/{ref.name}"
        owned = self._owned[ref.uid]
        if event.type == "DELETED":
            if key in owned:
                owned.discard(key)
                if key not in self._deleting:
                    self.expectations.observe(owner_key, deletes=1)
            self._deleting.discard(key)
        else:
            if key not in owned:
                owned.add(key)
                self.expectations.observe(owner_key, adds=1)
            if pod.metadata.deletion_timestamp is not None and key not in self._deleting:
                # A graceful deletion counts when it starts (client-go's updatePod).
                self._deleting.add(key)
                self.expectations.observe(owner_key, deletes=1)
        await self.queue.add(owner_key)

    def _pods_of(self, rs: KObject) -> list[KObject]:
        return controlled(rs.metadata.uid, self._owned.get(rs.metadata.uid, ()), self._pods.store)

    async def _sync(self, key: str) -> None:
        rs = self._sets.store.get(key)
        if rs is None:
            return
        meta = rs.metadata
        pods = self._pods_of(rs)
        active = [p for p in pods if is_active(p)]
        if meta.deletion_timestamp is None and self.expectations.satisfied(key):
            wanted = int(rs.spec.get("replicas", 1))
            diff = len(active) - wanted
            if diff < 0:
                await self._create(key, rs, min(-diff, self.settings.burst_replicas))
            elif diff > 0:
                doomed = sorted(active, key=_deletion_rank)[
                    : min(diff, self.settings.burst_replicas)
                ]
                await self._pod_deleter.delete(key, doomed)
        await self._write_status(key, rs, active)

    async def _create(self, key: str, rs: KObject, count: int) -> None:
        template = rs.spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        meta = rs.metadata
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{meta.name}-",
                "namespace": meta.namespace,
                "labels": dict(tmeta.get("labels") or {}),
                "ownerReferences": [owner_reference(rs, "apps/v1", "ReplicaSet")],
            },
            "spec": template.get("spec") or {},
        }
        if tmeta.get("annotations"):
            body["metadata"]["annotations"] = dict(tmeta["annotations"])
        if tmeta.get("finalizers"):
            body["metadata"]["finalizers"] = list(tmeta["finalizers"])
        self.expectations.expect(key, count, 0)
        path = PODS.path(meta.namespace)
        for done in range(count):
            try:
                created = await self._rest.create(path, body)
            except FleetError as exc:
                log.info("replicaset %s: creating a pod failed: %s", key, exc)
                # The ones not made will never be observed.
                self.expectations.observe(key, adds=count - done)
                self.queue.add_after(key, 1.0)
                return
            name = (created.get("metadata") or {}).get("name", "")
            self._events.record(
                rs, REPLICASETS, "Normal", "SuccessfulCreate", f"Created pod: {name}", CONTROLLER
            )

    async def _write_status(self, key: str, rs: KObject, active: list[KObject]) -> None:
        template_labels = ((rs.spec.get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        min_ready = int(rs.spec.get("minReadySeconds") or 0)
        now = self._wall()
        ready = available = labeled = 0
        recheck: float | None = None
        for pod in active:
            labels = pod.metadata.labels
            if all(labels.get(k) == v for k, v in template_labels.items()):
                labeled += 1
            since = ready_since(pod) if is_ready(pod) else None
            if is_ready(pod):
                ready += 1
                if min_ready == 0 or (since is not None and now - since >= min_ready):
                    available += 1
                elif since is not None:
                    wait = since + min_ready - now
                    recheck = wait if recheck is None else min(recheck, wait)
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": rs.metadata.generation,
        }
        if recheck is not None:
            self.queue.add_after(key, recheck + 0.5)
        current = rs.status
        if all(current.get(k, 0) == v for k, v in status.items()):
            return
        try:
            await self._rest.merge_patch(
                REPLICASETS.path(rs.metadata.namespace, rs.metadata.name, "status"),
                {"status": status},
            )
        except NotFound:
            return
        except FleetError as exc:
            log.info("replicaset %s: status update failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    def selector_matches(self, rs: KObject, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` match the ReplicaSet's selector (for callers that adopt)."""
        return label_selector_from_dict(rs.spec.get("selector")).matches(labels)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._sets, self._pods)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)
