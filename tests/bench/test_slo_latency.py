"""Client-side HDR latencies and the SLO table, pass and fail per row."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import LatencyRecorder, SloThresholds, diff, parse_metrics, slo_table
from bench._latency import PhaseStats

DATA = Path(__file__).parent / "data"


def test_recorder_percentiles_within_hdr_precision() -> None:
    recorder = LatencyRecorder()
    for ms in range(1, 101):
        recorder.record("create pods", ms / 1000)
    recorder.record("skewed", -0.5)
    stats = recorder.stats("create pods")
    assert stats is not None
    assert stats.count == 100
    assert stats.p50 == pytest.approx(0.050, rel=1e-3)
    assert stats.p90 == pytest.approx(0.090, rel=1e-3)
    assert stats.p99 == pytest.approx(0.099, rel=1e-3)
    assert stats.max == pytest.approx(0.100, rel=1e-3)
    skewed = recorder.stats("skewed")
    assert skewed is not None and skewed.clamped == 1 and skewed.p99 <= 1e-6
    assert recorder.stats("never") is None
    assert recorder.phases() == ["create pods", "skewed"]
    assert recorder.encoded("create pods")


def test_slo_table_rows_pass_and_fail() -> None:
    delta = diff(
        parse_metrics((DATA / "apiserver-sli-before.txt").read_text()),
        parse_metrics((DATA / "apiserver-sli-after.txt").read_text()),
    )
    startup = PhaseStats(count=40, p50=1.0, p90=4.0, p99=6.5, max=7.0, mean=1.5, clamped=0)
    rows = slo_table(delta.latencies, startup)
    table = {(r.slo, r.subject): (r.count, round(r.p99, 4), r.passed) for r in rows}
    assert table == {
        ("mutating-api-latency", "DELETE pods"): (100, 1.5, False),
        ("mutating-api-latency", "PATCH pods/status"): (90, 0.22, True),
        ("mutating-api-latency", "POST pods"): (20, 0.0495, True),
        ("pod-startup-latency", "pods"): (40, 6.5, False),
    }
    # Looser thresholds turn both failures into passes; reads (GET) never make a row.
    loose = slo_table(
        delta.latencies, startup, SloThresholds(mutating_p99=2.0, pod_startup_p99=10.0)
    )
    assert all(r.passed for r in loose) and len(loose) == 4


def test_no_samples_no_rows() -> None:
    assert slo_table({}, None) == []
