"""The sandbox apiserver as a plain ASGI application: routing, auth, negotiation.

No framework: the hot path (a small PATCH, a watch event) should cost
microseconds. :class:`SandboxApp` owns the store and the :class:`Api`, turns
each HTTP request into a :class:`Call`, answers JSON (or a Table when the
Accept header asks for one), streams watches, and counts every request in
``/metrics``. Non-resource endpoints: /version, /healthz, /livez, /readyz,
/metrics, discovery (/api, /apis, ...), /openapi/v2 and /openapi/v3.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources as importlib_resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
import trio

from fleet.machinery import APPLY_PATCH, JSON, PROTOBUF
from fleet.sandbox import _libs, _protobuf
from fleet.sandbox._api import Api, Call, decode_body
from fleet.sandbox._convert import converter
from fleet.sandbox._crds import CRD_KEY, Crds
from fleet.sandbox._deletion import Deleter
from fleet.sandbox._kubeletproxy import (
    STREAM_SUBRESOURCES,
    KubeletClientCert,
    Proxied,
    log_location,
    node_location,
    proxy,
    relay_upgrade,
    stream_location,
    write_status,
)
from fleet.sandbox._lists import list_body, list_objects
from fleet.sandbox._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fleet.sandbox._metrics import Metrics
from fleet.sandbox._metricsapi import GROUP as METRICS_GROUP
from fleet.sandbox._metricsapi import MetricsApi, metrics_types
from fleet.sandbox._openapi import OpenApi
from fleet.sandbox._patching import apply_patch
from fleet.sandbox._priority import PRIORITY_CLASSES, SYSTEM_CLASSES, PriorityAdmission
from fleet.sandbox._registry import Registry, ResourceType
from fleet.sandbox._services import ServiceAllocator
from fleet.sandbox._settings import SandboxSettings
from fleet.sandbox._status import StatusError, method_not_allowed
from fleet.sandbox._store import Store
from fleet.sandbox._subresources import bind, evict, get_scale, write_scale
from fleet.sandbox._watch import WatchStream

log = logging.getLogger("fleet.sandbox")

Handler = Callable[[Any, Any, dict[str, str]], Awaitable[Any]]
"""The request handler :meth:`SandboxApp.wrap_handler` wraps: ``(scope, receive, labels)`` to a
reply (``status``, ``body``), a watch stream or a kubelet proxy; or :class:`StatusError`."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-kubemock-fleet-sandbox",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
"""Reported by /version: the sandbox follows the v1.33 API (docs/sandbox.md says where not)."""
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version"})
"""Paths the apiserver serves to anonymous clients (system:public-info-viewer)."""
FLOWCONTROL = "flowcontrol.apiserver.k8s.io"
_TEXT = "text/plain; charset=utf-8"
_NOT_FOUND_TEXT = b"404 page not found\n"
_encoder = msgspec.json.Encoder()
_WRITE_VERBS = {"POST": "POST", "PUT": "PUT", "PATCH": "PATCH", "DELETE": "DELETE"}


MAX_BODY_DEPTH = 200
"""Deepest nesting of ``[``/``{`` a request body may have; deeper is 400 before decoding.
Go's decoder stops at 10,000; the sandbox's Python (decoders, patches, schema checks,
the data file) recurses per level, so it draws the line lower, far above real objects
(a Pod is ~10 deep, the deepest CRD schemas ~60)."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(body: bytes, limit: int) -> bool:
    """Whether ``body`` nests brackets more than ``limit`` deep (strings not counted).

    Counting openers (at C speed) settles nearly every body; only one with more than
    ``limit`` of them is walked.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


@dataclass
class Reply:
    """A complete answer."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json(status: int, obj: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, _encoder.encode(obj), JSON, headers or [])


def _status_reply(err: StatusError) -> Reply:
    return _json(err.code, err.body(), err.headers)


def _wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _only_aggregated(accept: str) -> bool:
    entries = [e.strip() for e in accept.split(",") if e.strip()]
    return bool(entries) and all("as=APIGroupDiscoveryList" in e for e in entries)


class SandboxApp:
    """The ASGI callable, and the state behind it."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        token: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.token = token or settings.token or secrets.token_urlsafe(32)
        self.require_token = (
            settings.tls if settings.require_token is None else settings.require_token
        )
        self.server_address = f"{settings.host}:{settings.port}"
        self.store = Store(
            history_limit=settings.watch_history,
            watch_queue=settings.watch_queue,
            history_window=settings.watch_history_window,
        )
        self.registry = Registry()
        self.api = Api(settings, self.store, self.registry)
        self.deleter = Deleter(self.api)
        self.crds = Crds(self.api)
        self.openapi = OpenApi(self.store, self.registry, VERSION_INFO["gitVersion"])
        self.metrics = Metrics(self._storage_counts)
        self.kubelet_client: KubeletClientCert | None = settings.kubelet_client
        """The ``--kubelet-client-certificate`` for ``pods/log`` and ``nodes/proxy``
        (``serve_sandbox`` generates one when the settings give none)."""
        self.metrics_api = MetricsApi(self.store, self.registry)
        for rt in metrics_types():
            self.registry.add(rt)
        self.api.after_create[("", "namespaces")] = self._namespace_created
        self.services = ServiceAllocator(self.store, settings.service_cidr)
        self.api.before_write[("", "services")] = self.services.prepare
        self.priority = PriorityAdmission(self.store)
        self.api.before_write[("", "pods")] = self.priority.pod
        self.api.before_write[PRIORITY_CLASSES] = self.priority.priority_class
        if data is not None:
            self.store.load(data)
            for crd in list(self.store.collection(CRD_KEY).objects.values()):
                self.crds.serve(crd)
            self.deleter.rebuild()
        self._bootstrap()
        self.store.mark_start()

    # --- state --------------------------------------------------------------------------
    def _bootstrap(self) -> None:
        ns_rt = self.registry.get("", "v1", "namespaces")
        assert ns_rt is not None
        for ns in SYSTEM_NAMESPACES:
            if self.store.get(ns_rt.key, "", ns) is None:
                self.api.create(
                    Call(rt=ns_rt, namespace=None),
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                )
        self._bootstrap_flowcontrol()
        pc_rt = self.registry.by_key(PRIORITY_CLASSES)
        assert pc_rt is not None
        for pc in SYSTEM_CLASSES:
            if self.store.get(pc_rt.key, "", pc["metadata"]["name"]) is None:
                self.api.create(Call(rt=pc_rt, namespace=None), json.loads(json.dumps(pc)))
        svc_rt = self.registry.get("", "v1", "services")
        assert svc_rt is not None
        if self.store.get(svc_rt.key, "default", "kubernetes") is None:
            # The apiserver's own Service, at the first address of the range (as a real one).
            self.api.create(
                Call(rt=svc_rt, namespace="default"),
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "clusterIP": self.services.first,
                        "ports": [
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                        ],
                    },
                },
            )

    def _bootstrap_flowcontrol(self) -> None:
        """The FlowSchemas and PriorityLevelConfigurations kube-apiserver makes at start (its
        APF configuration producer), each FlowSchema marked as finding its priority level."""
        data = json.loads(
            importlib_resources.files("fleet.sandbox")
            .joinpath("_flowcontrol_bootstrap.json")
            .read_text()
        )
        for plural in ("prioritylevelconfigurations", "flowschemas"):
            storage = self.registry.by_key((FLOWCONTROL, plural))
            if storage is None:
                continue
            conv = converter(FLOWCONTROL, plural, "v1beta2", f"{FLOWCONTROL}/v1beta2")
            for obj in data[plural]:
                if self.store.get(storage.key, "", obj["metadata"]["name"]) is not None:
                    continue
                body = conv.to_storage(dict(obj, kind=storage.kind), storage.api_version)
                created = self.api.create(Call(rt=storage, namespace=None), body)
                if plural == "flowschemas":
                    level = body["spec"]["priorityLevelConfiguration"]["name"]
                    status = {
                        "conditions": [
                            {
                                "type": "Dangling",
                                "status": "False",
                                "lastTransitionTime": created["metadata"]["creationTimestamp"],
                                "reason": "Found",
                                "message": "This FlowSchema references the "
                                f'PriorityLevelConfiguration object named "{level}" and it exists',
                            }
                        ]
                    }
                    self.store.commit(
                        storage.key, "MODIFIED", dict(created, status=status), created
                    )

    def _namespace_created(self, ns: dict[str, Any]) -> None:
        """The service account controller's work: every namespace gets a ``default`` ServiceAccount."""
        sa_rt = self.registry.get("", "v1", "serviceaccounts")
        assert sa_rt is not None
        name = ns["metadata"]["name"]
        if self.store.get(sa_rt.key, name, "default") is None:
            self.api.create(
                Call(rt=sa_rt, namespace=name),
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
            )

    def publish_endpoints(self, address: str) -> None:
        """The apiserver's own endpoints (its endpoint reconciler): the ``kubernetes`` Service's
        Endpoints and EndpointSlice name this server's address, and the Service targets its port."""
        host, _, port_text = address.rpartition(":")
        host = host.strip("[]")
        try:
            port = int(port_text)
            ipaddress.IPv4Address(host)
        except ValueError:
            return  # not an IPv4 address and port: nothing an Endpoints object could name
        ports = [{"name": "https", "port": port, "protocol": "TCP"}]
        objects: list[tuple[tuple[str, str, str], dict[str, Any]]] = [
            (
                ("", "v1", "endpoints"),
                {
                    "apiVersion": "v1",
                    "kind": "Endpoints",
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                    },
                    "subsets": [{"addresses": [{"ip": host}], "ports": ports}],
                },
            ),
            (
                ("discovery.k8s.io", "v1", "endpointslices"),
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"kubernetes.io/service-name": "kubernetes"},
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [host], "conditions": {"ready": True}}],
                    "ports": ports,
                },
            ),
        ]
        for (group, version, plural), body in objects:
            rt = self.registry.get(group, version, plural)
            if rt is None:
                continue
            current = self.store.get(rt.key, "default", "kubernetes")
            call = Call(rt=rt, namespace="default", name="kubernetes")
            if current is None:
                self.api.create(call, body)
            else:
                body["metadata"] = {**current["metadata"], **body["metadata"]}
                self.api.write(call, current, body)
        svc_rt = self.registry.get("", "v1", "services")
        assert svc_rt is not None
        svc = self.store.get(svc_rt.key, "default", "kubernetes")
        if svc is not None:
            new = msgspec.json.decode(msgspec.json.encode(svc))
            for p in new["spec"].get("ports") or []:
                if p.get("name") == "https":
                    p["targetPort"] = port
            self.api.write(Call(rt=svc_rt, namespace="default", name="kubernetes"), svc, new)

    def expire_events(self, now: float) -> int:
        """Remove the Events (both groups) last written more than ``event_ttl`` ago, as etcd's
        lease on each Event does (watchers see them DELETED); how many went."""
        ttl = self.settings.event_ttl
        if ttl <= 0:
            return 0
        gone = 0
        for group in ("", "events.k8s.io"):
            rt = self.registry.by_key((group, "events"))
            if rt is None:
                continue
            for obj in list(self.store.collection(rt.key).objects.values()):
                if _last_written(obj) + ttl < now:
                    self.api.remove(rt, obj, obj)
                    gone += 1
        return gone

    def _storage_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in self.store.keys():
            group, plural = key
            out[f"{plural}.{group}" if group else plural] = self.store.count(key)
        return out

    def dump(self) -> dict[str, Any]:
        return self.store.dump()

    def wrap_handler(self, wrap: Callable[[Handler], Handler]) -> None:
        """Put ``wrap(handler)`` in place of the request handler: every API request goes
        through it (the path, method and query in the ASGI ``scope``; a reply with ``status``
        and ``body``, a watch, or a :class:`StatusError` raised). The fault suite records each
        write with its ``fieldManager`` and answers storms of 429 and 410 this way
        (``bench.WriteLog``, ``bench.Storm``)."""
        self._handle = wrap(self._handle)  # type: ignore[method-assign,assignment]

    # --- ASGI ---------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = trio.current_time()
        labels = {
            "verb": scope["method"],
            "dry_run": "",
            "group": "",
            "version": "",
            "resource": "",
            "subresource": scope["path"],
            "scope": "",
            "component": "",
        }
        longrunning = False
        try:
            reply_or_watch = await self._handle(scope, receive, labels)
        except StatusError as err:
            reply_or_watch = _status_reply(err)
        except RecursionError:  # a body nested deeply in a way too_deep cannot see (block YAML)
            reply_or_watch = _status_reply(
                StatusError(400, "BadRequest", "the request body is nested too deeply")
            )
        except Exception:
            log.exception("sandbox: internal error on %s %s", scope["method"], scope["path"])
            reply_or_watch = _status_reply(
                StatusError(500, "InternalError", "Internal error occurred")
            )
        if isinstance(reply_or_watch, Proxied):  # pods/log, nodes/proxy: to a kubelet
            gauge = self.metrics.longrunning.labels(
                **{k: v for k, v in labels.items() if k != "dry_run"}
            )
            gauge.inc()
            try:
                code = await reply_or_watch.respond(receive, send)
            finally:
                gauge.dec()
            self.metrics.observe(labels, code, trio.current_time() - start, longrunning=True)
            return
        if isinstance(reply_or_watch, WatchStream):
            longrunning = True
            gauge = self.metrics.longrunning.labels(
                **{k: v for k, v in labels.items() if k != "dry_run"}
            )
            gauge.inc()
            try:
                await self._stream(reply_or_watch, receive, send)
            finally:
                gauge.dec()
                # Counted when it ends, as kube-apiserver does (its metrics handler records
                # after the stream returns): a watch still open is in the gauge alone.
                self.metrics.requests.labels(**labels, code="200").inc()
            return
        reply = reply_or_watch
        headers = [
            (b"content-type", reply.content_type.encode()),
            (b"content-length", str(len(reply.body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self.metrics.observe(
            labels, reply.status, trio.current_time() - start, longrunning=longrunning
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _stream(self, watch: WatchStream, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-cache, private"),
                ],
            }
        )

        async def chunk(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async with trio.open_nursery() as nursery:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_disconnect)
            try:
                await watch.run(chunk)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                watch.close()
                nursery.cancel_scope.cancel()

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                break
            data = msg.get("body", b"")
            size += len(data)
            if size > self.settings.max_body_bytes:
                raise StatusError(
                    413,
                    "RequestEntityTooLarge",
                    f"the server has received too large of a request body ({size} bytes)",
                )
            chunks.append(data)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        if too_deep(body, MAX_BODY_DEPTH):
            raise StatusError(
                400,
                "BadRequest",
                f"the request body is nested more than {MAX_BODY_DEPTH} levels deep",
            )
        return body

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        return hmac.compare_digest(auth[7:].strip().encode(), self.token.encode())

    # --- routing -----------------------------------------------------------------------------------
    async def _handle(
        self, scope: Scope, receive: Receive, labels: dict[str, str]
    ) -> Reply | WatchStream | Proxied:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        presented = "authorization" in headers
        if (
            (self.require_token or presented)
            and path not in PUBLIC_PATHS
            and not self._authorized(headers)
        ):
            return _json(
                401,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": "Unauthorized",
                    "reason": "Unauthorized",
                    "code": 401,
                },
            )
        body = (
            await self._read_body(receive) if method in ("POST", "PUT", "PATCH", "DELETE") else b""
        )
        if path.startswith("/api/") or path.startswith("/apis/"):
            resolved = self._resolve(path)
            if isinstance(resolved, Reply):
                return resolved
            if resolved is not None:
                return await self._resource(method, resolved, query, headers, body, labels)
        return self._non_resource(method, path.rstrip("/") or "/", headers)

    def _non_resource(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        if method not in ("GET", "HEAD"):
            return Reply(404, _NOT_FOUND_TEXT, _TEXT)
        accept = headers.get("accept", "")
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(
            ("/healthz/", "/livez/", "/readyz/")
        ):
            return Reply(200, b"ok", _TEXT)
        if path == "/version":
            return _json(200, VERSION_INFO)
        if path == "/metrics":
            return Reply(200, self.metrics.render(), METRICS_CONTENT_TYPE)
        if path == "/openapi/v2":
            return self._openapi_v2(headers)
        if path == "/openapi/v3":
            return Reply(200, self.openapi.v3_index(), JSON)
        if path.startswith("/openapi/v3/"):
            doc = self.openapi.v3_document(path.removeprefix("/openapi/v3/"))
            if doc is not None:
                return Reply(200, doc, JSON)
        if path in ("/api", "/apis") and _only_aggregated(accept):
            return _json(
                406,
                StatusError(
                    406,
                    "NotAcceptable",
                    "only the following media types are accepted: application/json, application/yaml, "
                    "application/vnd.kubernetes.protobuf",
                ).body(),
            )
        if path == "/api":
            return _json(200, self.registry.api_versions(self.server_address))
        if path == "/apis":
            return _json(200, self.registry.api_group_list())
        if path.startswith("/apis/") and path.count("/") == 2:
            group_doc = self.registry.api_group(path[6:])
            if group_doc is not None:
                return _json(200, group_doc)
        return Reply(404, _NOT_FOUND_TEXT, _TEXT)

    def _openapi_v2(self, headers: dict[str, str]) -> Reply:
        # kubectl and client-go ask for gnostic protobuf; a browser or curl gets JSON, which
        # the apiserver labels text/plain. Both carry the JSON document's ETag.
        accept = headers.get("accept", "")
        proto = "protobuf" in accept
        body, etag = self.openapi.v2_proto() if proto else self.openapi.v2_json()
        etag_headers = [("etag", etag)]
        if headers.get("if-none-match") == etag:
            return Reply(304, b"", "application/octet-stream", etag_headers)
        if proto:
            # As kube-apiserver labels it: Go cannot parse the media type the client asks for.
            return Reply(200, body, "application/octet-stream", etag_headers)
        return Reply(200, body, _TEXT, etag_headers)

    def _resolve(self, path: str) -> tuple[str, str, list[str]] | Reply | None:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            if len(parts) < 2 or parts[1] != "v1":
                return None
            group, version, rest = "", "v1", parts[2:]
        else:
            if len(parts) < 3:
                return None
            group, version, rest = parts[1], parts[2], parts[3:]
        if self.registry.group_version(group, version) is None:
            return Reply(404, _NOT_FOUND_TEXT, _TEXT)
        if not rest:
            return _json(200, self.registry.api_resource_list(group, version))
        return group, version, rest

    async def _resource(
        self,
        method: str,
        resolved: tuple[str, str, list[str]],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        labels: dict[str, str],
    ) -> Reply | WatchStream | Proxied:
        group, version, rest = resolved
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if group == METRICS_GROUP and method == "GET" and 1 <= len(rest) <= 2:
            labels.update(verb="get" if len(rest) == 2 else "list", group=group, resource=rest[0])
            if rest[0] not in ("nodes", "pods") or (rest[0] == "nodes" and namespace):
                raise _not_served()
            name = rest[1] if len(rest) == 2 else None
            return _json(
                200,
                await self.metrics_api.serve(
                    self.kubelet_client,
                    rest[0],
                    namespace,
                    name,
                    label_selector=query.get("labelSelector", ""),
                ),
            )
        to_kubelet = self._to_kubelet(method, group, namespace, rest, query, labels)
        if to_kubelet is not None:
            return to_kubelet
        if len(rest) > 3:
            raise _not_served()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (
            group == ""
            and plural == "bindings"
            and namespace is not None
            and name is None
            and method == "POST"
        ):
            pods = self.registry.get("", "v1", "pods")
            assert pods is not None
            call = Call(
                rt=pods, namespace=namespace, body=body, content_type=_media(headers), query=query
            )
            bname = ((msgspec.json.decode(body) if body else {}).get("metadata") or {}).get(
                "name", ""
            )
            return _json(201, bind(self.api, call, bname))
        rt = self.registry.get(group, version, plural)
        if rt is None or (namespace is not None and not rt.namespaced):
            raise _not_served()
        if name is not None and rt.namespaced and namespace is None:
            raise _not_served()
        if sub is not None and sub not in rt.subresources:
            raise _not_served()
        watch = method == "GET" and name is None and query.get("watch", "") in ("true", "1")
        labels.update(
            verb=_verb(method, name, watch, headers),
            group=group,
            version=version,
            resource=plural,
            subresource=sub or "",
            component="apiserver",
            scope="resource" if name else ("namespace" if namespace else "cluster"),
            dry_run="All" if query.get("dryRun") == "All" else "",
        )
        call = Call(
            rt=rt,
            namespace=namespace,
            name=name,
            subresource=sub,
            query=query,
            body=body,
            content_type=_media(headers),
        )
        if body and call.content_type == PROTOBUF:  # kubectl >= 1.33 create generators
            call.body, call.content_type = _protobuf.to_json(body, rt.kind), JSON
        accept = headers.get("accept", "")
        table = _wants_table(accept)
        storage = rt if rt.is_custom else self.registry.by_key(rt.key)
        if storage is not None and storage is not rt:
            return await self._converted(method, call, storage, table, watch)
        if watch:
            render = (lambda o: self._table(rt, [o], {}, query)) if table else None
            return WatchStream(self.api, call, render)
        reply = self._dispatch(method, call, table)
        if isinstance(reply, Reply):
            return reply
        status, obj = await reply
        extra = [("warning", _warning(w)) for w in call.warnings]
        return _json(status, obj, extra)

    async def _converted(
        self, method: str, call: Call, storage: ResourceType, table: bool, watch: bool
    ) -> Reply | WatchStream:
        """A request at a version other than the storage one: the body converted in, the
        answer converted out (``_convert``); a patch applies to the object as that version
        shows it, and is then written as an update."""
        rt = call.rt
        conv = converter(rt.group, rt.plural, rt.version, rt.api_version)
        scall = replace(call, rt=storage)

        def out(obj: Any) -> Any:
            if not isinstance(obj, dict):
                return obj
            if obj.get("kind") == rt.kind:
                return conv.from_storage(obj)
            if obj.get("kind") == rt.list_kind:
                items = []
                for item in obj.get("items") or []:
                    shown = conv.from_storage(dict(item, apiVersion=storage.api_version))
                    shown.pop("apiVersion", None)
                    shown.pop("kind", None)
                    items.append(shown)
                return dict(obj, apiVersion=rt.api_version, items=items)
            return obj

        if watch:
            if table:
                return WatchStream(
                    self.api, scall, lambda o: self._table(storage, [o], {}, call.query)
                )
            return WatchStream(self.api, scall, out)
        sub = call.subresource
        if method in ("POST", "PUT") and call.body and sub in (None, "status"):
            obj = decode_body(rt, call.body, call.content_type)
            scall.body = _encoder.encode(conv.to_storage(obj, storage.api_version))
            scall.content_type = JSON
        elif method == "PATCH" and sub in (None, "status") and call.name is not None:
            current = self.store.get(storage.key, call.ns(), call.name)
            if current is not None:
                patched = apply_patch(rt, conv.from_storage(current), call.body, call.content_type)
                scall.body = _encoder.encode(conv.to_storage(patched, storage.api_version))
                scall.content_type, method = JSON, "PUT"
            elif call.content_type == APPLY_PATCH:
                obj = decode_body(rt, call.body, call.content_type)
                scall.body = _encoder.encode(conv.to_storage(obj, storage.api_version))
        reply = self._dispatch(method, scall, table)
        if isinstance(reply, Reply):
            return reply
        status, obj = await reply
        extra = [("warning", _warning(w)) for w in scall.warnings]
        return _json(status, obj if table else out(obj), extra)

    async def upgrade(self, scope: Scope, stream: trio.abc.Stream, buffered: bytes) -> None:
        """An upgrade request (``Http1Server``'s hand-off): ``pods/{exec,attach,portforward}``
        relayed to the pod's kubelet; anything else is refused."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        parts = [p for p in scope["path"].split("/") if p]
        try:
            if (self.require_token or "authorization" in headers) and not self._authorized(headers):
                raise StatusError(401, "Unauthorized", "Unauthorized")
            if (
                len(parts) != 7
                or parts[:3] != ["api", "v1", "namespaces"]
                or parts[4] != "pods"
                or parts[6] not in STREAM_SUBRESOURCES
            ):
                raise StatusError(
                    400,
                    "BadRequest",
                    "upgrade requests are served for pods/exec, pods/attach and pods/portforward only",
                )
            if self.kubelet_client is None:
                raise StatusError(503, "ServiceUnavailable", "no kubelet client certificate")
            pods = self.registry.get("", "v1", "pods")
            nodes = self.registry.get("", "v1", "nodes")
            assert pods is not None and nodes is not None
            pod = self.api.lookup(pods, parts[3], parts[5])
            endpoint, target = stream_location(
                pod, parts[6], query, lambda n: self.store.get(nodes.key, "", n)
            )
        except StatusError as err:
            await write_status(stream, err)
            return
        labels = {"verb": "create", "group": "", "version": "v1", "resource": "pods"}
        gauge = self.metrics.longrunning.labels(
            **labels, subresource=parts[6], scope="resource", component="apiserver"
        )
        gauge.inc()
        try:
            await relay_upgrade(
                stream, buffered, self.kubelet_client, endpoint, target, list(scope["headers"])
            )
        finally:
            gauge.dec()

    def _to_kubelet(
        self,
        method: str,
        group: str,
        namespace: str | None,
        rest: list[str],
        query: dict[str, str],
        labels: dict[str, str],
    ) -> Proxied | None:
        """``pods/log`` and ``nodes/proxy``: what kube-apiserver forwards to a kubelet."""
        if group != "" or len(rest) < 3:
            return None
        plural, name, sub = rest[0], rest[1], rest[2]
        nodes = self.registry.get("", "v1", "nodes")
        assert nodes is not None

        def node(n: str) -> dict[str, Any] | None:
            return self.store.get(nodes.key, "", n)

        if plural == "pods" and sub == "log" and len(rest) == 3 and namespace is not None:
            if method != "GET":
                raise method_not_allowed()
            labels.update(verb="get", resource="pods", subresource="log", scope="resource")
            pods = self.registry.get("", "v1", "pods")
            assert pods is not None
            pod = self.api.lookup(pods, namespace, name)
            url = log_location(pod, query, node)
            return proxy(url, self.kubelet_client, check=True, resource="pods/log", name=name)
        if plural == "nodes" and sub == "proxy" and namespace is None:
            labels.update(verb=method.lower(), resource="nodes", subresource="proxy")
            query_string = urlencode(list(query.items()))
            url = node_location(node(name), name, "/".join(rest[3:]), query_string)
            return proxy(url, self.kubelet_client, method=method)
        return None

    def _dispatch(self, method: str, call: Call, table: bool) -> Reply | Awaitable[tuple[int, Any]]:
        async def run() -> tuple[int, Any]:
            rt, sub = call.rt, call.subresource
            if method == "GET":
                if call.name is None:
                    items, meta = await list_objects(self.api, call)
                    if table:
                        return 200, self._table(rt, items, meta, call.query)
                    return 200, list_body(rt, items, meta)
                if sub == "scale":
                    return 200, get_scale(self.api, call)
                if sub not in (None, "status", "approval"):
                    raise _sandbox_has_no_kubelet(rt, sub)
                obj = self.api.lookup(rt, call.ns(), call.name)
                if table:
                    return 200, self._table(
                        rt,
                        [obj],
                        {"resourceVersion": obj["metadata"]["resourceVersion"]},
                        call.query,
                    )
                return 200, obj
            if method == "POST":
                if call.name is None:
                    return 201, self.api.create(call)
                if sub == "binding":
                    return 201, bind(self.api, call, call.name)
                if sub == "eviction":
                    return 201, evict(self.api, self.deleter, call)
                raise _sandbox_has_no_kubelet(rt, sub)
            if method in ("PUT", "PATCH"):
                if call.name is None:
                    raise method_not_allowed()
                if sub == "scale":
                    return 200, write_scale(self.api, call, method)
                if sub not in (None, "status", "approval"):
                    raise _sandbox_has_no_kubelet(rt, sub)
                if method == "PUT":
                    return 200, self.api.update(call)
                existed = self.store.get(rt.key, call.ns(), call.name) is not None
                obj = self.api.patch(call)
                return (200 if existed else 201), obj
            if method == "DELETE":
                if call.name is None:
                    items, _meta = await list_objects(
                        self.api,
                        Call(
                            rt=rt,
                            namespace=call.namespace,
                            query={
                                k: v
                                for k, v in call.query.items()
                                if k in ("labelSelector", "fieldSelector")
                            },
                        ),
                    )
                    return 200, self.deleter.delete_collection(call, items)
                if sub is not None:
                    raise method_not_allowed()
                return self.deleter.delete(call)
            raise method_not_allowed()

        return run()

    def _table(
        self,
        rt: ResourceType,
        items: list[dict[str, Any]],
        meta: dict[str, Any],
        query: dict[str, str],
    ) -> dict[str, Any]:
        columns = None
        if rt.is_custom:
            columns = (rt.crd or {}).get("additionalPrinterColumns") or []
        return _libs.table_for(
            rt.plural,
            items,
            list_meta=meta,
            include_object=query.get("includeObject", "Metadata") or "Metadata",
            crd_columns=columns,
            now=_libs.utcnow(self.settings.wall_clock()),
        )


def _media(headers: dict[str, str]) -> str:
    return headers.get("content-type", JSON).split(";")[0].strip().lower() or JSON


def _warning(text: str) -> str:
    """A ``Warning`` header: code 299, no agent, the text quoted as RFC 7234 quotes it."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 - "{quoted}"'


def _verb(method: str, name: str | None, watch: bool, headers: dict[str, str]) -> str:
    if method == "GET":
        return "WATCH" if watch else ("GET" if name else "LIST")
    if method == "DELETE" and name is None:
        return "DELETECOLLECTION"
    if method == "PATCH" and _media(headers) == APPLY_PATCH:
        return "APPLY"
    return _WRITE_VERBS.get(method, method)


def _not_served() -> StatusError:
    return StatusError(404, "NotFound", "the server could not find the requested resource", {})


def _sandbox_has_no_kubelet(rt: ResourceType, sub: str | None) -> StatusError:
    return StatusError(
        400,
        "BadRequest",
        f"{rt.plural}/{sub} is not served by the kubemock-fleet sandbox: there is no kubelet behind its nodes",
    )


def _last_written(event: dict[str, Any]) -> float:
    """When an Event was last written, as well as its own times tell (0 when they do not)."""
    series = event.get("series") or {}
    times = (
        event.get("lastTimestamp"),
        event.get("deprecatedLastTimestamp"),
        event.get("eventTime"),
        series.get("lastObservedTime") if isinstance(series, dict) else None,
        (event.get("metadata") or {}).get("creationTimestamp"),
    )
    latest = 0.0
    for value in times:
        if isinstance(value, str) and value:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            latest = max(latest, moment.timestamp())
    return latest
