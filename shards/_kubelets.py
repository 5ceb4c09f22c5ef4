"""The fake kubelets of one shard: Node CRs in, v1.Nodes, node Leases and CR status out.

:class:`NodeDriver` holds one :class:`NodeState` per Node CR the shard's
reflector hands it and does all the work in timer callbacks run by the
engine's fixed pool of workers (no task per node):

``sync``
    The reconcile of one CR, on every change of it (and after the fence
    reopens): validate it with the models (a bad one gets a Warning Event and
    a condition reason, the rest keep going), claim its node name (a second CR
    of one name in another namespace gets ``Registered=False NameConflict``
    and an Event, never the node), add the finalizer, GET the Node and POST it
    when missing (adopting an existing one as it stands: its addresses,
    podCIDRs and uid), bring its labels, taints and annotations in line with
    the CR (taints other controllers added stay), create or adopt its Lease,
    report status when it changed, write the CR status when it changed.
``lease``
    A Lease PUT through the write queue every 10 s with jitter (the body is
    the Lease as the last write returned it, so a concurrent writer gets a
    409, re-read and renewed); 404 re-creates it. Lateness against the due
    time and renewals that came after the Lease expired are counted.
``status``
    The node status PATCH every ``statusUpdatesInterval`` (5 min default), as
    the kubelet's nodeStatusReportFrequency; changes are reported at once by
    ``sync``.
``gone``
    A CR left the shard's watch: moved to another shard (nothing is deleted)
    or deleted without a finalizer (its Node and Lease are deleted).

A CR with a deletionTimestamp is cleaned up: Lease and Node deleted, then the
finalizer removed. ``suspend: true`` cancels the Lease and status timers;
``false`` renews at once. The pod driver learns which nodes are driven
through :meth:`NodeDriver.node_added`'s listener.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec
from prometheus_client import CollectorRegistry, Histogram

from fleet.api import MockNode, load_node
from fleet.errors import AlreadyExists, Conflict, FleetError, InputError, NotFound
from fleet.kube._paths import resource_path
from fleet.kube._seam import Response
from fleet.kube._transport import BatchRequest
from fleet.kube._watching import WatchEvent
from fleet.kube._writequeue import Write, WriteResult
from shards._context import FencedRequester, ShardContext
from shards._cr import (
    FINALIZER,
    NODE_CR_ANNOTATION,
    ConditionValue,
    CrView,
    cr_path,
    cr_raw,
    cr_status,
    kubelet_spec,
    status_differs,
    status_interval,
)
from shards._ipam import NodeAddressPool, PodIPPool, PoolExhausted, node_pod_cidr, subrange
from shards._leaselane import LeaseLane
from shards._nodeobj import (
    LEASE_NAMESPACE,
    KubeletSpec,
    Lease,
    decode_lease,
    encode_lease,
    lease_body,
    node_body,
    node_labels,
    node_status,
    node_status_patch,
    renew_lease,
    status_changed,
)
from shards._podstatus import encode_patch
from shards._timers import jitter, spread

__all__ = ["NodeDriver", "NodeListener", "NodeState"]

log = logging.getLogger(__name__)

_JSON = "application/json"
_MERGE = "application/merge-patch+json"
_STRATEGIC = "application/strategic-merge-patch+json"
_LATE_AFTER = 2.0
"""A Lease renewal later than this past its due time counts as late (the issue's figure)."""
READOPT_SPREAD = 1.0
"""Seconds over which the syncs of every CR are spread when the fence opens (at start,
and after a lost shard Lease came back): a burst of GETs, not one instant of them."""
RESYNC_DELAY = 1.0
"""Seconds before a sync that hit a conflict or an error runs again."""
LANE_LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_lane_lag: weakref.WeakKeyDictionary[CollectorRegistry, Histogram] = weakref.WeakKeyDictionary()


def lane_lag_histogram(registry: CollectorRegistry) -> Histogram:
    """``kubemock_fleet_lease_lane_seconds{stage}`` on ``registry`` (one per registry).

    ``stage="due_to_sent"``: a node Lease renewal's due time to its PUT written
    (the lane's backlog); ``stage="sent_to_answered"``: written to its answer read
    (the server, plus the shard's own delay in reading).
    """
    histogram = _lane_lag.get(registry)
    if histogram is None:
        histogram = _lane_lag[registry] = Histogram(
            "kubemock_fleet_lease_lane_seconds",
            "Node Lease renewals: due -> PUT written, written -> answer read.",
            ["stage"],
            buckets=LANE_LAG_BUCKETS,
            registry=registry,
        )
    return histogram

_decode_any = msgspec.json.Decoder(dict[str, Any]).decode


class NodeListener(Protocol):
    """Told when a node starts and stops being driven (the pod driver)."""

    def node_added(self, name: str, state: NodeState) -> None: ...

    def node_removed(self, name: str) -> None: ...


@dataclass(slots=True)
class NodeState:
    """One Node CR and the fake kubelet it describes."""

    key: str
    """``namespace/name`` of the CR."""
    cr: CrView
    name: str
    spec: KubeletSpec | None = None
    node_uid: str = ""
    lease: Lease | None = None
    status: dict[str, Any] = field(default_factory=dict)
    """The node status as the apiserver last returned it."""
    interval: float = 300.0
    pool: PodIPPool | None = None
    driving: bool = False
    """Registered, Lease renewing (not suspended, fence open)."""
    registered: bool = False
    lease_due: float = 0.0
    """Due time of the next renewal."""
    renewing_due: float = 0.0
    """Due time of the renewal being sent (lateness is measured against it)."""
    lease_ok: float | None = None
    missed_counted: bool = False
    problem: ConditionValue | None = None
    """Why the CR cannot be (fully) served: InvalidSpec, NameConflict, ..."""
    busy: bool = False
    again: bool = False

    @property
    def involved(self) -> dict[str, Any]:
        meta = self.cr.metadata
        return {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "namespace": meta.namespace,
            "name": meta.name,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        }


def _node_path(name: str | None = None, sub: str | None = None) -> str:
    return resource_path("", "v1", "nodes", name=name, subresource=sub)


def _lease_path(name: str | None = None) -> str:
    return resource_path(
        "coordination.k8s.io", "v1", "leases", namespace=LEASE_NAMESPACE, name=name
    )


class _CidrPool:
    """Per-node pod CIDRs carved from one range, reused after release."""

    def __init__(self, cluster: str, prefix: int) -> None:
        self._cluster = ipaddress.ip_network(cluster)
        self._prefix = prefix
        self._next = 0
        self._free: deque[int] = deque()
        self._used: dict[int, str] = {}
        self._by_node: dict[str, int] = {}

    def allocate(self, node: str) -> str:
        index = self._by_node.get(node)
        if index is None:
            index = self._take()
            self._used[index] = node
            self._by_node[node] = index
        return node_pod_cidr(str(self._cluster), index, self._prefix)

    def _take(self) -> int:
        while True:
            try:
                node_pod_cidr(str(self._cluster), self._next, self._prefix)
            except PoolExhausted:
                break
            index = self._next
            self._next += 1
            if index not in self._used:
                return index
        while self._free:
            index = self._free.popleft()
            if index not in self._used:
                return index
        raise PoolExhausted(f"no free /{self._prefix} left in {self._cluster}")

    def adopt(self, node: str, cidr: str) -> None:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return
        cluster = self._cluster
        if (
            network.version != cluster.version
            or network.prefixlen != self._prefix
            # subnet_of, for one version (checked above): both ends inside the cluster range
            or network.network_address not in cluster
            or network.broadcast_address not in cluster
        ):
            return
        index = (int(network.network_address) - int(cluster.network_address)) >> (
            cluster.max_prefixlen - self._prefix
        )
        if self._used.get(index, node) != node:
            return  # held by another node: leave the books as they are
        self.release(node)
        self._used[index] = node
        self._by_node[node] = index

    def release(self, node: str) -> None:
        index = self._by_node.pop(node, None)
        if index is not None and self._used.get(index) == node:
            del self._used[index]
            self._free.append(index)


class NodeDriver:
    """Every fake kubelet of one shard; see the module docstring."""

    def __init__(self, ctx: ShardContext, listener: NodeListener) -> None:
        self._ctx = ctx
        self._listener = listener
        s = ctx.settings.shard
        shard_index = int(ctx.shard) if ctx.shard.isdigit() else 0
        parts = max(ctx.settings.shards, shard_index + 1, 1)
        self._addresses = NodeAddressPool(subrange(str(s.node_ip_range), shard_index, parts))
        self._cidrs = _CidrPool(
            subrange(str(s.pod_cidr_range), shard_index, parts), s.node_pod_cidr_prefix
        )
        self.states: dict[str, NodeState] = {}
        self._names: dict[str, str] = {}
        """Node name -> key of the CR that holds it (within this shard)."""
        self._leaving: dict[str, str] = {}
        """CR key -> node name, for CRs that left the watch and are being checked."""
        hot = ctx.hot
        assert isinstance(hot, FencedRequester)
        self.leases = LeaseLane(
            hot, self, limiter=ctx.writes.limiter, clock=ctx.clock, rng=ctx.rng
        )
        """Every node Lease renewal: its own timers and writers (run by the engine)."""
        lag = lane_lag_histogram(ctx.metrics.registry)
        due_to_sent = lag.labels(stage="due_to_sent").observe
        sent_to_answered = lag.labels(stage="sent_to_answered").observe

        def on_lag(backlog: float, answer: float) -> None:
            due_to_sent(backlog)
            sent_to_answered(answer)

        self.leases.on_lag = on_lag

    # -- reflector events (consumer task: no I/O here) --------------------------------------

    def on_event(self, event: WatchEvent[CrView]) -> None:
        cr = event.obj
        key = f"{cr.metadata.namespace}/{cr.metadata.name}"
        from fleet.coordinator import SHARD_LABEL  # same layer; kept local to the use

        ours = cr.metadata.labels.get(SHARD_LABEL) == self._ctx.shard
        if event.type == "DELETED" or not ours:
            self._stop(key, check_gone=True)
            return
        state = self.states.get(key)
        if state is not None and state.cr.metadata.uid != cr.metadata.uid:
            self._stop(key, check_gone=False)  # deleted and re-created: start afresh
            state = None
        if state is None:
            state = self.states[key] = NodeState(key=key, cr=cr, name=cr.metadata.name)
            self._leaving.pop(key, None)
        else:
            state.cr = cr
        self._ctx.timers.schedule(("sync", key), self._ctx.clock())

    def _stop(self, key: str, *, check_gone: bool) -> None:
        """Stop driving a CR at once: no timer left, nothing more sent for it."""
        state = self.states.pop(key, None)
        if state is None:
            return
        self._halt(state)
        if self._names.get(state.name) == key:
            del self._names[state.name]
            self._addresses.release(state.name)
            self._cidrs.release(state.name)
            if check_gone and state.registered:
                self._leaving[key] = state.name
                self._ctx.timers.schedule(("gone", key), self._ctx.clock())

    def _halt(self, state: NodeState) -> None:
        timers = self._ctx.timers
        for kind in ("sync", "status"):
            timers.cancel((kind, state.key))
        self.leases.cancel(state.key)
        if state.driving:
            state.driving = False
            self._listener.node_removed(state.name)

    # -- the fence ---------------------------------------------------------------------------

    def fence_lost(self) -> None:
        """Stop driving every node at once; remember nothing the apiserver may change meanwhile."""
        for state in self.states.values():
            self._halt(state)
            state.lease = None
            state.registered = False

    def fence_regained(self) -> None:
        """Re-adopt every CR still labelled ours, spread over :data:`READOPT_SPREAD`."""
        now = self._ctx.clock()
        for key in self.states:
            self._ctx.timers.schedule(("sync", key), now + spread(READOPT_SPREAD, self._ctx.rng))

    # -- timers ------------------------------------------------------------------------------

    async def handle(self, kind: str, key: str) -> None:
        if kind == "sync":
            await self._sync_guarded(key)
        elif kind == "status":
            await self._report(key, periodic=True)
        elif kind == "gone":
            await self._check_gone(key)

    async def _sync_guarded(self, key: str) -> None:
        state = self.states.get(key)
        if state is None:
            return
        if state.busy:
            state.again = True
            return
        state.busy = True
        try:
            await self._sync(state)
        except FleetError as exc:
            log.info("node CR %s: sync failed (%s); retrying", key, exc)
            if self.states.get(key) is state and self._ctx.fresh():
                self._ctx.timers.schedule(("sync", key), self._ctx.clock() + RESYNC_DELAY)
        finally:
            state.busy = False
            if state.again and self.states.get(key) is state:
                state.again = False
                self._ctx.timers.schedule(("sync", key), self._ctx.clock())

    async def _sync(self, state: NodeState) -> None:
        ctx = self._ctx
        if not ctx.fresh():
            return
        cr = state.cr
        if cr.metadata.deletion_timestamp is not None:
            await self._cleanup(state)
            return
        try:
            model = load_node(cr_raw(cr))
            interval = status_interval(model, ctx.settings.shard.status_report_interval)
        except InputError as exc:
            await ctx.events.warn(state.involved, "InvalidSpec", str(exc))
            state.problem = ConditionValue("False", "InvalidSpec", str(exc))
            await self._write_cr_status(state)
            return  # a registered node keeps running on its last good spec
        holder = self._names.setdefault(state.name, state.key)
        if holder != state.key:
            await self._conflict(state, holder)
            return
        if FINALIZER not in cr.metadata.finalizers:
            await self._add_finalizer(state)
            return  # the watch brings the CR with its finalizer, and another sync
        state.interval = interval
        if not state.registered:
            if not await self._register(state, model):
                return
        else:
            await self._update(state, model)
        state.problem = None
        if model.spec.suspend:
            self._halt(state)
        else:
            await self._ensure_lease(state)
            if not state.driving:
                state.driving = True
                self._listener.node_added(state.name, state)
            await self._report(state.key, periodic=False)
        await self._write_cr_status(state)

    # -- registration --------------------------------------------------------------------------

    def _spec_for(
        self, state: NodeState, model: MockNode, ips: tuple[str, ...] | None, cidrs: tuple[str, ...]
    ) -> KubeletSpec:
        config = model.spec.node_config
        if config.address:
            address = self._addresses.assign(state.name, config.address)
            internal: tuple[str, ...] = (address,)
        elif ips:
            internal = (self._addresses.assign(state.name, ips[0]), *ips[1:])
        else:
            internal = (self._addresses.allocate(state.name),)
        return kubelet_spec(model, key=state.key, internal_ips=internal, pod_cidrs=cidrs)

    async def _register(self, state: NodeState, model: MockNode) -> bool:
        """GET the Node, POST it when missing; adopt it when it is there. False on conflict."""
        ctx = self._ctx
        response = await ctx.control.request("GET", _node_path(state.name))
        if response.status == 404:
            cidrs = tuple(model.spec.node_config.effective_pod_cidrs()) or (
                self._cidrs.allocate(state.name),
            )
            spec = self._spec_for(state, model, None, cidrs)
            body = encode_patch(node_body(spec, ctx.wall()))
            try:
                response = await ctx.control.request(
                    "POST", _node_path(), body=body, content_type=_JSON
                )
                response.raise_for_status()
            except AlreadyExists:
                response = await ctx.control.request("GET", _node_path(state.name))
                response.raise_for_status()
            else:
                node = _decode_any(response.content)
                self._adopt_node(state, spec, node)
                return True
        node = _decode_any(response.raise_for_status().content)
        meta = node.get("metadata") or {}
        owner = (meta.get("annotations") or {}).get(NODE_CR_ANNOTATION)
        if owner and owner != state.key:
            await self._conflict(state, owner)
            return False
        status = node.get("status") or {}
        ips = tuple(
            str(a["address"])
            for a in status.get("addresses") or []
            if isinstance(a, Mapping) and a.get("type") == "InternalIP" and a.get("address")
        )
        node_spec = node.get("spec") or {}
        cidrs = tuple(node_spec.get("podCIDRs") or ()) or (
            (node_spec["podCIDR"],) if node_spec.get("podCIDR") else ()
        )
        if cidrs:
            self._cidrs.adopt(state.name, cidrs[0])
        else:
            cidrs = tuple(model.spec.node_config.effective_pod_cidrs()) or (
                self._cidrs.allocate(state.name),
            )
        spec = self._spec_for(state, model, ips, cidrs)
        self._adopt_node(state, spec, node)
        await self._reconcile_meta(state, None, node)
        return True

    def _adopt_node(self, state: NodeState, spec: KubeletSpec, node: Mapping[str, Any]) -> None:
        state.spec = spec
        state.node_uid = str((node.get("metadata") or {}).get("uid") or "")
        state.status = dict(node.get("status") or {})
        state.registered = True
        try:
            state.pool = PodIPPool(spec.pod_cidrs) if spec.pod_cidrs else None
        except InputError as exc:
            log.warning("node %s: no pod IP pool: %s", state.name, exc)
            state.pool = None

    async def _update(self, state: NodeState, model: MockNode) -> None:
        """A registered node whose CR changed: labels, taints, annotations, capacity."""
        old = state.spec
        assert old is not None
        spec = self._spec_for(state, model, old.internal_ips, old.pod_cidrs)
        state.spec = spec
        if (old.labels, old.taints, old.annotations) == (
            spec.labels,
            spec.taints,
            spec.annotations,
        ):
            return
        response = await self._ctx.control.request("GET", _node_path(state.name))
        if response.status == 404:
            state.registered = False  # deleted behind our back: register again
            raise NotFound("node vanished", status=404)
        await self._reconcile_meta(state, old, _decode_any(response.raise_for_status().content))

    async def _reconcile_meta(
        self, state: NodeState, old: KubeletSpec | None, node: Mapping[str, Any]
    ) -> None:
        """Merge-PATCH labels, annotations and taints the CR owns; others' stay as they are."""
        spec = state.spec
        assert spec is not None
        meta = node.get("metadata") or {}
        labels: dict[str, Any] = dict(meta.get("labels") or {})
        annotations: dict[str, Any] = dict(meta.get("annotations") or {})
        want_labels = node_labels(spec)
        label_patch: dict[str, Any] = {k: v for k, v in want_labels.items() if labels.get(k) != v}
        if old is not None:
            for k in node_labels(old):
                if k not in want_labels and k in labels:
                    label_patch[k] = None
        annotation_patch: dict[str, Any] = {
            k: v for k, v in spec.annotations.items() if annotations.get(k) != v
        }
        if old is not None:
            for k in old.annotations:
                if k not in spec.annotations and k in annotations:
                    annotation_patch[k] = None
        current_taints = list((node.get("spec") or {}).get("taints") or [])
        owned = {t.key for t in spec.taints} | {t.key for t in (old.taints if old else ())}
        taints = [t for t in current_taints if isinstance(t, Mapping) and t.get("key") not in owned]
        taints += [t.to_json() for t in spec.taints]
        patch: dict[str, Any] = {}
        if label_patch or annotation_patch:
            patch["metadata"] = {}
            if label_patch:
                patch["metadata"]["labels"] = label_patch
            if annotation_patch:
                patch["metadata"]["annotations"] = annotation_patch
        if taints != current_taints:
            patch["spec"] = {"taints": taints}
        if not patch:
            return
        # The resourceVersion makes this a compare-and-swap: a taint added meanwhile -> 409 -> resync.
        patch.setdefault("metadata", {})["resourceVersion"] = meta.get("resourceVersion")
        response = await self._ctx.control.request(
            "PATCH", _node_path(state.name), body=encode_patch(patch), content_type=_MERGE
        )
        response.raise_for_status()

    async def _conflict(self, state: NodeState, holder: str) -> None:
        message = f"node name {state.name!r} is already driven by Node CR {holder}"
        await self._ctx.events.warn(state.involved, "NameConflict", message)
        state.problem = ConditionValue("False", "NameConflict", message)
        await self._write_cr_status(state)

    async def _add_finalizer(self, state: NodeState) -> None:
        meta = state.cr.metadata
        patch = {
            "metadata": {
                "finalizers": [*meta.finalizers, FINALIZER],
                "resourceVersion": meta.resource_version,
            }
        }
        try:
            response = await self._ctx.control.request(
                "PATCH",
                cr_path(meta.namespace, meta.name),
                body=encode_patch(patch),
                content_type=_MERGE,
            )
            response.raise_for_status()
        except Conflict:
            pass  # a newer CR is on its way through the watch; its sync adds it
        self._ctx.timers.schedule(("sync", state.key), self._ctx.clock() + RESYNC_DELAY)

    # -- the Lease -----------------------------------------------------------------------------

    async def _ensure_lease(self, state: NodeState) -> None:
        ctx = self._ctx
        if state.lease is None:
            response = await ctx.control.request("GET", _lease_path(state.name))
            if response.status == 404:
                body = encode_lease(lease_body(state.name, state.node_uid, ctx.wall()))
                response = await ctx.control.request(
                    "POST", _lease_path(), body=body, content_type=_JSON
                )
                try:
                    response.raise_for_status()
                except AlreadyExists:
                    response = await ctx.control.request("GET", _lease_path(state.name))
                    state.lease = decode_lease(response.raise_for_status().content)
                    self._schedule_lease(state, ctx.clock())
                    return
                state.lease = decode_lease(response.content)
                state.lease_ok = ctx.clock()
                self._schedule_lease(
                    state, ctx.clock() + jitter(self._interval(), self._jitter(), ctx.rng)
                )
                return
            state.lease = decode_lease(response.raise_for_status().content)
        if state.key not in self.leases:
            # Adopted (restart, takeover, resume): renew soon, spread so a thousand adoptions
            # do not renew in one instant; well within the 40 s the Lease lasts.
            self._schedule_lease(state, ctx.clock() + spread(min(self._interval(), 2.0), ctx.rng))

    def _interval(self) -> float:
        return self._ctx.settings.shard.node_lease_renew_interval

    def _jitter(self) -> float:
        return self._ctx.settings.shard.renew_jitter

    def _schedule_lease(self, state: NodeState, when: float) -> None:
        state.lease_due = when
        self.leases.schedule(state.key, when)

    def lease_request(self, key: str) -> BatchRequest | None:
        """The lane asks for ``key``'s renewal (:class:`~shards._leaselane.LeaseOwner`).

        Arms the next one from this one's due time (not from now), so a late
        renewal does not push every later one back, and a bunch does not persist.
        """
        ctx = self._ctx
        state = self.states.get(key)
        if state is None or not state.driving or state.lease is None or not ctx.fresh():
            return None
        now = ctx.clock()
        duration = ctx.settings.shard.node_lease_duration
        if (
            state.lease_ok is not None
            and now - state.lease_ok > duration
            and not state.missed_counted
        ):
            ctx.metrics.lease_renewals_missed.labels(lease="node").inc()
            state.missed_counted = True
        if not self.leases.retrying(key):  # a regular renewal: arm the next one
            state.renewing_due = state.lease_due
            self._schedule_lease(
                state,
                max(now, state.lease_due + jitter(self._interval(), self._jitter(), ctx.rng)),
            )
        renewed = renew_lease(state.lease, ctx.wall(), node_uid=state.node_uid)
        return BatchRequest("PUT", _lease_path(state.name), None, encode_lease(renewed), _JSON)

    async def lease_answered(self, key: str, answer: Response | FleetError) -> bool:
        """The renewal's answer (:class:`~shards._leaselane.LeaseOwner`); True: send again."""
        ctx = self._ctx
        state = self.states.get(key)
        if state is None or not isinstance(answer, Response):
            return False
        if answer.status < 300:
            state.lease = decode_lease(answer.content)
            finished = ctx.clock()
            duration = ctx.settings.shard.node_lease_duration
            if state.lease_ok is not None and finished - state.lease_ok > duration:
                if not state.missed_counted:
                    ctx.metrics.lease_renewals_missed.labels(lease="node").inc()
            elif finished - state.renewing_due > _LATE_AFTER:
                ctx.metrics.lease_renewals_late.labels(lease="node").inc()
            state.lease_ok = finished
            state.missed_counted = False
            return False
        if answer.status == 404:
            state.lease = None  # deleted: the sync re-creates it
            ctx.timers.schedule(("sync", key), ctx.clock())
            return False
        if answer.status == 409:
            # Someone else wrote the Lease: re-read it and renew on top of it, at once.
            response = await ctx.hot.request("GET", _lease_path(state.name))
            if response.status == 404:
                return False
            fresh = decode_lease(response.raise_for_status().content)
            if self.states.get(key) is state:
                state.lease = fresh
            return True
        try:
            answer.raise_for_status()
        except FleetError as exc:
            log.warning("lease %s: renewal refused: %s", key, exc)
        return False

    # -- node status -------------------------------------------------------------------------

    async def _report(self, key: str, *, periodic: bool) -> None:
        ctx = self._ctx
        state = self.states.get(key)
        if state is None or not state.driving or state.spec is None or not ctx.fresh():
            return
        desired = node_status(state.spec, ctx.wall(), state.status)
        first = ("status", key) not in ctx.timers
        if periodic or status_changed(state.status, desired) or first:
            patch = node_status_patch(state.status, desired)
            if patch:

                def done(result: WriteResult) -> None:
                    if result.outcome == "sent" and result.response is not None:
                        if self.states.get(key) is state:
                            node = _decode_any(result.response.content)
                            state.status = dict(node.get("status") or {})

                write = Write(
                    "PATCH",
                    _node_path(state.name, "status"),
                    encode_patch(patch),
                    _STRATEGIC,
                    on_result=done,
                )
                await ctx.writes.submit(f"nodes/{state.name}/status", write)
            interval = state.interval
            if first and not periodic:
                # The first periodic report of a node just registered (or re-adopted) comes
                # anywhere in the next interval, so a registration burst does not come back
                # as a status burst every interval (a kubelet's own start times are spread).
                interval *= 0.1 + 0.9 * ctx.rng.random()
            ctx.timers.schedule(("status", key), ctx.clock() + interval)

    # -- CR status -----------------------------------------------------------------------------

    async def _write_cr_status(self, state: NodeState) -> None:
        ctx = self._ctx
        cr = state.cr
        suspended = bool(cr.spec.get("suspend")) if isinstance(cr.spec, Mapping) else False
        if state.problem is not None and not state.registered:
            registered = state.problem
        else:
            registered = ConditionValue("True", "Registered", f"v1.Node {state.name} registered")
        if state.problem is not None:
            ready = ConditionValue("False", state.problem.reason, state.problem.message)
        elif suspended:
            ready = ConditionValue("False", "Suspended", "spec.suspend is true: Lease not renewed")
        elif state.driving:
            ready = ConditionValue("True", "KubeletReady", "Lease renewed by shard " + ctx.shard)
        else:
            ready = ConditionValue("False", "NotDriven", "not driven")
        desired = cr_status(
            previous=cr.status,
            shard=ctx.shard,
            node_name=state.name,
            generation=cr.metadata.generation or None,
            registered=registered,
            ready=ready,
            now=ctx.wall(),
        )
        if not status_differs(cr.status, desired):
            return
        meta = cr.metadata
        response = await ctx.control.request(
            "PATCH",
            cr_path(meta.namespace, meta.name, "status"),
            body=encode_patch({"status": desired}),
            content_type=_MERGE,
        )
        if response.status != 404:
            response.raise_for_status()
            fresh = msgspec.json.decode(response.content, type=CrView)
            if self.states.get(state.key) is state and fresh.metadata.uid == meta.uid:
                # Keep what we wrote as the baseline, so the same status is not written twice.
                state.cr = msgspec.structs.replace(state.cr, status=fresh.status)

    # -- deletion ------------------------------------------------------------------------------

    async def _cleanup(self, state: NodeState) -> None:
        """The CR is being deleted: Lease and Node go first, then our finalizer."""
        ctx = self._ctx
        self._halt(state)
        if self._names.get(state.name, state.key) == state.key:
            await self._delete_node_objects(state.key, state.name)
            self._names.pop(state.name, None)
            self._addresses.release(state.name)
            self._cidrs.release(state.name)
        state.registered = False
        state.lease = None
        meta = state.cr.metadata
        if FINALIZER not in meta.finalizers:
            return
        rest = [f for f in meta.finalizers if f != FINALIZER]
        patch = {"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}}
        try:
            response = await ctx.control.request(
                "PATCH",
                cr_path(meta.namespace, meta.name),
                body=encode_patch(patch),
                content_type=_MERGE,
            )
            if response.status != 404:
                response.raise_for_status()
        except Conflict:
            ctx.timers.schedule(("sync", state.key), ctx.clock() + RESYNC_DELAY)

    async def _delete_node_objects(self, key: str, name: str) -> None:
        """Delete the Lease and the Node of CR ``key`` (the Node only if it is that CR's)."""
        ctx = self._ctx
        response = await ctx.control.request("GET", _node_path(name))
        if response.status != 404:
            node = _decode_any(response.raise_for_status().content)
            meta = node.get("metadata") or {}
            owner = (meta.get("annotations") or {}).get(NODE_CR_ANNOTATION)
            if owner not in (None, key):
                return  # another CR's node: not ours to delete
            options = {
                "kind": "DeleteOptions",
                "apiVersion": "v1",
                "preconditions": {"uid": meta.get("uid")},
            }
            response = await ctx.control.request(
                "DELETE", _node_path(name), body=encode_patch(options), content_type=_JSON
            )
            if response.status not in (404, 409):
                response.raise_for_status()
        response = await ctx.control.request("DELETE", _lease_path(name))
        if response.status != 404:
            response.raise_for_status()
        ctx.writes.forget(f"leases/{name}")
        ctx.writes.forget(f"nodes/{name}/status")

    async def _check_gone(self, key: str) -> None:
        """A CR left our watch: deleted (clean up) or moved to another shard (leave it)."""
        name = self._leaving.get(key)
        if name is None or key in self.states or not self._ctx.fresh():
            return
        namespace, _, cr_name = key.partition("/")
        response = await self._ctx.control.request("GET", cr_path(namespace, cr_name))
        if response.status == 404:
            log.info("node CR %s deleted without its finalizer: removing node %s", key, name)
            await self._delete_node_objects(key, name)
        else:
            response.raise_for_status()
        self._leaving.pop(key, None)

    # -- observation ---------------------------------------------------------------------------

    def driven(self) -> int:
        return sum(1 for state in self.states.values() if state.driving)

    def state_of(self, name: str) -> NodeState | None:
        key = self._names.get(name)
        return None if key is None else self.states.get(key)
