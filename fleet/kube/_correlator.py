"""The pure parts of client-go's event correlator (``tools/record/events_cache.go``).

Every client-go event recorder (a kubelet's, kube-controller-manager's, a scheduler's)
runs each event through its ``EventCorrelator`` before writing it: the aggregator,
then the series (an identical event counted, PATCHed), then the spam filter. The
series is bound up with how each recorder writes, so it stays with the recorder;
the two rules here are the same for all of them:

- :class:`EventAggregator` (``EventAggregate``): events alike but for their message
  (``EventAggregatorByReasonFunc``: source, involved object without its fieldPath,
  type, reason) are grouped; a group is forgotten after ``window`` seconds without
  one; from the ``max_events``-th distinct message on, the event is combined:
  its message prefixed :data:`COMBINED`, counted in the group's one series.
- :class:`SpamFilter` (``EventSourceObjectSpamFilter``): a token bucket per source
  and object, ``burst`` tokens, one more every ``refill`` seconds; an event without
  a token is not written.

Both are bounded LRU caches of ``cache`` keys (``maxLruCacheEntries``), take the
time from their caller (so a test's clock is theirs) and do no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = [
    "AGGREGATE_MAX",
    "AGGREGATE_WINDOW",
    "COMBINED",
    "CORRELATOR_CACHE",
    "SPAM_BURST",
    "SPAM_REFILL",
    "EventAggregator",
    "SpamFilter",
]

AGGREGATE_MAX = 10
"""Distinct messages of one group within its window from which events are combined:
client-go's ``defaultAggregateMaxEvents``."""
AGGREGATE_WINDOW = 600.0
"""Seconds without an event of a group after which it starts over: client-go's
``defaultAggregateIntervalInSeconds``."""
COMBINED = "(combined from similar events): "
"""A combined event's message prefix (``EventAggregatorByReasonMessageFunc``)."""
CORRELATOR_CACHE = 4096
"""Groups and buckets remembered, the least recently used dropped: ``maxLruCacheEntries``."""
SPAM_BURST = 25
"""Events one source may write about one object at once: ``defaultSpamBurst``."""
SPAM_REFILL = 300.0
"""Seconds per token the spam filter gives back (``defaultSpamQPS`` = 1/300)."""


@dataclass(slots=True)
class _Group:
    messages: dict[str, None]
    """Distinct messages, insertion ordered: ``PopAny`` takes any, the oldest here, so a
    run replays the same."""
    at: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class EventAggregator:
    """client-go's ``EventAggregator``; see the module docstring."""

    def __init__(
        self,
        *,
        max_events: int = AGGREGATE_MAX,
        window: float = AGGREGATE_WINDOW,
        cache: int = CORRELATOR_CACHE,
    ) -> None:
        self._max = max_events
        self._window = window
        self._cache = cache
        self._groups: OrderedDict[Hashable, _Group] = OrderedDict()

    def combine(self, group: Hashable, message: str, now: float) -> bool:
        """Count ``message`` in ``group`` at ``now``; whether the event is to be combined."""
        entry = self._groups.get(group)
        if entry is None or now - entry.at > self._window:
            entry = self._groups[group] = _Group({}, now)
            if len(self._groups) > self._cache:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(group)
        entry.messages[message] = None
        entry.at = now
        if len(entry.messages) < self._max:
            return False
        del entry.messages[next(iter(entry.messages))]  # never more than max-1 kept
        return True


class SpamFilter:
    """client-go's ``EventSourceObjectSpamFilter``; see the module docstring."""

    def __init__(
        self,
        *,
        burst: int = SPAM_BURST,
        refill: float = SPAM_REFILL,
        cache: int = CORRELATOR_CACHE,
    ) -> None:
        self._burst = float(burst)
        self._refill = refill
        self._cache = cache
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def allow(self, key: Hashable, now: float) -> bool:
        """Take a token of ``key``'s bucket at ``now``; False when it has none."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
            if len(self._buckets) > self._cache:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            refill = max(0.0, now - bucket.at) / self._refill
            bucket.tokens = min(self._burst, bucket.tokens + refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
