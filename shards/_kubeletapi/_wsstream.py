"""A server WebSocket as a byte stream: what a port-forward over WebSocket runs on.

kubectl >= 1.31 (client-go's ``PortForwardWebsockets``, beta and on from 1.31) first asks for
``pods/portforward`` as a WebSocket offering ``SPDY/3.1+portforward.k8s.io``: SPDY/3.1,
byte for byte as over a plain upgrade, carried in binary WebSocket messages cut anywhere
(client-go's ``TunnelingConnection``); a Close (1000) is the end of the stream. A
kube-apiserver >= 1.31 unwraps the tunnel and speaks plain SPDY to the kubelet; older ones
(the real control plane's 1.24) and the sandbox pass the WebSocket through, so it arrives
here. :class:`WebSocketStream` makes it a ``trio.abc.Stream`` for ``_spdy`` to run on, and
gives whole messages to the kubelet's own WebSocket port-forward
(``v4.channel.k8s.io``, ``_portforward``).
"""

from __future__ import annotations

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

__all__ = ["MAX_MESSAGE_BYTES", "WebSocketStream"]

MAX_MESSAGE_BYTES = 1024 * 1024
"""A client message larger than this ends the connection (client-go's are 32 KiB)."""
_RECEIVE = 64 * 1024


class WebSocketStream(trio.abc.Stream):
    """The upgraded connection (the 101 already sent) as messages, or as a byte stream."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes) -> None:
        self._stream = stream
        self._ws = Connection(ConnectionType.SERVER, trailing_data=buffered)
        self._lock = trio.Lock()
        self._partial = bytearray()
        self._done = False

    async def _write(self, data: bytes) -> None:
        if data:
            async with self._lock:
                await self._stream.send_all(data)

    async def send_message(self, data: bytes, *, text: bool = False) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        event = TextMessage(data=data.decode("latin-1")) if text else BytesMessage(data=data)
        await self._write(self._ws.send(event))

    async def receive_message(self) -> bytes | None:
        """The next whole data message; None once the client closed or the connection ended."""
        while not self._done:
            for event in self._ws.events():
                if isinstance(event, BytesMessage | TextMessage):
                    raw = event.data
                    self._partial += raw.encode("latin-1") if isinstance(raw, str) else raw
                    if len(self._partial) > MAX_MESSAGE_BYTES:
                        self._done = True
                        return None
                    if event.message_finished:
                        message = bytes(self._partial)
                        self._partial.clear()
                        return message
                elif isinstance(event, Ping):
                    if self._ws.state is ConnectionState.OPEN:
                        await self._write(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    # Answered only if we had not closed first (then theirs is the answer).
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        await self._write(self._ws.send(event.response()))
                    self._done = True
                    return None
            try:
                received = await self._stream.receive_some(_RECEIVE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                received = b""
            if not received:
                self._done = True
                return None
            self._ws.receive_data(bytes(received))
        return None

    # -- trio.abc.Stream: the SPDY tunnel ----------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_message(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        message = b""
        while not message:  # an empty message is no end of stream
            got = await self.receive_message()
            if got is None:
                return b""
            message = got
        return message  # a message larger than max_bytes is given whole: readers accept that

    async def close(self) -> None:
        """Say Close (1000) if the connection is still open; the caller closes the transport."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                await self._write(self._ws.send(CloseConnection(code=1000)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, LocalProtocolError):
            pass

    async def aclose(self) -> None:
        await self.close()
