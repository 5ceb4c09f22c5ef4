"""Running a scenario against an apiserver: create the load, watch it land, time it, clean up.

:func:`run_scenario` takes a :class:`~fleet.kube.Client` already
pointed at a cluster (the CLI starts the sandbox and the fleet, or loads a
kubeconfig) and one :class:`~bench._scenarios.ScenarioSpec`. In one nursery:

- two :class:`~fleet.kube._watching.Reflector` watches (core Nodes; the run's
  pods by label) feed trackers that count Ready nodes and pods by phase, and
  time each pod's startup as ClusterLoader2 splits it;
- a sampler scrapes ``/metrics`` and the fleet's processes every
  ``scrapeInterval`` (the timeline);
- each step writes through a fixed pool of ``concurrency`` workers fed by a
  bounded channel, paced by a token bucket (``rate``), and waits, with the
  step's ``timeout``, until the watch has seen every object in its state.
  The workers' creates and deletes go through a
  :class:`~fleet.kube.HotTransport` of ``concurrency`` connections to the same
  apiserver (the verbs of :class:`~fleet.kube.Rest` over it): ~45 µs of client
  CPU a write instead of httpx's ~1 ms, so the bench measures the apiserver,
  not itself (docs/performance.md, "Load generator"). The control paths (CRDs,
  namespaces, watches, ``/metrics``, cleanup) stay on the httpx client.

Every object the bench creates carries the label ``bench.kubemock-fleet.io/run:
<run id>``. At the end, and also when the run is cancelled (Ctrl-C), a
shielded cleanup deletes by that label: pods (grace 0: they live on fake
nodes), Deployments, Node CRs (the fleet's finalizer takes their Nodes and
Leases), then any core Node left with the label, and the namespaces the bench
created itself. The report (``report.json``, ``summary.md``) is written as soon as
the steps are done, partial (``completed: false``) if the run was interrupted, with
its cleanup ``running``; then again with the cleanup's outcome, ``interrupted`` when a
signal stopped the cleanup (and what a recount found left). A bench stopped during a
long cleanup keeps its figures.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import msgspec
import trio

from bench._chaos import run_chaos
from bench._faultcount import FaultCounter, LabelWatch, LeaseLog, Seen, WriteLog, WriteSource
from bench._faults import FaultFleet, FaultSuite, Storm, run_faults
from bench._latency import LatencyRecorder, PhaseStats
from bench._procstat import ProcessSampler
from bench._promtext import MetricsDelta, Scrape, diff, parse_metrics
from bench._report import (
    ApiserverSummary,
    ChaosResult,
    CleanupResult,
    ComponentUsage,
    FaultResult,
    LatencyRow,
    Percentiles,
    PlotsInfo,
    ProcessUsage,
    Report,
    RequestRow,
    SloResult,
    StepResult,
    StorageRow,
    TargetInfo,
    TimelineSample,
    summary_markdown,
    write_plots,
    write_report,
)
from bench._scenarios import CHAOS_TYPES, ScenarioSpec
from bench._slo import SloThresholds, slo_table
from fleet import __version__
from fleet.api import API_VERSION, GROUP, VERSION, crd_manifests
from fleet.errors import (
    AlreadyExists,
    ConfigError,
    FleetError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
)
from fleet.kube import (
    Client,
    HotTransport,
    HotTransportSettings,
    ObjectMeta,
    Reflector,
    Rest,
    TokenBucket,
    WatchEvent,
)

__all__ = ["RUN_LABEL", "FaultTarget", "NullProgress", "Progress", "RunOptions", "run_scenario"]

log = logging.getLogger("bench")

RUN_LABEL = "bench.kubemock-fleet.io/run"
"""Label on every object a bench run creates; its value is the run id."""
POD_IMAGE = "registry.k8s.io/pause:3.9"
"""The image the bench's pods name (fake kubelets never pull it)."""
WATCH_BUFFER = 1024
"""Events buffered between a watch and its tracker."""
CLEANUP_TIMEOUT = 120.0
"""Seconds the cleanup may take before it gives up and reports what is left; a run of more
objects gets more (:data:`CLEANUP_PER_SECOND`)."""
CLEANUP_PER_SECOND = 40.0
"""Objects (Node CRs and pods created) the cleanup is given a second for, when that is
longer than :data:`CLEANUP_TIMEOUT`: kwok-ci's 5,000 nodes and 10,000 pods get 375 s. On
kube-apiserver with 2 busy cores, 5,000 Node CRs (each waiting for the fleet's finalizer)
took more than 120 s."""
RESYNC_AFTER = 30.0
"""Seconds a step may see no progress before its tracker recounts from a LIST. A watch can
miss what happened (events lost to a relist's gap, a watch cut while the apiserver was
saturated): a step must not wait on what already happened, and a LIST every 30 s of a
stalled step costs the apiserver little next to the load itself."""
CLEANUP_CONCURRENCY = 16
"""Deletes in flight when the cleanup deletes one object at a time (a delete-collection
that timed out: a real apiserver answers 504 for 5,000 CRs with finalizers)."""
CLEANUP_RETRY = 1.0
"""Seconds between the cleanup's rounds while labelled objects are left."""
CLEANUP_RECOUNT = 10.0
"""Seconds a cleanup that was stopped (a signal) or timed out may take to count what it
left: the report says how many, from the apiserver, or that it could not count them."""
CLEANUP_COUNT_TRIES = 3
"""Failed counts in a row after which the cleanup stops (an unreachable apiserver): what is
left is then unknown, and the report says so."""
ETCD_SCRAPE_TIMEOUT = 5.0
"""Seconds one read of etcd's ``/metrics`` may take (a few kilobytes on loopback)."""
WRITE_TIMEOUT = 60.0
"""Seconds one write of the load may take, as the httpx client's read timeout: a slow
write is a latency to report (the apiserver's own request timeout is 60 s), not a failure."""
SERVICE_ACCOUNT_WAIT = 15.0
"""Seconds a pod create is retried while a real apiserver refuses it for want of the
namespace's ``default`` ServiceAccount: kube-controller-manager makes that a moment after
the namespace, and the ServiceAccount admission plugin refuses pods until then."""


class Progress(Protocol):
    """Where the runner reports progress (the CLI draws a rich progress bar)."""

    def begin(self, step: str, total: int) -> None: ...

    def update(self, step: str, completed: int) -> None: ...

    def end(self, step: str) -> None: ...


class NullProgress:
    """Progress reported nowhere."""

    def begin(self, step: str, total: int) -> None:
        return None

    def update(self, step: str, completed: int) -> None:
        return None

    def end(self, step: str) -> None:
        return None


FAULT_NODE_LEASE_DURATION = 40.0
"""The fault fleet's node Lease duration (the kubelet's default, written into its settings):
a Lease unrenewed for longer counts its node NotReady."""
FAULT_SHARDS = 2
"""Shards of the fault fleet at the least: one is killed, another takes its CRs."""
FAULT_COORDINATORS = 2
"""Coordinators of the fault fleet: the leader is killed, the other takes over."""

METRICS_PATH = "/metrics"
"""The apiserver's metrics URL the bench scrapes (its own requests: left out of latency rows)."""


@dataclass(frozen=True)
class FaultTarget:
    """What the ``faults`` scenario needs of the bench's own apiserver: its admin
    kubeconfig and URL (the fault fleet reaches it through a proxy), and on the sandbox its
    write log and a storm wrapper, both put in front of its handler
    (``SandboxApp.wrap_handler``)."""

    kubeconfig: Path
    server: str
    writes: WriteLog | None = None
    """None on a real apiserver: node Lease writers come from a watch (:class:`LeaseLog`)."""
    storm: Storm | None = None
    """None on a real apiserver: no 429 or 410 storms."""
    shards: int = FAULT_SHARDS


@dataclass(frozen=True)
class RunOptions:
    """How to run, beside what (the scenario)."""

    target: TargetInfo
    output: Path | None = None
    """Directory for report.json, summary.md and the plots; None writes nothing."""
    plots: bool = True
    run_id: str | None = None
    """None draws a random one (8 hex digits)."""
    progress: Progress = field(default_factory=NullProgress)
    fleet_pids: Sequence[int] = ()
    """Processes of the fleet the bench started (their CPU and RSS are reported)."""
    fleet_children: bool = False
    """The fleet runs as child processes of this one (the bench started it with ``up``):
    measure them (and the control plane's processes among them, by name)."""
    not_our_children: frozenset[int] = frozenset()
    """Child processes running before the bench started its own (:func:`child_pids`):
    with ``fleet_children``, left out."""
    self_component: str | None = "bench"
    """The bench's own process is measured under this name (what it holds: the sandbox
    apiserver and the coordinator too when it started them); None: not measured."""
    ensure_crds: bool = False
    """Create the Node CRDs if missing (the bench's own sandbox has none)."""
    cleanup_timeout: float = CLEANUP_TIMEOUT
    resync_after: float = RESYNC_AFTER
    """Seconds without progress before a step's tracker recounts from a LIST."""
    keep: bool = False
    """Leave the run's objects in place for inspection (``--keep``): no cleanup; the
    notes say how to delete them (``kubectl delete ... -l <run label>``)."""
    faults: FaultTarget | None = None
    """The ``faults`` scenario's apiserver (it starts a fleet of its own behind a proxy)."""
    etcd_metrics_url: str | None = None
    """etcd's ``/metrics`` (plain HTTP on loopback: a real control plane's etcd) read at
    each sample for its ``process_resident_memory_bytes``; None: not read (the sandbox has
    no etcd; a cluster's etcd is not the bench's to reach)."""


# --------------------------------------------------------------------------- watch views


class _Condition(msgspec.Struct, rename="camel", frozen=True):
    type: str = ""
    status: str = ""
    last_transition_time: datetime | None = None


class _Running(msgspec.Struct, rename="camel", frozen=True):
    started_at: datetime | None = None


class _ContainerState(msgspec.Struct, frozen=True):
    running: _Running | None = None


class _ContainerStatus(msgspec.Struct, rename="camel", frozen=True):
    state: _ContainerState = _ContainerState()
    restart_count: int = 0


class _PodStatus(msgspec.Struct, rename="camel", frozen=True):
    phase: str = ""
    start_time: datetime | None = None
    conditions: list[_Condition] = []
    container_statuses: list[_ContainerStatus] = []


class _PodView(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    status: _PodStatus = _PodStatus()


class _NodeStatus(msgspec.Struct, frozen=True):
    conditions: list[_Condition] = []


class _Taint(msgspec.Struct, frozen=True):
    key: str = ""
    effect: str = ""


class _NodeSpec(msgspec.Struct, frozen=True):
    taints: list[_Taint] = []


class _NodeView(msgspec.Struct, frozen=True):
    metadata: ObjectMeta
    spec: _NodeSpec = _NodeSpec()
    status: _NodeStatus = _NodeStatus()


NODE_DOWN_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})
"""The NoExecute taints the node-lifecycle controller puts on a node it has stopped hearing
from (or that reports NotReady): what evicts pods."""


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


# --------------------------------------------------------------------------- trackers


class _Tracker:
    """Something a step can wait on: ``changed`` fires on every observed event.

    ``resync``, when set, recounts from the apiserver (a LIST) and is called when a step
    has seen no change for :data:`RESYNC_AFTER`: what the watch missed is not lost.
    """

    def __init__(self) -> None:
        self._changed = trio.Event()
        self.resync: Callable[[], Awaitable[None]] | None = None
        self.resync_after = RESYNC_AFTER
        self.resyncs = 0
        """LISTs made for stalled steps."""

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(
        self, count: Callable[[], int], target: int, step: str, progress: Progress
    ) -> None:
        while True:
            event = self._changed
            now = count()
            progress.update(step, now)
            if now >= target:
                return
            with trio.move_on_after(self.resync_after if self.resync is not None else math.inf):
                await event.wait()
                continue
            assert self.resync is not None  # only a finite wait ends here
            self.resyncs += 1
            try:
                await self.resync()
            except FleetError as exc:
                log.info("step %s: recount from a list failed: %s", step, exc)


class _NodeTracker(_Tracker):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix
        self.ready: set[str] = set()
        self.known: set[str] = set()
        """The run's Nodes that exist (as the watch last said)."""
        self.down_tainted: set[str] = set()
        """Nodes carrying an unreachable or not-ready NoExecute taint now."""
        self.ever_tainted: set[str] = set()
        """Nodes seen with such a taint since :meth:`mark` (the chaos scenarios)."""
        self.not_ready_peak = 0
        """Most known nodes not Ready at once since :meth:`mark`."""
        self.last_seen: dict[str, float] = {}
        """Trio time of each node's last event: a restarted node has reported again."""

    def mark(self) -> None:
        """Start counting taints and the NotReady peak afresh."""
        self.ever_tainted = set(self.down_tainted)
        self.not_ready_peak = len(self.known - self.ready)

    def replace(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        """The Ready set from a list of Nodes (a resync), in place of what the watch built."""
        ready = set()
        for node in nodes:
            name = str((node.get("metadata") or {}).get("name", ""))
            conditions = (node.get("status") or {}).get("conditions") or ()
            if name.startswith(self._prefix) and any(
                c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
            ):
                ready.add(name)
        if ready != self.ready:
            self.ready = ready
            self._notify()

    async def consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[_NodeView]]) -> None:
        async with receive:
            async for event in receive:
                name = event.obj.metadata.name
                if not name.startswith(self._prefix):
                    continue
                ready = event.type != "DELETED" and any(
                    c.type == "Ready" and c.status == "True" for c in event.obj.status.conditions
                )
                if ready:
                    self.ready.add(name)
                else:
                    self.ready.discard(name)
                if event.type == "DELETED":
                    self.known.discard(name)
                    self.down_tainted.discard(name)
                else:
                    self.known.add(name)
                    self.last_seen[name] = trio.current_time()
                    if any(
                        t.effect == "NoExecute" and t.key in NODE_DOWN_TAINTS
                        for t in event.obj.spec.taints
                    ):
                        self.down_tainted.add(name)
                        self.ever_tainted.add(name)
                    else:
                        self.down_tainted.discard(name)
                self.not_ready_peak = max(self.not_ready_peak, len(self.known - self.ready))
                self._notify()


class _PodTracker(_Tracker):
    """Pods of the run by phase; startup latency of each, the first time it is seen Running."""

    def __init__(self, recorder: LatencyRecorder, wall: Callable[[], float]) -> None:
        super().__init__()
        self._recorder = recorder
        self._wall = wall
        self.phase: dict[str, str] = {}
        self.created_client: dict[str, float] = {}
        """Wall time each bare pod's create call was sent (the client-side start)."""
        self.running: set[str] = set()
        self.deleted: set[str] = set()
        self.terminating: set[str] = set()
        """Pods seen with a deletionTimestamp (deleted, not yet gone)."""
        self.restarts: dict[str, int] = {}
        """Each pod's containers' restartCounts summed, as last seen."""
        self.on_running: trio.MemorySendChannel[str] | None = None

    def replace(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Phases from a list of the run's pods (a resync): pods the watch never showed
        Running count as Running (without a startup latency: their times were missed), and
        pods gone from the list as deleted."""
        phase: dict[str, str] = {}
        for pod in pods:
            meta = pod.get("metadata") or {}
            name = str(meta.get("name", ""))
            value = str((pod.get("status") or {}).get("phase") or "Pending")
            phase[name] = "Terminating" if meta.get("deletionTimestamp") else value
            if value == "Running":
                self.running.add(name)
        for name in set(self.phase) - set(phase):
            self.deleted.add(name)
        self.phase = phase
        self._notify()

    def by_phase(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for phase in self.phase.values():
            out[phase] = out.get(phase, 0) + 1
        return out

    async def consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[_PodView]]) -> None:
        async with receive:
            async for event in receive:
                pod = event.obj
                name = pod.metadata.name
                if event.type == "DELETED":
                    self.phase.pop(name, None)
                    self.deleted.add(name)
                    self._notify()
                    continue
                phase = pod.status.phase or "Pending"
                self.phase[name] = "Terminating" if pod.metadata.deletion_timestamp else phase
                if pod.metadata.deletion_timestamp:
                    self.terminating.add(name)
                restarts = sum(c.restart_count for c in pod.status.container_statuses)
                if restarts:
                    self.restarts[name] = restarts
                if phase == "Running" and name not in self.running:
                    self.running.add(name)
                    self._startup(pod)
                    if self.on_running is not None:
                        await self.on_running.send(name)
                self._notify()

    def _startup(self, pod: _PodView) -> None:
        """ClusterLoader2's split: create->schedule->run->watch (server times, watch on our clock)."""
        watch = self._wall()
        create = _ts(pod.metadata.creation_timestamp)
        if create is None:
            return
        scheduled = next(
            (
                _ts(c.last_transition_time)
                for c in pod.status.conditions
                if c.type == "PodScheduled" and c.status == "True" and c.last_transition_time
            ),
            None,
        )
        schedule = scheduled if scheduled is not None else create
        started = [
            _ts(s.state.running.started_at)
            for s in pod.status.container_statuses
            if s.state.running is not None and s.state.running.started_at is not None
        ]
        run = max(t for t in started if t is not None) if started else _ts(pod.status.start_time)
        if run is None:
            run = watch
        self._recorder.record("create_to_schedule", schedule - create)
        self._recorder.record("schedule_to_run", run - schedule)
        self._recorder.record("run_to_watch", watch - run)
        self._recorder.record("pod_startup", watch - create)
        sent = self.created_client.get(pod.metadata.name)
        if sent is not None:
            # On the bench's clock alone: free of the apiserver's whole-second timestamps.
            self._recorder.record("create_to_watch_client", watch - sent)


class _StepFailed(Exception):
    pass


# --------------------------------------------------------------------------- the run


@dataclass
class _Writes:
    ok: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class _Run:
    nursery: trio.Nursery
    """The run's nursery (the watches, the sampler), set once :meth:`execute` opens it."""
    counter: FaultCounter
    """The fault suite's tally (``faults`` only), set by :meth:`fault_observers`."""

    def __init__(
        self,
        client: Client,
        spec: ScenarioSpec,
        options: RunOptions,
        *,
        writer: Rest | None = None,
        fault_fleet: FaultFleet | None = None,
    ) -> None:
        self.client = client
        self.fault_fleet = fault_fleet
        self.fault_results: list[FaultResult] = []
        self.writer: Rest = writer if writer is not None else client
        """The write pool's verbs (creates and deletes of the load); the client's by default."""
        self.spec = spec
        self.options = options
        self.progress = options.progress
        self.run_id = options.run_id or secrets.token_hex(4)
        self.prefix = f"bench-{self.run_id}-"
        self.selector = f"{RUN_LABEL}={self.run_id}"
        self.recorder = LatencyRecorder()
        self.client_latency = LatencyRecorder()
        self.pods = _PodTracker(self.recorder, time.time)
        self.nodes = _NodeTracker(self.prefix)
        for tracker, resync in ((self.nodes, self._resync_nodes), (self.pods, self._resync_pods)):
            tracker.resync, tracker.resync_after = resync, options.resync_after
        self.steps: list[StepResult] = []
        self.notes: list[str] = []
        self.timeline: list[TimelineSample] = []
        self.scrapes: list[tuple[float, Scrape]] = []
        self.etcd_resident: list[tuple[float, float]] = []
        """(time, etcd's ``process_resident_memory_bytes``) per sample with an etcd URL."""
        self.writes = _Writes()
        self.sampler = ProcessSampler(
            list(options.fleet_pids),
            own_children=options.fleet_children,
            self_name=options.self_component,
            not_ours=options.not_our_children,
        )
        self.created_namespaces: list[str] = []
        self.cleaned_before: int | None = None
        """The cleanup's first count of the run's objects (None: not counted yet)."""
        self.cleanup_errors: list[str] = []
        self.plots: PlotsInfo | None = None
        """The plots written with the first report; the cleanup does not change them."""
        self.cleanup_extra: list[str] = []
        """Collections of other labelled objects the run made (a chaos MockStatus)."""
        self.chaos: ChaosResult | None = None
        self.node_names: list[str] = []
        self.pods_created = 0
        self.started_wall = time.time()
        self.t0 = trio.current_time()
        self.failed = False

    # -- helpers --------------------------------------------------------------------------

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def _resync_nodes(self) -> None:
        self.nodes.replace((await self.client.list("/api/v1/nodes")).items)

    async def _resync_pods(self) -> None:
        path = f"/api/v1/namespaces/{self.spec.namespace}/pods"
        self.pods.replace((await self.client.list(path, label_selector=self.selector)).items)

    def cpu_mark(self) -> dict[str, float]:
        """Each component's CPU-seconds so far (a fresh sample): a step's starting mark."""
        self.sampler.sample()
        return self.sampler.totals()

    def cpu_since(self, mark: dict[str, float]) -> dict[str, float]:
        """CPU-seconds each component spent since ``mark``, rounded to 10 ms."""
        self.sampler.sample()
        return {
            name: round(max(0.0, total - mark.get(name, 0.0)), 2)
            for name, total in sorted(self.sampler.totals().items())
        }

    async def scrape(self) -> Scrape | None:
        try:
            response = await self.client.request(
                "GET", METRICS_PATH, headers={"Accept": "text/plain"}
            )
            response.raise_for_status()
            return parse_metrics(response.content.decode("utf-8", "replace"))
        except FleetError as exc:
            note = f"/metrics could not be read: {exc}"
            if note not in self.notes:
                self.notes.append(note)
            return None

    async def scrape_etcd(self) -> float | None:
        """etcd's resident memory now (``options.etcd_metrics_url``); None: not read."""
        url = self.options.etcd_metrics_url
        if url is None:
            return None
        try:
            async with httpx.AsyncClient(timeout=ETCD_SCRAPE_TIMEOUT) as http:
                response = await http.get(url)
                response.raise_for_status()
            resident = parse_metrics(response.text).resident_bytes
        except (httpx.HTTPError, FleetError) as exc:
            note = f"etcd's /metrics could not be read: {exc}"
            if note not in self.notes:
                self.notes.append(note)
            return None
        if resident is not None:
            self.etcd_resident.append((self.now(), resident))
        return resident

    async def sample(self) -> None:
        scraped = await self.scrape()
        t = self.now()
        if scraped is not None:
            self.scrapes.append((t, scraped))
        await self.scrape_etcd()
        self.sampler.sample()
        self.timeline.append(
            TimelineSample(
                t=t,
                pods_by_phase=self.pods.by_phase(),
                nodes_ready=len(self.nodes.ready),
                requests_by_verb=None if scraped is None else scraped.requests_by_verb(),
                inflight=None if scraped is None else dict(scraped.inflight),
            )
        )

    async def sampler_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.sample()  # the "before" scrape
        task_status.started()
        while True:
            await trio.sleep(self.spec.scrape_interval)
            await self.sample()

    async def write_pool(
        self,
        items: Iterable[Any] | trio.MemoryReceiveChannel[Any],
        write: Callable[[Any], Awaitable[None]],
        phase: str,
    ) -> None:
        """Run ``write`` on every item through ``concurrency`` workers at ``rate`` per second."""
        # A burst of 1: evenly spaced starts, shared by the workers.
        bucket = TokenBucket(self.spec.rate, 1)

        async def worker(receive: trio.MemoryReceiveChannel[Any]) -> None:
            async with receive:
                async for item in receive:
                    await bucket.acquire()
                    start = trio.current_time()
                    try:
                        await write(item)
                    except FleetError as exc:  # an error answer, or none (a cut connection)
                        self.writes.failed += 1
                        if len(self.writes.errors) < 20:
                            self.writes.errors.append(f"{phase}: {exc}")
                        continue
                    elapsed = trio.current_time() - start
                    self.client_latency.record(phase, elapsed)
                    self.writes.ok += 1

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            if isinstance(items, trio.MemoryReceiveChannel):
                receive = items
            else:
                send, receive = trio.open_memory_channel[Any](self.spec.concurrency)

                async def feed(send: trio.MemorySendChannel[Any]) -> None:
                    async with send:
                        for item in items:
                            await send.send(item)

                nursery.start_soon(feed, send)
            async with receive:
                for _ in range(self.spec.concurrency):
                    nursery.start_soon(worker, receive.clone())
        self.writes.seconds += trio.current_time() - started

    async def step(
        self,
        name: str,
        target: int,
        work: Callable[[], Awaitable[None]],
        reached: Callable[[], int],
        tracker: _Tracker,
    ) -> None:
        """Run ``work`` and wait until ``reached() >= target``, within the timeout."""
        self.progress.begin(name, target)
        mark = self.cpu_mark()
        start = trio.current_time()
        errors_before = len(self.writes.errors)
        resyncs_before = tracker.resyncs
        with trio.move_on_after(self.spec.timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(work)
                await tracker.wait_until(reached, target, name, self.progress)
        seconds = trio.current_time() - start
        got = reached()
        ok = got >= target and not scope.cancelled_caught
        reason = ""
        if not ok:
            reason = f"{got} of {target} reached within the {self.spec.timeout:g} s timeout"
            if self.writes.failed and len(self.writes.errors) > errors_before:
                reason += f"; last write error: {self.writes.errors[-1]}"
        self.steps.append(
            StepResult(
                name=name,
                seconds=seconds,
                target=target,
                reached=min(got, target),
                ok=ok,
                per_second=min(got, target) / seconds if seconds > 0 else 0.0,
                reason=reason,
                cpu_seconds=self.cpu_since(mark),
            )
        )
        self.progress.end(name)
        if tracker.resyncs > resyncs_before:
            self.notes.append(
                f"step {name}: no progress seen for {tracker.resync_after:g} s, recounted from "
                f"a list {tracker.resyncs - resyncs_before} time(s) (the watch may have missed "
                "changes; pods found Running that way have no startup latency)"
            )
        if not ok:
            self.notes.append(f"step {name}: {reason}")
            raise _StepFailed(name)

    # -- objects --------------------------------------------------------------------------

    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id}

    async def ensure_namespace(self, name: str) -> None:
        try:
            await self.client.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        except AlreadyExists:
            return
        self.created_namespaces.append(name)

    async def ensure_crds(self) -> None:
        for crd in crd_manifests():
            try:
                await self.client.create(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
                )
            except AlreadyExists:
                pass
        with trio.move_on_after(30):
            while True:
                try:
                    await self.client.get(f"/apis/{GROUP}/{VERSION}")
                    return
                except NotFound:
                    await trio.sleep(0.05)
        raise FleetError(f"the {GROUP} CRDs were created but are not served after 30 s")

    def node_cr(self, name: str) -> dict[str, Any]:
        config = dict(self.spec.node_config)
        config["labels"] = {**dict(config.get("labels") or {}), **self.labels()}
        return {
            "apiVersion": API_VERSION,
            "kind": "Node",
            "metadata": {
                "name": name,
                "namespace": self.spec.node_namespace,
                "labels": self.labels(),
            },
            "spec": {"nodeConfig": config},
        }

    def pod_template(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [{"name": "pause", "image": POD_IMAGE}],
            # Fake nodes may carry taints (kwok-style); the bench's pods go anywhere it placed them.
            "tolerations": [{"operator": "Exists"}],
            "terminationGracePeriodSeconds": 30,
        }
        if self.spec.type in CHAOS_TYPES:
            # Evictable as on a real cluster: any taint tolerated but a down node's NoExecute
            # ones, which only for tolerationSeconds (DefaultTolerationSeconds' pair).
            spec["tolerations"] = [
                {"operator": "Exists", "effect": "NoSchedule"},
                {"operator": "Exists", "effect": "PreferNoSchedule"},
                *(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": self.spec.toleration_seconds,
                    }
                    for key in sorted(NODE_DOWN_TAINTS)
                ),
            ]
        if self.spec.placement == "scheduler":
            spec["nodeSelector"] = self.labels()
        return {
            "metadata": {"labels": self.labels(), "annotations": dict(self.spec.pod_annotations)},
            "spec": spec,
        }

    def pod_name(self, index: int) -> str:
        return f"{self.prefix}p{index:06d}"

    async def create_pod(self, index: int) -> None:
        template = self.pod_template()
        name = self.pod_name(index)
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": self.spec.namespace},
            "spec": dict(template["spec"]),
        }
        if self.spec.placement == "direct":
            body["spec"]["nodeName"] = self.node_names[index % len(self.node_names)]
        self.pods.created_client[name] = time.time()
        path = f"/api/v1/namespaces/{self.spec.namespace}/pods"
        deadline = trio.current_time() + SERVICE_ACCOUNT_WAIT
        while True:
            try:
                await self.writer.create(path, body)
                break
            except Forbidden as exc:
                if "service account" not in exc.message or trio.current_time() > deadline:
                    raise
                await trio.sleep(0.2)
        self.pods_created += 1

    async def delete_pod(self, name: str) -> None:
        try:
            await self.writer.delete(f"/api/v1/namespaces/{self.spec.namespace}/pods/{name}")
        except NotFound:
            pass

    # -- steps ----------------------------------------------------------------------------

    async def nodes_ready(self) -> None:
        self.node_names = [f"{self.prefix}n{i:05d}" for i in range(self.spec.nodes)]
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.spec.node_namespace}/nodes"

        async def create(name: str) -> None:
            await self.writer.create(path, self.node_cr(name))

        await self.step(
            "nodes-ready",
            self.spec.nodes,
            lambda: self.write_pool(self.node_names, create, f"create nodes.{GROUP}"),
            lambda: len(self.nodes.ready),
            self.nodes,
        )

    async def pods_running(self, count: int) -> None:
        async def work() -> None:
            if self.spec.workload == "deployment":
                await self._create_deployments(count)
            else:
                await self.write_pool(range(count), self.create_pod, "create pods")

        await self.step("pods-running", count, work, lambda: len(self.pods.running), self.pods)

    async def _create_deployments(self, count: int) -> None:
        per = self.spec.pods_per_deployment
        sizes = [min(per, count - start) for start in range(0, count, per)]
        path = f"/apis/apps/v1/namespaces/{self.spec.namespace}/deployments"

        async def create(index: int) -> None:
            name = f"{self.prefix}d{index:04d}"
            template = self.pod_template()
            template["metadata"]["labels"] = {**template["metadata"]["labels"], "app": name}
            await self.writer.create(
                path,
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {
                        "name": name,
                        "namespace": self.spec.namespace,
                        "labels": self.labels(),
                    },
                    "spec": {
                        "replicas": sizes[index],
                        "selector": {"matchLabels": {"app": name}},
                        "template": template,
                    },
                },
            )
            self.pods_created += sizes[index]

        await self.write_pool(range(len(sizes)), create, "create deployments")

    async def daemonset_running(self) -> None:
        """One DaemonSet over the run's nodes (its pods select them by the run label), timed
        until a pod runs on every one of them."""
        path = f"/apis/apps/v1/namespaces/{self.spec.namespace}/daemonsets"
        name = f"{self.prefix}ds"

        async def work() -> None:
            template = self.pod_template()
            template["metadata"]["labels"] = {**template["metadata"]["labels"], "app": name}
            template["spec"]["nodeSelector"] = self.labels()  # the run's nodes, whatever placement
            await self.writer.create(
                path,
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "metadata": {
                        "name": name,
                        "namespace": self.spec.namespace,
                        "labels": self.labels(),
                    },
                    "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
                },
            )
            self.pods_created = self.spec.nodes

        await self.step(
            "pods-running", self.spec.nodes, work, lambda: len(self.pods.running), self.pods
        )

    async def pods_deleted(self) -> None:
        names = sorted(self.pods.running)
        before = len(self.pods.deleted)
        if self.spec.workload == "deployment":
            path = f"/apis/apps/v1/namespaces/{self.spec.namespace}/deployments"

            async def work() -> None:
                await self.client.delete_collection(
                    path, label_selector=self.selector, propagation_policy="Background"
                )
        else:

            async def work() -> None:
                await self.write_pool(names, self.delete_pod, "delete pods")

        await self.step(
            "pods-deleted", len(names), work, lambda: len(self.pods.deleted) - before, self.pods
        )

    async def churn(self, first: int = 0) -> None:
        """Pods created at ``rate`` for ``duration``, numbered from ``first``, each deleted
        once Running."""
        deadline = trio.current_time() + self.spec.duration
        # Counted from here: pods standing before the churn (pod-churn's) are not its own.
        created_before, deleted_before = self.pods_created, len(self.pods.deleted)

        def created() -> int:
            return self.pods_created - created_before

        def deleted() -> int:
            return len(self.pods.deleted) - deleted_before

        send, receive = trio.open_memory_channel[str](self.spec.concurrency * 4)
        self.pods.on_running = send

        def indices() -> Iterable[int]:
            index = first
            while trio.current_time() < deadline:
                yield index
                index += 1

        async def work() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.write_pool, receive, self.delete_pod, "delete pods")
                await self.write_pool(indices(), self.create_pod, "create pods")
                # Creation is over: wait until every pod created was deleted, then stop deleting.
                await self.pods.wait_until(deleted, created(), "churn", self.progress)
                nursery.cancel_scope.cancel()

        expected = math.ceil(self.spec.duration * self.spec.rate)
        self.progress.begin("churn", expected)
        mark = self.cpu_mark()
        start = trio.current_time()
        with trio.move_on_after(self.spec.duration + self.spec.timeout) as scope:
            await work()
        self.pods.on_running = None
        seconds = trio.current_time() - start
        gone, made = deleted(), created()
        ok = not scope.cancelled_caught and gone >= made
        self.steps.append(
            StepResult(
                name="churn",
                seconds=seconds,
                target=made,
                reached=min(gone, made),
                ok=ok,
                per_second=made / seconds if seconds > 0 else 0.0,
                reason=""
                if ok
                else f"{gone} of {made} pods deleted within "
                f"{self.spec.duration + self.spec.timeout:g} s",
                cpu_seconds=self.cpu_since(mark),
            )
        )
        self.progress.end("churn")
        if not ok:
            self.notes.append(f"churn: {gone} of {made} pods deleted in time")
            raise _StepFailed("churn")

    async def soak(self) -> None:
        self.progress.begin("heartbeat-soak", round(self.spec.duration))
        mark = self.cpu_mark()
        start = trio.current_time()
        while (elapsed := trio.current_time() - start) < self.spec.duration:
            self.progress.update("heartbeat-soak", round(elapsed))
            await trio.sleep(min(1.0, self.spec.duration - elapsed))
        ready = len(self.nodes.ready)
        seconds = trio.current_time() - start
        self.steps.append(
            StepResult(
                name="heartbeat-soak",
                seconds=seconds,
                target=self.spec.nodes,
                reached=ready,
                ok=ready >= self.spec.nodes,
                per_second=0.0,
                reason=""
                if ready >= self.spec.nodes
                else f"only {ready} of {self.spec.nodes} nodes Ready at the end",
                cpu_seconds=self.cpu_since(mark),
            )
        )
        self.progress.end("heartbeat-soak")
        if ready < self.spec.nodes:
            self.notes.append(
                f"heartbeat-soak: only {ready} of {self.spec.nodes} nodes Ready at the end"
            )
            raise _StepFailed("heartbeat-soak")

    async def fault_observers(self) -> None:
        """The fault suite's watches, from before the first node: shard labels, nodes and
        pods, and on a real apiserver node Lease writers."""
        target = self.options.faults
        if target is None or self.fault_fleet is None:
            raise FleetError("the faults scenario runs on the bench's own apiserver only")
        writes: WriteSource
        if target.writes is not None:
            writes = target.writes
        else:
            lease_log = LeaseLog()
            await self.nursery.start(lease_log.run, self.client)
            writes = lease_log
        ns = self.spec.namespace
        labels, seen = LabelWatch(), Seen()
        crs = f"/apis/{GROUP}/{VERSION}/namespaces/{self.spec.node_namespace}/nodes"
        pods = f"/api/v1/namespaces/{ns}/pods"
        await self.nursery.start(labels.run, self.client, crs, self.selector)
        await self.nursery.start(seen.run, self.client, pods, self.selector)
        fleet = self.fault_fleet
        self.counter = FaultCounter(
            self.client,
            crs_path=crs,
            pods_path=pods,
            nodes=[],
            pods=[],
            writes=writes,
            labels=labels,
            seen=seen,
            exited=fleet.exited,
            killed=lambda: fleet.shard_killed,
            node_lease_duration=FAULT_NODE_LEASE_DURATION,
            settle_within=self.spec.timeout,
            selector=self.selector,
        )

    async def faults(self) -> None:
        """Each fault of :data:`bench._faults.FAULTS`, one a step, with its counts."""
        target, fleet = self.options.faults, self.fault_fleet
        assert target is not None and fleet is not None
        self.counter.nodes.extend(self.node_names)
        self.counter.pods.extend(self.pod_name(i) for i in range(self.spec.pods))
        suite = FaultSuite(
            client=self.client,
            fleet=fleet,
            counter=self.counter,
            storm=target.storm,
            outage=self.spec.outage,
            malformed=self.spec.malformed,
            cr_body=self._fault_cr,
            pod_body=self._fault_pod,
            fresh_name=lambda i: f"{self.prefix}n{i:05d}",
        )
        if target.storm is None:
            self.notes.append(
                "faults: no 429 or 410 storms (a real apiserver's answers are not the bench's "
                "to forge); node Lease writers from managedFields as a watch saw them"
            )
        marks: dict[str, tuple[float, dict[str, float]]] = {}

        def begin(name: str) -> None:
            self.progress.begin(f"fault {name}", 1)
            marks[name] = (trio.current_time(), self.cpu_mark())

        def done(result: FaultResult) -> None:
            start, mark = marks[result.name]
            self.progress.update(f"fault {result.name}", 1 if result.ok else 0)
            self.progress.end(f"fault {result.name}")
            log.info("%s", result.line())
            self.fault_results.append(result)
            self.steps.append(
                StepResult(
                    name=f"fault {result.name}",
                    seconds=trio.current_time() - start,
                    target=1,
                    reached=1 if result.ok else 0,
                    ok=result.ok,
                    reason=result.reason,
                    cpu_seconds=self.cpu_since(mark),
                )
            )
            if not result.ok:
                self.notes.append(f"fault {result.name}: {result.reason}")

        results = await run_faults(suite, done, begin=begin)
        self.node_names = list(self.counter.nodes)  # the failover's new CRs count as created
        if not all(r.ok for r in results):
            raise _StepFailed("faults")

    def _fault_cr(self, name: str, **node_config: Any) -> dict[str, Any]:
        body = self.node_cr(name)
        body["spec"]["nodeConfig"].update(node_config)
        return body

    def _fault_pod(self, name: str, node: str, **annotations: str) -> dict[str, Any]:
        template = self.pod_template()
        spec = {k: v for k, v in template["spec"].items() if k != "nodeSelector"}
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": self.spec.namespace,
                "labels": self.labels(),
                "annotations": {f"zhizuqiu.github.com/{k}": v for k, v in annotations.items()},
            },
            "spec": {**spec, "nodeName": node},
        }

    async def scenario(self) -> None:
        kind = self.spec.type
        if kind == "faults":
            await self.fault_observers()
        await self.nodes_ready()
        if kind == "pod-startup":
            await self.pods_running(self.spec.pods)
        elif kind == "kwok-ci":
            await self.pods_running(self.spec.pods)
            await self.pods_deleted()
        elif kind == "daemonset":
            await self.daemonset_running()
        elif kind == "churn":
            await self.churn()
        elif kind == "heartbeat-soak":
            await self.soak()
        elif kind == "faults":
            await self.pods_running(self.spec.pods)
            await self.faults()
        elif kind in CHAOS_TYPES and not await run_chaos(self):
            raise _StepFailed("settle")

    # -- cleanup --------------------------------------------------------------------------

    async def _delete_labelled(self, path: str, *, grace: int | None = None) -> None:
        """Ask for every object of ``path`` with the run label to go.

        A delete-collection first; where it is not served, or fails (a real apiserver
        answers 504 when 5,000 CRs with finalizers take longer than its request timeout,
        having deleted some), one DELETE per object still there, a few at a time.
        """
        try:
            listed = await self.client.list(path, label_selector=self.selector)
        except NotFound:
            return
        if all(item.get("metadata", {}).get("deletionTimestamp") for item in listed.items):
            return  # all on their way out (finalizers): asking again would only cost a LIST
        try:
            await self.client.delete_collection(
                path,
                label_selector=self.selector,
                grace_period_seconds=grace,
                propagation_policy="Background",
            )
            return
        except MethodNotAllowed:
            pass
        except FleetError as exc:
            log.info("cleanup: delete-collection of %s: %s; deleting one by one", path, exc)
            listed = await self.client.list(path, label_selector=self.selector)
        names = [
            str(item.get("metadata", {}).get("name", ""))
            for item in listed.items
            if not item.get("metadata", {}).get("deletionTimestamp")
        ]
        limiter = trio.CapacityLimiter(CLEANUP_CONCURRENCY)

        async def delete(name: str) -> None:
            async with limiter:
                try:
                    await self.writer.delete(f"{path}/{name}", grace_period_seconds=grace)
                except NotFound:
                    pass

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(delete, name)

    async def _count_labelled(self, path: str) -> int:
        try:
            return len((await self.client.list(path, label_selector=self.selector)).items)
        except NotFound:
            return 0

    async def cleanup(self) -> CleanupResult:
        """Delete the run's objects in rounds until none is left or the time is up.

        Counts come from the apiserver, before and after: ``deleted`` is what went,
        ``leftover`` what is still there, whatever any single request answered.
        """
        ns, node_ns = self.spec.namespace, self.spec.node_namespace
        pods = f"/api/v1/namespaces/{ns}/pods"
        deployments = f"/apis/apps/v1/namespaces/{ns}/deployments"
        daemonsets = f"/apis/apps/v1/namespaces/{ns}/daemonsets"
        crs = f"/apis/{GROUP}/{VERSION}/namespaces/{node_ns}/nodes"
        nodes = "/api/v1/nodes"
        extra = tuple((path, None) for path in self.cleanup_extra)
        order = ((deployments, None), (daemonsets, None), (pods, 0), (crs, None), *extra)
        errors = self.cleanup_errors
        leftover: int | None = None
        count = self._count_all
        failed_counts = 0
        budget = self.options.cleanup_timeout
        if budget == CLEANUP_TIMEOUT:
            budget = max(budget, (len(self.node_names) + self.pods_created) / CLEANUP_PER_SECOND)
        with trio.move_on_after(budget) as scope:
            while True:
                try:
                    left = await count()
                except FleetError as exc:
                    errors.append(f"counting: {exc}")
                    failed_counts += 1
                    if failed_counts >= CLEANUP_COUNT_TRIES:
                        break  # the apiserver is gone or refuses: say so, do not wait it out
                    await trio.sleep(CLEANUP_RETRY)
                    continue
                failed_counts = 0
                if self.cleaned_before is None:
                    self.cleaned_before = left
                leftover = left
                if left == 0:
                    break
                for path, grace in order:
                    try:
                        await self._delete_labelled(path, grace=grace)
                    except FleetError as exc:
                        if len(errors) < 20:
                            errors.append(f"{path}: {exc}")
                # The fleet's finalizer removes each Node and Lease before its CR goes; a
                # Node left behind (a fleet stopped first) goes by its label, after its CR.
                if await self._count_labelled(crs) == 0:
                    try:
                        await self._delete_labelled(nodes)
                    except FleetError as exc:
                        errors.append(f"{nodes}: {exc}")
                await trio.sleep(CLEANUP_RETRY)
            for name in self.created_namespaces:
                try:
                    await self.client.delete(f"/api/v1/namespaces/{name}")
                except FleetError as exc:
                    errors.append(f"namespace {name}: {exc}")
        if scope.cancelled_caught:
            errors.append(f"cleanup did not finish within {budget:.0f} s")
            leftover = await self._recount()
        return self._cleanup_result(leftover)

    def _run_paths(self) -> tuple[str, ...]:
        """Where the run's own labelled objects are: its pods, Deployments, DaemonSets, CRs."""
        ns, node_ns = self.spec.namespace, self.spec.node_namespace
        return (
            f"/api/v1/namespaces/{ns}/pods",
            f"/apis/apps/v1/namespaces/{ns}/deployments",
            f"/apis/apps/v1/namespaces/{ns}/daemonsets",
            f"/apis/{GROUP}/{VERSION}/namespaces/{node_ns}/nodes",
        )

    async def _count_all(self) -> int:
        """The run's labelled objects of every kind the cleanup deletes."""
        paths = (*self._run_paths(), "/api/v1/nodes", *self.cleanup_extra)
        return sum([await self._count_labelled(p) for p in paths])

    async def _recount(self) -> int | None:
        """What is left after a cleanup that did not end on its own (None: not counted)."""
        with trio.move_on_after(CLEANUP_RECOUNT):
            try:
                return await self._count_all()
            except FleetError as exc:
                self.cleanup_errors.append(f"counting: {exc}")
        return None

    def _cleanup_result(self, leftover: int | None, *, interrupted: bool = False) -> CleanupResult:
        """The cleanup's outcome from its first count and ``leftover``."""
        errors = list(self.cleanup_errors)
        if interrupted:
            errors.append("the cleanup was interrupted (a signal)")
        if leftover is None:
            errors.append("what is left could not be counted")
        return CleanupResult(
            deleted=max(0, (self.cleaned_before or 0) - (leftover or 0)),
            leftover=leftover or 0,
            errors=tuple(errors),
            state="interrupted" if interrupted else "finished",
        )

    # -- the whole ------------------------------------------------------------------------

    async def execute(self) -> Report:
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                if self.options.ensure_crds:
                    await self.ensure_crds()
                for namespace in dict.fromkeys((self.spec.namespace, self.spec.node_namespace)):
                    await self.ensure_namespace(namespace)
                await self._watch(
                    nursery, Reflector(self.client, "/api/v1/nodes", _NodeView), self.nodes.consume
                )
                await self._watch(
                    nursery,
                    Reflector(
                        self.client,
                        f"/api/v1/namespaces/{self.spec.namespace}/pods",
                        _PodView,
                        label_selector=self.selector,
                    ),
                    self.pods.consume,
                )
                await nursery.start(self.sampler_loop)
                try:
                    await self.scenario()
                except _StepFailed:
                    self.failed = True
                await self.sample()  # the "after" scrape
                nursery.cancel_scope.cancel()
        except BaseException:
            # Interrupted (Ctrl-C is a cancellation) or broken: clean up, keep a partial report.
            with trio.CancelScope(shield=True):
                self.notes.append("the run was interrupted: figures are partial")
                await self.clean_up(completed=False)
            raise
        return await self.clean_up(completed=not self.failed)

    async def clean_up(self, *, completed: bool) -> Report:
        """Write the report as the steps left it, clean up (or count, ``--keep``), and write
        it again with the cleanup's outcome. A cleanup cancelled (the CLI's signal) is
        recounted and written ``interrupted`` before the cancellation goes on: a bench
        stopped in a cleanup of thousands of objects once wrote no report at all."""
        self.finish(CleanupResult(deleted=0, leftover=0, state="running"), completed=completed)
        try:
            cleanup = await self.kept() if self.options.keep else await self.cleanup()
        except BaseException:
            with trio.CancelScope(shield=True):
                leftover = await self._recount()
                self.finish(self._cleanup_result(leftover, interrupted=True), completed=completed)
            raise
        return self.finish(cleanup, completed=completed)

    async def kept(self) -> CleanupResult:
        """``--keep``: nothing deleted; count what is left and say how to delete it."""
        ns, node_ns = self.spec.namespace, self.spec.node_namespace
        errors: list[str] = []
        leftover = 0
        try:
            leftover = sum([await self._count_labelled(p) for p in self._run_paths()])
        except FleetError as exc:
            errors.append(str(exc))
        self.notes.append(
            f"kept (--keep): {leftover} objects of run {self.run_id} left in place; delete them "
            f"with `kubectl delete deployments,daemonsets,pods -n {ns} -l {self.selector}` and "
            f"`kubectl delete nodes.{GROUP} -n {node_ns} -l {self.selector}`"
        )
        return CleanupResult(deleted=0, leftover=leftover, errors=tuple(errors))

    async def _watch(
        self,
        nursery: trio.Nursery,
        reflector: Reflector[Any],
        consume: Callable[[trio.MemoryReceiveChannel[Any]], Awaitable[None]],
    ) -> None:
        send, receive = trio.open_memory_channel[WatchEvent[Any]](WATCH_BUFFER)
        nursery.start_soon(consume, receive)
        await nursery.start(reflector.run, send)

    # -- the report -----------------------------------------------------------------------

    def finish(self, cleanup: CleanupResult, *, completed: bool) -> Report:
        report = self.build(cleanup, completed=completed)
        if self.options.output is not None:
            out = self.options.output
            out.mkdir(parents=True, exist_ok=True)
            if self.plots is None:  # once, before the cleanup: they do not show it
                self.plots = (
                    write_plots(report, out)
                    if self.options.plots
                    else PlotsInfo(skipped="plots not asked for (--no-plots)")
                )
            report = msgspec.structs.replace(report, plots=self.plots)
            write_report(report, out / "report.json")
            (out / "summary.md").write_text(summary_markdown(report), encoding="utf-8")
        return report

    def build(self, cleanup: CleanupResult, *, completed: bool) -> Report:
        api: ApiserverSummary | None = None
        delta: MetricsDelta | None = None
        if len(self.scrapes) >= 2:
            (t0, first), (t1, last) = self.scrapes[0], self.scrapes[-1]
            delta = diff(first, last, seconds=t1 - t0)
            api = self.apiserver_summary(delta)
        elif self.scrapes:
            self.notes.append("only one /metrics scrape succeeded: no apiserver figures")
        startup = self.recorder.stats("pod_startup")
        thresholds = SloThresholds(self.spec.slo.mutating_p99, self.spec.slo.pod_startup_p99)
        rows = slo_table(delta.latencies if delta else {}, startup, thresholds)
        if not rows:
            self.notes.append("the SLO table is empty: nothing was measured against it")
        usage = None
        if (
            (self.sampler.roots or self.sampler.own_children)
            and self.sampler.available
            and self.sampler.pids
        ):
            usage = ProcessUsage(
                pids=self.sampler.pids,
                cpu_seconds=self.sampler.cpu_seconds,
                peak_rss_bytes=self.sampler.peak_rss,
            )
        components = [
            ComponentUsage(name=name, pids=pids, cpu_seconds=cpu, peak_rss_bytes=rss)
            for name, (pids, cpu, rss) in sorted(self.sampler.usage().items())
        ]
        if self.writes.errors:
            self.notes.extend(self.writes.errors)
        return Report(
            schema_version=1,
            tool=f"kubemock-fleet {__version__}",
            run_id=self.run_id,
            scenario=self.spec.name,
            scenario_type=self.spec.type,
            parameters=self.spec.parameters(),
            target=self.options.target,
            started_at=datetime.fromtimestamp(self.started_wall, UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            ),
            duration_seconds=self.now(),
            steps=self.steps,
            pods_created=self.pods_created,
            pods_running=len(self.pods.running),
            pods_deleted=len(self.pods.deleted),
            nodes_created=len(self.node_names),
            nodes_ready=len(self.nodes.ready),
            writes_per_second=self.writes.ok / self.writes.seconds
            if self.writes.seconds > 0
            else 0.0,
            pod_startup={name: _percentiles(s) for name, s in self.recorder.all_stats().items()},
            client_latency={
                name: _percentiles(s) for name, s in self.client_latency.all_stats().items()
            },
            apiserver=api,
            slo=[
                SloResult(
                    slo=r.slo,
                    subject=r.subject,
                    count=r.count,
                    p99=r.p99,
                    threshold=r.threshold,
                    passed=r.passed,
                )
                for r in rows
            ],
            slo_passed=bool(rows) and all(r.passed for r in rows),
            timeline=self.timeline,
            fleet_usage=usage,
            components=components,
            cleanup=cleanup,
            faults=self.fault_results,
            chaos=self.chaos,
            notes=tuple(dict.fromkeys(self.notes)),
            completed=completed,
        )

    def apiserver_summary(self, delta: MetricsDelta) -> ApiserverSummary:
        peaks: dict[str, float] = {}
        watches = 0.0
        for _, scraped in self.scrapes:
            for kind, value in scraped.inflight.items():
                peaks[kind] = max(peaks.get(kind, 0.0), value)
            watches = max(watches, scraped.watches())
        rows = [
            RequestRow(
                verb=k.verb,
                group=k.group,
                resource=k.resource,
                subresource=k.subresource,
                code=k.code,
                count=v,
            )
            for k, v in sorted(delta.requests.items())
        ]
        latency = [
            LatencyRow(
                verb=k.verb,
                resource=k.label.split(" ", 1)[1],
                count=h.count,
                p50=h.quantile(0.5),
                p90=h.quantile(0.9),
                p99=h.quantile(0.99),
                first_bucket=h.bounds[0] if h.bounds and h.bounds[0] > 0 else None,
            )
            for k, h in sorted(delta.latencies.items())
            # The bench's own scrapes of /metrics are not the load it measures.
            if not (k.resource == "" and k.subresource == METRICS_PATH)
        ]
        storage = [
            StorageRow(resource=name, before=b, after=a)
            for name, (b, a) in delta.storage_change().items()
        ]
        total = delta.requests_total()
        return ApiserverSummary(
            latency_family=delta.latency_family,
            requests_total=total,
            requests_per_second=total / delta.seconds if delta.seconds > 0 else 0.0,
            requests_by_verb=delta.requests_by_verb(),
            requests=rows,
            latency=latency,
            inflight_peak=peaks,
            watches_peak=watches,
            storage=storage,
            scrapes=len(self.scrapes),
        )


def _percentiles(stats: PhaseStats) -> Percentiles:
    return Percentiles(
        count=stats.count,
        p50=stats.p50,
        p90=stats.p90,
        p99=stats.p99,
        max=stats.max,
        mean=stats.mean,
    )


async def run_scenario(client: Client, spec: ScenarioSpec, options: RunOptions) -> Report:
    """Run ``spec`` against the cluster ``client`` reaches; the report (also written to
    ``options.output`` when set). Everything created is deleted again, also on cancellation.

    The load itself goes through a :class:`~fleet.kube.HotTransport` to the same
    apiserver (``client.config``), one connection per worker of the write pool.
    """
    settings = HotTransportSettings(connections=spec.concurrency, request_timeout=WRITE_TIMEOUT)
    async with HotTransport(client.config, settings) as hot:
        if spec.type != "faults":
            return await _Run(client, spec, options, writer=Rest(hot)).execute()
        if options.faults is None:
            raise ConfigError(
                "the faults scenario needs the bench's own apiserver (no --kubeconfig/--context): "
                "its fleet reaches the apiserver through the bench's fault proxy"
            )
        return await _with_fault_fleet(client, spec, options, Rest(hot), options.faults)


async def _with_fault_fleet(
    client: Client, spec: ScenarioSpec, options: RunOptions, writer: Rest, target: FaultTarget
) -> Report:
    """The ``faults`` scenario with its fleet (shards and coordinators behind a fault proxy)
    running from before the first node until after the cleanup (the shards' finalizer on
    each Node CR). Their logs go into the report directory (``fleet/``)."""
    if options.output is not None:
        workdir = options.output / "fleet"
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="kubemock-fleet-faults-"))
    config = workdir / "fleet.yaml"
    config.write_text(
        json.dumps(
            {
                "shards": target.shards,
                "shard": {"metricsPort": 0, "nodeLeaseDuration": f"{FAULT_NODE_LEASE_DURATION:g}s"},
                "coordinator": {"metricsPort": 0},
            }
        ),
        encoding="utf-8",
    )
    fleet = FaultFleet(
        target.kubeconfig,
        target.server,
        config,
        workdir,
        shards=target.shards,
        coordinators=FAULT_COORDINATORS,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(fleet.run)
        try:
            return await _Run(client, spec, options, writer=writer, fault_fleet=fleet).execute()
        finally:
            fleet.stop()
