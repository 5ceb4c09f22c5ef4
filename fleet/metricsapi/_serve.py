"""``metrics.k8s.io`` as an aggregated API beside a real kube-apiserver (``up --control-plane real``).

kube-apiserver v1.24 serves no ``metrics.k8s.io``: a cluster gets it from metrics-server,
registered as an APIService the aggregator proxies to. This is that server, for a fleet:
the objects come from the kubelets' Summary API as the sandbox makes them
(``fleet.kube``'s ``fetch_summaries``, ``node_metrics``, ``pod_metrics``), the Nodes and
Pods from the apiserver (a LIST per request, with the request's ``labelSelector``: it
serves ``kubectl top``, not an autoscaler's every-15-s loop over a large cluster).

How the aggregator reaches it, on loopback with no kube-proxy:

* a Service ``kube-system/kubemock-fleet-metrics`` of type ExternalName (``localhost``):
  kube-apiserver resolves an APIService's Service to its ClusterIP, or to the external
  name for that type (``k8s.io/apiserver/pkg/util/proxy.ResolveCluster``), and dials it
  on the APIService's port; a ClusterIP would need a proxy to route it, and Endpoints
  refuse loopback addresses;
* an APIService ``v1beta1.metrics.k8s.io`` naming that Service and this listener's port,
  with the CA of the serving certificate (made here, for
  ``kubemock-fleet-metrics.kube-system.svc``, the name the aggregator checks);
* authentication as an extension apiserver does it (k8s.io/apiserver's request-header
  authenticator, which metrics-server runs): the aggregator's client certificate
  (kube-apiserver's ``--proxy-client-cert-file``) verified against the request-header CA
  (``--requestheader-client-ca-file``), and its common name checked against
  ``--requestheader-allowed-names`` (an empty list: any name, as upstream). Both are read,
  when the settings do not give them, from the ConfigMap
  ``kube-system/extension-apiserver-authentication`` where kube-apiserver publishes them
  (``requestheader-client-ca-file``, ``requestheader-allowed-names``), once at start. A
  certificate of another CA, or of that CA with a name not allowed, gets no connection
  (the TLS handshake is refused and the name logged; upstream answers such a request 401:
  either way nothing is served). The user is in ``X-Remote-User`` (a request without one
  is 401). kube-apiserver authorized the request before proxying it; no second
  SubjectAccessReview is made (metrics-server makes one).

What is answered, and how metrics-server's answers were followed, is ``_app``'s docstring.

Kubelets are asked with a client certificate of the cluster CA, which the shards trust.
"""

from __future__ import annotations

import base64
import logging
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from fleet.errors import AlreadyExists, ConfigError, NotFound
from fleet.kube import METRICS_GROUP, METRICS_VERSION, Rest, kubelet_client_context
from fleet.metricsapi._app import MetricsApp

__all__ = ["MetricsApiSettings", "RunningMetricsApi", "serve_metrics_api"]

log = logging.getLogger("fleet.metricsapi")

NAMESPACE = "kube-system"
SERVICE = "kubemock-fleet-metrics"
APISERVICE = f"{METRICS_VERSION}.{METRICS_GROUP}"
EXTERNAL_NAME = "localhost"
"""Where the aggregator dials (the Service's external name): this listener is on loopback."""
FETCH_TIMEOUT = 10.0
"""Seconds a kubelet may take to answer (metrics-server's default scrape timeout)."""
CONNECT_TIMEOUT = 5.0
AUTHENTICATION_CONFIGMAP = (
    "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
)
"""Where kube-apiserver publishes its request-header settings for extension apiservers
(``ClusterAuthenticationInfo``; k8s.io/apiserver's ``DelegatingAuthenticationOptions``
looks up there what its flags leave empty)."""
CA_KEY = "requestheader-client-ca-file"
"""The ConfigMap's key of the request-header CA (PEM)."""
ALLOWED_NAMES_KEY = "requestheader-allowed-names"
"""The ConfigMap's key of the allowed common names (a JSON list of strings)."""
CONFIGMAP_WAIT = 30.0
"""Seconds to wait for the ConfigMap when the CA must come from it: kube-apiserver writes it
from a post-start hook, a moment after it first answers."""
CONFIGMAP_POLL = 0.5
_decode_names = msgspec.json.Decoder(list[str]).decode


@dataclass(frozen=True, kw_only=True)
class MetricsApiSettings:
    kubelet_client_cert_pem: bytes
    kubelet_client_key_pem: bytes
    """A client certificate the kubelets (the shards) accept."""
    front_proxy_ca_pem: bytes | None = None
    """The request-header CA: only the aggregator's client certificate comes from it.
    None: the cluster's (``AUTHENTICATION_CONFIGMAP``); a ConfigError when it publishes none."""
    allowed_names: tuple[str, ...] | None = None
    """The common names the request-header CA's certificates may have (empty: any). None:
    the cluster's ``requestheader-allowed-names``, any name when it publishes none."""
    host: str = "127.0.0.1"
    port: int = 0
    """0: a free one."""
    wall: Callable[[], float] = time.time
    """The wall clock (epoch seconds) of the objects' ``creationTimestamp``."""


@dataclass(frozen=True)
class RunningMetricsApi:
    port: int
    ca_pem: bytes
    """The CA of the serving certificate (the APIService's ``caBundle``)."""
    allowed_names: tuple[str, ...] = ()
    """The aggregator certificate's common names accepted (empty: any)."""


@dataclass(frozen=True)
class RequestHeaderTrust:
    """Who may proxy to this server: a certificate of ``ca_pem`` named in ``allowed_names``
    (any name when empty)."""

    ca_pem: bytes
    allowed_names: tuple[str, ...]


async def request_header_trust(api: Rest, settings: MetricsApiSettings) -> RequestHeaderTrust:
    """The settings' request-header CA and allowed names, what they leave None from
    ``AUTHENTICATION_CONFIGMAP`` (ConfigError when no CA is to be had, or the published
    names are not a JSON list of strings)."""
    ca, names = settings.front_proxy_ca_pem, settings.allowed_names
    if ca is None or names is None:
        data = await _published(api, wait=CONFIGMAP_WAIT if ca is None else 0.0)
        if ca is None:
            published = str(data.get(CA_KEY) or "").strip()
            if not published:
                raise ConfigError(
                    f"metrics.k8s.io: no request-header CA given, and {AUTHENTICATION_CONFIGMAP}"
                    f" has no {CA_KEY}"
                )
            ca = published.encode()
        if names is None:
            raw = str(data.get(ALLOWED_NAMES_KEY) or "").strip()
            try:
                names = tuple(_decode_names(raw)) if raw else ()
            except msgspec.DecodeError as exc:  # malformed, or not a list of strings
                raise ConfigError(
                    f"metrics.k8s.io: {AUTHENTICATION_CONFIGMAP}: {ALLOWED_NAMES_KEY} is not a"
                    f" JSON list of names: {raw!r}"
                ) from exc
    return RequestHeaderTrust(ca, names)


async def _published(api: Rest, *, wait: float) -> dict[str, Any]:
    """The ConfigMap's ``data`` (empty when the cluster publishes none: the sandbox), waiting
    up to ``wait`` seconds for a request-header CA to appear in it."""
    deadline = trio.current_time() + wait
    while True:
        try:
            data: dict[str, Any] = (await api.get(AUTHENTICATION_CONFIGMAP)).get("data") or {}
        except NotFound:
            data = {}
        if data.get(CA_KEY) or trio.current_time() >= deadline:
            return data
        await trio.sleep(CONFIGMAP_POLL)


def _common_name(cert: Any) -> str | None:
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _named(allowed: tuple[str, ...]) -> type[ssl.SSLObject]:
    """A TLS session that ends its handshake by checking the client certificate's common
    name (Python's ``ssl`` has no verify callback; ``sslobject_class`` is its hook)."""
    names = frozenset(allowed)

    class NamedClient(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            name = _common_name(self.getpeercert())
            if names and name not in names:
                log.warning(
                    "metrics.k8s.io: refused a request-header client certificate: CN %r is "
                    "not in %s %s",
                    name,
                    ALLOWED_NAMES_KEY,
                    sorted(names),
                )
                raise ssl.SSLError(f"client certificate CN {name!r} is not an allowed name")

    return NamedClient


class _Config(Config):
    """hypercorn's configuration, its TLS context checking the client's name."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__()
        self._session = _named(allowed)

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context: ssl.SSLContext | None = super().create_ssl_context()
        if context is not None:
            context.sslobject_class = self._session
        return context


async def register(api: Rest, port: int, ca_pem: bytes) -> None:
    """The Service and the APIService that send ``metrics.k8s.io`` here (both replaced when
    a previous run left them)."""
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "namespace": NAMESPACE},
        "spec": {"type": "ExternalName", "externalName": EXTERNAL_NAME},
    }
    apiservice: dict[str, Any] = {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": APISERVICE},
        "spec": {
            "group": METRICS_GROUP,
            "version": METRICS_VERSION,
            "service": {"namespace": NAMESPACE, "name": SERVICE, "port": port},
            "caBundle": base64.b64encode(ca_pem).decode("ascii"),
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }
    for collection, body in (
        (f"/api/v1/namespaces/{NAMESPACE}/services", service),
        ("/apis/apiregistration.k8s.io/v1/apiservices", apiservice),
    ):
        try:
            await api.create(collection, body)
        except AlreadyExists:
            path = f"{collection}/{body['metadata']['name']}"
            current = await api.get(path)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await api.replace(path, body)


async def serve_metrics_api(
    api: Rest,
    settings: MetricsApiSettings,
    *,
    task_status: trio.TaskStatus[RunningMetricsApi] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve and register ``metrics.k8s.io`` until cancelled (see the module docstring)."""
    import trustme

    trust = await request_header_trust(api, settings)
    ca = trustme.CA(organization_name="kubemock-fleet metrics.k8s.io")
    serving = ca.issue_cert(f"{SERVICE}.{NAMESPACE}.svc", "localhost", "127.0.0.1")
    timeout = httpx.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="kubemock-fleet-metrics-") as tmp:
        files = Path(tmp)
        (files / "tls.crt").write_bytes(b"".join(b.bytes() for b in serving.cert_chain_pems))
        (files / "tls.key").write_bytes(serving.private_key_pem.bytes())
        (files / "front-proxy-ca.crt").write_bytes(trust.ca_pem)
        config = _Config(trust.allowed_names)
        config.bind = [f"{settings.host}:{settings.port}"]
        config.certfile, config.keyfile = str(files / "tls.crt"), str(files / "tls.key")
        config.ca_certs = str(files / "front-proxy-ca.crt")
        config.verify_mode = ssl.CERT_REQUIRED  # the aggregator's certificate, nothing else
        # (and its name: ``_Config``)
        config.accesslog = None
        config.errorlog = log
        async with httpx.AsyncClient(
            verify=kubelet_client_context(
                settings.kubelet_client_cert_pem, settings.kubelet_client_key_pem
            ),
            timeout=timeout,
        ) as kubelets:
            app = MetricsApp(api, kubelets, wall=settings.wall)
            async with trio.open_nursery() as nursery:
                binds: list[str] = await nursery.start(partial(serve, app, config))  # type: ignore[arg-type]  # hypercorn types an ASGI app by its TypedDict scopes
                port = int(binds[0].rsplit(":", 1)[1])
                await register(api, port, ca.cert_pem.bytes())
                log.info(
                    "metrics.k8s.io served on %s:%d (APIService %s; request-header names: %s)",
                    settings.host,
                    port,
                    APISERVICE,
                    ", ".join(trust.allowed_names) or "any",
                )
                task_status.started(
                    RunningMetricsApi(port, ca.cert_pem.bytes(), trust.allowed_names)
                )
