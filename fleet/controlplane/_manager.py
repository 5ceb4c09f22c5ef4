"""Running the control-plane loops together: one nursery, shared informers, each loop optional.

:class:`ControlPlane` builds the enabled loops over one
:class:`~fleet.controlplane._informer.Informers` (so the scheduler, the
ReplicaSet controller, node lifecycle and the garbage collector share one pod
watch, as kube-controller-manager's controllers share informers), then runs
them and the informers in one nursery. :func:`serve_control_plane` is the
control plane's composition root: it opens an httpx :class:`fleet.kube.Client`
for a cluster config (reads, lists and watches) and a
:class:`fleet.kube.HotTransport` (writes: at thousands of pods a second,
httpx's connection pool bookkeeping was half the control plane's CPU), and runs
:class:`ControlPlane` over them. The
``control-plane`` command (``up``'s child process) and ``up``'s in-process
control plane (beside the sandbox, or beside a real apiserver whose
kube-controller-manager or kube-scheduler is missing) both call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field

import trio

from fleet.controlplane._cronjobs import CronJobController, CronJobSettings
from fleet.controlplane._daemonsets import DaemonSetController, DaemonSetSettings
from fleet.controlplane._deployments import DeploymentController, DeploymentSettings
from fleet.controlplane._disruption import DisruptionController, DisruptionSettings
from fleet.controlplane._endpoints import EndpointsController, EndpointsSettings
from fleet.controlplane._endpointslices import EndpointSliceController, EndpointSliceSettings
from fleet.controlplane._events import EventRecorder, EventSettings
from fleet.controlplane._gc import GarbageCollector, GCSettings
from fleet.controlplane._informer import Informers
from fleet.controlplane._jobs import JobController, JobSettings
from fleet.controlplane._nodelifecycle import NodeLifecycleController, NodeLifecycleSettings
from fleet.controlplane._replicasets import ReplicaSetController, ReplicaSetSettings
from fleet.controlplane._rest import Rest
from fleet.controlplane._scheduler import Scheduler, SchedulerSettings
from fleet.controlplane._statefulsets import StatefulSetController, StatefulSetSettings
from fleet.kube import (
    BaseRequester,
    Client,
    ClusterConfig,
    HotTransport,
    HotTransportSettings,
    Requester,
    Response,
    StreamResponse,
)

__all__ = ["ControlPlane", "ControlPlaneSettings", "serve_control_plane"]

WRITE_CONNECTIONS = 64
"""The write transport's connections: as many as the DaemonSet controller's largest
slow-start batch of creations (the scheduler's binders, 16, and the event writers fit in)."""
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _SplitRequester(BaseRequester):
    """Writes through one requester, reads and watches through another."""

    def __init__(self, reads: Requester, writes: Requester) -> None:
        self._reads = reads
        self._writes = writes

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        # The loops write single objects (no deletecollection): short exchanges all.
        to = self._writes if method in _WRITES else self._reads
        return await to.request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._reads.stream(method, path, params=params, headers=headers)


@dataclass(frozen=True, slots=True)
class ControlPlaneSettings:
    """Which loops run, and how each works. Every loop is on by default, as in a real cluster."""

    scheduler: bool = True
    """Bind pending pods to nodes (kube-scheduler)."""
    replicasets: bool = True
    """Keep ReplicaSets' pods (the ``replicaset`` controller)."""
    deployments: bool = True
    """Roll Deployments out through ReplicaSets (the ``deployment`` controller)."""
    node_lifecycle: bool = True
    """Mark silent nodes Unknown, taint them, evict their pods (``nodelifecycle``)."""
    gc: bool = True
    """Cascade deletions, collect pods of vanished nodes, finish namespace deletion."""
    jobs: bool = True
    """Run Jobs' pods to completion (the ``job`` and ``ttl-after-finished`` controllers)."""
    cronjobs: bool = True
    """Start CronJobs' Jobs on schedule (the ``cronjob`` controller)."""
    daemonsets: bool = True
    """One pod per eligible node (the ``daemonset`` controller)."""
    statefulsets: bool = True
    """Ordered pods with stable names (the ``statefulset`` controller)."""
    endpoints: bool = True
    """Services' Endpoints from their Ready pods (the ``endpoint`` controller)."""
    endpointslices: bool = True
    """Services' EndpointSlices (the ``endpointslice`` controller)."""
    disruption: bool = True
    """PodDisruptionBudgets' status, which evictions honour (the ``disruption`` controller)."""
    scheduler_settings: SchedulerSettings = field(default_factory=SchedulerSettings)
    replicaset_settings: ReplicaSetSettings = field(default_factory=ReplicaSetSettings)
    deployment_settings: DeploymentSettings = field(default_factory=DeploymentSettings)
    node_lifecycle_settings: NodeLifecycleSettings = field(default_factory=NodeLifecycleSettings)
    gc_settings: GCSettings = field(default_factory=GCSettings)
    job_settings: JobSettings = field(default_factory=JobSettings)
    cronjob_settings: CronJobSettings = field(default_factory=CronJobSettings)
    daemonset_settings: DaemonSetSettings = field(default_factory=DaemonSetSettings)
    statefulset_settings: StatefulSetSettings = field(default_factory=StatefulSetSettings)
    endpoints_settings: EndpointsSettings = field(default_factory=EndpointsSettings)
    endpointslice_settings: EndpointSliceSettings = field(default_factory=EndpointSliceSettings)
    disruption_settings: DisruptionSettings = field(default_factory=DisruptionSettings)
    event_settings: EventSettings = field(default_factory=EventSettings)
    """How the loops' events are filtered, combined and deduplicated (client-go's correlator)."""


class ControlPlane:
    """The enabled loops over one requester; ``await nursery.start(cp.run)``."""

    def __init__(
        self,
        requester: Requester,
        settings: ControlPlaneSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings if settings is not None else ControlPlaneSettings()
        rest = Rest(requester)
        self.informers = Informers(requester, clock=clock)
        self.events = EventRecorder(rest, s.event_settings, clock=clock, wall_clock=wall_clock)
        ev = self.events
        self.scheduler = (
            Scheduler(rest, self.informers, s.scheduler_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.scheduler else None
        )  # fmt: skip
        self.replicasets = (
            ReplicaSetController(rest, self.informers, s.replicaset_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.replicasets else None
        )  # fmt: skip
        self.deployments = (
            DeploymentController(rest, self.informers, s.deployment_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.deployments else None
        )  # fmt: skip
        self.node_lifecycle = (
            NodeLifecycleController(
                rest, self.informers, s.node_lifecycle_settings, clock=clock, wall_clock=wall_clock,
                events=ev,
            )
            if s.node_lifecycle else None
        )  # fmt: skip
        self.gc = (
            GarbageCollector(rest, self.informers, s.gc_settings, clock=clock) if s.gc else None
        )
        self.jobs = (
            JobController(rest, self.informers, s.job_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.jobs else None
        )  # fmt: skip
        self.cronjobs = (
            CronJobController(rest, self.informers, s.cronjob_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.cronjobs else None
        )  # fmt: skip
        self.daemonsets = (
            DaemonSetController(rest, self.informers, s.daemonset_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.daemonsets else None
        )  # fmt: skip
        self.endpoints = (
            EndpointsController(rest, self.informers, s.endpoints_settings, clock=clock)
            if s.endpoints else None
        )  # fmt: skip
        self.endpointslices = (
            EndpointSliceController(rest, self.informers, s.endpointslice_settings, clock=clock)
            if s.endpointslices else None
        )  # fmt: skip
        self.disruption = (
            DisruptionController(rest, self.informers, s.disruption_settings, clock=clock, wall_clock=wall_clock)
            if s.disruption else None
        )  # fmt: skip
        self.statefulsets = (
            StatefulSetController(rest, self.informers, s.statefulset_settings, clock=clock, wall_clock=wall_clock, events=ev)
            if s.statefulsets else None
        )  # fmt: skip

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every enabled loop until cancelled; reports started once the informers synced."""
        loops = [
            loop for loop in (self.scheduler, self.replicasets, self.deployments, self.node_lifecycle, self.gc,
                              self.jobs, self.cronjobs, self.daemonsets, self.statefulsets,
                              self.endpoints, self.endpointslices, self.disruption)
            if loop is not None
        ]  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(self.informers.run)
            await nursery.start(self.events.run)
            for loop in loops:
                await nursery.start(loop.run)
            await self.informers.wait_synced(*self.informers.all())
            task_status.started()


async def serve_control_plane(
    config: ClusterConfig,
    settings: ControlPlaneSettings | None = None,
    *,
    transport: Requester | None = None,
    clock: Callable[[], float] = trio.current_time,
    wall_clock: Callable[[], float] = time.time,
    task_status: trio.TaskStatus[ControlPlane] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the control plane against the cluster in ``config`` until cancelled.

    ``await nursery.start(serve_control_plane, load_config(sandbox.kubeconfig))``
    returns the running :class:`ControlPlane` once its informers have listed.
    ``transport``: an apiserver connection already open to send every request
    through instead of the client opened here (the caller's to close; tests pass a
    :class:`fleet.kube.MemoryApiserver`).
    """
    async with AsyncExitStack() as stack:
        requester: Requester
        if transport is not None:
            requester = transport
        else:
            reads = await stack.enter_async_context(Client(config))
            writes = await stack.enter_async_context(
                HotTransport(config, HotTransportSettings(connections=WRITE_CONNECTIONS))
            )
            requester = _SplitRequester(reads, writes)
        plane = ControlPlane(requester, settings, clock=clock, wall_clock=wall_clock)
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run)
            task_status.started(plane)
