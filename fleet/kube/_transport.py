"""The hot-path transport: lean HTTP/1.1 on trio streams for high-volume writes and watches.

A shard renewing 10,000 Leases every 10 s sends 1,000 writes a second before
any pod work. Through httpx's pool that costs most of a core (~800 µs of client
CPU per request at 16 in flight, docs/performance.md); this transport costs a
small fraction of that. It implements the same :class:`~fleet.kube._seam.Requester`
seam as the general :class:`~fleet.kube._client.Client`, so the write queue and
the reflector never know which one they drive.

How it stays cheap:

- a FIXED set of persistent HTTP/1.1 connections (``connections``), each
  carrying one request at a time, handed out by a trio semaphore over a stack
  of idle slots: N requests in flight use N connections, never more; no pool
  bookkeeping, no per-request task;
- the most recently used connection is handed out first (a stack, not a
  queue), so only as many sockets are ever opened as the peak concurrency
  needs; connections are made lazily by the request that first needs one,
  and re-made after an error, a timeout or a ``Connection: close``;
- framing is written by hand (request head built as one string; response head
  split once; ``Content-Length`` and chunked bodies), the head and framing rules
  being :mod:`fleet.machinery`'s HTTP/1.1 parser, which the sandbox's server and
  the bench's servers share. We measured h11 first
  (``kubemock-fleet bench transport --client h11``): 80-90 µs of client CPU per
  request at 16 in flight on bare trio streams, before any pool, auth or
  timeout work; this whole transport costs ~45 µs (docs/performance.md,
  "Hot-path transport"). The target is <= 100 µs with everything included,
  which h11 would have missed.

What it deliberately does not do: HTTP/2, proxies, redirects, compression,
request bodies of unknown length, responses larger than memory. Those belong
to the general client.

Watches use :meth:`HotTransport.stream`, which opens a dedicated connection
(never one of the pool's, so a long watch cannot starve writes), decodes the
chunked body and closes the connection when the caller's ``async with`` ends.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlencode

import trio

from fleet import __version__
from fleet.errors import (
    ConfigError,
    ConnectError,
    InputError,
    ProtocolError,
    TransportError,
)
from fleet.kube._cluster import ClusterConfig, Reloader, tls_failure
from fleet.kube._seam import BaseRequester, BatchRequest, Response
from fleet.kube._socketio import (
    BodyIterator,
    answer_within,
    check_timeouts,
    connect_errors,
    open_stream,
    server_address,
)
from fleet.machinery import (
    MAX_HEAD_BYTES,
    content_length,
    is_chunked,
    parse_chunk_size,
    parse_response_head,
)

__all__ = [
    "DEFAULT_CONNECTIONS",
    "MAX_PIPELINE",
    "HotTransport",
    "HotTransportSettings",
    "HotTransportStatistics",
]

DEFAULT_CONNECTIONS = 16
"""Persistent connections per transport.

By Little's law, 1,000 writes/s at the apiserver's usual 2-5 ms per write keeps
2-5 requests in flight; 16 leaves 3-8x headroom for latency spikes, which is
also where the measured client CPU per request bottoms out, while keeping the
number of sockets each shard holds on the apiserver small."""

_RECEIVE_BYTES = 64 * 1024
"""Bytes asked of the socket per read: a whole small response in one syscall."""

MAX_PIPELINE = 64
"""Requests sent back to back on one connection by :meth:`HotTransport.request_batch`: a
second of Lease renewals of a 10,000-node shard in about 16 round trips, and a bounded
amount to redo when a connection is lost mid-pipeline."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class HotTransportSettings:
    """How many connections and how long to wait. Defaults suit Lease and status writes."""

    connections: int = DEFAULT_CONNECTIONS
    """The fixed number of persistent pool connections (see :data:`DEFAULT_CONNECTIONS`)."""
    connect_timeout: float = 5.0
    """Seconds to open TCP and finish the TLS handshake. An apiserver answers both in
    milliseconds; five seconds covers a loaded one without stalling a writer for long."""
    request_timeout: float = 10.0
    """Seconds for one whole exchange, from sending the request to the last body byte
    (for :meth:`HotTransport.stream`, to the response head). A write unanswered after
    one Lease renewal interval (10 s) is overtaken by the next one anyway."""

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ConfigError(f"connections must be >= 1, got {self.connections}")
        check_timeouts(self.connect_timeout, self.request_timeout)


@dataclass(frozen=True, slots=True)
class HotTransportStatistics:
    """What the pool is doing, for metrics and tests."""

    connections: int
    """The configured pool size."""
    idle: int
    """Pool connections not carrying a request right now."""
    opened: int
    """Connections made since the start (pool and streams); growth means reconnects."""
    waiting: int
    """Requests waiting for a free connection."""


class _StaleConnection(Exception):
    """A reused connection was closed by the server before any byte of the answer."""


class _Conn:
    """One connection slot: a stream (None until made) and its unread bytes."""

    __slots__ = ("buf", "stream", "used")

    def __init__(self) -> None:
        self.stream: trio.abc.Stream | None = None
        self.buf = bytearray()
        self.used = 0

    async def discard(self) -> None:
        """Drop the connection at once (no TLS close_notify wait); the slot stays usable."""
        stream, self.stream = self.stream, None
        self.buf.clear()
        self.used = 0
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def receive(self) -> bytes:
        """Read what the socket has; ``b""`` at EOF. Library errors become ProtocolError."""
        stream = self.stream
        if stream is None:
            # Discarded while this exchange waited (the transport closed under it): an error
            # of the request, as a close during the read itself is, never an assertion.
            raise ProtocolError("connection closed while a request was in flight")
        try:
            return bytes(await stream.receive_some(_RECEIVE_BYTES))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ProtocolError(f"connection lost while reading: {exc}") from exc

    async def fill(self, size: int) -> None:
        """Buffer at least ``size`` bytes; EOF first is a broken response."""
        while len(self.buf) < size:
            data = await self.receive()
            if not data:
                raise ProtocolError("server closed the connection mid-response")
            self.buf += data

    async def line(self) -> bytes:
        """Take one CRLF-terminated line from the buffer (without the CRLF)."""
        start = 0
        while (end := self.buf.find(b"\r\n", start)) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise ProtocolError("line too long in response")
            start = max(0, len(self.buf) - 1)
            data = await self.receive()
            if not data:
                raise ProtocolError("server closed the connection mid-response")
            self.buf += data
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def chunk(self) -> bytes | None:
        """The next chunk of a chunked body; None after the last (trailers consumed)."""
        size = parse_chunk_size(await self.line())
        if size == 0:
            while await self.line():  # trailers, up to the empty line
                pass
            return None
        await self.fill(size + 2)
        if self.buf[size : size + 2] != b"\r\n":
            raise ProtocolError("chunk not terminated by CRLF")
        data = bytes(self.buf[:size])
        del self.buf[: size + 2]
        return data


async def _read_head(conn: _Conn) -> tuple[int, dict[str, str], bool]:
    """Read and parse a final (non-1xx) response head from ``conn``.

    Raises :class:`_StaleConnection` when a reused connection hits EOF before
    the first byte: the server closed it while idle, so it never saw the request.
    """
    buf = conn.buf
    while True:
        start = 0
        while (end := buf.find(b"\r\n\r\n", start)) < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise ProtocolError("response head too large")
            start = max(0, len(buf) - 3)
            try:
                data = await conn.receive()
            except ProtocolError:
                if not buf and conn.used:
                    raise _StaleConnection from None
                raise
            if not data:
                if not buf and conn.used:
                    raise _StaleConnection
                raise ProtocolError("server closed the connection before the response head")
            buf += data
        status, headers, keep = parse_response_head(bytes(buf[:end]))
        del buf[: end + 4]
        if status >= 200 or status == 101:
            return status, headers, keep
        # 1xx informational answers precede the real one; we never send Expect, but skip them.


async def _read_body(
    conn: _Conn, method: str, status: int, headers: dict[str, str], keep: bool
) -> tuple[Response, bool]:
    """The body of the answer whose head was just read; and whether ``conn`` stays usable."""
    if method == "HEAD" or status in (204, 304):
        content = b""
    elif is_chunked(headers):
        pieces = []
        while (data := await conn.chunk()) is not None:
            pieces.append(data)
        content = b"".join(pieces)
    elif (length := content_length(headers)) is not None:
        await conn.fill(length)
        content = bytes(conn.buf[:length])
        del conn.buf[:length]
    else:  # no framing: the body runs to EOF and the connection cannot be reused
        while data := await conn.receive():
            conn.buf += data
        content = bytes(conn.buf)
        keep = False
    return Response(status, content, headers), keep


class _HotStream(BodyIterator):
    """A streamed answer on a dedicated connection; see :class:`fleet.kube._seam.StreamResponse`."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers
        self._conn = conn
        self._chunked = is_chunked(headers)
        self._remaining = None if self._chunked else content_length(headers)
        self._done = False

    async def __anext__(self) -> bytes:  # chunked encoding removed
        conn = self._conn
        if self._done:
            raise StopAsyncIteration
        if self._chunked:
            data = await conn.chunk()
        elif self._remaining is not None:
            if not self._remaining:
                data = None
            else:
                if not conn.buf:
                    await conn.fill(1)
                data = bytes(conn.buf[: self._remaining])
                del conn.buf[: len(data)]
                self._remaining -= len(data)
        elif conn.buf:  # no framing: the body runs to EOF
            data = bytes(conn.buf)
            conn.buf.clear()
        else:
            data = await conn.receive() or None
        if data is None:
            self._done = True
            raise StopAsyncIteration
        return data


class HotTransport(BaseRequester):
    """A fixed pool of HTTP/1.1 connections to one apiserver; a :class:`Requester`.

    Use as ``async with HotTransport(config) as t: await t.request(...)``. Any
    number of tasks may call :meth:`request` at once; at most
    ``settings.connections`` are in flight and the rest wait for a connection.
    Auth headers come from ``config.auth`` on every request; a 401 invalidates
    them and the request is retried once with fresh ones. A TLS failure on
    connect re-reads the kubeconfig (``config.reload``, rate-limited) and the
    connection is tried once more with its TLS settings.
    """

    def __init__(
        self, config: ClusterConfig, settings: HotTransportSettings = HotTransportSettings()
    ) -> None:
        url, self._host, self._port = server_address(config)
        self._config = config
        self._settings = settings
        self._server = config.server
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = config.ssl_context or ssl.create_default_context()
        self._server_hostname = config.tls_server_name or self._host
        self._reloader = Reloader(config)
        self._auth = config.auth
        # A server behind a path prefix (Rancher's /k8s/clusters/<id>) keeps it on every path.
        self._prefix = url.path.rstrip("/")
        # The part of every request head that never changes, built once.
        self._static_head = (
            f" HTTP/1.1\r\nHost: {url.netloc.rpartition('@')[2]}\r\n"
            f"User-Agent: kubemock-fleet/{__version__}\r\nAccept: application/json\r\n"
        )
        self._conns = [_Conn() for _ in range(settings.connections)]
        # Idle slots, most recently used last; the semaphore guarantees one is there.
        self._idle = list(reversed(self._conns))
        self._free = trio.Semaphore(settings.connections)
        self._opened = 0
        self._closed = False

    async def __aenter__(self) -> HotTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pool connection. Streams close with their own ``async with``."""
        self._closed = True
        # Shielded: it is most often reached by a cancellation (the ``async with`` left as its
        # nursery is cancelled), which would otherwise end the loop at the first checkpoint
        # and leave the other connections to the garbage collector. Closing is local work.
        with trio.CancelScope(shield=True):
            for conn in self._conns:
                await conn.discard()

    def statistics(self) -> HotTransportStatistics:
        return HotTransportStatistics(
            connections=self._settings.connections,
            idle=len(self._idle),
            opened=self._opened,
            waiting=self._free.statistics().tasks_waiting,
        )

    # -- request heads ---------------------------------------------------------------------

    def _target(self, path: str, params: Mapping[str, str] | None) -> str:
        if (
            not path.startswith("/")
            or not path.isascii()
            or " " in path
            or "\r" in path
            or "\n" in path
        ):
            raise InputError(f"request path must be an absolute, escaped path, got {path[:80]!r}")
        target = self._prefix + path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params)
        return target

    def _head(
        self,
        method: str,
        target: str,
        auth: Mapping[str, str],
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
    ) -> bytes:
        parts = [method, " ", target, self._static_head]
        for extra in (auth, headers):
            if extra:
                for name, value in extra.items():
                    # A CR or LF would let a value start a header (or a request) of its own.
                    if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                        raise InputError(f"header {name!r} contains a line break")
                    parts += (name, ": ", value, "\r\n")
        if content_type:
            parts += ("Content-Type: ", content_type, "\r\n")
        if body is not None:
            parts += ("Content-Length: ", str(len(body)), "\r\n")
        elif method in _BODY_METHODS:
            parts.append("Content-Length: 0\r\n")
        parts.append("\r\n")
        try:
            return "".join(parts).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise InputError(f"request head is not latin-1: {exc}") from exc

    # -- connections -----------------------------------------------------------------------

    async def _connect(self, conn: _Conn) -> None:
        try:
            await self._connect_once(conn)
        except ConnectError as exc:
            if not self._renew_tls(exc):
                raise
            await self._connect_once(conn)

    async def _renew_auth(self) -> None:
        """After a 401: drop cached credentials, and re-read the kubeconfig for new ones."""
        await self._auth.invalidate()
        config = self._reloader.reload("the apiserver answered 401")
        if config is not None and config.server == self._server:
            self._auth = config.auth

    def _renew_tls(self, exc: ConnectError) -> bool:
        """After a TLS failure: re-read the kubeconfig and use its TLS settings from now on."""
        if self._ssl is None or not tls_failure(exc):
            return False
        config = self._reloader.reload(f"{exc}")
        if config is None or config.server != self._server:
            return False
        self._ssl = config.ssl_context or ssl.create_default_context()
        self._server_hostname = config.tls_server_name or self._host
        self._auth = config.auth  # a restarted apiserver has a new token too, as a rule
        return True

    async def _connect_once(self, conn: _Conn) -> None:
        if self._closed:
            raise TransportError("the transport is closed")
        with connect_errors(self._server, self._settings.connect_timeout):
            conn.stream = await open_stream(
                self._host, self._port, self._ssl, self._server_hostname
            )
        self._opened += 1
        conn.buf.clear()
        conn.used = 0

    async def _send(self, conn: _Conn, payload: bytes) -> None:
        stream = conn.stream
        if stream is None:  # discarded meanwhile (see _Conn.receive)
            raise ProtocolError("connection closed while a request was in flight")
        try:
            await stream.send_all(payload)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if conn.used:
                raise _StaleConnection from exc
            raise ProtocolError(f"connection lost while sending: {exc}") from exc

    async def _roundtrip(self, conn: _Conn, method: str, payload: bytes) -> Response:
        if conn.stream is None:
            await self._connect(conn)
        try:
            await self._send(conn, payload)
            status, headers, keep = await _read_head(conn)
        except _StaleConnection:
            # The server closed an idle keep-alive connection as we reused it: it never
            # read this request, so sending it again on a fresh connection is safe, even
            # for writes (Go's net/http and httpcore do the same).
            await conn.discard()
            await self._connect(conn)
            await self._send(conn, payload)
            status, headers, keep = await _read_head(conn)
        response, keep = await _read_body(conn, method, status, headers, keep)
        if keep:
            conn.used += 1
        else:
            await conn.discard()
        return response

    async def _pipeline(
        self, conn: _Conn, methods: Sequence[str], payload: bytes, out: list[Response]
    ) -> None:
        """Send every request at once on ``conn`` and append the answers to ``out`` in order.

        Stops early (without error) after an answer that closes the connection: a
        server that says ``Connection: close`` has not processed what follows
        (RFC 9112 9.6), so the caller may send the rest again. Any error after the
        first answer is a :class:`ProtocolError`: what was not answered may or may
        not have been processed.
        """
        if conn.stream is None:
            await self._connect(conn)
        try:
            await self._send(conn, payload)
            head = await _read_head(conn)
        except _StaleConnection:
            # Nothing of this pipeline was read by the server (see _roundtrip).
            await conn.discard()
            await self._connect(conn)
            await self._send(conn, payload)
            head = await _read_head(conn)
        for index, method in enumerate(methods):
            if index:
                try:
                    head = await _read_head(conn)
                except _StaleConnection:
                    raise ProtocolError("server closed the connection mid-pipeline") from None
            response, keep = await _read_body(conn, method, *head)
            out.append(response)
            if not keep:
                await conn.discard()
                return
            conn.used += 1

    async def _exchange(self, method: str, payload: bytes) -> Response:
        await self._free.acquire()
        conn = self._idle.pop()
        try:
            with answer_within(
                self._settings.request_timeout, f"{method} to {self._server}: no complete answer"
            ):
                return await self._roundtrip(conn, method, payload)
        except BaseException:
            # Errors and cancellation leave the connection mid-exchange: never reuse it.
            await conn.discard()
            raise
        finally:
            self._idle.append(conn)
            self._free.release()

    # -- the Requester seam ----------------------------------------------------------------

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
        """Send one request on a pool connection and return the whole answer."""
        target = self._target(path, params)
        response = await self._exchange(
            method,
            self._head(method, target, await self._auth.headers(), body, content_type, headers)
            + (body or b""),
        )
        if response.status == 401:
            await self._renew_auth()
            response = await self._exchange(
                method,
                self._head(method, target, await self._auth.headers(), body, content_type, headers)
                + (body or b""),
            )
        return response

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        """Send ``requests`` pipelined (HTTP/1.1), up to :data:`MAX_PIPELINE` per connection.

        Returns one entry per request, in order: its whole answer, or the
        :class:`~fleet.errors.TransportError` that kept it from being answered.
        One pool connection carries each group of requests written back to back;
        the answers are read in order. When the connection is lost mid-pipeline,
        the answers already read stand and every request after them gets the
        error (it may or may not have been processed: the caller decides whether
        it is safe to send again); after a ``Connection: close`` answer the rest
        are sent again on a fresh connection, since the server processed none
        of them. 401 answers invalidate the auth headers and their requests are
        sent once more, as with :meth:`request`.
        """
        results: list[Response | TransportError] = []
        for start in range(0, len(requests), MAX_PIPELINE):
            group = requests[start : start + MAX_PIPELINE]
            answers = await self._send_group(group, await self._auth.headers())
            retry = [
                i for i, a in enumerate(answers) if isinstance(a, Response) and a.status == 401
            ]
            if retry:
                await self._renew_auth()
                again = await self._send_group(
                    [group[i] for i in retry], await self._auth.headers()
                )
                for i, answer in zip(retry, again, strict=True):
                    answers[i] = answer
            results += answers
        return results

    async def _send_group(
        self, group: Sequence[BatchRequest], auth: Mapping[str, str]
    ) -> list[Response | TransportError]:
        payloads = [
            self._head(r.method, self._target(r.path, r.params), auth, r.body, r.content_type, None)
            + (r.body or b"")
            for r in group
        ]
        methods = [r.method for r in group]
        answers: list[Response | TransportError] = []
        while len(answers) < len(group):
            done: list[Response] = []
            first = len(answers)
            try:
                await self._exchange_many(methods[first:], b"".join(payloads[first:]), done)
            except TransportError as exc:
                answers += done
                answers += [exc] * (len(group) - len(answers))
                break
            if not done:  # cannot happen (an exchange answers or raises); never spin
                answers += [ProtocolError("pipeline answered nothing")] * (len(group) - first)
                break
            answers += done
        return answers

    async def _exchange_many(
        self, methods: Sequence[str], payload: bytes, out: list[Response]
    ) -> None:
        await self._free.acquire()
        conn = self._idle.pop()
        try:
            with answer_within(
                self._settings.request_timeout,
                f"pipeline of {len(methods)} to {self._server}: no complete answers",
            ):
                await self._pipeline(conn, methods, payload, out)
        except BaseException:  # mid-exchange (a timeout, an error, a cancellation): never reused
            await conn.discard()
            raise
        finally:
            self._idle.append(conn)
            self._free.release()

    async def _open_stream(self, method: str, head: bytes) -> tuple[_Conn, int, dict[str, str]]:
        conn = _Conn()
        try:
            await self._connect(conn)
            with answer_within(
                self._settings.request_timeout, f"{method} to {self._server}: no response head"
            ):
                await self._send(conn, head)
                status, headers, _ = await _read_head(conn)
        except BaseException:
            await conn.discard()
            raise
        return conn, status, headers

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[_HotStream]:
        """Open a dedicated connection for a streamed answer (a watch).

        Only the response head is under ``request_timeout``; how long a watch
        may stay quiet is its reader's decision. The connection is closed when
        the ``async with`` ends, whether or not the body was read to its end.
        """
        target = self._target(path, params)
        conn, status, head = await self._open_stream(
            method, self._head(method, target, await self._auth.headers(), None, None, headers)
        )
        try:
            if status == 401:
                await conn.discard()
                await self._renew_auth()
                conn, status, head = await self._open_stream(
                    method,
                    self._head(method, target, await self._auth.headers(), None, None, headers),
                )
            yield _HotStream(conn, status, head)
        finally:
            await conn.discard()
