"""The one HTTP/1.1 head and framing parser (client, sandbox and bench servers share it)."""

from __future__ import annotations

import pytest

from fleet.errors import ProtocolError
from fleet.machinery import (
    content_length,
    is_chunked,
    parse_chunk_size,
    parse_request_head,
    parse_response_head,
)

PATCH_HEAD = (
    b"PATCH /api/v1/namespaces/default/pods/p/status?fieldManager=x HTTP/1.1\r\n"
    b"Host: 127.0.0.1\r\nContent-Type: application/strategic-merge-patch+json\r\n"
    b"Content-Length: 42"
)


def test_a_response_head_gives_status_headers_and_persistence() -> None:
    status, headers, keep = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length:  12 \r\n"
        b"Warning: a\r\nwarning: b"
    )
    assert (status, keep) == (200, True)
    assert headers == {
        "content-type": "application/json",
        "content-length": "12",
        "warning": "a, b",
    }
    assert content_length(headers) == 12
    assert not is_chunked(headers)


@pytest.mark.parametrize(
    ("head", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.0 200 OK", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", True),
    ],
)
def test_persistence_follows_the_version_and_connection(head: bytes, keep: bool) -> None:
    assert parse_response_head(head)[2] is keep


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 2x0 OK",
        b"HTTP/1.1 200 OK\r\nBad : value",
        b"HTTP/1.1 200 OK\r\n folded",
        b"HTTP/1.1 200 OK\r\nno-colon",
    ],
)
def test_a_broken_response_head_is_a_protocol_error(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_response_head(head)


def test_response_framing() -> None:
    assert is_chunked({"transfer-encoding": "gzip, chunked"})
    with pytest.raises(ProtocolError):
        is_chunked({"transfer-encoding": "gzip"})
    with pytest.raises(ProtocolError):
        content_length({"content-length": "-1"})
    assert content_length({}) is None


@pytest.mark.parametrize(("line", "size"), [(b"1a", 26), (b"0", 0), (b"FF;ext=1", 255)])
def test_chunk_sizes(line: bytes, size: int) -> None:
    assert parse_chunk_size(line) == size


@pytest.mark.parametrize("line", [b"", b"0x1a", b"+1", b"1_0", b"g", b"1" * 17])
def test_a_bad_chunk_size_is_a_protocol_error(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_chunk_size(line)


def test_a_request_head_as_a_server_needs_it() -> None:
    head = parse_request_head(PATCH_HEAD)
    assert head.method == "PATCH"
    assert head.target == b"/api/v1/namespaces/default/pods/p/status?fieldManager=x"
    assert head.version == b"HTTP/1.1"
    assert head.headers[1] == (b"content-type", b"application/strategic-merge-patch+json")
    assert head.content_length == 42
    assert (head.chunked, head.keep_alive, head.expect_continue, head.upgrade) == (
        False,
        True,
        False,
        None,
    )


def test_request_persistence_expect_and_upgrade() -> None:
    assert not parse_request_head(b"GET / HTTP/1.0").keep_alive
    assert parse_request_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive").keep_alive
    assert not parse_request_head(b"GET / HTTP/1.1\r\nConnection: close").keep_alive
    head = parse_request_head(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nUpgrade: SPDY/3.1"
    )
    assert (head.chunked, head.content_length, head.expect_continue) == (True, None, True)
    assert head.upgrade == b"spdy/3.1"
    assert parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip").transfer_encoding == (
        b"gzip"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /",
        b"GET / HTTP/2.0",
        b"G3T / HTTP/1.1",
        b"GET / HTTP/1.1\r\nHost : x",
        b"GET / HTTP/1.1\r\n\tfolded",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2",
        b"POST / HTTP/1.1\r\nContent-Length: x",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked",
    ],
)
def test_a_broken_request_head_is_a_protocol_error(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request_head(head)
