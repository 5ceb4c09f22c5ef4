"""The transport seam: the one interface every apiserver conversation goes through.

Two implementations sit behind it: the general client on httpx
(``fleet.kube._client``) and the lean hot-path transport on h11
(``fleet.kube._transport``). Unit tests put a scripted fake apiserver behind
the same seam (``fleet.kube._fake``), like ``httpx.MockTransport``. The
reflector and the write queue see only this protocol, so they never know
which one they drive.

A ``Requester`` returns every HTTP answer as a :class:`Response`, error codes
included; turning a non-2xx answer into an :class:`fleet.errors.ApiError` is
the caller's choice (``Response.raise_for_status``). Failures to get an answer
at all raise :class:`fleet.errors.TransportError` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from fleet.errors import api_error_from_status

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


class Requester(Protocol):
    """Send one request to the apiserver. ``path`` is absolute (``/api/v1/pods``)."""

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

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]: ...
