"""One HTTP/2 connection carrying many requests and watches at once, as a kubelet's does.

A kubelet's client-go talks to the apiserver over ONE HTTP/2 connection: its
informers' LISTs and WATCHes, its ConfigMap watches and its GETs are streams
of it. The kubelet traffic profile (``shards._traffic``) gives each fake node
one :class:`Http2Connection` for its watches, so a shard of N nodes holds N
connections on the apiserver, not six or more per node as with a connection
per watch (:meth:`~fleet.kube.HotTransport.stream`): at 1,000 nodes, ~1,000
TLS connections instead of ~6,000.

It is a :class:`~fleet.kube.Requester` (``request`` and ``stream``) whose
frames are written and read by the sans-IO ``h2`` package. :meth:`run` is its
one task, started in a nursery by its owner: it connects (TLS with ALPN ``h2``
from :attr:`ClusterConfig.http2_context`, or cleartext with the HTTP/2 preface,
"prior knowledge"), reads frames and hands each stream its data, answers
pings and settings, and connects again after a loss (backoff from
:data:`RECONNECT`). Requests made while it is not connected wait for it: for its
turn to connect (a ``connecting`` limiter shared by many connections: a queue whose
every turn is bounded), then up to ``connect_timeout``; a loss ends every open stream with
:class:`~fleet.errors.ProtocolError` (the reflectors watch again, on the new
connection).

Flow control: each stream may hold up to :data:`STREAM_WINDOW` bytes its reader
has not taken (a LIST answer streams in as it is read), the connection
:data:`CONNECTION_WINDOW`; bytes are acknowledged (WINDOW_UPDATE) as the reader
takes them, so a slow reader stalls its own stream, never the others.
Streams beyond the server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` wait for one to
end. What it does not do (it carries one node's reads): request bodies beyond
the peer's window (waits for WINDOW_UPDATE, bounded by ``request_timeout``),
server push (refused by settings), trailers, priorities.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import trio

from fleet import __version__
from fleet.errors import ConfigError, ConnectError, InputError, ProtocolError
from fleet.kube._backoff import BackoffPolicy
from fleet.kube._cluster import ClusterConfig
from fleet.kube._seam import BaseRequester, Response
from fleet.kube._socketio import (
    BodyIterator,
    answer_within,
    check_timeouts,
    connect_errors,
    open_stream,
    server_address,
)

__all__ = [
    "CONNECTION_WINDOW",
    "RECONNECT",
    "STREAM_WINDOW",
    "Http2Connection",
    "Http2Settings",
]

log = logging.getLogger(__name__)

STREAM_WINDOW = 1 << 20
"""Bytes a stream may receive before its reader takes them (a LIST page of a few thousand
Services is a few MB: it streams in at this many bytes per round trip)."""
CONNECTION_WINDOW = 4 << 20
"""Bytes all streams together may hold unread."""
RECONNECT = BackoffPolicy(initial=0.8, maximum=30.0, jitter=0.5)
"""Between connection attempts after a loss or a refusal (client-go's reflector backoff)."""
_RECEIVE_BYTES = 64 * 1024
_CLIENT_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding="utf-8",
    # The request headers are built here, lower-case and without connection headers:
    # h2's checks of them were a third of the CPU of sending each request (a 10,000-node
    # shard opens 60,000 watches at start-up). The server's answers are still checked.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class Http2Settings:
    connect_timeout: float = 5.0
    """Seconds a request waits for the connection (TCP, TLS, the server's SETTINGS)."""
    request_timeout: float = 10.0
    """Seconds for a whole ``request``; for ``stream``, until the response head."""

    def __post_init__(self) -> None:
        check_timeouts(self.connect_timeout, self.request_timeout)


@dataclass(eq=False, slots=True)
class _Stream:
    """One request's answer as it arrives: head, body pieces, end or error."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    head: trio.Event = field(default_factory=trio.Event)
    data: deque[bytes] = field(default_factory=deque)
    ended: bool = False
    error: Exception | None = None
    wake: trio.Event = field(default_factory=trio.Event)

    def fail(self, error: Exception) -> None:
        if not self.ended and self.error is None:
            self.error = error
        self.head.set()
        self.wake.set()


class _Live:
    """A connected socket and its h2 state machine."""

    def __init__(self, stream: trio.abc.Stream, conn: h2.connection.H2Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.streams: dict[int, _Stream] = {}
        self.send_lock = trio.Lock()
        self.slot_freed = trio.Event()
        self.window_opened = trio.Event()
        self.error: Exception | None = None

    async def flush(self) -> None:
        """Send what the state machine has queued (one writer at a time)."""
        async with self.send_lock:
            data = self.conn.data_to_send()
            if data:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ProtocolError(f"HTTP/2 connection lost while sending: {exc}") from exc


class _H2Response(BodyIterator):
    """A streamed answer; see :class:`fleet.kube._seam.StreamResponse`."""

    def __init__(self, live: _Live, stream_id: int, stream: _Stream) -> None:
        self.status = stream.status
        self.headers: Mapping[str, str] = stream.headers
        self._live = live
        self._id = stream_id
        self._stream = stream

    async def __anext__(self) -> bytes:
        stream = self._stream
        while not stream.data:
            if stream.error is not None:
                raise stream.error
            if stream.ended:
                raise StopAsyncIteration
            stream.wake = trio.Event()
            await stream.wake.wait()
        piece = stream.data.popleft()
        live = self._live
        if live.error is None:
            try:
                live.conn.acknowledge_received_data(len(piece), self._id)
            except h2.exceptions.StreamClosedError:
                pass  # ended meanwhile: its window no longer matters
            await live.flush()
        return piece


class Http2Connection(BaseRequester):
    """One HTTP/2 connection to the apiserver; a :class:`Requester`. See the module docstring.

    ``await nursery.start(conn.run)`` before (or while) using it; cancelling ``run``
    closes the connection and ends its streams.
    """

    def __init__(
        self,
        config: ClusterConfig,
        settings: Http2Settings = Http2Settings(),
        *,
        connecting: trio.CapacityLimiter | None = None,
    ) -> None:
        url, self._host, self._port = server_address(config)
        if url.scheme == "https" and config.http2_context is None:
            raise ConfigError(f"{config.source or 'server'}: no TLS context offering HTTP/2")
        self._config = config
        self._settings = settings
        self._connecting = connecting
        """Shared by many connections: how many of them may be connecting at once."""
        self._scheme = url.scheme
        self._authority = url.netloc.rpartition("@")[2]
        self._prefix = url.path.rstrip("/")
        self._live: _Live | None = None
        self._connected = trio.Event()
        self._queued: trio.Event | None = None
        """Set when :meth:`run`'s turn to connect comes; None while it is not waiting for one."""
        self.opened = 0
        """Connections made since the start (growth means reconnects)."""

    @property
    def streams(self) -> int:
        """Streams open now."""
        return 0 if self._live is None else len(self._live.streams)

    # -- the connection task -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve the streams, connect again after a loss; until cancelled."""
        task_status.started()
        backoff = RECONNECT.start()
        while True:
            try:
                live = await self._connect()
            except (ConnectError, ProtocolError) as exc:
                log.info("HTTP/2 to %s: %s", self._config.server, exc)
                await trio.sleep(backoff.next_delay())
                continue
            self.opened += 1
            backoff.mark_healthy()
            self._live = live
            self._connected.set()
            error: Exception = ProtocolError("the HTTP/2 connection was closed")
            try:
                await self._read(live)
                error = ProtocolError("the server closed the HTTP/2 connection")
            except ProtocolError as exc:
                error = exc
            finally:
                self._connected = trio.Event()
                self._live = None
                live.error = error
                for stream in live.streams.values():
                    stream.fail(error)
                live.slot_freed.set()
                live.window_opened.set()
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(live.stream)
            log.info("HTTP/2 to %s: %s", self._config.server, error)
            await trio.sleep(backoff.next_delay())

    async def _connect(self) -> _Live:
        if self._connecting is None:
            return await self._connect_now()
        # Waiting for a slot is not connecting: the timeout starts with the attempt. A
        # thousand handshakes at once overrun a busy server's accept backlog, and a
        # handshake abandoned at its timeout is server CPU spent for nothing.
        turn = self._queued = trio.Event()
        try:
            async with self._connecting:
                self._queued = None
                turn.set()
                return await self._connect_now()
        finally:
            self._queued = None
            turn.set()

    async def _connect_now(self) -> _Live:
        context = self._config.http2_context if self._scheme == "https" else None
        with connect_errors(self._config.server, self._settings.connect_timeout):
            stream = await open_stream(
                self._host, self._port, context, self._config.tls_server_name or self._host
            )
            if isinstance(stream, trio.SSLStream) and stream.selected_alpn_protocol() != "h2":
                await trio.aclose_forcefully(stream)
                raise ProtocolError(f"{self._config.server} does not offer HTTP/2 (ALPN)")
            conn = h2.connection.H2Connection(_CLIENT_CONFIG)
            conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={
                    h2.settings.SettingCodes.ENABLE_PUSH: 0,
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                },
            )
            conn.initiate_connection()
            conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
            live = _Live(stream, conn)
            await live.flush()
        return live

    async def _read(self, live: _Live) -> None:
        while True:
            try:
                data = await live.stream.receive_some(_RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise ProtocolError(f"HTTP/2 connection lost: {exc}") from exc
            if not data:
                return
            try:
                events = live.conn.receive_data(data)
            except h2.exceptions.ProtocolError as exc:
                raise ProtocolError(f"HTTP/2 protocol error from the server: {exc}") from exc
            for event in events:
                self._dispatch(live, event)
            await live.flush()
            if live.error is not None:
                raise live.error

    def _dispatch(self, live: _Live, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = live.streams.get(event.stream_id)
            if stream is None:
                return
            for name, value in event.headers or ():
                key = name.decode() if isinstance(name, bytes) else name
                text = value.decode() if isinstance(value, bytes) else value
                if key == ":status":
                    stream.status = int(text)
                elif not key.startswith(":"):
                    stream.headers[key.lower()] = text
            if stream.status >= 200:
                stream.head.set()
        elif isinstance(event, h2.events.DataReceived):
            stream = live.streams.get(event.stream_id)
            if stream is None:
                live.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            if event.data:
                stream.data.append(event.data)
            padding = event.flow_controlled_length - len(event.data or b"")
            if padding:
                live.conn.acknowledge_received_data(padding, event.stream_id)
            stream.wake.set()
        elif isinstance(event, h2.events.StreamEnded):
            stream = live.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.head.set()
                stream.wake.set()
        elif isinstance(event, h2.events.StreamReset):
            stream = live.streams.get(event.stream_id)
            if stream is not None:
                stream.fail(ProtocolError(f"the server reset the stream (code {event.error_code})"))
        elif isinstance(event, h2.events.WindowUpdated):
            live.window_opened.set()
            live.window_opened = trio.Event()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # GOAWAY (kube-apiserver's --goaway-chance, a server stopping): no new stream
            # may start on it; its watches end now and start again on a new connection.
            live.error = ProtocolError(
                f"the server ended the HTTP/2 connection (GOAWAY {event.error_code})"
            )
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            live.slot_freed.set()
            live.slot_freed = trio.Event()

    # -- streams -------------------------------------------------------------------------------

    async def _ready(self) -> _Live:
        queued = self._queued
        if queued is not None:
            # Its turn among the connections being made: a queue, not a failure (each turn
            # is bounded by connect_timeout). Timed, the requests of 10,000 nodes queued
            # behind 16 turns failed after 10 s and were retried, each retry a relist.
            await queued.wait()
        wait = self._settings.connect_timeout
        with trio.move_on_after(wait):
            await self._connected.wait()
        live = self._live
        if live is None:
            raise ConnectError(f"no HTTP/2 connection to {self._config.server} within {wait:g}s")
        return live

    def _target(self, path: str, params: Mapping[str, str] | None) -> str:
        if not path.startswith("/") or not path.isascii() or " " in path:
            raise InputError(f"request path must be an absolute, escaped path, got {path[:80]!r}")
        target = self._prefix + path
        if params:
            target += ("&" if "?" in path else "?") + urlencode(params)
        return target

    async def _open(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[_Live, int, _Stream]:
        target = self._target(path, params)
        live = await self._ready()
        if live.error is not None:
            raise live.error  # ending (GOAWAY): the next connection takes new streams
        while live.conn.open_outbound_streams >= live.conn.remote_settings.max_concurrent_streams:
            await live.slot_freed.wait()  # a stream ended, or the limit changed
            if live.error is not None:
                raise live.error
        fields = [
            (":method", method),
            (":scheme", self._scheme),
            (":authority", self._authority),
            (":path", target),
            ("user-agent", f"kubemock-fleet/{__version__}"),
            ("accept", "application/json"),
        ]
        for extra in (await self._config.auth.headers(), headers or {}):
            fields += [(name.lower(), value) for name, value in extra.items()]
        if content_type:
            fields.append(("content-type", content_type))
        if body is not None or method in _BODY_METHODS:
            fields.append(("content-length", str(len(body or b""))))
        stream_id = live.conn.get_next_available_stream_id()
        stream = _Stream()
        live.streams[stream_id] = stream
        try:
            live.conn.send_headers(stream_id, fields, end_stream=not body)
            await live.flush()
            view = memoryview(body or b"")
            while view:
                size = min(
                    len(view),
                    live.conn.local_flow_control_window(stream_id),
                    live.conn.max_outbound_frame_size,
                )
                if size <= 0:
                    await live.window_opened.wait()
                    if live.error is not None:
                        raise live.error
                    continue
                live.conn.send_data(stream_id, bytes(view[:size]), end_stream=size == len(view))
                view = view[size:]
                await live.flush()
        except h2.exceptions.H2Error as exc:
            self._close(live, stream_id)
            raise ProtocolError(f"HTTP/2: cannot send {method} {path}: {exc}") from exc
        except BaseException:
            self._close(live, stream_id)
            raise
        return live, stream_id, stream

    def _close(self, live: _Live, stream_id: int) -> None:
        """Forget a stream, resetting it if it is still open (the reader went away)."""
        stream = live.streams.pop(stream_id, None)
        if stream is not None and not stream.ended and live.error is None:
            try:
                live.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.H2Error:
                pass  # closed meanwhile
        live.slot_freed.set()
        live.slot_freed = trio.Event()

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
        await self._ready()  # the connection first: request_timeout is for the answer
        with answer_within(self._settings.request_timeout, f"{method} {path}: no whole answer"):
            live, stream_id, stream = await self._open(
                method, path, params, body, content_type, headers
            )
            try:
                await stream.head.wait()
                if not stream.status and stream.error is not None:
                    raise stream.error  # no answer; else what came is read first
                content = await _H2Response(live, stream_id, stream).aread()
            finally:
                self._close(live, stream_id)
                with trio.CancelScope(shield=True):
                    await _quiet_flush(live)
        return Response(stream.status, content, stream.headers)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[_H2Response]:
        """A streamed answer on a stream of the connection; reset when the ``async with`` ends
        before the server ended it."""
        live, stream_id, stream = await self._open(method, path, params, None, None, headers)
        try:
            with answer_within(
                self._settings.request_timeout, f"{method} {path}: no response head"
            ):
                await stream.head.wait()
            if not stream.status and stream.error is not None:
                raise stream.error  # no answer; else what came is read first
            yield _H2Response(live, stream_id, stream)
        finally:
            self._close(live, stream_id)
            with trio.CancelScope(shield=True):
                await _quiet_flush(live)


async def _quiet_flush(live: _Live) -> None:
    """Send a stream's reset if the connection is still there; a lost one is the reader's."""
    if live.error is None:
        try:
            await live.flush()
        except ProtocolError:
            pass
