"""An in-memory apiserver behind the transport seam, for control-plane unit tests.

Unlike the scripted :class:`fleet.kube._fake.FakeApiserver`, this one keeps
objects and answers watches from what the controllers themselves write, so a
test drives whole reconcile loops on the autojump clock. It does what the
loops rely on and no more: list (label selectors), watch from a
resourceVersion, create (``generateName``), PUT and merge PATCH (``status``
subresource, ``resourceVersion`` preconditions, generation bumps), DELETE
(uid precondition, finalizers, ``Foreground``/``Orphan`` finalizers, pods
at once), ``pods/binding``, ``pods/eviction`` and ``namespaces/finalize``.
There is deliberately no garbage collection inside: that is a loop's job.
"""

from __future__ import annotations

import copy
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio

from fleet.kube._fake import json_response, status_response
from fleet.kube._seam import Response, StreamResponse
from fleet.sandbox._selectors import parse_label_selector

EPOCH = 1_700_000_000.0
Obj = dict[str, Any]
RKey = tuple[str, str]  # (group, plural)
_CLUSTER_SCOPED = {"nodes", "namespaces"}
_GENERATION = {"deployments", "replicasets"}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def rfc(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Stream:
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self._receive = receive

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._receive:
            yield chunk

    async def aread(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""


class MemApi:
    """Objects by (group, plural) then (namespace, name); every change is a watch event."""

    def __init__(self) -> None:
        self.objects: dict[RKey, dict[tuple[str, str], Obj]] = defaultdict(dict)
        self.rv = 0
        self.history: list[tuple[int, RKey, str, Obj]] = []
        self._watchers: list[tuple[RKey, str | None, Any, trio.MemorySendChannel[bytes]]] = []
        self.log: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self.fail: Callable[[str, str], Response | None] | None = None
        """Hook: return a Response to answer a (method, path) with it instead."""

    # -- helpers for tests ----------------------------------------------------------------
    def now(self) -> float:
        return EPOCH + trio.current_time()

    def put(self, group: str, plural: str, obj: Obj) -> Obj:
        """Create an object directly (as a test's setup)."""
        return self._create((group, plural), obj.get("metadata", {}).get("namespace", ""), obj)

    def get(self, group: str, plural: str, namespace: str, name: str) -> Obj | None:
        return copy.deepcopy(self.objects[(group, plural)].get((namespace, name)))

    def items(self, group: str, plural: str, namespace: str | None = None) -> list[Obj]:
        return [copy.deepcopy(o) for (ns, _), o in sorted(self.objects[(group, plural)].items())
                if namespace is None or ns == namespace]

    def update(self, group: str, plural: str, obj: Obj) -> Obj:
        """Replace an object directly (as a kubelet or a user would)."""
        meta = obj["metadata"]
        old = self.objects[(group, plural)][(meta.get("namespace", ""), meta["name"])]
        return self._commit((group, plural), copy.deepcopy(obj), old)

    def remove(self, group: str, plural: str, namespace: str, name: str) -> None:
        old = self.objects[(group, plural)][(namespace, name)]
        self._remove((group, plural), old)

    def requests_to(self, method: str, fragment: str) -> list[str]:
        return [p for m, p in self.log if m == method and fragment in p]

    # -- the store --------------------------------------------------------------------------
    def _emit(self, rkey: RKey, kind: str, obj: Obj) -> None:
        self.history.append((self.rv, rkey, kind, obj))
        for wkey, ns, selector, send in list(self._watchers):
            if wkey == rkey and self._selected(obj, ns, selector):
                try:
                    send.send_nowait(msgspec.json.encode({"type": kind, "object": obj}) + b"\n")
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    send.close()

    @staticmethod
    def _selected(obj: Obj, ns: str | None, selector: Any) -> bool:
        meta = obj["metadata"]
        if ns is not None and meta.get("namespace", "") != ns:
            return False
        return selector is None or selector.matches(meta.get("labels") or {})

    def _create(self, rkey: RKey, ns: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._ids):05x}"
        if rkey[1] not in _CLUSTER_SCOPED:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        key = (meta.get("namespace", ""), meta["name"])
        if key in self.objects[rkey]:
            raise _Answer(status_response(409, "AlreadyExists", f'{rkey[1]} "{meta["name"]}" already exists'))
        meta["uid"] = f"uid-{next(self._ids)}"
        meta["creationTimestamp"] = datetime.fromtimestamp(int(self.now()), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if rkey[1] in _GENERATION:
            meta["generation"] = 1
        if rkey[1] == "pods":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        if rkey[1] == "namespaces":
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {})["phase"] = "Active"
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[rkey][key] = obj
        self._emit(rkey, "ADDED", obj)
        return obj

    def _commit(self, rkey: RKey, new: Obj, old: Obj) -> Obj:
        meta = new["metadata"]
        for field in ("uid", "creationTimestamp", "name", "namespace"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        if rkey[1] in _GENERATION and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        elif "generation" in old["metadata"]:
            meta["generation"] = old["metadata"]["generation"]
        if old["metadata"].get("deletionTimestamp"):
            meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
            rkey[1] == "namespaces" and (new.get("spec") or {}).get("finalizers")
        ):
            self._remove(rkey, new)
            return new
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[rkey][(meta.get("namespace", ""), meta["name"])] = new
        self._emit(rkey, "MODIFIED", new)
        return new

    def _remove(self, rkey: RKey, obj: Obj) -> None:
        meta = obj["metadata"]
        self.objects[rkey].pop((meta.get("namespace", ""), meta["name"]), None)
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(rkey, "DELETED", obj)

    def _delete(self, rkey: RKey, old: Obj, opts: Obj) -> Obj:
        pre = (opts.get("preconditions") or {}).get("uid")
        if pre and pre != old["metadata"]["uid"]:
            raise _Answer(status_response(409, "Conflict", "the UID in the precondition does not match"))
        new = copy.deepcopy(old)
        meta = new["metadata"]
        fins = list(meta.get("finalizers") or [])
        policy = opts.get("propagationPolicy")
        if policy == "Foreground" and "foregroundDeletion" not in fins:
            fins.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in fins:
            fins.append("orphan")
        if fins or rkey[1] == "namespaces":
            if fins:
                meta["finalizers"] = fins
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = datetime.fromtimestamp(int(self.now()), UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
                if rkey[1] == "namespaces":
                    new.setdefault("status", {})["phase"] = "Terminating"
                self.rv += 1
                meta["resourceVersion"] = str(self.rv)
                self.objects[rkey][(meta.get("namespace", ""), meta["name"])] = new
                self._emit(rkey, "MODIFIED", new)
                return new
            return self._commit(rkey, new, old)
        self._remove(rkey, old)
        return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    # -- the seam -----------------------------------------------------------------------------
    @staticmethod
    def _parse(path: str) -> tuple[RKey, str | None, str | None, str | None]:
        parts = [p for p in path.split("/") if p]
        if parts[0] == "api":
            group, rest = "", parts[2:]
        else:
            group, rest = parts[1], parts[3:]
        ns = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            ns, rest = rest[1], rest[2:]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return (group, rest[0]), ns, name, sub

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: bytes | None = None, content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:  # fmt: skip
        await trio.lowlevel.checkpoint()
        self.log.append((method, path))
        if self.fail is not None and (answer := self.fail(method, path)) is not None:
            return answer
        try:
            return self._handle(method, path, dict(params or {}), msgspec.json.decode(body) if body else {})
        except _Answer as exc:
            return exc.response

    def _lookup(self, rkey: RKey, ns: str | None, name: str) -> Obj:
        obj = self.objects[rkey].get((ns or "", name))
        if obj is None:
            raise _Answer(status_response(404, "NotFound", f'{rkey[1]} "{name}" not found'))
        return obj

    def _handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Response:
        rkey, ns, name, sub = self._parse(path)
        if method == "GET" and name is None:
            selector = parse_label_selector(params.get("labelSelector", ""))
            items = [o for o in self.objects[rkey].values() if self._selected(o, ns, selector)]
            return json_response({"metadata": {"resourceVersion": str(self.rv)}, "items": items})
        if method == "GET":
            assert name is not None
            return json_response(self._lookup(rkey, ns, name))
        if method == "POST" and name is None:
            return json_response(self._create(rkey, ns or "", body), 201)
        assert name is not None
        old = self._lookup(rkey, ns, name)
        if method == "POST" and sub == "binding":
            if (old.get("spec") or {}).get("nodeName"):
                raise _Answer(status_response(409, "Conflict", f"pod {name} is already assigned"))
            new = copy.deepcopy(old)
            new["spec"]["nodeName"] = body["target"]["name"]
            conds = [c for c in new.setdefault("status", {}).get("conditions") or [] if c["type"] != "PodScheduled"]
            new["status"]["conditions"] = [*conds, {"type": "PodScheduled", "status": "True"}]
            self._commit(rkey, new, old)
            return json_response({"kind": "Status", "status": "Success", "code": 201}, 201)
        if method == "POST" and sub == "eviction":
            self._delete(rkey, old, body.get("deleteOptions") or {})
            return json_response({"kind": "Status", "status": "Success", "code": 201}, 201)
        if method in ("PUT", "PATCH"):
            if method == "PUT":
                new = copy.deepcopy(body)
            else:
                new = merge_patch(old, body)
            want_rv = (body.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != old["metadata"]["resourceVersion"]:
                raise _Answer(status_response(409, "Conflict", "the object has been modified"))
            if sub == "status":
                new = {**copy.deepcopy(old), "status": new.get("status", {})}
            elif sub == "finalize":
                new = {**copy.deepcopy(old), "spec": new.get("spec", {})}
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            new.setdefault("metadata", {})
            return json_response(self._commit(rkey, new, old))
        if method == "DELETE":
            return json_response(self._delete(rkey, old, body))
        return status_response(405, "MethodNotAllowed", method)

    @asynccontextmanager
    async def _stream(self, path: str, params: Mapping[str, str]) -> AsyncIterator[StreamResponse]:
        rkey, ns, _name, _sub = self._parse(path)
        selector = parse_label_selector(params.get("labelSelector", ""))
        send, receive = trio.open_memory_channel[bytes](100_000)
        since = int(params.get("resourceVersion") or 0)
        for rv, hkey, kind, obj in self.history:
            if rv > since and hkey == rkey and self._selected(obj, ns, selector):
                send.send_nowait(msgspec.json.encode({"type": kind, "object": obj}) + b"\n")
        entry = (rkey, ns, selector, send)
        self._watchers.append(entry)
        await trio.lowlevel.checkpoint()
        try:
            yield _Stream(receive)
        finally:
            self._watchers.remove(entry)

    def stream(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:  # fmt: skip
        self.log.append((method, path + "?watch"))
        return self._stream(path, dict(params or {}))


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response
