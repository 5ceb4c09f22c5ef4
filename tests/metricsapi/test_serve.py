"""``serve_metrics_api`` on a loopback port: the front-proxy authentication an aggregated API
server does, its serving certificate, and its registration (real TLS, the real clock: no
timing is asserted)."""

from __future__ import annotations

import base64
import ssl

import httpx
import pytest
import trio
import trustme

from fleet.kube import MemoryApiserver, Rest
from fleet.metricsapi import MetricsApiSettings, RunningMetricsApi, serve_metrics_api

NODES = "/apis/metrics.k8s.io/v1beta1/nodes"
USER = {"X-Remote-User": "system:admin"}


def _client_context(ca_pem: bytes, cert: trustme.LeafCert | None) -> ssl.SSLContext:
    """A client trusting the server's CA (``ca_pem``) and showing ``cert``, if any."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if cert is not None:
        cert.configure_cert(context)
    return context


async def _get(
    port: int, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(verify=context) as client:
        return await client.get(f"https://127.0.0.1:{port}{NODES}", headers=headers)


@pytest.fixture
def front_proxy() -> trustme.CA:
    return trustme.CA(organization_name="front-proxy-ca")


async def test_only_the_aggregators_client_certificate_gets_in(
    nursery: trio.Nursery, front_proxy: trustme.CA
) -> None:
    api = MemoryApiserver()
    cluster = trustme.CA(organization_name="cluster-ca")
    kubelet_client = cluster.issue_cert("kubemock-fleet-metrics")
    settings = MetricsApiSettings(
        front_proxy_ca_pem=front_proxy.cert_pem.bytes(),
        kubelet_client_cert_pem=kubelet_client.cert_chain_pems[0].bytes(),
        kubelet_client_key_pem=kubelet_client.private_key_pem.bytes(),
    )
    running: RunningMetricsApi = await nursery.start(serve_metrics_api, Rest(api), settings)

    # registered: the APIService names this port and the serving certificate's CA
    apiservice = api.get("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io")
    assert apiservice is not None
    assert apiservice["spec"]["service"]["port"] == running.port
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == running.ca_pem

    aggregator = front_proxy.issue_cert("front-proxy-client")
    answer = await _get(running.port, _client_context(running.ca_pem, aggregator), USER)
    assert answer.status_code == 200, answer.text
    assert answer.json()["kind"] == "NodeMetricsList"

    # the aggregator's certificate without the user it vouches for: not authenticated
    anonymous = await _get(running.port, _client_context(running.ca_pem, aggregator))
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "Unauthorized"

    # no client certificate, or one of another CA (the cluster's: an admin's, a kubelet
    # client's): the TLS handshake fails, nothing is answered
    for cert in (None, cluster.issue_cert("kubernetes-admin"), kubelet_client):
        with pytest.raises(httpx.TransportError):
            await _get(running.port, _client_context(running.ca_pem, cert), USER)
    nursery.cancel_scope.cancel()


async def test_a_client_checks_the_serving_certificate_for_the_services_name(
    nursery: trio.Nursery, front_proxy: trustme.CA
) -> None:
    cluster = trustme.CA()
    kubelet_client = cluster.issue_cert("kubemock-fleet-metrics")
    settings = MetricsApiSettings(
        front_proxy_ca_pem=front_proxy.cert_pem.bytes(),
        kubelet_client_cert_pem=kubelet_client.cert_chain_pems[0].bytes(),
        kubelet_client_key_pem=kubelet_client.private_key_pem.bytes(),
    )
    running: RunningMetricsApi = await nursery.start(
        serve_metrics_api, Rest(MemoryApiserver()), settings
    )
    context = _client_context(running.ca_pem, front_proxy.issue_cert("front-proxy-client"))
    assert context.check_hostname
    async with httpx.AsyncClient(verify=context) as client:
        # the aggregator checks the certificate for the Service's name (the Service's
        # external name is only where it dials)
        answer = await client.get(
            f"https://127.0.0.1:{running.port}/apis",
            headers=USER,
            extensions={"sni_hostname": "kubemock-fleet-metrics.kube-system.svc"},
        )
        assert answer.status_code == 200
        assert answer.json()["kind"] == "APIGroupList"
    async with httpx.AsyncClient(verify=context) as client:  # a new connection, a new check
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get(
                f"https://127.0.0.1:{running.port}/apis",
                headers=USER,
                extensions={"sni_hostname": "metrics-server.kube-system.svc"},
            )
    causes = []
    cause: BaseException | None = refused.value
    while cause is not None:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    mismatch = [c for c in causes if isinstance(c, ssl.SSLCertVerificationError)]
    assert mismatch and "metrics-server.kube-system.svc" in str(mismatch[0]), causes
    nursery.cancel_scope.cancel()
