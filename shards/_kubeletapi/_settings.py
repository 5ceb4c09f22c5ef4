"""Settings of a shard's kubelet API server: one small frozen object, every limit named.

Built by the ``shard`` command and by ``run``/``up`` from :class:`fleet._settings.ShardSettings`
(``shard.kubeletApi``, ``shard.kubeletPort``, ...) and injected into
:class:`~shards._kubeletapi._server.KubeletServer`; tests build one directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet._settings import ShardSettings
from fleet.errors import ConfigError
from shards._kubeletapi._addresses import shard_node_network

__all__ = ["KubeletApiSettings", "kubelet_api_settings"]


@dataclass(frozen=True)
class KubeletApiSettings:
    """How a shard serves the kubelet API (``:10250``) for every node it drives."""

    advertise_address: str
    """Written as each driven node's InternalIP: where the apiserver (and metrics-server)
    reach this shard. The shard pod's IP on a cluster (``POD_IP``); ``127.0.0.1`` under
    ``run``/``up``. Every node of a shard shares it, as KWOK's nodes share its pod IP."""
    client_ca_pem: bytes | None
    """The CA whose client certificates are accepted: the one that signed the apiserver's
    ``--kubelet-client-certificate`` (a real kubelet's ``--client-ca-file``). None: the
    cluster's ``client-ca-file`` (``kube-system/extension-apiserver-authentication``), read at
    start. A request with neither such a certificate nor a token the cluster vouches for is
    answered 401, as a kubelet with anonymous auth off does."""
    host: str = ""
    """Address to bind; empty: where the nodes are reached, ``advertise_address``, or with
    ``node_network`` every loopback address (the wildcard on the loopback device alone,
    ``_listener``). ``0.0.0.0`` opens it on every interface (deploy/)."""
    port: int = 10250
    """TCP port (the kubelet's own default); 0 picks a free one, which is what the nodes
    then advertise in ``daemonEndpoints.kubeletEndpoint.Port``."""
    cert_pem: bytes | None = None
    """Serving certificate chain (PEM); None: a throwaway self-signed one. A kube-apiserver
    without ``--kubelet-certificate-authority`` does not verify it (nor does the sandbox)."""
    key_pem: bytes | None = None
    """The serving certificate's key (PEM)."""
    node_network: str = ""
    """Give each node its own address from this loopback network (``_addresses``): one
    listener on ``0.0.0.0`` tells the nodes apart by the address dialed, so unprefixed node
    paths (``/stats/summary``) answer for their node. Empty: every node advertises
    ``advertise_address``."""
    authorization: str = "auto"
    """``auto``: SubjectAccessReview where the cluster serves it, else a certificate is
    enough; ``webhook``: always (no answer: 403); ``always-allow``: no reviews."""
    max_connections: int = 512
    """Connections served at once; more wait to be accepted. Each ``logs -f`` holds one for
    as long as it follows (the apiserver opens one per proxied request)."""
    follow_poll: float = 1.0
    """Seconds between looks for new log lines while following (a line comes due at most
    this late)."""
    default_log_interval: float = 10.0
    """Seconds between the lines of a container that has no scripted log."""
    max_log_lines: int = 100_000
    """Lines of one container's log kept in view (older ones are rotated away, as a
    kubelet's log rotation does)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"kubelet API port: must be between 0 and 65535, got {self.port}")
        if not self.advertise_address:
            raise ConfigError("kubelet API: an address to advertise is needed")
        if self.client_ca_pem is not None and not self.client_ca_pem.strip():
            raise ConfigError(
                "kubelet API: the client CA is empty (the one that signed the apiserver's "
                "kubelet client certificate is needed; the API is never open to anyone)"
            )
        if self.node_network and self.host not in ("", "0.0.0.0"):
            raise ConfigError(
                "kubelet API: an address per node needs the listener on every loopback "
                f"address (shard.kubeletBind empty) or on 0.0.0.0, not {self.host}"
            )
        if self.authorization not in ("auto", "webhook", "always-allow"):
            raise ConfigError(f"kubelet API authorization: unknown mode {self.authorization!r}")
        if (self.cert_pem is None) != (self.key_pem is None):
            raise ConfigError("kubelet API: a serving certificate needs its key, and back")
        if self.max_connections < 1 or self.follow_poll <= 0 or self.default_log_interval <= 0:
            raise ConfigError("kubelet API: limits must be positive")


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"shard.{what}: cannot read {path}: {exc.strerror or exc}") from exc


def kubelet_api_settings(
    shard: ShardSettings, *, offset: int = 0, environ: Mapping[str, str] | None = None
) -> KubeletApiSettings | None:
    """The kubelet API settings ``shard`` asks for (None: not served); shard K passes ``offset=K``
    so that shards sharing an address (``run``: loopback) each get their own port. A shard
    that advertises its pod's own ``$POD_IP`` shares it with no one and takes ``kubeletPort``
    itself (deploy/: every shard pod on 10250, the port its manifest opens)."""
    if not shard.kubelet_api:
        return None
    env = os.environ if environ is None else environ
    network = str(shard_node_network(offset)) if shard.kubelet_address_per_node else ""
    if not shard.kubelet_address:
        offset = 0  # the pod's own address: no other shard listens there
    address = shard.kubelet_address or env.get("POD_IP", "")
    if not address:
        raise ConfigError("shard.kubeletAddress: empty, and no $POD_IP to advertise instead")
    cert = key = None
    if shard.kubelet_cert_file or shard.kubelet_key_file:
        cert = _read(shard.kubelet_cert_file, "kubeletCertFile")
        key = _read(shard.kubelet_key_file, "kubeletKeyFile")
    return KubeletApiSettings(
        advertise_address=address,
        client_ca_pem=(
            _read(shard.kubelet_client_ca_file, "kubeletClientCaFile")
            if shard.kubelet_client_ca_file
            else None
        ),
        authorization=shard.kubelet_authorization,
        host=shard.kubelet_bind,
        node_network=network,
        port=shard.kubelet_port + offset if shard.kubelet_port else 0,
        cert_pem=cert,
        key_pem=key,
    )
