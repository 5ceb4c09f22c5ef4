"""The general apiserver client, on httpx: control paths, crdgen, bench, auth flows.

:class:`HttpxRequester` implements the :class:`~fleet.kube._seam.Requester`
seam on httpx (``request`` and ``stream``; ``request_batch`` is the seam's
one-by-one default). :class:`Client` is the verb layer
(:class:`~fleet.kube._rest.Rest`: ``get``, ``list``, ``create``, ``replace``,
``patch``, ``delete``, ``delete_collection``...) over one, and is a
``Requester`` as well.

It costs ~0.5-1 ms of client CPU per request (docs/performance.md), which is
fine for everything except the hot path: high-volume Lease and status writes
and watch streams go through :class:`~fleet.kube._transport.HotTransport`.

httpx runs on trio through anyio. TLS comes from ``ClusterConfig.ssl_context``
(``tls_server_name`` is honoured through httpcore's ``sni_hostname``
extension, which also sets the name the certificate is checked against); auth
headers are fetched from ``ClusterConfig.auth`` on every request; a 401
invalidates them, re-reads the kubeconfig (``ClusterConfig.reload``,
rate-limited) for new ones and retries once; a TLS failure re-reads it too and
retries once with its TLS settings. httpx's exceptions never escape: they are
mapped into :mod:`fleet.errors` at this boundary.

Cancellation never leaves a socket to the garbage collector: streams close
shielded (:class:`_HttpxStream`), and so does a connection whose TLS handshake
is cancelled (:class:`_ClosingOnFailedTls`, which httpcore does not do).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import trio

from fleet import __version__
from fleet.errors import (
    ConfigError,
    ConnectError,
    ProtocolError,
    ReadTimeout,
    TransportError,
)
from fleet.kube._cluster import ClusterConfig, Reloader, tls_failure
from fleet.kube._rest import Rest
from fleet.kube._seam import BaseRequester, Response
from fleet.machinery import JSON

__all__ = ["Client", "ClientTimeouts", "HttpxRequester"]

_USER_AGENT = f"kubemock-fleet/{__version__}"
_CLOSE_GRACE = 5.0
"""Seconds a stream's close may take even when its reader was cancelled (it is local work)."""
_MAX_CONNECTIONS = 100
"""httpx's default pool size; all of them are kept alive between requests."""


class _FixedBody(httpx.AsyncByteStream):
    """A request body of known bytes whose iterator is an object, not an async generator."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> _FixedBodyIterator:
        return _FixedBodyIterator(self._data)


class _FixedBodyIterator:
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _FixedBodyIterator:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


class _ClosingOnFailedTls(httpcore.AsyncNetworkStream):
    """A new connection's TCP stream, which closes itself when its TLS handshake does not finish.

    httpcore opens a connection in two steps, ``connect_tcp`` then ``start_tls``, and
    keeps no reference to the TCP stream in between. Its trio backend closes that
    stream when the handshake fails with an ``Exception``, but not when the handshake
    is cancelled (``trio.Cancelled`` is a ``BaseException``), and the connection,
    which never got a stream, closes nothing: the socket was left to the garbage
    collector (a ResourceWarning). Any request cancelled while it opens a connection
    did that, e.g. the bench's /metrics sampler when its run ends. Closing here, on
    every way out of the handshake, is the owner's ``finally``.
    """

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore's signature
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 - httpcore's signature
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
    ) -> httpcore.AsyncNetworkStream:
        try:
            # The TLS stream is returned as it is: this wrapper costs nothing after the handshake.
            return await self._stream.start_tls(ssl_context, server_hostname, timeout)
        except BaseException:
            # Shielded: the handshake is most often ended by a cancellation. Closing a TCP
            # stream is local work (no TLS goodbye to send yet); bounded all the same.
            with trio.move_on_after(_CLOSE_GRACE) as scope:
                scope.shield = True
                await self._stream.aclose()
            raise

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _ClosingBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, its new streams wrapped in :class:`_ClosingOnFailedTls`."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return _ClosingOnFailedTls(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(path, timeout, socket_options)
        return _ClosingOnFailedTls(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def _transport(config: ClusterConfig, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's own transport, its pool opening connections through :class:`_ClosingBackend`."""
    transport = httpx.AsyncHTTPTransport(
        verify=config.ssl_context if config.ssl_context is not None else True,
        limits=limits,
        # Proxies and CA bundles from the environment would silently override the
        # kubeconfig; the kubeconfig is the one source of truth for where and how.
        trust_env=False,
    )
    # httpx takes no network backend, so it is set on the pool httpx built (httpcore's
    # own parameter, kept on the pool for every connection it creates). Checked, so an
    # httpx that builds its pool differently fails here, not with a leak now and then.
    pool = transport._pool
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.AsyncNetworkBackend):
        raise RuntimeError(
            f"httpx {httpx.__version__}: cannot reach its connection pool's network backend"
        )
    pool._network_backend = _ClosingBackend(backend)
    return transport


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds to wait at each stage of a request (httpx's four timeouts)."""

    connect: float = 10.0
    """TCP connect and TLS handshake: generous, for a remote apiserver behind a load balancer."""
    read: float = 60.0
    """Between bytes of an answer: the apiserver's own request timeout is 60 s, and a
    500-item list page of big objects can take seconds to produce."""
    write: float = 10.0
    """Between bytes of a request body; bodies are small."""
    pool: float = 10.0
    """Waiting for a free connection in httpx's pool."""
    stream_read: float | None = None
    """Between bytes of a streamed answer (a watch). None: a watch may stay quiet for
    minutes between events, and its reader's inactivity timeout decides when to give up."""

    def _httpx(self, *, streaming: bool = False) -> httpx.Timeout:
        read = self.stream_read if streaming else self.read
        return httpx.Timeout(connect=self.connect, read=read, write=self.write, pool=self.pool)


def _describe(exc: BaseException) -> str:
    """The first non-empty message along ``exc``'s causes (httpx's TLS errors have none)."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        if str(current):
            return str(current)
        current = current.__cause__ or current.__context__
    return type(exc).__name__


@contextmanager
def _mapped_errors(method: str, url: str) -> Iterator[None]:
    """Turn httpx's exceptions into :mod:`fleet.errors` ones (``raise ... from``)."""
    try:
        yield
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise ConnectError(f"{method} {url}: cannot connect: {_describe(exc)}") from exc
    except (httpx.ReadTimeout, httpx.PoolTimeout, httpx.WriteTimeout) as exc:
        raise ReadTimeout(f"{method} {url}: timed out: {type(exc).__name__}") from exc
    except (
        httpx.RemoteProtocolError,
        httpx.LocalProtocolError,
        httpx.ReadError,
        httpx.WriteError,
    ) as exc:
        raise ProtocolError(f"{method} {url}: {exc or type(exc).__name__}") from exc
    except httpx.UnsupportedProtocol as exc:
        raise ConfigError(f"{method} {url}: {exc}") from exc
    except httpx.TransportError as exc:
        raise TransportError(f"{method} {url}: {exc or type(exc).__name__}") from exc


def _headers(response: httpx.Response) -> dict[str, str]:
    # httpx joins repeated headers with ", " and lower-cases nothing: the seam wants lower case.
    return {name.lower(): value for name, value in response.headers.items()}


class _HttpxStream:
    """An httpx streamed response behind :class:`fleet.kube._seam.StreamResponse`."""

    def __init__(self, response: httpx.Response, method: str, url: str) -> None:
        self.status = response.status_code
        self.headers: Mapping[str, str] = _headers(response)
        self._response = response
        self._method = method
        self._url = url
        self._raw: AsyncIterator[bytes] | None = None

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        # An iterator object, not an async generator: a watch reader that breaks out
        # early leaves no half-run generator for the garbage collector to finalize.
        return self

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._raw is None:
            self._raw = self._response.aiter_raw().__aiter__()
        with _mapped_errors(self._method, self._url):
            return await self._raw.__anext__()

    async def aread(self) -> bytes:
        with _mapped_errors(self._method, self._url):
            return await self._response.aread()

    async def aclose(self) -> None:
        """Release the connection, ending the body's iterators even if not read to the end.

        httpx reads a body through nested async generators (``aiter_raw``, its bound
        stream, httpcore's streams). One abandoned half-way (a reader that stops at an
        ERROR event) is left to the garbage collector, which trio reports as a
        ResourceWarning (encode/httpx#3686). So close the response first, then pull the
        outer iterator until it ends: on the closed connection every layer ends at once.
        """
        raw, self._raw = self._raw, None
        # Shielded: a watch is most often closed by cancellation, and httpcore's close
        # passes checkpoints (pool locks) before it closes the socket, so a cancelled
        # close would leave the socket to the garbage collector. Bounded all the same.
        with trio.move_on_after(_CLOSE_GRACE) as scope:
            scope.shield = True
            await self._response.aclose()
            if raw is None:
                return
            try:
                while True:
                    await raw.__anext__()  # bytes h11 had buffered, then the end or an error
            except StopAsyncIteration:
                pass
            except Exception:  # expected: the connection was just closed
                pass


class HttpxRequester(BaseRequester):
    """The :class:`Requester` on httpx: auth headers, 401 retry, errors mapped, streams."""

    def __init__(
        self,
        config: ClusterConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeouts: ClientTimeouts = ClientTimeouts(),
    ) -> None:
        self._config = config
        self._timeouts = timeouts
        self._stream_timeout = timeouts._httpx(streaming=True)
        # sni_hostname sets both the SNI name and the name the certificate must match.
        self._extensions = (
            {"sni_hostname": config.tls_server_name} if config.tls_server_name else {}
        )
        # A TLS failure re-reads the kubeconfig (a restarted apiserver's new CA) and swaps
        # the httpx client; the old one is closed with this one (requests may still use it).
        self._reloader = Reloader(config) if transport is None else None
        self._auth = config.auth
        self._retired: list[httpx.AsyncClient] = []
        self._http = self._new_http(config, transport)

    def _new_http(
        self, config: ClusterConfig, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        if transport is None:
            # Keep every connection the pool opens: httpx keeps only 20 idle by default, so
            # more than 20 callers at once (the bench's writers, 16 scheduler binders plus
            # the informers' watches) closed a connection after each request and opened a
            # new one, a TLS handshake on both sides; at a few hundred requests/s that
            # starved the sandbox's accept loop (docs/performance.md).
            limits = httpx.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS
            )
            transport = _transport(config, limits)
        return httpx.AsyncClient(
            base_url=config.server,
            transport=transport,
            timeout=self._timeouts._httpx(),
            headers={"User-Agent": _USER_AGENT, "Accept": JSON},
            # No proxy mounts from the environment either (see _transport).
            trust_env=False,
            follow_redirects=False,
        )

    async def __aenter__(self) -> HttpxRequester:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for old in self._retired:
                await old.aclose()
            self._retired.clear()
        await self._http.aclose()

    async def _renew_auth(self) -> None:
        """After a 401: drop cached credentials, and re-read the kubeconfig for new ones."""
        await self._auth.invalidate()
        config = self._reloader.reload("the apiserver answered 401") if self._reloader else None
        if config is not None and config.server == self._config.server:
            self._auth = config.auth

    def _renew_tls(self, exc: ConnectError) -> bool:
        """After a TLS failure: re-read the kubeconfig and connect with its TLS settings."""
        if self._reloader is None or not tls_failure(exc):
            return False
        config = self._reloader.reload(f"{exc}")
        if config is None or config.server != self._config.server:
            return False  # the same server only: base URLs of requests in flight stay valid
        self._retired.append(self._http)
        self._http = self._new_http(config, None)
        self._auth = config.auth  # a restarted apiserver has a new token too, as a rule
        self._extensions = (
            {"sni_hostname": config.tls_server_name} if config.tls_server_name else {}
        )
        return True

    # -- the Requester seam ----------------------------------------------------------------

    def _build(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        auth: Mapping[str, str],
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Request:
        merged = dict(headers or {})
        merged.update(auth)
        if content_type:
            merged["Content-Type"] = content_type
        extensions: dict[str, Any] = dict(self._extensions)
        if timeout is not None:
            extensions["timeout"] = timeout.as_dict()
        with _mapped_errors(method, path):
            request = self._http.build_request(
                method, path, params=params, content=body, headers=merged, extensions=extensions
            )
        if body is not None:
            # httpx's own ByteStream iterates through an async generator; a request cancelled
            # mid-send leaves it unfinished, and trio reports that at garbage collection
            # (encode/httpx#3686). Same bytes and Content-Length, iterated by a plain object.
            request.stream = _FixedBody(body)
        return request

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        *,
        stream: bool = False,
    ) -> httpx.Response:
        """Send, renewing the TLS credentials once after a refused handshake and the auth
        once after a 401 (rotated certificates and tokens); a second 401 is the answer."""
        renewed = retried = False
        while True:
            request = self._build(
                method,
                path,
                params,
                body,
                content_type,
                headers,
                await self._auth.headers(),
                self._stream_timeout if stream else None,
            )
            try:
                with _mapped_errors(method, path):
                    response = await self._http.send(request, stream=stream)
            except ConnectError as exc:
                if not renewed and self._renew_tls(exc):
                    renewed = True
                    continue
                raise
            if response.status_code == 401 and not retried:
                retried = True
                await response.aclose()
                await self._renew_auth()
                continue
            return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """Send one request; return the whole answer, error codes included."""
        response = await self._send(method, path, params, body, content_type, headers)
        content = response.content  # send() without stream=True has read the body
        return Response(response.status_code, content, _headers(response))

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[_HttpxStream]:
        """A streamed answer (a watch); the connection is released when the block ends."""
        response = await self._send(method, path, params, None, None, headers, stream=True)
        stream = _HttpxStream(response, method, path)
        try:
            yield stream
        finally:
            await stream.aclose()


class Client(Rest):
    """The general async apiserver client: the verbs of :class:`Rest` over an
    :class:`HttpxRequester` (itself a :class:`Requester` too).

    ``async with Client(config) as c: pod = await c.get(path)``. Pass
    ``transport=httpx.MockTransport(handler)`` to script the apiserver in tests.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeouts: ClientTimeouts = ClientTimeouts(),
    ) -> None:
        self._httpx = HttpxRequester(config, transport=transport, timeouts=timeouts)
        self._config = config
        super().__init__(self._httpx)

    @property
    def config(self) -> ClusterConfig:
        """Where and how this client connects (for another requester to the same apiserver)."""
        return self._config

    async def __aenter__(self) -> Client:
        await self._httpx.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._httpx.__aexit__(*exc_info)

    async def aclose(self) -> None:
        await self._httpx.aclose()
