"""``/metrics`` of the sandbox, under the kube-apiserver's own metric names.

What a benchmark reads from a real apiserver, with the same names and labels:
apiserver_request_total, apiserver_request_duration_seconds,
apiserver_request_sli_duration_seconds, apiserver_longrunning_requests and
apiserver_storage_objects. Each sandbox has its own registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The apiserver's request latency buckets (staging/src/k8s.io/apiserver/pkg/endpoints/metrics).
LATENCY_BUCKETS = (
    0.005,
    0.025,
    0.05,
    0.1,
    0.2,
    0.4,
    0.6,
    0.8,
    1.0,
    1.25,
    1.5,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    15,
    20,
    30,
    45,
    60,
)
_REQ_LABELS = (
    "verb",
    "dry_run",
    "group",
    "version",
    "resource",
    "subresource",
    "scope",
    "component",
)
_LONG_LABELS = ("verb", "group", "version", "resource", "subresource", "scope", "component")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StorageObjects(Collector):
    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "apiserver_storage_objects",
            "Number of stored objects at the time of last check split by kind.",
            labels=["resource"],
        )
        for resource, n in sorted(self._counts().items()):
            g.add_metric([resource], n)
        yield g


class Metrics:
    """The sandbox's request and storage metrics."""

    def __init__(self, storage_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "apiserver_request_total",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, "
            "resource, scope, component, and HTTP response code.",
            (*_REQ_LABELS, "code"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, "
            "resource, subresource, scope and component.",
            _REQ_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.sli = Histogram(
            "apiserver_request_sli_duration_seconds",
            "Response latency distribution (not counting webhook duration and priority & fairness queue "
            "wait times) in seconds for each verb, group, version, resource, subresource, scope and component.",
            _LONG_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.longrunning = Gauge(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version, "
            "resource, scope and component. Not all requests are tracked this way.",
            _LONG_LABELS,
            registry=self.registry,
        )
        self.registry.register(_StorageObjects(storage_counts))
        # The labelled children of one request kind, looked up once: prometheus_client's
        # labels() validates and sorts its keyword arguments on every call, a quarter of
        # a small PATCH's CPU in the app before this cache.
        self._children: dict[tuple[str, ...], tuple[Any, Any, Any]] = {}

    def observe(
        self, labels: dict[str, str], code: int, seconds: float, *, longrunning: bool
    ) -> None:
        key = (*(labels[k] for k in _REQ_LABELS), str(code))
        children = self._children.get(key)
        if children is None:
            sli_labels = {k: v for k, v in labels.items() if k != "dry_run"}
            children = (
                self.requests.labels(**labels, code=key[-1]),
                self.duration.labels(**labels),
                self.sli.labels(**sli_labels),
            )
            self._children[key] = children
        children[0].inc()
        if not longrunning:
            children[1].observe(seconds)
            children[2].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
