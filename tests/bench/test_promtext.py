"""Parsing the apiserver's /metrics: a recorded v1.24 scrape, and a hand-made SLI pair, to exact figures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from bench import diff, histogram_quantile, parse_metrics
from bench._promtext import Buckets, LatencyKey, RequestKey
from fleet.errors import ProtocolError

DATA = Path(__file__).parent / "data"
V124 = (DATA / "apiserver-v1.24-metrics.txt").read_text()
SLI_BEFORE = (DATA / "apiserver-sli-before.txt").read_text()
SLI_AFTER = (DATA / "apiserver-sli-after.txt").read_text()


def test_recorded_v124_requests_by_key_and_verb() -> None:
    scrape = parse_metrics(V124)
    assert len(scrape.requests) == 197
    assert scrape.requests_total() == 1699
    assert scrape.requests_by_verb() == {
        "GET": 575,
        "LIST": 239,
        "DELETE": 140,
        "PUT": 109,
        "PATCH": 107,
        "WATCH": 23,
        "APPLY": 16,
        "POST": 490,
    }
    assert scrape.requests[RequestKey("PATCH", "", "nodes", "", "200")] == 18
    assert scrape.requests[RequestKey("PATCH", "", "pods", "status", "200")] == 31
    # Non-resource URLs: the path is in subresource, as the apiserver labels them.
    assert scrape.requests[RequestKey("GET", "", "", "/readyz", "0")] == 19


def test_recorded_v124_falls_back_to_the_slo_histogram() -> None:
    scrape = parse_metrics(V124)
    assert scrape.latency_family == "apiserver_request_slo_duration_seconds"
    # WATCH is a stream's lifetime, not a latency: left out.
    assert sorted(k.label for k in scrape.latencies) == [
        "DELETE pods",
        "GET pods",
        "LIST pods",
        "PATCH nodes",
        "PATCH pods",
        "PUT leases.coordination.k8s.io",
    ]
    lists = scrape.latencies[LatencyKey("LIST", "", "pods", "")]
    assert (lists.count, lists.sum) == (40, 3.043596332)
    # 39 of 40 within the first bucket (0.05 s); the last one in (3, 4].
    assert lists.quantile(0.5) == pytest.approx(0.05 * 20 / 39)
    assert lists.quantile(0.99) == pytest.approx(3.6)
    # The SLO family counted one DELETE the duration family did not (dry-run): 49, not 48.
    assert scrape.latencies[LatencyKey("DELETE", "", "pods", "")].count == 49
    assert scrape.latencies[LatencyKey("PATCH", "", "nodes", "")].quantile(0.99) == pytest.approx(
        0.0495
    )


def test_recorded_v124_gauges() -> None:
    scrape = parse_metrics(V124)
    assert scrape.inflight == {"mutating": 0, "readOnly": 0}
    assert scrape.watches() == 94
    assert scrape.watchers == {}
    assert len(scrape.storage) == 49
    assert sum(scrape.storage.values()) == 239
    assert scrape.storage["apiservices.apiregistration.k8s.io"] == 29


def test_sli_family_wins_over_the_older_ones() -> None:
    after = parse_metrics(SLI_AFTER)
    assert after.latency_family == "apiserver_request_sli_duration_seconds"
    assert after.latencies[LatencyKey("PATCH", "", "pods", "status")].count == 100
    assert after.watchers == {("", "Pod"): 7, ("", "Node"): 4}
    assert after.watches() == 11
    assert after.inflight == {"mutating": 7, "readOnly": 3}


def test_diff_is_what_the_load_cost() -> None:
    delta = diff(parse_metrics(SLI_BEFORE), parse_metrics(SLI_AFTER), seconds=10)
    assert delta.latency_family == "apiserver_request_sli_duration_seconds"
    assert delta.requests_total() == 235
    assert delta.requests_by_verb() == {
        "PATCH": 90,
        "POST": 22,
        "DELETE": 100,
        "GET": 20,
        "WATCH": 3,
    }
    assert delta.requests[RequestKey("POST", "", "pods", "", "409")] == 2
    # Unchanged counters (PUT leases: 300 before and after) are left out.
    assert RequestKey("PUT", "coordination.k8s.io", "leases", "", "200") not in delta.requests
    assert LatencyKey("PUT", "coordination.k8s.io", "leases", "") not in delta.latencies
    status = delta.latencies[LatencyKey("PATCH", "", "pods", "status")]
    assert (status.count, status.sum) == (90, pytest.approx(3.9))
    assert status.quantile(0.5) == pytest.approx(0.025 + 0.025 * 5 / 30)
    assert status.quantile(0.9) == pytest.approx(0.05 + 0.05 * 11 / 15)
    assert status.quantile(0.99) == pytest.approx(0.22)
    posts = delta.latencies[LatencyKey("POST", "", "pods", "")]
    assert (posts.quantile(0.5), posts.quantile(0.9), posts.quantile(0.99)) == pytest.approx(
        (0.025, 0.045, 0.0495)
    )
    deletes = delta.latencies[LatencyKey("DELETE", "", "pods", "")]  # new in "after": taken whole
    assert (deletes.quantile(0.5), deletes.quantile(0.9), deletes.quantile(0.99)) == pytest.approx(
        (0.8, 1.0, 1.5)
    )
    assert delta.storage_change() == {"pods": (20, 40)}


def test_a_counter_reset_takes_the_after_value() -> None:
    delta = diff(parse_metrics(SLI_AFTER), parse_metrics(SLI_BEFORE))
    # Every counter went down: the apiserver restarted; "after" is all it served since.
    assert delta.requests[RequestKey("PATCH", "", "pods", "status", "200")] == 10
    assert delta.latencies[LatencyKey("PATCH", "", "pods", "status")].count == 10


def test_histogram_quantile_edges() -> None:
    inf = math.inf
    assert histogram_quantile(0.5, (1.0, inf), (0.0, 0.0)) is None
    # A rank in the +Inf bucket answers the highest finite bound, as PromQL does.
    assert histogram_quantile(0.99, (1.0, 2.0, inf), (1.0, 1.0, 10.0)) == 2.0
    assert histogram_quantile(0.0, (1.0, inf), (4.0, 4.0)) == 0.0
    with pytest.raises(ValueError):
        histogram_quantile(1.5, (1.0, inf), (1.0, 1.0))
    assert Buckets((1.0, inf), (2.0, 2.0), 2, 1.0).quantile(1.0) == 1.0


def test_labels_of_rows() -> None:
    assert (
        LatencyKey("PUT", "coordination.k8s.io", "leases", "").label
        == "PUT leases.coordination.k8s.io"
    )
    assert LatencyKey("PATCH", "", "pods", "status").label == "PATCH pods/status"
    assert LatencyKey("GET", "", "", "/metrics").label == "GET /metrics"


def test_not_prometheus_text_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        parse_metrics('apiserver_request_total{code="200" 5\n')


def test_only_the_families_read_are_parsed_and_the_figures_do_not_change() -> None:
    """The scrape keeps only the families it reads (a real apiserver's /metrics is
    megabytes): the recorded v1.24 scrape gives the same figures as the full parse.
    (What that saves is CPU, measured in the kwok-ci benchmark, not timed here.)"""
    from prometheus_client.parser import text_string_to_metric_families

    from bench._promtext import _wanted_lines

    kept = _wanted_lines(V124)
    assert len(kept) < len(V124) * 0.8
    names = {family.name for family in text_string_to_metric_families(kept)}
    assert "apiserver_request" in names and "etcd_request_duration_seconds" not in names
    scrape = parse_metrics(V124)
    assert scrape.requests_total() == 1699 and scrape.latencies


@pytest.mark.parametrize(
    "recorded",
    ["apiserver-v1.24-metrics.txt", "apiserver-sli-before.txt", "apiserver-sli-after.txt"],
)
def test_the_bench_reads_families_as_prometheus_client_does(recorded: str) -> None:
    """The bench's own parser (prometheus_client's took seconds of the bench's CPU per scrape
    at kwok-ci load) gives the same families, samples, labels and values."""
    from prometheus_client.parser import text_string_to_metric_families

    from bench._promtext import _families, _wanted_lines

    kept = _wanted_lines((DATA / recorded).read_text())

    def rows(samples: Any) -> list[tuple[str, dict[str, str], float | str]]:
        return [(s.name, s.labels, "nan" if math.isnan(s.value) else s.value) for s in samples]

    theirs = {f.name: rows(f.samples) for f in text_string_to_metric_families(kept)}
    ours = {name: rows(f.samples) for name, f in _families(kept).items()}
    assert ours == theirs and len(ours) >= 5


def test_label_values_are_unescaped_and_bad_blocks_refused() -> None:
    from bench._promtext import _families

    text = (
        "# TYPE apiserver_request_total counter\n"
        'apiserver_request_total{verb="GET",resource="a\\\\b\\"c\\nd",code="}"} 3 1700000000\n'
    )
    (sample,) = _families(text)["apiserver_request"].samples
    assert sample.labels == {"verb": "GET", "resource": 'a\\b"c\nd', "code": "}"}
    assert sample.value == 3.0
    for bad in ('{a="1" b="2"} 1', "{a=1} 1", "{} one", '{a="1",,} 1', '{a="1"'):
        with pytest.raises(ProtocolError):
            parse_metrics(f"apiserver_current_inflight_requests{bad}\n")
