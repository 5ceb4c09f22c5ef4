"""Endpoints and EndpointSlice controllers against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._endpoints import EndpointsController
from fleet.controlplane._endpointslices import EndpointSliceController
from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, mark_ready, pod

SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
    "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.10.10",
             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
}  # fmt: skip


def web_pod(name: str, ip: str, node: str = "n1") -> dict[str, Any]:
    body = pod(name, labels={"app": "web"}, node_name=node)
    body["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8080, "protocol": "TCP"}
    ]
    body["status"] = {"phase": "Running", "podIP": ip}
    return body


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    for controller in (
        EndpointsController(Rest(api), informers),
        EndpointSliceController(Rest(api), informers),
    ):
        await nursery.start(controller.run)
    await nursery.start(informers.run)
    yield api


def endpoints(api: MemoryApiserver) -> dict[str, Any]:
    return api.get("/api/v1/namespaces/default/endpoints/web") or {}


def slices(api: MemoryApiserver) -> list[dict[str, Any]]:
    return api.items("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices")


async def test_ready_pods_become_addresses_and_slice_endpoints(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    svc = api.create("/api/v1/namespaces/default/services", SERVICE)
    for name, ip in (("a", "10.244.0.5"), ("b", "10.244.0.6")):
        api.create("/api/v1/namespaces/default/pods", web_pod(name, ip))
    api.create("/api/v1/namespaces/default/pods", pod("other", labels={"app": "db"}))
    mark_ready(api, "default", "a")
    await eventually(lambda: endpoints(api).get("subsets"))
    await eventually(lambda: len(endpoints(api)["subsets"][0].get("notReadyAddresses", [])) == 1)
    ep = endpoints(api)
    assert ep["metadata"]["labels"] == {"tier": "front"}
    [subset] = ep["subsets"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    [ready] = subset["addresses"]
    assert ready["ip"] == "10.244.0.5" and ready["nodeName"] == "n1"
    assert ready["targetRef"]["name"] == "a" and ready["targetRef"]["kind"] == "Pod"
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.244.0.6"]

    await eventually(lambda: slices(api) and slices(api)[0].get("endpoints"))
    await eventually(lambda: len(slices(api)[0]["endpoints"]) == 2)
    [es] = slices(api)
    assert es["metadata"]["name"].startswith("web-")
    assert es["metadata"]["labels"] == {
        "tier": "front",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert es["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert es["addressType"] == "IPv4"
    assert es["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    by_ip = {e["addresses"][0]: e for e in es["endpoints"]}
    assert by_ip["10.244.0.5"]["conditions"] == {
        "ready": True,
        "serving": True,
        "terminating": False,
    }
    assert by_ip["10.244.0.6"]["conditions"]["ready"] is False

    # A pod leaving the selection leaves both.
    api.patch("/api/v1/namespaces/default/pods/b", {"metadata": {"labels": {"app": "gone"}}})
    await eventually(lambda: "notReadyAddresses" not in endpoints(api)["subsets"][0])
    await eventually(lambda: len(slices(api)[0]["endpoints"]) == 1)
    # The Service's deletion takes its Endpoints (the slices go by ownerReference, GC's job).
    api.delete("/api/v1/namespaces/default/services/web")
    await eventually(lambda: not endpoints(api))


async def test_pod_status_churn_that_endpoints_do_not_show_wakes_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = EndpointsController(Rest(api), informers)
    await nursery.start(controller.run)
    await nursery.start(informers.run)
    api.create("/api/v1/namespaces/default/services", SERVICE)
    api.create("/api/v1/namespaces/default/pods", web_pod("a", "10.244.0.5"))
    await eventually(lambda: endpoints(api).get("subsets"))
    await trio.sleep(1)
    added = controller.queue.statistics().added
    for restarts in range(10):
        api.patch(
            "/api/v1/namespaces/default/pods/a/status",
            {"status": {"containerStatuses": [{"name": "c", "restartCount": restarts}]}},
        )
        await trio.sleep(1)
    assert controller.queue.statistics().added == added
    mark_ready(api, "default", "a")
    await eventually(lambda: "addresses" in endpoints(api)["subsets"][0])
