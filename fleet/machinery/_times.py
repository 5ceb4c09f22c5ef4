"""Kubernetes time values as the apiserver and the kubelet write them.

``metav1.Time`` (RFC 3339, UTC, whole seconds) and ``metav1.MicroTime`` (six
fractional digits), the parse of either, and the default wall clock. Callers
pass the moment in (their clock), so tests stay deterministic. Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_micro_time", "format_time", "parse_time", "utc_now"]


def utc_now() -> datetime:
    """The default wall clock: timezone-aware UTC now."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """``metav1.Time``: RFC 3339 in UTC, whole seconds (``2024-05-01T12:00:00Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(moment: datetime) -> str:
    """``metav1.MicroTime``: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time as the apiserver writes it (``Z`` or an offset)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
