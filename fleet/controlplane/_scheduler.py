"""The scheduler: binds pending pods to nodes, as kube-scheduler's default profile does.

A pod is ours when it has no ``spec.nodeName``, is not being deleted, and
names ``default-scheduler`` (or no scheduler). One scheduling task takes pods
from a keyed queue and decides against an in-memory cache of every node's
allocatable resources and the requests of the non-terminal pods bound to it
(kept from the pod and node watches, and updated at once when a decision is
made: the pod is *assumed* on its node while its binding is in flight). A
fixed pool of binder tasks sends the decisions: ``POST .../pods/<name>/binding``
with a ``v1.Binding``.

Filters, in kube-scheduler's order, first failure per node wins:

- ``NodeUnschedulable``: ``spec.unschedulable`` (unless tolerated);
- ``TaintToleration``: NoSchedule and NoExecute taints need a toleration. A
  node whose Ready condition is not True counts as carrying the
  ``node.kubernetes.io/not-ready`` (``unreachable`` when Unknown) NoSchedule
  taint the node lifecycle controller would give it;
- ``NodeAffinity``: ``nodeSelector`` and required node affinity
  (In, NotIn, Exists, DoesNotExist, Gt, Lt; ``matchFields`` on ``metadata.name``);
- ``NodeResourcesFit``: cpu, memory and pod count against allocatable.

Pods are taken highest ``spec.priority`` first (the value the Priority admission
plugin resolved from ``priorityClassName``), first queued first among equals, as
kube-scheduler's active queue orders them.

A pod that fits nowhere may preempt (``_preemption``: kube-scheduler's DefaultPreemption):
the chosen node's victims get the ``DisruptionTarget`` condition, are deleted gracefully and
get a ``Preempted`` event; the pod gets ``status.nominatedNodeName`` and waits for the room.
Pods nominated to a node count there for pods of lower or equal priority, so the room is
kept for them.

A pod whose required node affinity names its nodes (``matchFields`` on
``metadata.name``, as every DaemonSet pod's does) is tried on those alone, as
kube-scheduler's NodeAffinity PreFilter result has it; only when none fits are
all nodes looked at, for the message.

Feasible nodes are scored least-allocated (cpu and memory equally, with
kube-scheduler's non-zero request defaults), ties broken at random; on a
large cluster only the first ``max(100, adaptive %)`` feasible nodes are
looked at, from a rotating start (``percentageOfNodesToScore``).

A pod that fits nowhere gets ``PodScheduled=False`` reason ``Unschedulable``
with kube-scheduler's message (``0/3 nodes are available: 1 node(s) had
untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available:
1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming
pod.``) and a ``FailedScheduling``
Warning event, and waits in the unschedulable set until a node is added or
changes what it offers, a bound pod goes away, the pod itself changes, or
``retry_interval`` passes.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._guard import log_failure
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podutil import (
    Requests,
    is_terminal,
    pod_requests,
    quantity_milli,
    quantity_value,
    tolerates,
    untolerated,
)
from fleet.controlplane._preemption import (
    Candidate,
    Victim,
    no_victims_message,
    pick_node,
    select_victims,
)
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import (
    EVENTS,
    NODES,
    PODDISRUPTIONBUDGETS,
    PODS,
    KObject,
    condition,
    rfc3339,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ApiError, ConfigError, Conflict, FleetError, InputError, NotFound
from fleet.kube import WatchEvent, object_key
from fleet.machinery import LabelSelector, Requirement, label_selector_from_dict

__all__ = ["Scheduler", "SchedulerSettings", "SchedulerStatistics", "unschedulable_message"]

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
MIN_FEASIBLE_NODES = 100
"""kube-scheduler's ``minFeasibleNodesToFind``: below this many nodes, all are looked at."""
MIN_FEASIBLE_PERCENTAGE = 5
"""kube-scheduler's floor of the adaptive ``percentageOfNodesToScore``."""
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"

_UNSCHEDULABLE_TAINT = {"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}
RESOURCE_REASONS = frozenset({"Too many pods", "Insufficient cpu", "Insufficient memory"})
"""``NodeResourcesFit`` failures: the ones preemption can resolve."""
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_AFFINITY = "node(s) didn't match Pod's node affinity/selector"


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    """How the scheduler works; the defaults are kube-scheduler's unless said otherwise."""

    scheduler_name: str = DEFAULT_SCHEDULER
    """Pods naming this scheduler (or none) are scheduled."""
    binders: int = 16
    """Binding and status requests in flight. Binding is one small POST; 16 keeps a local
    apiserver busy without queueing thousands of requests on it."""
    retry_interval: float = 60.0
    """Unschedulable pods are retried at least this often even if nothing seems to change.
    kube-scheduler waits 5 min (``podMaxInUnschedulablePodsDuration``); a test cluster whose
    capacity changes in ways the watches do not show is better served by a minute."""
    backoff_initial: float = 1.0
    """Delay before retrying a pod whose binding failed (``podInitialBackoffSeconds``)."""
    backoff_max: float = 10.0
    """Upper bound of that delay, doubling per failure (``podMaxBackoffSeconds``)."""
    percentage_of_nodes_to_score: int = 0
    """Share of nodes to look at once enough fit; 0 is kube-scheduler's adaptive default
    (50 % less 1 % per 125 nodes, at least 5 %, at least 100 nodes)."""
    max_queue: int = 100_000
    """Pending pods waiting to be scheduled before the pod watch is slowed down."""
    seed: int | None = None
    """Seed for the tie-breaking draw (tests); None draws from the OS."""

    def __post_init__(self) -> None:
        if self.binders < 1:
            raise ConfigError(f"scheduler: binders must be >= 1, got {self.binders}")
        if not 0 <= self.percentage_of_nodes_to_score <= 100:
            raise ConfigError(
                "scheduler: percentage_of_nodes_to_score must be in [0, 100], got "
                f"{self.percentage_of_nodes_to_score}"
            )
        if self.retry_interval <= 0 or self.backoff_initial <= 0:
            raise ConfigError("scheduler: retry_interval and backoff_initial must be > 0")


@dataclass(frozen=True, slots=True)
class SchedulerStatistics:
    pending: int
    """Pods waiting in the active queue."""
    unschedulable: int
    """Pods that fit nowhere at their last attempt."""
    assumed: int
    """Pods whose binding is in flight."""
    scheduled: int
    """Bindings the apiserver accepted."""
    failed_attempts: int
    """Attempts that found no node."""
    bind_errors: int
    errors: int = 0
    """Unexpected errors survived (logged; the pod retried with backoff)."""
    preemptions: int = 0
    """Pods that preempted others (victims chosen and evicted)."""


@dataclass(slots=True)
class _Usage:
    """What the pods bound to one node request."""

    milli_cpu: int = 0
    memory: int = 0
    nonzero_milli_cpu: int = 0
    nonzero_memory: int = 0
    pods: int = 0

    def add(self, r: Requests, sign: int) -> None:
        self.milli_cpu += sign * r.milli_cpu
        self.memory += sign * r.memory
        self.nonzero_milli_cpu += sign * r.nonzero_milli_cpu
        self.nonzero_memory += sign * r.nonzero_memory
        self.pods += sign


@dataclass(frozen=True, slots=True)
class _Node:
    """A node as the filters see it."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, Any], ...]
    unschedulable: bool
    milli_cpu: int
    memory: int
    pods: int

    @classmethod
    def of(cls, node: KObject) -> _Node:
        status = node.status
        alloc = status.get("allocatable") or status.get("capacity") or {}
        taints = [t for t in node.spec.get("taints") or () if isinstance(t, Mapping)]
        ready = condition(status, "Ready")
        ready_status = ready.get("status") if ready is not None else "Unknown"
        if ready_status != "True":
            # What the node lifecycle controller's TaintNodesByCondition would add.
            implied = TAINT_UNREACHABLE if ready_status == "Unknown" else TAINT_NOT_READY
            if not any(t.get("key") == implied and t.get("effect") == "NoSchedule" for t in taints):
                taints.append({"key": implied, "effect": "NoSchedule"})
        return cls(
            name=node.metadata.name,
            labels=node.metadata.labels,
            taints=tuple(taints),
            unschedulable=bool(node.spec.get("unschedulable")),
            milli_cpu=quantity_milli(alloc.get("cpu")),
            memory=quantity_value(alloc.get("memory")),
            pods=quantity_value(alloc.get("pods")),
        )


@dataclass(frozen=True, slots=True)
class _PodInfo:
    """What a pending pod asks, computed once per attempt."""

    requests: Requests
    node_selector: Mapping[str, str]
    terms: tuple[tuple[tuple[Requirement, ...], tuple[Requirement, ...]], ...] | None
    """Required node affinity: ORed terms of (label requirements, field requirements)."""
    tolerations: tuple[Mapping[str, Any], ...]


_OPERATORS = {
    "In": "in",
    "NotIn": "notin",
    "Exists": "exists",
    "DoesNotExist": "!",
    "Gt": "gt",
    "Lt": "lt",
}


def _requirements(expressions: object) -> tuple[Requirement, ...] | None:
    """Node selector requirements; None if one is malformed (the term then matches nothing)."""
    out: list[Requirement] = []
    for expr in expressions if isinstance(expressions, list) else ():
        op = _OPERATORS.get(str(expr.get("operator", ""))) if isinstance(expr, Mapping) else None
        if op is None:
            return None
        values = tuple(sorted(str(v) for v in expr.get("values") or ()))
        if op in ("gt", "lt") and len(values) != 1:
            return None
        out.append(Requirement(str(expr.get("key", "")), op, values))
    return tuple(out)


def _pod_info(pod: KObject) -> _PodInfo:
    spec = pod.spec
    terms: list[tuple[tuple[Requirement, ...], tuple[Requirement, ...]]] | None = None
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if isinstance(required, Mapping):
        terms = []
        for term in required.get("nodeSelectorTerms") or ():
            if not isinstance(term, Mapping):
                continue
            labels = _requirements(term.get("matchExpressions"))
            fields = _requirements(term.get("matchFields"))
            if labels is None or fields is None or (not labels and not fields):
                continue  # an empty or invalid term matches no node
            terms.append((labels, fields))
    return _PodInfo(
        requests=pod_requests(spec),
        node_selector=spec.get("nodeSelector") or {},
        terms=None if terms is None else tuple(terms),
        tolerations=tuple(t for t in spec.get("tolerations") or () if isinstance(t, Mapping)),
    )


def _named_nodes(info: _PodInfo) -> frozenset[str] | None:
    """The only nodes the pod may go to, when its required affinity names them
    (``matchFields`` ``metadata.name In``, what every DaemonSet pod carries): kube-scheduler's
    NodeAffinity PreFilter result, which spares looking at every other node. None when any
    term leaves the choice open."""
    if not info.terms:
        return None
    names: set[str] = set()
    for _labels, fields in info.terms:
        pinned = [r for r in fields if r.key == "metadata.name" and r.operator == "in"]
        if not pinned:
            return None
        allowed = set(pinned[0].values)
        for r in pinned[1:]:
            allowed &= set(r.values)
        names |= allowed
    return frozenset(names)


def _matches_affinity(info: _PodInfo, node: _Node) -> bool:
    labels = node.labels
    for key, value in info.node_selector.items():
        if labels.get(key) != value:
            return False
    if info.terms is None:
        return True
    fields = {"metadata.name": node.name}
    return any(
        all(r.matches(labels) for r in label_reqs) and all(r.matches(fields) for r in field_reqs)
        for label_reqs, field_reqs in info.terms
    )


_Budget = tuple[str, str, LabelSelector, frozenset[str], int]
"""A PodDisruptionBudget: key, namespace, selector, ``disruptedPods`` names, ``disruptionsAllowed``."""


def _budgets_of(pod: KObject, budgets: list[_Budget]) -> tuple[str, ...]:
    """The budgets evicting ``pod`` would take a disruption from."""
    labels = pod.metadata.labels
    if not labels:
        return ()
    return tuple(
        key
        for key, namespace, selector, disrupted, _ in budgets
        if namespace == pod.metadata.namespace
        and pod.metadata.name not in disrupted
        and selector.matches(labels)
    )


def _priority_of(pod: KObject) -> int:
    value = pod.spec.get("priority")
    return value if isinstance(value, int) else 0


def _started(pod: KObject) -> float:
    """When the pod started (``status.startTime``, else its creation), for ordering victims."""
    stamp = pod.status.get("startTime") or pod.metadata.creation_timestamp or ""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _filter(info: _PodInfo, node: _Node, usage: _Usage) -> list[str]:
    """Why ``node`` cannot take the pod: empty when it can."""
    if node.unschedulable and not any(tolerates(t, _UNSCHEDULABLE_TAINT) for t in info.tolerations):
        return [REASON_UNSCHEDULABLE]
    taint = untolerated(node.taints, info.tolerations)
    if taint is not None:
        return [
            f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value') or ''}}}"
        ]
    if not _matches_affinity(info, node):
        return [REASON_AFFINITY]
    reasons: list[str] = []
    r = info.requests
    if usage.pods + 1 > node.pods:
        reasons.append("Too many pods")
    if r.milli_cpu > 0 and r.milli_cpu > node.milli_cpu - usage.milli_cpu:
        reasons.append("Insufficient cpu")
    if r.memory > 0 and r.memory > node.memory - usage.memory:
        reasons.append("Insufficient memory")
    return reasons


def _least_allocated(info: _PodInfo, node: _Node, usage: _Usage) -> float:
    def part(capacity: int, requested: int) -> float:
        if capacity <= 0 or requested > capacity:
            return 0.0
        return (capacity - requested) * 100.0 / capacity

    r = info.requests
    cpu = part(node.milli_cpu, usage.nonzero_milli_cpu + r.nonzero_milli_cpu)
    mem = part(node.memory, usage.nonzero_memory + r.nonzero_memory)
    return (cpu + mem) / 2


def unschedulable_message(nodes: int, reasons: Mapping[str, int]) -> str:
    """kube-scheduler's ``FitError`` text: a histogram of reasons, sorted as strings."""
    if nodes == 0:
        return "no nodes available to schedule pods"
    histogram = sorted(f"{count} {reason}" for reason, count in reasons.items())
    text = f"0/{nodes} nodes are available"
    if histogram:
        text += ": " + ", ".join(histogram)
    return text + "."


@dataclass(frozen=True, slots=True)
class _Bind:
    key: str
    pod: KObject
    node: str


@dataclass(frozen=True, slots=True)
class _Unschedulable:
    pod: KObject
    message: str
    nominated: str | None = None
    """The node preemption made room on (``status.nominatedNodeName``)."""


@dataclass(frozen=True, slots=True)
class _Preempt:
    """Victims to evict for ``preemptor`` on ``node``, then the preemptor's status."""

    preemptor: KObject
    node: str
    victims: tuple[KObject, ...]
    message: str


@dataclass(slots=True)
class _Counters:
    scheduled: int = 0
    preemptions: int = 0
    failed_attempts: int = 0
    bind_errors: int = 0
    errors: int = 0
    attempts: dict[str, int] = field(default_factory=dict)


class Scheduler:
    """kube-scheduler's default profile, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: SchedulerSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else SchedulerSettings()
        self._rest = rest
        self._clock = clock
        self._wall = wall_clock
        self._rng = random.Random(s.seed)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._nodes: Informer[KObject] = informers.get(NODES)
        self._budgets: Informer[KObject] = informers.get(PODDISRUPTIONBUDGETS)
        self._informers = informers
        self._pods.subscribe(self._on_pod)
        self._nodes.subscribe(self._on_node)
        self.queue = WorkQueue(
            "scheduler", max_keys=s.max_queue, clock=clock, priority=self._priority
        )
        self._node_info: dict[str, _Node] = {}
        self._node_order: list[str] = []
        self._order_dirty = False
        self._next_start = 0
        self._usage: dict[str, _Usage] = {}
        self._bound: dict[str, tuple[str, Requests]] = {}
        """Pod key -> (node, requests) of every non-terminal pod on a node, assumed ones too."""
        self._bound_priority: dict[str, int] = {}
        self._priorities: dict[int, int] = {}
        """How many bound pods have each priority: a pod outranking none of them has no
        victims anywhere, known without looking at every pod."""
        self._pods_on_node: dict[str, set[str]] = {}
        """Node -> keys of the pods ``_bound`` holds there."""
        self._nominated: dict[str, tuple[str, int, Requests]] = {}
        """Pod key -> (node, priority, requests) of a pod that preempted and waits for room."""
        self._victims: dict[str, frozenset[str]] = {}
        """Pod key -> the keys of the pods it preempted (until they are gone it may not again)."""
        self._assumed: set[str] = set()
        self._unschedulable: dict[str, dict[str, Any]] = {}
        """Pod key -> the spec it was found unschedulable with."""
        self._counters = _Counters()
        self._jobs_send, self._jobs_receive = trio.open_memory_channel[
            _Bind | _Unschedulable | _Preempt
        ](s.binders * 4)

    # -- cache, from the watches ---------------------------------------------------------------

    def _account(self, key: str, node: str, requests: Requests, priority: int = 0) -> None:
        current = self._bound.get(key)
        if current is not None:
            if current[0] == node:
                return
            self._unaccount(key)
        self._bound[key] = (node, requests)
        self._bound_priority[key] = priority
        self._priorities[priority] = self._priorities.get(priority, 0) + 1
        self._pods_on_node.setdefault(node, set()).add(key)
        self._usage.setdefault(node, _Usage()).add(requests, +1)

    def _unaccount(self, key: str) -> bool:
        current = self._bound.pop(key, None)
        if current is None:
            return False
        priority = self._bound_priority.pop(key, 0)
        left = self._priorities[priority] - 1
        if left:
            self._priorities[priority] = left
        else:
            del self._priorities[priority]
        keys = self._pods_on_node.get(current[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._pods_on_node[current[0]]
        usage = self._usage[current[0]]
        usage.add(current[1], -1)
        if usage.pods == 0:
            del self._usage[current[0]]
        return True

    def _ours(self, pod: KObject) -> bool:
        name = pod.spec.get("schedulerName") or DEFAULT_SCHEDULER
        return (
            name == self.settings.scheduler_name
            and not pod.spec.get("nodeName")
            and pod.metadata.deletion_timestamp is None
            and not is_terminal(pod)
        )

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        key = object_key(pod.metadata)
        node = pod.spec.get("nodeName")
        if event.type == "DELETED" or is_terminal(pod) or node:
            self._nominated.pop(key, None)
            self._victims.pop(key, None)
        if event.type == "DELETED" or is_terminal(pod):
            self._unschedulable.pop(key, None)
            self._assumed.discard(key)
            self._counters.attempts.pop(key, None)
            if self._unaccount(key):
                self._flush_unschedulable()  # room was freed
            return
        if node:
            self._assumed.discard(key)
            self._unschedulable.pop(key, None)
            self._counters.attempts.pop(key, None)
            self._account(key, node, pod_requests(pod.spec), _priority_of(pod))
            return
        if key in self._assumed or not self._ours(pod):
            return
        spec = self._unschedulable.get(key)
        if spec is not None:
            if spec == pod.spec and event.type == "MODIFIED":
                return  # e.g. our own status write: nothing that changes the verdict
            del self._unschedulable[key]
        await self.queue.add(key)

    async def _on_node(self, event: WatchEvent[KObject]) -> None:
        name = event.obj.metadata.name
        if event.type == "DELETED":
            if self._node_info.pop(name, None) is not None:
                self._order_dirty = True
            return
        info = _Node.of(event.obj)
        old = self._node_info.get(name)
        self._node_info[name] = info
        if old is None:
            self._order_dirty = True
        if old != info:
            self._flush_unschedulable()

    def _flush_unschedulable(self) -> None:
        """Move every unschedulable pod back to the active queue (``MoveAllToActiveQueue``)."""
        for key in list(self._unschedulable):
            if not self.queue.add_nowait(key):
                break  # the queue is full; the periodic retry picks up the rest
            del self._unschedulable[key]

    # -- deciding ---------------------------------------------------------------------------

    def _feasible_wanted(self, total: int) -> int:
        if total < MIN_FEASIBLE_NODES:
            return total
        pct = self.settings.percentage_of_nodes_to_score
        if pct == 0:
            pct = max(MIN_FEASIBLE_PERCENTAGE, 50 - total // 125)
        return max(MIN_FEASIBLE_NODES, total * pct // 100)

    def _decide(self, pod: KObject) -> tuple[str | None, str]:
        """The chosen node, or None and the unschedulable message."""
        if self._order_dirty:
            self._node_order = sorted(self._node_info)
            self._order_dirty = False
        order = self._node_order
        total = len(order)
        if total == 0:
            return None, unschedulable_message(0, {})
        info = _pod_info(pod)
        priority = _priority_of(pod)
        key = object_key(pod.metadata)
        nominated = self._nominated_usage(key, priority)
        named = _named_nodes(info)
        if named is not None:
            chosen = self._decide_among(
                info, sorted(n for n in named if n in self._node_info), nominated
            )
            if chosen is not None:
                return chosen, ""
            # None fits: the full pass below words the message over every node.
        wanted = self._feasible_wanted(total)
        reasons: dict[str, int] = {}
        best: list[str] = []
        best_score = -1.0
        found = 0
        start = self._next_start % total
        empty = _Usage()
        processed = 0
        for i in range(total):
            name = order[(start + i) % total]
            processed += 1
            node = self._node_info[name]
            usage = nominated.get(name) or self._usage.get(name, empty)
            failed = _filter(info, node, usage)
            if failed:
                for reason in failed:
                    reasons[reason] = reasons.get(reason, 0) + 1
                continue
            found += 1
            score = _least_allocated(info, node, usage)
            if score > best_score:
                best_score, best = score, [name]
            elif score == best_score:
                best.append(name)
            if found >= wanted:
                break
        self._next_start = (start + processed) % total
        if not best:
            return None, unschedulable_message(total, reasons)
        return self._rng.choice(best), ""

    def _decide_among(
        self, info: _PodInfo, names: list[str], nominated: Mapping[str, _Usage]
    ) -> str | None:
        """The best of a few named nodes that fits, or None."""
        best: list[str] = []
        best_score = -1.0
        empty = _Usage()
        for name in names:
            node = self._node_info[name]
            usage = nominated.get(name) or self._usage.get(name, empty)
            if _filter(info, node, usage):
                continue
            score = _least_allocated(info, node, usage)
            if score > best_score:
                best_score, best = score, [name]
            elif score == best_score:
                best.append(name)
        return self._rng.choice(best) if best else None

    def _nominated_usage(self, key: str, priority: int) -> dict[str, _Usage]:
        """Per node, the usage with the pods nominated there that outrank or equal the pod
        (kube-scheduler's ``addNominatedPods``): their room is kept for them."""
        out: dict[str, _Usage] = {}
        for other, (node, other_priority, requests) in self._nominated.items():
            if other == key or other_priority < priority:
                continue
            usage = out.get(node)
            if usage is None:
                base = self._usage.get(node, _Usage())
                usage = out[node] = _Usage(
                    base.milli_cpu, base.memory, base.nonzero_milli_cpu, base.nonzero_memory,
                    base.pods,
                )  # fmt: skip
            usage.add(requests, +1)
        return out

    def _preempt(self, pod: KObject) -> tuple[_Preempt | None, str]:
        """Victims and a node for a pod that fits nowhere (``_preemption``), or None and the
        PostFilter's text for the message ("" when the pod may not preempt at all)."""
        if pod.spec.get("preemptionPolicy") == "Never":
            return None, ""
        key = object_key(pod.metadata)
        priority = _priority_of(pod)
        if any(v in self._bound for v in self._victims.get(key, ())):
            return None, ""  # its victims are still on their way out
        nominated_node = pod.status.get("nominatedNodeName")
        if nominated_node:
            for other in self._pods_on_node.get(nominated_node, ()):
                victim = self._pods.store.get(other)
                if (
                    victim is not None
                    and victim.metadata.deletion_timestamp is not None
                    and _priority_of(victim) < priority
                ):
                    return None, ""  # its earlier preemption is still under way
        info = _pod_info(pod)
        nominated = self._nominated_usage(key, priority)
        empty = _Usage()
        outranks = any(p < priority for p in self._priorities)
        budgets = self._budget_matchers() if outranks else []
        allowed = {key: allowed for key, _, _, _, allowed in budgets}
        candidates: dict[str, Candidate] = {}
        objects: dict[str, KObject] = {}
        not_helpful = 0
        for name in self._node_order:
            node = self._node_info[name]
            if [r for r in _filter(info, node, empty) if r not in RESOURCE_REASONS]:
                not_helpful += 1
                continue
            if not outranks:
                continue
            on_node: list[Victim] = []
            for other in self._pods_on_node.get(name, ()):
                victim = self._pods.store.get(other)
                if victim is None or other == key:
                    continue
                objects[other] = victim
                on_node.append(
                    Victim(
                        other, _priority_of(victim), _started(victim),
                        _budgets_of(victim, budgets),
                    )
                )  # fmt: skip
            base = nominated.get(name) or self._usage.get(name, empty)

            def fits_without(gone: frozenset[str], node: _Node = node, base: _Usage = base) -> bool:
                usage = _Usage(
                    base.milli_cpu, base.memory, base.nonzero_milli_cpu, base.nonzero_memory,
                    base.pods,
                )  # fmt: skip
                for other in gone:
                    usage.add(self._bound[other][1], -1)
                return not _filter(info, node, usage)

            found = select_victims(priority, on_node, fits_without, allowed)
            if found is not None:
                candidates[name] = found
        chosen = pick_node(candidates)
        if chosen is None:
            return None, no_victims_message(len(self._node_order), not_helpful)
        picked = tuple(objects[v.key] for v in candidates[chosen].victims)
        return _Preempt(pod, chosen, picked, ""), ""

    def _budget_matchers(self) -> list[_Budget]:
        """The PodDisruptionBudgets as preemption reads them (``getPodDisruptionBudgets``)."""
        out: list[_Budget] = []
        for key, pdb in self._budgets.store.items():
            raw = pdb.spec.get("selector")
            if not isinstance(raw, dict) or not (
                raw.get("matchLabels") or raw.get("matchExpressions")
            ):
                continue  # a nil or empty selector matches nothing here
            try:
                selector = label_selector_from_dict(raw)
            except InputError:
                continue  # an invalid selector matches nothing
            disrupted = frozenset((pdb.status.get("disruptedPods") or {}).keys())
            allowed = pdb.status.get("disruptionsAllowed")
            out.append(
                (key, pdb.metadata.namespace, selector, disrupted,
                 allowed if isinstance(allowed, int) else 0)
            )  # fmt: skip
        return out

    def _priority(self, key: str) -> int:
        """The pod's ``spec.priority`` (the Priority admission plugin's value): the queue
        hands out higher priorities first, as kube-scheduler's activeQ does."""
        pod = self._pods.store.get(key)
        value = pod.spec.get("priority") if pod is not None else None
        return value if isinstance(value, int) else 0

    async def _schedule_loop(self) -> None:
        await self._informers.wait_synced(self._pods, self._nodes, self._budgets)
        await self.queue.work(self._schedule)

    async def _schedule(self, key: str) -> None:
        pod = self._pods.store.get(key)
        if pod is None or not self._ours(pod) or key in self._assumed:
            return
        node, message = self._decide(pod)
        if node is None:
            self._counters.failed_attempts += 1
            self._unschedulable[key] = pod.spec
            preempt, why = self._preempt(pod) if self._node_order else (None, "")
            if preempt is not None:
                self._counters.preemptions += 1
                self._nominated[key] = (preempt.node, _priority_of(pod), pod_requests(pod.spec))
                self._victims[key] = frozenset(object_key(v.metadata) for v in preempt.victims)
                await self._jobs_send.send(_Preempt(pod, preempt.node, preempt.victims, message))
                return
            if why:
                message = f"{message} {why}"
            await self._jobs_send.send(
                _Unschedulable(pod, message, pod.status.get("nominatedNodeName"))
            )
            return
        self._assumed.add(key)
        self._account(key, node, pod_requests(pod.spec), _priority_of(pod))
        await self._jobs_send.send(_Bind(key, pod, node))

    # -- writing -------------------------------------------------------------------------------

    async def _binder(self) -> None:
        async for job in self._jobs_receive:
            if isinstance(job, _Bind):
                await self._bind(job)
                continue
            pod = job.preemptor if isinstance(job, _Preempt) else job.pod
            try:
                if isinstance(job, _Preempt):
                    await self._preempt_for(job)
                else:
                    await self._report_unschedulable(job)
            except Exception as exc:  # a report is advisory: never worth the process
                self._counters.errors += 1
                meta = pod.metadata
                log_failure("scheduler", f"reporting {meta.namespace}/{meta.name}", exc)

    async def _bind(self, job: _Bind) -> None:
        meta = job.pod.metadata
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": job.node},
        }
        try:
            await self._rest.create(PODS.path(meta.namespace, meta.name, "binding"), body)
        except Exception as exc:  # the apiserver's answer, or a bug: retried alike
            self._counters.bind_errors += 1
            if isinstance(exc, FleetError):
                log.info("binding %s to %s failed: %s", job.key, job.node, exc)
            else:
                self._counters.errors += 1
                log_failure("scheduler", f"binding {job.key} to {job.node}", exc)
            if job.key in self._assumed:
                self._assumed.discard(job.key)
                current = self._pods.store.get(job.key)
                if current is None or not current.spec.get("nodeName"):
                    self._unaccount(job.key)
            if isinstance(exc, NotFound):
                return
            attempts = self._counters.attempts.get(job.key, 0) + 1
            self._counters.attempts[job.key] = attempts
            delay = min(
                self.settings.backoff_max, self.settings.backoff_initial * 2 ** (attempts - 1)
            )
            self.queue.add_after(job.key, delay)
            return
        self._counters.scheduled += 1
        self._counters.attempts.pop(job.key, None)
        self._events.record(
            job.pod, PODS, "Normal", "Scheduled",
            f"Successfully assigned {meta.namespace}/{meta.name} to {job.node}", DEFAULT_SCHEDULER,
        )  # fmt: skip

    def _now(self) -> float:
        return self._wall()

    async def _preempt_for(self, job: _Preempt) -> None:
        """The preemptor's ``nominatedNodeName`` first, then its victims: kube-scheduler
        writes the status before the pod can be tried again, and the room the victims leave
        could otherwise see it bound before the status said where it was nominated. A pod
        that changed meanwhile preempts nothing; its next attempt decides again."""
        key = object_key(job.preemptor.metadata)
        if await self._report_unschedulable(_Unschedulable(job.preemptor, job.message, job.node)):
            await self._evict(job)
            return
        self._nominated.pop(key, None)
        self._victims.pop(key, None)
        self.queue.add_after(key, self.settings.backoff_initial)

    async def _evict(self, job: _Preempt) -> None:
        """Each victim as kube-scheduler's ``prepareCandidate`` treats it: the
        ``DisruptionTarget`` condition, a graceful delete, a ``Preempted`` event."""
        name = self.settings.scheduler_name
        for victim in job.victims:
            meta = victim.metadata
            path = PODS.path(meta.namespace, meta.name)
            conds = [
                dict(c)
                for c in victim.status.get("conditions") or ()
                if c.get("type") != "DisruptionTarget"
            ]
            conds.append({
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": f"{name}: preempting to accommodate a higher priority pod",
                "lastProbeTime": None, "lastTransitionTime": rfc3339(self._now()),
            })  # fmt: skip
            try:
                await self._rest.merge_patch(path + "/status", {"status": {"conditions": conds}})
                await self._rest.delete(path, preconditions_uid=meta.uid)
            except NotFound:
                continue  # gone already: room made all the same
            except FleetError as exc:
                log.info("cannot preempt %s/%s: %s", meta.namespace, meta.name, exc)
                continue
            self._events.record(
                victim, PODS, "Normal", "Preempted",
                f"Preempted by pod {job.preemptor.metadata.uid} on node {job.node}", name,
            )  # fmt: skip

    async def _report_unschedulable(self, job: _Unschedulable) -> bool:
        """Write ``PodScheduled=False`` (and ``nominatedNodeName``) and the event; False when
        the pod moved on meanwhile (a conflict) and nothing was written."""
        pod = job.pod
        meta = pod.metadata
        current = condition(pod.status, "PodScheduled")
        now = rfc3339(self._now())
        if (
            current is not None
            and current.get("status") == "False"
            and current.get("reason") == "Unschedulable"
            and current.get("message") == job.message
            and pod.status.get("nominatedNodeName") == job.nominated
        ):
            return True  # said already: no status write, no second event
        conds = [
            dict(c) for c in pod.status.get("conditions") or () if c.get("type") != "PodScheduled"
        ]
        transition = (
            current.get("lastTransitionTime")
            if current is not None and current.get("status") == "False"
            else now
        )
        conds.append({
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": job.message, "lastProbeTime": None, "lastTransitionTime": transition,
        })  # fmt: skip
        patch = {
            "metadata": {"resourceVersion": meta.resource_version},
            "status": {"conditions": conds, "nominatedNodeName": job.nominated},
        }
        try:
            await self._rest.merge_patch(PODS.path(meta.namespace, meta.name, "status"), patch)
        except (Conflict, NotFound):
            return False  # the pod moved on; its next attempt will tell
        except FleetError as exc:
            log.info("cannot mark %s/%s unschedulable: %s", meta.namespace, meta.name, exc)
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.name}.{int(self._now() * 1e9):x}", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "namespace": meta.namespace, "name": meta.name,
                "uid": meta.uid, "resourceVersion": meta.resource_version,
            },
            "reason": "FailedScheduling",
            "message": job.message,
            "type": "Warning",
            "source": {"component": DEFAULT_SCHEDULER},
            "reportingComponent": DEFAULT_SCHEDULER,
            "reportingInstance": DEFAULT_SCHEDULER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }  # fmt: skip
        try:
            await self._rest.create(EVENTS.path(meta.namespace), event)
        except ApiError as exc:
            log.debug("event for %s/%s not recorded: %s", meta.namespace, meta.name, exc)
        except FleetError as exc:
            log.info("event for %s/%s not recorded: %s", meta.namespace, meta.name, exc)
        return True

    async def _retry_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.retry_interval)
            try:
                self._flush_unschedulable()
            except Exception as exc:  # the next round tries again
                self._counters.errors += 1
                log_failure("scheduler", "retrying unschedulable pods", exc)

    # -- running --------------------------------------------------------------------------------

    def statistics(self) -> SchedulerStatistics:
        return SchedulerStatistics(
            pending=len(self.queue),
            unschedulable=len(self._unschedulable),
            assumed=len(self._assumed),
            scheduled=self._counters.scheduled,
            failed_attempts=self._counters.failed_attempts,
            bind_errors=self._counters.bind_errors,
            errors=self._counters.errors + self.queue.statistics().failures,
            preemptions=self._counters.preemptions,
        )

    def node_usage(self, node: str) -> tuple[int, int, int]:
        """(milli-cpu, memory, pods) requested on ``node`` by the pods the cache holds."""
        usage = self._usage.get(node, _Usage())
        return usage.milli_cpu, usage.memory, usage.pods

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Schedule until cancelled (the informers run beside it, in :class:`Informers`)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            nursery.start_soon(self._retry_loop)
            for _ in range(self.settings.binders):
                nursery.start_soon(self._binder)
            nursery.start_soon(self._schedule_loop)
            task_status.started()
