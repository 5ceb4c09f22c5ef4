"""The StatefulSet controller: pods ``<name>-0`` .. ``<name>-(N-1)`` with stable identities.

As kube-controller-manager's ``statefulset`` controller, as an API client:

- pod ``i`` is named ``<set>-<i>``, with the template's labels plus
  ``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index``
  (1.28+) and ``controller-revision-hash: <set>-<hash>``, ``hostname`` its
  name, ``subdomain`` the ``serviceName``, and a controller ownerReference;
- ``OrderedReady`` (the default): pod ``i`` is created only once every pod
  before it is Running and Ready, one at a time; scaling down removes the
  highest ordinal first, one at a time, only while the others are Ready;
  ``Parallel``: all at once both ways;
- a Failed pod is deleted and made again under the same name;
- ``RollingUpdate``: pods of an older revision are deleted from the highest
  ordinal down to ``partition``, one at a time, each once the rest are Ready
  (and recreated from the current template); ``OnDelete`` waits for users;
- status: ``replicas``, ``readyReplicas``, ``availableReplicas``,
  ``currentReplicas``, ``updatedReplicas``, ``currentRevision``,
  ``updateRevision``, ``observedGeneration``, ``collisionCount`` — once every
  pod runs the update revision and is Ready, ``currentRevision`` becomes it,
  which is what ``kubectl rollout status sts`` waits for.

Left out: ``volumeClaimTemplates`` (no PVCs are made), ControllerRevision
objects (the hash is this project's, as for Deployments; a pod recreated
below the partition gets the current template), ``maxUnavailable``,
``ordinals.start``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._deployments import pod_template_hash
from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._jobs import merge_patch_body
from fleet.controlplane._podutil import is_ready, ready_since
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import PODS, STATEFULSETS, KObject, controlled, controller_of
from fleet.controlplane._rest import Rest
from fleet.errors import AlreadyExists, ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = ["POD_INDEX_LABEL", "StatefulSetController", "StatefulSetSettings"]

log = logging.getLogger(__name__)

CONTROLLER = "statefulset-controller"
"""The events' source component, as kube-controller-manager names this controller."""
REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


@dataclass(frozen=True, slots=True)
class StatefulSetSettings:
    """How the StatefulSet controller works; defaults are kube-controller-manager's."""

    workers: int = 5
    """StatefulSets synced at once (``--concurrent-statefulset-syncs``)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("statefulsets: workers must be >= 1")


def _ordinal(set_name: str, pod: KObject) -> int | None:
    prefix, _, suffix = pod.metadata.name.rpartition("-")
    if prefix != set_name or not suffix.isdigit():
        return None
    return int(suffix)


def _running_and_ready(pod: KObject) -> bool:
    return (
        pod.status.get("phase") == "Running"
        and is_ready(pod)
        and pod.metadata.deletion_timestamp is None
    )


class StatefulSetController:
    """Keeps StatefulSets' ordered pods, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: StatefulSetSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else StatefulSetSettings()
        self._rest = rest
        self._wall = wall_clock
        self._informers = informers
        self._sets: Informer[KObject] = informers.get(STATEFULSETS)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._sets.subscribe(self._on_set)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("statefulsets", max_keys=s.max_queue, clock=clock)
        self._owned: dict[str, set[str]] = defaultdict(set)

    async def _on_set(self, event: WatchEvent[KObject]) -> None:
        if event.type == "DELETED":
            self._owned.pop(event.obj.metadata.uid, None)
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        ref = controller_of(pod.metadata)
        if ref is None or ref.kind != "StatefulSet":
            return
        key = object_key(pod.metadata)
        if event.type == "DELETED":
            self._owned[ref.uid].discard(key)
        else:
            self._owned[ref.uid].add(key)
        await self.queue.add(f"{pod.metadata.namespace}/{ref.name}")

    async def _sync(self, key: str) -> None:
        sts = self._sets.store.get(key)
        if sts is None:
            return
        try:
            await self._sync_set(key, sts)
        except NotFound:
            return
        except FleetError as exc:
            log.info("statefulset %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def _sync_set(self, key: str, sts: KObject) -> None:
        name = sts.metadata.name
        pods = controlled(sts.metadata.uid, self._owned.get(sts.metadata.uid, ()), self._pods.store)
        by_ordinal: dict[int, KObject] = {}
        for pod in pods:
            i = _ordinal(name, pod)
            if i is not None:
                by_ordinal[i] = pod
        replicas = int(sts.spec.get("replicas", 1))
        ordered = (sts.spec.get("podManagementPolicy") or "OrderedReady") == "OrderedReady"
        update_revision = f"{name}-{pod_template_hash(sts.spec.get('template') or {})}"
        current_revision = str(sts.status.get("currentRevision") or update_revision)
        if sts.metadata.deletion_timestamp is None:
            await self._reconcile(sts, by_ordinal, replicas, ordered, update_revision)
        await self._write_status(sts, by_ordinal, replicas, current_revision, update_revision)

    async def _reconcile(
        self,
        sts: KObject,
        by_ordinal: dict[int, KObject],
        replicas: int,
        ordered: bool,
        revision: str,
    ) -> None:
        # Up to ``replicas``: create the missing ordinals, replace failed ones.
        for i in range(replicas):
            pod = by_ordinal.get(i)
            if pod is None:
                await self._create(sts, i, revision)
                if ordered:
                    return
                continue
            if pod.status.get("phase") == "Failed" and pod.metadata.deletion_timestamp is None:
                await self._delete(sts, pod)
                if ordered:
                    return
                continue
            if ordered and not _running_and_ready(pod):
                return  # wait for it before going on
        # Beyond ``replicas``: highest ordinal first.
        condemned = sorted((i for i in by_ordinal if i >= replicas), reverse=True)
        for i in condemned:
            pod = by_ordinal[i]
            if pod.metadata.deletion_timestamp is not None:
                if ordered:
                    return
                continue
            if ordered and not all(_running_and_ready(p) for j, p in by_ordinal.items() if j < i):
                return
            await self._delete(sts, pod)
            if ordered:
                return
        if condemned:
            return
        # Rolling update from the highest ordinal down to the partition, one at a time.
        strategy = sts.spec.get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        if len(by_ordinal) < replicas or not all(map(_running_and_ready, by_ordinal.values())):
            return  # every pod up and Ready before the next one is replaced
        for i in range(replicas - 1, partition - 1, -1):
            pod = by_ordinal[i]
            if pod.metadata.labels.get(REVISION_LABEL) != revision:
                await self._delete(sts, pod)
                return

    async def _create(self, sts: KObject, index: int, revision: str) -> None:
        template = sts.spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        pod_name = f"{sts.metadata.name}-{index}"
        spec = dict(template.get("spec") or {})
        spec["hostname"] = pod_name
        if sts.spec.get("serviceName"):
            spec["subdomain"] = sts.spec["serviceName"]
        meta: dict[str, Any] = {
            "name": pod_name,
            "namespace": sts.metadata.namespace,
            "labels": {
                **(tmeta.get("labels") or {}),
                REVISION_LABEL: revision,
                POD_NAME_LABEL: pod_name,
                POD_INDEX_LABEL: str(index),
            },
            "ownerReferences": [owner_reference(sts, STATEFULSETS.api_version, "StatefulSet")],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = dict(tmeta["annotations"])
        try:
            await self._rest.create(
                PODS.path(sts.metadata.namespace),
                {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec},
            )
        except AlreadyExists:
            return  # the old one is still going away; its DELETED event brings us back
        except FleetError as exc:
            log.info("statefulset %s: creating %s failed: %s", sts.metadata.name, pod_name, exc)
            self.queue.add_after(object_key(sts.metadata), 1.0)
            return
        self._events.record(
            sts, STATEFULSETS, "Normal", "SuccessfulCreate",
            f"create Pod {pod_name} in StatefulSet {sts.metadata.name} successful", CONTROLLER,
        )  # fmt: skip

    async def _delete(self, sts: KObject, pod: KObject) -> None:
        try:
            await self._rest.delete(
                PODS.path(pod.metadata.namespace, pod.metadata.name),
                preconditions_uid=pod.metadata.uid,
            )
        except NotFound:
            return
        self._events.record(
            sts, STATEFULSETS, "Normal", "SuccessfulDelete",
            f"delete Pod {pod.metadata.name} in StatefulSet {sts.metadata.name} successful",
            CONTROLLER,
        )  # fmt: skip

    async def _write_status(
        self,
        sts: KObject,
        by_ordinal: dict[int, KObject],
        replicas: int,
        current_revision: str,
        update_revision: str,
    ) -> None:
        min_ready = int(sts.spec.get("minReadySeconds") or 0)
        now = self._wall()
        live = [p for p in by_ordinal.values() if p.metadata.deletion_timestamp is None]
        ready = [p for p in live if is_ready(p)]
        available = 0
        for pod in ready:
            since = ready_since(pod)
            if min_ready == 0 or (since is not None and now - since >= min_ready):
                available += 1
            elif since is not None:
                self.queue.add_after(object_key(sts.metadata), since + min_ready - now + 0.5)
        updated = sum(1 for p in live if p.metadata.labels.get(REVISION_LABEL) == update_revision)
        current = sum(1 for p in live if p.metadata.labels.get(REVISION_LABEL) == current_revision)
        if updated == len(live) == len(ready) == replicas:
            current_revision, current = update_revision, updated  # the rollout is complete
        status: dict[str, Any] = {
            "observedGeneration": sts.metadata.generation,
            "replicas": len(live),
            "readyReplicas": len(ready),
            "currentReplicas": current,
            "updatedReplicas": updated,
            "currentRevision": current_revision,
            "updateRevision": update_revision,
            "collisionCount": 0,
            "availableReplicas": available,
        }
        for name in ("readyReplicas", "currentReplicas", "updatedReplicas"):
            if not status[name]:
                del status[name]  # omitempty
        kept = {
            k: v
            for k, v in sts.status.items()
            if k not in status and k not in ("readyReplicas", "currentReplicas", "updatedReplicas")
        }
        merged = {**kept, **status}
        if merged == sts.status:
            return
        await self._rest.merge_patch(
            STATEFULSETS.path(sts.metadata.namespace, sts.metadata.name, "status"),
            {"status": merge_patch_body(sts.status, merged)},
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._sets, self._pods)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)
