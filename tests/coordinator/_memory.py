"""A tiny in-memory apiserver behind the Requester seam, for coordinator and election tests.

Unlike the scripted ``FakeApiserver`` it keeps state: objects with
resourceVersions, optimistic concurrency on PUT, JSON merge PATCH, and live
watches (replaying from a resourceVersion, then streaming). Only what the
coordinator uses: namespaced Leases and Node CRs, lists across namespaces.
Each :meth:`MemoryApiserver.client` is a separate Requester that a test can
cut off (``broken = True``), to play a process that lost the apiserver.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from fleet.errors import ConnectError
from fleet.kube._fake import json_response, status_response
from fleet.kube._seam import Response, StreamResponse

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _parse(path: str) -> tuple[str, str | None, str | None]:
    """-> (resource "group/version/plural", namespace, name)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        prefix, rest = "core/" + parts[1], parts[2:]
    else:
        prefix, rest = parts[1] + "/" + parts[2], parts[3:]
    namespace = None
    if rest and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = prefix + "/" + rest[0]
    name = rest[1] if len(rest) > 1 else None
    return resource, namespace, name


@dataclass
class _Stream:
    status: int
    receive: trio.MemoryReceiveChannel[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self.receive:
            yield chunk

    async def aread(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""


class MemoryClient:
    """One process' connection to the :class:`MemoryApiserver`."""

    def __init__(self, server: MemoryApiserver) -> None:
        self.server = server
        self.broken = False

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise ConnectError("connection refused (test)")
        return self.server.handle(method, path, body)

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._watch(path, dict(params or {}))

    @asynccontextmanager
    async def _watch(self, path: str, params: dict[str, str]) -> AsyncIterator[StreamResponse]:
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise ConnectError("connection refused (test)")
        resource, namespace, _ = _parse(path)
        send, receive = trio.open_memory_channel[bytes](100_000)
        since = int(params.get("resourceVersion") or 0)
        for rv, type_, obj in self.server.log:
            if rv > since and self.server.matches(obj, resource, namespace):
                send.send_nowait(_encoder.encode({"type": type_, "object": obj}) + b"\n")
        watcher = (resource, namespace, send)
        self.server.watchers.append(watcher)
        try:
            yield _Stream(200, receive)
        finally:
            self.server.watchers.remove(watcher)
            send.close()


class MemoryApiserver:
    """Objects keyed by (resource, namespace, name); every change logged for watches."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.log: list[tuple[int, str, dict[str, Any]]] = []
        self.watchers: list[tuple[str, str | None, trio.MemorySendChannel[bytes]]] = []
        self.writes: list[tuple[float, str, str, dict[str, Any]]] = []
        """(time, method, path, body) of every successful write, for assertions."""
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.rv = 0

    def client(self) -> MemoryClient:
        return MemoryClient(self)

    @staticmethod
    def matches(obj: dict[str, Any], resource: str, namespace: str | None) -> bool:
        meta = obj["metadata"]
        return meta["_resource"] == resource and namespace in (None, meta.get("namespace"))

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        public = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "_resource"}}
        self.log.append((int(obj["metadata"]["resourceVersion"]), type_, public))
        line = _encoder.encode({"type": type_, "object": public}) + b"\n"
        for resource, namespace, send in self.watchers:
            if self.matches(obj, resource, namespace):
                send.send_nowait(line)

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(self.rv)

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "_resource"}}

    def put_object(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create (test setup): ``path`` is the collection."""
        response = self.handle("POST", path, _encoder.encode(obj))
        assert response.ok, response
        return _decoder.decode(response.content)

    def delete_object(self, path: str) -> None:
        assert self.handle("DELETE", path, None).ok

    def get(self, path: str) -> dict[str, Any] | None:
        resource, namespace, name = _parse(path)
        assert name is not None
        obj = self.objects.get((resource, namespace, name))
        return None if obj is None else self._public(obj)

    def handle(self, method: str, path: str, body: bytes | None) -> Response:
        resource, namespace, name = _parse(path)
        key = (resource, namespace, name or "")
        now = trio.current_time()
        if method == "GET" and name is None:
            items = [
                self._public(o)
                for (res, ns, _), o in sorted(self.objects.items(), key=lambda kv: kv[0][1:])
                if res == resource and namespace in (None, ns)
            ]
            return json_response({"metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if method == "POST":
            obj = _decoder.decode(body or b"{}")
            name = obj["metadata"]["name"]
            key = (resource, namespace, name)
            if key in self.objects:
                return status_response(409, "AlreadyExists", f"{name} exists")
            obj["metadata"].update(
                namespace=namespace, uid=f"uid-{next(self._uid)}", _resource=resource
            )
            self._stamp(obj)
            self.objects[key] = obj
            self.writes.append((now, method, path + "/" + name, obj))
            self._emit("ADDED", obj)
            return json_response(self._public(obj), 201)
        current = self.objects.get(key)
        if current is None:
            return status_response(404, "NotFound", f"{path} not found")
        if method == "GET":
            return json_response(self._public(current))
        if method == "DELETE":
            del self.objects[key]
            self._stamp(current)
            self._emit("DELETED", current)
            return json_response(self._public(current))
        if method == "PUT":
            obj = _decoder.decode(body or b"{}")
            sent_rv = obj["metadata"].get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                return status_response(409, "Conflict", "the object has been modified")
            obj["metadata"] = {**current["metadata"], **obj["metadata"], "_resource": resource}
        elif method == "PATCH":
            obj = _merge(current, _decoder.decode(body or b"{}"))
        else:
            return status_response(405, "MethodNotAllowed", method)
        self._stamp(obj)
        self.objects[key] = obj
        self.writes.append((now, method, path, obj))
        self._emit("MODIFIED", obj)
        return json_response(self._public(obj))
