"""What a client needs to reach one apiserver: the seam between config and transports.

``fleet.kube._config`` builds a :class:`ClusterConfig` from a kubeconfig or the
in-cluster service account; both the general httpx client and the hot-path
h11 transport consume it, so TLS and auth are set up once, the same way.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Protocol


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
    tls_server_name: str | None = None
    """Name to verify the server certificate against, when it differs from the host."""
    auth: Auth = field(default_factory=NoAuth)
    """Credentials added to every request."""
    source: str = ""
    """Where this came from (kubeconfig path and context, or ``in-cluster``), for messages."""
    namespace: str = "default"
    """The context's default namespace."""

    def __repr__(self) -> str:  # never print credentials
        return f"ClusterConfig(server={self.server!r}, source={self.source!r})"
