"""Cron schedules as CronJobs read them (robfig/cron ParseStandard semantics and messages)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleet.api import parse_cron, parse_time_zone
from fleet.errors import InputError


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("spec", "after", "expected"),
    [
        ("*/1 * * * *", "2024-05-01T12:00:30", "2024-05-01T12:01:00"),
        ("*/15 * * * *", "2024-05-01T12:00:00", "2024-05-01T12:15:00"),
        ("0 * * * *", "2024-05-01T12:00:00", "2024-05-01T13:00:00"),
        ("@hourly", "2024-05-01T12:59:59", "2024-05-01T13:00:00"),
        ("@daily", "2024-05-01T12:00:00", "2024-05-02T00:00:00"),
        ("30 2 * * mon-fri", "2024-05-03T03:00:00", "2024-05-06T02:30:00"),  # Fri -> Mon
        ("0 0 1 jan *", "2024-05-01T00:00:00", "2025-01-01T00:00:00"),
        ("5,10 4 * * *", "2024-05-01T04:05:00", "2024-05-01T04:10:00"),
        ("0 0 13 * 5", "2024-05-01T00:00:00", "2024-05-03T00:00:00"),  # day OR weekday
        ("0 0 29 feb *", "2024-03-01T00:00:00", "2028-02-29T00:00:00"),
        ("@every 90s", "2024-05-01T12:00:00", "2024-05-01T12:01:30"),
    ],
)
def test_next_after(spec: str, after: str, expected: str) -> None:
    assert parse_cron(spec).next_after(t(after)) == t(expected)


def test_never_matching_schedule_gives_none() -> None:
    assert parse_cron("0 0 30 feb *").next_after(t("2024-01-01T00:00:00")) is None


def test_time_zone_moves_the_wall_clock() -> None:
    tz = parse_time_zone("Asia/Tokyo")  # UTC+9, no DST
    assert parse_cron("0 9 * * *").next_after(t("2024-05-01T01:00:00"), tz) == t(
        "2024-05-02T00:00:00"
    )
    with pytest.raises(InputError, match="unknown time zone Mars/Base"):
        parse_time_zone("Mars/Base")


def test_times_between_is_bounded() -> None:
    times = parse_cron("* * * * *").times_between(
        t("2024-05-01T00:00:00"), t("2024-05-01T10:00:00"), limit=5
    )
    assert times[0] == t("2024-05-01T00:01:00") and len(times) == 5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty spec string"),
        ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
        ("61 * * * *", "end of range (61) above maximum (59): 61"),
        ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
        ("*/0 * * * *", "step of range should be a positive number: */0"),
        ("x * * * *", "failed to parse int from x: x"),
        ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ],
)
def test_errors_carry_robfigs_messages(spec: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_cron(spec)
    assert str(info.value) == message
