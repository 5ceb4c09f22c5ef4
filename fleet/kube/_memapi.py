"""One stateful in-memory apiserver behind the transport seam, for unit tests on the autojump clock.

Unlike the scripted :class:`fleet.kube.FakeApiserver` (answers a test writes
for each request), :class:`MemoryApiserver` keeps objects and answers from
what the code under test itself wrote, so a test drives whole loops
(coordinator and election, shard engine, control-plane controllers):

- create (``generateName``; uid, creationTimestamp, ``generation`` for the
  resources that have one; a pod starts ``Pending``, a namespace ``Active``
  with the ``kubernetes`` finalizer), 409 ``AlreadyExists``;
- GET, list (label and field selectors, sorted by namespace/name, one
  resourceVersion for the whole store);
- PUT and PATCH (JSON merge; RFC 6902 JSON patch with ``test``; strategic merge for the built-in kinds, with
  the sandbox's implementation), ``resourceVersion`` and ``uid``
  preconditions (409), ``status`` and ``finalize`` subresources (a write to
  the object keeps its status, a write to ``status`` only changes status),
  generation bumps on spec changes;
- DELETE with DeleteOptions (uid precondition, grace period, ``Foreground``
  / ``Orphan`` propagation as finalizers), finalizers and
  ``deletionTimestamp``, the object going once its last finalizer does;
- ``pods/binding`` and ``pods/eviction``;
- watches: history replayed after the ``resourceVersion`` asked for (``0`` or none:
  an ADDED for each object there now, as kube-apiserver), then
  live; with selectors, an object entering a watch's selection is ADDED to it
  and one leaving it DELETED.

There is deliberately no garbage collection (owner references, namespace
contents): that is a control-plane loop's job. ``graceful_pod_deletion``
chooses between the real apiserver's pod deletion (a grace period, 30 s by
default, during which the kubelet finishes the pod and deletes it with grace
0) and pods going at once (the control-plane tests, which have no kubelet).

Every seam request is logged as a :class:`Call` with the trio time it
arrived (watches as method ``WATCH``); every successful write as a
:class:`Write`; :attr:`MemoryApiserver.fail` answers chosen requests with an
error Response or raises a TransportError; :meth:`MemoryApiserver.client`
gives a separate connection a test can cut (``broken = True``).

It sits next to ``FakeApiserver`` and reuses ``fleet.machinery``'s selector
and strategic merge libraries (the same ones the sandbox serves with). Its
clock is the tests' convention: :attr:`MemoryApiserver.BASE` plus trio time
(:meth:`MemoryApiserver.wall`), timestamps written by
:meth:`MemoryApiserver.stamp`.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NamedTuple

import jsonpatch
import msgspec
import trio

from fleet.errors import ConnectError, InputError
from fleet.kube._fake import json_response, status_response
from fleet.kube._seam import BaseRequester, Response, StreamResponse
from fleet.machinery import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    FieldSelector,
    LabelSelector,
    format_time,
    parse_field_selector,
    parse_label_selector,
    strategic_merge_patch,
)

__all__ = [
    "BASE",
    "Call",
    "Change",
    "MemoryApiserver",
    "MemoryClient",
    "RKey",
    "Write",
    "stamp",
    "wall",
]

BASE = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
"""Wall time at trio time 0 in these tests."""

Obj = dict[str, Any]
RKey = tuple[str, str]
"""(group, plural); the version in a path is not part of an object's identity here."""

_GENERATION = frozenset(
    {
        "deployments",
        "replicasets",
        "daemonsets",
        "statefulsets",
        "jobs",
        "cronjobs",
        "poddisruptionbudgets",
    }
)
_STRATEGIC_KINDS: Mapping[RKey, str] = {
    ("", "pods"): "Pod",
    ("", "nodes"): "Node",
    ("", "events"): "Event",
    ("apps", "deployments"): "Deployment",
    ("apps", "replicasets"): "ReplicaSet",
}

_SUCCESS = {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}

Failer = Callable[[str, str], Response | BaseException | None]
"""``fail(method, path)``: a Response to answer with, an exception to raise, or None to serve."""


def wall() -> datetime:
    """The tests' wall clock: :data:`BASE` plus trio time."""
    return BASE + timedelta(seconds=trio.current_time())


def stamp(moment: datetime | float) -> str:
    """RFC 3339 to the second, as metadata timestamps are written; ``moment`` may be epoch seconds."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(int(moment), UTC)
    return format_time(moment)


def _json_patched(old: Obj, ops: Any) -> Obj:
    """RFC 6902 applied to a copy; a failed ``test`` or a bad path is 422 as kube-apiserver says."""
    try:
        result = jsonpatch.JsonPatch(ops).apply(copy.deepcopy(old))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
        raise _Answer(status_response(422, "Invalid", str(exc))) from exc
    if not isinstance(result, dict):
        raise _Answer(status_response(422, "Invalid", "the patch did not yield an object"))
    result.get("metadata", {}).pop("resourceVersion", None)  # the patch is not a precondition
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; ``target`` is not modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Call(NamedTuple):
    """One seam request as the server saw it (``method`` ``WATCH`` for a stream)."""

    at: float
    method: str
    path: str
    params: Mapping[str, str]
    body: Any
    """The decoded JSON body, or None."""


class Write(NamedTuple):
    """One successful write: the object path and the object as stored (or deleted)."""

    at: float
    method: str
    path: str
    object: Obj


class Change(NamedTuple):
    """One entry of the store's history, which watches replay and fan out."""

    rv: int
    resource: RKey
    type: str
    """ADDED, MODIFIED or DELETED, as a watch without selectors sees it."""
    object: Obj
    before: Obj | None
    """The object before the change (None for ADDED), to tell selections entered and left."""


class _Parsed(NamedTuple):
    resource: RKey
    namespace: str | None
    name: str | None
    sub: str | None


def _parse(path: str) -> _Parsed:
    parts = [p for p in path.split("/") if p]
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    # /namespaces/<ns>/<plural>... is namespaced; /namespaces/<ns>[/status|/finalize] is a Namespace.
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace, rest = rest[1], rest[2:]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return _Parsed((group, rest[0]), namespace, name, sub)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace", ""), meta["name"]


def _held(obj: Obj) -> bool:
    """Whether finalizers hold ``obj`` (a Namespace's ``spec.finalizers`` too)."""
    return bool(obj["metadata"].get("finalizers") or (obj.get("spec") or {}).get("finalizers"))


def _fields(obj: Obj) -> dict[str, str]:
    meta = obj["metadata"]
    return {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "spec.nodeName": (obj.get("spec") or {}).get("nodeName") or "",
        "status.phase": (obj.get("status") or {}).get("phase") or "",
    }


class _Selection(NamedTuple):
    resource: RKey
    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    @classmethod
    def of(cls, parsed: _Parsed, params: Mapping[str, str]) -> _Selection:
        return cls(
            parsed.resource,
            parsed.namespace,
            parse_label_selector(params.get("labelSelector", "")),
            parse_field_selector(params.get("fieldSelector", "")),
        )

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace is not None and meta.get("namespace", "") != self.namespace:
            return False
        if not self.labels.matches(meta.get("labels") or {}):
            return False
        return self.fields.empty or self.fields.matches(_fields(obj))

    def event(self, change: Change) -> bytes | None:
        """The watch line this selection sees for ``change``, if any."""
        if change.resource != self.resource:
            return None
        was = self.matches(change.before)
        now = change.type != "DELETED" and self.matches(change.object)
        if now:
            type_ = "MODIFIED" if was else "ADDED"
        elif was:
            type_ = "DELETED"
        else:
            return None
        return msgspec.json.encode({"type": type_, "object": change.object}) + b"\n"


class _Stream:
    def __init__(self, receive: trio.MemoryReceiveChannel[bytes], end: float = math.inf) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {}
        self._receive = receive
        self._end = end

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            chunk = None
            # The server ends the watch at its timeoutSeconds (no yield inside the scope:
            # this is a generator).
            with trio.move_on_at(self._end):
                try:
                    chunk = await self._receive.receive()
                except trio.EndOfChannel:
                    return
            if chunk is None:
                return
            yield chunk

    async def aread(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""


class _Answer(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _conflict(message: str) -> _Answer:
    return _Answer(status_response(409, "Conflict", message))


class MemoryApiserver(BaseRequester):
    """A :class:`~fleet.kube.Requester` over an in-memory store; see the module docstring."""

    BASE: ClassVar[datetime] = BASE
    """Wall time at trio time 0."""
    wall = staticmethod(wall)
    stamp = staticmethod(stamp)

    def __init__(
        self,
        *,
        graceful_pod_deletion: bool = True,
        pod_grace_seconds: int = 30,
        end_watches: bool = False,
    ) -> None:
        self.graceful_pod_deletion = graceful_pod_deletion
        self.end_watches = end_watches
        """End each watch after its ``timeoutSeconds``, as kube-apiserver does (off: watches
        last until the client goes, which most tests want)."""
        self.pod_grace_seconds = pod_grace_seconds
        self.objects: dict[RKey, dict[tuple[str, str], Obj]] = defaultdict(dict)
        self.rv = 0
        self.history: list[Change] = []
        self.calls: list[Call] = []
        self.writes: list[Write] = []
        self.fail: Failer | None = None
        self.version: Obj | None = None
        """What ``GET /version`` answers (``{"gitVersion": "v1.24.0"}``); None: 404."""
        self._watchers: list[tuple[_Selection, trio.MemorySendChannel[bytes]]] = []
        self._ids = itertools.count(1)

    # -- helpers for tests (not logged as calls) ---------------------------------------------

    def now(self) -> float:
        """Wall-clock epoch seconds (:func:`wall`), for controllers' ``wall_clock``."""
        return wall().timestamp()

    def client(self) -> MemoryClient:
        """A separate connection to this server, which a test can cut."""
        return MemoryClient(self)

    def create(self, path: str, obj: Obj) -> Obj:
        """POST ``obj`` to the collection ``path``; without a namespace in it, the object's own."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        if _parse(path).namespace is None and namespace:
            head, _, plural = path.rstrip("/").rpartition("/")
            path = f"{head}/namespaces/{namespace}/{plural}"
        return self._ok(self._serve("POST", path, {}, obj, None))

    def get(self, path: str) -> Obj | None:
        """A copy of the object at ``path``, or None."""
        parsed = _parse(path)
        assert parsed.name is not None, path
        found = self.objects[parsed.resource].get((parsed.namespace or "", parsed.name))
        return copy.deepcopy(found)

    def items(self, path: str) -> list[Obj]:
        """Copies of the objects of a collection (all namespaces without one in ``path``)."""
        parsed = _parse(path)
        return [copy.deepcopy(o) for o in self._list(_Selection.of(parsed, {}))]

    def patch(self, path: str, patch: Obj) -> Obj:
        """A JSON merge PATCH, as a client would send it."""
        response = self._serve("PATCH", path, {}, patch, MERGE_PATCH)
        assert response.ok, response.content
        result: Obj = msgspec.json.decode(response.content)
        return result

    def update(self, path: str, obj: Obj) -> Obj:
        """Replace an object (in the collection ``path``) as stored, status included, unconditionally."""
        parsed = _parse(path)
        namespace = parsed.namespace or obj["metadata"].get("namespace", "")
        old = self.objects[parsed.resource][(namespace, obj["metadata"]["name"])]
        return self._ok(self._commit(parsed.resource, copy.deepcopy(obj), old))

    def delete(self, path: str, grace: int | None = None) -> None:
        """DELETE as a client would, with a grace period if given."""
        body = None if grace is None else {"gracePeriodSeconds": grace}
        response = self._serve("DELETE", path, {}, body, None)
        assert response.ok, response.content

    def remove(self, path: str) -> None:
        """Remove the object at ``path`` at once, finalizers or not."""
        parsed = _parse(path)
        assert parsed.name is not None, path
        self._remove(
            parsed.resource, self.objects[parsed.resource][(parsed.namespace or "", parsed.name)]
        )

    def log(
        self, method: str | None = None, prefix: str = "", *, containing: str = ""
    ) -> list[Call]:
        """Logged seam calls of ``method`` whose path starts with ``prefix`` and contains ``containing``."""
        return [
            c
            for c in self.calls
            if (method is None or c.method == method)
            and c.path.startswith(prefix)
            and containing in c.path
        ]

    # -- the seam ------------------------------------------------------------------------------

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
        decoded = msgspec.json.decode(body) if body else None
        self.calls.append(Call(trio.current_time(), method, path, dict(params or {}), decoded))
        if self.fail is not None:
            answer = self.fail(method, path)
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer
        if path == "/version":
            if self.version is None:
                return status_response(404, "NotFound", "the server could not find /version")
            return json_response(self.version)
        return self._serve(method, path, dict(params or {}), decoded, content_type)

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
        selection = _Selection.of(_parse(path), params)
        send, receive = trio.open_memory_channel[bytes](1_000_000)
        since = int(params.get("resourceVersion") or 0)
        if since:
            for change in self.history:
                if change.rv > since and (line := selection.event(change)) is not None:
                    send.send_nowait(line)
        else:
            # "0" or none: kube-apiserver starts the watch with a synthetic ADDED for each
            # object there now (the store's resourceVersion is 0 only while it is empty: a
            # list of nothing, then a create, then a watch from "0" lost the create).
            for obj in self._list(selection):
                send.send_nowait(msgspec.json.encode({"type": "ADDED", "object": obj}) + b"\n")
        entry = (selection, send)
        self._watchers.append(entry)
        try:
            timeout = params.get("timeoutSeconds")
            end = trio.current_time() + float(timeout) if self.end_watches and timeout else math.inf
            yield _Stream(receive, end)
        finally:
            self._watchers.remove(entry)
            send.close()

    # -- the server ----------------------------------------------------------------------------

    def _ok(self, response: Response) -> Obj:
        assert response.ok, response.content
        result: Obj = msgspec.json.decode(response.content)
        return result

    def _serve(
        self, method: str, path: str, params: Mapping[str, str], body: Any, content_type: str | None
    ) -> Response:
        try:
            response = self._handle(
                method, path, params, body if body is not None else {}, content_type
            )
        except _Answer as answer:
            return answer.response
        if method != "GET" and response.ok:
            obj = msgspec.json.decode(response.content)
            if method == "POST" and _parse(path).name is None:
                path = f"{path.rstrip('/')}/{obj['metadata']['name']}"
            self.writes.append(Write(trio.current_time(), method, path, obj))
        return response

    def _list(self, selection: _Selection) -> list[Obj]:
        found = self.objects[selection.resource]
        return [found[key] for key in sorted(found) if selection.matches(found[key])]

    def _lookup(self, parsed: _Parsed) -> Obj:
        assert parsed.name is not None
        obj = self.objects[parsed.resource].get((parsed.namespace or "", parsed.name))
        if obj is None:
            raise _Answer(
                status_response(404, "NotFound", f'{parsed.resource[1]} "{parsed.name}" not found')
            )
        return obj

    def _handle(
        self, method: str, path: str, params: Mapping[str, str], body: Any, content_type: str | None
    ) -> Response:
        parsed = _parse(path)
        rkey = parsed.resource
        if parsed.name is None:
            if method == "GET":
                try:
                    selection = _Selection.of(parsed, params)
                except InputError as exc:
                    return status_response(400, "BadRequest", str(exc))
                items = self._list(selection)
                return json_response(
                    {"metadata": {"resourceVersion": str(self.rv)}, "items": items}
                )
            if method == "POST":
                return self._create(rkey, parsed.namespace, body)
            return status_response(405, "MethodNotAllowed", method)
        old = self._lookup(parsed)
        if method == "GET":
            return json_response(old)
        if method == "POST" and parsed.sub == "binding":
            if (old.get("spec") or {}).get("nodeName"):
                raise _conflict(f"pod {parsed.name} is already assigned")
            new = copy.deepcopy(old)
            new["spec"]["nodeName"] = body["target"]["name"]
            conditions = [
                c for c in new.setdefault("status", {}).get("conditions") or []
                if c["type"] != "PodScheduled"
            ]  # fmt: skip
            new["status"]["conditions"] = [*conditions, {"type": "PodScheduled", "status": "True"}]
            self._commit(rkey, new, old)
            return json_response(_SUCCESS, 201)
        if method == "POST" and parsed.sub == "eviction":
            self._delete(rkey, old, body.get("deleteOptions") or {})
            return json_response(_SUCCESS, 201)
        if method == "PATCH" and content_type == JSON_PATCH:
            body = _json_patched(old, body)
        if method in ("PUT", "PATCH"):
            meta = body.get("metadata") or {}
            if (
                meta.get("resourceVersion")
                and meta["resourceVersion"] != old["metadata"]["resourceVersion"]
            ):
                raise _conflict("the object has been modified")
            if method == "PATCH" and meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
                raise _conflict("Precondition failed: UID")
            new = self._apply(rkey, old, body, method, content_type)
            if parsed.sub == "status":
                new = {**copy.deepcopy(old), "status": new.get("status") or {}}
            elif parsed.sub == "finalize":
                new = {**copy.deepcopy(old), "spec": new.get("spec") or {}}
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            new.setdefault("metadata", {})
            return self._commit(rkey, new, old)
        if method == "DELETE":
            return self._delete(rkey, old, body)
        return status_response(405, "MethodNotAllowed", method)

    @staticmethod
    def _apply(rkey: RKey, old: Obj, body: Any, method: str, content_type: str | None) -> Obj:
        if method == "PUT" or content_type == JSON_PATCH:  # a JSON patch is applied already
            return copy.deepcopy(body)
        if content_type != STRATEGIC_MERGE_PATCH:
            result: Obj = merge_patch(copy.deepcopy(old), body)
            return result
        kind = _STRATEGIC_KINDS.get(rkey)
        if kind is None:
            raise _Answer(status_response(415, "UnsupportedMediaType", f"no strategy for {rkey}"))
        try:
            return strategic_merge_patch(old, body, kind)
        except InputError as exc:
            raise _Answer(status_response(422, "Invalid", str(exc))) from exc

    # -- the store -----------------------------------------------------------------------------

    def _record(self, type_: str, rkey: RKey, obj: Obj, before: Obj | None) -> None:
        change = Change(self.rv, rkey, type_, obj, before)
        self.history.append(change)
        for selection, send in list(self._watchers):
            line = selection.event(change)
            if line is None:
                continue
            try:
                send.send_nowait(line)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                send.close()

    def _stamp(self, obj: Obj) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def _create(self, rkey: RKey, namespace: str | None, body: Obj) -> Response:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._ids):05x}"
        if namespace:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if _key(obj) in self.objects[rkey]:
            return status_response(
                409, "AlreadyExists", f'{rkey[1]} "{meta["name"]}" already exists'
            )
        meta["uid"] = f"uid-{next(self._ids)}"
        meta["creationTimestamp"] = meta.get("creationTimestamp") or stamp(wall())
        if rkey[1] in _GENERATION:
            meta["generation"] = 1
        if rkey == ("", "pods"):
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        if rkey == ("", "namespaces"):
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {})["phase"] = "Active"
        self._stamp(obj)
        self.objects[rkey][_key(obj)] = obj
        self._record("ADDED", rkey, obj, None)
        return json_response(obj, 201)

    def _commit(self, rkey: RKey, new: Obj, old: Obj) -> Response:
        """Store ``new`` in place of ``old`` (system metadata kept); gone if its last finalizer went."""
        meta, was = new["metadata"], old["metadata"]
        for name in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if name in was:
                meta[name] = was[name]
        if rkey[1] in _GENERATION and new.get("spec") != old.get("spec"):
            meta["generation"] = int(was.get("generation", 1)) + 1
        elif "generation" in was:
            meta["generation"] = was["generation"]
        if meta.get("deletionTimestamp") and _held(old) and not _held(new):
            return self._remove(rkey, new)  # the last finalizer went: the object goes
        self._stamp(new)
        self.objects[rkey][_key(new)] = new
        self._record("MODIFIED", rkey, new, old)
        return json_response(new)

    def _remove(self, rkey: RKey, obj: Obj) -> Response:
        before = self.objects[rkey].pop(_key(obj), obj)
        gone = copy.deepcopy(obj)
        self._stamp(gone)
        self._record("DELETED", rkey, gone, before)
        return json_response(gone)

    def _delete(self, rkey: RKey, old: Obj, options: Obj) -> Response:
        meta = old["metadata"]
        uid = (options.get("preconditions") or {}).get("uid")
        if uid and uid != meta["uid"]:
            raise _conflict("Precondition failed: UID in precondition does not match")
        finalizers = list(meta.get("finalizers") or [])
        policy = options.get("propagationPolicy")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        grace = options.get("gracePeriodSeconds")
        if rkey != ("", "pods") or not self.graceful_pod_deletion:
            grace = 0
        elif grace is None:
            grace = self.pod_grace_seconds
        new = copy.deepcopy(old)
        new["metadata"]["finalizers"] = finalizers
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
        if meta.get("deletionTimestamp"):  # already going
            if finalizers != list(meta.get("finalizers") or []):
                return self._commit(rkey, new, old)
            if grace == 0 and not finalizers and rkey != ("", "namespaces"):
                return self._remove(rkey, old)
            if grace == 0 and meta.get("deletionGracePeriodSeconds"):
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(rkey, new, old)
            return json_response(old)
        if not grace and not finalizers and rkey != ("", "namespaces"):
            return self._remove(rkey, old)
        new["metadata"]["deletionTimestamp"] = stamp(wall() + timedelta(seconds=grace))
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        if rkey == ("", "namespaces"):
            new.setdefault("status", {})["phase"] = "Terminating"
        self._stamp(new)
        self.objects[rkey][_key(new)] = new
        self._record("MODIFIED", rkey, new, old)
        return json_response(new)


class MemoryClient(BaseRequester):
    """One process' connection to a :class:`MemoryApiserver`; ``broken`` refuses every call."""

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
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise ConnectError("connection refused (test)")
        return await self.server.request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._stream(method, path, params, headers)

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[StreamResponse]:  # fmt: skip
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise ConnectError("connection refused (test)")
        async with self.server.stream(method, path, params=params, headers=headers) as response:
            yield response
