"""A scripted fake apiserver behind the transport seam, for unit tests.

Like ``httpx.MockTransport``: :class:`FakeApiserver` implements
:class:`fleet.kube._seam.Requester`, answers ``request()`` through a handler
the test writes, and answers ``stream()`` (watches) from a queue of
:class:`StreamScript` s: chunks of bytes, errors raised mid-stream, pauses
(time passing on the autojump clock) and :data:`HANG` ("send nothing until
cancelled"). Every call is logged as a :class:`FakeRequest` with the trio
time it arrived, so tests assert on what the client sent and when.

It lives in the package, not under ``tests/``, so every component's tests
(reflector, write queue, shards) script the same seam the same way.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import trio

from fleet.kube._seam import BaseRequester, Response, StreamResponse

__all__ = [
    "HANG",
    "FakeApiserver",
    "FakeRequest",
    "Handler",
    "Hang",
    "Pause",
    "StreamScript",
    "event_line",
    "json_response",
    "status_body",
    "status_response",
]

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class FakeRequest:
    """One call the client made, as the fake saw it."""

    method: str
    path: str
    params: Mapping[str, str]
    body: bytes | None
    content_type: str | None
    headers: Mapping[str, str]
    stream: bool
    """True for ``stream()`` calls (watches)."""
    at: float
    """``trio.current_time()`` when the call arrived."""


class Hang:
    """Stream step: send nothing more, keep the connection open until cancelled."""

    def __repr__(self) -> str:
        return "HANG"


HANG: Final = Hang()


@dataclass(frozen=True, slots=True)
class Pause:
    """Stream step: let ``seconds`` pass (on the test's clock) before the next step."""

    seconds: float


Step = bytes | BaseException | Pause | Hang


@dataclass(frozen=True, slots=True)
class StreamScript:
    """What one ``stream()`` call answers: a status, then the body steps in order.

    When the steps run out the server closes the stream cleanly (a watch's
    normal end). A step that is an exception is raised from ``aiter_bytes``
    at that point (a cut connection is ``ProtocolError``).
    """

    steps: Sequence[Step] = ()
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    """What ``aread()`` returns: the Status of an error answer."""


Handler = Callable[[FakeRequest], Response | Awaitable[Response]]
"""Answers ``request()``; may be async (to block or pass time) and may raise TransportError."""


def _not_found(request: FakeRequest) -> Response:
    return status_response(404, "NotFound", f"no handler for {request.method} {request.path}")


class _FakeStream:
    def __init__(self, script: StreamScript) -> None:
        self.status = script.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in script.headers.items()}
        self._script = script

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        for step in self._script.steps:
            if isinstance(step, bytes):
                await trio.lowlevel.checkpoint()
                yield step
            elif isinstance(step, Pause):
                await trio.sleep(step.seconds)
            elif isinstance(step, Hang):
                await trio.sleep_forever()
            else:
                raise step

    async def aread(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self._script.body


class FakeApiserver(BaseRequester):
    """A :class:`~fleet.kube._seam.Requester` answering from a handler and scripted streams.

    ``streams`` are consumed one per ``stream()`` call, in order; an item that
    is an exception is raised at open (connection refused). When they run out
    a ``stream()`` call hangs until cancelled, so a test ends by cancelling
    its nursery after asserting on :attr:`requests`.
    """

    def __init__(
        self,
        handler: Handler = _not_found,
        streams: Iterable[StreamScript | BaseException] = (),
    ) -> None:
        self.handler = handler
        self.streams: deque[StreamScript | BaseException] = deque(streams)
        self.requests: list[FakeRequest] = []
        self._open_streams = 0

    @property
    def open_streams(self) -> int:
        """Streams currently open (entered and not yet exited)."""
        return self._open_streams

    def add_streams(self, *scripts: StreamScript | BaseException) -> None:
        self.streams.extend(scripts)

    def log(self, *, stream: bool | None = None, path: str | None = None) -> list[FakeRequest]:
        """Logged requests, filtered by kind and path."""
        return [
            r
            for r in self.requests
            if (stream is None or r.stream == stream) and (path is None or r.path == path)
        ]

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
        req = FakeRequest(
            method, path, dict(params or {}), body, content_type, dict(headers or {}),
            stream=False, at=trio.current_time(),
        )  # fmt: skip
        self.requests.append(req)
        answer = self.handler(req)
        if inspect.isawaitable(answer):
            return await answer
        await trio.lowlevel.checkpoint()
        return answer

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[StreamResponse]:  # fmt: skip
        req = FakeRequest(
            method, path, dict(params or {}), None, None, dict(headers or {}),
            stream=True, at=trio.current_time(),
        )  # fmt: skip
        self.requests.append(req)
        if not self.streams:
            await trio.sleep_forever()
        script = self.streams.popleft()
        if isinstance(script, BaseException):
            await trio.lowlevel.checkpoint()
            raise script
        self._open_streams += 1
        try:
            yield _FakeStream(script)
        finally:
            self._open_streams -= 1

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self._stream(method, path, params, headers)


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON answer from any msgspec-encodable object."""
    # The seam promises lower-cased header names.
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    return Response(status=status, content=_encoder.encode(obj), headers=lowered)


def status_response(
    code: int, reason: str, message: str = "", headers: Mapping[str, str] | None = None
) -> Response:
    """An error answer carrying a ``metav1.Status``, as the apiserver sends."""
    return json_response(status_body(code, reason, message), code, headers)


def status_body(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message or reason,
        "reason": reason,
        "code": code,
    }


def event_line(type_: str, obj: Any) -> bytes:
    """One watch line (``{"type":..., "object":...}\\n``)."""
    return _encoder.encode({"type": type_, "object": obj}) + b"\n"
