"""WATCH: a stream of events from a resourceVersion, with selectors and bookmarks.

A :class:`WatchStream` is prepared (query checked, watcher registered, the
initial events computed, all without yielding to other tasks, so no commit
slips between them) and then run, writing one JSON event per line. Semantics
as the apiserver documents them:

- ``resourceVersion`` unset or ``0``: a synthetic ADDED for every current
  object, then changes; ``N``: every change after N from the resource's
  history, or a single ERROR 410 event when N is older than the history.
- selector transitions: an object that stops matching is sent as DELETED
  (its last matching state), one that starts matching as ADDED.
- ``allowWatchBookmarks``: BOOKMARK events every ``bookmark_interval`` and
  shortly before ``timeoutSeconds`` ends; the server closes the stream at
  ``timeoutSeconds``.
- a watcher that falls ``watch_queue`` events behind is closed.

Cost: an event's line is encoded once and shared by every watcher that sends
the object unchanged (``Event.lines``); the events queued for a watcher when
it wakes are written as one chunk (at most :data:`MAX_BATCH`), so a busy
watch costs one write per wake-up, not one per event.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import trio

from fleet.sandbox._api import Api, Call
from fleet.sandbox._fields import Filter
from fleet.sandbox._lists import parse_rv
from fleet.sandbox._status import StatusError, bad_request
from fleet.sandbox._store import Event, Watcher

_encoder = msgspec.json.Encoder()
MAX_BATCH = 512
"""Most events written in one chunk; a watcher that is behind catches up in chunks this big."""
Send = Callable[[bytes], Awaitable[None]]
Render = Callable[[dict[str, Any]], dict[str, Any]]


def _with_rv(obj: dict[str, Any], rv: int) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = dict(obj["metadata"], resourceVersion=str(rv))
    return out


class WatchStream:
    """One watch request, from preparation to the server closing it."""

    def __init__(self, api: Api, call: Call, render: Render | None = None) -> None:
        self.api = api
        self.call = call
        self.render = render
        q = call.query
        self.filter = Filter(call.rt, q.get("labelSelector", ""), q.get("fieldSelector", ""))
        self.bookmarks = q.get("allowWatchBookmarks", "") in ("true", "1")
        timeout = api.settings.max_watch_timeout
        if q.get("timeoutSeconds"):
            try:
                timeout = float(int(q["timeoutSeconds"]))
            except ValueError:
                raise bad_request(
                    f'strconv.ParseInt: parsing "{q["timeoutSeconds"]}": invalid syntax'
                ) from None
        else:
            # Like the apiserver, spread watch ends between the maximum and half of it.
            timeout = timeout * (0.5 + random.random() / 2)
        self.timeout = timeout
        rv_s = q.get("resourceVersion", "")
        self.from_rv = parse_rv(rv_s) if rv_s not in ("", "0") else None
        coll = api.store.collection(call.rt.key)
        self.too_old: int | None = None
        self.initial: list[tuple[str, dict[str, Any]]] = []
        self.watcher: Watcher | None = None
        self.last_rv = api.store.rv
        if self.from_rv is not None and self.from_rv < coll.window_start:
            self.too_old = coll.window_start
            return
        ns = call.namespace
        self.watcher = Watcher(ns, api.settings.watch_queue)
        coll.watchers.add(self.watcher)
        if self.from_rv is None:
            objs = [o for (ons, _n), o in sorted(coll.objects.items()) if ns is None or ons == ns]
            self.initial = [("ADDED", o) for o in objs if self.filter(o)]
        elif self.from_rv <= api.store.rv:
            for ev in coll.events_after(self.from_rv):
                if ns is None or (ev.obj["metadata"].get("namespace") or "") == ns:
                    self.initial.extend(self._translate(ev))
        else:
            self.last_rv = self.from_rv

    def close(self) -> None:
        if self.watcher is not None:
            self.api.store.collection(self.call.rt.key).watchers.discard(self.watcher)
            self.watcher.send.close()

    def _translate(self, ev: Event) -> list[tuple[str, dict[str, Any]]]:
        """The event as this watch's selectors see it (possibly none)."""
        if self.filter.empty:
            return [(ev.type, ev.obj)]
        now = self.filter(ev.obj)
        before = self.filter(ev.prev)
        if ev.type == "ADDED":
            return [("ADDED", ev.obj)] if now else []
        if ev.type == "DELETED":
            return [("DELETED", ev.obj)] if (now or before) else []
        if now and before:
            return [("MODIFIED", ev.obj)]
        if now:
            return [("ADDED", ev.obj)]
        if before and ev.prev is not None:
            return [("DELETED", _with_rv(ev.prev, ev.rv))]
        return []

    def _line(self, type_: str, obj: dict[str, Any]) -> bytes:
        if self.render is not None and type_ in ("ADDED", "MODIFIED", "DELETED"):
            obj = self.render(obj)
        return _encoder.encode({"type": type_, "object": obj}) + b"\n"

    def _event_lines(self, ev: Event, out: list[bytes]) -> None:
        """Append the lines ``ev`` gives this watch (none, one, or a transition's)."""
        for type_, obj in self._translate(ev):
            if obj is ev.obj and self.render is None:
                line = ev.lines.get(type_)
                if line is None:
                    line = ev.lines[type_] = _encoder.encode({"type": type_, "object": obj}) + b"\n"
                out.append(line)
            else:
                out.append(self._line(type_, obj))

    def _bookmark(self) -> bytes:
        rt = self.call.rt
        assert self.watcher is not None
        if self.watcher.receive.statistics().current_buffer_used == 0:
            self.last_rv = max(self.last_rv, self.api.store.rv)
        obj = {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.last_rv), "creationTimestamp": None},
        }
        return _encoder.encode({"type": "BOOKMARK", "object": obj}) + b"\n"

    async def run(self, send: Send) -> None:
        """Write the events until timeoutSeconds, the watcher overflows, or the client leaves."""
        if self.too_old is not None:
            err = StatusError(
                410, "Expired", f"too old resource version: {self.from_rv} ({self.too_old})"
            )
            await send(_encoder.encode({"type": "ERROR", "object": err.body()}) + b"\n")
            return
        assert self.watcher is not None
        settings = self.api.settings
        start = trio.current_time()
        deadline = start + self.timeout
        final_bookmark = deadline - settings.bookmark_before_timeout
        next_bookmark = min(start + settings.bookmark_interval, final_bookmark)
        try:
            for i in range(0, len(self.initial), MAX_BATCH):
                await send(
                    b"".join(
                        self._line(type_, obj) for type_, obj in self.initial[i : i + MAX_BATCH]
                    )
                )
            self.initial = []
            with trio.move_on_at(deadline):
                while True:
                    ev: Event | None = None
                    if self.bookmarks:
                        with trio.move_on_at(next_bookmark):
                            ev = await self.watcher.receive.receive()
                    else:
                        ev = await self.watcher.receive.receive()
                    if ev is None:
                        await send(self._bookmark())
                        now = trio.current_time()
                        next_bookmark = now + settings.bookmark_interval
                        if now < final_bookmark:
                            next_bookmark = min(next_bookmark, final_bookmark)
                        continue
                    lines: list[bytes] = []
                    ended = False
                    while True:
                        if self.from_rv is None or ev.rv > self.from_rv:
                            self.last_rv = ev.rv
                            self._event_lines(ev, lines)
                        if len(lines) >= MAX_BATCH:
                            break
                        try:
                            ev = self.watcher.receive.receive_nowait()
                        except trio.WouldBlock:
                            break
                        except trio.EndOfChannel:
                            ended = True
                            break
                    if lines:
                        await send(b"".join(lines))
                    if ended:
                        break
        except trio.EndOfChannel:
            pass  # the store closed this watcher: it fell too far behind
        finally:
            self.close()
