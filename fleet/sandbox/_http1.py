"""The sandbox's front door: a lean HTTP/1.1 server, with HTTP/2 handed to hypercorn.

Why: hypercorn costs ~450-500 µs of server CPU per request on this project's
box before the app does anything (``kubemock-fleet bench sandbox``, the
``empty`` rows in docs/performance.md), more than the whole 333 µs budget of
the sandbox's goal of 3,000 PATCHes/s. Nearly every client of the sandbox (the fleet's
``HotTransport``, httpx, the kubernetes Python client) speaks HTTP/1.1, so
this module serves HTTP/1.1 itself, by hand, with the parser the hot-path client
frames its answers with (:mod:`fleet.machinery`'s ``parse_request_head``,
``parse_chunk_size``; a head over ``MAX_HEAD_BYTES`` is answered 431), and calls
the same ASGI app.

HTTP/2 stays with hypercorn: a TLS connection whose ALPN picks ``h2`` (kubectl),
a cleartext connection opening with the HTTP/2 preface (h2c prior knowledge)
or asking ``Upgrade: h2c`` is handed, untouched (the bytes already read are
replayed), to hypercorn's own per-connection server.

What it does: persistent connections (keep-alive until the client closes,
``Connection: close``, HTTP/1.0, or ``keep_alive_timeout`` of idleness),
``Content-Length`` and chunked request bodies, ``Expect: 100-continue``,
``Content-Length`` or chunked responses (streamed watch bodies), no body for
HEAD/204/304, a ``Date`` header, and ``http.disconnect`` to the app when the
client leaves mid-stream. Slow or idle clients cannot hold the server: after
its first byte a request head must arrive within ``header_read_timeout`` and a
body within ``body_read_timeout`` (408, then close); at most
``max_connections`` connections are served at once, more are closed at accept. A request asking for an ``Upgrade`` other than h2c (WebSocket,
SPDY) goes, with its connection, to the ``upgrade`` handler when one is given. No pipelining of a second request while the first
is answered (clients wait for the answer; the bytes are kept, not lost).
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import trio

from fleet.errors import ProtocolError
from fleet.machinery import MAX_HEAD_BYTES, parse_chunk_size, parse_request_head

log = logging.getLogger("fleet.sandbox.http")

Message = MutableMapping[str, Any]
App = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]

UpgradeHandler = Callable[[MutableMapping[str, Any], trio.abc.Stream, bytes], Awaitable[None]]
"""Given the request's scope, the connection and the bytes already read past its head,
answers (101 and then whatever the protocol says, or an error) and returns when done."""

_RECEIVE_BYTES = 64 * 1024
_H2_PREFACE = b"PRI * HTTP/2.0\r\n"
_NO_BODY_STATUS = frozenset({204, 304})
_REASONS = {
    100: "Continue",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Date:
    """The ``Date`` header value, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


_date = _Date()


class _Replay(trio.abc.HalfCloseableStream):
    """A cleartext stream whose first bytes were already read: hypercorn reads them again."""

    def __init__(self, stream: trio.SocketStream, head: bytes) -> None:
        self.stream = stream
        self.socket = stream.socket  # hypercorn's TCPServer reads the peer address here
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._head:
            data, self._head = self._head, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


class Http1Server:
    """Serves ``app`` on listeners; ``h2`` is delegated to hypercorn (``config`` is its Config)."""

    def __init__(
        self,
        app: App,
        config: Any,
        *,
        tls: Any = None,
        header_read_timeout: float = 32.0,
        body_read_timeout: float = 60.0,
        max_connections: int = 4096,
        upgrade: UpgradeHandler | None = None,
    ) -> None:
        from hypercorn.trio.worker_context import WorkerContext
        from hypercorn.typing import ConnectionState
        from hypercorn.utils import wrap_app

        self.app = app
        self.config = config
        self.tls = tls
        """An ``ssl.SSLContext`` (ALPN h2 and http/1.1), or None for cleartext."""
        self.keep_alive_timeout: float = config.keep_alive_timeout
        self.header_read_timeout = header_read_timeout
        """Seconds the rest of a request head may take after its first byte."""
        self.body_read_timeout = body_read_timeout
        """Seconds a request body may take."""
        self.max_connections = max_connections
        """Connections served at once; more are closed at accept."""
        self.connections = 0
        self._refused = 0
        self.upgrade = upgrade
        """Takes over connections whose request asks for an ``Upgrade`` other than h2c
        (WebSocket, SPDY: exec, attach, port-forward); None: they are ordinary requests."""
        self._wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]  # hypercorn types an ASGI app by its TypedDict scopes, which no MutableMapping-typed app matches
        self._context = WorkerContext(None)
        self._state = ConnectionState

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.serve_listeners(self._connection, listeners, task_status=task_status)

    async def _connection(self, stream: trio.SocketStream) -> None:
        if self.connections >= self.max_connections:
            self._refused += 1
            if self._refused == 1 or self._refused % 1000 == 0:
                log.warning(
                    "sandbox: %d connections open, the most allowed; closed %d new ones",
                    self.connections,
                    self._refused,
                )
            await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        try:
            await self._serve_connection(stream)
        finally:
            self.connections -= 1

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        except OSError:
            pass
        sock = stream.socket
        try:
            client, server = sock.getpeername()[:2], sock.getsockname()[:2]
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        conn: trio.abc.Stream = stream
        if self.tls is not None:
            tls = trio.SSLStream(stream, self.tls, server_side=True, https_compatible=True)
            try:
                with trio.fail_after(self.config.ssl_handshake_timeout):
                    await tls.do_handshake()
            except (trio.BrokenResourceError, trio.TooSlowError):
                await trio.aclose_forcefully(tls)
                return
            if tls.selected_alpn_protocol() == "h2":
                await self._hypercorn(tls)
                return
            conn = tls
        try:
            await _Connection(
                self, conn, stream, "https" if self.tls is not None else "http", client, server
            ).run()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except Exception:  # one connection's failure must not stop the server
            log.exception("sandbox: HTTP/1.1 connection from %s failed", client)
        finally:
            await trio.aclose_forcefully(conn)

    async def _hypercorn(self, stream: trio.abc.Stream) -> None:
        from hypercorn.trio.tcp_server import TCPServer

        # hypercorn annotates the stream as SSLStream[SocketStream]; it serves any trio Stream.
        await TCPServer(self._wrapped, self.config, self._context, self._state({}), stream)  # type: ignore[arg-type]


class _Connection:
    """One HTTP/1.1 connection: requests in turn until either side closes."""

    def __init__(
        self,
        server: Http1Server,
        stream: trio.abc.Stream,
        raw: trio.SocketStream,
        scheme: str,
        client: tuple[str, int],
        addr: tuple[str, int],
    ) -> None:
        self.server = server
        self.stream = stream
        self.raw = raw
        self.scheme = scheme
        self.client = client
        self.addr = addr
        self.buf = bytearray()
        self.eof = False

    async def _read(self) -> bool:
        """More bytes into the buffer; False at EOF."""
        if self.eof:
            return False
        data = await self.stream.receive_some(_RECEIVE_BYTES)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _BadRequest(400, "line too long")
            if not await self._read():
                raise _BadRequest(400, "connection closed mid-body")
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    async def _head(self) -> bytes | None:
        """The next request head (without the blank line), None when the client is done.

        The wait for its first byte is keep-alive idleness; from there the whole head
        must come within ``header_read_timeout`` (a slow client gets 408 and is closed).
        """
        first = True
        deadline = trio.current_time() + self.server.header_read_timeout if self.buf else None
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > MAX_HEAD_BYTES:
                raise _BadRequest(431, "request head too large")
            if self.buf.startswith(b"\r\n"):  # stray CRLF between requests (RFC 9112 2.2)
                del self.buf[:2]
                continue
            if first and not self.buf:
                with trio.move_on_after(self.server.keep_alive_timeout) as idle:
                    more = await self._read()
                if idle.cancelled_caught or not more:
                    return None
                deadline = trio.current_time() + self.server.header_read_timeout
            else:
                if deadline is None:
                    deadline = trio.current_time() + self.server.header_read_timeout
                with trio.move_on_at(deadline) as slow:
                    more = await self._read()
                if slow.cancelled_caught:
                    raise _BadRequest(
                        408,
                        f"request head not complete within {self.server.header_read_timeout:g}s",
                    )
                if not more:
                    if self.buf:
                        raise _BadRequest(400, "connection closed mid-head")
                    return None
            first = False
        head = bytes(self.buf[:end])
        del self.buf[: end + 4]
        return head

    async def run(self) -> None:
        if self.scheme == "http":
            # h2c with prior knowledge opens with the HTTP/2 preface: hypercorn's.
            with trio.move_on_after(self.server.keep_alive_timeout):
                while len(self.buf) < len(_H2_PREFACE) and _H2_PREFACE.startswith(self.buf):
                    if not await self._read():
                        return
            if not self.buf:
                return  # connected and said nothing
            if self.buf.startswith(_H2_PREFACE):
                await self._handoff(bytes(self.buf))
                return
        while True:
            try:
                raw_head = await self._head()
                if raw_head is None:
                    return
                keep = await self._request(raw_head)
            except _BadRequest as exc:
                await self._error(exc.status, str(exc))
                return
            if not keep:
                return

    async def _handoff(self, replay: bytes) -> None:
        self.eof = True  # hypercorn owns the socket now (cleartext only: TLS picks h2 by ALPN)
        await self.server._hypercorn(_Replay(self.raw, replay))

    async def _error(self, status: int, message: str) -> None:
        body = f"{message}\n".encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode()
        try:
            await self.stream.send_all(head + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _request(self, raw_head: bytes) -> bool:
        """Answer one request; whether the connection may carry another."""
        try:
            parsed = parse_request_head(raw_head)
        except ProtocolError as exc:
            raise _BadRequest(400, str(exc)) from None
        if parsed.transfer_encoding not in (None, b"chunked"):
            raise _BadRequest(501, "unsupported Transfer-Encoding")
        target, version, headers = parsed.target, parsed.version, parsed.headers
        length, chunked, close = parsed.content_length, parsed.chunked, not parsed.keep_alive
        expect_continue = parsed.expect_continue
        upgrade_h2c = parsed.upgrade == b"h2c"
        upgrade_other = parsed.upgrade is not None and not upgrade_h2c
        if upgrade_h2c and self.scheme == "http":
            # The HTTP/2 upgrade dance is hypercorn's: give it the request as it came.
            rest = bytes(self.buf)
            self.buf.clear()
            await self._handoff(raw_head + b"\r\n\r\n" + rest)
            return False
        path_b, _, query = target.partition(b"?")
        method = parsed.method
        try:
            path = unquote(path_b.decode("ascii"))
        except UnicodeDecodeError:
            raise _BadRequest(400, "non-ASCII request target") from None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"spec_version": "2.1", "version": "3.0"},
            "http_version": version[5:].decode(),
            "method": method,
            "scheme": self.scheme,
            "path": path,
            "raw_path": path_b,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": self.client,
            "server": self.addr,
            "extensions": {},
        }
        if upgrade_other and self.server.upgrade is not None:
            rest = bytes(self.buf)
            self.buf.clear()
            self.eof = True  # the handler owns the connection now
            await self.server.upgrade(scope, self.stream, rest)
            return False
        remaining = length or 0
        body_done = not chunked and remaining == 0
        request_told = False  # the app has had an http.request message
        continue_due = expect_continue and not body_done
        disconnected = False
        # response state
        started = head_sent = finished = resp_chunked = False
        status = 200
        resp_headers: list[tuple[bytes, bytes]] = []
        suppress = method == "HEAD"
        stream = self.stream

        # The body must arrive within body_read_timeout: the app runs under this scope's
        # deadline until the body is read (or the app answers without reading it).
        body_scope = trio.CancelScope(
            deadline=math.inf if body_done else trio.current_time() + self.server.body_read_timeout
        )

        async def receive() -> Message:
            message = await _receive()
            if body_done:
                body_scope.deadline = math.inf
            return message

        async def _receive() -> Message:
            nonlocal remaining, body_done, continue_due, disconnected, request_told
            if continue_due:
                continue_due = False
                await stream.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            if body_done and not request_told:
                request_told = True
                return {"type": "http.request", "body": b"", "more_body": False}
            request_told = True
            if not body_done:
                if chunked:
                    try:
                        size = parse_chunk_size(await self._line())
                    except ProtocolError:
                        raise _BadRequest(400, "bad chunk size") from None
                    if size == 0:
                        while await self._line():  # trailers
                            pass
                        body_done = True
                        return {"type": "http.request", "body": b"", "more_body": False}
                    while len(self.buf) < size + 2:
                        if not await self._read():
                            raise _BadRequest(400, "connection closed mid-body")
                    data = bytes(self.buf[:size])
                    del self.buf[: size + 2]
                    return {"type": "http.request", "body": data, "more_body": True}
                if not self.buf and not await self._read():
                    body_done = disconnected = True
                    return {"type": "http.disconnect"}
                data = bytes(self.buf[:remaining])
                del self.buf[: len(data)]
                remaining -= len(data)
                body_done = remaining == 0
                return {"type": "http.request", "body": data, "more_body": not body_done}
            # The body was read: the next message is the client leaving (watches wait for it).
            while not disconnected:
                if finished:
                    await trio.sleep_forever()
                try:
                    more = await self._read()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    more = False
                if not more:
                    disconnected = True
            return {"type": "http.disconnect"}

        def head() -> bytearray:
            nonlocal head_sent, resp_chunked, suppress, close
            head_sent = True
            out = bytearray(b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "").encode()))
            has_length = False
            for name, value in resp_headers:
                if name.lower() == b"content-length":
                    has_length = True
                out += name + b": " + value + b"\r\n"
            no_body = suppress or status in _NO_BODY_STATUS or status < 200
            if not has_length and not no_body:
                if version == b"HTTP/1.1":
                    resp_chunked = True
                    out += b"transfer-encoding: chunked\r\n"
                else:  # HTTP/1.0 has no chunking: the body runs to the end of the connection
                    close = True
            out += b"date: " + _date.get() + b"\r\n"
            if close:
                out += b"connection: close\r\n"
            out += b"\r\n"
            if no_body:
                suppress = True
            return out

        async def write(out: bytes | bytearray) -> None:
            nonlocal disconnected
            if out and not disconnected:
                try:
                    await stream.send_all(out)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    disconnected = True

        async def send(message: Message) -> None:
            nonlocal started, finished, status, resp_headers
            kind = message["type"]
            if kind == "http.response.start":
                if started:
                    raise RuntimeError("http.response.start sent twice")
                started = True
                body_scope.deadline = math.inf  # answering: what is left of the body is drained
                status = int(message["status"])
                resp_headers = list(message.get("headers", ()))
                if not any(name.lower() == b"content-length" for name, _ in resp_headers):
                    await write(
                        head()
                    )  # a streamed answer (a watch): the client sees the status at once
                return
            if kind != "http.response.body" or finished:
                return
            if not started:
                raise RuntimeError("http.response.body before http.response.start")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            out = bytearray() if head_sent else head()
            if not suppress and body:
                if resp_chunked:
                    out += b"%x\r\n" % len(body) + body + b"\r\n"
                else:
                    out += body
            if not more:
                finished = True
                if resp_chunked and not suppress:
                    out += b"0\r\n\r\n"
            await write(out)

        try:
            with body_scope:
                await self.server.app(scope, receive, send)
        except _BadRequest:
            raise
        except Exception:
            log.exception("sandbox: unhandled error in the app on %s %s", method, path)
            if not head_sent:
                raise _BadRequest(500, "Internal Server Error") from None
            return False
        if body_scope.cancelled_caught:
            raise _BadRequest(
                408, f"request body not complete within {self.server.body_read_timeout:g}s"
            )
        if not finished:
            if not started:
                raise _BadRequest(500, "the app sent no response")
            return False  # a half-sent body cannot be framed: close
        if disconnected or close or self.eof:
            return False
        # Drain what the app left of the request body, so the next head starts where it should.
        with trio.move_on_after(self.server.body_read_timeout):
            while not body_done:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return False
            return True
        return False  # the rest of the body did not come: close


async def open_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Listening sockets for ``host:port`` (port 0: a free one)."""
    return await trio.open_tcp_listeners(port, host=host)


def url_of(listener: trio.SocketListener, scheme: str) -> str:
    host, port = listener.socket.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"


__all__ = ["Http1Server", "open_listeners", "url_of"]
