"""One HTTP GET to a process's ``/metrics``, ``/healthz`` or ``/readyz`` on loopback, from trio.

The composition-root tests run on the autojump clock, where an httpx client's
timeouts would fire as soon as every task waits on the socket; this reads the
answer over a plain TCP stream instead (the endpoint closes after answering).
"""

from __future__ import annotations

import socket

import trio

__all__ = ["free_port", "get"]

MAX_ANSWER = 4 << 20
"""Bytes read at most: a whole /metrics exposition of a test's small fleet is far less."""


async def get(port: int, path: str) -> tuple[int, bytes]:
    """``GET path`` on ``127.0.0.1:port``: the status code and the body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while len(answer) < MAX_ANSWER:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def free_port() -> int:
    """A port free on loopback now, for a process's settings (as tests/test_metrics.py picks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
