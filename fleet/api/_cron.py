"""Standard cron schedules, as a CronJob's ``spec.schedule`` is read.

Kubernetes parses ``spec.schedule`` with ``cron.ParseStandard`` of
github.com/robfig/cron/v3: five fields (minute, hour, day of month, month,
day of week) with ``*``, ``?``, lists, ranges, steps and the English names of
months and days, or one of the descriptors ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``), ``@hourly`` and
``@every <duration>``. As in cron (and robfig), when both day fields are
restricted a day matches if either does; when one is ``*`` only the other
counts. The error texts are robfig's, because the apiserver returns them as
the message of a 422.

Times are evaluated in a time zone (``spec.timeZone``, an IANA name; UTC by
default), one minute at a time, like the controller does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fleet.api._duration import parse_go_duration
from fleet.errors import InputError

__all__ = ["CronSchedule", "parse_cron", "parse_time_zone"]

_MONTHS = {
    n: i + 1
    for i, n in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_BOUNDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),  # minute
    (0, 23, {}),  # hour
    (1, 31, {}),  # day of month
    (1, 12, _MONTHS),  # month
    (0, 6, _DAYS),  # day of week
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_SEARCH_YEARS = 5
"""How far ahead a schedule is searched (robfig gives up after five years too: Feb 30 never comes)."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed schedule: the allowed values of each field, or a fixed interval (``@every``)."""

    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    day_star: bool = True
    weekday_star: bool = True
    every: float | None = None
    """Seconds between runs for ``@every``."""

    def _day_matches(self, moment: datetime) -> bool:
        dom = moment.day in self.days
        dow = (moment.isoweekday() % 7) in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow

    def next_after(self, after: datetime, tz: tzinfo = UTC) -> datetime | None:
        """The first scheduled time strictly after ``after`` (aware), in UTC; None if never."""
        if self.every is not None:
            step = max(1.0, float(int(self.every)))
            return (after + timedelta(seconds=step)).replace(microsecond=0).astimezone(UTC)
        local = after.astimezone(tz).replace(second=0, microsecond=0, tzinfo=None)
        local += timedelta(minutes=1)
        end = local + timedelta(days=366 * _SEARCH_YEARS)
        hours, minutes = sorted(self.hours), sorted(self.minutes)
        day = local.replace(hour=0, minute=0)
        while day < end:
            if day.month not in self.months:
                # Jump to the first day of the next month.
                day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                continue
            if self._day_matches(day):
                for h in hours:
                    for m in minutes:
                        candidate = day.replace(hour=h, minute=m)
                        if candidate >= local:
                            return candidate.replace(tzinfo=tz).astimezone(UTC)
            day += timedelta(days=1)
        return None

    def times_between(
        self, start: datetime, end: datetime, tz: tzinfo = UTC, *, limit: int = 101
    ) -> list[datetime]:
        """The scheduled times in ``(start, end]``, the earliest ``limit`` of them."""
        found: list[datetime] = []
        t = self.next_after(start, tz)
        while t is not None and t <= end and len(found) < limit:
            found.append(t)
            t = self.next_after(t, tz)
        return found


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    low, high, names = _BOUNDS[index]
    values: set[int] = set()
    star = False
    for part in text.split(","):
        step = 1
        range_part, slash, step_text = part.partition("/")
        if slash:
            try:
                step = int(step_text)
            except ValueError:
                raise InputError(f"failed to parse int from {step_text}: {step_text}") from None
            if step <= 0:
                raise InputError(f"step of range should be a positive number: {part}")
        if range_part in ("*", "?"):
            start, end = low, high
            star = star or not slash
        else:
            lo_text, dash, hi_text = range_part.partition("-")
            start = _number(lo_text, names)
            end = _number(hi_text, names) if dash else (high if slash else start)
            if start < low:
                raise InputError(f"beginning of range ({start}) below minimum ({low}): {part}")
            if end > high:
                raise InputError(f"end of range ({end}) above maximum ({high}): {part}")
            if start > end:
                raise InputError(
                    f"beginning of range ({start}) beyond end of range ({end}): {part}"
                )
        values.update(range(start, end + 1, step))
    return frozenset(values), star


def _number(text: str, names: dict[str, int]) -> int:
    named = names.get(text.lower())
    if named is not None:
        return named
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"failed to parse int from {text}: {text}") from None
    if value < 0:
        raise InputError(f"negative number ({value}) not allowed: {text}")
    return value


def parse_cron(spec: str) -> CronSchedule:
    """Parse a standard cron expression or descriptor; :class:`InputError` with robfig's message."""
    text = spec.strip()
    if not text:
        raise InputError("empty spec string")
    if text.startswith("@"):
        if text.startswith("@every "):
            try:
                nanos = parse_go_duration(text[len("@every ") :].strip())
            except InputError as exc:
                raise InputError(f"failed to parse duration {text}: {exc}") from None
            return CronSchedule(every=nanos / 1e9)
        expanded = _DESCRIPTORS.get(text.lower())
        if expanded is None:
            raise InputError(f"unrecognized descriptor: {text}")
        text = expanded
    fields = text.split()
    if len(fields) != 5:
        raise InputError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    parsed = [_field(f, i) for i, f in enumerate(fields)]
    return CronSchedule(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=parsed[4][0],
        day_star=parsed[2][1],
        weekday_star=parsed[4][1],
    )


def parse_time_zone(name: str | None) -> tzinfo:
    """``spec.timeZone`` as a tzinfo (UTC when unset); :class:`InputError` if unknown."""
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"unknown time zone {name}") from None
