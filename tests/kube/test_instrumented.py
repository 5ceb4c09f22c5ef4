"""The instrumenting requester: verbs as the apiserver names them, codes, latency, watch ends."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import msgspec
import pytest
import trio
import trio.testing

from fleet._metrics import FleetMetrics
from fleet.errors import ConnectError, ProtocolError, TransportError
from fleet.kube import InstrumentedRequester
from fleet.kube._fake import (
    HANG,
    FakeApiserver,
    FakeRequest,
    StreamScript,
    event_line,
    json_response,
    status_body,
    status_response,
)
from fleet.kube._instrumented import WatchEnd, classify
from fleet.kube._seam import BatchRequest, Response
from fleet.kube._views import MetaOnly
from fleet.kube._watching import Reflector, WatchEvent, WatchSettings

CR = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


class Recorder:
    """A RequestRecorder that keeps what it is told."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, float]] = []
        self.watch_ends: list[tuple[str, WatchEnd]] = []

    def observe_request(self, verb: str, resource: str, code: str, seconds: float) -> None:
        self.requests.append((verb, resource, code, seconds))

    def observe_watch_end(self, resource: str, reason: WatchEnd) -> None:
        self.watch_ends.append((resource, reason))


WATCH = {"watch": "true"}


@pytest.mark.parametrize(
    ("method", "path", "params", "content_type", "verb", "resource"),
    [
        ("GET", "/api/v1/pods", None, None, "LIST", "pods"),
        ("GET", "/api/v1/namespaces/default/pods", {"limit": "500"}, None, "LIST", "pods"),
        ("GET", "/api/v1/namespaces/default/pods/p", None, None, "GET", "pods"),
        ("GET", "/api/v1/namespaces/default/pods/p/status", None, None, "GET", "pods/status"),
        ("GET", "/api/v1/pods", WATCH, None, "WATCH", "pods"),
        ("GET", "/api/v1/pods", {"watch": "1"}, None, "WATCH", "pods"),
        ("GET", "/api/v1/pods", {"watch": "false"}, None, "LIST", "pods"),
        ("GET", "/api/v1/watch/namespaces/default/pods", None, None, "WATCH", "pods"),
        ("GET", "/api/v1/nodes", None, None, "LIST", "nodes"),
        ("GET", "/api/v1/nodes/n1", None, None, "GET", "nodes"),
        ("GET", "/api/v1/namespaces", None, None, "LIST", "namespaces"),
        ("GET", "/api/v1/namespaces/kube-system", None, None, "GET", "namespaces"),
        ("PUT", "/api/v1/namespaces/ns/finalize", None, None, "PUT", "namespaces/finalize"),
        ("GET", CR, None, None, "LIST", "nodes.mock.zhizuqiu.cn"),
        ("GET", CR, WATCH, None, "WATCH", "nodes.mock.zhizuqiu.cn"),
        ("PATCH", f"{CR}/n1/status", None, "application/merge-patch+json", "PATCH",
         "nodes.mock.zhizuqiu.cn/status"),
        ("PUT", f"{LEASES}/n1", None, "application/json", "PUT", "leases.coordination.k8s.io"),
        ("POST", LEASES, None, "application/json", "POST", "leases.coordination.k8s.io"),
        ("PATCH", "/api/v1/nodes/n1/status", None, "application/strategic-merge-patch+json",
         "PATCH", "nodes/status"),
        ("PATCH", "/api/v1/nodes/n1", None, "application/apply-patch+yaml", "APPLY", "nodes"),
        ("patch", "/api/v1/nodes/n1", None, "application/json-patch+json", "PATCH", "nodes"),
        ("DELETE", "/api/v1/namespaces/default/pods/p", None, None, "DELETE", "pods"),
        ("DELETE", "/api/v1/namespaces/default/pods", None, None, "DELETECOLLECTION", "pods"),
        ("POST", "/api/v1/namespaces/default/pods/p/binding", None, "application/json", "POST",
         "pods/binding"),
        ("GET", "/version", None, None, "GET", ""),
        ("GET", "/apis", None, None, "GET", ""),
        ("GET", "/apis/coordination.k8s.io/v1", None, None, "GET", ""),
    ],
)  # fmt: skip
def test_verbs_and_resources_as_the_apiserver_names_them(
    method: str,
    path: str,
    params: Mapping[str, str] | None,
    content_type: str | None,
    verb: str,
    resource: str,
) -> None:
    assert classify(method, path, params, content_type) == (verb, resource)


async def test_codes_and_latency(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: FakeRequest) -> Response:
        if request.path.endswith("/slow"):
            await trio.sleep(0.25)
            return json_response({}, status=201)
        if request.path.endswith("/missing"):
            await trio.sleep(0.01)
            return status_response(404, "NotFound")
        await trio.sleep(1.5)
        raise ConnectError("connection refused")

    recorder = Recorder()
    api = InstrumentedRequester(FakeApiserver(handler), recorder)
    assert (await api.request("POST", "/api/v1/namespaces/a/pods/slow")).status == 201
    assert (await api.request("GET", "/api/v1/nodes/missing")).status == 404
    with pytest.raises(ConnectError):
        await api.request("DELETE", "/api/v1/namespaces/a/pods/down")
    assert recorder.requests == [
        ("POST", "pods", "201", pytest.approx(0.25)),
        ("GET", "nodes", "404", pytest.approx(0.01)),
        ("DELETE", "pods", "error", pytest.approx(1.5)),
    ]
    assert recorder.watch_ends == []


class _Pipelining(FakeApiserver):
    """A requester with its own ``request_batch``: answers a batch after 0.5 s, one error in it."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[BatchRequest]] = []

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        self.batches.append(list(requests))
        await trio.sleep(0.5)
        return [
            ConnectError("cut") if r.path.endswith("/cut") else Response(200, b"{}")
            for r in requests
        ]


async def test_request_batch_reports_each_request(autojump_clock: trio.abc.Clock) -> None:
    batch = [
        BatchRequest("PUT", f"{LEASES}/a", None, b"{}", "application/json"),
        BatchRequest("PUT", f"{LEASES}/cut", None, b"{}", "application/json"),
        BatchRequest("GET", f"{LEASES}/b"),
    ]
    # The batch goes to the requester underneath as one: each request reported with the
    # batch's latency, a transport error as "error".
    recorder = Recorder()
    inner = _Pipelining()
    api = InstrumentedRequester(inner, recorder)
    answers = await api.request_batch(batch)
    assert inner.batches == [batch]
    assert [a.status if isinstance(a, Response) else type(a) for a in answers] == [
        200,
        ConnectError,
        200,
    ]
    assert recorder.requests == [
        ("PUT", "leases.coordination.k8s.io", "200", pytest.approx(0.5)),
        ("PUT", "leases.coordination.k8s.io", "error", pytest.approx(0.5)),
        ("GET", "leases.coordination.k8s.io", "200", pytest.approx(0.5)),
    ]

    # A requester that sends one by one (the seam's default) is still handed the batch:
    # each request is reported with the whole batch's latency.
    async def handler(request: FakeRequest) -> Response:
        await trio.sleep(0.1)
        if request.path.endswith("/cut"):
            raise ConnectError("cut")
        return json_response({})

    recorder = Recorder()
    fake = FakeApiserver(handler)
    answers = await InstrumentedRequester(fake, recorder).request_batch(batch)
    assert [a.status if isinstance(a, Response) else type(a) for a in answers] == [
        200,
        ConnectError,
        200,
    ]
    assert [r.method for r in fake.log()] == ["PUT", "PUT", "GET"]
    assert recorder.requests == [
        ("PUT", "leases.coordination.k8s.io", "200", pytest.approx(0.3)),
        ("PUT", "leases.coordination.k8s.io", "error", pytest.approx(0.3)),
        ("GET", "leases.coordination.k8s.io", "200", pytest.approx(0.3)),
    ]


async def test_cancelled_request_records_nothing(autojump_clock: trio.abc.Clock) -> None:
    async def handler(request: FakeRequest) -> Response:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    recorder = Recorder()
    api = InstrumentedRequester(FakeApiserver(handler), recorder)
    with trio.move_on_after(1):
        await api.request("GET", "/api/v1/pods")
    assert recorder.requests == []


def _pod(name: str, rv: str) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": rv}
    }


async def test_watch_ends_as_a_reflector_lives_them(autojump_clock: trio.abc.Clock) -> None:
    """Through a real Reflector: each way a watch ends is reported, and each open counted."""
    versions = itertools.count(10)

    def handler(request: FakeRequest) -> Response:
        rv = str(next(versions))
        return json_response({"metadata": {"resourceVersion": rv}, "items": [_pod("a", "1")]})

    modified = event_line("MODIFIED", _pod("a", "11"))
    fake = FakeApiserver(
        handler,
        streams=[
            StreamScript([modified]),  # the server ends it: timeoutSeconds
            StreamScript([event_line("ERROR", status_body(410, "Expired"))]),  # relist
            StreamScript(status=503, body=msgspec.json.encode(status_body(503, "Unavailable"))),
            StreamScript([modified, ProtocolError("cut")]),  # cut mid-stream
            ConnectError("refused"),  # never opened
            StreamScript(status=410, body=msgspec.json.encode(status_body(410, "Gone"))),
            StreamScript([HANG]),
        ],
    )
    recorder = Recorder()
    reflector = Reflector(
        InstrumentedRequester(fake, recorder), "/api/v1/pods", MetaOnly, settings=WatchSettings()
    )
    send, receive = trio.open_memory_channel[WatchEvent[MetaOnly]](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reflector.run, send)
        await trio.sleep(60.0)  # backoffs 0.8 + 1.6 + 3.2 + 6.4 s; the inactivity timeout is 150 s
        assert fake.open_streams == 1 and len(fake.log(stream=True)) == 7
        nursery.cancel_scope.cancel()
    receive.close()
    codes = [(verb, code) for verb, resource, code, _ in recorder.requests]
    assert {resource for _, resource, _, _ in recorder.requests} == {"pods"}
    assert codes == [
        ("LIST", "200"),
        ("WATCH", "200"),
        ("WATCH", "200"),
        ("LIST", "200"),
        ("WATCH", "503"),
        ("WATCH", "200"),
        ("WATCH", "error"),
        ("WATCH", "410"),
        ("LIST", "200"),
        ("WATCH", "200"),
    ]
    # The hanging watch was cancelled at the end: not a restart.
    assert recorder.watch_ends == [
        ("pods", "timeout"),
        ("pods", "gone"),
        ("pods", "error"),
        ("pods", "error"),
        ("pods", "error"),
        ("pods", "gone"),
    ]
    assert reflector.statistics().restarts == len(recorder.watch_ends)


async def test_fleet_metrics_record_requests_and_watch_restarts(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def handler(request: FakeRequest) -> Response:
        await trio.sleep(0.003)
        return json_response({"metadata": {}})

    metrics = FleetMetrics()
    api = InstrumentedRequester(
        FakeApiserver(handler, streams=[StreamScript(status=410, body=b"")]), metrics
    )
    for _ in range(3):
        await api.request(
            "PATCH", "/api/v1/namespaces/a/pods/p/status", body=b"{}",
            content_type="application/strategic-merge-patch+json",
        )  # fmt: skip
    async with api.stream("GET", "/api/v1/pods", params=WATCH) as response:
        assert response.status == 410
    text = metrics.scrape().decode()
    assert (
        'kubemock_fleet_requests_total{code="200",resource="pods/status",verb="PATCH"} 3.0' in text
    )
    assert 'kubemock_fleet_requests_total{code="410",resource="pods",verb="WATCH"} 1.0' in text
    assert (
        'kubemock_fleet_request_duration_seconds_bucket{le="0.0025",resource="pods/status",'
        'verb="PATCH"} 0.0' in text
    )
    assert (
        'kubemock_fleet_request_duration_seconds_bucket{le="0.005",resource="pods/status",'
        'verb="PATCH"} 3.0' in text
    )
    assert 'kubemock_fleet_watch_restarts_total{reason="gone",resource="pods"} 1.0' in text
