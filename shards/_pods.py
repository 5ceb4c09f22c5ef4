"""The pods on a shard's nodes: from bound to Running, Succeeded, Failed, and deleted.

:class:`PodDriver` consumes one pod reflector (``spec.nodeName!=``, filtered
to the nodes the shard drives) or, with ``podWatch: per-node``, one
reflector per driven node (``spec.nodeName=<node>``, as real kubelets load
the apiserver). Every pod's lifecycle is its annotations compiled into a
:class:`~shards._plan.Plan` (``compile_plan``); a ``pod`` timer evaluates
``plan.state_at(now - creationTimestamp)``, writes the status a kubelet
would (``build_status`` / ``pod_status_patch``: strategic merge with the uid
precondition) through the write queue, coalesced per pod, and re-arms the
timer for ``plan.next_change_after``. A pod seen late goes straight to its
timeline's state. Pod IPs come from the node's pool, or the podIPs
annotation; a pod's existing IPs and start time are adopted, never reset.

A pod naming a MockStatus (``zhizuqiu.github.com/mockStatus``) follows the
Plan the :class:`~shards._scripts.ScriptLibrary` compiled from it; while the
MockStatus is missing or invalid the pod stays Pending with that reason. A
MockStatus created or changed re-plans the pods naming it (:meth:`PodDriver.
scripts_changed`), from their creation time; a pod that reached Succeeded or
Failed stays there, and a pod already following a valid version keeps it if
the MockStatus turns invalid or is deleted.

Deletion, as the recorded kubelet does it: on deletionTimestamp the
containers stop and that status is written, then, after
``shard.podDeletionDelay`` (0 s by default), DELETE with gracePeriodSeconds 0
and a uid precondition. Bad annotations get a Warning Event on the pod, which
stays Pending with a reason; every other pod keeps going.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import trio

from fleet.errors import InputError
from fleet.kube._paths import resource_path
from fleet.kube._views import ObjectMeta
from fleet.kube._watching import Reflector, WatchEvent
from fleet.kube._writequeue import Write, WriteResult
from shards._context import ShardContext
from shards._ipam import PoolExhausted
from shards._kubelets import NodeState
from shards._plan import (
    ANNOTATION_MOCK_STATUS,
    POD_INITIALIZING,
    ContainerState,
    Plan,
    Step,
    compile_plan,
)
from shards._podstatus import ContainerSpec, PodView, RuntimeStyle, build_status, encode_patch
from shards._podstatus import pod_status_patch as make_patch
from shards._scripts import INVALID_REASON, MISSING_REASON, ScriptError, ScriptLibrary

__all__ = ["PodDriver", "PodObject", "PodRecord"]

log = logging.getLogger(__name__)

EVENT_BUFFER = 4096
"""Watch events buffered between the pod reflector(s) and the consumer task."""
_STRATEGIC = "application/strategic-merge-patch+json"
_JSON = "application/json"
_decode_status = msgspec.json.Decoder(dict[str, Any]).decode
_encode_spec = msgspec.json.Encoder().encode
INTERN_LIMIT = 50_000
"""Distinct pod specs (and label sets) shared before the tables start afresh."""


class _PhaseOnly(msgspec.Struct):
    phase: Any = None


_decode_phase = msgspec.json.Decoder(_PhaseOnly).decode


def _phase_of(raw: bytes | msgspec.Raw) -> str:
    """``status.phase`` of a raw status, as :meth:`PodDriver.phases` counts it."""
    return str(_decode_phase(raw).phase or "Pending") if raw else "Pending"
_OWN_REASONS = frozenset({"InvalidLifecycleAnnotation", MISSING_REASON, INVALID_REASON})


class _Resources(msgspec.Struct, frozen=True):
    requests: dict[str, str | int | float] = {}
    limits: dict[str, str | int | float] = {}


class _Container(msgspec.Struct, frozen=True):
    name: str = ""
    image: str = ""
    resources: _Resources = _Resources()


class _Gate(msgspec.Struct, rename="camel", frozen=True):
    condition_type: str = ""


class _PodSpec(msgspec.Struct, rename="camel", frozen=True):
    node_name: str = ""
    containers: list[_Container] = []
    init_containers: list[_Container] = []
    readiness_gates: list[_Gate] = []
    host_network: bool = False


class PodObject(msgspec.Struct, frozen=True):
    """A pod as the reflector hands it over: the spec the status needs, the status still raw.

    A :class:`PodRecord` keeps it without the status (``{}``), which lives in
    :attr:`PodRecord.raw_status` alone."""

    metadata: ObjectMeta = ObjectMeta()
    spec: _PodSpec = _PodSpec()
    status: msgspec.Raw = msgspec.Raw(b"{}")


_NO_STATUS = msgspec.Raw(b"{}")


def _container(c: _Container) -> ContainerSpec:
    return ContainerSpec(
        c.name,
        c.image,
        {k: str(v) for k, v in c.resources.requests.items()},
        {k: str(v) for k, v in c.resources.limits.items()},
    )


def _view(obj: PodObject) -> PodView:
    meta = obj.metadata
    return PodView(
        uid=meta.uid,
        name=meta.name,
        namespace=meta.namespace,
        containers=tuple(_container(c) for c in obj.spec.containers),
        init_containers=tuple(_container(c) for c in obj.spec.init_containers),
        readiness_gates=tuple(g.condition_type for g in obj.spec.readiness_gates),
        host_network=obj.spec.host_network,
    )


def _invalid_plan(message: str, reason: str = "InvalidLifecycleAnnotation") -> Plan:
    waiting = ContainerState("waiting", reason="CreateContainerConfigError", message=message)
    return Plan(
        (
            Step(
                0.0,
                "Pending",
                waiting,
                POD_INITIALIZING,
                source="invalid",
                reason=reason,
                message=message,
            ),
        )
    )


@dataclass(slots=True)
class PodRecord:
    """One pod on a driven node."""

    key: str
    uid: str
    node: str
    obj: PodObject
    view: PodView
    creation: datetime
    plan: Plan
    raw_status: bytes | msgspec.Raw = b""
    """The status as last seen (watch) or written (PATCH answer), kept as JSON: a decoded
    status costs ~4 KiB of Python objects per pod, its JSON ~1 KiB (100k pods: 400 MB
    against 100 MB). Decoded only when the pod is evaluated (:attr:`status`)."""
    phase: str = "Pending"
    """``status.phase`` of :attr:`raw_status` (``Pending`` when absent), for :meth:`PodDriver.phases`."""
    ips: tuple[str, ...] = ()
    deleting_since: float | None = None
    delete_scheduled: bool = False

    @property
    def status(self) -> dict[str, Any]:
        """The status, decoded afresh on each access (a private copy)."""
        return _decode_status(self.raw_status) if self.raw_status else {}


class PodDriver:
    """Every pod on the nodes of one shard; see the module docstring."""

    def __init__(self, ctx: ShardContext, scripts: ScriptLibrary | None = None) -> None:
        self._ctx = ctx
        self.scripts = scripts
        self.pods: dict[str, PodRecord] = {}
        self._phases: Counter[str] = Counter()
        """Pods in :attr:`pods` by phase, kept in step by ``_set_status`` and ``_forget``."""
        self._nodes: dict[str, NodeState] = {}
        self._by_node: dict[str, set[str]] = {}
        """Node name -> keys of every pod seen bound to it (driven or not)."""
        self._seen: dict[str, PodObject] = {}
        """Pods on nodes not (yet) driven, in shard mode: the reflector's objects."""
        self._reflector: Reflector[PodObject] | None = None
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[WatchEvent[PodObject]] | None = None
        self._node_watches: dict[str, trio.CancelScope] = {}
        self.per_node = ctx.settings.shard.pod_watch == "per-node"
        self.give_way: Callable[[], Awaitable[None]] | None = None
        self._specs: dict[bytes, _PodSpec] = {}
        """Pod specs by their JSON (see :meth:`_slim`)."""
        self._spec_views: dict[int, tuple[_PodSpec, PodView]] = {}
        """A shared spec's id -> it and the view of its first pod (see :meth:`_view`)."""
        self._labels: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        """Awaited before each pod event (the Lease lane's :meth:`~shards._leaselane.LeaseLane.give_way`)."""

    # -- watching ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The consumer task, and the reflector(s), until cancelled."""
        send, receive = trio.open_memory_channel[WatchEvent[PodObject]](EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._send = send
            nursery.start_soon(self._consume, receive)
            if not self.per_node:
                self._reflector = Reflector(
                    self._ctx.hot,
                    resource_path("", "v1", "pods"),
                    PodObject,
                    field_selector="spec.nodeName!=",
                    clock=self._ctx.clock,
                    rng=self._ctx.rng,
                    keep_objects=False,  # the driver holds every pod it needs
                )
                await nursery.start(self._reflector.run, send.clone())
            else:
                for name in list(self._nodes):
                    self._watch_node(name)
            task_status.started()

    def _watch_node(self, name: str) -> None:
        if self._nursery is None or self._send is None or name in self._node_watches:
            return
        scope = trio.CancelScope()
        self._node_watches[name] = scope
        reflector = Reflector(
            self._ctx.hot,
            resource_path("", "v1", "pods"),
            PodObject,
            field_selector=f"spec.nodeName={name}",
            clock=self._ctx.clock,
            rng=self._ctx.rng,
            keep_objects=False,
        )

        async def watch(send: trio.MemorySendChannel[WatchEvent[PodObject]]) -> None:
            with scope:
                await reflector.run(send)

        self._nursery.start_soon(watch, self._send.clone())

    async def _consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[PodObject]]) -> None:
        async with receive:
            async for event in receive:
                if self.give_way is not None:
                    await self.give_way()  # overdue Lease renewals first
                self.on_event(event)

    def on_event(self, event: WatchEvent[PodObject]) -> None:
        obj = event.obj
        meta = obj.metadata
        key = f"{meta.namespace}/{meta.name}"
        node = obj.spec.node_name
        if event.type == "DELETED":
            if not node:  # a relist's tombstone carries the metadata only
                record, seen = self.pods.get(key), self._seen.get(key)
                node = record.node if record else seen.spec.node_name if seen else ""
            self._forget(key)
            self._seen.pop(key, None)
            keys = self._by_node.get(node)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_node[node]
            return
        # The status is a slice of the list page or watch line it came in: copy it out, so
        # that buffer (~2 KiB a pod) is not kept alive by it.
        obj = self._slim(obj)
        self._by_node.setdefault(node, set()).add(key)
        if node not in self._nodes:
            if not self.per_node:
                self._seen[key] = obj
            return
        self._seen.pop(key, None)
        self._track(key, obj)

    def _slim(self, obj: PodObject) -> PodObject:
        """``obj`` with its status copied out and the parts pods share, shared.

        Pods of one template on one node have equal specs, and pods of one template
        equal labels: kept once each (a decoded spec is ~1 KiB of Python objects a pod;
        100,000 pods on 10,000 nodes hold ~10,000 distinct ones). Read-only, as every
        decoded object here is. The tables are emptied when they grow past
        :data:`INTERN_LIMIT` (churn), which costs sharing, never correctness.
        """
        spec_key = _encode_spec(obj.spec)
        spec = self._specs.get(spec_key)
        if spec is None:
            if len(self._specs) >= INTERN_LIMIT:
                self._specs.clear()
                self._spec_views.clear()
            spec = self._specs[spec_key] = obj.spec
        meta = obj.metadata
        labels = meta.labels
        if labels:
            label_key = tuple(labels.items())
            shared = self._labels.get(label_key)
            if shared is None:
                if len(self._labels) >= INTERN_LIMIT:
                    self._labels.clear()
                shared = self._labels[label_key] = labels
            meta = msgspec.structs.replace(meta, labels=shared, namespace=sys.intern(meta.namespace))
        else:
            meta = msgspec.structs.replace(meta, namespace=sys.intern(meta.namespace))
        return msgspec.structs.replace(obj, metadata=meta, spec=spec, status=obj.status.copy())

    def _view(self, obj: PodObject) -> PodView:
        """:func:`_view`, with the container parts shared by pods that share a spec."""
        spec = obj.spec
        entry = self._spec_views.get(id(spec))
        if entry is None or entry[0] is not spec:
            view = _view(obj)
            if self._specs.get(_encode_spec(spec)) is spec:  # interned: id stays its own
                self._spec_views[id(spec)] = (spec, view)
            return view
        shared = entry[1]
        meta = obj.metadata
        return PodView(
            uid=meta.uid,
            name=meta.name,
            namespace=meta.namespace,
            containers=shared.containers,
            init_containers=shared.init_containers,
            readiness_gates=shared.readiness_gates,
            host_network=shared.host_network,
        )

    def _track(self, key: str, obj: PodObject) -> None:
        record = self.pods.get(key)
        if record is not None and record.uid != obj.metadata.uid:
            self._forget(key)
            record = None
        if record is None:
            creation = obj.metadata.creation_timestamp or self._ctx.wall()
            plan, problem = self._plan(obj.metadata)
            record = PodRecord(
                key=key,
                uid=obj.metadata.uid,
                node=obj.spec.node_name,
                obj=msgspec.structs.replace(obj, status=_NO_STATUS),
                view=self._view(obj),
                creation=creation,
                plan=plan,
            )
            self.pods[key] = record
            self._phases[record.phase] += 1
            if problem is not None:
                self._ctx.timers.schedule(("pod-event", key), self._ctx.clock())
        else:
            if obj.metadata.annotations != record.obj.metadata.annotations:
                record.plan, problem = self._plan(obj.metadata)
                if problem is not None:
                    self._ctx.timers.schedule(("pod-event", key), self._ctx.clock())
            record.obj = msgspec.structs.replace(obj, status=_NO_STATUS)
        self._set_status(record, obj.status)
        if obj.metadata.deletion_timestamp is not None and record.deleting_since is None:
            record.deleting_since = self._ctx.clock()
        self._ctx.timers.schedule(("pod", key), self._ctx.clock())

    def _plan(self, meta: ObjectMeta) -> tuple[Plan, str | None]:
        """The pod's Plan, and what is wrong with its annotations (None: nothing)."""
        scripts = None if self.scripts is None else self.scripts.resolver(meta.namespace)
        try:
            return compile_plan(meta.annotations, scripts=scripts), None
        except ScriptError as exc:
            return _invalid_plan(str(exc), exc.reason), str(exc)
        except InputError as exc:
            return _invalid_plan(str(exc)), str(exc)

    def scripts_changed(self, namespace: str, name: str) -> None:
        """MockStatus ``namespace/name`` appeared or changed: re-plan the pods naming it."""
        ctx = self._ctx
        now = ctx.wall()
        for key, record in self.pods.items():
            meta = record.obj.metadata
            if meta.namespace != namespace or meta.annotations.get(ANNOTATION_MOCK_STATUS) != name:
                continue
            if record.deleting_since is not None:
                continue
            elapsed = (now - record.creation).total_seconds()
            if record.plan.state_at(elapsed).terminal or record.phase in (
                "Succeeded",
                "Failed",
            ):
                continue  # a terminal state reached stays
            plan, problem = self._plan(meta)
            if plan == record.plan:
                continue
            if problem is not None:
                if record.plan.steps[0].source != "invalid":
                    continue  # keep following the last valid version
                ctx.timers.schedule(("pod-event", key), ctx.clock())
            record.plan = plan
            ctx.timers.schedule(("pod", key), ctx.clock())

    def _set_status(self, record: PodRecord, raw: bytes | msgspec.Raw) -> None:
        """Keep ``raw`` as the pod's status, and the phase counts in step."""
        phase = _phase_of(raw)
        if phase != record.phase:
            counts = self._phases
            counts[record.phase] -= 1
            if not counts[record.phase]:
                del counts[record.phase]
            counts[phase] += 1
            record.phase = phase
        record.raw_status = raw

    def _forget(self, key: str) -> None:
        record = self.pods.pop(key, None)
        if record is None:
            return
        counts = self._phases
        counts[record.phase] -= 1
        if not counts[record.phase]:
            del counts[record.phase]
        for kind in ("pod", "pod-delete", "pod-event"):
            self._ctx.timers.cancel((kind, key))
        node = self._nodes.get(record.node)
        if node is not None and node.pool is not None:
            node.pool.release(key)
        self._ctx.writes.forget(f"pods/{key}/status")
        self._ctx.writes.forget(f"pods/{key}")

    # -- nodes coming and going (NodeListener) -----------------------------------------------

    def node_added(self, name: str, state: NodeState) -> None:
        self._nodes[name] = state
        if self.per_node:
            self._watch_node(name)
            return
        for key in list(self._by_node.get(name, ())):
            obj = self._seen.pop(key, None)
            if obj is None and self._reflector is not None:
                obj = self._reflector.objects.get(key)
            if obj is not None:
                self._track(key, obj)

    def node_removed(self, name: str) -> None:
        self._nodes.pop(name, None)
        scope = self._node_watches.pop(name, None)
        if scope is not None:
            scope.cancel()
        for key in list(self._by_node.get(name, ())):
            record = self.pods.get(key)
            if record is not None:
                if not self.per_node:
                    raw = record.raw_status
                    status = raw if isinstance(raw, msgspec.Raw) else msgspec.Raw(raw or b"{}")
                    self._seen[key] = msgspec.structs.replace(record.obj, status=status)
                self._forget(key)
        if self.per_node:
            self._by_node.pop(name, None)

    # -- timers --------------------------------------------------------------------------------

    async def handle(self, kind: str, key: str) -> None:
        if kind == "pod":
            await self._evaluate(key)
        elif kind == "pod-delete":
            await self._delete(key)
        elif kind == "pod-event":
            record = self.pods.get(key)
            if record is not None and record.plan.steps[0].source == "invalid":
                meta = record.obj.metadata
                involved = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "namespace": meta.namespace,
                    "name": meta.name,
                    "uid": meta.uid,
                }
                reason = record.plan.steps[0].reason
                await self._ctx.events.warn(involved, reason, record.plan.steps[0].message)

    def _ips(self, record: PodRecord, node: NodeState) -> tuple[str, ...]:
        if record.plan.pod_ips:
            return record.plan.pod_ips
        if record.view.host_network or node.pool is None:
            return ()
        if record.ips:
            return record.ips
        status = record.status
        existing = tuple(
            str(e["ip"]) for e in status.get("podIPs") or [] if isinstance(e, Mapping)
        ) or ((str(status["podIP"]),) if status.get("podIP") else ())
        try:
            if existing:
                record.ips = node.pool.adopt(record.key, existing)
            else:
                record.ips = node.pool.allocate(record.key)
        except (InputError, PoolExhausted) as exc:
            log.warning("pod %s: no IP: %s", record.key, exc)
            record.ips = ()
        return record.ips

    async def _evaluate(self, key: str) -> None:
        ctx = self._ctx
        record = self.pods.get(key)
        if record is None or not ctx.fresh():
            return
        node = self._nodes.get(record.node)
        if node is None or node.spec is None:
            return
        now = ctx.wall()
        elapsed = (now - record.creation).total_seconds()
        step = record.plan.state_at(elapsed)
        deleting = record.deleting_since is not None
        if deleting:
            step = step.stopped(elapsed)
        spec = node.spec
        style = RuntimeStyle.for_kubelet(spec.kubelet_version, spec.container_runtime_version)
        current = original = record.status
        if not step.reason and "reason" in original:
            held = original.get("reason")
            if held in _OWN_REASONS or original.get("phase") != step.phase:
                # The kubelet keeps status.reason/message only while the phase stays; ours
                # (a pod waiting for its annotations or MockStatus to be fixed) go at once.
                original = {k: v for k, v in original.items() if k not in ("reason", "message")}
        desired = build_status(
            record.view,
            step,
            original=original,
            creation=record.creation,
            now=now,
            pod_ips=self._ips(record, node),
            host_ips=spec.internal_ips,
            style=style,
        )
        patch = make_patch(record.uid, current, desired)
        if deleting:
            if record.delete_scheduled:
                return
            record.delete_scheduled = True
            if patch is None:
                self._schedule_delete(record)
                return
            await self._submit_status(record, patch, then_delete=True)
            return
        if patch is not None:
            await self._submit_status(record, patch, then_delete=False)
        following = record.plan.next_change_after(elapsed)
        if following is not None:
            ctx.timers.schedule(("pod", key), ctx.clock() + max(0.0, following - elapsed))

    async def _submit_status(
        self, record: PodRecord, patch: dict[str, Any], *, then_delete: bool
    ) -> None:
        ctx = self._ctx
        meta = record.obj.metadata
        path = resource_path(
            "", "v1", "pods", namespace=meta.namespace, name=meta.name, subresource="status"
        )
        write = Write(
            "PATCH",
            path,
            encode_patch(patch),
            _STRATEGIC,
            on_result=partial(self._status_done, record, then_delete),
        )
        await ctx.writes.submit(f"pods/{record.key}/status", write)

    def _status_done(self, record: PodRecord, then_delete: bool, result: WriteResult) -> None:
        if self.pods.get(record.key) is not record:
            return
        if result.outcome == "sent" and result.response is not None:
            fresh = msgspec.json.decode(result.response.content, type=PodObject)
            if fresh.metadata.uid == record.uid:
                # A copy of the status alone: the Raw would keep the whole answer alive.
                self._set_status(record, bytes(fresh.status))
        if then_delete and result.outcome not in ("gone", "superseded"):
            self._schedule_delete(record)

    def _schedule_delete(self, record: PodRecord) -> None:
        since = record.deleting_since if record.deleting_since is not None else self._ctx.clock()
        delay = self._ctx.settings.shard.pod_deletion_delay
        self._ctx.timers.schedule(("pod-delete", record.key), max(self._ctx.clock(), since + delay))

    async def _delete(self, key: str) -> None:
        ctx = self._ctx
        record = self.pods.get(key)
        if record is None or not ctx.fresh():
            return
        meta = record.obj.metadata
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": record.uid},
        }
        path = resource_path("", "v1", "pods", namespace=meta.namespace, name=meta.name)
        await ctx.writes.submit(
            f"pods/{key}", Write("DELETE", path, encode_patch(options), _JSON, force=True)
        )

    # -- fence -----------------------------------------------------------------------------------

    def pause_all(self) -> None:
        for name in list(self._nodes):
            self.node_removed(name)

    # -- observation -----------------------------------------------------------------------------

    def phases(self) -> Counter[str]:
        """Pods by ``status.phase``: counts kept as statuses change, not a walk over 100k pods."""
        return Counter(self._phases)
