"""The transport seam: the one interface every apiserver conversation goes through.

Two implementations sit behind it: the general client on httpx
(``fleet.kube._client``) and the lean hot-path transport with hand-written
HTTP/1.1 framing (``fleet.kube._transport``). Unit tests put a scripted fake
apiserver (``fleet.kube._fake``) or an in-memory one (``fleet.kube._memapi``)
behind the same seam, like ``httpx.MockTransport``. The reflector, the write
queue and the verb layer (``fleet.kube._rest``) see only this protocol, so
they never know which one they drive.

A :class:`Requester` has three methods: ``request`` (one request, the whole
answer), ``stream`` (a streamed answer: a watch) and ``request_batch`` (many
requests, one answer or transport error each, in order). Implementations
derive from :class:`BaseRequester`, which gives ``request_batch`` its one
default, sending the requests one by one (httpx's ``_transports/base.py``
gives optional behaviour a default the same way); ``HotTransport`` overrides
it with HTTP/1.1 pipelining, and wrappers (``InstrumentedRequester``, the
shards' fence) delegate to the requester they wrap, so a batch stays
pipelined through any stack of them.

A ``Requester`` returns every HTTP answer as a :class:`Response`, error codes
included; turning a non-2xx answer into an :class:`fleet.errors.ApiError` is
the caller's choice (``Response.raise_for_status``). Failures to get an answer
at all raise :class:`fleet.errors.TransportError` subclasses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from fleet.errors import TransportError, api_error_from_status

__all__ = [
    "BaseRequester",
    "BatchRequest",
    "Requester",
    "Response",
    "StreamResponse",
    "error_for",
]

_status_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(frozen=True, slots=True)
class Response:
    """A complete (non-streamed) HTTP answer."""

    status: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Header names lower-cased."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def raise_for_status(self) -> Response:
        """Raise the mapped :class:`ApiError` for a non-2xx answer; return self otherwise."""
        if self.ok:
            return self
        raise error_for(self.status, self.content, self.headers)


def error_for(status: int, content: bytes, headers: Mapping[str, str]) -> Exception:
    """The :class:`ApiError` for an error answer, decoding its ``Status`` body if it has one."""
    try:
        body = _status_decoder.decode(content) if content else {}
    except msgspec.DecodeError:
        body = {"message": content[:200].decode("utf-8", "replace").strip()}
    return api_error_from_status(status, body, retry_after=headers.get("retry-after"))


class StreamResponse(Protocol):
    """A streamed answer (a watch): status and headers first, then the body in chunks."""

    status: int
    headers: Mapping[str, str]

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive, of any size; ends when the server closes the stream."""
        ...

    async def aread(self) -> bytes:
        """The rest of the body at once (for error answers)."""
        ...


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One request of a batch (:meth:`Requester.request_batch`)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    content_type: str | None = None


class Requester(Protocol):
    """Send requests to the apiserver. ``path`` is absolute (``/api/v1/pods``)."""

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
        """Send one request; return the whole answer, error codes included."""
        ...

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        """A streamed answer (a watch), released when the ``async with`` ends."""
        ...

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        """Send ``requests``; one answer or :class:`TransportError` per request, in order.

        A transport error is returned in its request's place, not raised: the
        answers before it stand, and the caller decides what is safe to send
        again. Any other exception (a cancellation, an :class:`InputError`) ends
        the whole batch.
        """
        ...


class BaseRequester(ABC):
    """The base of every :class:`Requester`: ``request`` and ``stream`` to implement,
    ``request_batch`` sending one by one unless overridden (as :class:`HotTransport`
    does, pipelining)."""

    @abstractmethod
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response: ...

    @abstractmethod
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]: ...

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        """One by one through :meth:`request` (see :meth:`Requester.request_batch`)."""
        answers: list[Response | TransportError] = []
        for r in requests:
            try:
                answer: Response | TransportError = await self.request(
                    r.method, r.path, params=r.params, body=r.body, content_type=r.content_type
                )
            except TransportError as exc:
                answer = exc
            answers.append(answer)
        return answers
