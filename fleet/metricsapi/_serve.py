"""``metrics.k8s.io`` as an aggregated API beside a real kube-apiserver (``up --control-plane real``).

kube-apiserver v1.24 serves no ``metrics.k8s.io``: a cluster gets it from metrics-server,
registered as an APIService the aggregator proxies to. This is that server, for a fleet:
the objects come from the kubelets' Summary API as the sandbox makes them
(``fleet.kube``'s ``fetch_summaries``, ``node_metrics``, ``pod_metrics``), the Nodes and
Pods from the apiserver (a LIST per request, with the request's ``labelSelector``: it
serves ``kubectl top``, not an autoscaler's every-15-s loop over a large cluster).

How the aggregator reaches it, on loopback with no kube-proxy:

* a Service ``kube-system/kubemock-fleet-metrics`` of type ExternalName (``localhost``):
  kube-apiserver resolves an APIService's Service to its ClusterIP, or to the external
  name for that type (``k8s.io/apiserver/pkg/util/proxy.ResolveCluster``), and dials it
  on the APIService's port; a ClusterIP would need a proxy to route it, and Endpoints
  refuse loopback addresses;
* an APIService ``v1beta1.metrics.k8s.io`` naming that Service and this listener's port,
  with the CA of the serving certificate (made here, for
  ``kubemock-fleet-metrics.kube-system.svc``, the name the aggregator checks);
* authentication as an extension apiserver does it: the aggregator's client certificate
  (kube-apiserver's ``--proxy-client-cert-file``) verified against the request-header CA
  (``--requestheader-client-ca-file``), which only that certificate comes from; the user
  is in ``X-Remote-User``. kube-apiserver authorized the request before proxying it; no
  second SubjectAccessReview is made (metrics-server makes one).

Kubelets are asked with a client certificate of the cluster CA, which the shards trust.
"""

from __future__ import annotations

import base64
import logging
import ssl
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from fleet.errors import AlreadyExists, ApiError, NotFound
from fleet.kube import (
    METRICS_GROUP,
    METRICS_VERSION,
    Rest,
    fetch_summaries,
    kubelet_client_context,
    metrics_list,
    node_metrics,
    pod_metrics,
)

__all__ = ["MetricsApiSettings", "RunningMetricsApi", "serve_metrics_api"]

log = logging.getLogger("fleet.metricsapi")

NAMESPACE = "kube-system"
SERVICE = "kubemock-fleet-metrics"
APISERVICE = f"{METRICS_VERSION}.{METRICS_GROUP}"
EXTERNAL_NAME = "localhost"
"""Where the aggregator dials (the Service's external name): this listener is on loopback."""
FETCH_TIMEOUT = 10.0
"""Seconds a kubelet may take to answer (metrics-server's default scrape timeout)."""
CONNECT_TIMEOUT = 5.0
PREFERRED_ADDRESS_TYPES = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
"""How a Node's kubelet is reached (the fleet's kube-apiserver runs with InternalIP first)."""
DEFAULT_KUBELET_PORT = 10250
_JSON = b"application/json"
_encode = msgspec.json.Encoder().encode

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class MetricsApiSettings:
    front_proxy_ca_pem: bytes
    """The request-header CA: only the aggregator's client certificate comes from it."""
    kubelet_client_cert_pem: bytes
    kubelet_client_key_pem: bytes
    """A client certificate the kubelets (the shards) accept."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free one."""


@dataclass(frozen=True)
class RunningMetricsApi:
    port: int
    ca_pem: bytes
    """The CA of the serving certificate (the APIService's ``caBundle``)."""


def kubelet_endpoint(node: dict[str, Any]) -> str | None:
    """``host:port`` of a Node's kubelet, as kube-apiserver picks it; None without an address."""
    status = node.get("status") or {}
    addresses = {
        a.get("type"): a.get("address")
        for a in reversed(status.get("addresses") or [])
        if isinstance(a, dict)
    }
    host = next((addresses[t] for t in PREFERRED_ADDRESS_TYPES if addresses.get(t)), None)
    if host is None:
        return None
    port = int(
        ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 0
    )
    port = port if port > 0 else DEFAULT_KUBELET_PORT
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _discovery(path: str) -> dict[str, Any] | None:
    version = {"groupVersion": f"{METRICS_GROUP}/{METRICS_VERSION}", "version": METRICS_VERSION}
    group = {"name": METRICS_GROUP, "versions": [version], "preferredVersion": version}
    if path == f"/apis/{METRICS_GROUP}/{METRICS_VERSION}":
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            "resources": [
                {
                    "name": "nodes",
                    "singularName": "",
                    "namespaced": False,
                    "kind": "NodeMetrics",
                    "verbs": ["get", "list"],
                },
                {
                    "name": "pods",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "PodMetrics",
                    "verbs": ["get", "list"],
                },
            ],
        }
    if path == f"/apis/{METRICS_GROUP}":
        return {"kind": "APIGroup", "apiVersion": "v1", **group}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
    return None


class MetricsApp:
    """The ASGI app: discovery, ``nodes`` and ``pods`` of ``metrics.k8s.io/v1beta1``."""

    def __init__(self, api: Rest, kubelets: httpx.AsyncClient) -> None:
        self.api = api
        self.kubelets = kubelets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # nothing to start or stop; hypercorn waits for the word
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            status, body = await self._answer(scope["method"], path, query)
        except ApiError as exc:  # the apiserver refused our LIST: say so, as a Status
            status, body = 503, _status(503, "ServiceUnavailable", f"metrics: {exc}")
        data = _encode(body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", _JSON), (b"content-length", str(len(data)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _answer(
        self, method: str, path: str, query: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        if path in ("/healthz", "/readyz", "/livez"):
            return 200, {"status": "ok"}
        found = _discovery(path)
        if found is not None:
            return 200, found
        prefix = f"/apis/{METRICS_GROUP}/{METRICS_VERSION}/"
        if not path.startswith(prefix):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        if method != "GET":
            return 405, _status(405, "MethodNotAllowed", f"{method} is not supported")
        rest = path[len(prefix) :].split("/")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        selector = query.get("labelSelector") or None
        if rest[0] == "nodes" and namespace is None and len(rest) <= 2:
            return await self._nodes(rest[1] if len(rest) == 2 else None, selector)
        if rest[0] == "pods" and len(rest) <= 2:
            return await self._pods(namespace, rest[1] if len(rest) == 2 else None, selector)
        return 404, _status(404, "NotFound", "the server could not find the requested resource")

    async def _summaries(self, nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        endpoints = {}
        for node in nodes:
            name = (node.get("metadata") or {}).get("name", "")
            if (endpoint := kubelet_endpoint(node)) is not None:
                endpoints[name] = endpoint
        return await fetch_summaries(self.kubelets, endpoints)

    async def _nodes(self, name: str | None, selector: str | None) -> tuple[int, dict[str, Any]]:
        if name is not None:
            try:
                nodes = [await self.api.get(f"/api/v1/nodes/{name}")]
            except NotFound:
                nodes = []
        else:
            nodes = (await self.api.list("/api/v1/nodes", label_selector=selector)).items
        summaries = await self._summaries(nodes)
        items = []
        for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
            meta = node["metadata"]
            if meta["name"] in summaries:
                items.append(
                    node_metrics(meta["name"], meta.get("labels") or {}, summaries[meta["name"]])
                )
        if name is None:
            return 200, metrics_list("NodeMetricsList", items)
        if not items:
            return 404, _status(404, "NotFound", f'nodemetrics.{METRICS_GROUP} "{name}" not found')
        return 200, {
            "kind": "NodeMetrics",
            "apiVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            **items[0],
        }

    async def _pods(
        self, namespace: str | None, name: str | None, selector: str | None
    ) -> tuple[int, dict[str, Any]]:
        base = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        if name is not None:
            try:
                pods = [await self.api.get(f"{base}/{name}")]
            except NotFound:
                pods = []
        else:
            pods = (await self.api.list(base, label_selector=selector)).items
        wanted = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        on = sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""})
        nodes = []
        for node in on:
            try:
                nodes.append(await self.api.get(f"/api/v1/nodes/{node}"))
            except NotFound:
                continue
        items = pod_metrics(await self._summaries(nodes), wanted)
        if name is None:
            return 200, metrics_list("PodMetricsList", items)
        if not items:
            return 404, _status(404, "NotFound", f'podmetrics.{METRICS_GROUP} "{name}" not found')
        return 200, {
            "kind": "PodMetrics",
            "apiVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            **items[0],
        }


async def register(api: Rest, port: int, ca_pem: bytes) -> None:
    """The Service and the APIService that send ``metrics.k8s.io`` here (both replaced when
    a previous run left them)."""
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": EXTERNAL_NAME},
    }
    apiservice: dict[str, Any] = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": APISERVICE},
        "spec": {
            "group": METRICS_GROUP,
            "version": METRICS_VERSION,
            "service": {"namespace": NAMESPACE, "name": SERVICE, "port": port},
            "caBundle": base64.b64encode(ca_pem).decode("ascii"),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    for collection, body in (
        (f"/api/v1/namespaces/{NAMESPACE}/services", service),
        ("/apis/apiregistration.k8s.io/v1/apiservices", apiservice),
    ):
        try:
            await api.create(collection, body)
        except AlreadyExists:
            path = f"{collection}/{body['metadata']['name']}"
            current = await api.get(path)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await api.replace(path, body)


async def serve_metrics_api(
    api: Rest,
    settings: MetricsApiSettings,
    *,
    task_status: trio.TaskStatus[RunningMetricsApi] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve and register ``metrics.k8s.io`` until cancelled (see the module docstring)."""
    import trustme

    ca = trustme.CA(organization_name="kubemock-fleet metrics.k8s.io")
    serving = ca.issue_cert(f"{SERVICE}.{NAMESPACE}.svc", "localhost", "127.0.0.1")
    timeout = httpx.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="kubemock-fleet-metrics-") as tmp:
        files = Path(tmp)
        (files / "tls.crt").write_bytes(b"".join(b.bytes() for b in serving.cert_chain_pems))
        (files / "tls.key").write_bytes(serving.private_key_pem.bytes())
        (files / "front-proxy-ca.crt").write_bytes(settings.front_proxy_ca_pem)
        config = Config()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.certfile, config.keyfile = str(files / "tls.crt"), str(files / "tls.key")
        config.ca_certs = str(files / "front-proxy-ca.crt")
        config.verify_mode = ssl.CERT_REQUIRED  # the aggregator's certificate, nothing else
        config.accesslog = None
        config.errorlog = log
        async with httpx.AsyncClient(
            verify=kubelet_client_context(
                settings.kubelet_client_cert_pem, settings.kubelet_client_key_pem
            ),
            timeout=timeout,
        ) as kubelets:
            app = MetricsApp(api, kubelets)
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]  # hypercorn types an ASGI app by its TypedDict scopes
                port = int(binds[0].rsplit(":", 1)[1])
                await register(api, port, ca.cert_pem.bytes())
                log.info(
                    "metrics.k8s.io served on %s:%d (APIService %s)",
                    settings.host,
                    port,
                    APISERVICE,
                )
                task_status.started(RunningMetricsApi(port, ca.cert_pem.bytes()))
