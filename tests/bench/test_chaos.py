"""The chaos scenarios at small size: the real shard, coordinator and control plane on the sandbox,
and a restart storm on the session's real control plane.

On the sandbox everything runs in this process, with the node Lease and the
node-lifecycle controller's grace period shortened (0.5 s renewals, 3 s grace, instead
of 10 s and 40 s) so that a node goes NotReady, is tainted and has its pods evicted
within seconds: the scenarios' timings are the real ones scaled. On the real control
plane kube-controller-manager keeps its 40 s grace, so the suite runs the one scenario
that does not wait for it there (the others: docs/performance.md, "Chaos scenarios").
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

import pytest
import trio

from bench import RunOptions, TargetInfo, load_scenario, run_scenario
from bench._report import ComponentMemory
from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
from fleet.api import crd_manifests
from fleet.controlplane import ControlPlane, ControlPlaneSettings, NodeLifecycleSettings
from fleet.coordinator import serve_coordinator
from fleet.errors import AlreadyExists
from fleet.kube import Client, HotTransport, load_config
from fleet.realcp import RunningControlPlane
from fleet.sandbox import RunningSandbox
from fleet.wire import FLEET_NAMESPACE
from shards import ShardEngine
from tests._apiserver import unique
from tests.bench.test_runner_real import _label_crs as label_crs

SMALL: dict[str, Any] = {
    "nodes": 4,
    "pods": 8,
    "placement": "direct",
    "scrapeInterval": 0.2,
    "timeout": 30,
    "rate": 200,
}
"""Small and quick: every scenario's timings scaled to the shortened grace period."""
GRACE = 3.0
"""The node-lifecycle controller's grace period here (kube-controller-manager: 40 s)."""
CRASH_RUN_FOR = 2.0
"""Seconds each run of a crash-looping container lasts here (the scenario's default: 10 s)."""


@pytest.fixture(autouse=True)
def _no_socket_left_to_the_collector() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
async def fleet(sandbox: RunningSandbox) -> AsyncIterator[tuple[Client, ShardEngine]]:
    config = load_config(sandbox.kubeconfig)
    settings = FleetSettings(
        shard=ShardSettings(
            node_lease_duration=2.0,
            node_lease_renew_interval=0.5,
            pod_cidr_allocation="shard",
            status_report_interval=60.0,
        ),
        coordinator=CoordinatorSettings(),
    )
    # Its tainting rate scaled up with the rest (0.1 node/s: the second of two partitioned
    # nodes would be tainted after the partition; the limit itself: test_nodelifecycle.py).
    lifecycle = NodeLifecycleSettings(grace_period=GRACE, monitor_period=0.25, eviction_rate=10)
    async with (
        Client(config) as client,
        Client(config) as plane_client,
        Client(config) as shard_client,
        HotTransport(config) as hot,
    ):
        for crd in crd_manifests():
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        await client.create("/api/v1/namespaces", {"metadata": {"name": "kube-mock-system"}})
        async with trio.open_nursery() as nursery:
            plane = ControlPlane(
                plane_client, ControlPlaneSettings(node_lifecycle_settings=lifecycle)
            )
            await nursery.start(plane.run)
            await nursery.start(partial(serve_coordinator, settings, config))
            engine = ShardEngine(settings, "0", control=shard_client, hot=hot)
            await nursery.start(engine.run)
            yield client, engine
            nursery.cancel_scope.cancel()


def _options(sandbox: RunningSandbox) -> RunOptions:
    return RunOptions(
        target=TargetInfo(server=sandbox.url, mode="sandbox", fleet="started"),
        ensure_crds=True,
    )


async def test_restart_storm_restarts_every_kubelet_and_settles(
    sandbox: RunningSandbox, fleet: tuple[Client, ShardEngine]
) -> None:
    client, engine = fleet
    report = await run_scenario(client, load_scenario("restart-storm", SMALL), _options(sandbox))
    assert report.completed, report.notes
    chaos = report.chaos
    assert chaos is not None and chaos.kind == "restart-storm"
    assert engine.restarts.restarts == chaos.nodes_disturbed == 4
    assert chaos.settle_seconds is not None
    # A restart is quick: no node went NotReady, none was tainted, no pod was evicted.
    assert chaos.nodes_tainted == 0 and chaos.pods_evicted == 0
    assert chaos.apiserver is not None
    gets = {
        (r.verb, r.resource, r.subresource): r.count
        for r in chaos.apiserver.requests
        if r.code.startswith("2")
    }
    # Each kubelet read its Node and Lease back and reported its status anew.
    assert gets[("GET", "nodes", "")] >= 4 and gets[("PATCH", "nodes", "status")] >= 4
    assert [s.name for s in report.steps][-2:] == ["restart-storm", "settle"]
    # The sandbox is in this process and has no etcd: the section says so.
    assert chaos.memory == (ComponentMemory(name="kube-apiserver"), ComponentMemory(name="etcd"))


@pytest.mark.real
async def test_restart_storm_on_the_real_control_plane_restarts_watches_and_reads_memory(
    real_control_plane: RunningControlPlane,
) -> None:
    """The same storm on kube-apiserver and etcd, with the kubelet traffic profile (each
    kubelet holds its watches): every kubelet restarted and settled, its watches started
    again (kube-apiserver counts a watch when it ends: the figure is ended + the change in
    open ones), and kube-apiserver's and etcd's memory read from /proc and their /metrics.
    The shard's CRs get its label from a task of the test, as the coordinator would (the
    session's control plane is shared: no coordinator of ours on it)."""
    config = load_config(real_control_plane.kubeconfig)
    shard, node_namespace = unique("chaos"), unique("chaos-nodes")
    settings = FleetSettings(
        shard=ShardSettings(pod_cidr_allocation="cluster", traffic_profile="kubelet")
    )
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        try:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        except AlreadyExists:
            pass
        engine = ShardEngine(settings, shard, control=client, hot=hot)
        await nursery.start(engine.run)
        nursery.start_soon(label_crs, client, node_namespace, shard)
        spec = load_scenario(
            "restart-storm",
            {**SMALL, "nodeNamespace": node_namespace, "namespace": unique("chaos")},
        )
        options = RunOptions(
            target=TargetInfo(server=real_control_plane.url, mode="cluster", fleet="external"),
            # The control plane's processes are this session's children.
            fleet_children=True,
            etcd_metrics_url=f"{real_control_plane.etcd_url}/metrics",
        )
        report = await run_scenario(client, spec, options)
        nursery.cancel_scope.cancel()
    assert report.completed, report.notes
    chaos = report.chaos
    assert chaos is not None and chaos.settle_seconds is not None
    assert engine.restarts.restarts == chaos.nodes_disturbed == 4
    assert chaos.nodes_tainted == 0 and chaos.pods_evicted == 0
    # Each restarted kubelet opened its watches again (Services, its Node, its pods...).
    assert chaos.watches_started is not None and chaos.watches_started >= 4 * 3
    memory = {row.name: row for row in chaos.memory}
    for name in ("kube-apiserver", "etcd"):
        row = memory[name]
        assert row.peak_rss_bytes is not None and row.peak_rss_bytes > 20 * 2**20, row
        assert row.metrics_peak_bytes is not None and row.metrics_peak_bytes > 20 * 2**20, row


async def test_partition_taints_evicts_and_settles(
    sandbox: RunningSandbox, fleet: tuple[Client, ShardEngine]
) -> None:
    client, _ = fleet
    spec = load_scenario(
        "partition", {**SMALL, "fraction": 0.5, "down": GRACE + 3, "tolerationSeconds": 1}
    )
    report = await run_scenario(client, spec, _options(sandbox))
    assert report.completed, report.notes
    chaos = report.chaos
    assert chaos is not None and chaos.nodes_disturbed == 2
    assert chaos.not_ready_peak == 2 and chaos.nodes_tainted == 2
    # The partitioned nodes' pods (direct placement: 2 of every 4) were evicted after 1 s.
    assert chaos.pods_evicted == 4
    assert chaos.settle_seconds is not None
    assert chaos.watch_requests is not None
    assert report.nodes_ready == 4


async def test_node_flap_flaps_the_share_asked_for(
    sandbox: RunningSandbox, fleet: tuple[Client, ShardEngine]
) -> None:
    client, _ = fleet
    spec = load_scenario(
        "node-flap",
        {**SMALL, "fraction": 0.25, "down": GRACE + 1.5, "period": GRACE + 3, "duration": 10},
    )
    report = await run_scenario(client, spec, _options(sandbox))
    assert report.completed, report.notes
    chaos = report.chaos
    assert chaos is not None and chaos.nodes_disturbed == 1
    assert chaos.not_ready_peak == 1 and chaos.nodes_tainted == 1
    assert chaos.pods_evicted == 0  # tolerated for 300 s: a flap evicts nothing
    assert chaos.disturb_seconds >= (GRACE + 3) + (GRACE + 1.5)  # two flaps in 10 s


async def test_pod_churn_under_crash_loops_counts_restarts(
    sandbox: RunningSandbox, fleet: tuple[Client, ShardEngine]
) -> None:
    client, _ = fleet
    spec = load_scenario(
        "pod-churn",
        {
            **SMALL,
            "pods": 10,
            "fraction": 1.0,
            "rate": 20,
            "crashRunFor": CRASH_RUN_FOR,
            "duration": CRASH_RUN_FOR + 2,
        },
    )
    report = await run_scenario(client, spec, _options(sandbox))
    assert report.completed, report.notes
    chaos = report.chaos
    assert chaos is not None and chaos.kind == "pod-churn"
    # Every standing pod crashes after CRASH_RUN_FOR of each run; the first restart comes at once.
    assert chaos.container_restarts >= 10
    assert chaos.pods_evicted == 0 and chaos.nodes_tainted == 0
    assert [s.name for s in report.steps] == ["nodes-ready", "pods-running", "churn", "settle"]
    churn = report.steps[2]
    assert churn.ok and churn.target > 0
    assert report.cleanup.leftover == 0
