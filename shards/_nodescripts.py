"""Node scripts: which NodeScript a fake node follows, and what it makes the node do when.

A NodeScript (fleet.api ``NodeScript``) applies to a Node CR annotated
``zhizuqiu.github.com/nodeScript: <name>`` (in the CR's namespace; it wins), or
else to the CRs its ``spec.selector`` matches (the CR's namespace and
annotations, the v1.Node's labels), highest ``spec.priority`` first, ties by
``namespace/name``, and within it to ``spec.percent`` of them (drawn from the
node's name, as every per-node draw here: the same on every shard, after every
restart, in every replay). A node not drawn falls through to the next script.

Its steps count from the NodeScript's creationTimestamp (plus a per-node
jitter); each is the node's whole scripted state from its offset on, a
:class:`NodeOverlay`: conditions reported instead of the healthy ones, taints
added, capacity changed, the Lease paused (a NotReady window, or a flap on a
period), and a kubelet restart at the step's start. The node driver
(``_kubelets``) asks :meth:`NodeTimeline.state_at` when the node's one
``node-script`` timer fires and arms it for the next change: arithmetic, never
a task per node. A restart step found more than :data:`RESTART_WITHIN` past
its start (a shard restart, a script matched late) is not replayed.

:class:`NodeScriptLibrary` keeps every NodeScript through one watch over all
namespaces, compiles each once per spec (both
:class:`~shards._library.WatchedLibrary`'s, shared with the MockStatuses), and
tells the node driver when the set changes (one re-match pass, coalesced); an
invalid one matches nothing and is reported (shard 0: condition Valid False,
reason InvalidNodeScript, and a Warning Event, ``_scriptreport``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from fleet.api import (
    NodeScript,
    NodeScriptStep,
    PodSelector,
    load_node_script,
    parse_go_duration,
)
from fleet.errors import InputError
from fleet.kube import ObjectMeta, Requester, WatchEvent
from fleet.wire import NODESCRIPT_PLURAL
from shards._library import MockStatusView, Report, ScriptError, WatchedLibrary
from shards._nodeobj import Taint
from shards._policies import PodFacts, Policy, compile_policy, jittered_offsets, unit_draw

__all__ = [
    "ANNOTATION_NODE_SCRIPT",
    "INVALID_NODE_SCRIPT",
    "NO_OVERLAY",
    "RESTART_WITHIN",
    "NodeOverlay",
    "NodeScriptLibrary",
    "NodeTimeline",
    "compile_node_script",
    "condition_wording",
    "transition_event",
]

ANNOTATION_NODE_SCRIPT = "zhizuqiu.github.com/nodeScript"
"""On a Node CR: the NodeScript (same namespace) it follows, whatever the selectors say."""
INVALID_NODE_SCRIPT = "InvalidNodeScript"
"""Reason of condition Valid=False and of the Warning Event on an invalid NodeScript."""
RESTART_WITHIN = 60.0
"""Seconds after a kubeletRestart step's start within which the restart is still done when
the node is first evaluated in it; later it is not replayed."""

# type -> status -> (reason, message): the kubelet's setters' wording (and the route
# controller's for NetworkUnavailable).
_WORDING: Mapping[str, Mapping[str, tuple[str, str]]] = {
    "MemoryPressure": {
        "True": ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
        "False": ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    },
    "DiskPressure": {
        "True": ("KubeletHasDiskPressure", "kubelet has disk pressure"),
        "False": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    },
    "PIDPressure": {
        "True": ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
        "False": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    },
    "NetworkUnavailable": {
        "True": ("NoRouteCreated", "Node created without a route"),
        "False": ("RouteCreated", "RouteController created a route"),
    },
    "Ready": {
        "True": ("KubeletReady", "kubelet is posting ready status"),
        "False": ("KubeletNotReady", "container runtime is down (kubemock-fleet NodeScript)"),
    },
}
_EVENTS: Mapping[str, Mapping[str, str]] = {
    "MemoryPressure": {"True": "NodeHasInsufficientMemory", "False": "NodeHasSufficientMemory"},
    "DiskPressure": {"True": "NodeHasDiskPressure", "False": "NodeHasNoDiskPressure"},
    "PIDPressure": {"True": "NodeHasInsufficientPID", "False": "NodeHasSufficientPID"},
    "Ready": {"True": "NodeReady", "False": "NodeNotReady"},
}
"""The kubelet's Event on a transition of its condition to a status (none for
NetworkUnavailable, which the kubelet does not own)."""


def condition_wording(kind: str, status: str) -> tuple[str, str]:
    """(reason, message) the kubelet writes for condition ``kind`` at ``status``."""
    return _WORDING.get(kind, {}).get(status, ("KubeletStatusUnknown", "Kubelet stopped posting"))


def transition_event(kind: str, status: str) -> str | None:
    """The Event reason the kubelet posts when ``kind`` turns ``status``; None: none."""
    return _EVENTS.get(kind, {}).get(status)


@dataclass(frozen=True, slots=True)
class NodeOverlay:
    """What a node script makes of a node at one moment (empty: the node as its CR says)."""

    conditions: tuple[tuple[str, str, str, str], ...] = ()
    """(type, status, reason, message) reported instead of the kubelet's own."""
    taints: tuple[Taint, ...] = ()
    capacity: tuple[tuple[str, str], ...] = ()
    paused: bool = False
    """The kubelet renews no Lease and reports no status now."""
    restart: tuple[str, int] | None = None
    """A kubelet restart at the start of step (script key, index), due once."""
    restart_at: float = 0.0
    """Offset of that step's start, from the script's creation."""


NO_OVERLAY = NodeOverlay()


@dataclass(frozen=True, slots=True)
class _Step:
    after: float
    jitter: float
    overlay: NodeOverlay
    paused: bool
    flap: tuple[float, float] | None
    """(period, paused for)."""
    restart: bool


def _compile_step(step: NodeScriptStep) -> _Step:
    conditions = []
    for c in step.conditions:
        reason, message = condition_wording(c.type, c.status)
        conditions.append((c.type, c.status, c.reason or reason, c.message or message))
    taints = tuple(Taint(t.key, t.effect, t.value or "") for t in step.taints)
    flap = None
    if step.flap is not None:
        flap = (
            parse_go_duration(step.flap.period) / 1e9,
            parse_go_duration(step.flap.paused_for) / 1e9,
        )
    return _Step(
        after=step.after_seconds(),
        jitter=step.jitter_seconds(),
        overlay=NodeOverlay(
            conditions=tuple(conditions),
            taints=taints,
            capacity=tuple(sorted((step.capacity or {}).items())),
        ),
        paused=step.lease == "Paused",
        flap=flap,
        restart=step.kubelet_restart,
    )


@dataclass(frozen=True, slots=True)
class NodeTimeline:
    """A compiled NodeScript; see the module docstring."""

    key: str
    """``namespace/name``."""
    created: datetime
    steps: tuple[_Step, ...]
    percent: int = 100
    policy: Policy | None = None

    def applies(self, node: str) -> bool:
        """Whether ``node`` is in the script's ``percent`` (drawn from its name)."""
        return self.percent >= 100 or unit_draw(node, f"{self.key}/percent") * 100 < self.percent

    def _offsets(self, node: str) -> list[float]:
        return jittered_offsets(
            [(step.after, step.jitter) for step in self.steps],
            lambda index: unit_draw(node, f"{self.key}/step/{index}"),
        )

    def state_at(self, node: str, now: datetime) -> tuple[NodeOverlay, float | None]:
        """The node's overlay at ``now`` and the seconds until it next changes (None: never)."""
        elapsed = (now - self.created).total_seconds()
        offsets = self._offsets(node)
        index = -1
        for i, at in enumerate(offsets):
            if at <= elapsed:
                index = i
        following = offsets[index + 1] if index + 1 < len(offsets) else None
        if index < 0:
            return NO_OVERLAY, None if following is None else following - elapsed
        step = self.steps[index]
        start = offsets[index]
        paused = step.paused
        if step.flap is not None:
            period, paused_for = step.flap
            into = (elapsed - start) % period
            cycle_start = elapsed - into
            flip = period - paused_for
            paused = into >= flip
            change = cycle_start + (period if paused else flip)
            following = change if following is None else min(following, change)
        overlay = step.overlay
        if paused or step.restart:
            overlay = NodeOverlay(
                overlay.conditions,
                overlay.taints,
                overlay.capacity,
                paused=paused,
                restart=(self.key, index) if step.restart else None,
                restart_at=start,
            )
        return overlay, None if following is None else max(0.0, following - elapsed)


def compile_node_script(script: NodeScript, created: datetime) -> NodeTimeline:
    """A validated NodeScript as a :class:`NodeTimeline`; InputError for a bad selector."""
    spec = script.spec
    meta = script.metadata
    namespace, name = meta.namespace or "", meta.name
    policy = None
    if spec.selector is not None:
        selector = PodSelector.model_validate(
            spec.selector.model_dump(by_alias=True, exclude_none=True)
        )
        policy = compile_policy(namespace, name, selector, spec.priority)
    return NodeTimeline(
        key=f"{namespace}/{name}",
        created=created,
        steps=tuple(_compile_step(step) for step in spec.steps),
        percent=spec.percent,
        policy=policy,
    )


class NodeScriptLibrary(WatchedLibrary[NodeTimeline]):
    """Every NodeScript in the cluster, compiled once per spec; see the module docstring."""

    kind = "NodeScript"
    invalid_reason = INVALID_NODE_SCRIPT
    meanwhile = "nodes follow none meanwhile"

    def __init__(
        self,
        requester: Requester,
        *,
        on_change: Callable[[], None] | None = None,
        on_report: Report | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        """``on_change``: the set of scripts or one's spec changed (the node driver re-matches);
        ``on_report``: awaited with each one listed or changed and why it does not validate."""
        super().__init__(requester, NODESCRIPT_PLURAL, on_report=on_report, clock=clock, rng=rng)
        self._on_change = on_change
        self._ordered: tuple[NodeTimeline, ...] = ()
        """The valid scripts with a selector, highest priority first."""

    def __len__(self) -> int:
        return len(self._compiled)

    # -- matching -----------------------------------------------------------------------------

    def match(
        self, namespace: str, node: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> NodeTimeline | ScriptError | None:
        """The script a node follows; a ScriptError when its annotation names a missing or
        invalid one (it then follows none); None: none."""
        named = annotations.get(ANNOTATION_NODE_SCRIPT)
        if named is not None:
            key = f"{namespace}/{named}"
            where = f"annotation {ANNOTATION_NODE_SCRIPT}={named!r}"
            found = self._compiled.get(key)
            if found is None:
                return ScriptError(f"{where}: no NodeScript {key}", "NodeScriptNotFound")
            if isinstance(found[1], ScriptError):
                return ScriptError(f"{where}: {found[1]}", INVALID_NODE_SCRIPT)
            return found[1]
        if not self._ordered:
            return None
        facts = PodFacts(namespace, labels, annotations, ())
        for timeline in self._ordered:
            policy = timeline.policy
            if policy is not None and policy.matches(facts) and timeline.applies(node):
                return timeline
        return None

    # -- watching -----------------------------------------------------------------------------

    def on_event(self, event: WatchEvent[MockStatusView]) -> ScriptError | None:
        """Keep the scripts in step with one event; why the script does not validate."""
        meta = event.obj.metadata
        key = f"{meta.namespace}/{meta.name}"
        if event.type == "DELETED":
            if self._compiled.pop(key, None) is not None:
                self._changed()
            return None
        result, fresh = self.compiled(key, event.obj)
        if fresh:
            self._changed()
        return result if isinstance(result, ScriptError) else None

    def _changed(self) -> None:
        valid = [
            result
            for _spec, result in self._compiled.values()
            if isinstance(result, NodeTimeline) and result.policy is not None
        ]
        self._ordered = tuple(
            sorted(valid, key=lambda t: t.policy.order() if t.policy else (0, t.key))
        )
        if self._on_change is not None:
            self._on_change()

    def build(self, document: dict[str, Any], meta: ObjectMeta) -> NodeTimeline:
        """A NodeScript document as its :class:`NodeTimeline`, its steps counted from the
        object's creationTimestamp."""
        script = load_node_script(document)
        created = meta.creation_timestamp
        if created is None:
            raise InputError("metadata.creationTimestamp: missing")
        return compile_node_script(script, created)
