"""``up --control-plane real`` on envtest's layout: kube-apiserver and etcd, nothing else.

envtest's ``KUBEBUILDER_ASSETS`` has no kube-controller-manager and no kube-scheduler:
``up`` fills in with the project's own control-plane loops (every one of them), and the
shards give podCIDRs themselves since nobody else does. A directory of symlinks to the
session's binaries stands in for the assets: a control plane of its own (the session's
has both components), started and stopped here.
"""

from __future__ import annotations

import gc
import ipaddress
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet._settings import FleetSettings
from fleet.kube import Client, load_config
from fleet.realcp import find_binaries
from fleet.up import LOOPS, RunningUp, Up, UpSettings
from tests._apiserver import real_binaries

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
UP_WITHIN = 120.0
"""Seconds for etcd, kube-apiserver and the fleet to start on a loaded 2-core box (~10 s idle)."""


@pytest.fixture
def envtest_assets(tmp_path: Path) -> Path:
    """A KUBEBUILDER_ASSETS-like directory: symlinks to kube-apiserver and etcd only."""
    found = find_binaries(real_binaries())
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "kube-apiserver").symlink_to(found.apiserver)
    (assets / "etcd").symlink_to(found.etcd)
    return assets


def _running_pods(pods: list[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods
        if p["spec"].get("nodeName") == node and (p.get("status") or {}).get("phase") == "Running"
    ]


@pytest.mark.real
async def test_up_on_envtest_binaries_fills_in_with_its_own_loops(
    envtest_assets: Path, tmp_path: Path
) -> None:
    up = Up(
        UpSettings(
            port=0,
            kubeconfig_out=tmp_path / "kc",
            nodes=1,
            control_plane="real",
            binaries=envtest_assets,
            status_line=False,
            fleet=FleetSettings(),
        )
    )
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25"}]},
            },
        },
    }
    async with trio.open_nursery() as nursery:
        with trio.fail_after(UP_WITHIN):
            running: RunningUp = await nursery.start(up.run)
        assert running.real is not None
        assert running.real.components == ("etcd", "kube-apiserver")
        assert running.real.missing == ("kube-controller-manager", "kube-scheduler")
        assert running.loops == LOOPS  # every loop of ours, the scheduler too
        async with Client(load_config(running.kubeconfig)) as client:
            await client.create(DEPLOYMENTS, deployment)
            # Our deployment and replicaset loops make the pods, our scheduler binds them to
            # the fleet's node, its shard runs them: a whole cluster on a bare apiserver.
            with trio.fail_after(60):
                while True:
                    pods = (await client.list(PODS, label_selector="app=web")).items
                    if len(_running_pods(pods, "fleet-node-0")) == 2:
                        break
                    await trio.sleep(0.2)
            node = await client.get("/api/v1/nodes/fleet-node-0")
            # No kube-controller-manager allocates podCIDRs here: the shard gave one, from
            # its range, and the pods' IPs come from it.
            cidr = ipaddress.ip_network(node["spec"]["podCIDR"])
            default_range = FleetSettings().shard.pod_cidr_range
            assert cidr.subnet_of(default_range)  # type: ignore[arg-type]
            assert all(ipaddress.ip_address(p["status"]["podIP"]) in cidr for p in pods)
        up.stop()
    gc.collect()
