"""SPDY/3.1 streams for ``/exec`` and ``/attach``: what kubectl <= 1.29 opens, and what
kube-apiserver >= 1.30 turns kubectl's WebSocket into on its way to a kubelet.

The connection (after the 101 naming the chosen ``X-Stream-Protocol-Version``, here
``v4.channel.k8s.io``) carries SPDY/3 frames. The client opens one stream per channel
(SYN_STREAM with a ``streamType`` header: ``error``, ``stdin``, ``stdout``, ``stderr``,
``resize``), each answered with a SYN_REPLY; the server starts once every stream the
request asked for is there (``STREAM_CREATION_TIMEOUT``), writes DATA frames on stdout and
stderr, the outcome (a ``metav1.Status``, as on the WebSocket error channel) on the error
stream, ends each with FIN, says GOAWAY and closes. A FIN on stdin is stdin's end. PINGs
are echoed; SETTINGS and WINDOW_UPDATE are read and ignored (Go's spdystream, on both
ends of a real kubelet connection, does no flow control either).

Header blocks are zlib streams (one per direction per connection) with the SPDY/3
dictionary, :data:`DICTIONARY`, from the protocol's draft 3 (section 2.6.10.1).
"""

from __future__ import annotations

import struct
import zlib

import trio

__all__ = ["DICTIONARY", "STREAM_PROTOCOLS", "SpdySession"]

STREAM_PROTOCOLS = ("v4.channel.k8s.io",)
"""Offered by kubectl's SPDY executor (v4 first); v4 has the structured error stream."""
STREAM_CREATION_TIMEOUT = 30.0
"""Seconds for the client to open every stream it asked for (the kubelet's default)."""
MAX_FRAME_BYTES = 1 << 20
"""A frame longer than this ends the connection (kubectl sends at most 32 KiB)."""
DATA_CHUNK = 32 * 1024
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
_RECEIVE = 64 * 1024
_WORDS = [
    *(
        "options head post put delete trace accept accept-charset accept-encoding "
        "accept-language accept-ranges age allow authorization cache-control connection "
        "content-base content-encoding content-language content-length content-location "
        "content-md5 content-range content-type date etag expect expires from host if-match "
        "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
        "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
        "server te trailer transfer-encoding upgrade user-agent vary via warning "
        "www-authenticate method get status"
    ).split(),
    "200 OK",
    *"version HTTP/1.1 url public set-cookie keep-alive origin".split(),
]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417"
    "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
    "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct "
    "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,"
    "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,"
    "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


def control_frame(kind: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack(">HHI", 0x8000 | 3, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, (flags << 24) | len(data)) + data


def header_block(headers: dict[str, str]) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        out += [struct.pack(">I", len(name)), name.encode(), struct.pack(">I", len(value))]
        out.append(value.encode())
    return b"".join(out)


def parse_header_block(block: bytes) -> dict[str, str]:
    (count,), pos = struct.unpack_from(">I", block), 4
    headers: dict[str, str] = {}
    for _ in range(count):
        (size,) = struct.unpack_from(">I", block, pos)
        name = block[pos + 4 : pos + 4 + size].decode("latin-1").lower()
        pos += 4 + size
        (size,) = struct.unpack_from(">I", block, pos)
        headers[name] = block[pos + 4 : pos + 4 + size].decode("latin-1")
        pos += 4 + size
    return headers


class SpdyConnection:
    """Frames in and out of one upgraded connection; what streams mean is the subclass's
    (:meth:`opened`, :meth:`received`)."""

    def __init__(self, stream: trio.abc.Stream, buffered: bytes) -> None:
        self.stream = stream
        self._buf = bytearray(buffered)
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)
        self._lock = trio.Lock()
        self.closed = trio.Event()

    async def _write(self, data: bytes) -> None:
        async with self._lock:
            await self.stream.send_all(data)

    async def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        for start in range(0, max(len(data), 1), DATA_CHUNK):
            chunk = data[start : start + DATA_CHUNK]
            last = start + DATA_CHUNK >= len(data)
            if chunk or (fin and last):
                await self._write(data_frame(stream_id, chunk, FLAG_FIN if fin and last else 0))

    async def goaway(self) -> None:
        try:
            await self._write(control_frame(GOAWAY, struct.pack(">II", 0, 0)))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def _frame(self) -> tuple[bytes, bytes] | None:
        while len(self._buf) < 8:
            data = await self.stream.receive_some(_RECEIVE)
            if not data:
                return None
            self._buf += data
        length = int.from_bytes(self._buf[5:8], "big")
        if length > MAX_FRAME_BYTES:
            return None
        while len(self._buf) < 8 + length:
            data = await self.stream.receive_some(_RECEIVE)
            if not data:
                return None
            self._buf += data
        head, payload = bytes(self._buf[:8]), bytes(self._buf[8 : 8 + length])
        del self._buf[: 8 + length]
        return head, payload

    async def read(self) -> None:
        """Frames from the client until it goes: streams opened (and answered), data, pings."""
        try:
            while (frame := await self._frame()) is not None:
                head, payload = frame
                flags = head[4]
                if head[0] & 0x80:
                    kind = int.from_bytes(head[2:4], "big")
                    if kind == SYN_STREAM:
                        (stream_id,) = struct.unpack_from(">I", payload)
                        stream_id &= 0x7FFFFFFF
                        headers = parse_header_block(self._inflate.decompress(payload[10:]))
                        block = self._deflate.compress(header_block({}))
                        block += self._deflate.flush(zlib.Z_SYNC_FLUSH)
                        await self._write(
                            control_frame(SYN_REPLY, struct.pack(">I", stream_id) + block)
                        )
                        await self.opened(stream_id, headers, bool(flags & FLAG_FIN))
                    elif kind == PING:
                        await self._write(control_frame(PING, payload))
                    elif kind == GOAWAY:
                        return
                    elif kind == RST_STREAM:
                        (stream_id,) = struct.unpack_from(">I", payload)
                        await self.received(stream_id & 0x7FFFFFFF, b"", True)
                    continue
                stream_id = int.from_bytes(head[0:4], "big") & 0x7FFFFFFF
                await self.received(stream_id, payload, bool(flags & FLAG_FIN))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, zlib.error):
            return
        finally:
            self.closed.set()
            self.done()

    async def opened(self, stream_id: int, headers: dict[str, str], fin: bool) -> None:
        """The client opened a stream (already answered with a SYN_REPLY)."""

    async def received(self, stream_id: int, data: bytes, fin: bool) -> None:
        """Data (or its end) on a client stream."""

    def done(self) -> None:
        """The client is gone."""


class SpdySession(SpdyConnection):
    """exec and attach over SPDY, as ``_exec`` drives a session: ``stdin`` (a channel),
    :meth:`send` by channel number, :attr:`closed`, :meth:`close`."""

    STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
    _TYPES = {"stdin": 0, "stdout": 1, "stderr": 2, "error": 3, "resize": 4}

    def __init__(self, stream: trio.abc.Stream, buffered: bytes, expected: set[int]) -> None:
        super().__init__(stream, buffered)
        self.expected = expected
        """Channels the request asked for; :attr:`ready` is set once all are open."""
        self.ids: dict[int, int] = {}
        """channel -> SPDY stream id."""
        self._channels: dict[int, int] = {}
        self.ready = trio.Event()
        self.stdin_send, self.stdin = trio.open_memory_channel[bytes](64)

    async def send(self, channel: int, data: bytes, *, fin: bool = False) -> None:
        stream_id = self.ids.get(channel)
        if stream_id is not None:
            # the error stream carries one status, then ends
            await self.send_data(stream_id, data, fin=fin or channel == self.ERROR)

    async def close(self) -> None:
        """FIN on the output streams, GOAWAY (the error stream has had its say)."""
        try:
            for channel in (self.STDOUT, self.STDERR):
                await self.send(channel, b"", fin=True)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        await self.goaway()

    async def opened(self, stream_id: int, headers: dict[str, str], fin: bool) -> None:
        channel = self._TYPES.get(headers.get("streamtype", ""))
        if channel is not None:
            self.ids[channel] = stream_id
            self._channels[stream_id] = channel
            if self.expected <= set(self.ids):
                self.ready.set()

    async def received(self, stream_id: int, data: bytes, fin: bool) -> None:
        if self._channels.get(stream_id) == self.STDIN:
            if data:
                try:
                    await self.stdin_send.send(data)
                except trio.ClosedResourceError:  # after stdin's end: nothing reads it
                    pass
            if fin:
                self.stdin_send.close()

    def done(self) -> None:
        self.stdin_send.close()
