"""A small stateful apiserver behind the Requester seam, for shard engine tests.

Only what a shard uses, with the apiserver's semantics where the shard relies
on them: resourceVersions and optimistic concurrency (PUT, merge PATCH with a
resourceVersion), JSON merge and strategic merge PATCH (the sandbox's
implementation), status subresources, a uid precondition inside a pod status
patch, DeleteOptions (grace period, uid precondition), finalizers and
deletionTimestamp, label (``k=v``) and ``spec.nodeName`` field selectors on
lists and watches (an object leaving a watch's selector is DELETED for it).
Every request is logged with the trio time it arrived; ``fail`` lets a test
answer chosen requests with an error or a TransportError.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import trio

from fleet.kube._fake import json_response, status_response
from fleet.kube._seam import Response, StreamResponse
from fleet.sandbox._smp import strategic_merge_patch

BASE = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
"""Wall time at trio time 0 in these tests."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def wall() -> datetime:
    return BASE + timedelta(seconds=trio.current_time())


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


@dataclass(frozen=True)
class Call:
    at: float
    method: str
    path: str
    params: Mapping[str, str]
    body: Any


def _parse(path: str) -> tuple[str, str | None, str | None, str | None]:
    """-> (resource, namespace, name, subresource)."""
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        prefix, rest = "core/" + parts[1], parts[2:]
    else:
        prefix, rest = parts[1] + "/" + parts[2], parts[3:]
    namespace = None
    if rest and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = prefix + "/" + rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return resource, namespace, name, sub


_KIND = {"core/v1/pods": "Pod", "core/v1/nodes": "Node"}


def _selects(obj: dict[str, Any], params: Mapping[str, str]) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, (params.get("labelSelector") or "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    for term in filter(None, (params.get("fieldSelector") or "").split(",")):
        node = (obj.get("spec") or {}).get("nodeName") or ""
        if term.startswith("spec.nodeName!="):
            if node == term.split("!=", 1)[1]:
                return False
        elif term.startswith("spec.nodeName="):
            if node != term.split("=", 1)[1]:
                return False
    return True


@dataclass
class _Watcher:
    resource: str
    namespace: str | None
    params: Mapping[str, str]
    send: trio.MemorySendChannel[bytes]


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


Failer = Callable[[str, str], Response | BaseException | None]


class ShardApiserver:
    """Objects by (resource, namespace, name); every change fanned out to matching watches."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.watchers: list[_Watcher] = []
        self.fail: Failer | None = None
        self._rv = itertools.count(1)
        self._uid = itertools.count(1)
        self.rv = 0

    # -- test helpers ---------------------------------------------------------------------

    def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        response = self._handle("POST", path, {}, _encoder.encode(obj))
        assert response.ok, response.content
        return _decoder.decode(response.content)

    def patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        response = self._handle(
            "PATCH", path, {}, _encoder.encode(patch), "application/merge-patch+json"
        )
        assert response.ok, response.content
        return _decoder.decode(response.content)

    def delete(self, path: str, grace: int | None = None) -> None:
        body = None if grace is None else _encoder.encode({"gracePeriodSeconds": grace})
        response = self._handle("DELETE", path, {}, body)
        assert response.ok, response.content

    def get(self, path: str) -> dict[str, Any] | None:
        resource, namespace, name, _ = _parse(path)
        assert name is not None
        return self.objects.get((resource, namespace, name))

    def log(self, method: str | None = None, prefix: str = "") -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method) and c.path.startswith(prefix)
        ]

    # -- the seam -------------------------------------------------------------------------

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
        decoded = _decoder.decode(body) if body else None
        self.calls.append(Call(trio.current_time(), method, path, dict(params or {}), decoded))
        if self.fail is not None:
            answer = self.fail(method, path)
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer
        return self._handle(method, path, dict(params or {}), body, content_type)

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
        self.calls.append(Call(trio.current_time(), "WATCH", path, params, None))
        resource, namespace, _, _ = _parse(path)
        send, receive = trio.open_memory_channel[bytes](1_000_000)
        watcher = _Watcher(resource, namespace, params, send)
        self.watchers.append(watcher)
        try:
            yield _Stream(200, receive)
        finally:
            self.watchers.remove(watcher)
            send.close()

    # -- the server -----------------------------------------------------------------------

    def _emit(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new or old
        assert obj is not None
        resource = obj["metadata"]["_resource"]
        namespace = obj["metadata"].get("namespace")
        for w in self.watchers:
            if w.resource != resource or w.namespace not in (None, namespace):
                continue
            was = old is not None and _selects(old, w.params)
            now = new is not None and _selects(new, w.params)
            if now:
                type_ = "MODIFIED" if was else "ADDED"
                line = {"type": type_, "object": self._public(new)}  # type: ignore[arg-type]
            elif was:
                gone = new if new is not None else old
                line = {"type": "DELETED", "object": self._public(gone)}  # type: ignore[arg-type]
            else:
                continue
            w.send.send_nowait(_encoder.encode(line) + b"\n")

    def _stamp(self, obj: dict[str, Any]) -> None:
        self.rv = next(self._rv)
        obj["metadata"]["resourceVersion"] = str(self.rv)

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "_resource"}}

    def _store(
        self, key: tuple[str, str | None, str], old: dict[str, Any], new: dict[str, Any]
    ) -> Response:
        self._stamp(new)
        self.objects[key] = new
        self._emit(old, new)
        return json_response(self._public(new))

    def _remove(self, key: tuple[str, str | None, str], obj: dict[str, Any]) -> Response:
        del self.objects[key]
        self._stamp(obj)
        self._emit(obj, None)
        return json_response(self._public(obj))

    def _handle(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes | None,
        content_type: str | None = None,
    ) -> Response:
        resource, namespace, name, sub = _parse(path)
        if method == "GET" and name is None:
            items = [
                self._public(o)
                for (res, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                if res == resource and namespace in (None, ns) and _selects(o, params)
            ]
            return json_response({"metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if method == "POST":
            obj = _decoder.decode(body or b"{}")
            name = obj["metadata"]["name"]
            key = (resource, namespace, name)
            if key in self.objects:
                return status_response(409, "AlreadyExists", f"{name} already exists")
            obj["metadata"].update(
                uid=f"uid-{next(self._uid)}",
                _resource=resource,
                creationTimestamp=obj["metadata"].get("creationTimestamp") or stamp(wall()),
            )
            if namespace is not None:
                obj["metadata"]["namespace"] = namespace
            self._stamp(obj)
            self.objects[key] = obj
            self._emit(None, obj)
            return json_response(self._public(obj), 201)
        assert name is not None
        key = (resource, namespace, name)
        current = self.objects.get(key)
        if current is None:
            return status_response(404, "NotFound", f"{path} not found")
        if method == "GET":
            return json_response(self._public(current))
        if method == "DELETE":
            options = _decoder.decode(body) if body else {}
            uid = (options.get("preconditions") or {}).get("uid")
            if uid and uid != current["metadata"]["uid"]:
                return status_response(409, "Conflict", "Precondition failed: UID")
            grace = options.get("gracePeriodSeconds")
            if resource == "core/v1/pods" and grace is None:
                grace = 30
            meta = current["metadata"]
            if grace or meta.get("finalizers"):
                if meta.get("deletionTimestamp") and not grace and not meta.get("finalizers"):
                    return self._remove(key, current)
                if meta.get("deletionTimestamp") and grace == 0 and meta.get("finalizers"):
                    new = {**current, "metadata": {**meta, "deletionGracePeriodSeconds": 0}}
                    return self._store(key, current, new)
                if meta.get("deletionTimestamp"):
                    return json_response(self._public(current))
                new = {
                    **current,
                    "metadata": {
                        **meta,
                        "deletionTimestamp": stamp(wall() + timedelta(seconds=grace or 0)),
                        "deletionGracePeriodSeconds": grace or 0,
                    },
                }
                return self._store(key, current, new)
            return self._remove(key, current)
        if method == "PUT":
            obj = _decoder.decode(body or b"{}")
            sent = obj["metadata"].get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return status_response(409, "Conflict", "the object has been modified")
            obj["metadata"] = {**current["metadata"], **obj["metadata"], "_resource": resource}
            return self._store(key, current, obj)
        if method == "PATCH":
            patch = _decoder.decode(body or b"{}")
            sent = (patch.get("metadata") or {}).get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:
                return status_response(409, "Conflict", "the object has been modified")
            uid = (patch.get("metadata") or {}).get("uid")
            if uid and uid != current["metadata"]["uid"]:
                return status_response(409, "Conflict", "Precondition failed: UID")
            if content_type == "application/strategic-merge-patch+json":
                new = strategic_merge_patch(self._public(current), patch, _KIND[resource])
                new["metadata"]["_resource"] = resource
            else:
                new = _merge(current, patch)
            if sub == "status":
                new = {**current, "status": new.get("status") or {}}
            else:
                new = {**new, "status": current.get("status") or {}} if "status" in current else new
            new["metadata"] = {**new["metadata"], "uid": current["metadata"]["uid"]}
            meta = new["metadata"]
            if meta.get("deletionTimestamp") and current["metadata"].get("finalizers"):
                if not meta.get("finalizers"):  # the last finalizer went: the object goes
                    return self._remove(key, new)
            return self._store(key, current, new)
        return status_response(405, "MethodNotAllowed", method)
