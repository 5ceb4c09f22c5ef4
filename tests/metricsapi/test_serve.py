"""``serve_metrics_api`` on a loopback port: the front-proxy authentication an aggregated API
server does, its serving certificate, and its registration (real TLS, the real clock: no
timing is asserted)."""

from __future__ import annotations

import base64
import contextlib
import ssl
from typing import Any

import httpx
import pytest
import trio
import trustme

from fleet.errors import ConfigError, NotFound
from fleet.kube import Client, MemoryApiserver, Rest, load_config, load_pem_cert_chain
from fleet.metricsapi import MetricsApiSettings, RunningMetricsApi, serve_metrics_api
from fleet.realcp import RunningControlPlane

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


# -- the request-header names (--requestheader-allowed-names) --------------------------------

AUTH_CONFIGMAP = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"


def _publish(api: MemoryApiserver, ca: trustme.CA, names: str | None) -> None:
    """The ConfigMap as kube-apiserver writes it (``names``: the JSON list, or absent)."""
    data = {"requestheader-client-ca-file": ca.cert_pem.bytes().decode()}
    if names is not None:
        data["requestheader-allowed-names"] = names
    api.create(
        "/api/v1/namespaces/kube-system/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": data,
        },
    )


def _kubelet_client_settings(**given: Any) -> MetricsApiSettings:
    kubelet_client = trustme.CA().issue_cert("kubemock-fleet-metrics")
    return MetricsApiSettings(
        kubelet_client_cert_pem=kubelet_client.cert_chain_pems[0].bytes(),
        kubelet_client_key_pem=kubelet_client.private_key_pem.bytes(),
        **given,
    )


async def _status_as(running: RunningMetricsApi, cert: trustme.LeafCert) -> int | None:
    """The answer's status for a request with ``cert``; None when no connection was had."""
    try:
        return (await _get(running.port, _client_context(running.ca_pem, cert), USER)).status_code
    except httpx.TransportError:
        return None


async def test_the_published_ca_and_allowed_names_decide_who_may_proxy(
    nursery: trio.Nursery, front_proxy: trustme.CA
) -> None:
    api = MemoryApiserver()
    _publish(api, front_proxy, '["front-proxy-client","aggregator-2"]')
    running: RunningMetricsApi = await nursery.start(
        serve_metrics_api, Rest(api), _kubelet_client_settings()
    )
    assert running.allowed_names == ("front-proxy-client", "aggregator-2")
    assert (
        await _status_as(running, front_proxy.issue_cert("x", common_name="front-proxy-client"))
        == 200
    )
    assert await _status_as(running, front_proxy.issue_cert("x", common_name="aggregator-2")) == 200
    # the request-header CA's certificate with another name: no connection (upstream: 401)
    intruder = front_proxy.issue_cert("x", common_name="system:admin")
    assert await _status_as(running, intruder) is None
    # another CA's certificate with the allowed name: no connection either
    other = trustme.CA().issue_cert("x", common_name="front-proxy-client")
    assert await _status_as(running, other) is None
    nursery.cancel_scope.cancel()


@pytest.mark.parametrize("published", ["[]", None])
async def test_no_names_published_lets_any_name_of_the_ca_in(
    nursery: trio.Nursery, front_proxy: trustme.CA, published: str | None
) -> None:
    api = MemoryApiserver()
    _publish(api, front_proxy, published)
    running: RunningMetricsApi = await nursery.start(
        serve_metrics_api, Rest(api), _kubelet_client_settings()
    )
    assert running.allowed_names == ()
    assert await _status_as(running, front_proxy.issue_cert("x", common_name="anyone")) == 200
    nursery.cancel_scope.cancel()


async def test_names_given_in_the_settings_win_over_the_published_ones(
    nursery: trio.Nursery, front_proxy: trustme.CA
) -> None:
    api = MemoryApiserver()
    _publish(api, trustme.CA(), '["front-proxy-client"]')  # another CA, another name
    settings = _kubelet_client_settings(
        front_proxy_ca_pem=front_proxy.cert_pem.bytes(), allowed_names=("my-proxy",)
    )
    running: RunningMetricsApi = await nursery.start(serve_metrics_api, Rest(api), settings)
    assert await _status_as(running, front_proxy.issue_cert("x", common_name="my-proxy")) == 200
    assert (
        await _status_as(running, front_proxy.issue_cert("x", common_name="front-proxy-client"))
        is None
    )
    nursery.cancel_scope.cancel()


async def test_no_request_header_ca_to_be_had_is_a_config_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = MemoryApiserver()
    with pytest.raises(ConfigError, match="requestheader-client-ca-file"):
        await serve_metrics_api(Rest(api), _kubelet_client_settings())
    assert trio.current_time() >= 30.0  # it waited for kube-apiserver's post-start hook


async def test_published_names_that_are_not_a_list_are_a_config_error(
    front_proxy: trustme.CA,
) -> None:
    api = MemoryApiserver()
    _publish(api, front_proxy, "front-proxy-client")  # not JSON
    with pytest.raises(ConfigError, match="not a JSON list of names: 'front-proxy-client'"):
        await serve_metrics_api(Rest(api), _kubelet_client_settings())


@pytest.mark.real
async def test_the_real_clusters_published_names(real_control_plane: RunningControlPlane) -> None:
    """kube-apiserver publishes its ``--requestheader-*`` settings itself (``fleet.realcp``:
    the front-proxy CA, ``front-proxy-client`` only): the aggregator's name gets in, another
    name of the same CA not. (The sandbox serves ``metrics.k8s.io`` itself: no aggregator,
    no APIService, nothing of this applies there.)"""
    real = real_control_plane
    async with Client(load_config(real.kubeconfig)) as client:
        rest = Rest(client)
        statuses: list[int | None] = []
        try:
            async with trio.open_nursery() as served:
                running: RunningMetricsApi = await served.start(
                    serve_metrics_api, rest, _kubelet_client_settings()
                )
                assert running.allowed_names == ("front-proxy-client",)
                for name in ("front-proxy-client", "someone-else"):
                    pair = real.issue_front_proxy(f"test-{name}", name)
                    context = ssl.create_default_context(cadata=running.ca_pem.decode())
                    load_pem_cert_chain(context, pair.cert_pem, pair.key_pem)
                    try:
                        answer = await _get(running.port, context, USER)
                        statuses.append(answer.status_code)
                    except httpx.TransportError:
                        statuses.append(None)
                served.cancel_scope.cancel()
        finally:  # an APIService left pointing nowhere breaks the cluster's discovery
            with trio.CancelScope(shield=True):
                for path in (
                    "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io",
                    "/api/v1/namespaces/kube-system/services/kubemock-fleet-metrics",
                ):
                    with contextlib.suppress(NotFound):
                        await rest.delete(path)
        assert statuses == [200, None]
