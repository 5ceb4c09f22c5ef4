"""What the parts of a shard share: requesters behind the fence, timers, writes, events.

:class:`ShardContext` is built once by the engine and handed to the node
driver (``_kubelets``) and the pod driver (``_pods``). Its requesters are
wrapped in :class:`FencedRequester`, so no write for any node or pod leaves
the process while the shard's own Lease is stale (``_shardlease``): the fence
holds even for writes already queued. :class:`EventRecorder` posts Warning
Events (core/v1, as the kubelet's recorder shapes them), once per object,
reason and message.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import trio

from fleet._metrics import FleetMetrics
from fleet._settings import FleetSettings
from fleet.errors import FleetError, TransportError
from fleet.kube import (
    BaseRequester,
    BatchRequest,
    Requester,
    Response,
    StreamResponse,
    WriteQueue,
    resource_path,
)
from fleet.machinery import JSON, format_time
from shards._events import KubeletEvents
from shards._handover import HandoverGate
from shards._timers import TimerLanes

__all__ = [
    "EventRecorder",
    "Fenced",
    "FencedRequester",
    "HandedOver",
    "ShardContext",
    "TimerKey",
]

log = logging.getLogger(__name__)

TimerKey = tuple[str, str]
"""``(kind, object key)``: ``("lease", "ns/cr")``, ``("pod", "ns/pod")``..."""

_encoder = msgspec.json.Encoder()
_READS = frozenset({"GET", "HEAD"})
_MANAGED = frozenset({"POST", "PUT", "PATCH"})
"""The verbs that take ``fieldManager`` (DELETE does not)."""


class Fenced(TransportError):
    """A write refused locally: the shard's Lease is stale, it must not drive anything."""


class HandedOver(Fenced):
    """A write refused locally: its node is being handed to another shard (``_handover``)."""


class FencedRequester(BaseRequester):
    """A :class:`Requester` that refuses every write while ``allowed()`` is False.

    With ``field_manager``, every create, update and patch names its writer in the
    ``fieldManager`` query parameter (an apiserver records it in managedFields), so
    which shard wrote a node Lease or a pod status can be told from the server side.
    With ``gate``, writes for a node being handed over are refused too, and every write
    sent is counted until answered (:class:`~shards._handover.HandoverGate`).
    """

    def __init__(
        self,
        inner: Requester,
        allowed: Callable[[], bool],
        *,
        field_manager: str | None = None,
        clock: Callable[[], float] = trio.current_time,
        gate: HandoverGate | None = None,
    ) -> None:
        self.inner = inner
        self._allowed = allowed
        self._gate = gate
        self._manager = {"fieldManager": field_manager} if field_manager else None
        self._clock = clock

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if method not in _READS and not self._allowed():
            await trio.lowlevel.checkpoint()
            raise Fenced(f"{method} {path}: shard lease not fresh, not sending")
        if self._manager is not None and method in _MANAGED:
            params = {**params, **self._manager} if params else self._manager
        gate = self._gate
        if gate is None or method in _READS:
            return await self.inner.request(
                method, path, params=params, body=body, content_type=content_type, headers=headers
            )
        if gate.refuses(path):
            await trio.lowlevel.checkpoint()
            raise HandedOver(f"{method} {path}: node handed over, not sending")
        with gate.sending():
            return await self.inner.request(
                method, path, params=params, body=body, content_type=content_type, headers=headers
            )

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[StreamResponse]:
        return self.inner.stream(method, path, params=params, headers=headers)

    async def request_batch(
        self, requests: Sequence[BatchRequest]
    ) -> list[Response | TransportError]:
        """Send ``requests`` together; one answer or transport error each, in order.

        Sent by the requester underneath: pipelined by a
        :class:`~fleet.kube.HotTransport` (also behind an
        :class:`~fleet.kube.InstrumentedRequester`, which reports each request), one
        by one by any other.
        """
        if any(r.method not in _READS for r in requests) and not self._allowed():
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
            return [Fenced("shard lease not fresh, not sending")] * len(requests)
        if self._manager is not None:
            requests = [
                BatchRequest(
                    r.method,
                    r.path,
                    {**r.params, **self._manager} if r.params else self._manager,
                    r.body,
                    r.content_type,
                )
                if r.method in _MANAGED
                else r
                for r in requests
            ]
        gate = self._gate
        if gate is None:
            return await self.inner.request_batch(requests)
        refused = [r.method not in _READS and gate.refuses(r.path) for r in requests]
        if not any(refused):
            with gate.sending(len(requests)):
                return await self.inner.request_batch(requests)
        sent = [r for r, no in zip(requests, refused, strict=True) if not no]
        with gate.sending(len(sent)):
            answers = iter(await self.inner.request_batch(sent) if sent else ())
        if not sent:
            await trio.lowlevel.checkpoint()
        return [
            HandedOver(f"{r.method} {r.path}: node handed over, not sending")
            if no
            else next(answers)
            for r, no in zip(requests, refused, strict=True)
        ]


class EventRecorder:
    """Posts Warning Events about CRs and pods, each (object, reason, message) once."""

    MAX_REMEMBERED = 50_000
    """Distinct events remembered for de-duplication; the memory is cleared beyond it."""

    def __init__(
        self, requester: Requester, *, component: str, host: str, wall: Callable[[], datetime]
    ) -> None:
        self._requester = requester
        self._component = component
        self._host = host
        self._wall = wall
        self._sent: set[tuple[str, str, str]] = set()
        self.posted = 0

    async def warn(self, involved: Mapping[str, Any], reason: str, message: str) -> None:
        """Post one Warning Event on ``involved`` (an ObjectReference); failures are logged."""
        ident = (str(involved.get("uid") or involved.get("name")), reason, message)
        if ident in self._sent:
            return
        if len(self._sent) >= self.MAX_REMEMBERED:
            self._sent.clear()
        namespace = str(involved.get("namespace") or "default")
        now = self._wall()
        stamp = format_time(now)
        body = {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{involved.get('name')}.{int(now.timestamp() * 1e9):x}",
                "namespace": namespace,
            },
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "source": {"component": self._component, "host": self._host},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Warning",
            "reportingComponent": self._component,
            "reportingInstance": self._host,
        }
        path = resource_path("", "v1", "events", namespace=namespace)
        try:
            response = await self._requester.request(
                "POST", path, body=_encoder.encode(body), content_type=JSON
            )
            response.raise_for_status()
        except FleetError as exc:
            log.info("event %s on %s not posted: %s", reason, involved.get("name"), exc)
            return
        self._sent.add(ident)
        self.posted += 1


@dataclass
class ShardContext:
    """The shared machinery of one shard."""

    shard: str
    settings: FleetSettings
    control: Requester
    """CR reads and writes, registration, events (fenced)."""
    hot: Requester
    """Through the write queue: Lease PUTs, status PATCHes, pod DELETEs (fenced)."""
    writes: WriteQueue
    timers: TimerLanes[TimerKey]
    events: EventRecorder
    metrics: FleetMetrics
    clock: Callable[[], float]
    wall: Callable[[], datetime]
    fresh: Callable[[], bool]
    """The fence: True while the shard's Lease is fresh."""
    fence_open: Callable[[], bool] = lambda: True
    """The fence as its callbacks last reported it. ``fresh()`` can be False for a moment
    while this is still True (the shard Lease's renewal answered late on a saturated
    machine, then in time after all: no ``fence_lost``, so no ``fence_regained``): work
    that finds the Lease not fresh then is put off, never dropped."""
    rng: random.Random = field(default_factory=random.Random)
    kubelet_events: KubeletEvents | None = None
    """The Events the kubelets post (:mod:`shards._events`); None: none."""
    handover: HandoverGate = field(default_factory=HandoverGate)
    """The door the requesters above keep for nodes being handed over (:mod:`shards._handover`)."""
