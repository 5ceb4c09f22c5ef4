"""The sandbox's storage: objects in memory, one global resourceVersion, watch fan-out.

Plays etcd plus the apiserver's watch cache. Every write goes through
:meth:`Store.commit`, which bumps the one global resourceVersion counter,
records an event in the resource's bounded history (``watch_history`` events,
and beyond that those younger than ``watch_history_window`` seconds, as the
real watch cache keeps a time window, up to :data:`HISTORY_CAP`) and
hands it to that resource's watchers through their bounded channels. The
history also lets a list be served as of an older resourceVersion (consistent
pages, ``resourceVersionMatch=Exact``); asking for one older than the history
keeps is 410 Gone, as after an etcd compaction.

Objects are plain dicts and are never mutated once stored: writers build a
new dict (:func:`clone`) and commit it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from fleet.sandbox._objects import field_value

Key = tuple[str, str]
"""Storage key of a resource type: (group, plural)."""
ObjKey = tuple[str, str]
"""Key of an object within its type: (namespace or "", name)."""

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

log = logging.getLogger("fleet.sandbox")

HISTORY_CAP = 100 * 1024
"""Most events a resource's history keeps, whatever their age: the real watch cache's
largest capacity (``100 * 1024``, the apiserver's cacher sized dynamically)."""

INDEXED_FIELDS: dict[Key, str] = {("", "pods"): "spec.nodeName"}
"""The field each resource's objects are indexed by, as kube-apiserver's watch cache indexes
pods by ``spec.nodeName`` (``pkg/registry/core/pod``: ``NodeNameIndexFunc``, the cacher's
``IndexerFuncs``): every kubelet lists its own pods with ``fieldSelector=spec.nodeName=<node>``.
Unindexed, each such list looked at every pod: in a restart storm of 2,000 nodes over 4,000
pods, 68 % of the sandbox's CPU (py-spy, docs/performance.md)."""


def clone(obj: Any) -> Any:
    """A deep copy of a JSON-like value (faster than copy.deepcopy for these)."""
    return _decoder.decode(_encoder.encode(obj))


def obj_key(obj: dict[str, Any]) -> ObjKey:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


@dataclass(slots=True, frozen=True)
class Event:
    """One committed change: ``obj`` is the new state (the last state for DELETED)."""

    rv: int
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None
    lines: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    """Watch lines already encoded for ``obj``, by event type: every watcher that sends
    ``obj`` as is sends the same bytes, so it is encoded once, not once per watcher."""


class Watcher:
    """One open watch: the store pushes events into its bounded channel."""

    def __init__(self, namespace: str | None, capacity: int) -> None:
        self.namespace = namespace
        self.send, self.receive = trio.open_memory_channel[Event](capacity)
        self.overflowed = False

    def offer(self, ev: Event) -> None:
        if self.overflowed:
            return
        try:
            self.send.send_nowait(ev)
        except trio.WouldBlock:
            # Too slow: close its stream, as the real apiserver drops a watcher that
            # cannot keep up; the client re-lists and watches again.
            self.overflowed = True
            self.send.close()
        except trio.ClosedResourceError:
            self.overflowed = True


@dataclass
class Collection:
    """All objects of one resource type, their recent events and their watchers."""

    history_limit: int
    window_start: int
    """A watch or snapshot from resourceVersion N can be served iff N >= window_start."""
    objects: dict[ObjKey, dict[str, Any]] = field(default_factory=dict)
    history: deque[Event] = field(default_factory=deque)
    watchers: set[Watcher] = field(default_factory=set)

    history_window: float = 0.0
    """Seconds of events kept beyond :attr:`history_limit` (up to :data:`HISTORY_CAP`)."""
    times: deque[float] = field(default_factory=deque)
    """When each event of :attr:`history` was recorded (monotonic), in the same order."""
    index_field: str | None = None
    """The field :attr:`index` is by (:data:`INDEXED_FIELDS`), or None: no index."""
    index: dict[str, set[ObjKey]] = field(default_factory=dict)
    """The keys of the current objects by their :attr:`index_field`'s value (as a field
    selector sees it: missing is ``""``)."""

    def put(self, k: ObjKey, obj: dict[str, Any] | None) -> None:
        """Store ``obj`` under ``k`` (None: remove it), keeping :attr:`index` in step."""
        old = self.objects.pop(k, None) if obj is None else self.objects.get(k)
        if obj is not None:
            self.objects[k] = obj
        name = self.index_field
        if name is None:
            return
        before = None if old is None else field_value(old, name)
        after = None if obj is None else field_value(obj, name)
        if before == after:
            return
        if before is not None:
            keys = self.index[before]
            keys.discard(k)
            if not keys:
                del self.index[before]
        if after is not None:
            self.index.setdefault(after, set()).add(k)

    def indexed(self, value: str) -> list[dict[str, Any]]:
        """The current objects whose :attr:`index_field` is ``value``."""
        objects = self.objects
        return [objects[k] for k in self.index.get(value, ())]

    def record(self, ev: Event) -> None:
        history, times = self.history, self.times
        now = time.monotonic()
        while len(history) >= self.history_limit and (
            len(history) >= HISTORY_CAP or now - times[0] > self.history_window
        ):
            dropped = history.popleft()
            times.popleft()
            self.window_start = max(self.window_start, dropped.rv)
        history.append(ev)
        times.append(now)
        for w in list(self.watchers):
            if w.namespace is None or w.namespace == (ev.obj["metadata"].get("namespace") or ""):
                w.offer(ev)

    def events_after(self, rv: int) -> list[Event]:
        """Events newer than ``rv`` (caller checked ``rv >= window_start``)."""
        out: list[Event] = []
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            out.append(ev)
        out.reverse()
        return out

    def snapshot(self, rv: int) -> dict[ObjKey, dict[str, Any]]:
        """The objects as they were at ``rv`` (caller checked ``rv >= window_start``)."""
        state = dict(self.objects)
        for ev in reversed(self.history):
            if ev.rv <= rv:
                break
            k = obj_key(ev.obj)
            if ev.prev is None:
                state.pop(k, None)
            else:
                state[k] = ev.prev
        return state


class Store:
    """Every object the sandbox holds, keyed by resource type."""

    def __init__(
        self, *, history_limit: int, watch_queue: int, history_window: float = 0.0
    ) -> None:
        self.rv = 0
        self.start_rv = 0
        self.history_limit = history_limit
        self.history_window = history_window
        self.watch_queue = watch_queue
        self._collections: dict[Key, Collection] = {}
        self._changed = trio.Event()
        self.on_commit: list[Callable[[Key, Event], None]] = []

    def collection(self, key: Key) -> Collection:
        c = self._collections.get(key)
        if c is None:
            c = self._collections[key] = Collection(
                self.history_limit,
                self.start_rv,
                history_window=self.history_window,
                index_field=INDEXED_FIELDS.get(key),
            )
        return c

    def keys(self) -> Iterable[Key]:
        return list(self._collections)

    def get(self, key: Key, ns: str, name: str) -> dict[str, Any] | None:
        c = self._collections.get(key)
        return None if c is None else c.objects.get((ns, name))

    def commit(
        self, key: Key, type_: str, obj: dict[str, Any], prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store ``obj`` (ADDED/MODIFIED) or remove it (DELETED) at the next resourceVersion.

        ``obj`` must be a fresh dict owned by the store from now on; it is given its
        resourceVersion here and returned.
        """
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        c = self.collection(key)
        k = obj_key(obj)
        c.put(k, None if type_ == "DELETED" else obj)
        ev = Event(self.rv, type_, obj, prev)
        c.record(ev)
        for hook in self.on_commit:
            hook(key, ev)
        self._changed.set()
        self._changed = trio.Event()
        return obj

    async def wait_for_rv(self, rv: int) -> None:
        """Return once the global resourceVersion reaches ``rv``."""
        while self.rv < rv:
            await self._changed.wait()

    def count(self, key: Key) -> int:
        c = self._collections.get(key)
        return 0 if c is None else len(c.objects)

    # persistence ---------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {
            "resourceVersion": self.rv,
            "collections": [
                {"group": k[0], "resource": k[1], "objects": list(c.objects.values())}
                for k, c in self._collections.items()
                if c.objects
            ],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take the objects of a :meth:`dump` (checked by the caller).

        The store's resourceVersion is at least its newest object's, whatever the file
        says: resourceVersions never go backwards.
        """
        self._collections.clear()
        newest = 0
        for entry in data["collections"]:
            c = self.collection((entry["group"], entry["resource"]))
            for obj in entry["objects"]:
                c.put(obj_key(obj), obj)
                newest = max(newest, int(obj["metadata"].get("resourceVersion") or 0))
        stated = int(data["resourceVersion"])
        if newest > stated:
            log.warning(
                "sandbox data: resourceVersion %d is older than its newest object's; "
                "continuing from %d",
                stated,
                newest,
            )
        self.rv = max(stated, newest)
        self.start_rv = self.rv

    def mark_start(self) -> None:
        """History begins now: watches from an earlier resourceVersion get 410, as on a fresh apiserver."""
        self.start_rv = self.rv
        for c in self._collections.values():
            c.history.clear()
            c.times.clear()
            c.window_start = self.rv
