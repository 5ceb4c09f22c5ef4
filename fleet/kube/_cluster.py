"""What a client needs to reach one apiserver: the seam between config and transports.

``fleet.kube._config`` builds a :class:`ClusterConfig` from a kubeconfig or the
in-cluster service account; both the general httpx client and the hot-path
h11 transport consume it, so TLS and auth are set up once, the same way.

Credentials change under a running client when the apiserver restarts with a
new CA or token (``kubemock-fleet up`` without ``--data``) or rotates them. As
client-go re-reads rotated tokens and certificates, a config loaded from a
kubeconfig carries ``reload`` (read the same file and context again): after a
401 or a TLS failure the transports re-read it through a :class:`Reloader` and
go on with its credentials and TLS context. Re-reads are rate-limited
(:data:`RELOAD_MIN_INTERVAL`).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from fleet.errors import FleetError

log = logging.getLogger(__name__)

RELOAD_MIN_INTERVAL = 5.0
"""Seconds between two re-reads of the kubeconfig while TLS or auth keeps failing: a
restarted apiserver's new kubeconfig is picked up within seconds, and a server that stays
broken costs one small file read every 5 s, not one per request."""


class Auth(Protocol):
    """A source of request credentials, refreshed when the server says 401.

    Implementations: no auth, a static bearer token, a token file re-read when
    it rotates (in-cluster), an exec credential plugin (cached until its
    ``expirationTimestamp``). Client certificates live in the SSL context.
    """

    async def headers(self) -> dict[str, str]:
        """Headers to add to the next request (e.g. ``Authorization``)."""
        ...

    async def invalidate(self) -> None:
        """The server answered 401: drop cached credentials so the next call re-fetches."""
        ...


class NoAuth:
    """No credentials beyond what the TLS context carries."""

    async def headers(self) -> dict[str, str]:
        return {}

    async def invalidate(self) -> None:
        return None


@dataclass(frozen=True)
class ClusterConfig:
    """Where the apiserver is and how to talk to it."""

    server: str
    """Base URL without a trailing slash, e.g. ``https://127.0.0.1:6443``."""
    ssl_context: ssl.SSLContext | None = None
    """Verifying context for https (CA, client cert); None for plain http."""
    http2_context: ssl.SSLContext | None = None
    """The same, offering HTTP/2 (ALPN ``h2``): a context's ALPN list is its connections'
    (``ssl`` has no per-connection override), and the HTTP/1.1 transports must not be offered
    h2. None: no HTTP/2 over TLS (plain http, or a config built without it)."""
    tls_server_name: str | None = None
    """Name to verify the server certificate against, when it differs from the host."""
    auth: Auth = field(default_factory=NoAuth)
    """Credentials added to every request."""
    source: str = ""
    """Where this came from (kubeconfig path and context, or ``in-cluster``), for messages."""
    namespace: str = "default"
    """The context's default namespace."""
    reload: Callable[[], ClusterConfig] | None = field(default=None, compare=False)
    """Reads the same source again (kubeconfig files and context); None: nothing to re-read."""

    def __repr__(self) -> str:  # never print credentials
        return f"ClusterConfig(server={self.server!r}, source={self.source!r})"


class Reloader:
    """Re-reads a :class:`ClusterConfig`'s source when credentials start failing, rate-limited.

    :meth:`reload` returns the new config, or None when there is nothing to re-read, the
    last re-read was under ``min_interval`` ago, or the source cannot be read right now
    (a kubeconfig being rewritten): the caller keeps what it has and fails as before.
    """

    def __init__(
        self,
        config: ClusterConfig,
        *,
        min_interval: float = RELOAD_MIN_INTERVAL,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._reload = config.reload
        self._source = config.source
        self._min_interval = min_interval
        self._clock = clock
        self._last: float | None = None

    def reload(self, why: str) -> ClusterConfig | None:
        if self._reload is None:
            return None
        now = self._clock()
        if self._last is not None and now - self._last < self._min_interval:
            return None
        self._last = now
        try:
            config = self._reload()
        except FleetError as exc:
            log.warning("%s; cannot re-read credentials: %s", why, exc)
            return None
        log.warning("%s; re-read credentials from %s", why, config.source or self._source)
        return config


def tls_failure(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by a TLS failure (certificate not verified, alert from the peer)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return True
        pending += (current.__cause__, current.__context__)
    return False
