"""A :class:`~fleet.kube._seam.Requester` decorator that reports every request to a recorder.

:class:`InstrumentedRequester` wraps any requester (``Client``,
``HotTransport``, ``FakeApiserver``) and, for each call, tells a
:class:`RequestRecorder` the verb, the resource, the HTTP code and the
latency. fleet.kube knows nothing of Prometheus: the recorder is a small
protocol that ``fleet._metrics.FleetMetrics`` implements (layer 3 plugs into
layer 2, never the other way round).

Verbs are named as the apiserver names them in ``apiserver_request_total``
(from the request path's shape, like its ``RequestInfoFactory``):

=========================================  =================
request                                    verb
=========================================  =================
GET on a named object or a subresource     ``GET``
GET on a collection                        ``LIST``
GET with ``watch=true`` (or ``/watch/``)   ``WATCH``
POST / PUT                                 ``POST`` / ``PUT``
PATCH (``application/apply-patch+yaml``)   ``PATCH`` (``APPLY``)
DELETE on an object / on a collection      ``DELETE`` / ``DELETECOLLECTION``
=========================================  =================

The resource is named as kubectl names it, ``<plural>[.<group>][/<subresource>]``:
``pods``, ``pods/status``, ``leases.coordination.k8s.io``,
``nodes.mock.zhizuqiu.cn`` (the Node CRs, not ``nodes``); a path that names no
resource (``/version``, discovery) has resource ``""``. The code is
the HTTP status as text, or ``"error"`` when no answer came (a
:class:`~fleet.errors.TransportError`, or any other exception out of the
wrapped requester). A cancelled request records nothing.

Latency runs from the call to the complete answer; for a stream (a watch) to
its status line and headers, since a watch's life is not a latency.

Watches also report how each one ended, which is what makes its reflector
start the next one: ``"timeout"`` (the server closed it cleanly, as asked by
``timeoutSeconds``), ``"gone"`` (410, as the status or an ERROR event: the
reflector lists again) or ``"error"`` (any other error answer, a cut or silent
stream). A watch cancelled from outside (shutdown, fencing) reports nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Literal, Protocol

import trio

from fleet.errors import Gone, TransportError
from fleet.kube._seam import BaseRequester, BatchRequest, Requester, Response, StreamResponse
from fleet.machinery import APPLY_PATCH

__all__ = [
    "InstrumentedRequester",
    "RequestRecorder",
    "WatchEnd",
    "classify",
]

WatchEnd = Literal["timeout", "gone", "error"]

ERROR_CODE = "error"
"""The code recorded when a request got no HTTP answer."""

# Subresources of a namespace itself (``/api/v1/namespaces/<ns>/status``), as the
# apiserver's RequestInfoFactory tells them apart from ``/namespaces/<ns>/<resource>``.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


class RequestRecorder(Protocol):
    """Where an :class:`InstrumentedRequester` reports. Called synchronously; must not block."""

    def observe_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        """One request answered (``code`` an HTTP status) or failed (``code`` ``"error"``)."""
        ...

    def observe_watch_end(self, resource: str, reason: WatchEnd) -> None:
        """One watch ended for ``reason``; its reflector starts another."""
        ...


def classify(
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    content_type: str | None = None,
) -> tuple[str, str]:
    """The apiserver's ``(verb, resource)`` for a request (see the module's table)."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    group = ""
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        group = parts[1] if len(parts) > 1 else ""
        rest = parts[3:]
    else:
        rest = []  # not a resource path: /version, /healthz, /openapi/v2...
    watch = params is not None and params.get("watch") in ("true", "1")
    if rest[:1] == ["watch"]:  # the deprecated /api/v1/watch/... form
        watch = True
        rest = rest[1:]
    if rest[:1] == ["namespaces"] and len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
        rest = rest[2:]
    verb = method.upper()
    if not rest:
        return verb, ""
    resource = rest[0] + (f".{group}" if group else "") + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if verb == "GET":
        if watch:
            verb = "WATCH"
        elif not named:
            verb = "LIST"
    elif verb == "DELETE" and not named:
        verb = "DELETECOLLECTION"
    elif verb == "PATCH" and content_type is not None and content_type.startswith(APPLY_PATCH):
        verb = "APPLY"
    return verb, resource


class InstrumentedRequester(BaseRequester):
    """Wraps ``inner``; reports each request to ``recorder``. ``clock`` times them (trio's)."""

    def __init__(
        self,
        inner: Requester,
        recorder: RequestRecorder,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.inner = inner
        self._recorder = recorder
        self._clock = clock

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
        verb, resource = classify(method, path, params, content_type)
        start = self._clock()
        try:
            response = await self.inner.request(
                method, path, params=params, body=body, content_type=content_type, headers=headers
            )
        except Exception:
            self._recorder.observe_request(verb, resource, ERROR_CODE, self._clock() - start)
            raise
        self._recorder.observe_request(verb, resource, str(response.status), self._clock() - start)
        return response

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        """``inner``'s ``request_batch`` (pipelined or not, as ``inner`` sends it), each reported.

        Every request of the batch is reported with the whole batch's latency (a
        pipelined answer is complete only when the batch's is read); a transport
        error in a request's place with code ``"error"``, and so is every request
        of a batch that raised.
        """
        start = self._clock()
        try:
            answers = await self.inner.request_batch(requests)
        except Exception:
            took = self._clock() - start
            for r in requests:
                verb, resource = classify(r.method, r.path, r.params, r.content_type)
                self._recorder.observe_request(verb, resource, ERROR_CODE, took)
            raise
        took = self._clock() - start
        for r, answer in zip(requests, answers, strict=True):
            verb, resource = classify(r.method, r.path, r.params, r.content_type)
            code = str(answer.status) if isinstance(answer, Response) else ERROR_CODE
            self._recorder.observe_request(verb, resource, code, took)
        return answers

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
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[StreamResponse]:
        verb, resource = classify(method, path, params)
        recorder = self._recorder
        start = self._clock()
        opened = False
        status = 0
        try:
            async with self.inner.stream(method, path, params=params, headers=headers) as response:
                opened = True
                status = response.status
                recorder.observe_request(verb, resource, str(status), self._clock() - start)
                yield response
        except Exception as exc:
            if not opened:
                recorder.observe_request(verb, resource, ERROR_CODE, self._clock() - start)
            if verb == "WATCH":
                gone = isinstance(exc, Gone) or status == 410
                recorder.observe_watch_end(resource, "gone" if gone else "error")
            raise
        if verb == "WATCH":
            if 200 <= status < 300:
                recorder.observe_watch_end(resource, "timeout")
            else:
                recorder.observe_watch_end(resource, "gone" if status == 410 else "error")
