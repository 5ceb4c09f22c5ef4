"""Client-side latencies: one HDR histogram per phase, as the bench sees them.

A phase is anything the bench times itself: a create call's round trip
(``create pods``), or one leg of pod startup (``pod_startup``,
``create_to_schedule``, ...). Values are recorded in microseconds with three
significant digits (HdrHistogram's usual precision: 0.1 % error) from 1 µs to
one hour; a longer value is clamped to the hour, a negative one (clock skew
between the apiserver and the bench) to zero and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

__all__ = ["MAX_SECONDS", "LatencyRecorder", "PhaseStats"]

MAX_SECONDS = 3600.0
"""The longest value recorded: a pod that takes an hour to start has a bigger problem."""
_MICROS = 1_000_000
_SIGNIFICANT_DIGITS = 3


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """Percentiles of one phase, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float
    clamped: int
    """Values recorded as 0 because they were negative (clock skew)."""


class LatencyRecorder:
    """HDR histograms by phase name; record seconds, read percentiles."""

    def __init__(self) -> None:
        self._histograms: dict[str, HdrHistogram] = {}
        self._clamped: dict[str, int] = {}

    def record(self, phase: str, seconds: float) -> None:
        """Record one value of ``phase`` (seconds; clamped into [0, MAX_SECONDS])."""
        hist = self._histograms.get(phase)
        if hist is None:
            hist = HdrHistogram(1, int(MAX_SECONDS * _MICROS), _SIGNIFICANT_DIGITS)
            self._histograms[phase] = hist
            self._clamped[phase] = 0
        if seconds < 0:
            self._clamped[phase] += 1
            seconds = 0.0
        micros = max(1, min(int(MAX_SECONDS * _MICROS), round(seconds * _MICROS)))
        hist.record_value(micros)

    def phases(self) -> list[str]:
        return sorted(self._histograms)

    def count(self, phase: str) -> int:
        hist = self._histograms.get(phase)
        return 0 if hist is None else int(hist.get_total_count())

    def stats(self, phase: str) -> PhaseStats | None:
        """Percentiles of ``phase``; None if nothing was recorded."""
        hist = self._histograms.get(phase)
        if hist is None or hist.get_total_count() == 0:
            return None

        def at(percentile: float) -> float:
            return float(hist.get_value_at_percentile(percentile)) / _MICROS

        return PhaseStats(
            count=int(hist.get_total_count()),
            p50=at(50),
            p90=at(90),
            p99=at(99),
            max=float(hist.get_max_value()) / _MICROS,
            mean=float(hist.get_mean_value()) / _MICROS,
            clamped=self._clamped[phase],
        )

    def all_stats(self) -> dict[str, PhaseStats]:
        out = {}
        for phase in self.phases():
            stats = self.stats(phase)
            if stats is not None:
                out[phase] = stats
        return out

    def encoded(self, phase: str) -> str | None:
        """The phase's histogram in HdrHistogram's compressed base64 form (for re-analysis)."""
        hist = self._histograms.get(phase)
        return None if hist is None else hist.encode().decode("ascii")
