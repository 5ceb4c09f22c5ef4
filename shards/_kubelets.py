"""The fake kubelets of one shard: Node CRs in, v1.Nodes, node status and CR status out.

:class:`NodeDriver` holds one :class:`NodeState` per Node CR the shard's
reflector hands it and does all the work in timer callbacks run by the
engine's fixed pool of workers (no task per node):

``sync``
    The reconcile of one CR, on every change of it (and after the fence
    reopens, see :meth:`NodeDriver.fence_regained`): validate it with the
    models (a bad one gets a Warning Event and a condition reason, the rest
    keep going), claim its node name (a second CR
    of one name in another namespace gets ``Registered=False NameConflict``
    and an Event, never the node), add the finalizer, POST the Node (a 409
    adopts the existing one as it stands: its addresses, podCIDRs and uid; a
    CR whose status shows a shard served it, after a restart or a takeover,
    GETs first), bring its labels, taints and annotations in line with the CR
    (taints other controllers added stay), create or adopt its Lease (POSTed
    without a GET when the Node was just created), report status when it
    changed, write the CR status when it changed. A new node costs three
    requests: Node POST, Lease POST, CR status PATCH (with the finalizer's,
    four: all through ``hot``, :data:`REGISTER_ON_HOT`). The Lease (create, adopt,
    renewals, their answers) is :class:`~shards._nodelease.NodeLeases`'s,
    given at construction: the driver says when a node is registered, driven
    or let go.
``status``
    The node status PATCH every ``statusUpdatesInterval`` (5 min default), as
    the kubelet's nodeStatusReportFrequency; changes are reported at once by
    ``sync``.
``report``
    The node watch (:mod:`shards._nodewatch`) saw stored conditions other than the
    kubelet's (``Ready=Unknown`` from the node-lifecycle controller): the status is
    reported at once, as the diff against what is stored (:meth:`NodeDriver.node_seen`).
``node-script``
    The node's NodeScript (:mod:`shards._nodescripts`) changes what it does:
    conditions, taints, capacity (written as the kubelet writes them, with
    its Events), a Lease pause (no renewal, no status: NotReady), a kubelet
    restart (Starting, re-registration, a relist of its pods); armed for the
    script's next change. ``node-scripts`` re-matches every node when the set
    of NodeScripts changes.
``gone``
    A CR left the shard's watch: moved to another shard (nothing is deleted)
    or deleted without a finalizer (its Node and Lease are deleted).
``release``
    The coordinator is handing a CR of this shard to another
    (:data:`~fleet.wire.HANDOVER_ANNOTATION`): the node was stopped at once
    and its writes are refused at the door (:mod:`shards._handover`); once
    every write sent before has been answered, the shard says so on the CR
    (:data:`~fleet.wire.RELEASED_ANNOTATION`), and only then does the
    coordinator relabel it for the new owner. Releases due together share one
    drain and are written side by side (:data:`RELEASE_WRITES`): a returning
    shard is handed hundreds of CRs at once, and each node is undriven from its
    stop to its new owner's first renewal.

A CR with a deletionTimestamp is cleaned up: Lease and Node deleted, then the
finalizer removed. ``suspend: true`` cancels the Lease and status timers;
``false`` renews at once. The pod driver learns which nodes are driven
through :meth:`NodeDriver.node_added`'s listener, and which node names the
shard's CRs claim through the :class:`NodeClaims` both are given.

What a node keeps between uses is bytes, not decoded JSON (10,000 nodes per
shard): its status and its CR status as the apiserver last returned them,
deflated; each is decoded when used (a status report, a sync).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import trio

from fleet.api import MockNode, load_node
from fleet.errors import AlreadyExists, Conflict, FleetError, InputError, Invalid, NotFound
from fleet.kube import (
    ListMeta,
    Response,
    WatchEvent,
    Write,
    WriteResult,
    resource_path,
)
from fleet.machinery import JSON, JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH
from fleet.wire import (
    API_VERSION,
    FINALIZER,
    HANDOVER_ANNOTATION,
    NODE_CR_ANNOTATION,
    RELEASED_ANNOTATION,
    SHARD_LABEL,
)
from shards._context import ShardContext
from shards._cr import (
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
from shards._kubeletapi import KubeletEndpoint, served_spec
from shards._library import MockStatusView, ScriptError
from shards._nodelease import NodeLeases, lease_path
from shards._nodeobj import (
    DEFAULT_KUBELET_VERSION,
    KubeletSpec,
    node_body,
    node_labels,
    node_status,
    node_status_patch,
    reported_conditions,
    status_changed,
)
from shards._nodescripts import (
    NO_OVERLAY,
    RESTART_WITHIN,
    NodeOverlay,
    NodeScriptLibrary,
    NodeTimeline,
    transition_event,
)
from shards._nodewatch import NodeObject, reports_differ
from shards._podstatus import encode_patch
from shards._timers import spread

__all__ = ["REGISTER_ON_HOT", "NodeClaims", "NodeDriver", "NodeListener", "NodeState"]

log = logging.getLogger(__name__)

READOPT_SPREAD = 1.0
"""Seconds over which the syncs of every CR are spread when the fence opens (at start,
and after a lost shard Lease came back, not unbroken): a burst of GETs, not one instant
of them."""
RESERVE_PAGE = 500
"""Nodes per page of the start-up list (:meth:`NodeDriver.reserve_addresses`): client-go's
pager default."""
RESUME_SYNC_AFTER = 1.0
"""Seconds after an unbroken reopening of the fence before the syncs of the resumed nodes
begin (spread over :data:`ADOPTION_PUT_OFF` more): their Lease renewals, due at once in the
lane, go first (500 in about a second)."""
ADOPTION_PUT_OFF = 3.0
"""Seconds over which the rest of the adoptions of nodes whose Leases were just taken over
are spread (one burst of Node GETs, label and status PATCHes then, not in the failover's
critical seconds); well within a node Lease renewal interval."""
RELEASE_WRITES = 32
"""Release PATCHes in flight at once after a shared drain (:meth:`NodeDriver._release`). One
drain and one PATCH at a time per timer worker released ~5 CRs/s on a loaded sandbox, while
the coordinator marked 10/s: a returning shard's 500 CRs waited 50-100 s between the stop
and the release, undriven, and ~40 of them went NotReady (``bench faults``, shard-kill)."""
RESYNC_DELAY = 1.0
"""Seconds before a sync that hit a conflict or an error runs again."""
META_ATTEMPTS = 5
"""Reads and writes of a Node's labels, annotations and taints before giving up (then the
CR's sync retries): a write fails only when another writer changed the taints between the
read and the write (its JSON patch tests them, :meth:`NodeDriver._reconcile_meta`)."""
META_RETRY_PAUSE = 0.2
"""Seconds before the next read after a failed write, times the attempt: room for the
other writer (a kube-controller-manager adding its condition taint) to finish."""
REGISTER_ON_HOT = True
"""Registration's Node and Lease GETs and POSTs go through ``hot``, the lean HTTP/1.1
transport that already carries these objects' status PATCHes and Lease PUTs, not through
``control`` (httpx), whose pool costs ~1 ms of shard CPU a request: registration is CPU
bound, and 2,000 nodes against the stub register at ~330/s this way, ~210/s through
``control``. So do each CR's finalizer and status PATCHes and a node's deletion: through
``control``, 64 syncs at once over httpx's pool of 100 connections spent 57 % of the
shard's CPU in the pool's matching of requests to connections (py-spy, kwok-ci on the
real control plane). Events and the rarer writes stay on ``control``."""
TAINTS_AGAIN = 0.5
"""Seconds after a node watch event showing one of the node's own taints gone before they
are written again (events in a burst share the one write)."""
RESTART_REPORT_DELAY = 1.0
"""Seconds after a kubelet restart before its status report: heartbeat times have a
one-second grain, so a report in the same second as the last one changes nothing."""


_decode_any = msgspec.json.Decoder(dict[str, Any]).decode
_decode_json = msgspec.json.Decoder().decode


class _Version(msgspec.Struct, rename="camel", frozen=True):
    resource_version: str = ""


class _StatusOnly(msgspec.Struct):
    """An answer read for its ``status`` (left as JSON) and resourceVersion; the rest is skipped."""

    metadata: _Version = _Version()
    status: msgspec.Raw = msgspec.Raw(b"{}")


class _Uid(msgspec.Struct, frozen=True):
    uid: str = ""


class _CrAnswer(msgspec.Struct):
    metadata: _Uid = _Uid()
    status: msgspec.Raw = msgspec.Raw(b"{}")


class _NodeAnswer(msgspec.Struct):
    """A v1.Node as registration reads it: its status left as JSON, to be kept as such."""

    metadata: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    status: msgspec.Raw = msgspec.Raw(b"{}")


class _Address(msgspec.Struct, frozen=True):
    type: str = ""
    address: str = ""


class _Addresses(msgspec.Struct, frozen=True):
    addresses: list[_Address] = []


class _PodCidrs(msgspec.Struct, rename="camel", frozen=True):
    pod_cidr: str = ""
    pod_cidrs: list[str] = []


class _Name(msgspec.Struct, frozen=True):
    name: str = ""


class _NodeAddresses(msgspec.Struct, frozen=True):
    """A Node as the start-up reservation reads it (everything else skipped)."""

    metadata: _Name = _Name()
    spec: _PodCidrs = _PodCidrs()
    status: _Addresses = _Addresses()


class _NodePage(msgspec.Struct, frozen=True):
    metadata: ListMeta = ListMeta()
    items: list[_NodeAddresses] | None = None


class _ServerVersion(msgspec.Struct, rename="camel", frozen=True):
    git_version: str = ""


_RELEASE = re.compile(r"^v\d+\.\d+\.\d+")
_decode_version = msgspec.json.Decoder(_ServerVersion).decode
_decode_status_only = msgspec.json.Decoder(_StatusOnly).decode
_decode_reserve_page = msgspec.json.Decoder(_NodePage).decode
_decode_cr_answer = msgspec.json.Decoder(_CrAnswer).decode
_decode_node_answer = msgspec.json.Decoder(_NodeAnswer).decode


def _json_object(data: bytes) -> dict[str, Any]:
    """``data`` decoded, if it is a JSON object; ``{}`` if empty, ``null`` or anything else."""
    if not data:
        return {}
    value = _decode_json(data)
    return value if isinstance(value, dict) else {}


class _Deflated:
    """JSON a node keeps for long and reads seldom, deflated against a typical one.

    The preset dictionary holds the field names and the kubelet's wording, so a
    node status of ~1.4 KiB is kept in ~0.1 KiB (13 MB over 10,000 nodes) for
    ~10 us to pack (each status answer: every 5 min a node) and ~2 us to unpack
    (each report). Anything unlike the typical one packs less well, never wrongly.
    """

    __slots__ = ("_zdict",)

    def __init__(self, typical: bytes) -> None:
        self._zdict = typical

    def pack(self, data: bytes) -> bytes:
        """``data`` deflated; ``b""`` stays ``b""``."""
        if not data:
            return b""
        packer = zlib.compressobj(6, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, self._zdict)
        return packer.compress(data) + packer.flush()

    def unpack(self, packed: bytes) -> bytes:
        if not packed:
            return b""
        unpacker = zlib.decompressobj(-15, self._zdict)
        return unpacker.decompress(packed) + unpacker.flush()


_TYPICAL_TIME = datetime(2024, 1, 1, tzinfo=UTC)
_NODE_STATUS = _Deflated(
    msgspec.json.encode(
        node_status(
            KubeletSpec(
                name="node",
                internal_ips=("10.0.0.1",),
                # the models' defaults
                capacity={
                    "cpu": "20",
                    "memory": "100Gi",
                    "pods": "200",
                    "ephemeral-storage": "100Gi",
                },
            ),
            _TYPICAL_TIME,
        )
    )
)
_CR_STATUS = _Deflated(
    msgspec.json.encode(
        cr_status(
            previous={},
            shard="0",
            node_name="node",
            generation=1,
            registered=ConditionValue("True", "Registered", "v1.Node node registered"),
            ready=ConditionValue("True", "KubeletReady", "Lease renewed by shard 0"),
            now=_TYPICAL_TIME,
        )
    )
)


class NodeListener(Protocol):
    """Told when a node starts and stops being driven (the pod driver)."""

    def node_added(self, name: str, state: NodeState) -> None: ...

    def node_removed(self, name: str) -> None: ...

    def pod_cidrs_arrived(self, name: str) -> None:
        """The node's podCIDRs came after its registration: pods may now get IPs."""
        ...

    def kubelet_restarted(self, name: str) -> None:
        """The node's kubelet restarted (a node script): it lists its pods again."""
        ...


@dataclass(slots=True)
class NodeState:
    """One Node CR and the fake kubelet it describes."""

    key: str
    """``namespace/name`` of the CR."""
    cr: CrView
    name: str
    spec: KubeletSpec | None = None
    """What the kubelet reports: :attr:`base` with the node script's :attr:`overlay`."""
    base: KubeletSpec | None = None
    """What the CR says (and the registration found)."""
    overlay: NodeOverlay = NO_OVERLAY
    """What the node's script makes of it now (:mod:`shards._nodescripts`)."""
    script: NodeTimeline | None = None
    restarted: tuple[str, int] | None = None
    """The last scripted kubelet restart done (script key, step index)."""
    node_uid: str = ""
    packed_status: bytes = b""
    """The node status as the apiserver last returned it: its JSON, deflated. It is read
    only when a report is due (on change, or every 5 min); decoded it cost ~5 KiB a node,
    as JSON ~1.4 KiB, deflated ~0.1 KiB. See :attr:`status`."""
    packed_cr_status: bytes = b""
    """The CR status as our last write of it returned it (JSON, deflated): newer than
    ``cr.status`` until the watch brings the CR again (which empties it)."""
    status_writes: int = 0
    """Status reports submitted and not yet answered: while one is on its way, what the node
    watch shows is about to be overwritten (no restore, no Event)."""
    taint_keys: set[str] = field(default_factory=set)
    """Keys of every taint this shard has put on the Node (its CR's, its scripts'): one of
    them there and no longer wanted is ours to remove, whoever wrote it back."""
    status_rv: str = ""
    """The resourceVersion the node's last status write returned: the node watch skips its
    echo (:mod:`shards._nodewatch`)."""
    interval: float = 300.0
    pool: PodIPPool | None = None
    driving: bool = False
    """Registered, Lease renewing (not suspended, fence open)."""
    registered: bool = False
    problem: ConditionValue | None = None
    """Why the CR cannot be (fully) served: InvalidSpec, NameConflict, ..."""
    busy: bool = False
    again: bool = False
    adoption_put_off: bool = False
    """The rest of this node's adoption was put off once after its Lease was taken over."""

    @property
    def status(self) -> dict[str, Any]:
        """The node status, decoded afresh on each access (a private copy); ``{}`` before registration."""
        return _json_object(_NODE_STATUS.unpack(self.packed_status))

    @property
    def cr_status_now(self) -> Mapping[str, Any]:
        """The CR status as the apiserver holds it, as far as the shard knows: our last
        write's answer (decoded afresh), else the CR's as the watch brought it."""
        if self.packed_cr_status:
            return _json_object(_CR_STATUS.unpack(self.packed_cr_status))
        return self.cr.status

    @property
    def involved(self) -> dict[str, Any]:
        meta = self.cr.metadata
        return {
            "apiVersion": API_VERSION,
            "kind": "Node",
            "namespace": meta.namespace,
            "name": meta.name,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        }


def _taints_patch(
    node_spec: Mapping[str, Any] | None, read: list[Any], taints: list[Any]
) -> list[dict[str, Any]]:
    """A JSON patch setting a Node's taints to ``taints`` only if they are still ``read``:
    the list tested, or where there was none the spec read (JSON patch cannot test for an
    absent member; a Node's spec changes rarely, and not with its status)."""
    if node_spec is None:
        return [{"op": "add", "path": "/spec", "value": {"taints": taints}}]
    if not read:  # and so some to add
        return [
            {"op": "test", "path": "/spec", "value": node_spec},
            {"op": "add", "path": "/spec/taints", "value": taints},
        ]
    ops = [{"op": "test", "path": "/spec/taints", "value": read}]
    if taints:
        return [*ops, {"op": "replace", "path": "/spec/taints", "value": taints}]
    return [*ops, {"op": "remove", "path": "/spec/taints"}]


def _node_path(name: str | None = None, sub: str | None = None) -> str:
    return resource_path("", "v1", "nodes", name=name, subresource=sub)


def overlaid(base: KubeletSpec, overlay: NodeOverlay) -> KubeletSpec:
    """What the kubelet reports: the CR's ``base`` with a node script's ``overlay``."""
    if overlay == NO_OVERLAY or not (overlay.conditions or overlay.taints or overlay.capacity):
        return base if not base.conditions else replace(base, conditions=())
    scripted = {t.key for t in overlay.taints}
    capacity = dict(overlay.capacity)
    return replace(
        base,
        conditions=overlay.conditions,
        taints=(*(t for t in base.taints if t.key not in scripted), *overlay.taints),
        capacity={**base.capacity, **capacity} if capacity else base.capacity,
        allocatable=(
            {**base.allocatable, **capacity}
            if capacity and base.allocatable is not None
            else base.allocatable
        ),
    )


def _older(rv: str, than: str) -> bool:
    """``rv`` is a resourceVersion before ``than``. Opaque by contract, but etcd's (and the
    sandbox's) are increasing integers; anything else is never older."""
    if not rv.isdigit() or not than.isdigit():
        return False
    return int(rv) < int(than)


class NodeClaims:
    """Node name -> how many of the shard's Node CRs name it (two only while in conflict).

    Kept by the node driver, read by the pod driver for every pod event (O(1)): the one
    pod watch sees every bound pod in the cluster, and holding those of other shards'
    nodes would cost each shard the whole fleet's pods.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._counts

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def add(self, name: str) -> None:
        self._counts[name] = self._counts.get(name, 0) + 1

    def remove(self, name: str) -> None:
        count = self._counts.get(name, 0) - 1
        if count > 0:
            self._counts[name] = count
        else:
            self._counts.pop(name, None)


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
        index = self._index(cidr)
        if index is None or self._used.get(index, node) != node:
            return  # outside the range, or held by another node: leave the books as they are
        self.release(node)
        self._used[index] = node
        self._by_node[node] = index

    def reserve(self, node: str, cidr: str) -> None:
        """Keep an existing Node's ``cidr`` from being allocated (see ``NodeAddressPool.reserve``)."""
        index = self._index(cidr)
        if index is not None and index not in self._used:
            self._used[index] = node

    def _index(self, cidr: str) -> int | None:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return None
        cluster = self._cluster
        if (
            network.version != cluster.version
            or network.prefixlen != self._prefix
            # subnet_of, for one version (checked above): both ends inside the cluster range
            or network.network_address not in cluster
            or network.broadcast_address not in cluster
        ):
            return None
        return (int(network.network_address) - int(cluster.network_address)) >> (
            cluster.max_prefixlen - self._prefix
        )

    def release(self, node: str) -> None:
        index = self._by_node.pop(node, None)
        if index is not None and self._used.get(index) == node:
            del self._used[index]
            self._free.append(index)


class NodeDriver:
    """Every fake kubelet of one shard; see the module docstring."""

    def __init__(
        self,
        ctx: ShardContext,
        listener: NodeListener,
        *,
        leases: NodeLeases,
        claims: NodeClaims,
        report: Callable[[MockStatusView, ScriptError | None], Awaitable[None]] | None = None,
    ) -> None:
        """``listener``: told which nodes are driven (the pod driver); ``leases``: their
        Leases; ``claims``: kept here, read by the pod driver; ``report``: told how each
        NodeScript validates (shard 0's reporter)."""
        self._ctx = ctx
        self._listener = listener
        self.leases = leases
        s = ctx.settings.shard
        shard_index = int(ctx.shard) if ctx.shard.isdigit() else 0
        parts = max(ctx.settings.shards, shard_index + 1, 1)
        self._addresses = NodeAddressPool(subrange(str(s.node_ip_range), shard_index, parts))
        self._cidr_mode: str = s.pod_cidr_allocation
        """``shard.podCidrAllocation``; ``auto`` turns ``cluster`` once the cluster is seen
        allocating, or ``internal`` once a wait saw none: pod IPs from the shard's range,
        no podCIDR written (see :meth:`_give_pod_cidr`), until the cluster writes one."""
        self._cidr_writing: set[str] = set()
        """Nodes whose podCIDR PATCH is in flight: its watch echo is not the cluster's."""
        self._cidrs = _CidrPool(
            subrange(str(s.pod_cidr_range), shard_index, parts), s.node_pod_cidr_prefix
        )
        self.states: dict[str, NodeState] = {}
        self._kubelet_endpoint: KubeletEndpoint | None = None
        """Where this shard serves the kubelet API (:meth:`kubelet_api_started`, before any
        node is registered); None: nodes get addresses from the range, and no one answers
        there."""
        self._claims = claims
        """In step with :attr:`states`: the node names they claim."""
        self._names: dict[str, str] = {}
        """Node name -> key of the CR that holds it (within this shard)."""
        self._leaving: dict[str, str] = {}
        """CR key -> node name, for CRs that left the watch and are being checked."""
        self._releasing: dict[str, CrView] = {}
        """CR key -> the CR as last seen, for CRs being handed over whose release is not
        yet written (see ``release`` in the module docstring)."""
        self._release_due: set[str] = set()
        """Keys whose ``release`` timer fired and whose release the running batch has not
        taken yet (:meth:`_release`)."""
        self._releasing_batch = False
        """A timer worker is running the release batches (:meth:`_release`)."""
        self._parked: dict[str, CrView] = {}
        """CR key -> the CR as it was when the fence closed, for the nodes whose Leases were
        being renewed then (:meth:`fence_lost`): the ones an unbroken reopening resumes."""
        self.resumed = 0
        """Nodes resumed by unbroken reopenings of the fence (:meth:`fence_regained`)."""
        self.restores = 0
        self._own_labels = {SHARD_LABEL: ctx.shard}
        self.kubelet_version = DEFAULT_KUBELET_VERSION
        """What a node whose CR names no ``kubeletVersion`` reports: the apiserver's version
        (:meth:`read_server_version`), as a kubelet of the cluster's own release would."""
        """On every Node this shard registers: what its node watch selects."""
        """Status reports made because the node watch saw other conditions stored."""
        self._node_io = ctx.hot if REGISTER_ON_HOT else ctx.control
        """Where each node's own requests go (:data:`REGISTER_ON_HOT`): registration, its
        CR's finalizer and status, its deletion."""
        self.scripts = NodeScriptLibrary(
            ctx.control,
            on_change=self.scripts_changed,
            on_report=report,
            clock=ctx.clock,
            # Its own draws (watch timeouts): the shard's sequence stays as it was without it.
            rng=random.Random(f"{ctx.shard}/nodescripts"),
        )
        """Every NodeScript (its reflector is run by the engine)."""

    def kubelet_api_started(self, endpoint: KubeletEndpoint) -> None:
        """The shard's kubelet API listens at ``endpoint``: the nodes registered from now
        on advertise it (the engine starts it before any node registers)."""
        self._kubelet_endpoint = endpoint

    # -- start -------------------------------------------------------------------------------

    async def reserve_addresses(self) -> int:
        """Before the first sync: the InternalIPs and podCIDRs of every Node already there.

        A restarted shard adopts its Nodes one sync at a time; a new CR synced before an
        old one must not be given the old Node's address (its adoption would then find it
        held). One paged list of all Nodes (name, addresses and podCIDR decoded, the rest
        skipped); a failure is logged, and adoption then keeps a duplicate rather than
        failing. Returns the number of Nodes seen.
        """
        params = {"limit": str(RESERVE_PAGE)}
        seen = 0
        try:
            while True:
                response = await self._ctx.control.request("GET", _node_path(), params=params)
                page = _decode_reserve_page(response.raise_for_status().content)
                for node in page.items or ():
                    seen += 1
                    name = node.metadata.name
                    for address in node.status.addresses:
                        if address.type == "InternalIP":
                            self._addresses.reserve(name, address.address)
                    for cidr in node.spec.pod_cidrs or (
                        [node.spec.pod_cidr] if node.spec.pod_cidr else []
                    ):
                        self._cidrs.reserve(name, cidr)
                token = page.metadata.continue_
                if not token:
                    return seen
                params = {**params, "continue": token}
        except (FleetError, msgspec.DecodeError) as exc:
            log.warning("existing Nodes not listed (%s): new nodes may take an address of one", exc)
            return seen

    async def read_server_version(self) -> str:
        """Once, at start: the apiserver's ``gitVersion`` becomes the default kubeletVersion.

        What a node reports shapes what its pods' status carries (``RuntimeStyle``: a
        1.24 kubelet writes no PodReadyToStartContainers condition, no hostIPs). An
        apiserver that does not say keeps :data:`~shards._nodeobj.DEFAULT_KUBELET_VERSION`.
        """
        try:
            response = await self._ctx.control.request("GET", "/version")
            version = _decode_version(response.raise_for_status().content).git_version
        except (FleetError, msgspec.DecodeError) as exc:
            log.warning(
                "apiserver version not read (%s): nodes report %s", exc, self.kubelet_version
            )
            return self.kubelet_version
        if _RELEASE.match(version):
            self.kubelet_version = version
        else:
            log.warning(
                "apiserver version %r is no release: nodes report %s", version, self.kubelet_version
            )
        return self.kubelet_version

    # -- reflector events (consumer task: no I/O here) --------------------------------------

    def on_event(self, event: WatchEvent[CrView]) -> None:
        cr = event.obj
        key = f"{cr.metadata.namespace}/{cr.metadata.name}"

        ours = cr.metadata.labels.get(SHARD_LABEL) == self._ctx.shard
        if event.type == "DELETED" or not ours:
            self._stop(key, check_gone=True)
            self._releasing.pop(key, None)
            return
        if cr.metadata.annotations.get(HANDOVER_ANNOTATION, self._ctx.shard) != self._ctx.shard:
            self._let_go(key, cr)
            return
        state = self.states.get(key)
        if state is not None and state.cr.metadata.uid != cr.metadata.uid:
            self._stop(key, check_gone=False)  # deleted and re-created: start afresh
            state = None
        if state is None:
            state = self.states[key] = NodeState(key=key, cr=cr, name=cr.metadata.name)
            self._claims.add(state.name)
            self._leaving.pop(key, None)
            if self._releasing.pop(key, None) is not None or self._ctx.handover.released(
                state.name
            ):
                # Handed back before (or instead of) the move: the node's writes go out again.
                self._ctx.timers.cancel(("release", key))
                self._ctx.handover.restore(state.name)
        else:
            state.cr = cr
            state.packed_cr_status = b""  # the watch's CR is the newer
        self._ctx.timers.schedule(("sync", key), self._ctx.clock())

    def claims(self, name: str) -> bool:
        """True if one of this shard's Node CRs names the v1.Node ``name``, registered or not.

        O(1): the pod driver asks for every pod event.
        """
        return name in self._claims

    def node_seen(self, event: WatchEvent[NodeObject]) -> None:
        """The node watch's event (consumer task: no I/O): restore what others overwrote.

        Where the stored conditions are not what the kubelet reports (the node-lifecycle
        controller's ``Ready=Unknown``), the event's status becomes the node's stored
        one and its status is reported at once: the PATCH is the diff against it.
        """
        if event.type == "DELETED":
            return
        meta = event.obj.metadata
        key = self._names.get(meta.name)
        state = self.states.get(key) if key is not None else None
        if state is None or state.spec is None:
            return
        cidrs = event.obj.spec.pod_cidrs
        if cidrs and not state.spec.pod_cidrs and state.node_uid in ("", meta.uid):
            self._take_pod_cidrs(state, cidrs)
            if self._cidr_mode in ("auto", "internal") and meta.name not in self._cidr_writing:
                self._cidr_mode = "cluster"
                log.info("the cluster allocates podCIDRs: the shard reads them back")
        if state.driving and state.node_uid in ("", meta.uid):
            present = {(t.key, t.effect) for t in event.obj.spec.taints}
            own = {(t.key, t.effect) for t in state.spec.taints}
            if not own <= present or any(
                key in state.taint_keys and (key, effect) not in own for key, effect in present
            ):
                # Another writer's taint PATCH from a stale read dropped one of ours, or put
                # back one we had removed: kube-controller-manager's condition taints (its
                # copy read from the apiserver's cache) replace the whole list, and did so
                # right after a script step's taint write, both ways.
                self._ctx.timers.schedule(("taints", state.key), self._ctx.clock() + TAINTS_AGAIN)
        if meta.resource_version == state.status_rv:
            return  # the echo of our own status write
        if state.status_writes or _older(meta.resource_version, state.status_rv):
            # Ours is on its way (a script's change, say), or was written after this: the
            # event shows a status our write overwrites or overwrote.
            return
        if state.node_uid and meta.uid != state.node_uid:
            return  # not the Node this state registered (re-created): its sync sorts it out
        status = event.obj.status
        if not state.driving:
            # Suspended: what is stored now (the controller's Ready=Unknown after the grace
            # period) is what the resumed kubelet's first report must be the diff against,
            # or it sends heartbeats only and the node stays NotReady (bench partition).
            state.packed_status = _NODE_STATUS.pack(bytes(status))
            return
        differ = reports_differ(state.spec, status)
        if not differ:
            return
        if state.overlay.paused:
            # The kubelet is down (a script's pause): it writes nothing; what it will write
            # when it is back is the diff against this.
            state.packed_status = _NODE_STATUS.pack(bytes(status))
            return
        log.info("node %s: stored %s differ from the kubelet's: reporting", meta.name, differ)
        state.packed_status = _NODE_STATUS.pack(bytes(status))
        self.restores += 1
        events = self._ctx.kubelet_events
        if events is not None:
            # As the kubelet's condition setters do on a transition of what it reads back.
            wanted = reported_conditions(state.spec)
            for kind in differ:
                reason = transition_event(kind, wanted[kind][0])
                if reason is not None:
                    events.node(meta.name, reason, f"Node {meta.name} status is now: {reason}")
        self._ctx.timers.schedule(("report", state.key), self._ctx.clock())

    def _stop(self, key: str, *, check_gone: bool) -> None:
        """Stop driving a CR at once: no timer left, nothing more sent for it."""
        self._parked.pop(key, None)
        state = self.states.pop(key, None)
        if state is None:
            return
        self._claims.remove(state.name)
        was_driving = state.driving
        self._halt(state)
        self.leases.drop(key)
        if not was_driving and state.name not in self._claims:
            # No longer ours, and not driven since (its CR's deletion cleanup, a closed
            # fence): the listener lets go of the pods it kept for it.
            self._listener.node_removed(state.name)
        if self._names.get(state.name) == key:
            del self._names[state.name]
            self._addresses.release(state.name)
            self._cidrs.release(state.name)
            if check_gone and state.registered:
                self._leaving[key] = state.name
                self._ctx.timers.schedule(("gone", key), self._ctx.clock())

    def _let_go(self, key: str, cr: CrView) -> None:
        """The coordinator is handing CR ``key`` to another shard: stop it now, refuse its
        node's writes from now on, and say so on the CR once nothing of it is in flight."""
        name = cr.metadata.name
        if self._names.get(name, key) == key:  # a CR that lost its name never drove the node
            self._ctx.handover.release(name)
        self._stop(key, check_gone=False)
        if cr.metadata.annotations.get(RELEASED_ANNOTATION) == self._ctx.shard:
            self._releasing.pop(key, None)  # said already: the coordinator's turn
            self._ctx.timers.cancel(("release", key))
            return
        if key not in self._releasing:
            log.info(
                "node CR %s: handed over to shard %s",
                key,
                cr.metadata.annotations.get(HANDOVER_ANNOTATION),
            )
        self._releasing[key] = cr
        self._ctx.timers.schedule(("release", key), self._ctx.clock())

    async def _release(self, key: str) -> None:
        """Write the release of a CR being handed over, after every write sent before.

        Releases due together go as a batch: the first timer worker to get one runs the
        batches (the others only add their key and return): every key due, one drain (it
        covers every write sent before it, theirs included: each node was stopped and
        closed at the door before its timer fired), then their PATCHes side by side, then
        the keys that came due meanwhile."""
        self._release_due.add(key)
        if self._releasing_batch:
            await trio.lowlevel.checkpoint()
            return
        self._releasing_batch = True
        try:
            while self._release_due:
                keys = [k for k in self._release_due if k in self._releasing]
                self._release_due.clear()
                if not keys:
                    continue
                began = self._ctx.clock()
                await self._ctx.handover.drain()
                drained = self._ctx.clock()
                limit = trio.CapacityLimiter(RELEASE_WRITES)
                async with trio.open_nursery() as nursery:
                    for due in keys:
                        nursery.start_soon(self._write_release, due, limit)
                # The handover's middle in the log (let go -> released -> the coordinator's
                # label): the drain waits for every write the shard has out.
                log.info(
                    "released %d CRs: drain %.2f s, release PATCHes %.2f s",
                    len(keys),
                    drained - began,
                    self._ctx.clock() - drained,
                )
        finally:
            self._releasing_batch = False

    async def _write_release(self, key: str, limit: trio.CapacityLimiter) -> None:
        """The release PATCH of ``key`` (drained already); on failure its timer again."""
        ctx = self._ctx
        cr = self._releasing.get(key)
        if cr is None:
            return
        meta = cr.metadata
        # On the CR as seen: a CR changed since (handed back, handed elsewhere) is answered
        # from its newer version, which the watch brings.
        patch = {
            "metadata": {
                "resourceVersion": meta.resource_version,
                "annotations": {RELEASED_ANNOTATION: ctx.shard},
            }
        }
        try:
            async with limit:
                response = await ctx.control.request(
                    "PATCH",
                    cr_path(meta.namespace, meta.name),
                    body=encode_patch(patch),
                    content_type=MERGE_PATCH,
                )
            if response.status == 404:
                self._releasing.pop(key, None)
                return
            response.raise_for_status()
        except Conflict:
            return  # the watch brings the newer CR, and with it another release if still due
        except FleetError as exc:
            log.info("node CR %s: release not written (%s); retrying", key, exc)
            if self._releasing.get(key) is cr:
                ctx.timers.schedule(("release", key), ctx.clock() + RESYNC_DELAY)
            return
        if self._releasing.get(key) is cr:
            del self._releasing[key]

    def _halt(self, state: NodeState) -> None:
        timers = self._ctx.timers
        for kind in ("sync", "status", "report", "cidr", "node-script", "taints"):
            timers.cancel((kind, state.key))
        self.leases.stop(state.key)
        if state.overlay != NO_OVERLAY or state.script is not None:
            # Matched and applied again once driven (a paused Lease stays paused then).
            state.script = None
            state.overlay = NO_OVERLAY
            if state.base is not None:
                self._set_spec(state, state.base)
        if state.driving:
            state.driving = False
            self._listener.node_removed(state.name)

    # -- the fence ---------------------------------------------------------------------------

    def fence_lost(self) -> None:
        """Stop driving every node at once. What the apiserver may change meanwhile is
        trusted again only if the fence reopens unbroken: the Leases being renewed are
        parked (kept, not renewed), every node counts as unregistered."""
        self._parked.clear()
        for state in self.states.values():
            if self.leases.park(state.key) and state.driving:
                self._parked[state.key] = state.cr
            self._halt(state)
            state.registered = False

    def fence_regained(self, *, unbroken: bool = False) -> None:
        """Drive every CR still labelled ours again.

        ``unbroken`` (:meth:`~shards._shardlease.ShardLease.unbroken`): no other shard can
        have been given a CR of this shard while the fence was closed. Then a node whose
        Lease was renewing when it closed, whose CR the watch still shows as it was then
        (ours, not being handed over, not being deleted, its spec unchanged), is resumed:
        its Lease renewals go on through the lane, the first due at once, and the rest of
        its adoption (the Node GET, labels, status, CR status: its sync, whose Lease
        takeover finds the Lease renewing) follows, spread, after :data:`RESUME_SYNC_AFTER`.
        Re-adopting 500 nodes by their syncs alone (a takeover PATCH each, 64 at a time,
        among the rest of each adoption) took 42 s on a loaded machine: past the node
        Leases' 40 s, ~100 nodes went NotReady after an 8 s apiserver restart (``bench
        faults``). Every other CR is re-adopted by its sync, spread over
        :data:`READOPT_SPREAD`, its Lease taken over first (today's careful path)."""
        ctx = self._ctx
        now = ctx.clock()
        parked, self._parked = self._parked, {}
        resumed = 0
        for key, state in self.states.items():
            before = parked.get(key)
            if (
                unbroken
                and before is not None
                and self._unchanged(state, before)
                and self.leases.resume(key, now)
            ):
                state.adoption_put_off = True  # put off here: the sync adopts at once
                when = now + RESUME_SYNC_AFTER + spread(ADOPTION_PUT_OFF, ctx.rng)
                resumed += 1
            else:
                self.leases.release(key)
                when = now + spread(READOPT_SPREAD, ctx.rng)
            ctx.timers.schedule(("sync", key), when)
        self.resumed += resumed
        log.info(
            "fence reopened (%s): %d nodes resumed, %d re-adopted",
            "unbroken" if unbroken else "not proven unbroken",
            resumed,
            len(self.states) - resumed,
        )

    def _unchanged(self, state: NodeState, before: CrView) -> bool:
        """The CR as the watch shows it now is the one parked: ours, the same object, not
        being handed over or deleted, its spec as it was."""
        cr = state.cr
        meta = cr.metadata
        return (
            meta.uid == before.metadata.uid
            and meta.labels.get(SHARD_LABEL) == self._ctx.shard
            and meta.annotations.get(HANDOVER_ANNOTATION, self._ctx.shard) == self._ctx.shard
            and meta.deletion_timestamp is None
            and cr.spec == before.spec
            and self._names.get(state.name) == state.key
            and not self._ctx.handover.released(state.name)
        )

    # -- timers ------------------------------------------------------------------------------

    async def handle(self, kind: str, key: str) -> None:
        if kind == "sync":
            await self._sync_guarded(key)
        elif kind == "cidr":
            await self._give_pod_cidr(key)
        elif kind == "status":
            await self._report(key, periodic=True)
        elif kind == "report":
            await self._report(key, periodic=False)
        elif kind == "gone":
            await self._check_gone(key)
        elif kind == "release":
            await self._release(key)
        elif kind == "node-script":
            await self._follow_script(key)
        elif kind == "node-scripts":
            self._rematch_all()
        elif kind == "taints":
            state = self.states.get(key)
            if state is not None and state.driving and self._ctx.fresh():
                try:
                    await self._write_meta(state, None)
                except FleetError as exc:
                    log.info("node %s: taints not restored (%s); trying again", state.name, exc)
                    self._ctx.timers.schedule(("taints", key), self._ctx.clock() + RESYNC_DELAY)
        elif kind == "kubelet-restart":
            state = self.states.get(key)
            if state is not None and state.driving:
                await self._kubelet_restart(state)

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
            # A closed fence re-syncs every CR when it reopens; an open one must retry here.
            if self.states.get(key) is state and (self._ctx.fresh() or self._ctx.fence_open()):
                self._ctx.timers.schedule(("sync", key), self._ctx.clock() + RESYNC_DELAY)
        finally:
            state.busy = False
            if state.again and self.states.get(key) is state:
                state.again = False
                self._ctx.timers.schedule(("sync", key), self._ctx.clock())

    async def _sync(self, state: NodeState) -> None:
        ctx = self._ctx
        if not ctx.fresh():
            if ctx.fence_open():  # not fresh for a moment only: no fence_regained will come
                ctx.timers.schedule(("sync", state.key), ctx.clock() + RESYNC_DELAY)
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
        created = False
        if not state.registered and not model.spec.suspend and state.cr_status_now.get("nodeName"):
            # Served before (a takeover, a restart, the fence reopening): its Lease first
            # (a node resumed by an unbroken fence has it renewing: no request).
            taken = await self.leases.take_over(state.key, state.name)
            if taken and not state.adoption_put_off:
                # The rest (the Node read and its labels, status, CR status) can wait a
                # moment: the Lease now holds for its duration, and in a failover those
                # requests compete with the coordinator's moves of the nodes still waiting
                # for theirs (481 moves took 22 s on a loaded sandbox, past the 15 s left).
                state.adoption_put_off = True
                ctx.timers.schedule(
                    ("sync", state.key), ctx.clock() + spread(ADOPTION_PUT_OFF, ctx.rng)
                )
                return
        if not state.registered:
            registered = await self._register(state, model)
            if registered is None:
                return
            created = registered
        else:
            await self._update(state, model)
        state.problem = None
        if model.spec.suspend:
            self._halt(state)
        else:
            if self.states.get(state.key) is not state:
                return  # stopped meanwhile: the Lease (by key) is no longer this sync's
            await self.leases.ensure(state.key, node_created=created)
            if state.overlay.paused:  # its script has the kubelet down: it stays down
                self.leases.stop(state.key)
            if not state.driving:
                state.driving = True
                self._listener.node_added(state.name, state)
            await self._report(state.key, periodic=False, node_created=created)
            if created and ctx.kubelet_events is not None:
                ctx.kubelet_events.node_started(state.name)
            await self._match_script(state)
        await self._write_cr_status(state)

    # -- registration --------------------------------------------------------------------------

    def _spec_for(
        self, state: NodeState, model: MockNode, ips: tuple[str, ...] | None, cidrs: tuple[str, ...]
    ) -> KubeletSpec:
        config = model.spec.node_config
        endpoint = self._kubelet_endpoint
        if endpoint is not None:  # the shard serves the kubelet API: its address it is
            internal: tuple[str, ...] = (endpoint.address_of(state.name),)
        elif config.address:
            internal = (self._addresses.assign(state.name, config.address),)
        elif ips:
            try:
                internal = (self._addresses.assign(state.name, ips[0]), *ips[1:])
            except InputError as exc:
                # The Node has this address on the apiserver, whatever the books say: keep it
                # (a duplicate, logged), rather than fail this node's every sync.
                log.warning("node %s: adopted with a duplicate address: %s", state.name, exc)
                internal = ips
        else:
            internal = (self._addresses.allocate(state.name),)
        spec = kubelet_spec(
            model,
            key=state.key,
            internal_ips=internal,
            pod_cidrs=cidrs,
            labels=self._own_labels,
            kubelet_version=self.kubelet_version,
        )
        return spec if endpoint is None else served_spec(spec, endpoint)

    async def _register(self, state: NodeState, model: MockNode) -> bool | None:
        """POST the Node, or adopt the one there. True: POSTed now; False: adopted; None: conflict.

        A CR a shard has served before (its status names the node) most likely has its
        Node already (a restart, a takeover, the fence reopening): GET it first. Any other
        CR is new: POST at once, and only a 409 costs the GET.
        """
        ctx = self._ctx
        response: Response | None = None
        if state.cr_status_now.get("nodeName"):
            response = await self._node_io.request("GET", _node_path(state.name))
        if response is None or response.status == 404:
            cidrs = self._registration_cidrs(state, model)
            spec = self._spec_for(state, model, None, cidrs)
            body = encode_patch(node_body(spec, ctx.wall()))
            try:
                response = await self._node_io.request(
                    "POST", _node_path(), body=body, content_type=JSON
                )
                response.raise_for_status()
            except AlreadyExists:
                response = await self._node_io.request("GET", _node_path(state.name))
                response.raise_for_status()
            else:
                self._adopt_node(state, spec, _decode_node_answer(response.content))
                return True
        node = _decode_node_answer(response.raise_for_status().content)
        meta = node.metadata
        owner = (meta.get("annotations") or {}).get(NODE_CR_ANNOTATION)
        if owner and owner != state.key:
            await self._conflict(state, owner)
            return None
        status = _json_object(node.status)
        ips = tuple(
            str(a["address"])
            for a in status.get("addresses") or []
            if isinstance(a, Mapping) and a.get("type") == "InternalIP" and a.get("address")
        )
        node_spec = node.spec
        cidrs = tuple(node_spec.get("podCIDRs") or ()) or (
            (node_spec["podCIDR"],) if node_spec.get("podCIDR") else ()
        )
        if cidrs:
            self._cidrs.adopt(state.name, cidrs[0])
        spec = self._spec_for(state, model, ips, cidrs)
        self._adopt_node(state, spec, node)
        await self._reconcile_meta(state, None, {"metadata": meta, "spec": node_spec})
        return False

    def _set_spec(self, state: NodeState, base: KubeletSpec) -> None:
        state.base = base
        state.spec = overlaid(base, state.overlay)

    def _adopt_node(self, state: NodeState, spec: KubeletSpec, node: _NodeAnswer) -> None:
        self._set_spec(state, spec)
        state.node_uid = str(node.metadata.get("uid") or "")
        if self.states.get(state.key) is state:  # not a sync that outlived its CR's stop
            self.leases.node(state.key, state.name, state.node_uid)
        state.packed_status = _NODE_STATUS.pack(bytes(node.status))
        state.registered = True
        self._set_pool(state)
        if not spec.pod_cidrs and self._cidr_mode != "cluster":
            wait = 0.0 if self._cidr_mode != "auto" else self._ctx.settings.shard.pod_cidr_wait
            self._ctx.timers.schedule(("cidr", state.key), self._ctx.clock() + wait)

    def _set_pool(self, state: NodeState) -> None:
        cidrs = state.spec.pod_cidrs if state.spec is not None else ()
        try:
            state.pool = PodIPPool(cidrs) if cidrs else None
        except InputError as exc:
            log.warning("node %s: no pod IP pool: %s", state.name, exc)
            state.pool = None

    # -- pod CIDRs (shard.podCidrAllocation) ---------------------------------------------------

    def _registration_cidrs(self, state: NodeState, model: MockNode) -> tuple[str, ...]:
        """The podCIDRs a new Node is POSTed with: the CR's, else the shard's where it allocates."""
        own = tuple(model.spec.node_config.effective_pod_cidrs())
        if own or self._cidr_mode != "shard":
            return own
        return (self._cidrs.allocate(state.name),)

    def _take_pod_cidrs(self, state: NodeState, cidrs: tuple[str, ...]) -> None:
        assert state.spec is not None and state.base is not None
        self._set_spec(state, replace(state.base, pod_cidrs=cidrs))
        self._set_pool(state)
        self._ctx.timers.cancel(("cidr", state.key))
        if state.driving:
            self._listener.pod_cidrs_arrived(state.name)

    async def _give_pod_cidr(self, key: str) -> None:
        """A registered node has no podCIDR: write the shard's (``shard``), or under ``auto``
        after the wait give its pods IPs from the shard's range without writing one; unless
        the cluster has been seen allocating them meanwhile.

        ``auto`` writes none because a kube-controller-manager allocating node CIDRs that
        starts later, or restarts, exits on a podCIDR outside its ``--cluster-cidr``
        (``failed to mark cidr ... as occupied``: fatal): a range allocator slow to start
        on a loaded real control plane missed the wait, the shard wrote 244.0.9.0/24, and
        kube-controller-manager would not start again."""
        state = self.states.get(key)
        if (
            state is None
            or not state.registered
            or state.spec is None
            or state.spec.pod_cidrs
            or self._cidr_mode == "cluster"
        ):
            return
        cidr = self._cidrs.allocate(state.name)
        if self._cidr_mode != "shard":
            if self._cidr_mode == "auto":
                self._cidr_mode = "internal"
                log.info("no podCIDR came from the cluster: pod IPs from the shard's range")
            state.pool = PodIPPool((cidr,))
            self._ctx.timers.cancel(("cidr", state.key))
            if state.driving:
                self._listener.pod_cidrs_arrived(state.name)
            return
        patch = {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
        self._cidr_writing.add(state.name)
        try:
            response = await self._ctx.control.request(
                "PATCH", _node_path(state.name), body=encode_patch(patch), content_type=MERGE_PATCH
            )
            answer = _decode_node_answer(response.raise_for_status().content)
        except FleetError as exc:
            # Most likely someone set one meanwhile (a podCIDR is set once): the watch brings it.
            log.info("node %s: podCIDR %s not written: %s", state.name, cidr, exc)
            self._cidrs.release(state.name)
            return
        finally:
            self._cidr_writing.discard(state.name)
        written = tuple(answer.spec.get("podCIDRs") or ()) or (cidr,)
        if self.states.get(key) is state and state.spec is not None and not state.spec.pod_cidrs:
            self._take_pod_cidrs(state, written)

    async def _update(self, state: NodeState, model: MockNode) -> None:
        """A registered node whose CR changed: labels, taints, annotations, capacity."""
        old = state.spec
        assert old is not None
        self._set_spec(state, self._spec_for(state, model, old.internal_ips, old.pod_cidrs))
        spec = state.spec
        assert spec is not None
        if (old.labels, old.taints, old.annotations) == (
            spec.labels,
            spec.taints,
            spec.annotations,
        ):
            return
        if not await self._write_meta(state, old):
            state.registered = False  # deleted behind our back: register again
            raise NotFound("node vanished", status=404)

    async def _write_meta(self, state: NodeState, old: KubeletSpec | None) -> bool:
        """Read the Node and write the labels, annotations and taints ``state`` owns (see
        :meth:`_reconcile_meta`), again after a write that another writer's taint change
        failed; False if the Node is gone."""
        ctx = self._ctx
        for attempt in range(META_ATTEMPTS):
            response = await ctx.control.request("GET", _node_path(state.name))
            if response.status == 404:
                return False
            node = _decode_any(response.raise_for_status().content)
            try:
                await self._reconcile_meta(state, old, node)
                return True
            except (Conflict, Invalid):  # the taints changed since the read: read them again
                if attempt == META_ATTEMPTS - 1:
                    raise
                await trio.sleep(META_RETRY_PAUSE * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reconcile_meta(
        self, state: NodeState, old: KubeletSpec | None, node: Mapping[str, Any]
    ) -> None:
        r"""Write the labels, annotations and taints the CR (and its script) own over ``node``
        as read; others' stay as they are.

        Labels and annotations go by merge PATCH, key by key, which no other writer's keys
        meet. Taints are one list: a JSON patch that ``test``\ s the list read (or, when
        there is none, the spec read) and then sets it, so a taint another writer added
        meanwhile fails the write (422) instead of being dropped. Not the resourceVersion:
        that moves with every status write of the node's own, and a script step's taint
        write met its own status report between read and write every time on a busy
        apiserver (409 after 409; the taint never came)."""
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
        node_spec = node.get("spec")
        current_taints = list((node_spec or {}).get("taints") or [])
        state.taint_keys |= {t.key for t in spec.taints} | {
            t.key for t in (old.taints if old else ())
        }
        owned = state.taint_keys
        taints = [t for t in current_taints if isinstance(t, Mapping) and t.get("key") not in owned]
        taints += [t.to_json() for t in spec.taints]
        control = self._ctx.control
        if label_patch or annotation_patch:
            patch: dict[str, Any] = {"metadata": {}}
            if label_patch:
                patch["metadata"]["labels"] = label_patch
            if annotation_patch:
                patch["metadata"]["annotations"] = annotation_patch
            response = await control.request(
                "PATCH", _node_path(state.name), body=encode_patch(patch), content_type=MERGE_PATCH
            )
            response.raise_for_status()
        if taints != current_taints:
            response = await control.request(
                "PATCH",
                _node_path(state.name),
                body=encode_patch(_taints_patch(node_spec, current_taints, taints)),
                content_type=JSON_PATCH,
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
            response = await self._node_io.request(
                "PATCH",
                cr_path(meta.namespace, meta.name),
                body=encode_patch(patch),
                content_type=MERGE_PATCH,
            )
            response.raise_for_status()
        except Conflict:
            pass  # a newer CR is on its way through the watch; its sync adds it
        self._ctx.timers.schedule(("sync", state.key), self._ctx.clock() + RESYNC_DELAY)

    # -- node status -------------------------------------------------------------------------

    async def _report(self, key: str, *, periodic: bool, node_created: bool = False) -> None:
        """Report the node status if due: ``periodic``, changed, or first since (re)adoption.

        ``node_created``: the Node was POSTed just now with the status the kubelet
        wants, so its first report is due only on change (heartbeat times aside).
        """
        ctx = self._ctx
        state = self.states.get(key)
        if state is None or not state.driving or state.spec is None:
            return
        if not ctx.fresh():
            if periodic and ctx.fence_open():  # put off, not dropped (see ShardContext)
                ctx.timers.schedule(("status", key), ctx.clock() + RESYNC_DELAY)
            return
        if state.overlay.paused:  # the kubelet is down (a script): it reports when back
            if periodic:
                ctx.timers.schedule(("status", key), ctx.clock() + state.interval)
            return
        current = state.status
        desired = node_status(state.spec, ctx.wall(), current)
        first = ("status", key) not in ctx.timers
        send = periodic or status_changed(current, desired) or (first and not node_created)
        if send:
            patch = node_status_patch(current, desired)
            if patch:

                def done(result: WriteResult) -> None:
                    state.status_writes -= 1
                    if result.outcome == "sent" and result.response is not None:
                        if self.states.get(key) is state:
                            answer = _decode_status_only(result.response.content)
                            state.packed_status = _NODE_STATUS.pack(bytes(answer.status))
                            state.status_rv = answer.metadata.resource_version
                            if state.spec is not None and reports_differ(state.spec, answer.status):
                                # Another writer's conditions (Ready=Unknown) survived the
                                # merge: the watch's events older than this one are skipped
                                # (see node_seen), so put them right from here.
                                ctx.timers.schedule(("report", key), ctx.clock())

                write = Write(
                    "PATCH",
                    _node_path(state.name, "status"),
                    encode_patch(patch),
                    STRATEGIC_MERGE_PATCH,
                    on_result=done,
                    # Not after the node left this shard (or stopped being driven).
                    wanted=lambda: state.driving and self.states.get(key) is state,
                )
                state.status_writes += 1
                await ctx.writes.submit(f"nodes/{state.name}/status", write)
        if (
            send or first
        ):  # a node just created is not reported now, but every interval all the same
            interval = state.interval
            if first and not periodic:
                # The first periodic report of a node just registered (or re-adopted) comes
                # anywhere in the next interval, so a registration burst does not come back
                # as a status burst every interval (a kubelet's own start times are spread).
                interval *= 0.1 + 0.9 * ctx.rng.random()
            ctx.timers.schedule(("status", key), ctx.clock() + interval)

    # -- node scripts ------------------------------------------------------------------------

    def scripts_changed(self) -> None:
        """A NodeScript appeared, changed or went: re-match every node, once for a burst."""
        self._ctx.timers.schedule(("node-scripts", ""), self._ctx.clock())

    def _rematch_all(self) -> None:
        now = self._ctx.clock()
        for key, state in self.states.items():
            if state.driving:
                self._ctx.timers.schedule(("node-script", key), now)

    async def _match_script(self, state: NodeState) -> None:
        """Which NodeScript the node follows now; a change is followed at once."""
        base = state.base
        if base is None:
            return
        meta = state.cr.metadata
        found = self.scripts.match(meta.namespace, state.name, node_labels(base), meta.annotations)
        if isinstance(found, ScriptError):
            await self._ctx.events.warn(state.involved, found.reason, str(found))
            found = None
        if found is not state.script:
            state.script = found
            self._ctx.timers.schedule(("node-script", state.key), self._ctx.clock())

    async def _follow_script(self, key: str) -> None:
        """The node's script changes something now: apply it, arm the next change."""
        ctx = self._ctx
        state = self.states.get(key)
        if state is None or not state.driving or state.base is None:
            return
        if not ctx.fresh():
            if ctx.fence_open():
                ctx.timers.schedule(("node-script", key), ctx.clock() + RESYNC_DELAY)
            return
        await self._match_script(state)
        ctx.timers.cancel(("node-script", key))  # armed again below, for the next change
        script = state.script
        now = ctx.wall()
        overlay, following = (
            (NO_OVERLAY, None) if script is None else script.state_at(state.name, now)
        )
        if (
            overlay.restart is not None
            and overlay.restart != state.restarted
            and script is not None
        ):
            state.restarted = overlay.restart
            since = (now - script.created).total_seconds() - overlay.restart_at
            if since <= RESTART_WITHIN:
                await self._kubelet_restart(state)
        previous = state.overlay
        try:
            await self._apply_overlay(state, overlay)
        except FleetError as exc:
            log.info("node %s: script step not applied (%s); trying again", state.name, exc)
            if self.states.get(key) is state and state.base is not None:
                state.overlay = previous
                self._set_spec(state, state.base)
                ctx.timers.schedule(("node-script", key), ctx.clock() + RESYNC_DELAY)
            return
        if following is not None and self.states.get(key) is state:
            ctx.timers.schedule(("node-script", key), ctx.clock() + following)

    async def _apply_overlay(self, state: NodeState, overlay: NodeOverlay) -> None:
        old_overlay = state.overlay
        if overlay == old_overlay:
            return
        ctx = self._ctx
        old = state.spec
        base = state.base
        assert old is not None and base is not None
        state.overlay = overlay
        self._set_spec(state, base)
        spec = state.spec
        assert spec is not None
        if overlay.paused and not old_overlay.paused:
            self.leases.stop(state.key)  # the kubelet is down: nothing renews, nothing reports
        events = ctx.kubelet_events
        if events is not None and not overlay.paused:
            before, after = reported_conditions(old), reported_conditions(spec)
            for kind, (status, _reason, _message) in after.items():
                if kind in before and before[kind][0] == status:
                    continue
                reason = transition_event(kind, status)
                if reason is not None:
                    events.node(state.name, reason, f"Node {state.name} status is now: {reason}")
        # The status first: the taint PATCH's watch echo carries the old status, which the
        # report on its way overwrites (see NodeState.status_writes).
        if old_overlay.paused and not overlay.paused and self.states.get(state.key) is state:
            await self.leases.ensure(state.key)
            await self._report(state.key, periodic=True)  # over what the controller wrote
        elif not overlay.paused:
            await self._report(state.key, periodic=False)
        if (old.taints, old.labels) != (spec.taints, spec.labels):
            await self._write_meta(state, old)

    async def _kubelet_restart(self, state: NodeState) -> None:
        """As a kubelet starting again: Events, registration (POST, 409, GET), a status
        report, its pods listed again."""
        ctx = self._ctx
        base = state.base
        if base is None:
            return
        log.info("node %s: kubelet restart", state.name)
        if ctx.kubelet_events is not None:
            ctx.kubelet_events.node_started(state.name)
        response = await self._node_io.request(
            "POST", _node_path(), body=encode_patch(node_body(base, ctx.wall())), content_type=JSON
        )
        if response.status == 409:
            response = await self._node_io.request("GET", _node_path(state.name))
        node = _decode_node_answer(response.raise_for_status().content)
        state.node_uid = str(node.metadata.get("uid") or state.node_uid)
        state.packed_status = _NODE_STATUS.pack(bytes(node.status))
        if self.states.get(state.key) is not state:
            return
        self.leases.node(state.key, state.name, state.node_uid)
        self._listener.kubelet_restarted(state.name)
        # Its full status once it has synced, with heartbeat times of a second of its own:
        # at once, in the second of the last report, the PATCH was empty and the restart
        # showed nothing on the Node (bench restart-storm never settled).
        ctx.timers.schedule(("status", state.key), ctx.clock() + RESTART_REPORT_DELAY)

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
        previous = state.cr_status_now
        desired = cr_status(
            previous=previous,
            shard=ctx.shard,
            node_name=state.name,
            generation=cr.metadata.generation or None,
            registered=registered,
            ready=ready,
            now=ctx.wall(),
        )
        if not status_differs(previous, desired):
            return
        if self.states.get(state.key) is not state:
            return  # stopped meanwhile (moved, handed over): not this shard's to write
        meta = cr.metadata
        response = await self._node_io.request(
            "PATCH",
            cr_path(meta.namespace, meta.name, "status"),
            body=encode_patch({"status": desired}),
            content_type=MERGE_PATCH,
        )
        if response.status != 404:
            response.raise_for_status()
            fresh = _decode_cr_answer(response.content)
            if self.states.get(state.key) is state and fresh.metadata.uid == meta.uid:
                # Keep what we wrote as the baseline, so the same status is not written twice.
                state.packed_cr_status = _CR_STATUS.pack(bytes(fresh.status))

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
        self.leases.release(state.key)
        meta = state.cr.metadata
        if FINALIZER not in meta.finalizers:
            return
        rest = [f for f in meta.finalizers if f != FINALIZER]
        patch = {"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}}
        try:
            response = await self._node_io.request(
                "PATCH",
                cr_path(meta.namespace, meta.name),
                body=encode_patch(patch),
                content_type=MERGE_PATCH,
            )
            if response.status != 404:
                response.raise_for_status()
        except Conflict:
            ctx.timers.schedule(("sync", state.key), ctx.clock() + RESYNC_DELAY)

    async def _delete_node_objects(self, key: str, name: str) -> None:
        """Delete the Lease and the Node of CR ``key`` (the Node only if it is that CR's)."""
        ctx = self._ctx
        response = await self._node_io.request("GET", _node_path(name))
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
            response = await self._node_io.request(
                "DELETE", _node_path(name), body=encode_patch(options), content_type=JSON
            )
            if response.status not in (404, 409):
                response.raise_for_status()
        response = await self._node_io.request("DELETE", lease_path(name))
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

    # -- chaos ---------------------------------------------------------------------------------

    def restart(self, key: str) -> bool:
        """The kubelet of CR ``key`` restarts (``shards._restarts``, a changed annotation): as
        a node script's ``kubeletRestart`` (:meth:`_kubelet_restart`: Events, registration,
        a status report, its pods listed again), on the timers at once. False: not driven."""
        state = self.states.get(key)
        if state is None or not state.driving:
            return False
        self._ctx.timers.schedule(("kubelet-restart", key), self._ctx.clock())
        return True

    # -- observation ---------------------------------------------------------------------------

    def driven(self) -> int:
        return sum(1 for state in self.states.values() if state.driving)

    def state_of(self, name: str) -> NodeState | None:
        key = self._names.get(name)
        return None if key is None else self.states.get(key)
