"""A trivial HTTP/1.1 keep-alive server for client micro-benchmarks.

It answers every request with a fixed small JSON body (the size of a Lease the
apiserver returns after a renewal), so what a benchmark measures is the
*client's* cost per request. It runs in its own process (``python -m
bench._httpserver``, which prints the bound port on stdout) so that its CPU is
never counted against the client; it is written on asyncio's Protocol API
because that is the cheapest server the standard library offers, and a slow
server would only stretch wall time, never the client's CPU per request.

Heads are parsed by :func:`fleet.machinery.parse_request_head`, the project's one
HTTP/1.1 parser (what the sandbox's server uses); a broken one ends the process
with its :class:`~fleet.errors.ProtocolError`, which a benchmark should see.
Bodies are read by ``Content-Length``; chunked request bodies are not supported.
"""

from __future__ import annotations

import asyncio
import sys

from fleet.machinery import parse_request_head

__all__ = ["RESPONSE_BODY", "serve"]

# A coordination.k8s.io/v1 Lease as the apiserver returns it after a PUT/PATCH.
RESPONSE_BODY = (
    b'{"kind":"Lease","apiVersion":"coordination.k8s.io/v1","metadata":{"name":"node-00001",'
    b'"namespace":"kube-node-lease","uid":"6a1f0c3e-9f3c-4d5e-8a2b-1c2d3e4f5a6b",'
    b'"resourceVersion":"123456","creationTimestamp":"2024-01-01T00:00:00Z"},'
    b'"spec":{"holderIdentity":"node-00001","leaseDurationSeconds":40,'
    b'"renewTime":"2024-01-01T00:00:10.000000Z"}}'
)
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + RESPONSE_BODY
)


class _Http(asyncio.Protocol):
    """One connection: buffer bytes, answer each complete request in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        out = []
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                break
            length = parse_request_head(bytes(self._buf[:end])).content_length or 0
            total = end + 4 + length
            if len(self._buf) < total:
                break
            del self._buf[:total]
            out.append(_RESPONSE)
        if out and self._transport is not None:
            self._transport.write(b"".join(out))


async def serve(port: int = 0) -> None:
    """Serve on 127.0.0.1 until cancelled; print the bound port on stdout first."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(bound, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":  # pragma: no cover - run as a subprocess by bench.transport
    try:
        asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
    except KeyboardInterrupt:
        pass
