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

Unlike the real controller, whose sync walks every node (cheap in Go), a sync here
looks only at the nodes marked since the last one: a node added, changed (labels,
taints, unschedulable) or gone; a node where a pod of the DaemonSet was created,
changed or deleted (an index per DaemonSet: node -> its pods there). What each look
decided is kept per node with the sums the status reads, so a sync costs what changed,
not the cluster's size. A DaemonSet first seen, or whose template, node selector,
tolerations or ``minReadySeconds`` changed, is walked in full once
(:meth:`DaemonSetController.statistics` counts both).

Left out: required node affinity on labels, ``maxSurge``, ControllerRevision
objects (the hash is this project's, as for Deployments).
"""

from __future__ import annotations

import logging
import math
import time
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
    controller_of,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = [
    "DAEMON_TOLERATIONS",
    "DaemonSetController",
    "DaemonSetSettings",
    "DaemonSetStatistics",
]

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
    changes of many pods into one sync; so does a creation or deletion while more of its
    batch are still unseen (the one that completes the batch, or one nobody expected, syncs
    at once)."""
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


@dataclass(frozen=True, slots=True)
class DaemonSetStatistics:
    """How much looking the controller did: what proves a sync is incremental."""

    full_walks: int
    """Syncs that looked at every node (a DaemonSet first seen, or its template, node
    selector, tolerations or ``minReadySeconds`` changed)."""
    nodes_examined: int
    """Node looks over all syncs, full walks included."""


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one look at one node decided for one DaemonSet."""

    eligible: bool
    misscheduled: bool
    create: bool
    kept: str | None
    """The pod that stays there (the oldest that has not failed), on an eligible node."""
    doomed: tuple[str, ...]
    ready: bool = False
    updated: bool = False
    available: bool = False
    waiting: bool = False
    """Ready, but not yet for ``minReadySeconds``: looked at again each sync."""


_NOTHING = _Verdict(eligible=False, misscheduled=False, create=False, kept=None, doomed=())


class _SetState:
    """One DaemonSet's verdict per node and the sums the status and the actions read.

    A sync looks only at the nodes marked dirty since the last one (a node added, changed
    or gone; a pod of the DaemonSet on it created, changed or deleted), so a sync costs
    what changed, not the cluster's size (the real controller's sync walks every node:
    cheap in Go, ~100 ms a sync at 5,000 nodes here)."""

    def __init__(self, signature: tuple[object, ...]) -> None:
        self.signature = signature
        self.verdicts: dict[str, _Verdict] = {}
        self.dirty: set[str] = set()
        self.to_create: set[str] = set()
        self.to_delete: set[str] = set()
        self.old: set[str] = set()
        """Eligible nodes whose kept pod is of an older template."""
        self.waiting: set[str] = set()
        self.desired = self.current = self.misscheduled = 0
        self.ready = self.updated = self.available = 0

    def put(self, node: str, verdict: _Verdict) -> None:
        old = self.verdicts.pop(node, _NOTHING)
        self._count(node, old, -1)
        if verdict != _NOTHING:
            self.verdicts[node] = verdict
        self._count(node, verdict, +1)

    def _count(self, node: str, v: _Verdict, sign: int) -> None:
        self.desired += sign * v.eligible
        self.misscheduled += sign * v.misscheduled
        on = v.eligible and v.kept is not None
        self.current += sign * on
        self.ready += sign * (on and v.ready)
        self.updated += sign * (on and v.updated)
        self.available += sign * (on and v.available)
        for flag, members in (
            (v.create, self.to_create),
            (bool(v.doomed), self.to_delete),
            (on and not v.updated, self.old),
            (v.waiting, self.waiting),
        ):
            if flag:
                if sign > 0:
                    members.add(node)
                else:
                    members.discard(node)


@dataclass(frozen=True, slots=True)
class _How:
    """What a sync decides each node by."""

    revision: str
    selector: Mapping[str, str]
    tolerations: list[dict[str, Any]]
    min_ready: int
    available: Callable[[KObject], bool]


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
        self._index: dict[str, dict[str, set[str]]] = {}
        """DaemonSet uid -> node -> keys of its pods there (by :func:`target_node`)."""
        self._placed: dict[str, tuple[str, str, str]] = {}
        """Pod key -> (owner uid, owner key, node) as indexed."""
        self._states: dict[str, _SetState] = {}
        """DaemonSet key -> its verdicts per node (see :class:`_SetState`)."""
        self._node_shapes: dict[str, tuple[object, ...]] = {}
        """Node -> what of it decides eligibility (labels, taints, unschedulable)."""
        self._seen: dict[str, tuple[object, ...]] = {}
        """DaemonSet key -> (uid, generation, deletionTimestamp) last synced for."""
        self._written: dict[str, dict[str, Any]] = {}
        """DaemonSet key -> the status this controller last wrote."""
        self._full_walks = 0
        self._nodes_examined = 0

    def statistics(self) -> DaemonSetStatistics:
        return DaemonSetStatistics(self._full_walks, self._nodes_examined)

    async def _on_set(self, event: WatchEvent[KObject]) -> None:
        """Sync the DaemonSet, unless the change is the status this controller just wrote
        (each write would otherwise make another sync, and another write, as long as its
        pods keep moving: one per sync at thousands of pods)."""
        ds = event.obj
        key = object_key(ds.metadata)
        seen = (ds.metadata.uid, ds.metadata.generation, ds.metadata.deletion_timestamp)
        if (
            event.type == "MODIFIED"
            and self._seen.get(key) == seen
            and self._written.get(key) == ds.status
        ):
            return
        self._seen[key] = seen
        if event.type == "DELETED":
            self.expectations.forget(key)
            self._states.pop(key, None)
            self._seen.pop(key, None)
            self._written.pop(key, None)
            for pods in self._index.pop(event.obj.metadata.uid, {}).values():
                for pod in pods:
                    self._placed.pop(pod, None)
        await self.queue.add(key)

    async def _on_node(self, event: WatchEvent[KObject]) -> None:
        """Every DaemonSet looks again at the node, unless only its status moved (its
        kubelet's heartbeats: ``shouldIgnoreNodeUpdate``) — at thousands of nodes that is
        most events."""
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
        for state in self._states.values():
            state.dirty.add(name)
        for key in list(self._sets.store):
            await self.queue.add(key)

    def _mark(self, owner_key: str, node: str) -> None:
        state = self._states.get(owner_key)
        if state is not None:
            state.dirty.add(node)

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        key = object_key(pod.metadata)
        ref = controller_of(pod.metadata)
        before = self._placed.get(key)
        after: tuple[str, str, str] | None = None
        if event.type != "DELETED" and ref is not None and ref.kind == "DaemonSet":
            after = (ref.uid, f"{pod.metadata.namespace}/{ref.name}", target_node(pod))
        if before is None and after is None:
            return
        if before != after:
            if before is not None:
                uid, _, node = before
                on_node = self._index.get(uid, {}).get(node)
                if on_node is not None:
                    on_node.discard(key)
                    if not on_node:
                        del self._index[uid][node]
                del self._placed[key]
            if after is not None:
                uid, _, node = after
                self._index.setdefault(uid, {}).setdefault(node, set()).add(key)
                self._placed[key] = after
        for placed in (before, after):
            if placed is not None:
                self._mark(placed[1], placed[2])
        owner = (after or before or ("", "", ""))[1]
        if after is None and event.type == "DELETED":
            self.expectations.observe(owner, deletes=1)
        elif before is None:
            self.expectations.observe(owner, adds=1)
        if (after is None or before is None) and self.expectations.satisfied(owner):
            await self.queue.add(owner)
        else:
            # A pod's own progress (bound, started, ready), or one more of a batch whose
            # creations or deletions are still in flight, only moves the status until the
            # batch is all seen: at thousands of pods a sync (and a status write) per event
            # was the control plane's main cost, so such events are gathered for a moment.
            self.queue.add_after(owner, self.settings.status_delay)

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

    def _look(self, state: _SetState, ds: KObject, node_name: str, how: _How) -> None:
        """Decide one node afresh: its eligibility, its pods, what to create or delete."""
        uid = ds.metadata.uid
        pods: list[KObject] = []
        for pod_key in self._index.get(uid, {}).get(node_name, ()):
            pod = self._pods.store.get(pod_key)
            if pod is None or pod.metadata.deletion_timestamp is not None:
                continue
            ref = controller_of(pod.metadata)
            if ref is not None and ref.uid == uid:
                pods.append(pod)
        if len(pods) > 1:
            pods.sort(key=_created)
        node = self._nodes.store.get(node_name)
        if node is None or not self._eligible(how.selector, how.tolerations, node):
            doomed = tuple(object_key(p.metadata) for p in pods)
            state.put(
                node_name,
                _Verdict(
                    eligible=False,
                    misscheduled=node is not None and bool(pods),
                    create=False,
                    kept=None,
                    doomed=doomed,
                ),
            )
            return
        failed = [p for p in pods if p.status.get("phase") == "Failed"]
        running = [p for p in pods if p.status.get("phase") != "Failed"]
        doomed = tuple(object_key(p.metadata) for p in failed + running[1:])
        if not running:
            state.put(node_name, _Verdict(True, False, True, None, doomed))
            return
        kept = running[0]
        ready = is_ready(kept)
        available = how.available(kept)
        state.put(
            node_name,
            _Verdict(
                eligible=True,
                misscheduled=False,
                create=False,
                kept=object_key(kept.metadata),
                doomed=doomed,
                ready=ready,
                updated=kept.metadata.labels.get(REVISION_LABEL) == how.revision,
                available=available,
                waiting=ready and not available,
            ),
        )

    def _state(self, key: str, ds: KObject, how: _How) -> tuple[_SetState, set[str]]:
        """The DaemonSet's state and the nodes to look at: all of them when it is new or
        what decides eligibility or availability changed, else those marked since."""
        signature = (
            ds.metadata.uid, how.revision, repr(how.selector), repr(how.tolerations),
            how.min_ready,
        )  # fmt: skip
        state = self._states.get(key)
        if state is None or state.signature != signature:
            state = self._states[key] = _SetState(signature)
            self._full_walks += 1
            return state, set(self._nodes.store) | set(self._index.get(ds.metadata.uid, ()))
        look, state.dirty = state.dirty, set()
        return state, look | state.waiting

    async def _sync_set(self, key: str, ds: KObject) -> None:
        template = ds.spec.get("template") or {}
        tmpl_spec = template.get("spec") or {}
        min_ready = int(ds.spec.get("minReadySeconds") or 0)
        now = self._wall()

        def available(p: KObject) -> bool:
            since = ready_since(p)
            return is_ready(p) and (
                min_ready == 0 or (since is not None and now - since >= min_ready)
            )

        how = _How(
            revision=pod_template_hash(template),
            selector=tmpl_spec.get("nodeSelector") or {},
            tolerations=_tolerations(tmpl_spec),
            min_ready=min_ready,
            available=available,
        )
        state, look = self._state(key, ds, how)
        for name in look:
            self._look(state, ds, name, how)
        self._nodes_examined += len(look)

        store = self._pods.store
        doomed = [
            pod
            for name in sorted(state.to_delete)
            for pod_key in state.verdicts[name].doomed
            if (pod := store.get(pod_key)) is not None
        ]
        # Rolling update: replace old pods while few enough nodes lack an available pod.
        strategy = ds.spec.get("updateStrategy") or {}
        if (strategy.get("type") or "RollingUpdate") == "RollingUpdate" and state.old:
            budget = _max_unavailable(strategy, state.desired)
            unavailable = state.desired - state.available
            old = [
                pod
                for name in sorted(state.old)
                if (kept := state.verdicts[name].kept) is not None
                and (pod := store.get(kept)) is not None
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
            create = sorted(state.to_create)[:burst] if state.to_create else []
            await self._create(key, ds, create, how.revision)
        await self._write_status(ds, state)
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

    async def _write_status(self, ds: KObject, state: _SetState) -> None:
        status: dict[str, Any] = {
            "currentNumberScheduled": state.current,
            "numberMisscheduled": state.misscheduled,
            "desiredNumberScheduled": state.desired,
            "numberReady": state.ready,
            "observedGeneration": ds.metadata.generation,
            "updatedNumberScheduled": state.updated,
            "numberAvailable": state.available,
        }
        status["numberUnavailable"] = status["desiredNumberScheduled"] - status["numberAvailable"]
        for name in _OMIT_EMPTY:
            if not status[name]:
                del status[name]
        kept = {k: v for k, v in ds.status.items() if k not in _MANAGED}
        merged = {**kept, **status}
        if merged == ds.status:
            return
        self._written[object_key(ds.metadata)] = merged
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
