"""What the shard's own socket transports share: timeouts, connecting, streamed bodies.

:class:`~fleet.kube.HotTransport` (HTTP/1.1, ``_transport``) and
:class:`~fleet.kube.Http2Connection` (``_http2``) each open their connections themselves
(httpx is too slow for the shard's hot path, docs/performance.md): both take a connect
and a request timeout, validated alike (:func:`check_timeouts`); both read the server's
URL alike (:func:`server_address`); both connect by TCP,
then TLS when the server is ``https``, under the connect timeout with the failures
mapped to one :class:`~fleet.errors.ConnectError` naming the server
(:func:`connect_errors`, :func:`open_stream`); both wait for an answer under the request
timeout, its running out one :class:`~fleet.errors.ReadTimeout` saying what did not come
(:func:`answer_within`); and both hand out streamed answers as iterator objects
(:class:`BodyIterator`).
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import SplitResult, urlsplit

import trio

from fleet.errors import ConfigError, ConnectError, ReadTimeout
from fleet.kube._cluster import ClusterConfig

__all__ = [
    "BodyIterator",
    "answer_within",
    "check_timeouts",
    "connect_errors",
    "open_stream",
    "server_address",
]


def check_timeouts(connect_timeout: float, request_timeout: float) -> None:
    """Refuse a connect or request timeout that is not positive."""
    if connect_timeout <= 0 or request_timeout <= 0:
        raise ConfigError("connect_timeout and request_timeout must be > 0")


def server_address(config: ClusterConfig) -> tuple[SplitResult, str, int]:
    """``config.server`` split, its host and its port (the scheme's by default); an URL
    that is not ``http``/``https`` with a host, or a bad port, is a ConfigError."""
    url = urlsplit(config.server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(f"{config.source or 'server'}: unusable server URL {config.server!r}")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError as exc:
        raise ConfigError(f"bad port in server URL {config.server!r}") from exc
    return url, url.hostname, port


@contextmanager
def connect_errors(server: str, timeout: float) -> Iterator[None]:
    """The body, within ``timeout`` seconds; its running out, a refused or broken socket
    and a failed handshake raised as one :class:`~fleet.errors.ConnectError` naming
    ``server``."""
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError as exc:
        raise ConnectError(f"connect to {server} timed out after {timeout:g}s") from exc
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
        cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
        raise ConnectError(f"cannot connect to {server}: {cause or exc}") from exc


@contextmanager
def answer_within(timeout: float, missing: str) -> Iterator[None]:
    """The body, within ``timeout`` seconds, else :class:`~fleet.errors.ReadTimeout`:
    ``"<missing> within <timeout>s"`` (``missing``: e.g. ``"GET /x: no response head"``)."""
    try:
        with trio.fail_after(timeout):
            yield
    except trio.TooSlowError as exc:
        raise ReadTimeout(f"{missing} within {timeout:g}s") from exc


async def open_stream(
    host: str, port: int, context: ssl.SSLContext | None, server_hostname: str
) -> trio.abc.Stream:
    """A TCP connection to ``host:port``, with TLS when ``context`` is given (handshake
    done; the socket closed if it fails)."""
    tcp = await trio.open_tcp_stream(host, port)
    if context is None:
        return tcp
    tls = trio.SSLStream(tcp, context, server_hostname=server_hostname, https_compatible=True)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


class BodyIterator(ABC):
    """A streamed answer's body as an iterator object (subclasses give ``__anext__``).

    An iterator object, not an async generator: a watch reader that breaks out early
    leaves no half-run generator for the garbage collector to finalize.
    """

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; ends at the end of the body."""
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    @abstractmethod
    async def __anext__(self) -> bytes: ...

    async def aread(self) -> bytes:
        """The rest of the body at once (for error answers)."""
        return b"".join([piece async for piece in self.aiter_bytes()])
