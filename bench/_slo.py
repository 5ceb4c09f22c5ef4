"""The SLO table: a run judged against the Kubernetes scalability SLOs, row by row.

Two SLOs of the Kubernetes scalability SIG (``sig-scalability/slos/slos.md``)
apply to what a bench measures:

- *Mutating API call latency*: p99 of every (verb, resource) of mutating
  calls <= 1 s, from the apiserver's SLI latency histogram over the run
  (the official SLO is over 5-minute windows; one bench run is one window).
- *Pod startup latency*: p99 of pod startup (creation to Running observed
  through a watch, for stateless pods with images pulled) <= 5 s.

A row with no samples is not a pass: it is left out, and the report says so
(a table with no rows is not "all passed").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench._latency import PhaseStats
from bench._promtext import MUTATING_VERBS, Buckets, LatencyKey

__all__ = ["SloRow", "SloThresholds", "slo_table"]


@dataclass(frozen=True, slots=True)
class SloThresholds:
    """The thresholds, in seconds; the defaults are the Kubernetes SLOs."""

    mutating_p99: float = 1.0
    """Mutating API calls, p99 per verb and resource."""
    pod_startup_p99: float = 5.0
    """Pod startup, p99."""


@dataclass(frozen=True, slots=True)
class SloRow:
    """One line of the table."""

    slo: str
    """``mutating-api-latency`` or ``pod-startup-latency``."""
    subject: str
    """What the row measures: ``PATCH pods/status``, ``pods``."""
    count: int
    """Samples behind the figure."""
    p99: float
    threshold: float
    passed: bool


def slo_table(
    latencies: Mapping[LatencyKey, Buckets],
    pod_startup: PhaseStats | None,
    thresholds: SloThresholds = SloThresholds(),
) -> list[SloRow]:
    """Rows for every mutating (verb, resource) with requests, then pod startup if measured."""
    rows: list[SloRow] = []
    for key in sorted(latencies):
        if key.verb not in MUTATING_VERBS:
            continue
        hist = latencies[key]
        p99 = hist.quantile(0.99)
        if p99 is None:
            continue
        rows.append(
            SloRow(
                "mutating-api-latency",
                key.label,
                int(hist.count),
                p99,
                thresholds.mutating_p99,
                p99 <= thresholds.mutating_p99,
            )
        )
    if pod_startup is not None and pod_startup.count:
        rows.append(
            SloRow(
                "pod-startup-latency",
                "pods",
                pod_startup.count,
                pod_startup.p99,
                thresholds.pod_startup_p99,
                pod_startup.p99 <= thresholds.pod_startup_p99,
            )
        )
    return rows
