"""Slow and idle clients cannot hold the sandbox.

After a request head's first byte the rest must come within ``header_read_timeout``,
a body within ``body_read_timeout`` (408, then close); at most ``max_connections``
connections are served at once. Real sockets, real (short) delays.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox

TIMEOUT = 0.5


@pytest.fixture
async def strict(nursery: trio.Nursery, tmp_path: Path) -> RunningSandbox:
    settings = SandboxSettings(
        port=0,
        tls=False,
        kubeconfig_out=tmp_path / "kc",
        header_read_timeout=TIMEOUT,
        body_read_timeout=TIMEOUT,
        max_connections=8,
    )
    running: RunningSandbox = await nursery.start(serve_sandbox, settings)
    return running


async def _connect(url: str) -> trio.SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await trio.open_tcp_stream(host, int(port))


async def _until_closed(stream: trio.SocketStream, limit: float = 5.0) -> bytes:
    out = b""
    with trio.fail_after(limit):
        try:
            while chunk := await stream.receive_some(65536):
                out += chunk
        except trio.BrokenResourceError:
            pass
    return out


async def test_half_sent_heads_time_out(strict: RunningSandbox) -> None:
    streams = [await _connect(strict.url) for _ in range(6)]
    start = trio.current_time()
    for stream in streams:
        await stream.send_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n")
    for stream in streams:
        out = await _until_closed(stream)
        assert out.startswith(b"HTTP/1.1 408 "), out
        assert b"request head not complete within 0.5s" in out
        await stream.aclose()
    assert trio.current_time() - start < 10  # bounded: without the timeout they stay forever


async def test_half_sent_body_times_out(strict: RunningSandbox) -> None:
    stream = await _connect(strict.url)
    await stream.send_all(
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"kind"'
    )
    out = await _until_closed(stream)
    assert out.startswith(b"HTTP/1.1 408 "), out
    assert b"request body not complete within 0.5s" in out
    await stream.aclose()


async def test_connections_are_bounded(strict: RunningSandbox) -> None:
    held = [await _connect(strict.url) for _ in range(8)]  # idle: kept up to 75 s each
    await trio.sleep(0.1)
    extra = await _connect(strict.url)
    await extra.send_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await _until_closed(extra, 2) == b""  # closed at accept, unanswered
    await extra.aclose()
    for stream in held:
        await stream.aclose()
    with trio.fail_after(10):  # once the server has seen them go, new connections are served
        while True:
            fresh = await _connect(strict.url)
            await fresh.send_all(b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await _until_closed(fresh)
            await fresh.aclose()
            if answer:
                break
            await trio.sleep(0.05)
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_slow_but_steady_request_within_the_limits_is_served(
    strict: RunningSandbox,
) -> None:
    stream = await _connect(strict.url)
    for part in (b"GET /version HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
        await stream.send_all(part)
        await trio.sleep(TIMEOUT / 4)
    assert (await _until_closed(stream)).startswith(b"HTTP/1.1 200 ")
    await stream.aclose()
