"""Container logs: what ``kubectl logs`` shows for a fake pod, and the query that cuts it.

A container's log is a timed sequence of lines, computed, never stored:

* scripted, by annotations on the pod (the fleet's own domain, so they never change a
  pod's lifecycle Plan)::

      fleet.mock.zhizuqiu.cn/logs: |         # every container, one line per line
        starting
        listening on :8080
      fleet.mock.zhizuqiu.cn/logs.web: ...   # only container "web" (wins over the above)
      fleet.mock.zhizuqiu.cn/log-interval: 5s

  Without ``log-interval`` every scripted line is written at the pod's creation, and that
  is the whole log (``-f`` then waits for lines that never come, like an idle server).
  With it, line *i* (cycling through the script) is written at creation + *i* x interval.
* by default, a line every ``default_log_interval`` since creation, saying which
  container of which pod on which node it is.

:func:`parse_log_options` reads the kubelet's query (``follow``, ``tailLines``,
``sinceSeconds``, ``sinceTime``, ``timestamps``, ``limitBytes``, ``previous``) with the
kubelet's validation; :func:`select` cuts the lines for one request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleet.api import parse_go_duration
from fleet.errors import InputError
from shards._kubeletapi._view import PodInfo

__all__ = [
    "ANNOTATION_LOGS",
    "ANNOTATION_LOG_INTERVAL",
    "LogOptions",
    "LogScript",
    "format_timestamp",
    "log_script",
    "parse_log_options",
]

ANNOTATION_LOGS = "fleet.mock.zhizuqiu.cn/logs"
"""The scripted lines of every container; ``<this>.<container>`` for one container."""
ANNOTATION_LOG_INTERVAL = "fleet.mock.zhizuqiu.cn/log-interval"
"""Go duration between scripted lines, which then repeat; unset: all at creation."""


@dataclass(frozen=True, slots=True)
class LogOptions:
    """``corev1.PodLogOptions`` as the kubelet reads them from its query."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: datetime | None = None
    limit_bytes: int | None = None


def _flag(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise InputError(f'{name}: invalid value "{value}"')


def _count(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        raise InputError(f'{name}: invalid value "{query[name]}"') from None
    if value < minimum:
        raise InputError(f"{name}: Invalid value: {value}: must be greater than {minimum - 1}")
    return value


def parse_log_options(query: Mapping[str, str]) -> LogOptions:
    """The kubelet's reading of ``/containerLogs`` query parameters (InputError: 400)."""
    since_time = None
    if "sinceTime" in query:
        try:
            since_time = datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f'sinceTime: invalid value "{query["sinceTime"]}"') from None
        if since_time.tzinfo is None:
            since_time = since_time.replace(tzinfo=UTC)
    options = LogOptions(
        follow=_flag(query, "follow"),
        previous=_flag(query, "previous"),
        timestamps=_flag(query, "timestamps"),
        tail_lines=_count(query, "tailLines", 0),
        since_seconds=_count(query, "sinceSeconds", 1),
        since_time=since_time,
        limit_bytes=_count(query, "limitBytes", 1),
    )
    if options.since_seconds is not None and options.since_time is not None:
        raise InputError("at most one of sinceTime or sinceSeconds may be specified")
    return options


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with nanoseconds, as the kubelet prefixes lines with ``timestamps=true``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass(frozen=True, slots=True)
class LogScript:
    """One container's log: line *i* at ``start + i * interval`` (all at start if no interval)."""

    start: datetime
    lines: tuple[str, ...]
    interval: float | None
    """None: the lines are all written at ``start`` and nothing follows."""
    cycle: bool = True
    """Repeat the lines (scripted with an interval); False: line *i* is ``lines[0]`` with
    *i* filled in (the default heartbeat)."""
    end: datetime | None = None
    """When the container's run ended (nothing is written after it); None: it runs."""

    def line(self, i: int) -> str:
        template = self.lines[i % len(self.lines)]
        return template if self.cycle else template.format(i=i)

    def at(self, i: int) -> datetime:
        return self.start + timedelta(seconds=(self.interval or 0.0) * i)

    def count_until(self, moment: datetime) -> int:
        """Lines written at or before ``moment``."""
        if self.end is not None:
            moment = min(moment, self.end)
        elapsed = (moment - self.start).total_seconds()
        if elapsed < 0 or not self.lines:
            return 0
        if self.interval is None:
            return len(self.lines)
        return math.floor(elapsed / self.interval + 1e-9) + 1

    def first_at_or_after(self, moment: datetime) -> int:
        elapsed = (moment - self.start).total_seconds()
        if elapsed <= 0 or self.interval is None:
            return 0 if elapsed <= 0 else len(self.lines)
        return math.ceil(elapsed / self.interval - 1e-9)

    def render(self, start: int, stop: int, *, timestamps: bool) -> bytes:
        out = []
        for i in range(start, stop):
            text = self.line(i)
            out.append(f"{format_timestamp(self.at(i))} {text}\n" if timestamps else text + "\n")
        return "".join(out).encode()


def log_script(
    pod: PodInfo,
    container: str,
    default_interval: float,
    run: tuple[datetime, datetime | None] | None = None,
) -> LogScript:
    """The log of ``container`` in ``pod`` (scripted by annotations, or the default) in
    ``run`` (start, end: a restarted container's program starts over, its log with it;
    None: one run since the pod's creation)."""
    start, end = run if run is not None else (pod.created, None)
    annotations = pod.annotations
    text = annotations.get(f"{ANNOTATION_LOGS}.{container}", annotations.get(ANNOTATION_LOGS))
    if text is None:
        where = f'container "{container}" of pod {pod.namespace}/{pod.name} on node {pod.node}'
        return LogScript(
            start,
            (f"kubemock-fleet: {where}: heartbeat {{i}}",),
            default_interval,
            cycle=False,
            end=end,
        )
    interval = None
    if ANNOTATION_LOG_INTERVAL in annotations:
        try:
            interval = parse_go_duration(annotations[ANNOTATION_LOG_INTERVAL]) / 1e9  # ns
        except (InputError, ValueError):
            interval = None
        if interval is not None and interval <= 0:
            interval = None
    lines = tuple(text.splitlines())
    return LogScript(start, lines, interval, end=end)


def select(
    script: LogScript, options: LogOptions, now: datetime, max_lines: int
) -> tuple[int, int]:
    """Indices ``[start, stop)`` of the lines one request gets, as of ``now``."""
    stop = script.count_until(now)
    start = max(0, stop - max_lines)
    since = options.since_time
    if options.since_seconds is not None:
        since = now - timedelta(seconds=options.since_seconds)
    if since is not None:
        start = max(start, script.first_at_or_after(since))
    if options.tail_lines is not None:
        start = max(start, stop - options.tail_lines)
    return min(start, stop), stop
