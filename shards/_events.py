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

Its correlator's series: an event equal to one already sent (same object,
reason, message, type, source) is not posted again but PATCHed (strategic
merge: ``count``, ``lastTimestamp``, ``message``), kept in an LRU of 4,096
(client-go ``maxLruCacheEntries``); a 404 (the Event expired, 1 h TTL) starts
a new series. client-go's aggregator (ten similar events with different
messages folded into one) is not imitated.

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

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import trio

from fleet.kube import Write, WriteQueue, WriteResult, resource_path
from fleet.machinery import JSON, STRATEGIC_MERGE_PATCH, format_time

__all__ = [
    "EVENT_BUFFER",
    "NODE_STARTED",
    "QUIET_DEPTH",
    "SERIES_CACHE",
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
SERIES_CACHE = 4096
"""Event series remembered for counting repeats: client-go's ``maxLruCacheEntries``."""
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


def _started(state: Mapping[str, Any]) -> bool:
    return "running" in state or "terminated" in state


def _statuses(status: Mapping[str, Any], field: str) -> Iterator[Mapping[str, Any]]:
    for item in status.get(field) or ():
        if isinstance(item, Mapping):
            yield item


def container_events(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    pulled_in: float,
    deleting: bool,
    images: Mapping[str, str] | None = None,
) -> list[ContainerEvent]:
    """The container events a kubelet posts between pod status ``before`` and ``after``.

    A container started (running or terminated, where it was neither; or its restart
    count went up): its first start ``Pulling`` and ``Pulled`` (pulled in
    ``pulled_in`` seconds), a restart ``Pulled`` (already present); then ``Created``
    and ``Started``. A running container stopped because its pod is ``deleting``:
    ``Killing``. ``images``: container name -> image as the spec writes it (what the
    kubelet's messages quote; the status may hold the runtime's normalised name).
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
            elif deleting and "running" in prev_state and "terminated" in state:
                out.append(ContainerEvent("Killing", f"Stopping container {name}", path))
    return out


@dataclass(slots=True)
class _Series:
    name: str
    namespace: str
    count: int


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
        self._last_nanos = 0
        self.recorded = 0
        """Events handed to the write queue's channel (POSTs and repeat PATCHes)."""
        self.dropped = 0
        """Events dropped because the channel was full."""

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
            involved = {
                "kind": "Pod",
                "namespace": namespace,
                "name": name,
                "uid": uid,
                "apiVersion": "v1",
                "fieldPath": event.field_path,
            }
            self.record(involved, namespace, event.reason, event.message, host=host)

    def record(
        self,
        involved: Mapping[str, str],
        namespace: str,
        reason: str,
        message: str,
        *,
        host: str,
        type_: str = "Normal",
    ) -> None:
        """Queue one event: a new series POSTed, a repeat PATCHed; dropped if the queue is full."""
        if not self.enabled:
            return
        now = self._wall()
        stamp = format_time(now)
        key = (
            involved.get("uid") or involved.get("name", ""),
            involved.get("fieldPath", ""),
            reason,
            message,
            type_,
            host,
        )
        series = self._series.get(key)
        if series is not None:
            self._series.move_to_end(key)
            series.count += 1
            body = {"count": series.count, "lastTimestamp": stamp, "message": message}
            path = resource_path("", "v1", "events", namespace=series.namespace, name=series.name)
            write = Write(
                "PATCH",
                path,
                _encode(body),
                STRATEGIC_MERGE_PATCH,
                on_result=self._forget_on_404(key, series),
                force=True,
            )
            self._queue(f"events/{series.namespace}/{series.name}", write)
            return
        nanos = max(int(now.timestamp() * 1e9), self._last_nanos + 1)
        self._last_nanos = nanos
        name = f"{involved.get('name')}.{nanos:x}"
        series = _Series(name, namespace, 1)
        self._series[key] = series
        if len(self._series) > SERIES_CACHE:
            self._series.popitem(last=False)
        event = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": host},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": type_,
            "eventTime": None,
            "reportingComponent": "",
            "reportingInstance": "",
        }
        path = resource_path("", "v1", "events", namespace=namespace)
        write = Write(
            "POST",
            path,
            _encode(event),
            JSON,
            on_result=self._forget_on_404(key, series),
            force=True,
        )
        self._queue(f"events/{namespace}/{name}", write)

    def _queue(self, key: str, write: Write) -> None:
        try:
            self._send.send_nowait((key, write))
        except trio.WouldBlock:
            self.dropped += 1
            return
        self.recorded += 1

    def _forget_on_404(
        self, key: tuple[str, ...], series: _Series
    ) -> Callable[[WriteResult], None]:
        def done(result: WriteResult) -> None:
            if result.outcome in ("gone", "failed", "conflict") and self._series.get(key) is series:
                del self._series[key]  # expired or never made: the next repeat starts anew

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
