"""``/exec`` and ``/attach``: the channel protocols, over WebSocket or SPDY/3.1 (``_spdy``).

kubectl >= 1.30 opens ``pods/exec`` and ``pods/attach`` as a WebSocket offering
``v5.channel.k8s.io`` then ``v4.channel.k8s.io``; older kubectl speaks SPDY/3.1 (one stream
per channel, ``_spdy``), and so does kube-apiserver >= 1.30 towards a kubelet (it translates
kubectl's WebSocket). kube-apiserver <= 1.29 passes the upgrade through to the kubelet, and
so does the sandbox. On a WebSocket every binary message starts with its channel:

=====  ===========================================================================
0      stdin (client to server)
1, 2   stdout, stderr
3      the outcome: a ``metav1.Status`` (v4, v5): Success, or Failure with reason
       ``NonZeroExitCode`` and the exit code in ``details.causes[ExitCode]`` —
       kubectl exits with it, as with a real kubelet
4      terminal resize (``{"Width":..,"Height":..}``; read and ignored)
255    (v5 only) ``[255, 0]``: the client closed stdin
=====  ===========================================================================

What a command does comes from ``_commands`` (scripted per pod, built-ins, an interactive
shell with a prompt; with a tty the typed characters are echoed and Enter is ``\\r``, as
a pty does). ``attach`` echoes stdin lines to stdout until the client leaves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from shards._kubeletapi._commands import SHELLS, Outcome, run_argv, run_line
from shards._kubeletapi._http import Reply, Request, Upgrade
from shards._kubeletapi._portforward import (
    CHANNEL_PROTOCOLS,
    PORTFORWARD_PROTOCOL,
    TUNNEL_PROTOCOL,
    PortForwardSession,
    parse_ports,
    serve_channels,
)
from shards._kubeletapi._spdy import STREAM_CREATION_TIMEOUT, STREAM_PROTOCOLS, SpdySession
from shards._kubeletapi._view import PodInfo, ShardView
from shards._kubeletapi._wsstream import WebSocketStream

__all__ = ["PROTOCOLS", "Streams"]

log = logging.getLogger("shards.kubeletapi")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""Offered by kubectl >= 1.30 in this order; the first both sides know is chosen."""
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
STDIN_BUFFER = 64
"""stdin messages buffered for the command (kubectl sends one per read of the terminal)."""
MAX_MESSAGE_BYTES = 1024 * 1024
"""A client message larger than this ends the session (kubectl sends at most 32 KiB)."""
PROMPT = "# "
WEBSOCKET_START = 0.1
"""Seconds from a WebSocket upgrade to the command's first output, as a container runtime
takes to start a process: client-go registers its channels in a goroutine of its own
after the upgrade, and a message before that is dropped ("Unknown stream id 3, discarding
message": kubectl 1.31 lost an instant `exit 3`'s status and exited 1, on a loaded box)."""
CLOSE_GRACE = 5.0
"""Seconds the client has, once the status is sent, to read it and close the connection
(kubectl closes at once; a client that does not is then closed on)."""
_RECEIVE = 64 * 1024


def _list(header: str) -> list[str]:
    return [p.strip() for p in header.split(",") if p.strip()]


def _true(request: Request, name: str) -> bool:
    return (request.arg(name) or "").lower() in ("1", "true")


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def exit_status(code: int, argv: list[str]) -> dict[str, Any]:
    """The Status kubectl reads on the error channel (the kubelet's for an exit code)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            f"command terminated with non-zero exit code: error executing command "
            f"[{' '.join(argv)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def missing_status(argv: list[str]) -> dict[str, Any]:
    """What a runtime says when the binary is not there (kubectl: ``Internal error occurred``)."""
    name = argv[0] if argv else ""
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "Internal error occurred: error executing command in container: failed to exec in "
            f"container: OCI runtime exec failed: exec failed: unable to start container process: "
            f'exec: "{name}": executable file not found in $PATH: unknown'
        ),
        "reason": "InternalError",
        "code": 500,
        "details": {"causes": [{"message": f'exec: "{name}": executable file not found in $PATH'}]},
    }


class _Session:
    """One upgraded connection: frames in and out, stdin as a channel."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes, protocol: str) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.SERVER, trailing_data=buffered)
        self.v5 = protocol.startswith("v5.")
        self._lock = trio.Lock()
        self.stdin_send, self.stdin = trio.open_memory_channel[bytes](STDIN_BUFFER)
        self.closed = trio.Event()
        self.ready = trio.Event()
        self.ready.set()  # every channel is there with the upgrade

    async def _write(self, data: bytes | None) -> None:
        if data:
            async with self._lock:
                await self.stream.send_all(data)

    async def send(self, channel: int, data: bytes) -> None:
        if data or channel == ERROR:
            await self._write(self.ws.send(BytesMessage(data=bytes([channel]) + data)))

    async def close(self) -> None:
        try:
            await self._write(self.ws.send(CloseConnection(code=1000)))
        except Exception:  # already closing: nothing more to say
            pass

    async def read(self) -> None:
        """Frames from the client until it closes: stdin onto the channel, the rest handled."""
        partial = bytearray()
        try:
            events = list(self.ws.events())  # frames that came with the upgrade request
            while True:
                for event in events:
                    if isinstance(event, BytesMessage | TextMessage):
                        raw = event.data
                        partial += raw.encode() if isinstance(raw, str) else raw
                        if len(partial) > MAX_MESSAGE_BYTES:
                            return
                        if event.message_finished:
                            await self._message(bytes(partial))
                            partial = bytearray()
                    elif isinstance(event, Ping):
                        if self.ws.state is ConnectionState.OPEN:
                            await self._write(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        # Answered only if we had not closed first: after our own Close
                        # (the command ended) the client's is the reply, and the
                        # connection is CLOSED (kube-apiserver 1.24 relaying kubectl 1.33).
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._write(self.ws.send(event.response()))
                        return
                received = await self.stream.receive_some(_RECEIVE)
                self.ws.receive_data(bytes(received) if received else None)
                events = list(self.ws.events())
                if not received:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError):
            return
        finally:
            self.closed.set()
            self.stdin_send.close()

    async def _message(self, data: bytes) -> None:
        if not data:
            return
        channel, payload = data[0], data[1:]
        if channel == STDIN and payload:
            await self.stdin_send.send(payload)
        elif channel == CLOSE and self.v5 and payload[:1] == bytes([STDIN]):
            self.stdin_send.close()


Session = _Session | SpdySession
"""What a command is run against: ``stdin``, ``send(channel, data)``, ``closed``, ``close()``."""


class Streams:
    """Answers ``/exec`` and ``/attach`` (``KubeletServer.exec``)."""

    def __init__(self, view: ShardView, wall: Callable[[], datetime]) -> None:
        self.view = view
        self._wall = wall

    async def handle(self, parts: list[str], request: Request) -> Reply | Upgrade:
        kind = parts[0]
        if kind == "portForward" and len(parts) == 3:
            return self._port_forward(parts[1], parts[2], request)
        if kind not in ("exec", "attach") or len(parts) != 4:
            return Reply(404, b"404 page not found\n")
        _, namespace, name, container = parts
        pod = self.view.pod(namespace, name)
        if pod is None:
            return Reply(404, f'pod "{name}" in namespace "{namespace}" not found\n'.encode())
        if pod.container(container) is None:
            return Reply(404, f'container not found ("{container}")\n'.encode())
        argv = [v for k, v in request.query if k == "command"]
        tty = _true(request, "tty")
        stdin = _true(request, "stdin") or _true(request, "input")
        stdout = _true(request, "stdout") or _true(request, "output")
        stderr = _true(request, "stderr") or _true(request, "error")
        if kind == "exec" and not argv:
            return Reply(400, b"you must specify at least 1 command\n")
        upgrade = request.headers.get("upgrade", "").lower()
        make: Callable[[trio.abc.Stream, bytes], Session]
        if upgrade.startswith("spdy/"):
            offered = _list(request.headers.get("x-stream-protocol-version", ""))
            protocol = next((p for p in STREAM_PROTOCOLS if p in offered), None)
            if protocol is None:
                return Reply(
                    400, f"unable to upgrade: none of the protocols {offered} is served\n".encode()
                )
            wanted = {STDIN: stdin, STDOUT: stdout, STDERR: stderr and not tty, RESIZE: tty}
            expected = {ERROR} | {channel for channel, asked in wanted.items() if asked}
            headers = [
                ("connection", "Upgrade"),
                ("upgrade", "SPDY/3.1"),
                ("x-stream-protocol-version", protocol),
            ]

            def make(stream: trio.abc.Stream, buffered: bytes) -> Session:
                return SpdySession(stream, buffered, expected)

            start_after = 0.0  # the client opened its streams: nothing it can miss

        elif upgrade == "websocket" and "sec-websocket-key" in request.headers:
            offered = _list(request.headers.get("sec-websocket-protocol", ""))
            protocol = next((p for p in PROTOCOLS if p in offered), None)
            if protocol is None:
                return Reply(
                    400,
                    f"none of the offered subprotocols {offered} is served; "
                    f"supported: {list(PROTOCOLS)}\n".encode(),
                )
            headers = [
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", accept_key(request.headers["sec-websocket-key"])),
                ("sec-websocket-protocol", protocol),
            ]

            def make(stream: trio.abc.Stream, buffered: bytes) -> Session:
                return _Session(stream, buffered, protocol)

            start_after = WEBSOCKET_START

        else:
            return Reply(400, b"Upgrade request required\n")

        async def run(stream: trio.abc.Stream, buffered: bytes) -> None:
            session = make(stream, buffered)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.read)
                with trio.move_on_after(STREAM_CREATION_TIMEOUT):
                    await session.ready.wait()
                if not session.ready.is_set():
                    log.info(
                        "kubelet API: %s %s/%s: streams not opened in time", kind, namespace, name
                    )
                    nursery.cancel_scope.cancel()
                    return

                async def out(channel: int, text: str) -> None:
                    if text and (stdout if channel == STDOUT else stderr or tty):
                        data = text.replace("\n", "\r\n") if tty else text
                        await session.send(STDOUT if tty else channel, data.encode())

                await trio.sleep(start_after)
                if kind == "attach":
                    status = await self._attach(session, out, stdin)
                else:
                    status = await self._exec(session, out, argv, pod, container, tty, stdin)
                try:
                    await session.send(ERROR, json.dumps(status).encode())
                    await session.close()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass
                # The client closes once it has read the status; until then its last frames
                # (stdin's end, racing a shell's `exit`) are still read. Closing on them
                # unread makes the kernel reset the connection, and the reset discards the
                # output and status still on their way (kubectl 1.27 then printed nothing
                # and exited 0, about one exec in 40 through kube-apiserver).
                with trio.move_on_after(CLOSE_GRACE):
                    await session.closed.wait()
                nursery.cancel_scope.cancel()

        return Upgrade(run, headers)

    def _port_forward(self, namespace: str, name: str, request: Request) -> Reply | Upgrade:
        pod = self.view.pod(namespace, name)
        if pod is None:
            return Reply(404, f'pod "{name}" in namespace "{namespace}" not found\n'.encode())
        upgrade = request.headers.get("upgrade", "").lower()
        if upgrade == "websocket" and "sec-websocket-key" in request.headers:
            return self._port_forward_websocket(pod, request)
        offered = _list(request.headers.get("x-stream-protocol-version", ""))
        if not upgrade.startswith("spdy/") or PORTFORWARD_PROTOCOL not in offered:
            return Reply(400, b"Upgrade request required\n")

        async def run(stream: trio.abc.Stream, buffered: bytes) -> None:
            async with trio.open_nursery() as nursery:
                session = PortForwardSession(stream, buffered, pod, nursery)
                await session.read()
                nursery.cancel_scope.cancel()

        headers = [
            ("connection", "Upgrade"),
            ("upgrade", "SPDY/3.1"),
            ("x-stream-protocol-version", PORTFORWARD_PROTOCOL),
        ]
        return Upgrade(run, headers)

    def _port_forward_websocket(self, pod: PodInfo, request: Request) -> Reply | Upgrade:
        """SPDY tunnelled in a WebSocket (kubectl >= 1.31), else the kubelet's channel
        protocol (``_portforward``)."""
        offered = _list(request.headers.get("sec-websocket-protocol", ""))
        run: Callable[[trio.abc.Stream, bytes], Awaitable[None]]
        if TUNNEL_PROTOCOL in offered:
            protocol = TUNNEL_PROTOCOL

            async def run(stream: trio.abc.Stream, buffered: bytes) -> None:
                tunnel = WebSocketStream(stream, buffered)
                async with trio.open_nursery() as nursery:
                    session = PortForwardSession(tunnel, b"", pod, nursery)
                    await session.read()
                    nursery.cancel_scope.cancel()
                await tunnel.close()

        else:
            chosen = next(
                (p for p in CHANNEL_PROTOCOLS if p in offered or not (p or offered)), None
            )
            if chosen is None:
                return Reply(
                    400,
                    f"none of the offered subprotocols {offered} is served; supported: "
                    f"{[TUNNEL_PROTOCOL, *filter(None, CHANNEL_PROTOCOLS)]}\n".encode(),
                )
            try:
                ports = parse_ports([v for k, v in request.query if k == "port"])
            except ValueError as exc:
                return Reply(400, f"{exc}\n".encode())
            protocol = chosen
            text = ".base64." in chosen

            async def run(stream: trio.abc.Stream, buffered: bytes) -> None:
                await serve_channels(WebSocketStream(stream, buffered), pod, ports, text)

        headers = [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-accept", accept_key(request.headers["sec-websocket-key"])),
        ]
        if protocol:
            headers.append(("sec-websocket-protocol", protocol))
        return Upgrade(run, headers)

    async def _exec(
        self,
        session: Session,
        out: Callable[[int, str], Any],
        argv: list[str],
        pod: PodInfo,
        container: str,
        tty: bool,
        stdin: bool,
    ) -> dict[str, Any]:
        if stdin and ((argv[0] in SHELLS and len(argv) == 1) or argv[-1] == "-i"):
            code = await self._shell(session, out, pod, container, tty)
            return exit_status(code, argv)
        if stdin and argv == ["cat"]:  # a pipe: stdin back out
            async for data in session.stdin:
                await out(STDOUT, data.decode("utf-8", "replace"))
            return exit_status(0, argv)
        outcome = run_argv(argv, pod, container, self._wall)
        if outcome.missing:
            return missing_status(argv)
        await self._report(outcome, out)
        return exit_status(outcome.exit_code, argv)

    async def _report(self, outcome: Outcome, out: Callable[[int, str], Any]) -> None:
        if outcome.sleep:
            await trio.sleep(outcome.sleep)
        await out(STDOUT, outcome.stdout)
        await out(STDERR, outcome.stderr)

    async def _shell(
        self,
        session: Session,
        out: Callable[[int, str], Any],
        pod: PodInfo,
        container: str,
        tty: bool,
    ) -> int:
        """An interactive shell: a prompt, lines run by ``_commands``, ``exit`` ends it."""
        if tty:
            await out(STDOUT, PROMPT)
        line = ""
        last = 0
        async for data in session.stdin:
            for char in data.decode("utf-8", "replace"):
                if tty and char in ("\x7f", "\b"):
                    if line:
                        line = line[:-1]
                        await session.send(STDOUT, b"\b \b")
                    continue
                if tty and char == "\x04" and not line:  # Ctrl-D on an empty line
                    await out(STDOUT, "exit\n")
                    return last
                if tty and char == "\x03":  # Ctrl-C
                    line = ""
                    await out(STDOUT, "^C\n" + PROMPT)
                    continue
                end = char == ("\r" if tty else "\n")
                if tty:
                    await session.send(STDOUT, b"\r\n" if end else char.encode())
                if not end:
                    line += char
                    continue
                outcome = run_line(line, pod, container, self._wall)
                line = ""
                await self._report(outcome, out)
                last = outcome.exit_code
                if outcome.exit_shell:
                    return last
                if tty:
                    await out(STDOUT, PROMPT)
        return last

    async def _attach(
        self, session: Session, out: Callable[[int, str], Any], stdin: bool
    ) -> dict[str, Any]:
        """The container's main process, as far as a fake can be one: stdin lines echoed."""
        if stdin:
            async for data in session.stdin:
                await out(STDOUT, data.decode("utf-8", "replace"))
        else:
            await session.closed.wait()
        return exit_status(0, [])
