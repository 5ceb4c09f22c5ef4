"""What a fake kubelet reports is shaped by the version it reports: the apiserver's by default.

A cluster's kubelets run its own release (or an older one): a node that says
v1.30.0 on a v1.24 apiserver, and pods carrying conditions a 1.24 kubelet never
writes (``PodReadyToStartContainers``, 1.29), are what a real cluster never shows.
The shard reads ``/version`` once and reports it; a CR's ``kubeletVersion`` wins.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fleet.kube import MemoryApiserver
from shards._nodeobj import DEFAULT_KUBELET_VERSION
from tests.shards.test_engine import CRS, NODES, PODS, node_cr, pod, start


async def run_one_pod(
    api: MemoryApiserver, nursery: trio.Nursery, **spec: Any
) -> tuple[str, dict[str, Any]]:
    api.create(CRS, node_cr("n1", **spec))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(2)
    node = api.get(f"{NODES}/n1")
    obj = api.get(f"{PODS}/p")
    assert node is not None and obj is not None
    return node["status"]["nodeInfo"]["kubeletVersion"], obj["status"]


@pytest.mark.parametrize(
    ("server", "modern"), [("v1.24.0-alpha.1", False), ("v1.29.2", True), ("v1.33.0", True)]
)
async def test_nodes_report_the_apiservers_version_and_pods_are_shaped_by_it(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery, server: str, modern: bool
) -> None:
    api = MemoryApiserver()
    api.version = {"major": "1", "gitVersion": server}
    version, status = await run_one_pod(api, nursery)
    assert version == server
    types = {c["type"] for c in status["conditions"]}
    assert ("PodReadyToStartContainers" in types) is modern
    assert ("hostIPs" in status) is modern
    assert status["phase"] == "Running"


async def test_a_crs_kubelet_version_wins(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.version = {"gitVersion": "v1.24.0"}
    version, status = await run_one_pod(api, nursery, nodeConfig={"kubeletVersion": "v1.30.1"})
    assert version == "v1.30.1"
    assert "PodReadyToStartContainers" in {c["type"] for c in status["conditions"]}


async def test_an_apiserver_that_does_not_say_leaves_the_default(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()  # /version: 404
    version, _ = await run_one_pod(api, nursery)
    assert version == DEFAULT_KUBELET_VERSION
    assert len(api.log("GET", "/version")) == 1  # read once per shard
