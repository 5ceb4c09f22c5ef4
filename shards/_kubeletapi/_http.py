"""The kubelet API's HTTP/1.1 over TLS: connections, requests, answers, upgrades (h11 on trio).

Small on purpose, like ``fleet.kube._transport`` frames its own requests: the kubelet API
sees few requests (the apiserver's proxy, metrics-server's scrapes), but needs what a
framework hides — the client certificate of the TLS session (who is asking), answers
streamed for as long as a ``logs -f`` follows, and the raw stream after a 101 (exec,
attach and port-forward upgrade to WebSocket or SPDY). The apiserver speaks HTTP/1.1 to a
kubelet when the kubelet offers no ``h2`` by ALPN, as here.

A handler gets a :class:`Request` and returns a :class:`Reply` (whole body), a
:class:`Streamed` (chunked, each chunk sent as it comes) or an :class:`Upgrade` (101, then
the handler owns the stream). Connections are kept alive between requests
(``IDLE_TIMEOUT``); request bodies are read and dropped (no kubelet endpoint served here
takes one) up to ``MAX_BODY_BYTES``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

__all__ = ["Handler", "Reply", "Request", "Streamed", "Upgrade", "serve_connection"]

log = logging.getLogger("shards.kubeletapi")

IDLE_TIMEOUT = 90.0
"""Seconds a kept-alive connection may wait for its next request (Go's http.Transport
closes its idle ones after 90 s; a server that waits as long never cuts one mid-reuse)."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds for the TLS handshake and the request head (Go's net/http TLSHandshakeTimeout)."""
MAX_BODY_BYTES = 64 * 1024
"""A request body larger than this is refused (413): no endpoint here takes one."""
_RECEIVE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    """Percent-decoded path."""
    query: list[tuple[str, str]]
    """Every query parameter in order (``command`` repeats for exec)."""
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ``,``."""
    user: str | None
    """Common name of the verified client certificate; None without one."""
    groups: tuple[str, ...] = ()
    """Organizations of the verified client certificate."""
    local: str = ""
    """The server address the client connected to: the node's own, when each node has one
    (``_addresses``)."""

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter."""
        value = default
        for key, v in self.query:
            if key == name:
                value = v
        return value

    def args(self) -> dict[str, str]:
        return dict(self.query)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class Streamed:
    """A body sent chunk by chunk (chunked transfer encoding), each as soon as it comes."""

    chunks: Callable[[], AsyncIterator[bytes]]
    content_type: str = "text/plain"
    status: int = 200


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Answer 101 with ``headers``, then hand the stream (and bytes already read) to ``run``."""

    run: Callable[[trio.abc.Stream, bytes], Awaitable[None]]
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)


Handler = Callable[[Request], Awaitable[Reply | Streamed | Upgrade]]


def _identity(stream: trio.SSLStream[trio.SocketStream]) -> tuple[str | None, tuple[str, ...]]:
    cert = stream.getpeercert()
    if not cert:
        return None, ()
    cn: str | None = None
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                groups.append(value)
    return cn, tuple(groups)


def _request(
    event: h11.Request, user: str | None, groups: tuple[str, ...], local: str = ""
) -> Request:
    target = urlsplit(event.target.decode("latin-1"))
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return Request(
        method=event.method.decode("ascii"),
        path=unquote(target.path),
        query=parse_qsl(target.query, keep_blank_values=True),
        headers=headers,
        user=user,
        groups=groups,
        local=local,
    )


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(_RECEIVE)))


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _answer(conn: h11.Connection, stream: trio.abc.Stream, reply: Reply) -> None:
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        *reply.headers,
    ]
    # One write for head and body: one TLS record and one send instead of three (the
    # scrape's answers are a few KB each, 10,000 of them a round).
    head = conn.send(h11.Response(status_code=reply.status, headers=headers)) or b""
    body = conn.send(h11.Data(data=reply.body)) or b""
    end = conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(head + body + end)


def _local_address(raw: trio.SocketStream) -> str:
    """The address the client dialed (empty when the socket cannot say)."""
    try:
        return str(raw.socket.getsockname()[0])
    except (OSError, IndexError, TypeError):
        return ""


async def serve_connection(
    raw: trio.SocketStream, context: ssl.SSLContext, handler: Handler
) -> None:
    """One client connection: TLS, then requests until it closes or idles out."""
    stream = trio.SSLStream(raw, context, server_side=True)
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
            await stream.do_handshake()
        if scope.cancelled_caught:
            return
        user, groups = _identity(stream)
        local = _local_address(raw)
        conn = h11.Connection(h11.SERVER)
        while True:
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                event = await _next_event(conn, stream)
            if idle.cancelled_caught or not isinstance(event, h11.Request):
                return
            size = 0
            while True:
                more = await _next_event(conn, stream)
                if isinstance(more, h11.Data):
                    size += len(more.data)
                elif more is h11.PAUSED or isinstance(
                    more, h11.EndOfMessage | h11.ConnectionClosed
                ):
                    break
            request = _request(event, user, groups, local)
            if size > MAX_BODY_BYTES:
                await _answer(conn, stream, Reply(413, b"request body too large\n"))
                return
            try:
                reply = await handler(request)
            except Exception:
                log.exception("kubelet API: %s %s failed", request.method, request.path)
                reply = Reply(500, b"Internal Server Error\n")
            if isinstance(reply, Upgrade):
                await _send(
                    conn,
                    stream,
                    h11.InformationalResponse(status_code=101, headers=list(reply.headers)),
                )
                trailing, _closed = conn.trailing_data
                await reply.run(stream, bytes(trailing))
                return
            if isinstance(reply, Streamed):
                await _send(
                    conn,
                    stream,
                    h11.Response(
                        status_code=reply.status,
                        headers=[
                            ("content-type", reply.content_type),
                            ("transfer-encoding", "chunked"),
                        ],
                    ),
                )
                async for chunk in reply.chunks():
                    if chunk:
                        await _send(conn, stream, h11.Data(data=chunk))
                await _send(conn, stream, h11.EndOfMessage())
            else:
                await _answer(conn, stream, reply)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, ssl.SSLError):
        return
    except OSError:
        return
    finally:
        await trio.aclose_forcefully(stream)
