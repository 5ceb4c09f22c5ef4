"""The shard engine: thousands of fake kubelets and their pods on a fixed set of trio tasks.

:class:`ShardEngine` wires the parts together and runs them in one nursery:

================================  ============================================
task                              does
================================  ============================================
shard-lease renewer               ``_shardlease.ShardLease``: the shard's own
                                  Lease and the fence
CR reflector + consumer           Node CRs labelled ``<SHARD_LABEL>=<K>``, all
                                  namespaces -> ``NodeDriver.on_event`` (and
                                  ``_restarts.KubeletRestarts``: a changed
                                  restart annotation restarts that kubelet)
MockStatus reflector + consumer   ``ScriptLibrary``: every MockStatus, all
                                  namespaces; a change re-plans the pods
                                  naming it (``PodDriver.scripts_changed``)
                                  or matched by it as a policy
                                  (``PodDriver.policies_changed``)
MockStatus reporter (shard 0)     ``_scriptreport.ScriptReporter``: condition
                                  Valid and Warning Events on MockStatuses
NodeScript reflector + consumer   ``_nodescripts.NodeScriptLibrary``: every
                                  NodeScript; a change re-matches the nodes
                                  (``NodeDriver.scripts_changed``); its own
                                  reporter on shard 0
node reflector + consumer         ``_nodewatch.NodeWatch``: the v1.Nodes this
                                  shard labelled its own; stored conditions
                                  other than the kubelet's are reported over
                                  at once (``NodeDriver.node_seen``)
pod reflector(s) + consumer       ``PodDriver`` (one watch, or one per node
                                  with ``podWatch: per-node``)
timer runners                     :class:`~shards._timers.TimerLanes`: a
                                  :class:`~shards._timers.DelayQueue` per
                                  lane (``TIMER_LANES``), each feeding a
                                  bounded channel of its own
``syncs`` lane: 1 worker          starts each node CR sync (registration:
                                  round trips in a row) and kubelet restart
                                  in a task of its own, at most
                                  ``SYNC_CONCURRENCY`` at once
``nodes`` lane:                   the nodes' status reports, taints, node
``NODE_TIMER_WORKERS`` workers    scripts, pod CIDRs (never behind pod work)
``pods`` lane:                    the pods' evaluations (a GET first for a
``TIMER_WORKERS`` workers         pod whose status is unheld), deletions
kubelet traffic (optional)        ``_traffic.KubeletTraffic`` (``trafficProfile:
                                  kubelet``): per node, the informers, Node
                                  GETs and CSINode a real kubelet adds
Lease lane                        ``_nodelease.NodeLeases`` and its
                                  ``_leaselane.LeaseLane``: node Lease
                                  renewals, timed from their due times, on
                                  their own dispatcher and writers, pipelined
write queue writers               ``shard.writers`` tasks sending coalesced
                                  PATCHes, PUTs and DELETEs at ``shard.qps``
kubelet events                    ``_events.KubeletEvents``: the kubelets'
                                  Events, into the write queue in its quiet
                                  moments
metrics updater (+ server)        gauges every second; ``/metrics`` when a
                                  port is given
kubelet API (optional)            ``_kubeletapi.KubeletServer``: logs, /pods,
                                  stats of every driven node on one HTTPS
                                  listener, started before any node registers
                                  (the nodes advertise its address and port)
================================  ============================================

High-volume traffic (Lease PUTs, status PATCHes, pod watches and reads, and
registration's Node and Lease POSTs, 10,000 of each at start-up) goes through
``hot`` (the hand-framed :class:`~fleet.kube._transport.HotTransport` in the
CLI), control traffic (CR watch and writes, taint sync, deletion, events)
through ``control`` (the httpx Client); a test passes one fake for both.
The pod reflector starts once the first list of CRs is consumed, so the pod
driver knows from the first pod which nodes are this shard's. Both are
fenced: while the shard's Lease is stale nothing for any node or pod is sent.

Every part is given its collaborators when it is built, in an order without
cycles: the node Leases first (their lane's token bucket is the write queue's),
then the write queue and the context, the pod driver (it builds the MockStatus
library that tells it of changes), and the node driver (it tells the pod driver
which nodes are driven, through the claims both share).
"""

from __future__ import annotations

import gc
import logging
import random
from collections.abc import Callable
from datetime import datetime
from functools import partial

import trio

from fleet._metrics import FleetMetrics, serve_metrics
from fleet._settings import FleetSettings
from fleet.api import CRDS_MISSING_HINT
from fleet.errors import FleetError
from fleet.kube import (
    Http2Connection,
    Reflector,
    Requester,
    WatchEvent,
    WriteQueue,
    WriteQueueSettings,
)
from fleet.machinery import utc_now
from fleet.wire import SHARD_LABEL, shard_field_manager, shard_host
from shards._context import EventRecorder, FencedRequester, ShardContext, TimerKey
from shards._cr import CrView, cr_path
from shards._events import KubeletEvents
from shards._handover import HandoverGate
from shards._kubeletapi import KubeletApiSettings, KubeletServer, WebhookAuth
from shards._kubelets import REGISTER_ON_HOT, NodeClaims, NodeDriver, NodeListener
from shards._kubeletview import DriverView
from shards._nodelease import NodeLeases
from shards._nodewatch import NodeWatch
from shards._pods import PodDriver
from shards._restarts import KubeletRestarts
from shards._scriptreport import ScriptReporter, node_script_reporter
from shards._shardlease import ShardLease
from shards._timers import TimerLanes
from shards._traffic import KubeletTraffic, TrafficListener

__all__ = ["SYNC_CONCURRENCY", "TIMER_WORKERS", "ShardEngine"]

log = logging.getLogger(__name__)

TIMER_WORKERS = 8
"""Tasks running the pods' due timers (the ``pods`` lane). Most only compute and queue a
write; a pod whose status is unheld is read back first (a GET)."""
NODE_TIMER_WORKERS = 8
"""Tasks running the nodes' due timers (the ``nodes`` lane: status reports, taints, node
scripts, pod CIDRs), in a lane of their own as a kubelet reports its node status from a loop
of its own: in the pods' queue, a restart storm's node status reports waited behind every
restarted pod's evaluation (2,000 nodes and 4,000 pods: the last report 10 s after the last
restart, in step with the pods' GETs; docs/performance.md)."""
SYNC_CONCURRENCY = 64
"""Node CR syncs in flight at once, each in a task of its own beside the timer workers. A
registration is a few round trips in a row (finalizer, Node, Lease, CR status): run by the
8 timer workers themselves, registration went ~16 nodes/s against kube-apiserver on
2 busy cores (kwok-ci on the real control plane, the shard 2/3 idle waiting on answers)."""
ROUND_TRIPS = frozenset({"sync", "kubelet-restart"})
"""Timer kinds that wait on the apiserver several times in a row (a registration: POST,
409, GET), run in tasks of their own under ``SYNC_CONCURRENCY``: by the 8 workers, a
restart storm of 5,000 nodes went at 19 restarts a second (bench restart-storm, the box
idle, each restart ~0.4 s of round trips). Their lane (``syncs``) has one worker, which
only starts them: waiting for a free slot, it holds up no status report."""
TIMER_LANES = {"syncs": 1, "nodes": NODE_TIMER_WORKERS, "pods": TIMER_WORKERS}
"""The shard's timer lanes (:class:`~shards._timers.TimerLanes`) and their workers."""
TIMER_CHANNEL = 1024
"""Due timer keys buffered for each lane's workers; a full channel shows up as that lane's
timer lateness."""
WORKER_BATCH = 64
"""Due timers a worker runs in a row from the channel before it waits on it again."""
CR_EVENT_BUFFER = 1024
"""CR watch events buffered for the consumer (which does no I/O)."""
METRICS_EVERY = 1.0
"""Seconds between gauge updates."""
SETTLE_CHECK = 5.0
"""Seconds between looks at whether start-up is over (see ``ShardEngine._freeze_gc``)."""
FREEZE_AFTER = 100_000
"""Objects in the cyclic GC's oldest generation past which a shard past its start-up
freezes again (nodes applied after it started): a full collection of that many is
~50 ms of CPU."""
SETTLE_CHECKS = 3
"""Consecutive quiet looks (nothing queued or in flight to write, no timer overdue) that end
start-up."""


def _lane_of(key: TimerKey) -> str:
    """A timer's lane (``TIMER_LANES``) by its kind."""
    kind = key[0]
    if kind in ROUND_TRIPS:
        return "syncs"
    return "pods" if kind.startswith("pod") else "nodes"


class ShardEngine:
    """Shard ``shard``: drives every Node CR labelled with its id, and their pods."""

    def __init__(
        self,
        settings: FleetSettings,
        shard: str,
        *,
        control: Requester,
        hot: Requester | None = None,
        identity: str | None = None,
        metrics: FleetMetrics | None = None,
        clock: Callable[[], float] = trio.current_time,
        wall: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        freeze_gc: bool = False,
        kubelet_api: KubeletApiSettings | None = None,
        node_connection: Callable[[trio.CapacityLimiter], Http2Connection] | None = None,
    ) -> None:
        self.settings = settings
        self._freeze = freeze_gc
        """Freeze start-up's objects out of the cyclic GC once start-up is over (the
        ``shard`` command, which has the process to itself; see :meth:`_freeze_gc`)."""
        self.shard = shard
        self.metrics = metrics if metrics is not None else FleetMetrics()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        conf = settings.coordinator
        self.lease = ShardLease(
            control,
            namespace=settings.namespace,
            shard=shard,
            identity=identity or shard_host(shard),
            duration=conf.shard_lease_duration,
            renew_interval=conf.shard_renew_interval,
            renew_deadline=conf.shard_renew_deadline,
            clock=clock,
            wall=wall,
            on_lost=self._fence_lost,
            on_regained=self._fence_regained,
        )
        fresh = self.lease.fresh
        manager = shard_field_manager(shard)  # names the writer: see FencedRequester
        gate = HandoverGate()  # one door for both requesters: a handover drains them both
        gated_control = FencedRequester(control, fresh, field_manager=manager, gate=gate)
        gated_hot = FencedRequester(
            hot if hot is not None else control, fresh, field_manager=manager, gate=gate
        )
        s = settings.shard
        self.timers: TimerLanes[TimerKey] = TimerLanes(list(TIMER_LANES), _lane_of, clock=clock)
        timers = self.timers

        def resync(key: str, delay: float) -> None:
            timers.schedule(("sync", key), clock() + delay)

        self.leases = NodeLeases(
            gated_hot,
            register=gated_hot if REGISTER_ON_HOT else gated_control,
            settings=s,
            metrics=self.metrics,
            resync=resync,
            clock=clock,
            wall=wall,
            rng=self._rng,
            fresh=fresh,
            fence_open=lambda: self.lease.active,
        )
        self.writes = WriteQueue(
            gated_hot,
            WriteQueueSettings(
                workers=s.writers, qps=s.qps, burst=s.burst, max_pending=s.write_queue_bound
            ),
            clock=clock,
            rng=self._rng,
            limiter=self.leases.bucket,  # the Lease lane's writes go first (LaneFirstBucket)
        )
        self.ctx = ShardContext(
            shard=shard,
            settings=settings,
            control=gated_control,
            hot=gated_hot,
            writes=self.writes,
            timers=self.timers,
            events=EventRecorder(
                gated_control, component="kubemock-fleet", host=shard_host(shard), wall=wall
            ),
            metrics=self.metrics,
            clock=clock,
            wall=wall,
            fresh=fresh,
            fence_open=lambda: self.lease.active,
            rng=self._rng,
            kubelet_events=KubeletEvents(self.writes, wall=wall, enabled=s.events),
            handover=gate,
        )
        self.reporter: ScriptReporter | None = None
        self.node_reporter: ScriptReporter | None = None
        if shard == "0":  # one reporter for the fleet: every shard judges a script alike
            self.reporter = ScriptReporter(self.ctx)
            self.node_reporter = node_script_reporter(self.ctx)
        claims = NodeClaims()
        self.pods = PodDriver(
            self.ctx,
            claims=claims.__contains__,
            give_way=self.leases.give_way,
            report=None if self.reporter is None else self.reporter.report,
        )
        self.scripts = self.pods.scripts
        self.traffic: KubeletTraffic | None = None
        """The kubelet traffic profile's reads and watches (``shard.trafficProfile: kubelet``)."""
        listener: NodeListener = self.pods
        if s.traffic_profile == "kubelet":
            # node_connection: each node's watches on one connection of its own, as a
            # kubelet's (see shards._traffic); None: on the hot transport.
            self.traffic = traffic = KubeletTraffic(self.ctx, connect=node_connection)
            traffic.give_way = self.leases.give_way
            self.pods.transport_for = traffic.transport_for
            listener = TrafficListener(self.pods, traffic)
            self.pods.observe = lambda event: traffic.pod_event(
                event.type,
                f"{event.obj.metadata.namespace}/{event.obj.metadata.name}",
                event.obj.spec.node_name,
            )
        self.nodes = NodeDriver(
            self.ctx,
            listener,
            leases=self.leases,
            claims=claims,
            report=None if self.node_reporter is None else self.node_reporter.report,
        )
        self.restarts = KubeletRestarts(self.nodes)
        """Kubelet restarts asked for by a Node CR annotation (``bench restart-storm``)."""
        self.node_watch = NodeWatch(
            gated_hot, f"{SHARD_LABEL}={shard}", self.nodes.node_seen, clock=clock, rng=self._rng
        )
        self.crs: Reflector[CrView] = Reflector(
            gated_control,
            cr_path(),
            CrView,
            label_selector=f"{SHARD_LABEL}={shard}",
            clock=clock,
            rng=self._rng,
            missing_hint=CRDS_MISSING_HINT,
        )
        self.kubelet: KubeletServer | None = None
        """The kubelet API server, when ``kubelet_api`` settings are given."""
        if kubelet_api is not None:
            self.kubelet = KubeletServer(
                kubelet_api,
                DriverView(self.nodes, self.pods),
                wall=wall,
                # reviews create nothing: not fenced (they answer requests about any node)
                auth=WebhookAuth(control, authorization=kubelet_api.authorization, clock=clock),
                give_way=self.nodes.leases.give_way,  # a scrape of every node waits for Leases
            )
        self._ready = False
        self._crs_drained = trio.Event()
        self._syncs: trio.Nursery | None = None
        """Where node syncs run beside the workers (the engine's nursery, once running)."""
        self._sync_slots = trio.Semaphore(SYNC_CONCURRENCY)

    def ready(self) -> bool:
        """For /readyz: the watches are up and the shard's Lease is fresh."""
        return self._ready and self.lease.fresh()

    # -- the fence -----------------------------------------------------------------------------

    def _fence_lost(self) -> None:
        self.nodes.fence_lost()
        self.pods.pause_all()

    def _fence_regained(self) -> None:
        # Unbroken (no other shard can have been given our CRs): nodes resumed at once.
        self.nodes.fence_regained(unbroken=self.lease.unbroken())

    # -- running -------------------------------------------------------------------------------

    async def run(
        self,
        *,
        metrics_port: int | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every task until cancelled. ``metrics_port`` (0: any) also serves /metrics."""
        async with trio.open_nursery() as nursery:
            if metrics_port is not None:
                await nursery.start(
                    partial(
                        serve_metrics,
                        self.metrics.registry,
                        metrics_port,
                        self.ready,
                        host=self.settings.metrics_address,
                    )
                )
            await nursery.start(self.writes.run)
            if self.ctx.kubelet_events is not None:
                await nursery.start(self.ctx.kubelet_events.run)
            await nursery.start(self.leases.run)
            self._syncs = nursery
            for lane, workers in TIMER_LANES.items():
                send, receive = trio.open_memory_channel[TimerKey](TIMER_CHANNEL)
                async with receive:
                    for _ in range(workers):
                        nursery.start_soon(self._worker, receive.clone())
                await nursery.start(self.timers.lanes[lane].run, send)
            if self.traffic is not None:
                await nursery.start(self.traffic.run)
            for reporter in (self.reporter, self.node_reporter):
                if reporter is not None:
                    await nursery.start(reporter.run)
            await nursery.start(self.scripts.run)
            await nursery.start(self.nodes.scripts.run)
            if self.kubelet is not None:
                self.nodes.kubelet_api_started(await nursery.start(self.kubelet.run))
            # The addresses of the Nodes already there are taken before any node gets one.
            await self.nodes.reserve_addresses()
            await self.nodes.read_server_version()
            cr_send, cr_receive = trio.open_memory_channel[WatchEvent[CrView]](CR_EVENT_BUFFER)
            nursery.start_soon(self._consume_crs, cr_receive)
            await nursery.start(self.crs.run, cr_send)
            # Every CR of the first list consumed before the pods are listed: the pod driver
            # holds only the pods of nodes this shard claims (NodeDriver.claims).
            if cr_receive.statistics().current_buffer_used:
                await self._crs_drained.wait()
            # Not waited for: an apiserver that refuses the list (RBAC of an older deploy/)
            # costs the restoring of overwritten conditions, not the whole shard.
            nursery.start_soon(self.node_watch.run)
            await nursery.start(self.pods.run)
            await nursery.start(self.lease.run)
            nursery.start_soon(self._export_metrics)
            if self._freeze:
                nursery.start_soon(self._freeze_gc)
            self._ready = True
            task_status.started()

    async def _consume_crs(self, receive: trio.MemoryReceiveChannel[WatchEvent[CrView]]) -> None:
        async with receive:
            async for event in receive:
                self.restarts.observe(event)  # before the sync the change schedules
                self.nodes.on_event(event)
                if not receive.statistics().current_buffer_used:
                    self._crs_drained.set()

    async def _worker(self, receive: trio.MemoryReceiveChannel[TimerKey]) -> None:
        async with receive:
            async for timer in receive:
                await self._run_timer(timer)
                # Then what is buffered, without a round of the event loop each (a
                # ``receive`` is one; most timers only compute and queue a write).
                for _ in range(WORKER_BATCH - 1):
                    try:
                        timer = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    await self._run_timer(timer)

    async def _run_timer(self, timer: TimerKey) -> None:
        kind, key = timer
        await self.leases.give_way()  # overdue Lease renewals first (trio has no priorities)
        if kind in ROUND_TRIPS and self._syncs is not None:
            # Round trips in a row: beside the workers, SYNC_CONCURRENCY at once.
            await self._sync_slots.acquire()
            self._syncs.start_soon(self._sync_node, kind, key)
            return
        await self._handle(kind, key)

    async def _handle(self, kind: str, key: str) -> None:
        """One due timer, by the pod or node driver; what it cannot do is logged."""
        try:
            if kind.startswith("pod"):
                await self.pods.handle(kind, key)
            else:
                await self.nodes.handle(kind, key)
        except FleetError as exc:
            log.warning("%s %s: %s", kind, key, exc)

    async def _sync_node(self, kind: str, key: str) -> None:
        """One node's round trips (a CR sync, a kubelet restart) in a task of its own; frees
        its slot when done."""
        try:
            await self._handle(kind, key)
        finally:
            self._sync_slots.release()

    async def _freeze_gc(self) -> None:
        """Move the shard's long-lived objects out of the cyclic GC's reach as they are built.

        A shard of 10,000 nodes and 100,000 pods holds ~380,000 long-lived objects (GC-tracked),
        ~6.75 million with the kubelet traffic profile (its six watches a node), which every
        full collection walks: 0.3-0.7 s of CPU a time in ``lean``, seconds with the
        profile, the whole process stopped meanwhile (renewals late, the shard's own Lease
        once unanswered for 5 s). Frozen once at the end of start-up, the collections on
        the way (each when the objects had grown by a quarter) still walked them all, and
        nodes added later (a shard started before its CRs were applied) were never frozen.
        So every :data:`SETTLE_CHECK` seconds until start-up is over, and after it whenever
        the oldest generation holds more than :data:`FREEZE_AFTER` objects, a collection
        (of what came since the last freeze) and a freeze (``gc.freeze``): later
        collections walk only what came after. The shard's own objects form no cycles
        (only its httpx requests do); whatever is frozen is never collected: at worst the
        cycles of the few requests in flight at each freeze.
        """
        quiet = 0
        while True:
            await trio.sleep(SETTLE_CHECK)
            if quiet < SETTLE_CHECKS or len(gc.get_objects(generation=2)) > FREEZE_AFTER:
                gc.collect()
                gc.freeze()
            if quiet < SETTLE_CHECKS:
                writes = self.writes.statistics()
                busy = writes.depth or writes.in_flight or self.timers.statistics().due_backlog
                quiet = 0 if busy or not self._ready else quiet + 1
                if quiet == SETTLE_CHECKS:
                    log.info(
                        "start-up over: %d objects frozen out of the cyclic GC",
                        gc.get_freeze_count(),
                    )

    async def _export_metrics(self) -> None:
        metrics = self.metrics
        known: set[str] = set()
        while True:
            metrics.nodes.set(self.nodes.driven())
            phases = self.pods.phases()
            for phase in known | set(phases):
                metrics.pods.labels(phase=phase).set(phases.get(phase, 0))
            known |= set(phases)
            metrics.write_queue_depth.set(self.writes.statistics().depth)
            await trio.sleep(METRICS_EVERY)
