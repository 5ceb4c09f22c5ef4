"""The sandbox's lean HTTP/1.1 front door (``fleet.sandbox._http1``) and its hand-off of HTTP/2 to hypercorn.

The rest of tests/sandbox drives it over TLS (httpx speaks HTTP/1.1, kubectl
negotiates h2); these cover what they do not: cleartext h2c (prior knowledge
and ``Upgrade: h2c``), chunked request bodies, ``Expect: 100-continue``, HEAD,
keep-alive, malformed requests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox


@pytest.fixture
async def plain(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[RunningSandbox]:
    running: RunningSandbox = await nursery.start(
        serve_sandbox, SandboxSettings(port=0, tls=False, kubeconfig_out=tmp_path / "kc")
    )
    yield running


async def _raw(url: str, data: bytes, until: bytes | None = None) -> bytes:
    """Send ``data`` on a fresh connection; what comes back until EOF (or ``until`` is seen)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.move_on_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
                if until is not None and until in out:
                    break
        return out


async def test_h2c_prior_knowledge_goes_to_hypercorn(plain: RunningSandbox) -> None:
    async with httpx.AsyncClient(http1=False, http2=True, base_url=plain.url) as c:
        for _ in range(2):
            r = await c.get("/api/v1/namespaces")
            assert r.http_version == "HTTP/2" and r.status_code == 200
            assert len(r.json()["items"]) == 4


async def test_upgrade_h2c_goes_to_hypercorn(plain: RunningSandbox) -> None:
    out = await _raw(
        plain.url,
        b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        until=b"\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 101 ")


async def test_http1_keep_alive_head_chunked_and_expect(plain: RunningSandbox) -> None:
    async with httpx.AsyncClient(base_url=plain.url) as c:
        r = await c.get("/version")
        assert r.status_code == 200 and r.http_version == "HTTP/1.1" and "date" in r.headers
        r = await c.head("/version")
        assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0

        async def body() -> AsyncIterator[bytes]:
            yield b'{"apiVersion":"v1","kind":"ConfigMap",'
            yield b'"metadata":{"name":"chunked"}}'

        r = await c.post(
            "/api/v1/namespaces/default/configmaps",
            content=body(),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 201 and r.json()["metadata"]["name"] == "chunked"
    cm = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"expect"}}'
    out = await _raw(
        plain.url,
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nExpect: 100-continue\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n" % len(cm) + cm,
    )
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n")
    assert b"connection: close\r\n" in out


async def test_two_requests_in_one_write_and_a_bad_one(plain: RunningSandbox) -> None:
    out = await _raw(
        plain.url,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    out = await _raw(plain.url, b"NOT A REQUEST\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
