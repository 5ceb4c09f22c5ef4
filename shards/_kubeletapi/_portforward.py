"""``/portForward/{ns}/{pod}``: a scripted responder on every forwarded port.

Three ways in, as a kubelet serves them:

* SPDY/3.1 with ``portforward.k8s.io`` (kubectl ≤ 1.30, and kube-apiserver ≥ 1.31 towards a
  kubelet): per local connection, an ``error`` and a ``data`` stream sharing a
  ``requestID`` and naming the ``port`` (:class:`PortForwardSession`);
* the same SPDY tunnelled in a WebSocket, ``SPDY/3.1+portforward.k8s.io`` (kubectl ≥ 1.31,
  passed through by kube-apiserver ≤ 1.30 and the sandbox; ``_wsstream``);
* the kubelet's own WebSocket protocol, ``v4.channel.k8s.io`` (or its base64 form) with
  ``?ports=a,b`` (the official Python client's ``portforward``): channels ``2i`` (data) and
  ``2i+1`` (error) for the i-th port, each message led by its channel byte, and the server's
  first message on every channel the port, little-endian uint16; one connection per port
  (:func:`serve_channels`).

The data stream is the connection to that port in the pod; here, a responder answers on
it, by pod annotation ``fleet.mock.zhizuqiu.cn/port.<port>``:

* ``echo``: every byte back (a TCP echo server);
* JSON ``{"status": 200, "body": "...", "headers": {...}}``: that HTTP answer to every
  request on the connection (keep-alive, request bodies read and dropped);
* unset: HTTP 200 with ``kubemock-fleet: <ns>/<pod> port <port>: <method> <path>``.

When the client ends its side (FIN), the responder ends, and the server FINs both streams
of the pair, as a kubelet does once the container's connection closes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable

import trio

from shards._kubeletapi._spdy import SpdyConnection
from shards._kubeletapi._view import PodInfo
from shards._kubeletapi._wsstream import WebSocketStream

__all__ = [
    "ANNOTATION_PORT",
    "CHANNEL_PROTOCOLS",
    "PORTFORWARD_PROTOCOL",
    "TUNNEL_PROTOCOL",
    "PortForwardSession",
    "parse_ports",
    "serve_channels",
]

ANNOTATION_PORT = "fleet.mock.zhizuqiu.cn/port."
"""``<this><port>``: the responder of one port (see the module docstring)."""
PORTFORWARD_PROTOCOL = "portforward.k8s.io"
TUNNEL_PROTOCOL = "SPDY/3.1+" + PORTFORWARD_PROTOCOL
"""The WebSocket subprotocol of SPDY tunnelled in a WebSocket (client-go's tunneling dialer)."""
CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "")
"""The kubelet's WebSocket port-forward: binary, base64 text, and (none offered) binary."""
MAX_PORTS = 64
"""Ports one WebSocket port-forward may name (each is two channels of one byte's 256)."""
CONNECTION_BUFFER = 64
"""Data frames buffered per forwarded connection before the reader waits."""
MAX_REQUEST_HEAD = 64 * 1024
"""An HTTP request head larger than this ends the connection."""
_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

Send = Callable[[bytes], Awaitable[None]]


async def _echo(receive: trio.MemoryReceiveChannel[bytes], send: Send) -> None:
    async for data in receive:
        await send(data)


def _http_answer(status: int, body: bytes, headers: dict[str, str], close: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}"]
    merged = {"Content-Type": "text/plain; charset=utf-8", **headers}
    merged["Content-Length"] = str(len(body))
    if close:
        merged["Connection"] = "close"
    lines += [f"{k}: {v}" for k, v in merged.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _http(
    receive: trio.MemoryReceiveChannel[bytes],
    send: Send,
    answer: Callable[[str, str], tuple[int, bytes, dict[str, str]]],
) -> None:
    buf = bytearray()
    async for data in receive:
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            fields = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in head[1:])
            }
            length = int(fields.get("content-length", "0") or 0)
            if len(buf) < end + 4 + length:
                break  # the body is still coming
            del buf[: end + 4 + length]
            method, _, rest = head[0].partition(" ")
            path = rest.rpartition(" ")[0] or rest
            close = fields.get("connection", "").lower() == "close"
            status, body, headers = answer(method, path)
            await send(_http_answer(status, body, headers, close))
            if close:
                return
        if len(buf) > MAX_REQUEST_HEAD:
            return


def responder(
    pod: PodInfo, port: int
) -> Callable[[trio.MemoryReceiveChannel[bytes], Send], Awaitable[None]]:
    """What answers on ``port`` of ``pod``."""
    script = pod.annotations.get(f"{ANNOTATION_PORT}{port}", "").strip()
    if script == "echo":
        return _echo
    fixed: tuple[int, bytes, dict[str, str]] | None = None
    if script:
        try:
            spec = json.loads(script)
            fixed = (
                int(spec.get("status", 200)),
                str(spec.get("body", "")).encode(),
                {str(k): str(v) for k, v in (spec.get("headers") or {}).items()},
            )
        except (ValueError, AttributeError, TypeError):
            fixed = None

    def answer(method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
        if fixed is not None:
            return fixed
        text = f"kubemock-fleet: {pod.namespace}/{pod.name} port {port}: {method} {path}\n"
        return 200, text.encode(), {}

    async def run(receive: trio.MemoryReceiveChannel[bytes], send: Send) -> None:
        await _http(receive, send, answer)

    return run


class PortForwardSession(SpdyConnection):
    """One port-forward connection: stream pairs by ``requestID``, a responder each."""

    def __init__(
        self, stream: trio.abc.Stream, buffered: bytes, pod: PodInfo, nursery: trio.Nursery
    ) -> None:
        super().__init__(stream, buffered)
        self.pod = pod
        self._nursery = nursery
        self._pairs: dict[str, dict[str, int]] = {}
        self._inputs: dict[int, trio.MemorySendChannel[bytes]] = {}

    async def opened(self, stream_id: int, headers: dict[str, str], fin: bool) -> None:
        kind = headers.get("streamtype", "")
        request = headers.get("requestid") or headers.get("port", "")
        try:
            port = int(headers.get("port", ""))
        except ValueError:
            port = 0
        if kind not in ("data", "error"):
            return
        pair = self._pairs.setdefault(request, {})
        pair[kind] = stream_id
        if kind == "error" and not 0 < port < 65536:
            message = f'invalid port "{headers.get("port", "")}"'
            await self.send_data(stream_id, message.encode(), fin=True)
            return
        pair["port"] = port
        if "data" in pair and "error" in pair:
            send, receive = trio.open_memory_channel[bytes](CONNECTION_BUFFER)
            self._inputs[pair["data"]] = send
            self._nursery.start_soon(self._forward, pair, receive)

    async def received(self, stream_id: int, data: bytes, fin: bool) -> None:
        send = self._inputs.get(stream_id)
        if send is None:
            return
        try:
            if data:
                await send.send(data)
        except trio.BrokenResourceError:  # the responder is done with this connection
            pass
        if fin:
            send.close()

    def done(self) -> None:
        for send in self._inputs.values():
            send.close()

    async def _forward(
        self, pair: dict[str, int], receive: trio.MemoryReceiveChannel[bytes]
    ) -> None:
        data_id, error_id = pair["data"], pair["error"]

        async def send(data: bytes) -> None:
            await self.send_data(data_id, data)

        try:
            async with receive:
                await responder(self.pod, pair["port"])(receive, send)
            await self.send_data(data_id, b"", fin=True)
            await self.send_data(error_id, b"", fin=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._inputs.pop(data_id, None)


def parse_ports(values: list[str]) -> list[int]:
    """``?ports=`` (repeated, comma-separated) as the kubelet reads it; ValueError names the
    fault."""
    if not values:
        raise ValueError('query parameter "port" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise ValueError('query parameter "port" cannot be empty')
        for item in value.split(","):
            if not item.isdigit() or int(item) > 65535:
                raise ValueError(f'unable to parse "{value}" as a port')
            if int(item) < 1:
                raise ValueError(f'port "{value}" must be > 0')
            ports.append(int(item))
    if len(ports) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports may be forwarded on one connection")
    return ports


async def serve_channels(ws: WebSocketStream, pod: PodInfo, ports: list[int], text: bool) -> None:
    """The kubelet's WebSocket port-forward: one responder per port, until the client closes
    the WebSocket or every responder is done (then the kubelet closes it)."""

    async def send(channel: int, data: bytes) -> None:
        if text:
            await ws.send_message(bytes([ord("0") + channel]) + base64.b64encode(data), text=True)
        else:
            await ws.send_message(bytes([channel]) + data)

    inputs: list[trio.MemorySendChannel[bytes]] = []
    outputs: list[trio.MemoryReceiveChannel[bytes]] = []
    for _ in ports:
        sender, receiver = trio.open_memory_channel[bytes](CONNECTION_BUFFER)
        inputs.append(sender)
        outputs.append(receiver)
    try:
        for i, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            await send(2 * i, prefix)
            await send(2 * i + 1, prefix)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return

    async def forward(i: int, port: int) -> None:
        async def data(payload: bytes) -> None:
            await send(2 * i, payload)

        try:
            async with outputs[i]:
                await responder(pod, port)(outputs[i], data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def read(cancel: trio.CancelScope) -> None:
        try:
            while (message := await ws.receive_message()) is not None:
                if not message:
                    continue
                channel = message[0] - ord("0") if text else message[0]
                payload = base64.b64decode(message[1:]) if text else message[1:]
                if channel % 2 == 0 and 0 <= channel // 2 < len(ports) and payload:
                    try:
                        await inputs[channel // 2].send(payload)
                    except trio.BrokenResourceError:  # that responder is done
                        pass
        except ValueError:  # bad base64: the connection is ended, as on any bad frame
            pass
        finally:
            for sender in inputs:
                sender.close()
        cancel.cancel()  # the client is gone: nothing left to answer

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, nursery.cancel_scope)
        async with trio.open_nursery() as responders:
            for i, port in enumerate(ports):
                responders.start_soon(forward, i, port)
        await ws.close()  # every responder done: the kubelet closes the connection
        nursery.cancel_scope.cancel()
