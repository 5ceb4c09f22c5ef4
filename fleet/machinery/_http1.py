"""HTTP/1.1 heads and body framing, parsed once for every hand-framed peer in the project.

Who uses it: the hot-path client (``fleet.kube``'s ``HotTransport``: response
heads, ``Content-Length`` and chunked bodies), the sandbox's lean server
(``fleet.sandbox``'s ``Http1Server``: request heads, chunked request bodies), and
the bench's servers (``bench._httpserver``, ``bench._stubapiserver``: request
heads, on asyncio in their own processes). Each keeps its own I/O (trio streams or
asyncio's Protocol callbacks): what they share is what the bytes mean.

Pure functions over bytes already read, no I/O; every fault is a
:class:`~fleet.errors.ProtocolError` naming it (a server answers it 400). The rules
followed, and where they come from:

======================================  =====================================================
head                                    up to the first empty line; at most
                                        :data:`MAX_HEAD_BYTES`
field line                              ``name ":" OWS value OWS``; whitespace before the colon
                                        or a folded (obs-fold) line is refused (RFC 9112 5.1,
                                        5.2); names are lower-cased; the client joins repeated
                                        fields with ``", "`` (RFC 9110 5.3)
request line                            ``method SP target SP HTTP/1.1`` (or ``HTTP/1.0``)
status line                             ``HTTP/1.x SP 3DIGIT ...``; 1xx answers are the reader's
                                        to skip
persistence                             HTTP/1.1 keeps the connection unless ``Connection:
                                        close``; HTTP/1.0 closes it unless ``keep-alive``
                                        (RFC 9112 9.3)
body framing                            ``Transfer-Encoding`` ending in ``chunked`` wins; else
                                        ``Content-Length`` (digits only; repeated values must
                                        agree, both at once is refused on requests, RFC 9112
                                        6.3); else a response runs to EOF, a request has none
chunk size line                         1-16 hex digits, extensions after ``;`` ignored
======================================  =====================================================

The client's response parse is on its hot path (one per Lease renewal or status PATCH):
it works on one ``latin-1`` string split once, with no object per header beyond the dict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fleet.errors import ProtocolError

__all__ = [
    "MAX_HEAD_BYTES",
    "RequestHead",
    "content_length",
    "is_chunked",
    "parse_chunk_size",
    "parse_request_head",
    "parse_response_head",
]

MAX_HEAD_BYTES = 64 * 1024
"""A head (or a chunk-size line) larger than this is broken or hostile: a server answers
431 (Go's net/http allows 1 MiB; kubectl sends < 4 KiB, an apiserver's answers less)."""

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


def parse_response_head(raw: bytes) -> tuple[int, dict[str, str], bool]:
    """A response head (without the empty line): status, lower-cased headers, and whether
    the connection may be kept."""
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0]
    if not status_line.startswith("HTTP/1.") or len(status_line) < 12 or status_line[8] != " ":
        raise ProtocolError(f"bad status line {status_line[:40]!r}")
    code = status_line[9:12]
    if not (code.isascii() and code.isdigit()):
        raise ProtocolError(f"bad status line {status_line[:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        # Whitespace before the colon or a folded line is forbidden (RFC 9112 5.1, 5.2).
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:40]!r}")
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    tokens = headers.get("connection", "").lower()
    if status_line[7] == "1":  # HTTP/1.1: persistent unless told otherwise
        keep = "close" not in tokens
    else:
        keep = "keep-alive" in tokens
    return int(code), headers, keep


def content_length(headers: Mapping[str, str]) -> int | None:
    """The ``Content-Length`` of a parsed response head; None when there is none."""
    value = headers.get("content-length")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()):
        raise ProtocolError(f"bad Content-Length {value[:20]!r}")
    return int(value)


def is_chunked(headers: Mapping[str, str]) -> bool:
    """Whether a parsed response head frames its body in chunks (any other coding refused)."""
    te = headers.get("transfer-encoding")
    if te is None:
        return False
    if te.lower().rsplit(",", 1)[-1].strip() != "chunked":
        raise ProtocolError(f"unsupported Transfer-Encoding {te[:40]!r}")
    return True


def parse_chunk_size(line: bytes) -> int:
    """The size a chunk-size line (without its CRLF) announces; 0 is the last chunk."""
    size = line.split(b";", 1)[0].strip()
    if not _HEX.fullmatch(size):
        raise ProtocolError(f"bad chunk size {size[:20]!r}")
    return int(size, 16)


class RequestHead:
    """A parsed request head, as a server needs it."""

    __slots__ = (
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "target",
        "transfer_encoding",
        "upgrade",
        "version",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int | None,
        transfer_encoding: bytes | None,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bytes | None,
    ) -> None:
        self.method = method
        """``GET``, ``PATCH``, ... as sent (letters only)."""
        self.target = target
        """The request target as sent (path and query, still escaped)."""
        self.version = version
        """``b"HTTP/1.1"`` or ``b"HTTP/1.0"``."""
        self.headers = headers
        """Every field in order, names lower-cased, values stripped (ASGI's shape)."""
        self.content_length = content_length
        """The body's length; None when it has no ``Content-Length`` (chunked, or none)."""
        self.transfer_encoding = transfer_encoding
        """The ``Transfer-Encoding`` lower-cased, None without one: a server that handles
        only ``chunked`` answers anything else 501."""
        self.keep_alive = keep_alive
        """Whether the client lets the connection carry another request (RFC 9112 9.3)."""
        self.expect_continue = expect_continue
        """``Expect: 100-continue``: the client waits for a 100 before sending the body."""
        self.upgrade = upgrade
        """The ``Upgrade`` asked for, lower-cased (``h2c``, ``websocket``, ...), or None."""

    @property
    def chunked(self) -> bool:
        """The body comes in chunks."""
        return self.transfer_encoding is not None


def parse_request_head(raw: bytes) -> RequestHead:
    """A request head (without the empty line)."""
    lines = raw.split(b"\r\n")
    try:
        method, target, version = lines[0].split(b" ")
    except ValueError:
        raise ProtocolError("malformed request line") from None
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not method.isalpha() or not target:
        raise ProtocolError("malformed request line")
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    transfer_encoding: bytes | None = None
    upgrade: bytes | None = None
    keep_alive = expect_continue = False
    close = version == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # Whitespace before the colon or a folded line is forbidden (RFC 9112 5.1, 5.2).
        if not sep or not name or name != name.strip() or name[:1] in b" \t":
            raise ProtocolError("malformed header line")
        name = name.lower()
        value = value.strip(b" \t")
        headers.append((name, value))
        if name == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ProtocolError("bad Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            transfer_encoding = value.lower()
        elif name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            close = close or b"close" in tokens
            keep_alive = keep_alive or b"keep-alive" in tokens
        elif name == b"expect":
            expect_continue = value.lower() == b"100-continue"
        elif name == b"upgrade":
            upgrade = value.lower()
    if version == b"HTTP/1.0" and keep_alive:
        close = False
    if transfer_encoding is not None and length is not None:
        raise ProtocolError("both Content-Length and Transfer-Encoding")
    return RequestHead(
        method.decode("ascii"),
        target,
        version,
        headers,
        length,
        transfer_encoding,
        not close,
        expect_continue,
        upgrade,
    )
