"""Metrics: a per-process registry and the /metrics, /healthz, /readyz endpoint, scraped with httpx."""

from __future__ import annotations

from functools import partial

import httpx
import trio

from fleet._metrics import FleetMetrics, serve_metrics


def test_registries_are_isolated() -> None:
    a, b = FleetMetrics(), FleetMetrics()
    a.nodes.set(5)
    assert b"kubemock_fleet_nodes 5.0" in a.scrape()
    assert b"kubemock_fleet_nodes 0.0" in b.scrape()


async def test_endpoint_serves_metrics_health_and_readiness() -> None:
    metrics = FleetMetrics()
    metrics.pods.labels(phase="Running").set(7)
    metrics.requests.labels(verb="PATCH", code="200").inc()
    metrics.request_latency.labels(verb="PATCH").observe(0.003)
    metrics.moves.labels(reason="failover").inc(2)
    ready = False
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_metrics, metrics.registry, 0, lambda: ready, host="127.0.0.1")
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            scrape = await client.get("/metrics")
            assert scrape.status_code == 200
            assert scrape.headers["content-type"].startswith("text/plain")
            text = scrape.text
            assert 'kubemock_fleet_pods{phase="Running"} 7.0' in text
            assert 'kubemock_fleet_requests_total{code="200",verb="PATCH"} 1.0' in text
            assert (
                'kubemock_fleet_request_duration_seconds_bucket{le="0.005",verb="PATCH"} 1.0'
                in text
            )
            assert 'kubemock_fleet_moves_total{reason="failover"} 2.0' in text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            ready = True
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/nope")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
        nursery.cancel_scope.cancel()
