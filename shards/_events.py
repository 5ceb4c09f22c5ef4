"""The Events a kubelet posts, as it posts them: core/v1, one series per repeat.

A real kubelet's event recorder (client-go ``tools/record``) posts, for its node
(namespace ``default``, involvedObject ``{kind: Node, name, uid: <name>}``):
``Starting`` ("Starting kubelet."), ``NodeHasSufficientMemory``,
``NodeHasNoDiskPressure``, ``NodeHasSufficientPID`` and ``NodeReady`` ("Node
<name> status is now: <reason>"); and for each container of its pods (the pod's
namespace, involvedObject the Pod with ``fieldPath: spec.containers{<name>}``):
``Pulling``, ``Pulled``, ``Created``, ``Started``, and ``Killing`` when it is
stopped (kubelet-requests.md, "Events"). source ``{component: kubelet, host:
<node>}``, ``type: Normal``, ``count``/``firstTimestamp``/``lastTimestamp``,
``eventTime`` null, name ``<object>.<UnixNano as hex>``.

What a container's own behaviour makes the kubelet post (:func:`container_events`,
the wording of ``pkg/kubelet/kuberuntime`` and ``pkg/kubelet/prober``):

==============================  ==============================================================
status change                   event
==============================  ==============================================================
waiting CrashLoopBackOff        Warning ``BackOff`` "Back-off restarting failed container
(a new back-off window)         <c> in pod <name>_<ns>(<uid>)"; when the window ends, one more
                                per :data:`BACKOFF_RESYNC` it lasted (the pod worker syncs the
                                pod again and ``doBackOff`` posts again each time)
running, ready -> not ready     Warning ``Unhealthy`` "Readiness probe failed: <output>",
(readiness flapping)            :data:`FAILURE_THRESHOLD` of them (every failed probe posts;
                                the container turns not ready at the third); when it is ready
                                again, one more per :data:`PROBE_PERIOD` it was not
a sidecar stopped as its pod    Normal ``Killing`` "Stopping container <c>" (as for every
ends, any container of a pod    running container of a deleted pod)
being deleted
a new exit ``OOMKilled``        Warning ``OOMKilling`` on the *node*, as node-problem-detector's
                                kernel monitor posts it (source ``{component:
                                kernel-monitor, host: <node>}``): the kernel's "Memory cgroup
                                out of memory: Killed process ..." line. The kubelet itself
                                posts ``SystemOOM`` only for an OOM of the whole machine
                                (``pkg/kubelet/oom``: victim container ``/``), not for a
                                container over its limit, so no kubelet event is imitated.
==============================  ==============================================================

Its correlator (client-go ``EventCorrelator``, which the kubelet's broadcaster
runs before every write; the aggregator and the spam filter are
:class:`fleet.kube.EventAggregator` and :class:`fleet.kube.SpamFilter`, shared
with the control plane's recorder):

- the aggregator, first: events alike but for their message (source, involved
  object without its fieldPath, type, reason) are grouped for 10 minutes; from
  the 10th distinct message on, each is counted in the group's one series, its
  message prefixed "(combined from similar events): ". What it folds here: a
  node's ``OOMKilling`` (each kill's kernel line differs) once ten of its pods'
  containers were killed within ten minutes, and the ``Created``/``Started``/
  ``Pulled`` of a pod with ten containers or more;
- series: an event equal to one already sent (same object and fieldPath,
  reason, message, type, source) is not posted again but PATCHed (strategic
  merge: ``count``, ``lastTimestamp``, ``message``), kept in an LRU of 4,096
  (``maxLruCacheEntries``); a repeat that finds its Event gone (404: expired,
  1 h TTL) creates it again under the same name with the count reached;
- the spam filter, last: per source and involved object (``getSpamKey``: not
  the reason, not the fieldPath) a token bucket of 25 refilled at one per 5
  minutes; an event without a token is not written, but its series is still
  counted, so the next write carries the whole count ("x40 over 2h"). A
  crash-looping pod thus costs a burst of writes, then one every 5 minutes,
  however fast it loops.

:class:`KubeletEvents` does no I/O where events arise (timer workers, the node
watch's consumer): :meth:`KubeletEvents.record` puts the request on a bounded
channel and drops it when the channel is full (counted), as the kubelet's
broadcaster drops on a full queue. One task hands them to the shard's write
queue, and only while the queue is nearly empty (:data:`QUIET_DEPTH`): events
come after every status write, and the write queue itself gives way to the
Lease lane, so they never delay a renewal. ``shard.events: false`` turns them
off. :func:`container_events` is the pure part: which container events a status
change means.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import trio

from fleet.kube import (
    COMBINED,
    CORRELATOR_CACHE,
    EventAggregator,
    SpamFilter,
    Write,
    WriteQueue,
    WriteResult,
    resource_path,
)
from fleet.machinery import JSON, STRATEGIC_MERGE_PATCH, format_time, parse_time

__all__ = [
    "BACKOFF_RESYNC",
    "EVENT_BUFFER",
    "FAILURE_THRESHOLD",
    "NODE_STARTED",
    "PROBE_FAILURE",
    "PROBE_PERIOD",
    "QUIET_DEPTH",
    "ContainerEvent",
    "KubeletEvents",
    "container_events",
]

log = logging.getLogger(__name__)

EVENT_BUFFER = 4096
"""Events waiting for the write queue before new ones are dropped (client-go's broadcaster
queues 1,000 per kubelet; a shard is thousands of kubelets, whose events mostly come in
bursts: a registration wave, a Deployment's pods starting)."""
QUIET_DEPTH = 64
"""Events go into the write queue only while fewer writes than this wait there: node and pod
status PATCHes first, events in the gaps."""
QUIET_POLL = 0.05
"""Seconds between looks at the write queue while it is busy."""
BACKOFF_RESYNC = 12.5
"""Seconds between the BackOff events of one back-off window: the pod worker syncs a pod
again after ``backOffPeriod`` (10 s) plus up to 50 % jitter, 12.5 s on average, and each sync
of a container in back-off posts BackOff again."""
PROBE_PERIOD = 10.0
"""Seconds between readiness probes: the probe's default ``periodSeconds``."""
FAILURE_THRESHOLD = 3
"""Failed probes before a container turns not ready: the default ``failureThreshold``;
each failed probe posts Unhealthy."""
PROBE_FAILURE = "HTTP probe failed with statuscode: 503"
"""The failing readiness probe's output (an HTTP probe's, the most common kind)."""
NODE_STARTED = (
    ("Starting", "Starting kubelet."),
    ("NodeHasSufficientMemory", "Node {node} status is now: NodeHasSufficientMemory"),
    ("NodeHasNoDiskPressure", "Node {node} status is now: NodeHasNoDiskPressure"),
    ("NodeHasSufficientPID", "Node {node} status is now: NodeHasSufficientPID"),
    ("NodeReady", "Node {node} status is now: NodeReady"),
)
"""What a kubelet posts when it registers its node Ready (the recorded kubelet's order)."""

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    reason: str
    message: str
    field_path: str
    type_: str = "Normal"
    repeats: int = 1
    """Occurrences this stands for (the series' count goes up by as many)."""
    on_node: bool = False
    """About the pod's node, not the pod (OOMKilling)."""
    component: str = "kubelet"


def _started(state: Mapping[str, Any]) -> bool:
    return "running" in state or "terminated" in state


def _statuses(status: Mapping[str, Any], field: str) -> Iterator[Mapping[str, Any]]:
    for item in status.get(field) or ():
        if isinstance(item, Mapping):
            yield item


def _state_of(status: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    state = status.get(kind) or {}
    return state if isinstance(state, Mapping) else {}


def _exits(status: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """The container's runs that have ended, as its status shows them (now and last)."""
    for kind in ("state", "lastState"):
        ended = _state_of(_state_of(status, kind), "terminated")
        if ended:
            yield ended


def _seconds_since(stamp: Any, now: datetime | None) -> float:
    if now is None or not isinstance(stamp, str):
        return 0.0
    try:
        return max(0.0, (now - parse_time(stamp)).total_seconds())
    except ValueError:
        return 0.0


def _ready_since(status: Mapping[str, Any]) -> Any:
    """When the pod's Ready condition last changed (a not-ready window's start)."""
    for condition in status.get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("lastTransitionTime")
    return None


def oom_message(uid: str, container_id: str, process: str) -> str:
    """The kernel's line for a memory cgroup OOM kill (what node-problem-detector quotes).

    The numbers are made up, the same for the same run (drawn from the pod's uid and the
    run's container id): no process exists to measure.
    """
    digest = hashlib.blake2b(f"{uid}/{container_id}".encode(), digest_size=8).digest()
    draw = int.from_bytes(digest, "big")
    pid = 1000 + draw % 4_000_000
    rss = 65_536 + (draw >> 22) % 4_000_000
    return (
        f"Memory cgroup out of memory: Killed process {pid} ({process}) "
        f"total-vm:{rss + rss // 2}kB, anon-rss:{rss}kB, file-rss:{(draw >> 44) % 8192}kB, "
        f"shmem-rss:0kB, UID:0 pgtables:{rss // 256}kB oom_score_adj:{900 + (draw >> 50) % 100}"
    )


def container_events(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    pulled_in: float,
    deleting: bool,
    images: Mapping[str, str] | None = None,
    pod: str = "",
    uid: str = "",
    now: datetime | None = None,
    sidecars: frozenset[str] = frozenset(),
) -> list[ContainerEvent]:
    """The container events a kubelet posts between pod status ``before`` and ``after``.

    A container started (running or terminated, where it was neither; or its restart
    count went up): its first start ``Pulling`` and ``Pulled`` (pulled in
    ``pulled_in`` seconds), a restart ``Pulled`` (already present); then ``Created``
    and ``Started``. A running container stopped because its pod is ``deleting``, or a
    sidecar (a name in ``sidecars``) stopped as its pod ends: ``Killing``. And the
    table of the module docstring: ``BackOff``, ``Unhealthy``, ``OOMKilling``.
    ``images``: container name -> image as the spec writes it (what the kubelet's
    messages quote; the status may hold the runtime's normalised name). ``pod``: the
    kubelet's ``format.Pod`` of it (``<name>_<ns>(<uid>)``); ``now``: the time of
    ``after`` (the length of a window that just ended).
    """
    out: list[ContainerEvent] = []
    for field, where in (
        ("initContainerStatuses", "spec.initContainers"),
        ("containerStatuses", "spec.containers"),
    ):
        old = {str(c.get("name")): c for c in _statuses(before, field)}
        for new in _statuses(after, field):
            name = str(new.get("name"))
            path = f"{where}{{{name}}}"
            prev = old.get(name) or {}
            state = new.get("state") or {}
            prev_state = prev.get("state") or {}
            restarts = int(new.get("restartCount") or 0)
            restarted = restarts > int(prev.get("restartCount") or 0)
            image = (images or {}).get(name) or str(new.get("image") or "")
            waiting = _state_of(state, "waiting")
            prev_waiting = _state_of(prev_state, "waiting")
            backing_off = waiting.get("reason") == "CrashLoopBackOff"
            was_backing_off = prev_waiting.get("reason") == "CrashLoopBackOff"
            if not deleting:
                seen = {e.get("containerID") for e in _exits(prev)}
                for ended in _exits(new):
                    cid = ended.get("containerID")
                    if ended.get("reason") == "OOMKilled" and cid and cid not in seen:
                        seen.add(cid)
                        message = oom_message(uid, str(cid), name)
                        out.append(
                            ContainerEvent(
                                "OOMKilling",
                                message,
                                "",
                                type_="Warning",
                                on_node=True,
                                component="kernel-monitor",
                            )
                        )
            if was_backing_off and not backing_off:
                # The window is over: the syncs in it each posted BackOff again.
                last = _state_of(_state_of(prev, "lastState"), "terminated")
                window = _seconds_since(last.get("finishedAt"), now)
                more = math.ceil(window / BACKOFF_RESYNC) - 1
                if more > 0:
                    message = f"Back-off restarting failed container {name} in pod {pod}"
                    out.append(
                        ContainerEvent("BackOff", message, path, type_="Warning", repeats=more)
                    )
            if (_started(state) and not _started(prev_state)) or restarted:
                if restarts == 0:
                    out.append(ContainerEvent("Pulling", f'Pulling image "{image}"', path))
                    took = f"{max(pulled_in, 0.0):.3f}".rstrip("0").rstrip(".") + "s"
                    message = f'Successfully pulled image "{image}" in {took}'
                    out.append(ContainerEvent("Pulled", message, path))
                else:
                    message = f'Container image "{image}" already present on machine'
                    out.append(ContainerEvent("Pulled", message, path))
                out.append(ContainerEvent("Created", f"Created container {name}", path))
                out.append(ContainerEvent("Started", f"Started container {name}", path))
            elif (
                (deleting or name in sidecars) and "running" in prev_state and "terminated" in state
            ):
                out.append(ContainerEvent("Killing", f"Stopping container {name}", path))
            if backing_off and (not was_backing_off or restarted):
                message = f"Back-off restarting failed container {name} in pod {pod}"
                out.append(ContainerEvent("BackOff", message, path, type_="Warning"))
            running = "running" in state and "running" in prev_state and not restarted
            if running and prev.get("ready") is True and new.get("ready") is False:
                out.append(
                    ContainerEvent(
                        "Unhealthy",
                        f"Readiness probe failed: {PROBE_FAILURE}",
                        path,
                        type_="Warning",
                        repeats=FAILURE_THRESHOLD,
                    )
                )
            elif running and prev.get("ready") is False and new.get("ready") is True:
                # Ready again: the probes that failed while it was not ready each posted.
                window = _seconds_since(_ready_since(before), now)
                more = math.ceil(window / PROBE_PERIOD) - 1
                if more > 0:
                    out.append(
                        ContainerEvent(
                            "Unhealthy",
                            f"Readiness probe failed: {PROBE_FAILURE}",
                            path,
                            type_="Warning",
                            repeats=more,
                        )
                    )
    return out


@dataclass(slots=True)
class _Series:
    name: str
    namespace: str
    count: int
    event: dict[str, Any]
    """The Event as first made (what a POST after a 404 or a throttled start sends)."""
    posted: bool = False
    """Written (or on its way): repeats PATCH it; otherwise the next write POSTs it."""


class KubeletEvents:
    """Every fake kubelet's event recorder, for one shard; see the module docstring."""

    def __init__(
        self,
        writes: WriteQueue,
        *,
        wall: Callable[[], datetime],
        enabled: bool = True,
        buffer: int = EVENT_BUFFER,
    ) -> None:
        self.enabled = enabled
        self._writes = writes
        self._wall = wall
        self._send, self._receive = trio.open_memory_channel[tuple[str, Write]](buffer)
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self._spam = SpamFilter()
        self._aggregator = EventAggregator()
        self._last_nanos = 0
        self.recorded = 0
        """Events handed to the write queue's channel (POSTs and repeat PATCHes)."""
        self.dropped = 0
        """Events dropped because the channel was full."""
        self.throttled = 0
        """Events the spam filter kept from being written (still counted in their series)."""
        self.combined = 0
        """Events written as their group's combined series (the aggregator)."""

    # -- where events arise (no I/O) -----------------------------------------------------------

    def node(self, node: str, reason: str, message: str) -> None:
        """An event about the kubelet's own node (namespace ``default``)."""
        involved = {"kind": "Node", "name": node, "uid": node}
        self.record(involved, "default", reason, message, host=node)

    def node_started(self, node: str) -> None:
        """What a kubelet posts when it has registered its node, Ready."""
        for reason, message in NODE_STARTED:
            self.node(node, reason, message.format(node=node))

    def pod(
        self,
        namespace: str,
        name: str,
        uid: str,
        events: list[ContainerEvent],
        *,
        host: str,
    ) -> None:
        for event in events:
            if event.on_node:
                self.record(
                    {"kind": "Node", "name": host, "uid": host},
                    "default",
                    event.reason,
                    event.message,
                    host=host,
                    type_=event.type_,
                    component=event.component,
                    repeats=event.repeats,
                )
                continue
            involved = {
                "kind": "Pod",
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "apiVersion": "v1",
                "fieldPath": event.field_path,
            }
            self.record(
                involved,
                namespace,
                event.reason,
                event.message,
                host=host,
                type_=event.type_,
                component=event.component,
                repeats=event.repeats,
            )

    def record(
        self,
        involved: Mapping[str, str],
        namespace: str,
        reason: str,
        message: str,
        *,
        host: str,
        type_: str = "Normal",
        component: str = "kubelet",
        repeats: int = 1,
    ) -> None:
        """Count one event (``repeats`` of it) in its series, and queue its write: a new series
        POSTed, a repeat PATCHed; not written when the spam filter says so, dropped if the
        queue is full."""
        if not self.enabled:
            return
        now = self._wall()
        stamp = format_time(now)
        spam_key = (
            component,
            host,
            involved.get("kind", ""),
            involved.get("namespace", ""),
            involved.get("name", ""),
            involved.get("uid", ""),
            involved.get("apiVersion", ""),
        )
        key: tuple[str, ...]
        if self._aggregator.combine((*spam_key, type_, reason), message, now.timestamp()):
            self.combined += 1
            message = COMBINED + message
            key = ("", *spam_key, type_, reason)  # the group's series: no fieldPath, no message
        else:
            key = (
                involved.get("uid") or involved.get("name", ""),
                involved.get("fieldPath", ""),
                reason,
                message,
                type_,
                component,
                host,
            )
        series = self._series.get(key)
        if series is not None:
            self._series.move_to_end(key)
            series.count += repeats
        else:
            nanos = max(int(now.timestamp() * 1e9), self._last_nanos + 1)
            self._last_nanos = nanos
            name = f"{involved.get('name')}.{nanos:x}"
            event = {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": dict(involved),
                "reason": reason,
                "message": message,
                "source": {"component": component, "host": host},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": repeats,
                "type": type_,
                "eventTime": None,
                "reportingComponent": "",
                "reportingInstance": "",
            }
            series = self._series[key] = _Series(name, namespace, repeats, event)
            if len(self._series) > CORRELATOR_CACHE:
                self._series.popitem(last=False)
        if not self._spam.allow(spam_key, now.timestamp()):
            self.throttled += 1
            return
        if series.posted:
            body = {"count": series.count, "lastTimestamp": stamp, "message": message}
            path = resource_path("", "v1", "events", namespace=series.namespace, name=series.name)
            write = Write(
                "PATCH",
                path,
                _encode(body),
                STRATEGIC_MERGE_PATCH,
                on_result=self._on_result(key, series),
                force=True,
            )
        else:
            series.posted = True
            event = {**series.event, "count": series.count, "lastTimestamp": stamp}
            path = resource_path("", "v1", "events", namespace=series.namespace)
            write = Write(
                "POST",
                path,
                _encode(event),
                JSON,
                on_result=self._on_result(key, series),
                force=True,
            )
        self._queue(f"events/{series.namespace}/{series.name}", write)

    def _queue(self, key: str, write: Write) -> None:
        try:
            self._send.send_nowait((key, write))
        except trio.WouldBlock:
            self.dropped += 1
            return
        self.recorded += 1

    def _on_result(self, key: tuple[str, ...], series: _Series) -> Callable[[WriteResult], None]:
        def done(result: WriteResult) -> None:
            if result.outcome == "gone":
                # Expired (its 1 h TTL): the next repeat creates it again, as client-go's
                # recordEvent does after a 404 on its PATCH, with the count reached.
                series.posted = False
            elif result.outcome in ("failed", "conflict") and self._series.get(key) is series:
                del self._series[key]  # never made: the next repeat starts anew

        return done

    # -- the task ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hand queued events to the write queue in its quiet moments, until cancelled."""
        task_status.started()
        async with self._receive:
            async for key, write in self._receive:
                # A poll, not an event: the write queue has no "below N" signal to wait on.
                for _ in iter(lambda: self._writes.statistics().depth >= QUIET_DEPTH, False):
                    await trio.sleep(QUIET_POLL)
                await self._writes.submit(key, write)
