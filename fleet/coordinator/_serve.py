"""The coordinator process's composition root: :func:`serve_coordinator`, written once.

The ``coordinator`` command (one replica, as deploy/ runs it), ``run`` (the
coordinator in-process beside its shard children) and ``up`` all call it;
none wires a coordinator itself. Given the settings and the cluster (metrics
and clocks injectable), it opens a client, counts its requests in the
coordinator's metrics and runs :class:`~fleet.coordinator._coordinator.Coordinator`
(leader election included) until cancelled; on the way out the elector
releases its Lease.

Serving ``/metrics`` is the caller's to ask for (``serve_metrics``): a port is
the host's, and ``up`` runs the coordinator beside the sandbox with nothing
to scrape it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from functools import partial

import trio

from fleet._metrics import FleetMetrics
from fleet._metrics import serve_metrics as serve_metrics_endpoint
from fleet._settings import FleetSettings
from fleet.coordinator._coordinator import Coordinator
from fleet.coordinator._leases import WallClock, wall_clock
from fleet.kube import (
    Client,
    ClusterConfig,
    HotTransport,
    HotTransportSettings,
    InstrumentedRequester,
    Requester,
)
from fleet.supervise import process_identity

__all__ = ["serve_coordinator"]


async def serve_coordinator(
    settings: FleetSettings,
    config: ClusterConfig,
    *,
    metrics: FleetMetrics | None = None,
    serve_metrics: bool = False,
    identity: str | None = None,
    transport: Requester | None = None,
    clock: Callable[[], float] = trio.current_time,
    wall: WallClock = wall_clock,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[Coordinator] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one coordinator replica against the cluster in ``config`` until cancelled.

    ``await nursery.start(serve_coordinator, settings, config)`` returns the running
    :class:`Coordinator` (a standby until it wins the election). ``serve_metrics``:
    also serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``coordinator.metricsPort``
    at ``metricsAddress``, started first. ``identity`` (the leader Lease's holder)
    defaults to ``coordinator@<host>/<pid>``. ``transport``: an apiserver connection
    already open to send every request through instead of the client opened here (the
    caller's to close; tests pass a :class:`fleet.kube.MemoryApiserver`).
    """
    metrics = metrics if metrics is not None else FleetMetrics()
    async with AsyncExitStack() as stack:
        requester: Requester
        writes: Requester
        if transport is not None:
            requester = writes = transport
        else:
            requester = await stack.enter_async_context(Client(config))
            writes = await stack.enter_async_context(
                HotTransport(
                    config,
                    HotTransportSettings(connections=settings.coordinator.max_writes_in_flight),
                )
            )
        coordinator = Coordinator(
            InstrumentedRequester(requester, metrics),
            settings,
            identity=identity or process_identity("coordinator"),
            writes=InstrumentedRequester(writes, metrics),
            metrics=metrics,
            clock=clock,
            wall=wall,
            rng=rng,
        )
        async with trio.open_nursery() as nursery:
            if serve_metrics:
                await nursery.start(
                    partial(
                        serve_metrics_endpoint,
                        metrics.registry,
                        settings.coordinator.metrics_port,
                        coordinator.ready,
                        host=settings.metrics_address,
                    )
                )
            await nursery.start(coordinator.run)
            task_status.started(coordinator)
