"""The fleet's Prometheus metrics and the tiny HTTP endpoint that serves them.

Every process (coordinator, each shard) owns one :class:`FleetMetrics`, built
on its *own* ``CollectorRegistry`` rather than prometheus_client's global
default, so two components in one test process never share counters. The
metric names live here, in one place, so dashboards and ``bench`` read one
vocabulary; components record through the attributes and never name a metric
themselves.

:func:`serve_metrics` answers ``GET /metrics`` (Prometheus text format),
``/healthz`` (200 while the process runs its loop) and ``/readyz`` (200 when
``ready()`` says so, else 503) over plain HTTP/1.1 with h11 on trio: no thread,
no extra server dependency. Connections are served one request each, at most
:data:`MAX_CONNECTIONS` at a time (more are closed at once, not queued), each bounded by :data:`REQUEST_TIMEOUT`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import h11
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from fleet.errors import ConfigError

__all__ = ["MAX_CONNECTIONS", "REQUEST_TIMEOUT", "FleetMetrics", "serve_metrics"]

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
"""Scrapers served at once: Prometheus scrapes with one connection, probes add two."""
REQUEST_TIMEOUT = 10.0
"""Seconds a client gets to send its request and read the answer (Prometheus' default scrape timeout)."""
_MAX_REQUEST_BYTES = 16 * 1024
"""A scrape request is a few hundred bytes; anything larger is not one."""

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency buckets: a local apiserver answers in ~1 ms, a loaded one in seconds."""


class FleetMetrics:
    """The fleet's metrics on one per-process registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.nodes = Gauge("kubemock_fleet_nodes", "Fake nodes this process drives.", registry=r)
        self.pods = Gauge(
            "kubemock_fleet_pods", "Pods on this process' nodes, by phase.", ["phase"], registry=r
        )
        self.lease_renewals_late = Counter(
            "kubemock_fleet_lease_renewals_late",
            "Lease renewals sent after their due time (but before the Lease expired).",
            ["lease"],
            registry=r,
        )
        self.lease_renewals_missed = Counter(
            "kubemock_fleet_lease_renewals_missed",
            "Lease renewals not done before the Lease expired.",
            ["lease"],
            registry=r,
        )
        self.lease_lane_repaired = Counter(
            "kubemock_fleet_lease_lane_repaired",
            "Node Leases found held with no renewal armed, queued or out (a bug), armed again.",
            ["check"],
            registry=r,
        )
        self.write_queue_depth = Gauge(
            "kubemock_fleet_write_queue_depth", "Writes waiting in the write queue.", registry=r
        )
        self.requests = Counter(
            "kubemock_fleet_requests",
            "Requests to the apiserver, by verb, resource and HTTP code ('error' when no answer).",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.request_latency = Histogram(
            "kubemock_fleet_request_duration_seconds",
            "Latency of requests to the apiserver (for WATCH: until the headers), by verb and resource.",
            ["verb", "resource"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.watch_restarts = Counter(
            "kubemock_fleet_watch_restarts",
            "Watches started again, by resource and reason (gone, error, timeout).",
            ["resource", "reason"],
            registry=r,
        )
        self.assignments = Gauge(
            "kubemock_fleet_assignments",
            "Node CRs assigned to each shard, as the coordinator sees them.",
            ["shard"],
            registry=r,
        )
        self.moves = Counter(
            "kubemock_fleet_moves",
            "Coordinator moves by reason (assign, failover, rebalance: a handover begun; handover:"
            " the label written once the old shard let go).",
            ["reason"],
            registry=r,
        )
        self.live_shards = Gauge(
            "kubemock_fleet_live_shards", "Shards whose Lease is fresh, as observed.", registry=r
        )
        self.leader = Gauge(
            "kubemock_fleet_leader", "1 while this coordinator holds the leader Lease.", registry=r
        )
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    # -- fleet.kube.RequestRecorder: what an InstrumentedRequester reports ---------------

    def observe_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        """Count one apiserver request and time it (``code`` ``"error"``: no answer)."""
        key = (verb, resource, code)
        children = self._request_children.get(key)
        if children is None:  # labels() takes a lock and validates: do it once per key
            children = (
                self.requests.labels(verb=verb, resource=resource, code=code),
                self.request_latency.labels(verb=verb, resource=resource),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_watch_end(self, resource: str, reason: str) -> None:
        """Count one watch that ended (and is started again) for ``reason``."""
        self.watch_restarts.labels(resource=resource, reason=reason).inc()

    def scrape(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


_ROUTES = ("/metrics", "/healthz", "/readyz")


def _answer(
    target: str, registry: CollectorRegistry, ready: Callable[[], bool]
) -> tuple[int, bytes, bytes]:
    path = target.split("?", 1)[0]
    if path == "/metrics":
        return 200, CONTENT_TYPE_LATEST.encode(), generate_latest(registry)
    if path == "/healthz":
        return 200, b"text/plain", b"ok\n"
    if path == "/readyz":
        return (200, b"text/plain", b"ok\n") if ready() else (503, b"text/plain", b"not ready\n")
    return 404, b"text/plain", b"not found\n"


async def _serve_one(
    stream: trio.abc.Stream, registry: CollectorRegistry, ready: Callable[[], bool]
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST_BYTES)
    with trio.move_on_after(REQUEST_TIMEOUT):
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(4096)
                    conn.receive_data(bytes(data))
                    if not data:
                        return
                    continue
                if isinstance(event, h11.Request):
                    break
                return
            target = event.target.decode("ascii", "replace")
            if event.method not in (b"GET", b"HEAD"):
                status, ctype, body = 405, b"text/plain", b"method not allowed\n"
            else:
                status, ctype, body = _answer(target, registry, ready)
            headers = [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            if event.method != b"HEAD":
                await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("metrics connection dropped: %s", exc)
    await trio.aclose_forcefully(stream)


async def serve_metrics(
    registry: CollectorRegistry,
    port: int,
    ready: Callable[[], bool],
    *,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve /metrics, /healthz and /readyz on ``host:port`` until cancelled.

    ``port=0`` picks a free port; ``task_status.started`` reports the bound port.
    ``host`` defaults to loopback: the endpoints are unauthenticated, so a pod opens
    them with ``metricsAddress: 0.0.0.0`` (deploy/). A port that cannot be bound is a
    :class:`~fleet.errors.ConfigError` naming it, in one line.
    """
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        hint = (
            " (another fleet on this host? pick another metricsPort, or 0)"
            if exc.errno == errno.EADDRINUSE
            else ""
        )
        raise ConfigError(
            f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from exc
    bound = int(listeners[0].socket.getsockname()[1])
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        try:
            limiter.acquire_nowait()
        except trio.WouldBlock:  # over the bound: refuse rather than queue
            await trio.aclose_forcefully(stream)
            return
        try:
            await _serve_one(stream, registry, ready)
        finally:
            limiter.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)
