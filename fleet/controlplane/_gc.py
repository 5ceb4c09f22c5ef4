"""Garbage collection: ownerReference cascades, pods of vanished nodes, namespace deletion.

As kube-controller-manager's ``garbagecollector``, ``podgc`` and
``namespace`` controllers, over a fixed list of resources (``GCSettings.resources``;
the real collector discovers every resource, which a client could do too but
a test cluster rarely needs):

- **Background**: an object all of whose owners are gone (absent from the
  watches *and* confirmed by a GET: 404 or another uid) is deleted; one that
  keeps some owners loses the references to the gone ones.
- **Foreground**: an owner being deleted with the ``foregroundDeletion``
  finalizer has its dependents deleted (``Foreground`` themselves when they
  block it); once no dependent with ``blockOwnerDeletion`` is left, the
  finalizer is removed and the apiserver lets the owner go.
- **Orphan**: an owner with the ``orphan`` finalizer has its references
  removed from its dependents, then the finalizer.
- **Pods of deleted nodes** (podgc): a pod bound to a node that has been
  missing for ``orphan_pod_quarantine`` (and a GET confirms it) is deleted
  with grace 0.
- **Namespaces**: a namespace being deleted that still has the
  ``kubernetes`` finalizer has everything of the listed resources in it
  deleted; when none is left, ``PUT /api/v1/namespaces/<ns>/finalize``
  removes the finalizer. (The sandbox empties namespaces inline; against it
  this finds nothing left to do.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from fleet.controlplane._guard import log_failure
from fleet.controlplane._informer import Handler, Informer, Informers
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import (
    CRONJOBS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENDPOINTSLICES,
    JOBS,
    NAMESPACES,
    NODES,
    PODS,
    REPLICASETS,
    STATEFULSETS,
    KObject,
    OwnerRef,
    Resource,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, Conflict, FleetError, NotFound
from fleet.kube import WatchEvent

__all__ = ["GCSettings", "GarbageCollector"]

log = logging.getLogger(__name__)

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")


@dataclass(frozen=True, slots=True)
class GCSettings:
    resources: tuple[Resource, ...] = (
        PODS, REPLICASETS, DEPLOYMENTS, JOBS, CRONJOBS, DAEMONSETS, STATEFULSETS, ENDPOINTSLICES,
        CONFIGMAPS, SECRETS,
    )  # fmt: skip
    """Resources whose objects are owners or dependents. What the control plane's own loops
    and the fleet create, plus the two kinds users most often hang off an owner."""
    workers: int = 4
    """Objects processed at once (``--concurrent-gc-syncs`` is 20 for a whole cluster)."""
    orphan_pod_quarantine: float = 40.0
    """Seconds a pod's node must be missing before the pod goes (podgc's quarantine)."""
    pod_gc_period: float = 20.0
    """Seconds between podgc passes (podgc's ``gcCheckPeriod``)."""
    namespace_recheck: float = 5.0
    """Seconds between checks that a deleted namespace is empty."""
    namespaces: bool = True
    """Finish namespace deletion (the namespace controller's job)."""
    max_queue: int = 200_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"gc: workers must be >= 1, got {self.workers}")


@dataclass(frozen=True, slots=True)
class _Node:
    resource: Resource
    namespace: str
    name: str


class GarbageCollector:
    """The dependency graph of the watched resources, and the loops that act on it."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: GCSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.settings = s = settings if settings is not None else GCSettings()
        self._rest = rest
        self._clock = clock
        self._informers = informers
        self._by_kind = {(r.api_version, r.kind): r for r in (*s.resources, NODES, NAMESPACES)}
        self._watched: list[Informer[KObject]] = []
        for resource in s.resources:
            informer = informers.get(resource)
            informer.subscribe(self._on_object(resource))
            self._watched.append(informer)
        self._nodes = informers.get(NODES)
        self._namespaces = informers.get(NAMESPACES)
        if s.namespaces:
            self._namespaces.subscribe(self._on_namespace)
        self._graph: dict[str, _Node] = {}
        self._dependents: dict[str, set[str]] = defaultdict(set)
        self._owners: dict[str, list[OwnerRef]] = {}
        self._informer_of = dict(zip(s.resources, self._watched, strict=True))
        self.queue = WorkQueue("gc", max_keys=s.max_queue, clock=clock)
        self._node_missing: dict[str, float] = {}
        self.deleted = 0
        self.errors = 0
        """Failed pod GC rounds survived (work-queue failures: ``queue.statistics()``)."""

    # -- the graph, from the watches -----------------------------------------------------------

    def _on_object(self, resource: Resource) -> Handler[KObject]:
        async def handler(event: WatchEvent[KObject]) -> None:
            meta = event.obj.metadata
            uid = meta.uid
            for ref in self._owners.pop(uid, []):
                self._dependents[ref.uid].discard(uid)
            if event.type == "DELETED":
                self._graph.pop(uid, None)
                for dep in self._dependents.pop(uid, set()):
                    await self.queue.add(f"uid:{dep}")
                for ref in meta.owner_references:
                    await self.queue.add(f"uid:{ref.uid}")  # an owner may be waiting on us
                return
            self._graph[uid] = _Node(resource, meta.namespace, meta.name)
            refs = list(meta.owner_references)
            if refs:
                self._owners[uid] = refs
                for ref in refs:
                    self._dependents[ref.uid].add(uid)
                await self.queue.add(f"uid:{uid}")
            if meta.deletion_timestamp is not None and (
                FOREGROUND in meta.finalizers or ORPHAN in meta.finalizers
            ):
                await self.queue.add(f"uid:{uid}")

        return handler

    async def _on_namespace(self, event: WatchEvent[KObject]) -> None:
        ns = event.obj
        if (
            event.type != "DELETED"
            and ns.metadata.deletion_timestamp is not None
            and NAMESPACE_FINALIZER in (ns.spec.get("finalizers") or ())
        ):
            await self.queue.add(f"ns:{ns.metadata.name}")

    def _lookup(self, uid: str) -> tuple[_Node, KObject] | None:
        """The graph entry of ``uid`` and its object, taken together.

        Callers keep the entry rather than reading ``_graph`` again after an
        await: a watch event (a namespace being emptied, say) may remove it
        meanwhile.
        """
        node = self._graph.get(uid)
        if node is None:
            return None
        obj = self._informer_of[node.resource].get(node.namespace, node.name)
        return (node, obj) if obj is not None and obj.metadata.uid == uid else None

    # -- processing ------------------------------------------------------------------------------

    async def _process(self, key: str) -> None:
        kind, _, ident = key.partition(":")
        if kind == "ns":
            await self._finish_namespace(ident)
            return
        found = self._lookup(ident)
        if found is None:
            return
        node, obj = found
        meta = obj.metadata
        if meta.deletion_timestamp is not None and FOREGROUND in meta.finalizers:
            await self._foreground(node, obj)
        elif meta.deletion_timestamp is not None and ORPHAN in meta.finalizers:
            await self._orphan(node, obj)
        if meta.owner_references and meta.deletion_timestamp is None:
            await self._check_owners(node, obj)

    async def _owner_exists(self, obj: KObject, ref: OwnerRef) -> bool:
        if ref.uid in self._graph:
            return True
        resource = self._by_kind.get((ref.api_version, ref.kind))
        if resource is None:
            return True  # a kind we cannot look up: never delete on a guess
        try:
            owner = await self._rest.get(resource.path(obj.metadata.namespace or None, ref.name))
        except NotFound:
            return False
        return bool((owner.get("metadata") or {}).get("uid") == ref.uid)

    async def _check_owners(self, node: _Node, obj: KObject) -> None:
        meta = obj.metadata
        present: list[OwnerRef] = []
        for ref in meta.owner_references:
            if await self._owner_exists(obj, ref):
                present.append(ref)
        if len(present) == len(meta.owner_references):
            return
        path = node.resource.path(meta.namespace or None, meta.name)
        try:
            if not present:
                log.info(
                    "gc: deleting %s %s/%s: its owners are gone",
                    node.resource.kind,
                    meta.namespace,
                    meta.name,
                )
                await self._rest.delete(
                    path, preconditions_uid=meta.uid, propagation_policy="Background"
                )
                self.deleted += 1
            else:
                refs = [
                    {"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
                     **({"controller": r.controller} if r.controller is not None else {}),
                     **({"blockOwnerDeletion": r.block_owner_deletion}
                        if r.block_owner_deletion is not None else {})}
                    for r in present
                ]  # fmt: skip
                await self._rest.merge_patch(
                    path,
                    {
                        "metadata": {
                            "resourceVersion": meta.resource_version,
                            "ownerReferences": refs,
                        }
                    },
                )
        except (NotFound, Conflict):
            return  # gone already, or changed: its next event brings it back here
        except FleetError as exc:
            log.info("gc: %s/%s: %s", meta.namespace, meta.name, exc)
            self.queue.add_after(f"uid:{meta.uid}", 5.0)

    def _live_dependents(self, uid: str) -> list[tuple[_Node, KObject]]:
        out = []
        for dep in self._dependents.get(uid, ()):
            found = self._lookup(dep)
            if found is not None:
                out.append(found)
        return out

    async def _foreground(self, owner_node: _Node, owner: KObject) -> None:
        uid = owner.metadata.uid
        blocking = 0
        for node, dep in self._live_dependents(uid):
            blocks = any(
                r.uid == uid and r.block_owner_deletion for r in dep.metadata.owner_references
            )
            blocking += blocks
            if dep.metadata.deletion_timestamp is None:
                try:
                    await self._rest.delete(
                        node.resource.path(dep.metadata.namespace or None, dep.metadata.name),
                        preconditions_uid=dep.metadata.uid,
                        propagation_policy="Foreground" if blocks else "Background",
                    )
                    self.deleted += 1
                except NotFound:
                    continue
                except FleetError as exc:
                    log.info("gc: deleting dependent %s: %s", dep.metadata.name, exc)
        if blocking:
            return  # the dependents' DELETED events bring the owner back here
        await self._drop_finalizer(owner_node, owner, FOREGROUND)

    async def _orphan(self, owner_node: _Node, owner: KObject) -> None:
        uid = owner.metadata.uid
        for node, dep in self._live_dependents(uid):
            refs = [
                {"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
                 **({"controller": r.controller} if r.controller is not None else {})}
                for r in dep.metadata.owner_references if r.uid != uid
            ]  # fmt: skip
            try:
                await self._rest.merge_patch(
                    node.resource.path(dep.metadata.namespace or None, dep.metadata.name),
                    {"metadata": {"resourceVersion": dep.metadata.resource_version,
                                  "ownerReferences": refs or None}},
                )  # fmt: skip
            except NotFound:
                continue
            except FleetError as exc:
                log.info("gc: orphaning %s: %s", dep.metadata.name, exc)
                self.queue.add_after(f"uid:{uid}", 1.0)
                return
        await self._drop_finalizer(owner_node, owner, ORPHAN)

    async def _drop_finalizer(self, node: _Node, obj: KObject, finalizer: str) -> None:
        meta = obj.metadata
        rest = [f for f in meta.finalizers if f != finalizer]
        try:
            await self._rest.merge_patch(
                node.resource.path(meta.namespace or None, meta.name),
                {
                    "metadata": {
                        "resourceVersion": meta.resource_version,
                        "finalizers": rest or None,
                    }
                },
            )
        except (NotFound, Conflict):
            return
        except FleetError as exc:
            log.info("gc: removing %s from %s: %s", finalizer, meta.name, exc)
            self.queue.add_after(f"uid:{meta.uid}", 1.0)

    # -- namespaces ---------------------------------------------------------------------------

    async def _finish_namespace(self, name: str) -> None:
        ns = self._namespaces.get("", name)
        if ns is None or NAMESPACE_FINALIZER not in (ns.spec.get("finalizers") or ()):
            return
        left = 0
        for resource, informer in self._informer_of.items():
            if not resource.namespaced:
                continue
            for obj in list(informer.store.values()):
                if obj.metadata.namespace != name:
                    continue
                left += 1
                if obj.metadata.deletion_timestamp is not None:
                    continue
                try:
                    await self._rest.delete(
                        resource.path(name, obj.metadata.name), preconditions_uid=obj.metadata.uid
                    )
                except NotFound:
                    left -= 1
                except FleetError as exc:
                    log.info("gc: namespace %s: deleting %s: %s", name, obj.metadata.name, exc)
        if left:
            self.queue.add_after(f"ns:{name}", self.settings.namespace_recheck)
            return
        body = {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "resourceVersion": ns.metadata.resource_version},
            "spec": {"finalizers": [f for f in ns.spec.get("finalizers") or () if f != NAMESPACE_FINALIZER]},
        }  # fmt: skip
        try:
            await self._rest.replace(NAMESPACES.path(name=name, subresource="finalize"), body)
            log.info("gc: namespace %s is empty; finalized", name)
        except NotFound:
            return
        except FleetError as exc:
            log.info("gc: finalizing namespace %s: %s", name, exc)
            self.queue.add_after(f"ns:{name}", self.settings.namespace_recheck)

    # -- pods of deleted nodes ---------------------------------------------------------------

    async def collect_orphan_pods(self) -> None:
        """One podgc pass: delete pods whose node has been gone for the quarantine."""
        now = self._clock()
        nodes = self._nodes.store
        missing_now: set[str] = set()
        pods = self._informer_of.get(PODS)
        if pods is None:
            return
        for pod in list(pods.store.values()):
            node = pod.spec.get("nodeName")
            if not node or node in nodes:
                continue
            missing_now.add(node)
            since = self._node_missing.setdefault(node, now)
            if now - since < self.settings.orphan_pod_quarantine:
                continue
            try:
                await self._rest.get(NODES.path(name=node))
                continue  # it exists after all: our watch lags
            except NotFound:
                pass
            except FleetError:
                continue
            try:
                await self._rest.delete(
                    PODS.path(pod.metadata.namespace, pod.metadata.name),
                    preconditions_uid=pod.metadata.uid,
                    grace_period_seconds=0,
                )
                self.deleted += 1
                log.info(
                    "gc: deleted pod %s/%s of vanished node %s",
                    pod.metadata.namespace,
                    pod.metadata.name,
                    node,
                )
            except (NotFound, Conflict):
                continue
            except FleetError as exc:
                log.info("gc: orphan pod %s: %s", pod.metadata.name, exc)
        for node in list(self._node_missing):
            if node not in missing_now:
                del self._node_missing[node]

    # -- running ---------------------------------------------------------------------------------

    async def _pod_gc_loop(self) -> None:
        while True:
            try:
                await self.collect_orphan_pods()
            except Exception as exc:  # the next round tries again
                self.errors += 1
                log_failure("gc", "collecting pods of vanished nodes", exc)
            await trio.sleep(self.settings.pod_gc_period)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Collect until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(*self._watched, self._nodes, self._namespaces)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._process)
            nursery.start_soon(self._pod_gc_loop)
