"""The shard process's composition root: :func:`serve_shard`, written once.

The ``shard`` command (``fleet/cli/_shard.py``, what ``run`` and deploy/ start)
and ``up``'s in-process shard (``fleet/up/_up.py``) both call it; neither wires
a shard itself. Given the settings and the cluster (everything else has a
default the caller may inject: metrics, clocks), it opens the general client
(control traffic) and the hot-path transport (Lease renewals, status PATCHes,
pod watches), wraps both to count every request in the shard's metrics, and
runs :class:`~shards._engine.ShardEngine` until cancelled.

Two things belong to the process, not to the shard, and so are the caller's
to ask for: ``serve_metrics`` (a port is the host's, and ``up`` runs shards
beside the sandbox with nothing to scrape them) and ``freeze_gc`` (``gc.freeze``
moves *every* object of the process out of the cyclic GC, right only when the
process is the shard's alone, as under the ``shard`` command).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime

import trio

from fleet._metrics import FleetMetrics
from fleet._settings import FleetSettings
from fleet.kube import (
    Client,
    ClusterConfig,
    HotTransport,
    HotTransportSettings,
    Http2Connection,
    InstrumentedRequester,
    Requester,
)
from fleet.machinery import utc_now
from fleet.supervise import process_identity
from fleet.wire import shard_host
from shards._engine import ShardEngine
from shards._kubeletapi import kubelet_api_settings
from shards._leaselane import LANE_WRITERS

__all__ = ["serve_shard", "shard_metrics_port"]


def shard_metrics_port(base: int, shard_id: int, environ: Mapping[str, str] | None = None) -> int:
    """The port shard K serves ``/metrics`` and its probes on: ``base + K`` where shards share
    a host (``run``), ``base`` itself in a pod of its own (``$POD_IP`` set, as ``deploy/``
    sets it: the manifest's probes and Service name that one port), any free one for 0."""
    if not base:
        return 0
    env = os.environ if environ is None else environ
    return base if env.get("POD_IP") else base + shard_id


async def serve_shard(
    settings: FleetSettings,
    shard_id: int,
    config: ClusterConfig,
    *,
    metrics: FleetMetrics | None = None,
    serve_metrics: bool = False,
    freeze_gc: bool = False,
    identity: str | None = None,
    transport: Requester | None = None,
    clock: Callable[[], float] = trio.current_time,
    wall: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
    task_status: trio.TaskStatus[ShardEngine] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run shard ``shard_id`` against the cluster in ``config`` until cancelled.

    ``await nursery.start(serve_shard, settings, k, config)`` returns the running
    :class:`ShardEngine` once it is started (its shard Lease taken, its reflectors
    listed). ``serve_metrics``: also serve ``/metrics``, ``/healthz`` and ``/readyz``
    on ``shard.metricsPort + K`` (any free port when it is 0) at ``metricsAddress``.
    ``freeze_gc``: freeze start-up's objects out of the cyclic GC once start-up is
    over (only for a process that is the shard's alone). The kubelet API, when the
    settings ask for it, listens on ``shard.kubeletPort + K`` (shards may share a
    host). ``identity`` (the shard Lease's holder) defaults to
    ``shard-K@<host>/<pid>``. ``transport``: an apiserver connection already open
    to send every request through (control and hot path) instead of the two opened
    here (the caller's to close; tests pass a :class:`fleet.kube.MemoryApiserver`).
    """
    metrics_port = (
        shard_metrics_port(settings.shard.metrics_port, shard_id) if serve_metrics else None
    )
    metrics = metrics if metrics is not None else FleetMetrics()
    # The Lease lane's writers each hold a pool connection while out: they come on top.
    hot_settings = HotTransportSettings(connections=settings.shard.writers + LANE_WRITERS)
    async with AsyncExitStack() as stack:
        client: Requester
        hot: Requester
        node_connection: Callable[[trio.CapacityLimiter], Http2Connection] | None = None
        if transport is not None:
            client = hot = transport
        else:
            client = await stack.enter_async_context(Client(config))
            hot = await stack.enter_async_context(HotTransport(config, hot_settings))
            if settings.shard.traffic_profile == "kubelet":
                # A kubelet's watches share one HTTP/2 connection: so do each node's here.
                def node_connection(connecting: trio.CapacityLimiter) -> Http2Connection:
                    return Http2Connection(config, connecting=connecting)

        engine = ShardEngine(
            settings,
            str(shard_id),
            control=InstrumentedRequester(client, metrics),
            hot=InstrumentedRequester(hot, metrics),
            identity=identity or process_identity(shard_host(shard_id)),
            metrics=metrics,
            clock=clock,
            wall=wall,
            rng=rng,
            freeze_gc=freeze_gc,
            kubelet_api=kubelet_api_settings(settings.shard, offset=shard_id),
            node_connection=node_connection,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: engine.run(metrics_port=metrics_port, task_status=task_status)
            )
            task_status.started(engine)
