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
* authentication as an extension apiserver does it: the aggregator's client certificate
  (kube-apiserver's ``--proxy-client-cert-file``) verified against the request-header CA
  (``--requestheader-client-ca-file``), which only that certificate comes from; the user
  is in ``X-Remote-User`` (a request without one is 401). kube-apiserver authorized the
  request before proxying it; no second SubjectAccessReview is made (metrics-server makes
  one). The certificate's name is not checked against ``--requestheader-allowed-names``
  (hypercorn does not show the app the peer certificate): the fleet's front-proxy CA, like
  kubeadm's, signs that one certificate only.

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
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from fleet.errors import AlreadyExists
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


@dataclass(frozen=True)
class MetricsApiSettings:
    front_proxy_ca_pem: bytes
    """The request-header CA: only the aggregator's client certificate comes from it."""
    kubelet_client_cert_pem: bytes
    kubelet_client_key_pem: bytes
    """A client certificate the kubelets (the shards) accept."""
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

    ca = trustme.CA(organization_name="kubemock-fleet metrics.k8s.io")
    serving = ca.issue_cert(f"{SERVICE}.{NAMESPACE}.svc", "localhost", "127.0.0.1")
    timeout = httpx.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)
    with tempfile.TemporaryDirectory(prefix="kubemock-fleet-metrics-") as tmp:
        files = Path(tmp)
        (files / "tls.crt").write_bytes(b"".join(b.bytes() for b in serving.cert_chain_pems))
        (files / "tls.key").write_bytes(serving.private_key_pem.bytes())
        (files / "front-proxy-ca.crt").write_bytes(settings.front_proxy_ca_pem)
        config = Config()
        config.bind = [f"{settings.host}:{settings.port}"]
        config.certfile, config.keyfile = str(files / "tls.crt"), str(files / "tls.key")
        config.ca_certs = str(files / "front-proxy-ca.crt")
        config.verify_mode = ssl.CERT_REQUIRED  # the aggregator's certificate, nothing else
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
                    "metrics.k8s.io served on %s:%d (APIService %s)",
                    settings.host,
                    port,
                    APISERVICE,
                )
                task_status.started(RunningMetricsApi(port, ca.cert_pem.bytes()))
