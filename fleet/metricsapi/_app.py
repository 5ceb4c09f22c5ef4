"""The ASGI app of ``metrics.k8s.io/v1beta1``: what metrics-server answers, from the kubelets.

Behaviour taken from metrics-server (``pkg/api/node.go``, ``pod.go``, ``filter.go``) and the
generic apiserver it is built on; each row is tested in ``tests/metricsapi``:

===========================  ==================================================================
request                      answer
===========================  ==================================================================
``/apis``, ``/apis/metrics   discovery: ``APIGroupList``, ``APIGroup``, ``APIResourceList``
.k8s.io[/v1beta1]``          (``nodes`` cluster-scoped, ``pods`` namespaced; ``get``, ``list``)
``nodes``, ``[namespaces/    ``NodeMetricsList`` / ``PodMetricsList``: the Nodes / Pods the
NS/]pods``                   apiserver lists (``labelSelector`` passed to that LIST), sorted by
                             (namespace,) name; an object whose kubelet did not answer
                             within 10 s, or answered an error, is left out, the list still 200
``fieldSelector``            ``metadata.name`` (and ``metadata.namespace`` for pods), as
                             metrics-server filters its listers; any other field 400
                             ``"f" is not a known field selector: only "metadata.name",
                             "metadata.namespace"`` (the generic apiserver's conversion)
a malformed selector         400 ``BadRequest`` with the parser's message
``nodes/N``                  ``NodeMetrics``; no such Node 404 ``node "N" not found`` (the node
                             lister's error, passed on); its kubelet silent 404
                             ``nodemetrics.metrics.k8s.io "N" not found``
``namespaces/NS/pods/P``     ``PodMetrics``; no such Pod 404 ``pods "P" not found``; no
                             metrics 404 ``podmetrics.metrics.k8s.io "NS/P" not found``
no ``X-Remote-User``         401 ``Unauthorized`` (the request-header authenticator finds no
                             user); ``/healthz``, ``/livez``, ``/readyz`` need none
the apiserver failing        503 ``ServiceUnavailable`` naming it (metrics-server's listers
                             are caches; ours is a LIST per request)
===========================  ==================================================================

Each object: ``metadata`` with ``name`` (``namespace``), ``labels`` (the Node's or Pod's) and
``creationTimestamp`` (the time of the answer, as metrics-server sets it), ``timestamp``
(the kubelet's sample time), ``window``, and ``usage`` (nodes) or ``containers[].usage``
(pods) in quantities (``cpu`` in ``n``, ``memory`` in ``Ki``). The TLS side (only the
aggregator's client certificate gets a connection) is ``_serve``'s.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import msgspec

from fleet.errors import ApiError, InputError, NotFound, TransportError
from fleet.kube import (
    METRICS_GROUP,
    METRICS_VERSION,
    Rest,
    fetch_summaries,
    metrics_list,
    node_metrics,
    pod_metrics,
)
from fleet.machinery import format_time, parse_field_selector, parse_label_selector

__all__ = ["MetricsApp", "kubelet_endpoint"]

PREFERRED_ADDRESS_TYPES = ("InternalIP", "Hostname", "InternalDNS", "ExternalIP", "ExternalDNS")
"""How a Node's kubelet is reached (the fleet's kube-apiserver runs with InternalIP first)."""
DEFAULT_KUBELET_PORT = 10250
USER_HEADER = b"x-remote-user"
"""Where the aggregator names the user (kube-apiserver's ``--requestheader-username-headers``,
kubeadm's ``X-Remote-User``, which ``fleet.realcp`` sets too)."""
UNAUTHENTICATED_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
"""Paths served without a user (metrics-server's ``--authorization-always-allow-paths``)."""
FIELDS = ("metadata.name", "metadata.namespace")
"""The field selectors the generic apiserver converts for a kind without conversions of its
own (``runtime.DefaultMetaV1FieldSelectorConversion``)."""
_JSON = b"application/json"
_encode = msgspec.json.Encoder().encode

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Answer = tuple[int, dict[str, Any]]


class _Refused(Exception):
    """An error answer (a ``Status``), raised where the fault is found."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.answer: Answer = (code, _status(code, reason, message, details))


def kubelet_endpoint(node: Mapping[str, Any]) -> str | None:
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


def _status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def _not_found(resource: str, name: str, group: str = "") -> _Refused:
    """``errors.NewNotFound``: ``resource.group "name" not found`` with its details."""
    qualified = f"{resource}.{group}" if group else resource
    details = {"name": name, **({"group": group} if group else {}), "kind": resource}
    return _Refused(404, "NotFound", f'{qualified} "{name}" not found', details)


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


def _selectors(query: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The request's label and field selectors, checked as the generic apiserver checks them
    before metrics-server sees them. Both then go to the apiserver's LIST, which applies them
    as metrics-server applies them to its listers (a Node has no ``metadata.namespace``
    field there either: ``metadata.namespace=x`` selects no Node unless ``x`` is empty)."""
    labels = query.get("labelSelector", "").strip() or None
    fields = query.get("fieldSelector", "").strip() or None
    try:
        if labels is not None:
            parse_label_selector(labels)
        if fields is not None:
            for term in parse_field_selector(fields).terms:
                if term.field not in FIELDS:
                    raise InputError(
                        f'"{term.field}" is not a known field selector: only'
                        f' "{FIELDS[0]}", "{FIELDS[1]}"'
                    )
    except InputError as exc:
        raise _Refused(400, "BadRequest", str(exc)) from exc
    return labels, fields


class MetricsApp:
    """The ASGI app: discovery, ``nodes`` and ``pods`` of ``metrics.k8s.io/v1beta1``.

    ``kubelets`` carries the kubelet client certificate and the timeouts; ``wall`` is the
    wall clock (epoch seconds) the objects' ``creationTimestamp`` comes from.
    """

    def __init__(
        self, api: Rest, kubelets: httpx.AsyncClient, *, wall: Callable[[], float] = time.time
    ) -> None:
        self.api = api
        self.kubelets = kubelets
        self.wall = wall

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
        headers = dict(scope.get("headers") or [])
        try:
            if path not in UNAUTHENTICATED_PATHS and not headers.get(USER_HEADER):
                raise _Refused(401, "Unauthorized", "Unauthorized")
            status, body = await self._answer(scope["method"], path, query)
        except _Refused as refused:
            status, body = refused.answer
        except (ApiError, TransportError) as exc:  # the apiserver failed us: say so
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

    async def _answer(self, method: str, path: str, query: dict[str, str]) -> Answer:
        if path in UNAUTHENTICATED_PATHS:
            return 200, {"status": "ok"}
        found = _discovery(path)
        if found is not None:
            return 200, found
        prefix = f"/apis/{METRICS_GROUP}/{METRICS_VERSION}/"
        if not path.startswith(prefix):
            raise _Refused(404, "NotFound", "the server could not find the requested resource")
        if method != "GET":
            raise _Refused(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        rest = path[len(prefix) :].split("/")
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        name = rest[1] if len(rest) == 2 else None
        if rest[0] == "nodes" and namespace is None and len(rest) <= 2:
            labels, fields = _selectors(query)
            return await self._nodes(name, labels, fields)
        if rest[0] == "pods" and (len(rest) == 1 or (len(rest) == 2 and namespace is not None)):
            labels, fields = _selectors(query)
            return await self._pods(namespace, name, labels, fields)
        raise _Refused(404, "NotFound", "the server could not find the requested resource")

    def _created(self) -> str:
        return format_time(datetime.fromtimestamp(self.wall(), UTC))

    async def _summaries(self, nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        endpoints = {}
        for node in nodes:
            name = (node.get("metadata") or {}).get("name", "")
            if (endpoint := kubelet_endpoint(node)) is not None:
                endpoints[name] = endpoint
        return await fetch_summaries(self.kubelets, endpoints)

    async def _nodes(self, name: str | None, labels: str | None, fields: str | None) -> Answer:
        if name is not None:
            try:
                nodes = [await self.api.get(f"/api/v1/nodes/{name}")]
            except NotFound as exc:  # the node lister's own error, passed on
                raise _not_found("node", name) from exc
        else:
            listed = await self.api.list(
                "/api/v1/nodes", label_selector=labels, field_selector=fields
            )
            nodes = listed.items
        summaries = await self._summaries(nodes)
        created = self._created()
        items = [
            node_metrics(meta["name"], meta.get("labels") or {}, summaries[meta["name"]], created)
            for meta in sorted((n["metadata"] for n in nodes), key=lambda m: m["name"])
            if meta["name"] in summaries
        ]
        if name is None:
            return 200, metrics_list("NodeMetricsList", items)
        if not items:
            raise _not_found("nodemetrics", name, METRICS_GROUP)
        return 200, {
            "kind": "NodeMetrics",
            "apiVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            **items[0],
        }

    async def _pods(
        self, namespace: str | None, name: str | None, labels: str | None, fields: str | None
    ) -> Answer:
        base = f"/api/v1/namespaces/{namespace}/pods" if namespace else "/api/v1/pods"
        if name is not None:
            try:
                pods = [await self.api.get(f"{base}/{name}")]
            except NotFound as exc:  # the pod lister's own error, passed on
                raise _not_found("pods", name) from exc
        else:
            pods = (await self.api.list(base, label_selector=labels, field_selector=fields)).items
        wanted = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        on = sorted({str((p.get("spec") or {}).get("nodeName") or "") for p in pods} - {""})
        nodes = []
        for node in on:
            try:
                nodes.append(await self.api.get(f"/api/v1/nodes/{node}"))
            except NotFound:  # a pod of a node gone: no kubelet to ask
                continue
        items = pod_metrics(await self._summaries(nodes), wanted, self._created())
        if name is None:
            return 200, metrics_list("PodMetricsList", items)
        if not items:
            raise _not_found("podmetrics", f"{namespace}/{name}", METRICS_GROUP)
        return 200, {
            "kind": "PodMetrics",
            "apiVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            **items[0],
        }
