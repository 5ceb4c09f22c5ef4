"""The ``kubelet`` traffic profile: what a real kubelet reads and watches beside its heartbeat.

With ``shard.trafficProfile: kubelet`` every driven node also sends what the
recorded kubelet sends (``apiserver-transcripts/kubelet-requests.md``: a v1.24
kubelet, idle with pods, per minute: Node GET 5.97, Lease PUT 5.87, a re-WATCH
of each informer every 5-10 min, a status PATCH every 5 min):

=====================================  ===========================================
request (per node)                     when
=====================================  ===========================================
LIST + WATCH ``runtimeclasses``,       when the node is driven (registered,
``csidrivers``, ``services`` (all),    restarted, resumed); LIST from the watch
its Node (``metadata.name=<node>``)    cache (``resourceVersion=0``), WATCH with
                                       bookmarks and ``timeoutSeconds`` of
                                       5-10 min, again from the last
                                       resourceVersion when the server ends it
LIST + WATCH its pods                  the pod driver's watch of the node
(``spec.nodeName=<node>``)             (``podWatch: per-node`` is implied), its
                                       LIST from the watch cache too
LIST + WATCH ConfigMap                 while a pod of that namespace is on the
``kube-root-ca.crt`` per namespace     node: every pod's projected service-account
                                       volume names it (the kubelet's
                                       watch-based configmap manager)
GET its Node ``?resourceVersion=0``    every :data:`NODE_GET_INTERVAL` (the
                                       kubelet's nodeStatusUpdateFrequency loop)
GET its CSINode, POST it if missing    once, when driven
=====================================  ===========================================

Leases, status PATCHes, pod status and Events are the other modules' (as in
``lean``). Not reproduced: TokenRequests (``serviceaccounts/token``, once per
pod: the shard mints no tokens), Secret/ConfigMap watches of volumes a pod
names itself.

Connections, as a kubelet holds them: a kubelet multiplexes everything on ONE
HTTP/2 connection. Given a ``connect`` factory (``serve_shard`` gives one
making a :class:`~fleet.kube.Http2Connection`), each node gets one HTTP/2
connection, opened when it is driven and closed when it stops, carrying its
informers' LISTs and WATCHes, its ConfigMap watches and the pod driver's
watch of its pods (:meth:`KubeletTraffic.transport_for`): a shard of N nodes
holds N connections on the apiserver. What differs from a kubelet: its Node
GETs, CSINode request, Leases, status PATCHes and Events go through the
shard's shared pools (the hot transport's HTTP/1.1 connections, cheaper per
request on both sides than a Python HTTP/2 stream) rather than the node's
connection. Without ``connect`` (tests on the in-memory apiserver) the watches
go through the shard's hot transport, one HTTP/1.1 connection each.

Cost bounds: watch events are decoded to metadata only
(:class:`~fleet.kube.MetaOnly`, what a relist's diff needs) and dropped by one
consumer task; at most :data:`CONNECT_CONCURRENCY` node connections are being
made at once, and at most :data:`STARTUP_CONCURRENCY` nodes make their first
lists at once; Node GETs go through :data:`GET_WORKERS` tasks from one delay
queue, those due within :data:`GET_WINDOW` of each other as one pipelined batch,
giving way to overdue Lease renewals. Everything for a node stops when
it stops being driven (suspend, fence lost, restart, CR gone).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import trio

from fleet.errors import AlreadyExists, FleetError
from fleet.kube import (
    MAX_PIPELINE,
    BatchRequest,
    Http2Connection,
    InstrumentedRequester,
    MetaOnly,
    Reflector,
    Requester,
    WatchEvent,
    WatchSettings,
    resource_path,
)
from fleet.machinery import JSON
from shards._context import ShardContext
from shards._kubelets import NodeListener, NodeState
from shards._timers import DelayQueue, spread

__all__ = [
    "CONNECT_CONCURRENCY",
    "GET_BATCH",
    "GET_WINDOW",
    "GET_WORKERS",
    "NODE_GET_INTERVAL",
    "STARTUP_CONCURRENCY",
    "KubeletTraffic",
    "TrafficListener",
    "TrafficStatistics",
]

log = logging.getLogger(__name__)

NODE_GET_INTERVAL = 10.0
"""The kubelet's nodeStatusUpdateFrequency (10 s): each round GETs the Node from the
watch cache, then PATCHes status if it changed (recorded: 5.97 GETs a minute)."""
GET_WORKERS = 4
"""Tasks sending Node GETs, each one pipelined batch at a time: 1,000 GETs a second at
10,000 nodes; more would take the hot transport's connections from the writes."""
GET_BATCH = MAX_PIPELINE
"""Most Node GETs a worker sends as one pipelined batch (one connection, one write)."""
GET_WINDOW = 0.05
"""Seconds a worker waits after the first due GET for others to join its batch. Sent one
at a time, 1,000 GETs a second were a quarter of a 10,000-node shard's CPU (py-spy: most
of it the send and receive calls of each); a GET 50 ms late changes nothing."""
GET_TIMER_CHANNEL = 256
"""Due Node GETs buffered for the workers; a full channel shows as timer lateness."""
CONNECT_CONCURRENCY = 16
"""Node connections being made at once (TCP and TLS handshake). A burst of 1,000 nodes
opening theirs at once filled the sandbox's accept backlog on a loaded 2-core box (its
share of a core does ~100 handshakes a second, ~1.2 ms of CPU each): connects timed out
after 5 s, were retried, and the shard's other clients could not connect either."""
STARTUP_CONCURRENCY = 32
"""Nodes making their first lists (4 informers and the CSINode) at once: a thousand
nodes registered in a burst would otherwise send 4,000 LISTs in the same second."""
LIST_WAIT = 10.0
"""Seconds a node holds its start-up slot waiting for its first lists; a resource the
apiserver does not serve (404, retried with backoff) must not hold it for ever."""
EVENT_BUFFER = 1024
"""Watch events buffered for the consumer that drops them."""
ROOT_CA = "kube-root-ca.crt"
"""The ConfigMap every pod's projected service-account volume names (BoundServiceAccountTokenVolume)."""
KUBELET_WATCH = WatchSettings(list_from_cache=True)
"""client-go's reflector, as the kubelet's informers run it: LIST from the watch cache,
``timeoutSeconds`` drawn in 5-10 min."""

_NODE_GET = {"resourceVersion": "0", "timeout": "10s"}
"""The kubelet's GET of its Node: from the watch cache."""

_INFORMERS: tuple[tuple[str, str, str], ...] = (
    ("node.k8s.io", "v1", "runtimeclasses"),
    ("storage.k8s.io", "v1", "csidrivers"),
    ("", "v1", "services"),
)
"""Cluster-wide informers every kubelet starts (besides its own Node's)."""


@dataclass(slots=True)
class TrafficStatistics:
    """Counters of the profile (what tests and a debugger read; not on /metrics yet)."""

    nodes: int = 0
    """Nodes the profile runs for now."""
    watches: int = 0
    """Reflectors running now (informers and ConfigMap watches)."""
    node_gets: int = 0
    csinodes_created: int = 0
    events_dropped: int = 0
    errors: int = 0


@dataclass(slots=True)
class _Node:
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    uid: str = ""
    namespaces: dict[str, int] = field(default_factory=dict)
    """Namespace -> pods of it on the node."""
    pods: set[str] = field(default_factory=set)
    """Keys of its pods (``namespace/name``)."""
    configmaps: dict[str, trio.CancelScope] = field(default_factory=dict)
    nursery: trio.Nursery | None = None
    """Where its watches run, once its first lists are done."""
    transport: Requester | None = None
    """What its watches go through (see :meth:`KubeletTraffic.transport_for`)."""
    get_due: float = 0.0
    """Due time of its next Node GET (drift-free: each is due an interval after the last)."""


class KubeletTraffic:
    """The ``kubelet`` profile for every node the shard drives; see the module docstring.

    Told of nodes by the engine (:meth:`node_added`, :meth:`node_removed`: the
    node driver's listener calls) and of pods by the pod driver's watch
    (:meth:`pod_event`); :meth:`run` runs its tasks until cancelled.
    """

    def __init__(
        self,
        ctx: ShardContext,
        *,
        connect: Callable[[trio.CapacityLimiter], Http2Connection] | None = None,
    ) -> None:
        self._ctx = ctx
        self._connect = connect
        """Makes a node's connection, given the limiter of connections being made."""
        self._connecting = trio.CapacityLimiter(CONNECT_CONCURRENCY)
        self._conns: dict[str, tuple[Http2Connection, Requester]] = {}
        """Node -> its HTTP/2 connection (and it instrumented), while it is driven."""
        self.give_way: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        """Awaited before each Node GET (the Lease lane's ``give_way``)."""
        self._nodes: dict[str, _Node] = {}
        self._pods: dict[str, str] = {}
        """Pod key -> node, for the pods on driven nodes (ConfigMap watches per namespace)."""
        self._gets: DelayQueue[str] = DelayQueue(clock=ctx.clock)
        self._starting = trio.CapacityLimiter(STARTUP_CONCURRENCY)
        self._nursery: trio.Nursery | None = None
        self._send: trio.MemorySendChannel[WatchEvent[MetaOnly]] | None = None
        self.stats = TrafficStatistics()

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        send, receive = trio.open_memory_channel[WatchEvent[MetaOnly]](EVENT_BUFFER)
        due_send, due_receive = trio.open_memory_channel[str](GET_TIMER_CHANNEL)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drop, receive)
            async with due_receive:
                for _ in range(GET_WORKERS):
                    nursery.start_soon(self._getter, due_receive.clone())
            await nursery.start(self._gets.run, due_send)
            self._send = send
            self._nursery = nursery
            for name in list(self._nodes):
                self._start(name)
            task_status.started()

    async def _drop(self, receive: trio.MemoryReceiveChannel[WatchEvent[MetaOnly]]) -> None:
        async with receive:
            async for _ in receive:
                self.stats.events_dropped += 1
                # The rest of what is buffered at once, not one round of the loop each.
                while True:
                    try:
                        receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.stats.events_dropped += 1

    # -- nodes (NodeListener calls, forwarded by the engine) -----------------------------------

    def node_added(self, name: str, uid: str) -> None:
        node = self._nodes.get(name)
        if node is not None:
            return
        self._nodes[name] = _Node(uid=uid)
        self._start(name)

    def transport_for(self, name: str) -> Requester:
        """What node ``name``'s watches go through: its own HTTP/2 connection (made here on
        first ask; its task runs while the node is driven), or the shard's hot transport."""
        if self._connect is None:
            return self._ctx.hot
        conn = self._conns.get(name)
        if conn is None:
            made = self._connect(self._connecting)
            conn = self._conns[name] = (made, InstrumentedRequester(made, self._ctx.metrics))
        return conn[1]

    def connection(self, name: str) -> Http2Connection | None:
        """Node ``name``'s own connection, if it has one (tests, statistics)."""
        conn = self._conns.get(name)
        return None if conn is None else conn[0]

    def node_removed(self, name: str) -> None:
        self._conns.pop(name, None)  # its task ends with the node's scope
        node = self._nodes.pop(name, None)
        if node is None:
            return
        node.scope.cancel()
        self._gets.cancel(name)
        for key in node.pods:  # forgotten: a node driven again hears of them anew
            self._pods.pop(key, None)

    def kubelet_restarted(self, name: str) -> None:
        """The node's kubelet restarted: its informers start over (LIST, then WATCH), its
        CSINode is read again, its namespaces heard of anew from the pod watch's relist."""
        node = self._nodes.get(name)
        if node is None:
            return
        self.node_removed(name)
        self.node_added(name, node.uid)

    def _start(self, name: str) -> None:
        if self._nursery is None:
            return  # run() starts it
        node = self._nodes[name]
        self._nursery.start_soon(self._kubelet, name, node)
        node.get_due = self._ctx.clock() + spread(NODE_GET_INTERVAL, self._ctx.rng)
        self._gets.schedule(name, node.get_due)

    async def _kubelet(self, name: str, node: _Node) -> None:
        """One node's informers and CSINode, for as long as it is driven."""
        with node.scope:
            self.stats.nodes += 1
            try:
                async with trio.open_nursery() as nursery:
                    transport = self.transport_for(name)
                    conn = self._conns.get(name)
                    if conn is not None:
                        await nursery.start(conn[0].run)
                    async with self._starting:
                        listed = []
                        for group, version, plural in _INFORMERS:
                            listed.append(
                                self._inform(
                                    nursery, transport, resource_path(group, version, plural)
                                )
                            )
                        listed.append(
                            self._inform(
                                nursery,
                                transport,
                                resource_path("", "v1", "nodes"),
                                field_selector=f"metadata.name={name}",
                            )
                        )
                        await self._csinode(name, node.uid)
                        with trio.move_on_after(LIST_WAIT):
                            for event in listed:
                                await event.wait()
                    node.nursery = nursery
                    node.transport = transport
                    for namespace in list(node.namespaces):
                        self._watch_root_ca(node, namespace)
                    await trio.sleep_forever()
            finally:
                node.nursery = None
                node.transport = None
                self.stats.nodes -= 1

    def _inform(
        self,
        nursery: trio.Nursery,
        transport: Requester,
        path: str,
        *,
        field_selector: str | None = None,
    ) -> trio.Event:
        """Start one reflector whose events are dropped; the Event is set once it has listed."""
        assert self._send is not None
        reflector = Reflector(
            transport,
            path,
            MetaOnly,
            field_selector=field_selector,
            settings=KUBELET_WATCH,
            clock=self._ctx.clock,
            rng=self._ctx.rng,
            keep_objects=False,
        )
        listed = trio.Event()
        nursery.start_soon(self._reflect, reflector, self._send.clone(), listed)
        return listed

    async def _reflect(
        self,
        reflector: Reflector[MetaOnly],
        send: trio.MemorySendChannel[WatchEvent[MetaOnly]],
        listed: trio.Event,
    ) -> None:
        self.stats.watches += 1
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(reflector.run, send)
                listed.set()
        except FleetError as exc:  # what retrying cannot fix: this watch ends, not the shard
            self.stats.errors += 1
            log.warning("watch %s: %s", reflector.path, exc)
        finally:
            self.stats.watches -= 1

    async def _csinode(self, name: str, uid: str) -> None:
        """GET the node's CSINode; POST it (no drivers, owned by the Node) if missing."""
        path = resource_path("storage.k8s.io", "v1", "csinodes")
        try:
            response = await self._ctx.hot.request("GET", f"{path}/{name}")
            if response.status != 404:
                response.raise_for_status()
                return
            owner = {"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}
            body = {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "CSINode",
                "metadata": {"name": name, "ownerReferences": [owner] if uid else []},
                "spec": {"drivers": []},
            }
            created = await self._ctx.hot.request(
                "POST", path, body=msgspec.json.encode(body), content_type=JSON
            )
            created.raise_for_status()
            self.stats.csinodes_created += 1
        except AlreadyExists:
            return
        except FleetError as exc:
            self.stats.errors += 1
            log.info("node %s: CSINode: %s", name, exc)

    # -- ConfigMap watches per namespace -------------------------------------------------------

    def pod_event(self, event_type: str, key: str, node_name: str) -> None:
        """A pod event of the pod driver's watch: count the node's pods by namespace."""
        namespace = key.partition("/")[0]
        if event_type == "DELETED":
            node_name = self._pods.pop(key, "") or node_name
            node = self._nodes.get(node_name)
            if node is None or key not in node.pods:
                return
            node.pods.discard(key)
            left = node.namespaces.get(namespace, 0) - 1
            if left > 0:
                node.namespaces[namespace] = left
                return
            node.namespaces.pop(namespace, None)
            scope = node.configmaps.pop(namespace, None)
            if scope is not None:
                scope.cancel()
            return
        node = self._nodes.get(node_name)
        if node is None or key in self._pods:
            return
        self._pods[key] = node_name
        node.pods.add(key)
        count = node.namespaces.get(namespace, 0)
        node.namespaces[namespace] = count + 1
        if count == 0:
            self._watch_root_ca(node, namespace)

    def _watch_root_ca(self, node: _Node, namespace: str) -> None:
        """The kubelet's watch of ``kube-root-ca.crt`` in ``namespace`` (once the node's
        first lists are done; until then its start-up starts them)."""
        nursery = node.nursery
        if nursery is None or node.transport is None or namespace in node.configmaps:
            return
        scope = node.configmaps[namespace] = trio.CancelScope()
        assert self._send is not None
        reflector = Reflector(
            node.transport,
            resource_path("", "v1", "configmaps", namespace=namespace),
            MetaOnly,
            field_selector=f"metadata.name={ROOT_CA}",
            settings=KUBELET_WATCH,
            clock=self._ctx.clock,
            rng=self._ctx.rng,
            keep_objects=False,
        )

        async def watch(send: trio.MemorySendChannel[WatchEvent[MetaOnly]]) -> None:
            with scope:
                await self._reflect(reflector, send, trio.Event())

        nursery.start_soon(watch, self._send.clone())

    # -- the Node GET every 10 s ---------------------------------------------------------------

    async def _getter(self, receive: trio.MemoryReceiveChannel[str]) -> None:
        async with receive:
            async for name in receive:
                await trio.sleep(GET_WINDOW)  # the GETs due meanwhile go in the same batch
                names = [name]
                while len(names) < GET_BATCH:
                    try:
                        names.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                await self._get_nodes(names)

    async def _get_nodes(self, names: list[str]) -> None:
        """GET these nodes from the watch cache, pipelined; arm each one's next GET."""
        ctx = self._ctx
        now = ctx.clock()
        batch = []
        for name in names:
            node = self._nodes.get(name)
            if node is None:
                continue
            # From its due time, not from now: lateness does not become drift; a GET more
            # than an interval late is not made up for.
            node.get_due = max(node.get_due, now - NODE_GET_INTERVAL) + NODE_GET_INTERVAL
            self._gets.schedule(name, node.get_due)
            batch.append(
                BatchRequest("GET", resource_path("", "v1", "nodes", name=name), _NODE_GET)
            )
        if not batch:
            return
        await self.give_way()  # overdue Lease renewals first
        try:
            answers = await ctx.hot.request_batch(batch)
        except FleetError as exc:
            self.stats.errors += len(batch)
            log.debug("node GETs: %s", exc)
            return
        for request, answer in zip(batch, answers, strict=True):
            if isinstance(answer, FleetError):
                self.stats.errors += 1
                log.debug("%s: GET: %s", request.path, answer)
                continue
            self.stats.node_gets += 1
            if answer.status != 404 and answer.status >= 300:
                self.stats.errors += 1
                log.debug("%s: GET: %d", request.path, answer.status)


class TrafficListener:
    """The node driver's listener when the profile runs: tells the pod driver, then it."""

    def __init__(self, inner: NodeListener, traffic: KubeletTraffic) -> None:
        self._inner = inner
        self._traffic = traffic

    def node_added(self, name: str, state: NodeState) -> None:
        self._inner.node_added(name, state)
        self._traffic.node_added(name, state.node_uid)

    def node_removed(self, name: str) -> None:
        self._inner.node_removed(name)
        self._traffic.node_removed(name)

    def pod_cidrs_arrived(self, name: str) -> None:
        self._inner.pod_cidrs_arrived(name)

    def kubelet_restarted(self, name: str) -> None:
        self._traffic.kubelet_restarted(name)  # first: the pod relist tells it the namespaces
        self._inner.kubelet_restarted(name)
