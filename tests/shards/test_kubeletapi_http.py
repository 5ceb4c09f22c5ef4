"""The kubelet API's own HTTP/1.1 framing (``shards._kubeletapi._http``), byte by byte over
real TLS on loopback: what h11 did for it before (heads, bodies, keep-alive, errors)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio
import trustme

from shards._kubeletapi._http import MAX_BODY_BYTES, Reply, Request, serve_connection

SEEN: list[Request] = []


async def _handler(request: Request) -> Reply:
    SEEN.append(request)
    return Reply(200, f"{request.method} {request.path}\n".encode())


@asynccontextmanager
async def _connected() -> AsyncIterator[trio.SSLStream[trio.SocketStream]]:
    """A TLS client connection (with a client certificate) to ``serve_connection``."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.verify_mode = ssl.CERT_OPTIONAL
    server_context.load_verify_locations(cadata=ca.cert_pem.bytes().decode())
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    ca.issue_cert("x", common_name="system:metrics-server").configure_cert(client_context)
    SEEN.clear()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                trio.serve_tcp,
                partial(serve_connection, context=server_context, handler=_handler),
                0,
                host="127.0.0.1",
            )
        )
        port = listeners[0].socket.getsockname()[1]
        raw = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(raw, client_context, server_hostname="localhost")
        try:
            await stream.do_handshake()
            yield stream
        finally:
            await trio.aclose_forcefully(stream)
            nursery.cancel_scope.cancel()


async def _read_all(stream: trio.SSLStream[trio.SocketStream]) -> bytes:
    """Everything until the server closes."""
    out = b""
    try:
        while data := await stream.receive_some():
            out += data
    except trio.BrokenResourceError:
        pass
    return out


async def _read_answers(stream: trio.SSLStream[trio.SocketStream], count: int) -> bytes:
    """``count`` answers of ``_handler`` (each ends with its one-line body)."""
    out = b""
    while out.count(b"\r\n\r\n") < count or not out.endswith(b"\n"):
        out += await stream.receive_some()
    return out


async def test_pipelined_requests_on_one_connection_each_answered_in_turn() -> None:
    async with _connected() as stream:
        await stream.send_all(
            b"GET /nodes/n1/metrics/resource HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /containerLogs/ns/p%20q/app?tailLines=2&follow=true HTTP/1.1\r\n"
            b"Host: x\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        )
        out = await _read_answers(stream, 2)
        answers = []
        for body in (b"GET /nodes/n1/metrics/resource\n", b"GET /containerLogs/ns/p q/app\n"):
            answers.append(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
        assert out == b"".join(answers)
    first, second = SEEN
    assert (first.user, first.query) == ("system:metrics-server", [])
    assert second.query == [("tailLines", "2"), ("follow", "true")]
    assert second.headers["x-a"] == "1,2"  # repeated headers joined, names lower-cased


async def test_a_body_is_read_and_dropped_by_length_or_chunks() -> None:
    async with _connected() as stream:
        await stream.send_all(
            b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
            b"GET /c HTTP/1.1\r\n\r\n"
        )
        out = await _read_answers(stream, 3)
    assert [r.path for r in SEEN] == ["/a", "/b", "/c"]
    assert out.count(b"HTTP/1.1 200 OK") == 3


async def test_head_gets_the_head_only() -> None:
    async with _connected() as stream:
        await stream.send_all(b"HEAD /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n")
        out = await _read_answers(stream, 2)
    head, _, rest = out.partition(b"\r\n\r\n")
    assert b"content-length: 8" in head  # the GET's length, no body
    assert rest.startswith(b"HTTP/1.1 200 OK")


async def test_connection_close_and_http_10_close_after_the_answer() -> None:
    for request in (
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET /x HTTP/1.0\r\n\r\n",
    ):
        async with _connected() as stream:
            await stream.send_all(request)
            out = await _read_all(stream)
        assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out
        assert out.endswith(b"GET /x\n")


async def test_malformed_requests_are_refused_and_closed() -> None:
    cases = {
        b"NONSENSE\r\n\r\n": b"HTTP/1.1 400 Bad Request",
        b"GET /x HTTP/1.1\r\nno colon\r\n\r\n": b"HTTP/1.1 400 Bad Request",
        b"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n": b"HTTP/1.1 400 Bad Request",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n": b"HTTP/1.1 501 Not Implemented",
        b"POST /x HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1): (
            b"HTTP/1.1 413 Request Entity Too Large"
        ),
        b"GET /x HTTP/1.1\r\nX: " + b"a" * 70_000: b"HTTP/1.1 431 Request Header Fields Too Large",
    }
    for request, status in cases.items():
        async with _connected() as stream:
            await stream.send_all(request)
            out = await _read_all(stream)
        assert out.startswith(status + b"\r\n"), (request[:40], out)
        assert b"connection: close" in out
        assert SEEN == []
