"""Metrics: a per-process registry and the /metrics, /healthz, /readyz endpoint, scraped with httpx."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from fleet._metrics import FleetMetrics, serve_metrics
from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
from fleet.api import crd_manifests
from fleet.cli import run_coordinator, run_shard
from fleet.errors import ConfigError
from fleet.kube import Client, load_config
from fleet.sandbox import RunningSandbox
from tests.cli.test_errors import UNREACHABLE


def test_registries_are_isolated() -> None:
    a, b = FleetMetrics(), FleetMetrics()
    a.nodes.set(5)
    assert b"kubemock_fleet_nodes 5.0" in a.scrape()
    assert b"kubemock_fleet_nodes 0.0" in b.scrape()


async def test_endpoint_serves_metrics_health_and_readiness() -> None:
    metrics = FleetMetrics()
    metrics.pods.labels(phase="Running").set(7)
    metrics.observe_request("PATCH", "pods/status", "200", 0.003)
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
            assert (
                'kubemock_fleet_requests_total{code="200",resource="pods/status",verb="PATCH"} 1.0'
                in text
            )
            assert (
                'kubemock_fleet_request_duration_seconds_bucket{le="0.005",'
                'resource="pods/status",verb="PATCH"} 1.0' in text
            )
            assert 'kubemock_fleet_moves_total{reason="failover"} 2.0' in text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            ready = True
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/nope")).status_code == 404
            assert (await client.post("/metrics")).status_code == 405
        nursery.cancel_scope.cancel()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample of ``name`` in a scrape, keyed by its labels."""
    found: dict[frozenset[tuple[str, str]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[frozenset(sample.labels.items())] = sample.value
    return found


def _count(samples: dict[frozenset[tuple[str, str]], float], **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for key, value in samples.items() if wanted <= key)


async def test_shard_and_coordinator_serve_request_metrics(
    nursery: trio.Nursery, sandbox: RunningSandbox
) -> None:
    """The shard and coordinator commands, against the sandbox: /metrics counts their traffic."""
    shard_port, coordinator_port = _free_port(), _free_port()
    settings = FleetSettings(
        kubeconfig=str(sandbox.kubeconfig),
        shard=ShardSettings(metrics_port=shard_port),
        coordinator=CoordinatorSettings(metrics_port=coordinator_port),
    )
    async with Client(load_config(sandbox.kubeconfig)) as client:
        for crd in crd_manifests():
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        await client.create("/api/v1/namespaces", {"metadata": {"name": settings.namespace}})
        nursery.start_soon(run_shard, settings, 0)
        nursery.start_soon(run_coordinator, settings)
        cr = {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": "scraped", "namespace": "default"},
            "spec": {},
        }
        await client.create("/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes", cr)
    async with httpx.AsyncClient() as scraper:
        with trio.fail_after(20):
            while True:  # the coordinator assigns the CR to shard 0, which registers the Node
                try:
                    shard = (await scraper.get(f"http://127.0.0.1:{shard_port}/metrics")).text
                    coordinator = (
                        await scraper.get(f"http://127.0.0.1:{coordinator_port}/metrics")
                    ).text
                except httpx.TransportError:  # not listening yet
                    shard = coordinator = ""
                requests = _samples(shard, "kubemock_fleet_requests_total")
                if _count(requests, verb="POST", resource="nodes", code="201"):
                    break
                await trio.sleep(0.1)
    # The shard: its Lease, the CR watch, the Node it registered, the Node's Lease.
    assert _count(requests, verb="LIST", resource="nodes.mock.zhizuqiu.cn", code="200") >= 1
    assert _count(requests, verb="WATCH", resource="nodes.mock.zhizuqiu.cn", code="200") >= 1
    assert _count(requests, verb="WATCH", resource="pods", code="200") >= 1
    assert _count(requests, resource="leases.coordination.k8s.io") >= 2
    latency = _samples(shard, "kubemock_fleet_request_duration_seconds_count")
    assert _count(latency, verb="POST", resource="nodes") == _count(
        requests, verb="POST", resource="nodes"
    )
    # The coordinator: its election Lease, the CR watch, the shard-label PATCH; the assignment.
    requests = _samples(coordinator, "kubemock_fleet_requests_total")
    assert _count(requests, verb="PATCH", resource="nodes.mock.zhizuqiu.cn", code="200") == 1
    assert _count(requests, verb="WATCH", resource="leases.coordination.k8s.io") >= 1
    assert _count(requests, verb="GET", resource="leases.coordination.k8s.io") >= 1
    moves = _samples(coordinator, "kubemock_fleet_moves_total")
    assert _count(moves, reason="assign") == 1
    assert _samples(coordinator, "kubemock_fleet_assignments") == {frozenset({("shard", "0")}): 1.0}


async def test_endpoint_binds_loopback_by_default() -> None:
    """Unauthenticated endpoints stay on this host unless a flag opens them.

    All of 127.0.0.0/8 is loopback on Linux: a listener on 0.0.0.0 answers 127.0.0.2, one on
    127.0.0.1 does not.
    """
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, FleetMetrics().registry, 0, lambda: True))
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
            try:
                await client.get(f"http://127.0.0.2:{port}/healthz")
            except httpx.ConnectError:
                pass
            else:
                raise AssertionError("/metrics answered on an address other than 127.0.0.1")
        opened = await nursery.start(
            partial(serve_metrics, FleetMetrics().registry, 0, lambda: True, host="0.0.0.0")
        )
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.2:{opened}/healthz")).status_code == 200
        nursery.cancel_scope.cancel()


async def test_port_in_use_is_a_config_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve /metrics on 127.0.0.1:{port}: "):
            await serve_metrics(FleetMetrics().registry, port, lambda: True)


def test_second_coordinator_on_a_host_is_one_line(tmp_path: Path) -> None:
    """A second `run`/`coordinator` on one host: one line naming the port, not a traceback."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(UNREACHABLE)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KUBEMOCK_FLEET_")},
            "KUBEMOCK_FLEET_COORDINATOR__METRICS_PORT": str(port),
        }
        for command in ("coordinator", "run"):
            args = [command, "--kubeconfig", str(kubeconfig)]
            if command == "run":
                args += ["--shards", "0"]
            result = subprocess.run(
                [sys.executable, "-m", "fleet", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 1, result.stderr
            lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
            assert lines == [
                f"kubemock-fleet: error: cannot serve /metrics on 127.0.0.1:{port}: "
                "Address already in use (another fleet on this host? "
                "pick another metricsPort, or 0)"
            ], result.stderr
