"""The kubelet API's HTTP/1.1 over TLS: connections, requests, answers, upgrades (on trio).

Small on purpose, like ``fleet.kube._transport`` frames its own requests: the kubelet API
sees few kinds of request (the apiserver's proxy, metrics-server's scrapes), but needs what
a framework hides — the client certificate of the TLS session (who is asking), answers
streamed for as long as a ``logs -f`` follows, and the raw stream after a 101 (exec,
attach and port-forward upgrade to WebSocket or SPDY). The apiserver speaks HTTP/1.1 to a
kubelet when the kubelet offers no ``h2`` by ALPN, as here.

HTTP/1.1 is framed here by hand, not with h11: metrics-server's scrape is 10,000 requests a
round on one shard, and h11's event machinery was a third of a request's CPU (heads and
bodies parsed and validated in Python, per request; docs/performance.md). What is read:
the request line and headers (``MAX_HEAD_BYTES``, else 431), a body by ``Content-Length``
or chunked, read and dropped (no kubelet endpoint served here takes one;
``MAX_BODY_BYTES``, else 413); anything else malformed is 400 and the connection closed.
Requests may come back to back (pipelined) on a kept-alive connection (``IDLE_TIMEOUT``);
``Connection: close`` and HTTP/1.0 close it after the answer.

A handler gets a :class:`Request` and returns a :class:`Reply` (whole body; a ``HEAD`` gets
its head only), a :class:`Streamed` (chunked, each chunk sent as it comes) or an
:class:`Upgrade` (101, then the handler owns the stream and the bytes already read).
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

__all__ = ["Handler", "Reply", "Request", "Streamed", "TlsStream", "Upgrade", "serve_connection"]

log = logging.getLogger("shards.kubeletapi")

IDLE_TIMEOUT = 90.0
"""Seconds a kept-alive connection may wait for its next request (Go's http.Transport
closes its idle ones after 90 s; a server that waits as long never cuts one mid-reuse)."""
HANDSHAKE_TIMEOUT = 10.0
"""Seconds for the TLS handshake and the request head (Go's net/http TLSHandshakeTimeout)."""
MAX_BODY_BYTES = 64 * 1024
"""A request body larger than this is refused (413): no endpoint here takes one."""
MAX_HEAD_BYTES = 64 * 1024
"""A request line and headers larger than this are refused (431); an apiserver's proxied
request, its impersonation headers included, is a few KB."""
CLOSE_TIMEOUT = 1.0
"""Seconds to send our ``close_notify`` before the socket is closed regardless."""
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


class TlsStream(trio.abc.Stream):
    """TLS over a socket stream: an ``ssl.SSLObject`` over memory BIOs, driven by hand.

    What ``trio.SSLStream`` does, for a server that needs less of it: TLS 1.2/1.3 with no
    renegotiation, one reader at a time. trio's general stream (conflict detectors, locks
    and retry loops around every read and write) was half of a scraped request's CPU once
    h11 was gone; here a request is one ``read`` of the memory BIO and one ``write``
    flushed to the socket. Ciphertext leaves in the order it was made: whoever holds the
    send lock sends everything pending. A peer that closes without ``close_notify`` ends
    the stream (``b""``), as ``trio.SSLStream(https_compatible=True)`` does.
    """

    def __init__(self, transport: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._send_lock = trio.StrictFIFOLock()
        self._closed = False

    def getpeercert(self) -> dict[str, Any] | None:
        return self._tls.getpeercert()

    async def _flush(self) -> None:
        async with self._send_lock:
            while self._outgoing.pending:
                await self.transport.send_all(self._outgoing.read())

    async def _fill(self) -> None:
        """More ciphertext from the peer (EOF passed on to the TLS session)."""
        data = await self.transport.receive_some(_RECEIVE)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    async def do_handshake(self) -> None:
        try:
            while True:
                try:
                    self._tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._fill()
            await self._flush()
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(exc) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        while True:
            try:
                data = self._tls.read(max_bytes or _RECEIVE)
            except ssl.SSLWantReadError:
                if self._outgoing.pending:  # e.g. a KeyUpdate's answer
                    await self._flush()
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # close_notify, or a peer gone without one
            except ssl.SSLError as exc:
                raise trio.BrokenResourceError(exc) from exc
            if self._outgoing.pending:
                await self._flush()
            return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the TLS stream is closed")
        try:
            self._tls.write(data)  # into memory: all of it, at once
        except ssl.SSLError as exc:
            raise trio.BrokenResourceError(exc) from exc
        await self._flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(ssl.SSLError):  # no wait for the peer's close_notify
                self._tls.unwrap()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await self.transport.aclose()


def _identity(stream: TlsStream) -> tuple[str | None, tuple[str, ...]]:
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
    method: str,
    target: str,
    headers: dict[str, str],
    user: str | None,
    groups: tuple[str, ...],
    local: str = "",
) -> Request:
    if "?" not in target and "%" not in target and target.startswith("/"):
        path, query = target, []  # the scrape's form: no parsing to do
    else:
        split = urlsplit(target)
        path, query = unquote(split.path), parse_qsl(split.query, keep_blank_values=True)
    return Request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        user=user,
        groups=groups,
        local=local,
    )


class _BadRequest(Exception):
    """A request this server will not read: answered ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Reader:
    """The bytes of one connection, read as requests: heads and bodies (RFC 9112)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _more(self) -> bool:
        data = await self.stream.receive_some(_RECEIVE)
        if not data:
            return False
        self.buffer += data
        return True

    async def head(self) -> tuple[str, str, str, dict[str, str]] | None:
        """(method, target, version, headers) of the next request; None when the client
        closed between requests."""
        start = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n", start)
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _BadRequest(431, "request header fields too large")
            start = max(len(self.buffer) - 3, 0)
            if not await self._more():
                if self.buffer.strip():
                    raise _BadRequest(400, "incomplete request")
                return None
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        lines = head.lstrip("\r\n").split("\r\n")  # empty lines before a request: allowed
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, f"malformed request line {lines[0][:100]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _BadRequest(400, f"malformed header line {line[:100]!r}")
            key = name.lower()
            value = value.strip(" \t")
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        return parts[0], parts[1], parts[2], headers

    async def drop_body(self, headers: dict[str, str]) -> None:
        """Read the request's body and forget it (413 past ``MAX_BODY_BYTES``)."""
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                raise _BadRequest(501, f"transfer-encoding {coding!r} is not supported")
            await self._drop_chunked()
            return
        raw = headers.get("content-length", "0").strip() or "0"
        if not raw.isdigit():
            raise _BadRequest(400, f"bad content-length {raw[:40]!r}")
        await self._drop(int(raw))

    async def _drop(self, size: int) -> None:
        if size > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        while len(self.buffer) < size:
            if not await self._more():
                raise _BadRequest(400, "incomplete request body")
        del self.buffer[:size]

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD_BYTES or not await self._more():
                raise _BadRequest(400, "malformed chunked body")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def _drop_chunked(self) -> None:
        total = 0
        while True:
            try:
                size = int(bytes((await self._line()).split(b";", 1)[0]).strip(), 16)
            except ValueError as exc:
                raise _BadRequest(400, "malformed chunk size") from exc
            total += size
            if size == 0:
                while await self._line():  # trailers, up to the empty line
                    pass
                return
            await self._drop(size)
            if total > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
            if await self._line():
                raise _BadRequest(400, "malformed chunk")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _head(status: int, headers: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


async def _answer(
    stream: trio.abc.Stream, reply: Reply, *, head_only: bool = False, close: bool = False
) -> None:
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        *reply.headers,
    ]
    if close:
        headers.append(("connection", "close"))
    # One write for head and body: one TLS record and one send (the scrape's answers are a
    # few KB each, 10,000 of them a round).
    head = _head(reply.status, headers)
    await stream.send_all(head if head_only else head + reply.body)


def _local_address(raw: trio.SocketStream) -> str:
    """The address the client dialed (empty when the socket cannot say)."""
    try:
        return str(raw.socket.getsockname()[0])
    except (OSError, IndexError, TypeError):
        return ""


async def _serve_requests(
    stream: TlsStream,
    reader: _Reader,
    idle: trio.CancelScope,
    handler: Handler,
    user: str | None,
    groups: tuple[str, ...],
    local: str,
) -> None:
    """Requests, one after another, until the connection closes (see ``serve_connection``)."""
    while True:
        try:
            idle.deadline = trio.current_time() + IDLE_TIMEOUT
            head = await reader.head()
            if head is None:
                return
            method, target, version, headers = head
            await reader.drop_body(headers)
            idle.deadline = math.inf
        except _BadRequest as bad:
            await _answer(stream, Reply(bad.status, f"{bad}\n".encode()), close=True)
            return
        request = _request(method, target, headers, user, groups, local)
        close = version == "HTTP/1.0" or "close" in headers.get("connection", "").lower()
        try:
            reply = await handler(request)
        except Exception:
            log.exception("kubelet API: %s %s failed", request.method, request.path)
            reply = Reply(500, b"Internal Server Error\n")
        if isinstance(reply, Upgrade):
            await stream.send_all(_head(101, list(reply.headers)))
            await reply.run(stream, bytes(reader.buffer))
            return
        if isinstance(reply, Streamed):
            response = [("content-type", reply.content_type)]
            if method == "HEAD":
                await stream.send_all(_head(reply.status, response))
            else:
                response.append(("transfer-encoding", "chunked"))
                await stream.send_all(_head(reply.status, response))
                async for chunk in reply.chunks():
                    if chunk:
                        await stream.send_all(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await stream.send_all(b"0\r\n\r\n")
        else:
            await _answer(stream, reply, head_only=method == "HEAD", close=close)
        if close:
            return


async def serve_connection(
    raw: trio.SocketStream, context: ssl.SSLContext, handler: Handler
) -> None:
    """One client connection: TLS, then requests until it closes or idles out."""
    stream = TlsStream(raw, context)
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT) as scope:
            await stream.do_handshake()
        if scope.cancelled_caught:
            return
        user, groups = _identity(stream)
        local = _local_address(raw)
        reader = _Reader(stream)
        # One scope for the connection, its deadline set while a request is read and lifted
        # while it is answered: entering and leaving a scope per request was ~7 % of a
        # scraped request's plumbing in a profile. Cancelled: the connection idled out.
        with trio.CancelScope() as idle:
            await _serve_requests(stream, reader, idle, handler, user, groups, local)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
        return
    except OSError:
        return
    finally:
        await trio.aclose_forcefully(stream)
