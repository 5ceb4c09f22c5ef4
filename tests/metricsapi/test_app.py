"""``fleet.metricsapi``'s answers, in process: the ASGI app over a memory apiserver and
scripted kubelets (``httpx.MockTransport``), on the autojump clock.

What is asserted is what metrics-server serves (``pkg/api/node.go``, ``pod.go``,
``filter.go``; the generic apiserver's Status objects and field selector conversion).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import trio

from fleet.errors import ConnectError
from fleet.kube import MemoryApiserver, Rest, status_response
from fleet.metricsapi._app import MetricsApp, kubelet_endpoint
from fleet.metricsapi._serve import register

GROUP_VERSION = "metrics.k8s.io/v1beta1"
BASE = "/apis/metrics.k8s.io/v1beta1"
AGGREGATOR = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
SAMPLED = "2024-01-01T00:00:00Z"
"""The kubelets' sample time (the Summary's ``cpu.time``), before the clock starts."""
ADDRESS = {
    "node-a": "127.1.0.1",
    "node-b": "127.1.0.2",
    "node-down": "127.1.0.3",
    "node-500": "127.1.0.4",
    "node-slow": "127.1.0.5",
}
NODE_LABELS = {
    "node-a": {"zone": "a", "type": "kubemock"},
    "node-b": {"zone": "b", "type": "kubemock"},
    "node-down": {"zone": "a", "type": "kubemock"},
    "node-500": {"zone": "b", "type": "kubemock"},
    "node-slow": {"zone": "c", "type": "kubemock"},
}
PODS = {  # (namespace, name): (node, labels, {container: (nanocores, bytes)})
    ("default", "web-1"): ("node-a", {"app": "web"}, {"app": (250_000_000, 64 << 20)}),
    ("default", "db-1"): ("node-b", {"app": "db"}, {"db": (500_000_000, 1 << 30)}),
    ("other", "web-2"): (
        "node-a",
        {"app": "web"},
        {"app": (100_000_000, 32 << 20), "sidecar": (5_000_000, 8 << 20)},
    ),
    ("default", "stuck"): ("node-down", {"app": "web"}, {"app": (1, 1024)}),
    ("default", "broken"): ("node-500", {"app": "db"}, {"app": (1, 1024)}),
}
NODE_USAGE = {
    "node-a": (450_000_000, 2 << 30),
    "node-b": (600_000_000, 3 << 30),
    "node-500": (1, 1024),
}


def _usage(nanocores: int, memory: int) -> dict[str, Any]:
    return {
        "cpu": {"time": SAMPLED, "usageNanoCores": nanocores, "usageCoreNanoSeconds": 10**12},
        "memory": {"time": SAMPLED, "workingSetBytes": memory, "usageBytes": memory},
    }


def summary(node: str) -> dict[str, Any]:
    """The node's ``/stats/summary`` as a shard writes it (the fields read here)."""
    pods = []
    for (namespace, name), (on, _, containers) in PODS.items():
        if on != node:
            continue
        pods.append(
            {
                "podRef": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
                "startTime": SAMPLED,
                "containers": [
                    {"name": c, "startTime": SAMPLED, **_usage(*u)} for c, u in containers.items()
                ],
                **_usage(sum(u[0] for u in containers.values()), 0),
            }
        )
    return {
        "node": {"nodeName": node, "startTime": SAMPLED, **_usage(*NODE_USAGE[node])},
        "pods": pods,
    }


class Kubelets:
    """The nodes' kubelets behind ``httpx.MockTransport``: node-a and node-b answer, node-down
    refuses connections, node-500 answers 500, node-slow never answers. ``asked`` logs the
    nodes asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.by_host = {address: node for node, address in ADDRESS.items()}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        node = self.by_host[request.url.host]
        self.asked.append(node)
        assert request.url.path == f"/nodes/{node}/stats/summary"
        assert request.url.port == 10250 + int(ADDRESS[node].rsplit(".", 1)[1])
        if node == "node-down":
            raise httpx.ConnectError("connection refused", request=request)
        if node == "node-slow":  # accepts, never answers
            await trio.sleep_forever()
        if node == "node-500":
            # figures in the body, but an error status: not to be trusted
            return httpx.Response(500, json=summary(node))
        return httpx.Response(200, json=summary(node))


def populate(api: MemoryApiserver) -> None:
    for node, address in ADDRESS.items():
        port = 10250 + int(address.rsplit(".", 1)[1])
        api.create(
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": NODE_LABELS[node]},
                "status": {
                    "addresses": [
                        {"type": "Hostname", "address": node},
                        {"type": "InternalIP", "address": address},
                    ],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                },
            },
        )
    api.create(
        "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "no-address"}}
    )
    for (namespace, name), (node, labels, containers) in PODS.items():
        api.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": c} for c in containers]},
            },
        )
    api.create(  # not scheduled: no kubelet has its figures
        "/api/v1/namespaces/default/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "pending", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app"}]},
        },
    )


class Setup:
    def __init__(self, api: MemoryApiserver, kubelets: Kubelets, client: httpx.AsyncClient):
        self.api = api
        self.kubelets = kubelets
        self.client = client

    async def get(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        answer = await self.client.get(path, params=params, headers=AGGREGATOR)
        assert answer.headers["content-type"] == "application/json"
        return answer.status_code, answer.json()


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    """Needs the test to take ``autojump_clock`` too (pytest-trio picks a clock from the
    test's own arguments)."""
    api = MemoryApiserver()
    populate(api)
    kubelets = Kubelets()
    async with httpx.AsyncClient(transport=httpx.MockTransport(kubelets)) as to_kubelets:
        app = MetricsApp(Rest(api), to_kubelets, wall=api.now)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://metrics") as client:
            await trio.sleep(42)  # the answer's time differs from the kubelets' sample time
            yield Setup(api, kubelets, client)


def _now() -> str:
    return MemoryApiserver.stamp(MemoryApiserver.wall())


def _names(listed: dict[str, Any]) -> list[str]:
    return [
        "/".join(filter(None, (i["metadata"].get("namespace"), i["metadata"]["name"])))
        for i in listed["items"]
    ]


def _not_found(message: str, details: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NotFound",
        "details": details,
        "code": 404,
    }


async def test_node_metrics_list_skips_nodes_whose_kubelet_fails(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    asked = trio.current_time()
    code, listed = await setup.get(f"{BASE}/nodes")
    assert trio.current_time() - asked == 10  # node-slow's 10 s (metrics-server's timeout)
    assert code == 200
    # node-down (connection refused), node-500, node-slow (no answer in 10 s) and no-address
    # (nothing to dial) are left out,
    # as metrics-server leaves out nodes it could not scrape; the list is not an error
    assert listed == {
        "kind": "NodeMetricsList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [
            {
                "metadata": {
                    "name": "node-a",
                    "creationTimestamp": _now(),
                    "labels": {"zone": "a", "type": "kubemock"},
                },
                "timestamp": SAMPLED,
                "window": "10s",
                "usage": {"cpu": "450000000n", "memory": "2097152Ki"},
            },
            {
                "metadata": {
                    "name": "node-b",
                    "creationTimestamp": _now(),
                    "labels": {"zone": "b", "type": "kubemock"},
                },
                "timestamp": SAMPLED,
                "window": "10s",
                "usage": {"cpu": "600000000n", "memory": "3145728Ki"},
            },
        ],
    }
    assert _now() == MemoryApiserver.stamp(MemoryApiserver.BASE + timedelta(seconds=42 + 10))
    assert sorted(setup.kubelets.asked) == [
        "node-500",
        "node-a",
        "node-b",
        "node-down",
        "node-slow",
    ]


async def test_node_metrics_get(setup: Setup, autojump_clock: trio.abc.Clock) -> None:
    code, node = await setup.get(f"{BASE}/nodes/node-b")
    assert code == 200
    assert node["kind"] == "NodeMetrics" and node["apiVersion"] == GROUP_VERSION
    assert node["metadata"] == {
        "name": "node-b",
        "creationTimestamp": _now(),
        "labels": {"zone": "b", "type": "kubemock"},
    }
    assert (node["timestamp"], node["window"]) == (SAMPLED, "10s")
    assert node["usage"] == {"cpu": "600000000n", "memory": "3145728Ki"}
    assert setup.kubelets.asked == ["node-b"]  # only the node asked for is scraped


async def test_node_metrics_get_of_unknown_node_and_silent_kubelets_is_404(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    # no such Node: the node lister's error, passed on by metrics-server
    assert await setup.get(f"{BASE}/nodes/nope") == (
        404,
        _not_found('node "nope" not found', {"name": "nope", "kind": "node"}),
    )
    # a Node whose kubelet is down or answers 500: no metrics, metrics-server's own NotFound
    for node in ("node-down", "node-500", "node-slow", "no-address"):
        assert await setup.get(f"{BASE}/nodes/{node}") == (
            404,
            _not_found(
                f'nodemetrics.metrics.k8s.io "{node}" not found',
                {"name": node, "group": "metrics.k8s.io", "kind": "nodemetrics"},
            ),
        )


async def test_node_metrics_label_and_field_selectors(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    _, zone_b = await setup.get(f"{BASE}/nodes", labelSelector="zone=b")
    assert _names(zone_b) == ["node-b"]  # node-500 is in zone b too, but not scraped
    assert sorted(setup.kubelets.asked) == ["node-500", "node-b"]  # the selected nodes only
    _, not_a = await setup.get(f"{BASE}/nodes", labelSelector="zone!=a,type in (kubemock)")
    assert _names(not_a) == ["node-b"]
    _, none = await setup.get(f"{BASE}/nodes", labelSelector="type=other")
    assert none["items"] == []
    _, named = await setup.get(f"{BASE}/nodes", fieldSelector="metadata.name=node-a")
    assert _names(named) == ["node-a"]
    _, others = await setup.get(f"{BASE}/nodes", fieldSelector="metadata.name!=node-a")
    assert _names(others) == ["node-b"]
    # a Node has no metadata.namespace field: "" matches, anything else does not
    _, empty = await setup.get(f"{BASE}/nodes", fieldSelector="metadata.namespace=")
    assert _names(empty) == ["node-a", "node-b"]
    _, namespaced = await setup.get(f"{BASE}/nodes", fieldSelector="metadata.namespace=default")
    assert namespaced["items"] == []


async def test_pod_metrics_lists_by_namespace_with_containers(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    code, everywhere = await setup.get(f"{BASE}/pods")
    assert code == 200
    assert everywhere["kind"] == "PodMetricsList" and everywhere["apiVersion"] == GROUP_VERSION
    # sorted by namespace and name; stuck (node down), broken (kubelet 500) and pending
    # (no node) have no figures and are left out
    assert _names(everywhere) == ["default/db-1", "default/web-1", "other/web-2"]
    web2 = everywhere["items"][2]
    assert web2 == {
        "metadata": {
            "name": "web-2",
            "namespace": "other",
            "creationTimestamp": _now(),
            "labels": {"app": "web"},
        },
        "timestamp": SAMPLED,
        "window": "10s",
        "containers": [
            {"name": "app", "usage": {"cpu": "100000000n", "memory": "32768Ki"}},
            {"name": "sidecar", "usage": {"cpu": "5000000n", "memory": "8192Ki"}},
        ],
    }
    _, default = await setup.get(f"{BASE}/namespaces/default/pods")
    assert _names(default) == ["default/db-1", "default/web-1"]
    _, empty = await setup.get(f"{BASE}/namespaces/nowhere/pods")
    assert empty == {
        "kind": "PodMetricsList",
        "apiVersion": GROUP_VERSION,
        "metadata": {},
        "items": [],
    }


async def test_pod_metrics_label_and_field_selectors(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    _, web = await setup.get(f"{BASE}/pods", labelSelector="app=web")
    assert _names(web) == ["default/web-1", "other/web-2"]
    assert "node-b" not in setup.kubelets.asked  # no selected pod there: not scraped
    _, web_default = await setup.get(f"{BASE}/namespaces/default/pods", labelSelector="app=web")
    assert _names(web_default) == ["default/web-1"]
    _, named = await setup.get(f"{BASE}/pods", fieldSelector="metadata.name=web-2")
    assert _names(named) == ["other/web-2"]
    _, in_other = await setup.get(f"{BASE}/pods", fieldSelector="metadata.namespace=other")
    assert _names(in_other) == ["other/web-2"]
    _, both = await setup.get(
        f"{BASE}/pods", labelSelector="app", fieldSelector="metadata.namespace!=other"
    )
    assert _names(both) == ["default/db-1", "default/web-1"]


async def test_pod_metrics_get_and_its_404s(setup: Setup, autojump_clock: trio.abc.Clock) -> None:
    code, pod = await setup.get(f"{BASE}/namespaces/default/pods/web-1")
    assert code == 200
    assert (pod["kind"], pod["apiVersion"]) == ("PodMetrics", GROUP_VERSION)
    assert pod["metadata"]["creationTimestamp"] == _now()
    assert pod["containers"] == [
        {"name": "app", "usage": {"cpu": "250000000n", "memory": "65536Ki"}}
    ]
    assert setup.kubelets.asked == ["node-a"]
    # no such Pod (also: in another namespace): the pod lister's error
    for namespace, name in (("default", "nope"), ("other", "web-1")):
        assert await setup.get(f"{BASE}/namespaces/{namespace}/pods/{name}") == (
            404,
            _not_found(f'pods "{name}" not found', {"name": name, "kind": "pods"}),
        )
    # a Pod without figures (its kubelet down, answering 500, or no node yet)
    for name in ("stuck", "broken", "pending"):
        assert await setup.get(f"{BASE}/namespaces/default/pods/{name}") == (
            404,
            _not_found(
                f'podmetrics.metrics.k8s.io "default/{name}" not found',
                {"name": f"default/{name}", "group": "metrics.k8s.io", "kind": "podmetrics"},
            ),
        )


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (
            "nodes",
            {"fieldSelector": "spec.unschedulable=false"},
            '"spec.unschedulable" is not a known field selector: only "metadata.name",'
            ' "metadata.namespace"',
        ),
        (
            "pods",
            {"fieldSelector": "spec.nodeName=node-a"},
            '"spec.nodeName" is not a known field selector: only "metadata.name",'
            ' "metadata.namespace"',
        ),
        ("pods", {"fieldSelector": "metadata.name"}, "invalid selector: 'metadata.name'"),
        ("nodes", {"labelSelector": "a==="}, "unable to parse requirement"),
        ("namespaces/default/pods", {"labelSelector": "x in (a"}, "unable to parse requirement"),
    ],
)
async def test_bad_selectors_are_400(
    setup: Setup, autojump_clock: trio.abc.Clock, path: str, params: dict[str, str], message: str
) -> None:
    code, body = await setup.get(f"{BASE}/{path}", **params)
    assert code == 400
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "BadRequest", 400)
    assert body["message"].startswith(message) or message in body["message"], body
    assert not setup.kubelets.asked
    assert not [c for c in setup.api.calls if c.method == "GET"]  # refused before any LIST


async def test_discovery_documents(setup: Setup, autojump_clock: trio.abc.Clock) -> None:
    version = {"groupVersion": GROUP_VERSION, "version": "v1beta1"}
    group = {"name": "metrics.k8s.io", "versions": [version], "preferredVersion": version}
    assert await setup.get("/apis") == (
        200,
        {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]},
    )
    assert await setup.get("/apis/metrics.k8s.io") == (
        200,
        {"kind": "APIGroup", "apiVersion": "v1", **group},
    )
    code, resources = await setup.get(BASE)
    assert code == 200
    assert (resources["kind"], resources["groupVersion"]) == ("APIResourceList", GROUP_VERSION)
    assert {
        r["name"]: (r["kind"], r["namespaced"], sorted(r["verbs"])) for r in resources["resources"]
    } == {
        "nodes": ("NodeMetrics", False, ["get", "list"]),
        "pods": ("PodMetrics", True, ["get", "list"]),
    }


async def test_requests_without_the_aggregators_user_are_401(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    for path in (f"{BASE}/nodes", f"{BASE}/namespaces/default/pods/web-1", "/apis"):
        answer = await setup.client.get(path)  # no X-Remote-User
        assert answer.status_code == 401
        assert answer.json()["reason"] == "Unauthorized"
    assert not setup.kubelets.asked and not setup.api.calls
    health = await setup.client.get("/healthz")  # always allowed, as metrics-server's
    assert health.status_code == 200


async def test_unknown_paths_and_methods(setup: Setup, autojump_clock: trio.abc.Clock) -> None:
    for path in (
        "/api/v1/nodes",
        f"{BASE}/namespaces/default/nodes",
        f"{BASE}/pods/web-1",  # a namespaced resource by name needs its namespace
        f"{BASE}/nodes/node-a/extra",
        f"{BASE}/services",
    ):
        code, body = await setup.get(path)
        assert (code, body["reason"]) == (404, "NotFound"), path
    answer = await setup.client.delete(f"{BASE}/nodes/node-a", headers=AGGREGATOR)
    assert answer.status_code == 405 and answer.json()["reason"] == "MethodNotAllowed"


async def test_apiserver_failing_is_503_naming_it(
    setup: Setup, autojump_clock: trio.abc.Clock
) -> None:
    setup.api.fail = lambda method, path: (
        status_response(500, "InternalError", "etcd is down") if path == "/api/v1/nodes" else None
    )
    code, body = await setup.get(f"{BASE}/nodes")
    assert code == 503 and body["reason"] == "ServiceUnavailable"
    assert "etcd is down" in body["message"]
    setup.api.fail = lambda method, path: ConnectError("refused")  # no answer at all
    code, body = await setup.get(f"{BASE}/namespaces/default/pods")
    assert code == 503 and body["reason"] == "ServiceUnavailable"


def test_kubelet_endpoint_as_the_apiserver_picks_it() -> None:
    def node(addresses: list[tuple[str, str]], port: int | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {"addresses": [{"type": t, "address": a} for t, a in addresses]}
        if port is not None:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
        return {"status": status}

    assert kubelet_endpoint(node([("Hostname", "n"), ("InternalIP", "10.0.0.1")], 1)) == (
        "10.0.0.1:1"
    )
    assert kubelet_endpoint(node([("ExternalIP", "1.2.3.4"), ("Hostname", "n")])) == "n:10250"
    assert kubelet_endpoint(node([("InternalIP", "fd00::1")], 0)) == "[fd00::1]:10250"
    assert kubelet_endpoint(node([])) is None


async def test_register_creates_then_replaces_service_and_apiservice(
    autojump_clock: trio.abc.Clock,
) -> None:
    api = MemoryApiserver()
    await register(Rest(api), 4443, b"CA-1")
    await register(Rest(api), 5443, b"CA-2")  # a previous run's objects are replaced
    service = api.get("/api/v1/namespaces/kube-system/services/kubemock-fleet-metrics")
    assert service is not None
    assert service["spec"] == {"type": "ExternalName", "externalName": "localhost"}
    apiservice = api.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")
    assert apiservice is not None
    assert apiservice["spec"]["service"] == {
        "namespace": "kube-system",
        "name": "kubemock-fleet-metrics",
        "port": 5443,
    }
    assert apiservice["spec"]["caBundle"] == "Q0EtMg=="  # base64 of CA-2
    assert (apiservice["spec"]["group"], apiservice["spec"]["version"]) == (
        "metrics.k8s.io",
        "v1beta1",
    )
