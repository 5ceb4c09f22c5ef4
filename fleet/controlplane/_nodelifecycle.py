"""Node lifecycle: unreachable nodes get Ready=Unknown and taints; their pods are evicted.

As kube-controller-manager's ``nodelifecycle`` controller (with taint-based
eviction): a node's heartbeat is its Lease (``kube-node-lease/<node>``,
``spec.renewTime``) or its Ready condition's ``lastHeartbeatTime``. What
counts is when a *change* of either was *observed*, on this controller's own
clock, never the timestamps' values (the kubelet's clock is not ours). A node
first seen counts as just heard from.

Every ``monitor_period``: a node not heard from for ``grace_period`` gets its
Ready, MemoryPressure, DiskPressure and PIDPressure conditions set to
``Unknown`` (reason ``NodeStatusUnknown``, "Kubelet stopped posting node
status.") and the ``node.kubernetes.io/unreachable`` NoSchedule taint, and the
NoExecute one as kube-controller-manager's tainting queue lets it: one node
every 1/``eviction_rate`` seconds (0.1/s: 10 s) per zone, longest silent first;
in a partially disrupted zone (more than 2 and at least 55 % of its nodes not
Ready) ``secondary_eviction_rate`` if it has more than 50 nodes, else none;
while every zone has no Ready node ("master disruption") none, and those there
are taken off. A partition of 200 nodes of 1,000 so taints a few of them within
the grace period plus its length, not all 200. Once the NoExecute taint has been there for a pod's
``tolerationSeconds`` (the smallest of its matching tolerations; a pod with
no matching toleration gets ``default_toleration_seconds``, what the
DefaultTolerationSeconds admission plugin gives every pod; one tolerating
without a limit stays), the pod is deleted. A node heard from again loses
the taints once its Ready condition is True again (not while it is still
Unknown: its kubelet sets Ready itself, as a real one does).

A Ready node also loses the ``node.kubernetes.io/not-ready`` NoSchedule taint
a real kube-apiserver's TaintNodesByCondition admission gives every new Node
(kube-controller-manager's NoSchedule tainting pass does the same): without
that, nothing could be scheduled on a real apiserver that has no
kube-controller-manager (envtest's binaries, ``up --control-plane real``).

While a node's Ready is not True, its pods' Ready condition is set to False
(``MarkPodsNotReady``), each with a ``NodeNotReady`` Warning event "Node is
not ready"; the node gets a ``NodeNotReady`` event "Node <name> status is
now: NodeNotReady" when it turns Unknown. Each node this controller starts
monitoring gets a ``RegisteredNode`` event ("Node <name> event: Registered Node
<name> in Controller"), as kube-controller-manager's gives it.
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
from fleet.controlplane._guard import log_failure
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._podutil import tolerates
from fleet.controlplane._resources import LEASES, NODES, PODS, KObject, condition, rfc3339
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = ["NodeLifecycleController", "NodeLifecycleSettings"]

log = logging.getLogger(__name__)

TAINT_UNREACHABLE = "node.kubernetes.io/unreachable"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
_WATCHED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
_NO_EXECUTE = {"key": TAINT_UNREACHABLE, "effect": "NoExecute"}


CONTROLLER = "node-controller"
"""The events' source component, as kube-controller-manager names it."""


ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"


def _zone(node: KObject) -> str:
    """The node's zone key, as kube-controller-manager's (region and zone; "" for neither)."""
    labels = node.metadata.labels or {}
    region, zone = labels.get(REGION_LABEL, ""), labels.get(ZONE_LABEL, "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def _ready(node: KObject) -> str | None:
    cond = condition(node.status, "Ready")
    return None if cond is None else str(cond.get("status"))


@dataclass(frozen=True, slots=True)
class NodeLifecycleSettings:
    """Timings of the node lifecycle controller; defaults are kube-controller-manager's."""

    grace_period: float = 40.0
    """Seconds without an observed heartbeat before a node is Unknown
    (``--node-monitor-grace-period``; a kubelet renews its Lease every 10 s)."""
    monitor_period: float = 5.0
    """Seconds between checks (``--node-monitor-period``): the precision of the above."""
    default_toleration_seconds: float = 300.0
    """Eviction delay of a pod with no toleration for the unreachable taint
    (``--default-unreachable-toleration-seconds``)."""
    lease_namespace: str = "kube-node-lease"
    eviction_rate: float = 0.1
    """Nodes a second that get the NoExecute taint in a healthy zone (``--node-eviction-rate``;
    a token bucket of burst 1, as kube-controller-manager's tainting queue)."""
    secondary_eviction_rate: float = 0.01
    """The same in a partially disrupted zone of more than ``large_cluster_size_threshold``
    nodes (``--secondary-node-eviction-rate``); a smaller such zone taints none."""
    large_cluster_size_threshold: int = 50
    """``--large-cluster-size-threshold``."""
    unhealthy_zone_threshold: float = 0.55
    """Share of a zone's nodes not Ready (and more than 2) that makes it partially disrupted
    (``--unhealthy-zone-threshold``)."""

    def __post_init__(self) -> None:
        if self.grace_period <= 0 or self.monitor_period <= 0:
            raise ConfigError("node lifecycle: grace_period and monitor_period must be > 0")
        if self.default_toleration_seconds < 0:
            raise ConfigError("node lifecycle: default_toleration_seconds must be >= 0")
        if self.eviction_rate < 0 or self.secondary_eviction_rate < 0:
            raise ConfigError("node lifecycle: eviction rates must be >= 0")
        if not 0 < self.unhealthy_zone_threshold <= 1:
            raise ConfigError("node lifecycle: unhealthy_zone_threshold must be in (0, 1]")


def eviction_delay(tolerations: list[Mapping[str, Any]], default: float) -> float | None:
    """Seconds a pod may stay on an unreachable node; None: forever."""
    matching = [t for t in tolerations if tolerates(t, _NO_EXECUTE)]
    if not matching:
        return default
    limits = [
        float(t["tolerationSeconds"]) for t in matching if t.get("tolerationSeconds") is not None
    ]
    if not limits:
        return None
    return max(0.0, min(limits))


class NodeLifecycleController:
    """Watches heartbeats, marks silent nodes, evicts their pods; an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: NodeLifecycleSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else NodeLifecycleSettings()
        self._rest = rest
        self._clock = clock
        self._wall = wall_clock
        self._informers = informers
        self._nodes: Informer[KObject] = informers.get(NODES)
        self._leases: Informer[KObject] = informers.get(LEASES, s.lease_namespace)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._nodes.subscribe(self._on_node)
        self._leases.subscribe(self._on_lease)
        self._pods.subscribe(self._on_pod)
        self._heard: dict[str, tuple[object, object, float]] = {}
        """Node -> (lease token, node heartbeat token, when a change was last observed)."""
        self._tainted_since: dict[str, float] = {}
        self._buckets: dict[str, tuple[float, float]] = {}
        """Zone -> (NoExecute-taint tokens, when last refilled): the tainting rate limit."""
        self._on_node_pods: dict[str, set[str]] = defaultdict(set)
        self._evicted: set[str] = set()
        self.evictions = 0
        self.errors = 0
        """Failed monitoring rounds survived (each logged; the next round retries)."""

    def _note(self, node: str, *, lease: object = None, beat: object = None) -> None:
        old = self._heard.get(node)
        now = self._clock()
        if old is None:
            self._heard[node] = (lease, beat, now)
            return
        new_lease = lease if lease is not None else old[0]
        new_beat = beat if beat is not None else old[1]
        if (new_lease, new_beat) != (old[0], old[1]):
            self._heard[node] = (new_lease, new_beat, now)

    async def _on_lease(self, event: WatchEvent[KObject]) -> None:
        await trio.lowlevel.checkpoint()
        if event.type == "DELETED":
            return
        spec = event.obj.spec
        self._note(
            event.obj.metadata.name,
            lease=spec.get("renewTime") or event.obj.metadata.resource_version,
        )

    async def _on_node(self, event: WatchEvent[KObject]) -> None:
        await trio.lowlevel.checkpoint()
        name = event.obj.metadata.name
        if event.type == "DELETED":
            self._heard.pop(name, None)
            self._tainted_since.pop(name, None)
            return
        if name not in self._heard:
            # What kube-controller-manager says of each node it starts monitoring.
            self._events.record(
                event.obj, NODES, "Normal", "RegisteredNode",
                f"Node {name} event: Registered Node {name} in Controller", CONTROLLER,
            )  # fmt: skip
        ready = condition(event.obj.status, "Ready")
        beat = ready.get("lastHeartbeatTime") if ready is not None else None
        self._note(name, beat=beat if beat is not None else "")

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        await trio.lowlevel.checkpoint()
        key = object_key(event.obj.metadata)
        node = event.obj.spec.get("nodeName")
        if event.type == "DELETED":
            self._evicted.discard(key)
            if node:
                self._on_node_pods[node].discard(key)
        elif node:
            self._on_node_pods[node].add(key)

    # -- the monitor pass ---------------------------------------------------------------------------

    def _zone_rates(self, nodes: list[KObject], now: float) -> tuple[dict[str, float], bool]:
        """Each zone's NoExecute-tainting rate from its state, as kube-controller-manager's
        ``ComputeZoneState``: no Ready node, fully disrupted (when every zone is, nothing is
        tainted: "master disruption"; else the healthy rate); more than 2 and at least
        ``unhealthy_zone_threshold`` of them not Ready, partially disrupted (the secondary
        rate in a large zone, none in a small one); else healthy. True with them: every
        zone is fully disrupted."""
        s = self.settings
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # zone -> [ready, not]
        for node in nodes:
            heard = self._heard.get(node.metadata.name)
            silent = heard is not None and now - heard[2] > s.grace_period
            is_ready = _ready(node) == "True" and not silent
            counts[_zone(node)][0 if is_ready else 1] += 1
        full = {zone for zone, (ready, down) in counts.items() if ready == 0 and down > 0}
        if counts and len(full) == len(counts):
            return dict.fromkeys(counts, 0.0), True
        rates: dict[str, float] = {}
        for zone, (ready, down) in counts.items():
            if (
                zone not in full
                and down > 2
                and down / (ready + down) >= s.unhealthy_zone_threshold
            ):
                size = ready + down
                rates[zone] = (
                    s.secondary_eviction_rate if size > s.large_cluster_size_threshold else 0.0
                )
            else:
                rates[zone] = s.eviction_rate
        return rates, False

    def _has_token(self, zone: str, rate: float, now: float) -> bool:
        """Whether ``zone``'s bucket (burst 1, ``rate``/s) allows one NoExecute taint now;
        :meth:`_spend_token` once it is written (a write that failed spends none)."""
        tokens, since = self._buckets.get(zone, (1.0, now))
        tokens = min(1.0, tokens + rate * (now - since))
        self._buckets[zone] = (tokens, now)
        return tokens >= 1.0

    def _spend_token(self, zone: str) -> None:
        tokens, since = self._buckets[zone]
        self._buckets[zone] = (tokens - 1.0, since)

    async def monitor_once(self) -> None:
        """One pass over every node (what runs every ``monitor_period``)."""
        now = self._clock()
        nodes = list(self._nodes.store.values())
        rates, master_disruption = self._zone_rates(nodes, now)
        # The tainting queue is first come, first served: the longest silent first.
        nodes.sort(key=lambda n: self._heard.get(n.metadata.name, (None, None, now))[2])
        for node in nodes:
            name = node.metadata.name
            heard = self._heard.get(name)
            if heard is None:
                self._note(name)
                continue
            taints = [
                t
                for t in node.spec.get("taints") or ()
                if isinstance(t, dict) or isinstance(t, Mapping)
            ]
            ready = _ready(node)
            ours = [t for t in taints if t.get("key") == TAINT_UNREACHABLE]
            effects = {t.get("effect") for t in ours}
            if now - heard[2] > self.settings.grace_period:
                version = await self._mark_unknown(node)
                rate = rates.get(_zone(node), 0.0)
                # NoSchedule at once; NoExecute (what evicts) as the zone's rate allows,
                # and taken off again while every zone is fully disrupted.
                want = {"NoSchedule"}
                adding = "NoExecute" not in effects and rate > 0
                if "NoExecute" in effects and not master_disruption:
                    want.add("NoExecute")
                elif adding and self._has_token(_zone(node), rate, now):
                    want.add("NoExecute")
                if effects != want:
                    kept = {t.get("effect"): t for t in ours if t.get("effect") in want}
                    written = await self._set_taints(
                        node,
                        version,
                        [t for t in taints if t.get("key") != TAINT_UNREACHABLE]
                        + [
                            kept.get(effect)
                            or {
                                "key": TAINT_UNREACHABLE,
                                "effect": effect,
                                "timeAdded": rfc3339(self._wall()),
                            }
                            for effect in ("NoSchedule", "NoExecute")
                            if effect in want
                        ],
                    )
                    if written and adding and "NoExecute" in want:
                        self._spend_token(_zone(node))
                    ours = [t for t in ours if t.get("effect") in want]
            elif ready == "True":
                stale = [
                    t
                    for t in taints
                    if t.get("key") == TAINT_UNREACHABLE
                    or (t.get("key") == TAINT_NOT_READY and t.get("effect") == "NoSchedule")
                ]
                if stale:
                    await self._set_taints(node, None, [t for t in taints if t not in stale])
            if ready not in ("True", None) or now - heard[2] > self.settings.grace_period:
                await self._mark_pods_not_ready(name)
            if any(t.get("effect") == "NoExecute" for t in ours):
                since = self._tainted_since.setdefault(name, now)
                await self._evict(name, now - since)
            else:
                self._tainted_since.pop(name, None)

    async def _mark_unknown(self, node: KObject) -> str:
        """The node's resourceVersion after (its own when nothing was written): the taint
        write that follows is conditional on it (the one read before would conflict)."""
        conds = [dict(c) for c in node.status.get("conditions") or () if isinstance(c, Mapping)]
        now = rfc3339(self._wall())
        changed = False
        present = {c.get("type") for c in conds}
        for cond in conds:
            if cond.get("type") in _WATCHED_CONDITIONS and cond.get("status") != "Unknown":
                cond.update(
                    status="Unknown",
                    reason="NodeStatusUnknown",
                    message="Kubelet stopped posting node status.",
                    lastTransitionTime=now,
                )
                changed = True
        if "Ready" not in present:
            conds.append(
                {
                    "type": "Ready",
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": None,
                    "lastTransitionTime": now,
                }
            )
            changed = True
        if not changed:
            return node.metadata.resource_version
        patch = {
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "status": {"conditions": conds},
        }
        try:
            written = await self._rest.merge_patch(
                NODES.path(name=node.metadata.name, subresource="status"), patch
            )
            self._events.record(
                node, NODES, "Normal", "NodeNotReady",
                f"Node {node.metadata.name} status is now: NodeNotReady", CONTROLLER,
            )  # fmt: skip
            log.info(
                "node %s: not heard from for %s s, Ready=Unknown",
                node.metadata.name,
                self.settings.grace_period,
            )
        except FleetError as exc:
            log.info(
                "node %s: cannot set Ready=Unknown (%s); next pass retries", node.metadata.name, exc
            )
            return node.metadata.resource_version
        version = (written.get("metadata") or {}).get("resourceVersion")
        return str(version) if version else node.metadata.resource_version

    async def _mark_pods_not_ready(self, node: str) -> None:
        """``MarkPodsNotReady``: Ready=False on the node's pods that still say True."""
        store = self._pods.store
        now = rfc3339(self._wall())
        for key in list(self._on_node_pods.get(node, ())):
            pod = store.get(key)
            if pod is None or pod.spec.get("nodeName") != node:
                continue
            ready = condition(pod.status, "Ready")
            if ready is None or ready.get("status") != "True":
                continue
            conds = [dict(c) for c in pod.status.get("conditions") or ()]
            for cond in conds:
                if cond.get("type") == "Ready":
                    cond.update(status="False", lastTransitionTime=now)
            patch = {
                "metadata": {"resourceVersion": pod.metadata.resource_version},
                "status": {"conditions": conds},
            }
            try:
                await self._rest.merge_patch(
                    PODS.path(pod.metadata.namespace, pod.metadata.name, "status"), patch
                )
            except FleetError as exc:
                log.info("marking %s not ready failed (%s); next pass retries", key, exc)
                continue
            self._events.record(
                pod, PODS, "Warning", "NodeNotReady", "Node is not ready", CONTROLLER
            )

    async def _set_taints(
        self, node: KObject, version: str | None, taints: list[Mapping[str, Any]]
    ) -> bool:
        """Conditional on ``version`` (None: the node's as read). False: not written (the
        next pass retries)."""
        patch = {
            "metadata": {"resourceVersion": version or node.metadata.resource_version},
            "spec": {"taints": taints or None},
        }
        try:
            await self._rest.merge_patch(NODES.path(name=node.metadata.name), patch)
        except FleetError as exc:
            log.info(
                "node %s: cannot update taints (%s); next pass retries", node.metadata.name, exc
            )
            return False
        return True

    async def _evict(self, node: str, tainted_for: float) -> None:
        store = self._pods.store
        for key in list(self._on_node_pods.get(node, ())):
            pod = store.get(key)
            if pod is None or pod.metadata.deletion_timestamp is not None or key in self._evicted:
                continue
            if pod.spec.get("nodeName") != node:
                continue
            tolerations = [t for t in pod.spec.get("tolerations") or () if isinstance(t, Mapping)]
            delay = eviction_delay(tolerations, self.settings.default_toleration_seconds)
            if delay is None or tainted_for < delay:
                continue
            try:
                await self._rest.delete(
                    PODS.path(pod.metadata.namespace, pod.metadata.name),
                    preconditions_uid=pod.metadata.uid,
                )
            except NotFound:
                pass
            except FleetError as exc:
                log.info("evicting %s failed (%s); next pass retries", key, exc)
                continue
            self._evicted.add(key)
            self.evictions += 1
            log.info("evicted %s from unreachable node %s", key, node)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Monitor until cancelled; reports started at once, works once the informers synced."""
        task_status.started()
        await self._informers.wait_synced(self._nodes, self._leases, self._pods)
        while True:
            try:
                await self.monitor_once()
            except Exception as exc:  # the next round tries again
                self.errors += 1
                log_failure("nodelifecycle", "monitoring nodes", exc)
            await trio.sleep(self.settings.monitor_period)
