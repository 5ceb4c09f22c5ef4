"""HotTransport against a real local HTTP/1.1 server.

The server below parses requests with h11 (an implementation we did not
write), so every test also checks that the hand-written request framing is
valid HTTP/1.1. Responses are raw bytes, so tests can script broken servers:
mid-response closes, idle closes, chunked bodies with extensions and trailers.
"""

from __future__ import annotations

import gc
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest
import trio
import trustme

from fleet.errors import (
    ConnectError,
    InputError,
    NotFound,
    ProtocolError,
    ReadTimeout,
    TransportError,
    Unauthorized,
)
from fleet.kube._cluster import ClusterConfig
from fleet.kube._seam import BatchRequest, Response
from fleet.kube._transport import MAX_PIPELINE, HotTransport, HotTransportSettings


@dataclass
class Seen:
    """One request as the server parsed it."""

    conn: int
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


# What the server does with a request: bytes to write, then whether to close the connection.
Handler = Callable[[Seen], Awaitable[tuple[bytes, bool]]]


def reply(
    status: int = 200,
    body: bytes = b"{}",
    *,
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    head += "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode() + b"\r\n" + body


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    for i, piece in enumerate(pieces):
        ext = b";ext=1" if i == 0 else b""  # chunk extensions must be ignored
        out += b"%x%s\r\n%s\r\n" % (len(piece), ext, piece)
    return out + b"0\r\n" + trailer + b"\r\n"


async def ok(seen: Seen) -> tuple[bytes, bool]:
    return reply(body=b'{"ok":true}'), False


@dataclass
class Server:
    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: int = 0
    active: int = 0
    peak_active: int = 0
    conn_closed: trio.Event = field(default_factory=trio.Event)

    async def handle(self, stream: trio.abc.Stream) -> None:
        index = self.connections
        self.connections += 1
        try:
            await self._serve(index, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass  # a client that goes away (or fails TLS) ends its connection, not the server
        finally:
            self.closed += 1
            self.conn_closed.set()
            await trio.aclose_forcefully(stream)

    async def _serve(self, index: int, stream: trio.abc.Stream) -> None:
        parser = h11.Connection(h11.SERVER)
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = parser.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    parser.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    return
            assert request is not None
            seen = Seen(
                conn=index,
                method=request.method.decode(),
                target=request.target.decode(),
                headers={k.decode().lower(): v.decode() for k, v in request.headers},
                body=bytes(body),
            )
            self.seen.append(seen)
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            try:
                data, close = await self.handler(seen)
            finally:
                self.active -= 1
            if data:
                await stream.send_all(data)
            if close:
                return
            # h11 wants its own response events; we wrote raw bytes, so start a fresh parser
            # with whatever the client already pipelined.
            leftover, _ = parser.trailing_data
            parser = h11.Connection(h11.SERVER)
            if leftover:
                parser.receive_data(leftover)


ServeFn = Callable[..., Awaitable[tuple[Server, int]]]


@pytest.fixture
def serve(nursery: trio.Nursery) -> ServeFn:
    async def start(
        handler: Handler = ok, ssl_context: ssl.SSLContext | None = None
    ) -> tuple[Server, int]:
        server = Server(handler)
        listeners: list[trio.abc.Listener[trio.abc.Stream]] = list(
            await trio.open_tcp_listeners(0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]  # type: ignore[attr-defined]
        if ssl_context is not None:
            listeners = [
                trio.SSLListener(listener, ssl_context, https_compatible=True)
                for listener in listeners
            ]
        nursery.start_soon(trio.serve_listeners, server.handle, listeners)
        return server, port

    return start


def config(port: int, **kwargs: object) -> ClusterConfig:
    return ClusterConfig(server=f"http://127.0.0.1:{port}", **kwargs)  # type: ignore[arg-type]


class CountingAuth:
    def __init__(self) -> None:
        self.generation = 1
        self.invalidations = 0

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.generation}"}

    async def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


async def test_keep_alive_reuses_one_connection_and_frames_requests(serve: ServeFn) -> None:
    server, port = await serve()
    async with HotTransport(config(port), HotTransportSettings(connections=2)) as hot:
        for i in range(10):
            response = await hot.request(
                "PATCH",
                "/api/v1/namespaces/default/pods/p",
                params={"fieldManager": "fleet", "n": str(i)},
                body=b'{"a":1}',
                content_type="application/merge-patch+json",
                headers={"X-Extra": "yes"},
            )
            assert response.status == 200
            assert response.content == b'{"ok":true}'
            assert response.headers["content-type"] == "application/json"
        # POST without a body still says Content-Length: 0 (the apiserver needs it).
        await hot.request("POST", "/api/v1/namespaces")
        assert hot.statistics().opened == 1
    assert server.connections == 1
    first = server.seen[0]
    assert first.method == "PATCH"
    assert first.target == "/api/v1/namespaces/default/pods/p?fieldManager=fleet&n=0"
    assert first.body == b'{"a":1}'
    assert first.headers["content-type"] == "application/merge-patch+json"
    assert first.headers["content-length"] == "7"
    assert first.headers["host"] == f"127.0.0.1:{port}"
    assert first.headers["user-agent"].startswith("kubemock-fleet/")
    assert first.headers["x-extra"] == "yes"
    assert server.seen[-1].headers["content-length"] == "0"


async def test_concurrent_requests_never_exceed_the_connection_count(
    serve: ServeFn, autojump_clock: trio.abc.Clock
) -> None:
    async def slow(seen: Seen) -> tuple[bytes, bool]:
        await trio.sleep(1)
        return reply(), False

    server, port = await serve(slow)
    async with HotTransport(config(port), HotTransportSettings(connections=3)) as hot:
        start = trio.current_time()
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await hot.request("GET", "/api/v1/nodes")).status)

        async with trio.open_nursery() as nursery:
            for _ in range(12):
                nursery.start_soon(one)
            await trio.sleep(0.5)
            assert hot.statistics().waiting == 9
            assert hot.statistics().idle == 0
        # 12 one-second requests, three at a time: exactly four rounds.
        assert trio.current_time() - start == pytest.approx(4, abs=0.1)
        assert statuses == [200] * 12
        assert hot.statistics().idle == 3
    assert server.peak_active == 3
    assert server.connections == 3


async def test_chunked_response_with_extensions_and_trailers(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return chunked(b'{"items":', b"[1,2", b"]}", trailer=b"X-Trailer: 1\r\n"), False

    server, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        assert (await hot.request("GET", "/a")).content == b'{"items":[1,2]}'
        assert (await hot.request("GET", "/b")).content == b'{"items":[1,2]}'
    assert server.connections == 1


async def test_server_closing_mid_response_is_a_protocol_error_then_reconnects(
    serve: ServeFn,
) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.target == "/broken":
            return reply(body=b"x" * 100)[:-90], True  # promise 100 bytes, send 10, close
        return reply(), False

    server, port = await serve(handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        assert (await hot.request("GET", "/fine")).status == 200
        with pytest.raises(ProtocolError, match="mid-response"):
            await hot.request("GET", "/broken")
        assert (await hot.request("GET", "/fine")).status == 200
        assert hot.statistics().opened == 2
    assert server.connections == 2


async def test_connection_close_header_makes_a_new_connection(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return reply(headers=(("Connection", "close"),)), True

    server, port = await serve(handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        for _ in range(3):
            assert (await hot.request("GET", "/x")).status == 200
    assert server.connections == 3


async def test_idle_connection_closed_by_server_is_retried_on_a_fresh_one(serve: ServeFn) -> None:
    # The server answers, then drops the connection without saying so (an idle timeout).
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return reply(), True

    server, port = await serve(handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        assert (await hot.request("PUT", "/lease", body=b"{}")).status == 200
        await server.conn_closed.wait()
        assert (await hot.request("PUT", "/lease", body=b"{}")).status == 200
    assert server.connections == 2
    assert len(server.seen) == 2  # the request that met the dead socket was not seen twice


async def test_a_transport_closed_under_a_request_fails_that_request(
    serve: ServeFn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closed between a request's send and its read (a shard stopping while its writers
    still run): a TransportError for that request, not an AssertionError that ends its caller."""
    server, port = await serve(ok)
    sent = HotTransport._send

    async def send_then_close(self: HotTransport, conn: Any, payload: bytes) -> None:
        await sent(self, conn, payload)
        await self.aclose()

    monkeypatch.setattr(HotTransport, "_send", send_then_close)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        with pytest.raises(TransportError):
            await hot.request("GET", "/x")
        with pytest.raises(TransportError, match="closed"):
            await hot.request("GET", "/x")  # and the next one finds it closed
    assert len(server.seen) <= 1


async def test_fresh_connection_closed_without_answer_is_not_retried(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return b"", True

    server, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        with pytest.raises(ProtocolError, match="before the response head"):
            await hot.request("POST", "/api/v1/namespaces/default/pods", body=b"{}")
    assert len(server.seen) == 1


async def test_garbage_status_line_is_a_protocol_error(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return b"SPDY/3 200 OK\r\n\r\n", False

    _, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        with pytest.raises(ProtocolError, match="bad status line"):
            await hot.request("GET", "/x")


async def test_body_without_framing_runs_to_eof(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return b"HTTP/1.0 200 OK\r\n\r\nuntil close", True

    server, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        assert (await hot.request("GET", "/x")).content == b"until close"
        assert (await hot.request("GET", "/x")).content == b"until close"
    assert server.connections == 2


async def test_head_and_204_have_no_body(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", False
        return b"HTTP/1.1 204 No Content\r\n\r\n", False

    server, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        assert (await hot.request("HEAD", "/x")).content == b""
        assert (await hot.request("DELETE", "/x")).status == 204
        assert (await hot.request("HEAD", "/x")).status == 200
    assert server.connections == 1


async def test_401_invalidates_auth_and_retries_once(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.headers["authorization"] == "Bearer token-1":
            return reply(401, b'{"kind":"Status","reason":"Unauthorized","code":401}'), False
        return reply(body=b'{"ok":true}'), False

    server, port = await serve(handler)
    auth = CountingAuth()
    async with HotTransport(config(port, auth=auth)) as hot:
        response = await hot.request("PUT", "/lease", body=b"{}")
    assert response.status == 200
    assert auth.invalidations == 1
    assert [s.headers["authorization"] for s in server.seen] == ["Bearer token-1", "Bearer token-2"]
    assert [s.body for s in server.seen] == [b"{}", b"{}"]


async def test_401_twice_is_returned_and_maps_to_unauthorized(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return reply(401, b'{"kind":"Status","reason":"Unauthorized","message":"no"}'), False

    server, port = await serve(handler)
    auth = CountingAuth()
    async with HotTransport(config(port, auth=auth)) as hot:
        response = await hot.request("GET", "/x")
    assert response.status == 401
    with pytest.raises(Unauthorized):
        response.raise_for_status()
    assert len(server.seen) == 2
    assert auth.invalidations == 1


async def test_error_status_maps_through_the_seam(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return reply(
            404, b'{"kind":"Status","reason":"NotFound","message":"pods \\"p\\" not found"}'
        ), False

    _, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        with pytest.raises(NotFound, match="not found"):
            (await hot.request("GET", "/api/v1/namespaces/d/pods/p")).raise_for_status()


async def test_timeout_raises_read_timeout_and_drops_the_connection(
    serve: ServeFn, autojump_clock: trio.abc.Clock
) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.target == "/hang":
            await trio.sleep_forever()
        return reply(), False

    server, port = await serve(handler)
    settings = HotTransportSettings(connections=1, request_timeout=3)
    async with HotTransport(config(port), settings) as hot:
        start = trio.current_time()
        with pytest.raises(ReadTimeout, match="within 3s"):
            await hot.request("GET", "/hang")
        assert trio.current_time() - start == pytest.approx(3)
        assert (await hot.request("GET", "/ok")).status == 200
    assert server.connections == 2


async def test_connect_refused_is_a_connect_error() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    async with HotTransport(config(port)) as hot:
        with pytest.raises(ConnectError, match="cannot connect"):
            await hot.request("GET", "/x")


async def test_line_breaks_in_headers_and_bad_paths_are_refused(serve: ServeFn) -> None:
    server, port = await serve()
    async with HotTransport(config(port)) as hot:
        with pytest.raises(InputError, match="line break"):
            await hot.request("GET", "/x", headers={"X-A": "1\r\nX-Injected: 1"})
        with pytest.raises(InputError, match="absolute"):
            await hot.request("GET", "/x y")
        with pytest.raises(InputError, match="absolute"):
            await hot.request("GET", "api/v1")
    assert server.seen == []


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("kubernetes.default.svc").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_tls_with_server_name_override(serve: ServeFn, ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_contexts(ca)
    server, port = await serve(ok, ssl_context=server_ctx)
    cfg = ClusterConfig(
        server=f"https://127.0.0.1:{port}",
        ssl_context=client_ctx,
        tls_server_name="kubernetes.default.svc",
    )
    async with HotTransport(cfg) as hot:
        for _ in range(3):
            assert (await hot.request("GET", "/version")).content == b'{"ok":true}'
    assert server.connections == 1


async def test_tls_name_mismatch_is_a_connect_error(serve: ServeFn, ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_contexts(ca)
    _, port = await serve(ok, ssl_context=server_ctx)
    cfg = ClusterConfig(server=f"https://127.0.0.1:{port}", ssl_context=client_ctx)
    async with HotTransport(cfg) as hot:
        with pytest.raises(ConnectError, match="certificate"):
            await hot.request("GET", "/version")


WATCH_EVENTS = (
    b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n',
    b'{"type":"MODIFIED","object":{"metadata":{"name":"a"}}}\n',
    b'{"type":"DELETED","object":{"metadata":{"name":"a"}}}\n',
)


async def test_stream_uses_a_dedicated_connection_and_closes_when_cut_early(
    serve: ServeFn,
) -> None:
    async def watch_handler(seen: Seen) -> tuple[bytes, bool]:
        if "watch=true" not in seen.target:
            return reply(), False
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in WATCH_EVENTS)
        return head + body, False  # and the stream stays open: no terminating chunk

    server, port = await serve(watch_handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        assert (await hot.request("GET", "/api/v1/pods")).status == 200
        received = b""
        async with hot.stream("GET", "/api/v1/pods", params={"watch": "true"}) as stream:
            assert stream.status == 200
            assert stream.headers["transfer-encoding"] == "chunked"
            # The pool's one connection stays free for writes while the watch runs.
            assert hot.statistics().idle == 1
            assert (await hot.request("GET", "/api/v1/pods")).status == 200
            async for data in stream.aiter_bytes():
                received += data
                if received.count(b"\n") == 2:
                    break
        assert received == WATCH_EVENTS[0] + WATCH_EVENTS[1]
        with trio.fail_after(5):
            await server.conn_closed.wait()  # the server saw the watch connection go
        assert server.closed == 1
        assert server.connections == 2


async def test_stream_reads_to_the_end_and_retries_401(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.headers["authorization"] == "Bearer token-1":
            return reply(401, b'{"kind":"Status","reason":"Unauthorized"}'), False
        return chunked(*WATCH_EVENTS), False

    server, port = await serve(handler)
    auth = CountingAuth()
    async with HotTransport(config(port, auth=auth)) as hot:
        async with hot.stream("GET", "/api/v1/pods", params={"watch": "1"}) as stream:
            assert stream.status == 200
            assert await stream.aread() == b"".join(WATCH_EVENTS)
    assert auth.invalidations == 1
    assert len(server.seen) == 2


async def test_stream_error_answer_is_readable(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        return reply(410, b'{"kind":"Status","reason":"Expired","code":410}'), False

    _, port = await serve(handler)
    async with HotTransport(config(port)) as hot:
        async with hot.stream("GET", "/api/v1/pods", params={"watch": "1"}) as stream:
            assert stream.status == 410
            assert b"Expired" in await stream.aread()
            assert await stream.aread() == b""  # already consumed


# -- pipelining (request_batch) ----------------------------------------------------------------


def puts(n: int) -> list[BatchRequest]:
    return [
        BatchRequest(
            "PUT", f"/lease/{i}", {"fieldManager": "f"}, b'{"i":%d}' % i, "application/json"
        )
        for i in range(n)
    ]


async def test_batch_is_pipelined_on_one_connection_answers_in_order(serve: ServeFn) -> None:
    async def echo(seen: Seen) -> tuple[bytes, bool]:
        return reply(body=seen.body), False

    server, port = await serve(echo)
    async with HotTransport(config(port), HotTransportSettings(connections=4)) as hot:
        answers = await hot.request_batch(puts(MAX_PIPELINE + 6))
        assert [a.content for a in answers if isinstance(a, Response)] == [
            b'{"i":%d}' % i for i in range(MAX_PIPELINE + 6)
        ]
        assert hot.statistics().opened == 1  # two pipelines, one after the other
    assert server.connections == 1
    assert server.seen[3].target == "/lease/3?fieldManager=f"
    assert server.seen[3].headers["content-length"] == "7"


async def test_batch_connection_lost_mid_pipeline_keeps_answers_and_fails_the_rest(
    serve: ServeFn,
) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.target.startswith("/lease/3"):
            return b"", True  # read the request, then drop the connection unanswered
        return reply(body=seen.body), False

    server, port = await serve(handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        answers = await hot.request_batch(puts(6))
        assert [a.status for a in answers[:3] if isinstance(a, Response)] == [200, 200, 200]
        assert all(isinstance(a, ProtocolError) for a in answers[3:])
        # The connection was dropped; the next batch makes a new one and goes through.
        again = await hot.request_batch(puts(2))
        assert all(isinstance(a, Response) and a.status == 200 for a in again)
    assert server.connections == 2


async def test_batch_timed_out_mid_pipeline_never_hands_its_late_answers_to_the_next(
    serve: ServeFn, autojump_clock: trio.abc.Clock
) -> None:
    """The answers read before a timeout stand, the rest are ReadTimeouts; the late answers
    of the timed-out pipeline are never read as another batch's (the connection goes): a
    Lease lane that got someone else's answer would keep a wrong resourceVersion."""

    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.target.startswith("/lease/2") and seen.body == b'{"i":2}':
            await trio.sleep(30)  # applied, answered long after the client gave up
        return reply(body=seen.target.encode()), False

    server, port = await serve(handler)
    settings = HotTransportSettings(connections=1, request_timeout=10)
    async with HotTransport(config(port), settings) as hot:
        answers = await hot.request_batch(puts(5))
        assert [a.content for a in answers[:2] if isinstance(a, Response)] == [
            b"/lease/0?fieldManager=f",
            b"/lease/1?fieldManager=f",
        ]
        assert all(isinstance(a, ReadTimeout) for a in answers[2:])
        await trio.sleep(25)  # the old pipeline's answers are on their way meanwhile
        again = await hot.request_batch(puts(2)[::-1])
        assert [a.content for a in again if isinstance(a, Response)] == [
            b"/lease/1?fieldManager=f",
            b"/lease/0?fieldManager=f",
        ]
    assert server.connections == 2


async def test_batch_connection_close_answer_sends_the_rest_on_a_fresh_connection(
    serve: ServeFn,
) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.target.startswith("/lease/1"):
            return reply(body=seen.body, headers=(("Connection", "close"),)), True
        return reply(body=seen.body), False

    server, port = await serve(handler)
    async with HotTransport(config(port), HotTransportSettings(connections=1)) as hot:
        answers = await hot.request_batch(puts(4))
        assert [a.content for a in answers if isinstance(a, Response)] == [
            b'{"i":%d}' % i for i in range(4)
        ]
    assert server.connections == 2
    assert [s.target.split("?")[0] for s in server.seen] == [f"/lease/{i}" for i in range(4)]


async def test_batch_401_invalidates_auth_and_resends_those(serve: ServeFn) -> None:
    async def handler(seen: Seen) -> tuple[bytes, bool]:
        if seen.headers["authorization"] == "Bearer token-1" and seen.target.startswith("/lease/1"):
            return reply(401), False
        return reply(body=seen.headers["authorization"].encode()), False

    _, port = await serve(handler)
    auth = CountingAuth()
    async with HotTransport(config(port, auth=auth)) as hot:
        answers = await hot.request_batch(puts(3))
        assert [a.content for a in answers if isinstance(a, Response)] == [
            b"Bearer token-1",
            b"Bearer token-2",
            b"Bearer token-1",
        ]
    assert auth.invalidations == 1


async def test_batch_refused_connection_is_an_error_per_request() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    async with HotTransport(config(port)) as hot:
        answers = await hot.request_batch(puts(2))
    assert all(isinstance(a, ConnectError) for a in answers)


async def test_closing_in_a_cancelled_scope_closes_every_connection(
    serve: ServeFn, autojump_clock: trio.abc.Clock
) -> None:
    # The `async with` of a transport is most often left by a cancellation: the close must
    # not stop at its first checkpoint and leave the other connections to the GC.
    async def slow(seen: Seen) -> tuple[bytes, bool]:
        await trio.sleep(1)
        return reply(), True

    _server, port = await serve(slow)
    hot = HotTransport(config(port), HotTransportSettings(connections=3))
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(hot.request, "GET", "/api/v1/nodes")
    assert hot.statistics().opened == 3
    with trio.CancelScope() as scope:
        scope.cancel()
        await hot.aclose()
    del hot
    gc.collect()  # a socket left open would be reported here, as an error
