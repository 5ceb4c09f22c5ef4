"""Events the control-plane loops write, as client-go's ``record.EventRecorder`` writes them.

What ``kubectl describe`` shows under ``Events:``: core/v1 Events named
``<object>.<unix nanoseconds in hex>`` in the object's namespace (``default``
for cluster-scoped objects such as Nodes), with ``involvedObject``,
``reason``, ``message``, ``type``, ``source.component`` (and the same
``reportingComponent``), ``firstTimestamp``/``lastTimestamp`` and ``count``.
(kube-scheduler writes events.k8s.io/v1 Events, which a real apiserver also
serves as core/v1; the sandbox keeps the two apart, so the scheduler's go out
in the core/v1 shape too.)

So that thousands of pods do not become thousands of writes, the
recorder does what client-go's ``EventCorrelator`` does, in this order (the
aggregator and the spam filter are :class:`fleet.kube.EventAggregator` and
:class:`fleet.kube.SpamFilter`, shared with the shards' kubelets):

| step | rule (client-go ``events_cache.go``) |
|---|---|
| aggregation | from the 10th distinct message of events alike but for it (object, source, type and reason) within 10 min of the last, one event ``(combined from similar events): <latest message>`` |
| deduplication | an event equal to one already written bumps its ``count`` and ``lastTimestamp`` (a PATCH) instead of a new object |
| spam filter | a token bucket per source and object: burst 25, one more every 5 min; no token, no write (the series still counts it: the next write carries the whole count) |

:meth:`EventRecorder.record` never blocks a loop: events wait on a bounded
channel (client-go's broadcaster queue, 1000) and are dropped when it is
full; one task writes them, at most ``qps`` a second (burst ``burst``: the
client rate kube-controller-manager's events share), so a rollout of
thousands of pods costs the apiserver a steady trickle, not a flood. The
per-object state is kept for the ``cache_size`` objects seen last (client-go's
LRU caches). :data:`NO_EVENTS` records nothing (loops built
without a recorder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._resources import EVENTS, KObject, Resource, rfc3339
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import COMBINED, EventAggregator, SpamFilter

__all__ = ["NO_EVENTS", "EventRecorder", "EventSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The correlator's limits; defaults are client-go's."""

    queue: int = 1000
    """Events waiting to be written; more are dropped (``maxQueuedEvents``)."""
    spam_burst: int = 25
    """Events per source and object before the filter holds back (``defaultSpamBurst``)."""
    spam_refill: float = 300.0
    """Seconds per token after the burst (``defaultSpamQPS`` = 1/300)."""
    similar_max: int = 10
    """Similar events before they are combined (``defaultAggregateMaxEvents``)."""
    similar_window: float = 600.0
    """Seconds similar events are remembered (``defaultAggregateIntervalInSeconds``)."""
    cache_size: int = 4096
    """Objects whose last event is remembered for deduplication (``maxLruCacheEntries``)."""
    qps: float = 20.0
    """Event writes per second at most (kube-controller-manager's ``--kube-api-qps``)."""
    burst: int = 30
    """Writes allowed at once before ``qps`` applies (``--kube-api-burst``)."""

    def __post_init__(self) -> None:
        if self.queue < 1 or self.spam_burst < 1 or self.similar_max < 1 or self.burst < 1:
            raise ConfigError("events: queue, spam_burst, similar_max and burst must be >= 1")
        if self.qps <= 0:
            raise ConfigError("events: qps must be > 0")


@dataclass(slots=True)
class _Pending:
    namespace: str
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    component: str
    at: float
    """Wall-clock seconds when recorded: the event's time, however long it then waits to be
    written (client-go's ``makeEvent`` stamps it so; a kubelet's later event must not sort
    before it in ``kubectl describe``)."""


class EventRecorder:
    """Records events for the loops of one control plane; run :meth:`run` in a nursery."""

    def __init__(
        self,
        rest: Rest | None,
        settings: EventSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings if settings is not None else EventSettings()
        self._rest = rest
        self._clock = clock
        self._wall = wall_clock
        self._send, self._receive = trio.open_memory_channel[_Pending](s.queue)
        self._spam = SpamFilter(burst=s.spam_burst, refill=s.spam_refill, cache=s.cache_size)
        self._aggregator = EventAggregator(
            max_events=s.similar_max, window=s.similar_window, cache=s.cache_size
        )
        self._written: dict[tuple[str, ...], tuple[str, str, int]] = {}
        """Dedup key -> (event name, firstTimestamp, count)."""
        self._last_nanos = 0
        self.dropped = 0
        self.filtered = 0
        self.written = 0

    def record(
        self,
        obj: KObject,
        resource: Resource,
        type_: str,
        reason: str,
        message: str,
        component: str,
    ) -> None:
        """Queue an event about ``obj`` (of ``resource``); never blocks, drops when full."""
        if self._rest is None:
            return
        meta = obj.metadata
        involved = {
            "kind": resource.kind,
            "namespace": meta.namespace or None,
            "name": meta.name,
            "uid": meta.uid,
            "apiVersion": resource.api_version,
            "resourceVersion": meta.resource_version,
        }
        involved = {k: v for k, v in involved.items() if v}
        pending = _Pending(
            meta.namespace or "default", involved, type_, reason, message, component, self._wall()
        )
        try:
            self._send.send_nowait(pending)
        except trio.WouldBlock:
            self.dropped += 1

    def _keys(self, event: _Pending) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The event's series key (its message rewritten once alike ones are too many) and
        its spam key (``getSpamKey``: source and object, not its resourceVersion)."""
        inv = event.involved
        spam_key = (
            event.component, inv.get("kind", ""), inv.get("namespace", ""), inv.get("name", ""),
            inv.get("uid", ""), inv.get("apiVersion", ""),
        )  # fmt: skip
        group = (*spam_key, event.type, event.reason)
        if self._aggregator.combine(group, event.message, self._clock()):
            event.message = COMBINED + event.message
            return group, spam_key
        return (*group, event.message), spam_key

    async def _write(self, event: _Pending) -> None:
        assert self._rest is not None
        key, spam_key = self._keys(event)
        seen = self._written.get(key)
        if not self._spam.allow(spam_key, self._clock()):
            self.filtered += 1
            if seen is not None:
                self._written[key] = (seen[0], seen[1], seen[2] + 1)
            return
        now = rfc3339(event.at)
        if seen is not None:
            name, first, count = seen
            try:
                await self._rest.merge_patch(
                    EVENTS.path(event.namespace, name),
                    {"count": count + 1, "lastTimestamp": now, "message": event.message},
                )
                self._written[key] = (name, first, count + 1)
                self.written += 1
                return
            except NotFound:
                pass  # gone (TTL, deleted): write it anew
        # client-go names it by the time in nanoseconds; kept strictly increasing here so that
        # two events of one object in the same clock tick do not collide.
        self._last_nanos = max(self._last_nanos + 1, int(event.at * 1e9))
        name = f"{event.involved.get('name', '')}.{self._last_nanos:x}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": event.namespace},
            "involvedObject": event.involved,
            "reason": event.reason,
            "message": event.message,
            "source": {"component": event.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "type": event.type,
            "eventTime": None,
            "reportingComponent": event.component,
            "reportingInstance": "",
        }
        await self._rest.create(EVENTS.path(event.namespace), body)
        _bounded(self._written, self.settings.cache_size)
        self._written[key] = (name, now, 1)
        self.written += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued events until cancelled."""
        task_status.started()
        s = self.settings
        tokens, at = float(s.burst), self._clock()
        async for event in self._receive:
            now = self._clock()
            tokens = min(float(s.burst), tokens + (now - at) * s.qps)
            at = now
            if tokens < 1.0:
                await trio.sleep((1.0 - tokens) / s.qps)
                tokens, at = 1.0, self._clock()
            tokens -= 1.0
            try:
                await self._write(event)
            except FleetError as exc:
                log.debug("event %s on %s not recorded: %s", event.reason, event.involved, exc)


def _bounded(cache: dict[Any, Any], size: int) -> None:
    """Make room for one more entry by dropping the oldest (insertion order)."""
    while len(cache) >= size:
        cache.pop(next(iter(cache)))


NO_EVENTS = EventRecorder(None)
"""A recorder that records nothing (for loops run without one)."""
