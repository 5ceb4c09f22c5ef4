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
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

import msgspec
import trio

from fleet.errors import FleetError, InputError, NotFound
from fleet.kube import (
    BackoffPolicy,
    ListMeta,
    Reflector,
    Requester,
    WatchEvent,
    WatchSettings,
    Write,
    WriteResult,
    resource_path,
)
from fleet.machinery import JSON, STRATEGIC_MERGE_PATCH
from shards._context import ShardContext
from shards._events import container_events
from shards._ipam import PoolExhausted
from shards._kubeletapi import KUBELET_ANNOTATION_PREFIXES
from shards._kubelets import NodeState
from shards._library import MockStatusView, ScriptError
from shards._plan import (
    ANNOTATION_MOCK_STATUS,
    ANNOTATION_POD_IPS,
    ANNOTATION_PREFIX,
    POD_INITIALIZING,
    RUNNING_NOW,
    ContainerState,
    InitContainers,
    Plan,
    Step,
    compile_plan,
)
from shards._podstatus import ContainerSpec, PodView, RuntimeStyle, build_status, encode_patch
from shards._podstatus import pod_status_patch as make_patch
from shards._policies import PodFacts
from shards._scripts import INVALID_REASON, MISSING_REASON, ScriptLibrary

__all__ = ["PodDriver", "PodObject", "PodRecord"]

log = logging.getLogger(__name__)

EVENT_BUFFER = 4096
"""Watch events buffered between the pod reflector(s) and the consumer task."""
NODE_POD_WATCH = WatchSettings(list_from_cache=True)
"""A node's own pod watch lists as the kubelet's pod reflector does (recorded:
``?fieldSelector=spec.nodeName=<node>&limit=500&resourceVersion=0``): from kube-apiserver's
watch cache and its ``spec.nodeName`` index, not from etcd's every pod."""
CONSUME_BATCH = 64
"""Pod events handled in a row from the watch channel before the consumer lets others run
(and gives way to overdue renewals again): a few ms of CPU."""
_decode_status = msgspec.json.Decoder(dict[str, Any]).decode
_encode_spec = msgspec.json.Encoder().encode
_KEPT_ANNOTATIONS = (ANNOTATION_PREFIX, *KUBELET_ANNOTATION_PREFIXES)
INTERN_LIMIT = 50_000
REMATCH_BATCH = 2_000
"""Pods re-matched between two checkpoints when the policies change (~10 ms of work)."""
STATUS_HOLD_LIMIT = 60.0
"""A pod whose next change is at least this many seconds away lets its status go and reads
it back (one GET) before that change: pods that never settle (a crash loop, a readiness
flap) would otherwise each hold ~1 KiB of status JSON for good (20 MB for 20,000 pods
under a policy with behaviours, measured with ``bench._memprobe --trace``)."""
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


class _Container(msgspec.Struct, rename="camel", frozen=True):
    name: str = ""
    image: str = ""
    resources: _Resources = _Resources()
    restart_policy: str = ""
    """``Always`` on an init container: a sidecar (restartable init container)."""


class _Gate(msgspec.Struct, rename="camel", frozen=True):
    condition_type: str = ""


class _PodSpec(msgspec.Struct, rename="camel", frozen=True):
    node_name: str = ""
    containers: list[_Container] = []
    init_containers: list[_Container] = []
    readiness_gates: list[_Gate] = []
    host_network: bool = False
    restart_policy: str = "Always"


class _Owner(msgspec.Struct, frozen=True):
    kind: str = ""


class _PodMeta(msgspec.Struct, rename="camel", frozen=True):
    """The metadata a pod's lifecycle and policy selectors need; managedFields stay undecoded."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    annotations: dict[str, str] = {}
    labels: dict[str, str] = {}
    owner_references: list[_Owner] = []


class PodObject(msgspec.Struct, frozen=True):
    """A pod as the reflector hands it over: the parts the lifecycle needs, the status raw."""

    metadata: _PodMeta = _PodMeta()
    spec: _PodSpec = _PodSpec()
    status: msgspec.Raw = msgspec.Raw(b"{}")


_NO_ANNOTATIONS: dict[str, str] = {}
CATCH_UP_BACKOFF = BackoffPolicy(initial=1.0, maximum=30.0, jitter=0.5)
"""Between attempts to list the pods of a node just driven (see ``_catch_up_worker``)."""
CATCH_UP_LISTS = 8
"""Nodes whose pods are listed at once (the shared watch's catch-ups and kubelet restarts;
with per-node watches, restarted nodes' new watches making their first lists), each a LIST
of ``spec.nodeName=<node>``: one at a time, a restart storm of 5,000 nodes listed ~10 a
second (one round trip each on a busy apiserver), a real kubelet's own list starts with the
kubelet. A few at a time keeps a storm from becoming 5,000 lists at once."""


@dataclass(frozen=True, slots=True)
class _Listed:
    """In the event channel after the list of a restarted node's new pod watch: the node's
    pods are evaluated once the consumer gets here (the listed statuses are in by then)."""

    node: str
    watch: trio.CancelScope
    """The watch that listed: a later restart's watch makes this one stale."""


_Item = WatchEvent[PodObject] | _Listed
"""What the pod reflector(s) and the restarted nodes' watches put in the event channel."""


class _PodList(msgspec.Struct, frozen=True):
    metadata: ListMeta = ListMeta()
    items: list[PodObject] | None = None


_decode_pod_list = msgspec.json.Decoder(_PodList).decode


def _claims_all(node: str) -> bool:
    return True


def _node_of(held: PodObject | PodRecord) -> str:
    return held.node if isinstance(held, PodRecord) else held.spec.node_name


def _container(c: _Container) -> ContainerSpec:
    return ContainerSpec(
        c.name,
        c.image,
        {k: str(v) for k, v in c.resources.requests.items()},
        {k: str(v) for k, v in c.resources.limits.items()},
        restartable=c.restart_policy == "Always",
    )


def _inits(record: PodRecord) -> InitContainers:
    """The pod's init containers, for a Plan that runs them in order (else none needed)."""
    if record.plan.init is None:
        return ()
    return tuple((c.name, c.restart_policy == "Always") for c in record.spec.init_containers)


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


def _has_lifecycle(annotations: Mapping[str, str]) -> bool:
    """Whether the pod names its own lifecycle (an annotation other than ``podIPs``)."""
    return any(key != ANNOTATION_POD_IPS for key in annotations)


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


UNHELD = b""
""":attr:`PodRecord.raw_status` of a pod whose status the driver does not hold (see there)."""


@dataclass(slots=True)
class PodRecord:
    """One pod on a driven node: what its lifecycle needs, and no more (100,000 of them)."""

    key: str
    """``namespace/name``."""
    uid: str
    node: str
    spec: _PodSpec
    """Shared by the pods of one template on one node (:meth:`PodDriver._slim`)."""
    annotations: Mapping[str, str]
    """Shared by the pods of one template."""
    creation: datetime
    plan: Plan
    deletion: datetime | None = None
    """``metadata.deletionTimestamp``."""
    raw_status: bytes | msgspec.Raw = UNHELD
    """The status as last seen (watch) or written (PATCH answer), kept as JSON (a decoded
    status is ~4 KiB of Python objects, its JSON ~1 KiB), decoded when the pod is evaluated
    (:attr:`status`). :data:`UNHELD` once the pod has reached a state with nothing more to
    write: its next watch event brings the status again, and an evaluation without one
    reads the pod first (:meth:`PodDriver._fetch_status`). 100,000 Running pods hold none."""
    status_hash: int = 0
    """``hash()`` of the status bytes last seen or written: the watch's echo of our own
    PATCH carries the same bytes and needs no evaluation."""
    phase: str = "Pending"
    """``status.phase`` (``Pending`` when absent), for :meth:`PodDriver.phases`."""
    writes_out: int = 0
    """Status PATCHes submitted and not yet ended."""
    seen_while_writing: int = 0
    """``hash()`` of a status the watch brought while :attr:`writes_out`: most likely the
    echo of that very PATCH, racing its answer; looked at when the answer is in."""
    ips: tuple[str, ...] = ()
    deleting_since: float | None = None
    delete_scheduled: bool = False
    facts: PodFacts | None = None
    """What policy selectors see of the pod (labels, annotations, owners), shared by the
    pods of one template (:meth:`PodDriver._facts`)."""
    policy: str = ""
    """``namespace/name`` of the policy (selector MockStatus) the plan came from; ``""``: none."""

    @property
    def namespace(self) -> str:
        return self.key.partition("/")[0]

    @property
    def name(self) -> str:
        return self.key.partition("/")[2]

    @property
    def status(self) -> dict[str, Any]:
        """The status, decoded afresh on each access (a private copy); ``{}`` when unheld."""
        return _decode_status(self.raw_status) if self.raw_status else {}


class PodDriver:
    """Every pod on the nodes of one shard; see the module docstring."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        claims: Callable[[str], bool] = _claims_all,
        give_way: Callable[[], Awaitable[None]] | None = None,
        report: Callable[[MockStatusView, ScriptError | None], Awaitable[None]] | None = None,
    ) -> None:
        """``claims``: whether a node is one of this shard's
        (:class:`~shards._kubelets.NodeClaims`): the one pod watch sees every bound pod in
        the cluster, and holding those of other shards' nodes would cost each shard the
        whole fleet's pods. ``give_way``: awaited before each pod event (the Lease lane's,
        :meth:`~shards._nodelease.NodeLeases.give_way`). ``report``: told how each
        MockStatus validates (shard 0's :class:`~shards._scriptreport.ScriptReporter`)."""
        self._ctx = ctx
        self.scripts = ScriptLibrary(
            ctx.control,
            on_change=self.scripts_changed,
            on_policies_change=self.policies_changed,
            on_report=report,
            clock=ctx.clock,
            rng=ctx.rng,
        )
        """Every MockStatus: the scripts pods name, the policies that select pods (its
        reflector is run by the engine)."""
        self.pods: dict[str, PodRecord] = {}
        self._phases: Counter[str] = Counter()
        """Pods in :attr:`pods` by phase, kept in step by ``_set_status`` and ``_forget``."""
        self._nodes: dict[str, NodeState] = {}
        self._by_node: dict[str, set[str]] = {}
        """Node name -> keys of the pods held for it (driven, or claimed and waiting)."""
        self._seen: dict[str, PodObject | PodRecord] = {}
        """Pods held for claimed nodes not (yet, or no longer) driven, in shard mode."""
        self._dropped: set[str] = set()
        """Nodes of other shards whose pods went by unheld (see :meth:`on_event`)."""
        self._catch_up: set[str] = set()
        """Nodes whose pods are to be listed: just driven after their pods went by unheld,
        or their kubelet restarted (see :attr:`_restarted`)."""
        self._catch_up_wake = trio.Event()
        self._listing: dict[str, set[str]] = {}
        """Nodes being listed -> the keys of pods deleted while their list was in flight."""
        self._restarted: set[str] = set()
        """Nodes of :attr:`_catch_up` listed for a kubelet restart: their pods are evaluated
        again with the statuses listed (see :meth:`kubelet_restarted`)."""
        self._relisting: dict[str, set[str]] = {}
        """With per-node watches, restarted nodes whose new watch has not listed yet (its
        :class:`_Listed` not taken) -> the keys of the pods it has brought so far."""
        self._relists = trio.CapacityLimiter(CATCH_UP_LISTS)
        """Restarted nodes' new per-node watches making their first list at once."""
        self._reflector: Reflector[PodObject] | None = None
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[_Item] | None = None
        self._node_watches: dict[str, trio.CancelScope] = {}
        shard = ctx.settings.shard
        self.per_node = shard.pod_watch == "per-node" or shard.traffic_profile == "kubelet"
        """One watch per node: asked for, or implied by the kubelet traffic profile."""
        self.observe: Callable[[WatchEvent[PodObject]], None] | None = None
        """Told of every pod event before the driver (the kubelet traffic profile)."""
        self.transport_for: Callable[[str], Requester] = lambda name: self._ctx.hot
        """What a node's pod watch goes through (the kubelet traffic profile: the node's own
        connection)."""
        self.give_way = give_way
        self.claims = claims
        self._specs: dict[bytes, _PodSpec] = {}
        """Pod specs by their JSON (see :meth:`_slim`)."""
        self._spec_views: dict[int, tuple[_PodSpec, PodView]] = {}
        """A shared spec's id -> it and the view of its first pod (see :meth:`_view`)."""
        self._annotations: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
        self._times: dict[datetime, datetime] = {}
        self._facts_table: dict[tuple[object, ...], PodFacts] = {}
        """Pod facts (policy selectors' view) by their content (see :meth:`_facts`)."""

    # -- watching ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The consumer task, and the reflector(s), until cancelled."""
        send, receive = trio.open_memory_channel[_Item](EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._send = send
            nursery.start_soon(self._consume, receive)
            if not self.per_node:
                for _ in range(CATCH_UP_LISTS):
                    nursery.start_soon(self._catch_up_worker)
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
                    self._watch_node(name, restarted=name in self._relisting)
            task_status.started()

    def _watch_node(self, name: str, *, restarted: bool = False) -> None:
        """Start node ``name``'s pod watch; ``restarted``: its kubelet restarted, and its
        pods are evaluated once the watch has listed them (a :class:`_Listed` follows the
        list's events), at most :data:`CATCH_UP_LISTS` such nodes listing at once."""
        if self._nursery is None or self._send is None or name in self._node_watches:
            return
        scope = trio.CancelScope()
        self._node_watches[name] = scope
        reflector = Reflector(
            self.transport_for(name),
            resource_path("", "v1", "pods"),
            PodObject,
            field_selector=f"spec.nodeName={name}",
            settings=NODE_POD_WATCH,
            clock=self._ctx.clock,
            rng=self._ctx.rng,
            keep_objects=False,
        )

        async def watch(send: trio.MemorySendChannel[_Item]) -> None:
            with scope:
                if not restarted:
                    await reflector.run(send)
                    return
                async with trio.open_nursery() as nursery:
                    async with send:
                        # Started once the list's events are all in the channel (a list
                        # that fails is retried with backoff, holding its place, as the
                        # shared watch's catch-up workers do).
                        async with self._relists:
                            await nursery.start(reflector.run, send.clone())
                        await send.send(_Listed(name, scope))

        self._nursery.start_soon(watch, self._send.clone())

    async def _consume(self, receive: trio.MemoryReceiveChannel[_Item]) -> None:
        async with receive:
            async for event in receive:
                if self.give_way is not None:
                    await self.give_way()  # overdue Lease renewals first
                self._take(event)
                # Then what is buffered, without a round of the event loop each (a
                # ``receive`` is one): 100,000 pods listed by 10,000 per-node watches
                # waited in their reflectors for one round per pod.
                for _ in range(CONSUME_BATCH - 1):
                    try:
                        event = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self._take(event)

    def _take(self, event: _Item) -> None:
        if isinstance(event, _Listed):
            if self._node_watches.get(event.node) is event.watch:  # else restarted again, or gone
                self._watch_listed(event.node)
            return
        if self.observe is not None:
            self.observe(event)
        self.on_event(event)

    def on_event(self, event: WatchEvent[PodObject]) -> None:
        obj = event.obj
        meta = obj.metadata
        key = f"{meta.namespace}/{meta.name}"
        node = obj.spec.node_name
        if event.type == "DELETED":
            if not node:  # a relist's tombstone carries the metadata only
                record, seen = self.pods.get(key), self._seen.get(key)
                node = record.node if record else "" if seen is None else _node_of(seen)
            self._forget(key)
            self._seen.pop(key, None)
            self._ctx.handover.drop_pod(key)
            for gone in self._listing.values():
                gone.add(key)
            keys = self._by_node.get(node)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_node[node]
            return
        if node not in self._nodes:
            if self.per_node:
                return
            if not self.claims(node):
                self._dropped.add(node)
                return
            self._by_node.setdefault(node, set()).add(key)
            self._seen[key] = self._slim(obj)
            return
        self._by_node.setdefault(node, set()).add(key)
        self._seen.pop(key, None)
        listed = self._relisting.get(node)
        if listed is not None:
            listed.add(key)
            self._take_listed_status(key, obj)
        self._track(key, obj)

    def _slim(self, obj: PodObject) -> PodObject:
        """``obj`` with its status copied out and the parts pods share, shared.

        Pods of one template on one node have equal specs, and pods of one template
        equal annotations: kept once each (a decoded spec is ~1 KiB of Python objects a
        pod; 100,000 pods on 10,000 nodes hold ~10,000 distinct ones), as are equal
        creation times. Read-only, as every decoded object here is. The tables are
        emptied when they grow past :data:`INTERN_LIMIT` (churn), which costs sharing,
        never correctness. The status is copied out of the list page or watch line it
        came in, so that buffer (~2 KiB a pod) is not kept alive by it.
        """
        spec_key = _encode_spec(obj.spec)
        spec = self._specs.get(spec_key)
        if spec is None:
            if len(self._specs) >= INTERN_LIMIT:
                self._specs.clear()
                self._spec_views.clear()
            spec = self._specs[spec_key] = obj.spec
        meta = obj.metadata
        facts = self._facts(meta)
        return msgspec.structs.replace(
            obj,
            metadata=msgspec.structs.replace(
                meta,
                namespace=facts.namespace,
                annotations=self._kept_annotations(meta.annotations, facts),
                labels=facts.labels,
                creation_timestamp=self._shared_time(meta.creation_timestamp),
                resource_version="",
            ),
            spec=spec,
            status=msgspec.Raw(bytes(obj.status)),
        )

    def _shared_annotations(self, annotations: dict[str, str]) -> dict[str, str]:
        """The lifecycle annotations of ``annotations`` (all a Plan reads) and the kubelet
        API's (scripted logs, usage), shared."""
        if not annotations:
            return _NO_ANNOTATIONS
        key = tuple((k, v) for k, v in annotations.items() if k.startswith(_KEPT_ANNOTATIONS))
        if not key:
            return _NO_ANNOTATIONS
        table = self._annotations
        shared = table.get(key)
        if shared is None:
            if len(table) >= INTERN_LIMIT:
                table.clear()
            shared = table[key] = dict(key)
        return shared

    def _facts(self, meta: _PodMeta) -> PodFacts:
        """What policy selectors see of a pod, interned: the pods of one template share it.

        Labels and owner kinds are kept whatever the policies of the moment (one may come
        later and select on them); annotations only under the keys a policy's
        ``matchAnnotations`` has named (:attr:`PolicyIndex.annotation_keys`): pods often
        carry per-pod ones, which would cost every pod facts of its own."""
        watched = self.scripts.policies.annotation_keys
        annotations = _NO_ANNOTATIONS
        if watched and meta.annotations:
            annotations = {k: meta.annotations[k] for k in watched if k in meta.annotations}
        owners = tuple(sorted({o.kind for o in meta.owner_references}))
        key = PodFacts.key(meta.namespace, meta.labels, annotations, owners)
        table = self._facts_table
        facts = table.get(key)
        if facts is None:
            if len(table) >= INTERN_LIMIT:
                table.clear()
            labels = dict(meta.labels)
            facts = table[key] = PodFacts(sys.intern(meta.namespace), labels, annotations, owners)
        return facts

    def _kept_annotations(self, annotations: dict[str, str], facts: PodFacts) -> dict[str, str]:
        """The annotations a slimmed pod keeps: the lifecycle ones and those policies watch."""
        lifecycle = self._shared_annotations(annotations)
        if not facts.annotations:
            return lifecycle
        return {**lifecycle, **facts.annotations}

    def _shared_time(self, when: datetime | None) -> datetime | None:
        if when is None:
            return None
        table = self._times
        shared = table.get(when)
        if shared is None:
            if len(table) >= INTERN_LIMIT:
                table.clear()
            shared = table[when] = when
        return shared

    def _view(self, record: PodRecord) -> PodView:
        """The :class:`PodView` of ``record``, its container parts shared by pods that share
        a spec (built when the pod is evaluated, not kept)."""
        spec = record.spec
        namespace, _, name = record.key.partition("/")
        entry = self._spec_views.get(id(spec))
        if entry is None or entry[0] is not spec:
            view = PodView(
                uid=record.uid,
                name=name,
                namespace=namespace,
                containers=tuple(_container(c) for c in spec.containers),
                init_containers=tuple(_container(c) for c in spec.init_containers),
                readiness_gates=tuple(g.condition_type for g in spec.readiness_gates),
                host_network=spec.host_network,
            )
            if self._specs.get(_encode_spec(spec)) is spec:  # interned: id stays its own
                self._spec_views[id(spec)] = (spec, view)
            return view
        shared = entry[1]
        return PodView(
            uid=record.uid,
            name=name,
            namespace=namespace,
            containers=shared.containers,
            init_containers=shared.init_containers,
            readiness_gates=shared.readiness_gates,
            host_network=shared.host_network,
        )

    def _track(self, key: str, obj: PodObject) -> None:
        record = self.pods.get(key)
        meta = obj.metadata
        if record is not None and record.uid != meta.uid:
            self._forget(key)
            record = None
        raw = bytes(obj.status)
        if record is None:
            self._ctx.handover.drop_pod(key)  # a released node's pod of that name is gone
            obj = self._slim(obj)
            meta = obj.metadata
            record = PodRecord(
                key=key,
                uid=meta.uid,
                node=obj.spec.node_name,
                spec=obj.spec,
                annotations=self._shared_annotations(meta.annotations),
                creation=meta.creation_timestamp or self._ctx.wall(),
                plan=RUNNING_NOW,
                deletion=meta.deletion_timestamp,
                facts=self._facts(meta),
            )
            problem = self._replan(record)
            self.pods[key] = record
            self._phases[record.phase] += 1
            if problem is not None:
                self._ctx.timers.schedule(("pod-event", key), self._ctx.clock())
        else:
            annotations = self._shared_annotations(meta.annotations)
            facts = self._facts(meta)
            same = annotations == record.annotations and facts is record.facts
            if not same:  # labels or annotations changed: the plan may (see policies_changed)
                old, old_policy = record.plan, record.policy
                record.annotations, record.facts = annotations, facts
                if self._replan(record) is not None:
                    self._ctx.timers.schedule(("pod-event", key), self._ctx.clock())
                if old_policy and not record.policy and not _has_lifecycle(annotations):
                    record.plan, record.policy = old, old_policy  # keeps the steps it has
                same = record.plan == old
            if (
                hash(raw) == record.status_hash
                and meta.deletion_timestamp == record.deletion
                and same
            ):
                return  # the echo of our own PATCH, or a change to parts we do not drive
            if record.writes_out and meta.deletion_timestamp == record.deletion and same:
                record.seen_while_writing = hash(raw)  # see _status_done
                return
            record.deletion = meta.deletion_timestamp
        self._set_status(record, raw)
        if record.deletion is not None and record.deleting_since is None:
            record.deleting_since = self._ctx.clock()
        self._ctx.timers.schedule(("pod", key), self._ctx.clock())

    def _resume(self, record: PodRecord) -> None:
        """Drive again a pod parked by :meth:`node_removed`, as it was (its IPs re-adopted)."""
        record.ips = ()
        record.delete_scheduled = False
        record.deleting_since = None if record.deletion is None else self._ctx.clock()
        self.pods[record.key] = record
        self._phases[record.phase] += 1
        self._ctx.timers.schedule(("pod", record.key), self._ctx.clock())

    def _replan(self, record: PodRecord) -> str | None:
        """Set the pod's Plan (and policy) from its annotations and facts; what is wrong
        with its annotations (None: nothing)."""
        record.plan, problem, record.policy = self._plan(
            record.namespace, record.annotations, record.uid, record.facts
        )
        return problem

    def _plan(
        self,
        namespace: str,
        annotations: Mapping[str, str],
        uid: str = "",
        facts: PodFacts | None = None,
    ) -> tuple[Plan, str | None, str]:
        """The pod's Plan, what is wrong with its annotations (None: nothing), and the policy
        it came from (``""``: none).

        A lifecycle annotation (``mockStatus``, ``delay*``) wins over every policy; a pod
        without one follows the policy its facts match (``podIPs`` still applies), or is
        Running at once."""
        scripts = self.scripts
        resolver = scripts.resolver(namespace, uid)
        try:
            plan = compile_plan(annotations, scripts=resolver)
        except ScriptError as exc:
            return _invalid_plan(str(exc), exc.reason), str(exc), ""
        except InputError as exc:
            return _invalid_plan(str(exc)), str(exc), ""
        if facts is None or _has_lifecycle(annotations):
            return plan, None, ""
        hit = scripts.policy_plan(facts, uid)
        if hit is None:
            return plan, None, ""
        policy, policy_plan = hit
        if plan.pod_ips:
            policy_plan = replace(policy_plan, pod_ips=plan.pod_ips)
        return policy_plan, None, policy

    def policies_changed(self) -> None:
        """A policy appeared, changed or went: re-match the pods, once for a burst of changes
        (one ``pod-policies`` timer, coalesced by the delay queue; see :meth:`_rematch`)."""
        self._ctx.timers.schedule(("pod-policies", ""), self._ctx.clock())

    async def _rematch(self) -> None:
        """Re-match the pods without lifecycle annotations against the policies.

        Matching is cached per shared :class:`PodFacts`, so this walks the pods but matches
        each template once, giving way to other tasks every :data:`REMATCH_BATCH` pods. A
        pod whose match gives another Plan is re-planned from its creation time (no
        replay), like a changed MockStatus; a pod no policy matches any more keeps the
        steps it has (a kubelet does not stop a container because its spec vanished); a
        pod that reached Succeeded or Failed stays there."""
        ctx = self._ctx
        now = ctx.wall()
        for index, (key, record) in enumerate(list(self.pods.items())):
            if index and not index % REMATCH_BATCH:
                await trio.lowlevel.checkpoint()
            if self.pods.get(key) is not record:
                continue
            if record.deleting_since is not None or _has_lifecycle(record.annotations):
                continue
            elapsed = (now - record.creation).total_seconds()
            if record.plan.state_at(elapsed).terminal or record.phase in ("Succeeded", "Failed"):
                continue
            plan, _problem, policy = self._plan(
                record.namespace, record.annotations, record.uid, record.facts
            )
            if not policy or plan == record.plan:
                continue
            record.plan, record.policy = plan, policy
            ctx.timers.schedule(("pod", key), ctx.clock())

    def scripts_changed(self, namespace: str, name: str) -> None:
        """MockStatus ``namespace/name`` appeared or changed: re-plan the pods naming it."""
        ctx = self._ctx
        now = ctx.wall()
        for key, record in self.pods.items():
            if (
                record.annotations.get(ANNOTATION_MOCK_STATUS) != name
                or record.namespace != namespace
            ):
                continue
            if record.deleting_since is not None:
                continue
            elapsed = (now - record.creation).total_seconds()
            if record.plan.state_at(elapsed).terminal or record.phase in (
                "Succeeded",
                "Failed",
            ):
                continue  # a terminal state reached stays
            plan, problem, _policy = self._plan(
                namespace, record.annotations, record.uid, record.facts
            )
            if plan == record.plan:
                continue
            if problem is not None:
                if record.plan.steps[0].source != "invalid":
                    continue  # keep following the last valid version
                ctx.timers.schedule(("pod-event", key), ctx.clock())
            record.plan = plan
            ctx.timers.schedule(("pod", key), ctx.clock())

    def _set_status(self, record: PodRecord, raw: bytes) -> None:
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
        record.status_hash = hash(raw)

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

    # -- pods that went by unheld -------------------------------------------------------------

    async def _catch_up_worker(self) -> None:
        """List the pods of each node driven after its pods went by unheld (shard moves), or
        whose kubelet restarted; ``CATCH_UP_LISTS`` of these workers list side by side.

        One LIST of ``spec.nodeName=<node>`` each: a move is rate limited by the coordinator,
        and a relist of every bound pod would cost far more. A pod the watch delivered
        meanwhile (fresher) or deleted meanwhile is left as the watch has it."""
        backoff = CATCH_UP_BACKOFF.start(clock=self._ctx.clock, rng=self._ctx.rng)
        while True:
            name = next((n for n in self._catch_up if n not in self._listing), None)
            if name is None:
                if self._catch_up_wake.is_set():  # spent: the workers share the next one
                    self._catch_up_wake = trio.Event()
                await self._catch_up_wake.wait()
                continue
            self._catch_up.discard(name)  # a restart while listing lists it again
            if name not in self._nodes:
                self._restarted.discard(name)
                continue
            restarted = name in self._restarted
            self._restarted.discard(name)
            gone = self._listing[name] = set()
            try:
                pods = await self._list_node(name)
            except FleetError as exc:
                delay = backoff.next_delay()
                log.warning("pods of node %s: %s; listing again in %.1f s", name, exc, delay)
                self._catch_up.add(name)
                if restarted:
                    self._restarted.add(name)
                await trio.sleep(delay)
                continue
            finally:
                del self._listing[name]
            backoff.mark_healthy()
            for obj in pods:
                meta = obj.metadata
                key = f"{meta.namespace}/{meta.name}"
                if key in gone:
                    continue
                if key not in self.pods:
                    self.on_event(WatchEvent("ADDED", obj))
                elif restarted:
                    self._take_listed_status(key, obj)
            if restarted:
                self._relisted(name)

    def _take_listed_status(self, key: str, obj: PodObject) -> None:
        """A restarted node's pod as its relist has it: a status let go (settled) is taken from
        the list, so that evaluating the pod needs no GET; a held one is as fresh."""
        record = self.pods.get(key)
        if record is None or record.raw_status or record.writes_out:
            return
        if record.uid == obj.metadata.uid:
            self._set_status(record, bytes(obj.status))

    def _watch_listed(self, name: str) -> None:
        """Node ``name``'s new pod watch (its kubelet restarted) has listed, and the consumer
        has taken the list's events: a pod held for it that the list did not bring was
        deleted while no watch of the node was open (the new watch starts afresh, so no
        DELETED comes for it), and is let go, as a kubelet's pod manager drops what its
        relist lacks; the others are evaluated."""
        listed = self._relisting.pop(name, set())
        for key in list(self._by_node.get(name, ())):
            record = self.pods.get(key)
            if key in listed or record is None:
                continue
            namespace, _, pod = key.partition("/")
            meta = _PodMeta(name=pod, namespace=namespace, uid=record.uid)
            self._take(WatchEvent("DELETED", PodObject(meta, _PodSpec(node_name=name))))
        self._relisted(name)

    def _relisted(self, name: str) -> None:
        """Node ``name``'s pods are listed again after its kubelet restarted: its status
        manager looks at every pod again, each evaluated now (against the status listed)."""
        if name not in self._nodes:
            return
        now = self._ctx.clock()
        for key in list(self._by_node.get(name, ())):
            if key in self.pods:
                self._ctx.timers.schedule(("pod", key), now)

    async def _list_node(self, name: str) -> list[PodObject]:
        path = resource_path("", "v1", "pods")
        # As a kubelet's reflector lists them (apiserver-transcripts/kubelet-requests.md):
        # resourceVersion=0 is served from kube-apiserver's watch cache, by its spec.nodeName
        # index; without it, from etcd, every pod of the cluster read to select the node's.
        selector = f"spec.nodeName={name}"
        params = {"fieldSelector": selector, "limit": "500", "resourceVersion": "0"}
        out: list[PodObject] = []
        while True:
            response = (await self._ctx.hot.request("GET", path, params=params)).raise_for_status()
            try:
                page = _decode_pod_list(response.content)
            except msgspec.DecodeError as exc:
                raise InputError(f"list of pods on node {name}: undecodable: {exc}") from exc
            out.extend(page.items or ())
            if not page.metadata.continue_:
                return out
            params = {
                "fieldSelector": selector,
                "limit": "500",
                "continue": page.metadata.continue_,
            }

    async def _fetch_status(self, record: PodRecord) -> bool:
        """Read a pod whose status is unheld; False if it is gone or could not be read."""
        namespace, _, name = record.key.partition("/")
        path = resource_path("", "v1", "pods", namespace=namespace, name=name)
        try:
            response = (await self._ctx.hot.request("GET", path)).raise_for_status()
            fresh = msgspec.json.decode(response.content, type=PodObject)
        except NotFound:
            return False  # its DELETED event is on its way
        except (FleetError, msgspec.DecodeError) as exc:
            log.warning("pod %s: reading its status: %s; trying again", record.key, exc)
            self._ctx.timers.schedule(
                ("pod", record.key), self._ctx.clock() + 1.0 + self._ctx.rng.random()
            )
            return False
        if fresh.metadata.uid != record.uid or self.pods.get(record.key) is not record:
            return False
        self._set_status(record, bytes(fresh.status))
        return True

    # -- nodes coming and going (NodeListener) -----------------------------------------------

    def node_added(self, name: str, state: NodeState) -> None:
        self._nodes[name] = state
        if self.per_node:
            self._watch_node(name)
            return
        for key in list(self._by_node.get(name, ())):
            parked = self._seen.pop(key, None)
            if isinstance(parked, PodRecord):
                self._resume(parked)
            elif parked is not None:
                self._track(key, parked)
        if name in self._dropped:
            self._dropped.discard(name)
            self._catch_up.add(name)
            self._catch_up_wake.set()

    def pod_cidrs_arrived(self, name: str) -> None:
        """Node ``name`` has its podCIDRs now (the cluster's, or the shard's after the wait):
        its pods without an IP are evaluated again, and get one."""
        now = self._ctx.clock()
        for key in list(self._by_node.get(name, ())):
            record = self.pods.get(key)
            if record is not None and not record.ips and not record.spec.host_network:
                self._ctx.timers.schedule(("pod", key), now)

    def kubelet_restarted(self, name: str) -> None:
        """Node ``name``'s kubelet restarted (a node script): it lists its pods again (one
        LIST of ``spec.nodeName=<node>``; with per-node watches, its watch starts over), and
        its status manager looks at every pod's status again: each is evaluated once listed,
        against the status listed (as a kubelet's status manager compares with its pod
        manager's copy), and written where it differs. Evaluated at once instead, a settled
        pod (its status let go) would be read back first: one GET a pod."""
        if name not in self._nodes:
            return
        if self.per_node:
            scope = self._node_watches.pop(name, None)
            if scope is not None:
                scope.cancel()
            self._relisting[name] = set()
            self._watch_node(name, restarted=True)
        else:
            self._restarted.add(name)
            self._catch_up.add(name)
            self._catch_up_wake.set()

    def node_removed(self, name: str) -> None:
        self._nodes.pop(name, None)
        self._catch_up.discard(name)
        self._restarted.discard(name)
        self._relisting.pop(name, None)
        scope = self._node_watches.pop(name, None)
        if scope is not None:
            scope.cancel()
        # Still this shard's (the fence closed, the CR is being re-registered): park the
        # pods as they are until the node is driven again. Gone to another shard: let go.
        park = not self.per_node and self.claims(name)
        if not park and self._ctx.handover.released(name):
            # Handed over: a write of these pods still queued or retried must not land
            # after the new owner's (the node's own writes are refused alike).
            self._ctx.handover.hold_pods(name, self._by_node.get(name, ()))
        for key in list(self._by_node.get(name, ())):
            record = self.pods.get(key)
            if record is not None:
                self._forget(key)
                if park:
                    self._seen[key] = record
            elif not park:
                self._seen.pop(key, None)
        if not park:
            self._by_node.pop(name, None)
            if not self.per_node:
                self._dropped.add(name)

    # -- timers --------------------------------------------------------------------------------

    async def handle(self, kind: str, key: str) -> None:
        if kind == "pod":
            await self._evaluate(key)
        elif kind == "pod-delete":
            await self._delete(key)
        elif kind == "pod-policies":
            await self._rematch()
        elif kind == "pod-event":
            record = self.pods.get(key)
            if record is not None and record.plan.steps[0].source == "invalid":
                involved = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "namespace": record.namespace,
                    "name": record.name,
                    "uid": record.uid,
                }
                reason = record.plan.steps[0].reason
                await self._ctx.events.warn(involved, reason, record.plan.steps[0].message)

    def _ips(
        self, record: PodRecord, node: NodeState, status: Mapping[str, Any]
    ) -> tuple[str, ...]:
        if record.plan.pod_ips:
            return record.plan.pod_ips
        if record.spec.host_network or node.pool is None:
            return ()
        if record.ips:
            return record.ips
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
        if not record.raw_status and not await self._fetch_status(record):
            return
        now = ctx.wall()
        elapsed = (now - record.creation).total_seconds()
        restart_policy = record.spec.restart_policy
        inits = _inits(record)
        step = record.plan.state_at(elapsed, restart_policy, inits)
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
            self._view(record),
            step,
            original=original,
            creation=record.creation,
            now=now,
            pod_ips=self._ips(record, node, current),
            host_ips=spec.internal_ips,
            style=style,
        )
        patch = make_patch(record.uid, current, desired)
        events = ctx.kubelet_events
        if patch is not None and events is not None and events.enabled:
            spec_images = {
                c.name: c.image for c in (*record.spec.init_containers, *record.spec.containers)
            }
            changes = container_events(
                current,
                desired,
                pulled_in=elapsed,
                deleting=deleting,
                images=spec_images,
                pod=f"{record.name}_{record.namespace}({record.uid})",
                uid=record.uid,
                now=now,
                sidecars=frozenset(
                    c.name for c in record.spec.init_containers if c.restart_policy == "Always"
                ),
            )
            if changes:
                events.pod(record.namespace, record.name, record.uid, changes, host=record.node)
        if deleting:
            if record.delete_scheduled:
                return
            record.delete_scheduled = True
            if patch is None:
                self._schedule_delete(record)
                return
            await self._submit_status(record, patch, then_delete=True)
            return
        following = record.plan.next_change_after(elapsed, restart_policy, inits)
        if patch is not None:
            await self._submit_status(record, patch, then_delete=False)
        elif following is None or following - elapsed >= STATUS_HOLD_LIMIT:
            record.raw_status = UNHELD  # nothing (soon) to write: see PodRecord.raw_status
        if following is not None:
            ctx.timers.schedule(("pod", key), ctx.clock() + max(0.0, following - elapsed))

    async def _submit_status(
        self, record: PodRecord, patch: dict[str, Any], *, then_delete: bool
    ) -> None:
        ctx = self._ctx
        namespace, _, name = record.key.partition("/")
        path = resource_path("", "v1", "pods", namespace=namespace, name=name, subresource="status")
        write = Write(
            "PATCH",
            path,
            encode_patch(patch),
            STRATEGIC_MERGE_PATCH,
            on_result=partial(self._status_done, record, then_delete),
            force=True,  # diffed against the status already (make_patch)
            # Not after its node left this shard (the record is forgotten then).
            wanted=lambda: self.pods.get(record.key) is record,
        )
        record.writes_out += 1
        await ctx.writes.submit(f"pods/{record.key}/status", write)

    def _status_done(self, record: PodRecord, then_delete: bool, result: WriteResult) -> None:
        record.writes_out -= 1
        if self.pods.get(record.key) is not record:
            return
        if result.outcome == "sent" and result.response is not None:
            fresh = msgspec.json.decode(result.response.content, type=PodObject)
            if fresh.metadata.uid == record.uid:
                # A copy of the status alone: the Raw would keep the whole answer alive.
                self._set_status(record, bytes(fresh.status))
                if not then_delete and self._settled(record):
                    record.raw_status = UNHELD  # see PodRecord.raw_status
        if not record.writes_out:
            seen, record.seen_while_writing = record.seen_while_writing, 0
            if seen and seen != record.status_hash:
                # Not (only) our echo: someone else changed the status meanwhile. The status
                # now held is at least as new as our write; evaluate against it.
                self._ctx.timers.schedule(("pod", record.key), self._ctx.clock())
        if then_delete and result.outcome not in ("gone", "superseded"):
            self._schedule_delete(record)

    def _settled(self, record: PodRecord) -> bool:
        """Nothing to write for ``record`` for a while (:data:`STATUS_HOLD_LIMIT`), unless
        something changes it."""
        if record.deleting_since is not None:
            return False
        elapsed = (self._ctx.wall() - record.creation).total_seconds()
        following = record.plan.next_change_after(
            elapsed, record.spec.restart_policy, _inits(record)
        )
        return following is None or following - elapsed >= STATUS_HOLD_LIMIT

    def _schedule_delete(self, record: PodRecord) -> None:
        since = record.deleting_since if record.deleting_since is not None else self._ctx.clock()
        delay = self._ctx.settings.shard.pod_deletion_delay
        self._ctx.timers.schedule(("pod-delete", record.key), max(self._ctx.clock(), since + delay))

    async def _delete(self, key: str) -> None:
        ctx = self._ctx
        record = self.pods.get(key)
        if record is None or not ctx.fresh():
            return
        options = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": record.uid},
        }
        path = resource_path("", "v1", "pods", namespace=record.namespace, name=record.name)
        await ctx.writes.submit(
            f"pods/{key}", Write("DELETE", path, encode_patch(options), JSON, force=True)
        )

    # -- fence -----------------------------------------------------------------------------------

    def pause_all(self) -> None:
        for name in list(self._nodes):
            self.node_removed(name)

    # -- observation -----------------------------------------------------------------------------

    def on_node(self, name: str) -> list[PodRecord]:
        """The pods held for a driven node (the kubelet API's ``/pods`` and stats)."""
        if name not in self._nodes:
            return []
        held = (self.pods.get(key) for key in self._by_node.get(name, ()))
        return [record for record in held if record is not None]

    def phases(self) -> Counter[str]:
        """Pods by ``status.phase``: counts kept as statuses change, not a walk over 100k pods."""
        return Counter(self._phases)
