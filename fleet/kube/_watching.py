"""List-then-watch of one resource, kept correct across every way a watch can end.

A :class:`Reflector` is the fleet's informer: it lists a resource (in pages),
hands the objects to its consumer as ADDED events, then watches from the
list's resourceVersion and hands on every change, through one bounded trio
channel. It keeps the objects it has handed out (key ``namespace/name``) so
that after a 410 Gone it can list again and hand the consumer exactly the
difference (synthesized ADDED, MODIFIED and DELETED events): a consumer
never misses a deletion, even one that happened while no watch was open.

The contract (STYLE.md "the watch contract", from client-go's
``tools/cache/reflector.go`` and kopf's ``_cogs/clients/watching.py``):

==========================================  ========================================
how the watch ended                          what happens next
==========================================  ========================================
server closed it (``timeoutSeconds``)        watch again at once, same resourceVersion
410 Gone (HTTP status, ERROR event, list)    list again at once, hand over the
                                             difference (a 410 again with nothing
                                             received in between backs off first)
429 Too Many Requests                        wait Retry-After (else backoff), watch
                                             again without listing
cut, 5xx, other errors, inactivity (below)   backoff 0.8 s doubling to 30 s, jittered,
                                             reset after 2 healthy minutes; watch
                                             again from the last resourceVersion
ended at once with nothing received          counted as a failure (backoff), so a
                                             server that drops every watch is not
                                             hammered (client-go's "very short watch")
404 Not Found (the resource is not served)   backoff as above; said once as a warning
                                             with ``missing_hint`` (how to install the
                                             CRD), then quietly until it is served
==========================================  ========================================

A BOOKMARK only moves the resourceVersion. The server-side ``timeoutSeconds``
is drawn in [5, 10] minutes per watch "to spread the load" of reconnects.

Inactivity is judged by what the server sends. kube-apiserver's watch cache
sends a watch that asked for them a BOOKMARK about once a minute, but only for
some resources and not reliably: on a v1.24 apiserver Nodes get one every
~60 s, while custom resources (Node CRs, MockStatus) get none for minutes, or a
few and then none (the cache sends none while it has seen no event), so a
quiet watch of them may hear nothing until the server ends it at
``timeoutSeconds``. So a reflector presumes the connection dead after
``inactivity_timeout`` without a byte only while the server is seen sending
periodic bookmarks (two within ``inactivity_timeout`` of each other, well
before the watch's end: not the one some servers send just before it);
otherwise only after ``timeoutSeconds`` + ``server_end_grace``. Once a watch
has timed out on silence, the reflector no longer trusts the server's
bookmarks: every later watch waits for the server's end (one log line, not
one every few minutes).
The stream is read as bytes and split on ``b"\\n"`` (kopf ``_iter_jsonlines``),
never as text lines: JSON strings may hold Unicode line breaks, and a chunk
may end inside a UTF-8 sequence. One line is bounded by ``max_object_size``.

The reflector talks only through the transport seam (:mod:`fleet.kube._seam`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, Literal, TypeVar

import msgspec
import trio

from fleet.errors import (
    ConfigError,
    FleetError,
    Gone,
    InputError,
    NotFound,
    ProtocolError,
    ReadTimeout,
    TooManyRequests,
    api_error_from_status,
)
from fleet.kube._backoff import BackoffPolicy
from fleet.kube._seam import Requester, error_for
from fleet.kube._views import (
    ListEnvelope,
    MetaOnly,
    Status,
    View,
    WatchEnvelope,
    decoder_for,
    object_key,
)

__all__ = [
    "EventType",
    "ObjectTooLarge",
    "Reflector",
    "ReflectorStatistics",
    "WatchEvent",
    "WatchSettings",
]

log = logging.getLogger(__name__)

T = TypeVar("T", bound=View)
_A = TypeVar("_A")

EventType = Literal["ADDED", "MODIFIED", "DELETED"]
_CHANGES: dict[str, EventType] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}

_envelope_decoder = msgspec.json.Decoder(WatchEnvelope)
_list_decoder = msgspec.json.Decoder(ListEnvelope)
_meta_decoder = msgspec.json.Decoder(MetaOnly)
_status_decoder = msgspec.json.Decoder(Status)
_encode = msgspec.json.Encoder().encode


class ObjectTooLarge(ProtocolError):
    """A watch line grew past ``WatchSettings.max_object_size``.

    Fatal: the reflector could never get past that object, so it stops with
    this error rather than reconnecting to the same line forever.
    """


@dataclass(frozen=True, slots=True)
class WatchEvent(Generic[T]):
    """One change handed to the consumer."""

    type: EventType
    obj: T
    """The object after the change; for DELETED, its last state."""


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Limits of one reflector. Defaults follow client-go's reflector unless said otherwise."""

    page_size: int = 500
    """Objects per list page (``limit``). client-go's pager default: big enough that a
    10,000-pod list is 20 requests, small enough that no single answer is huge."""
    min_watch_timeout: int = 300
    """Lower bound of the server-side ``timeoutSeconds``, drawn per watch. client-go: 5 min."""
    max_watch_timeout: int = 600
    """Upper bound of ``timeoutSeconds``. client-go draws in [min, 2*min) "to spread the load"
    of many clients reconnecting at once."""
    inactivity_timeout: float = 150.0
    """Seconds without a byte (bookmarks count) after which the connection is presumed dead
    and a new watch is made, once the server has been seen sending periodic bookmarks: the
    watch cache sends one about once a minute, so 2.5 missed bookmarks mean a dead peer.
    Before that (custom resources get none: see the module docstring) a quiet watch is
    given until the server ends it (``timeoutSeconds`` + ``server_end_grace``)."""
    server_end_grace: float = 30.0
    """Seconds past a watch's ``timeoutSeconds`` to wait for the server to end it, when it
    sends no bookmarks: its own clock and a loaded apiserver may run a little late."""
    max_object_size: int = 8 * 1024 * 1024
    """Longest watch line buffered, bytes. etcd refuses values over 1.5 MiB by default
    (``--max-request-bytes``); 8 MiB leaves room for raised limits and the JSON envelope
    while bounding the memory one stream can take."""
    short_watch: float = 1.0
    """A watch that ends sooner than this with nothing received counts as a failure and
    backs off. client-go's "very short watch" check uses one second."""
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    """Delays between failed lists and watches (client-go's reflector values)."""
    list_from_cache: bool = False
    """List with ``resourceVersion=0``: served from the apiserver's watch cache (any recent
    state, one answer whatever ``limit`` says), as client-go's informers list, the
    kubelet's among them (apiserver-transcripts/kubelet-requests.md). Off: a quorum read
    from etcd in pages, which a controller that must see the latest state needs."""

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ConfigError(f"watch: page_size must be >= 1, got {self.page_size}")
        if not 1 <= self.min_watch_timeout <= self.max_watch_timeout:
            raise ConfigError(
                "watch: need 1 <= min_watch_timeout <= max_watch_timeout, got "
                f"{self.min_watch_timeout}, {self.max_watch_timeout}"
            )
        if self.inactivity_timeout <= 0:
            raise ConfigError(
                f"watch: inactivity_timeout must be > 0, got {self.inactivity_timeout}"
            )
        if self.max_object_size < 1024:
            raise ConfigError(f"watch: max_object_size must be >= 1024, got {self.max_object_size}")


@dataclass(frozen=True, slots=True)
class ReflectorStatistics:
    events: int
    """Events handed to the consumer (synthesized ones included)."""
    bookmarks: int
    """BOOKMARK events seen."""
    relists: int
    """Lists after the first one (each follows a 410 Gone)."""
    restarts: int
    """Watch requests after the first (after a timeout, an error, or a relist)."""
    resource_version: str
    """Where the next watch starts."""
    watch_age: float | None
    """Seconds the current watch has been open; None between watches."""
    objects: int
    """Objects held (what the consumer has been told exists)."""
    last_error: str | None
    """The last failure, for a status page."""


class _LineSplitter:
    """Splits a byte stream on ``b"\\n"``, holding at most ``limit`` bytes of an unfinished line."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf already known to hold no newline
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf
        buf += chunk
        lines: list[bytes] = []
        start = 0
        index = buf.find(b"\n", self._scanned)
        while index >= 0:
            if index - start > self._limit:
                self._too_large(index - start)
            if index > start:
                lines.append(bytes(buf[start:index]))
            start = index + 1
            index = buf.find(b"\n", start)
        if start:
            del buf[:start]
        self._scanned = len(buf)
        if len(buf) > self._limit:
            self._too_large(len(buf))
        return lines

    def rest(self) -> bytes:
        """The unfinished line left when the stream ended."""
        return bytes(self._buf).strip()

    def _too_large(self, size: int) -> None:
        raise ObjectTooLarge(
            f"watch line of over {size} bytes exceeds max_object_size={self._limit}; "
            "raise WatchSettings.max_object_size"
        )


class Reflector(Generic[T]):
    """Lists then watches ``path``, handing changes to a consumer through a bounded channel.

    ``view`` is the msgspec Struct each object is decoded into (it has a
    ``metadata: ObjectMeta`` field). ``clock`` and ``rng`` are injected so tests
    control backoff, jitter and the drawn watch timeouts.
    """

    def __init__(
        self,
        requester: Requester,
        path: str,
        view: type[T],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        settings: WatchSettings | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
        keep_objects: bool = True,
        missing_hint: str = "",
    ) -> None:
        self._requester = requester
        self._missing_hint = missing_hint
        """Said once when the resource is not served (404), e.g. how to install its CRD."""
        self._missing_said = False
        self._keep = keep_objects
        self.path = path
        self._decoder = decoder_for(view)
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["labelSelector"] = label_selector
        if field_selector:
            self._selectors["fieldSelector"] = field_selector
        self.settings = settings if settings is not None else WatchSettings()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._backoff = self.settings.backoff.start(clock=clock, rng=self._rng)
        self._store: dict[str, T] = {}
        self._versions: dict[str, tuple[str, str]] = {}
        """Without ``keep_objects``: key -> (uid, resourceVersion), all a relist diff needs."""
        self._rv = ""
        self._events = 0
        self._bookmarks = 0
        self._lists = 0
        self._watches = 0
        self._received = False  # whether the current watch has received any line
        self._server_bookmarks = False
        """The server has sent a periodic bookmark: silence of ``inactivity_timeout`` means a
        dead connection (see the module docstring)."""
        self._bookmarks_failed = False
        """A watch timed out on silence after periodic bookmarks: never trusted again."""
        self._watch_deadline = 0.0  # when the server should end the current watch
        self._last_bookmark: float | None = None  # the current watch's last BOOKMARK
        self._watch_opened: float | None = None
        self._last_error: str | None = None

    @property
    def resource_version(self) -> str:
        return self._rv

    @property
    def objects(self) -> Mapping[str, T]:
        """The objects the consumer has been told about, by ``namespace/name`` (read-only).

        Empty when made with ``keep_objects=False``: the reflector then keeps only
        each object's uid and resourceVersion (a consumer that holds what it needs
        saves a whole copy of every object, and the buffers it was decoded from),
        and hands a list over page by page, so that it never holds a whole list of
        decoded objects either (100,000 pods: ~250 MB at once). A list failing
        half-way then leaves its first pages handed over: each event is still true at
        that list's resourceVersion, and the next list hands over the difference.
        """
        return MappingProxyType(self._store)

    def statistics(self) -> ReflectorStatistics:
        opened = self._watch_opened
        return ReflectorStatistics(
            events=self._events,
            bookmarks=self._bookmarks,
            relists=max(0, self._lists - 1),
            restarts=max(0, self._watches - 1),
            resource_version=self._rv,
            watch_age=None if opened is None else self._clock() - opened,
            objects=len(self._store) if self._keep else len(self._versions),
            last_error=self._last_error,
        )

    async def run(
        self,
        send_channel: trio.MemorySendChannel[WatchEvent[T]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """List and watch until cancelled; closes ``send_channel`` when it returns.

        Reports started once the first list's events are all in the channel:
        start the consumer first, or give the channel room for them.
        Raises only what retrying cannot fix (:class:`ObjectTooLarge`, an object
        that does not fit ``view``: :class:`~fleet.errors.InputError`).
        """
        async with send_channel:
            need_list = True
            started = False
            gone_streak = 0  # consecutive 410s with nothing received between them
            while True:
                try:
                    if need_list:
                        await self._list(send_channel)
                        need_list = False
                        if not started:
                            task_status.started()
                            started = True
                    self._received = False
                    productive = await self._watch(send_channel)
                    if productive:
                        gone_streak = 0
                        continue  # the server ended the watch as asked: watch again at once
                    self._last_error = "very short watch: ended at once with nothing received"
                    delay = self._backoff.next_delay()
                except (ObjectTooLarge, InputError):
                    raise
                except Gone as exc:
                    self._note(exc)
                    need_list = True
                    if self._received:
                        gone_streak = 0
                    gone_streak += 1
                    if gone_streak == 1:
                        continue  # the usual expiry of an old resourceVersion: list at once
                    # 410 again straight after a list: the server is not keeping up; do
                    # not turn that into a list storm.
                    delay = self._backoff.next_delay()
                except TooManyRequests as exc:
                    self._note(exc)
                    # Told to slow down: the resourceVersion is still good, so no relist.
                    delay = (
                        exc.retry_after
                        if exc.retry_after is not None
                        else self._backoff.next_delay()
                    )
                except FleetError as exc:
                    self._note(exc)
                    delay = self._backoff.next_delay()
                log.debug("watch %s: retrying in %.1f s", self.path, delay)
                await trio.sleep(delay)

    def _served(self) -> None:
        if self._missing_said:
            self._missing_said = False
            log.warning("%s is served now", self.path)

    def _note(self, exc: FleetError) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, NotFound):
            # The resource is not served (a CRD not installed): say so once, with the fix,
            # and keep waiting quietly; it is served the moment the CRD is applied.
            if not self._missing_said:
                self._missing_said = True
                hint = f": {self._missing_hint}" if self._missing_hint else ""
                log.warning(
                    "%s is not served by the apiserver (404)%s; waiting for it", self.path, hint
                )
            else:
                log.debug("watch %s: %s", self.path, self._last_error)
            return
        log.info("watch %s: %s", self.path, self._last_error)

    # -- listing ---------------------------------------------------------------

    async def _list(self, send: trio.MemorySendChannel[WatchEvent[T]]) -> None:
        """List every page, then hand over the difference against what the consumer holds.

        All pages are fetched before anything is handed over, so a list that
        fails half-way changes nothing.
        """
        self._lists += 1
        if not self._keep:
            await self._list_by_page(send)
            return
        fresh: dict[str, T] = {}
        params = self._list_params()
        while True:
            page = await self._list_page(params)
            for raw in page.items or ():
                obj = self._decode(raw)
                fresh[object_key(obj.metadata)] = obj
            token = page.metadata.continue_
            if not token:
                rv = page.metadata.resource_version
                break
            params = {**params, "continue": token}
        self._backoff.mark_healthy()
        self._served()
        if self._keep:
            events = self._diff(fresh)
            self._store = fresh
        else:
            events = self._diff_versions(fresh)
            self._versions = {
                key: (obj.metadata.uid, obj.metadata.resource_version) for key, obj in fresh.items()
            }
        self._rv = rv
        await self._hand_over(send, events)

    async def _hand_over(
        self, send: trio.MemorySendChannel[WatchEvent[T]], events: list[WatchEvent[T]]
    ) -> None:
        """Send a list's events: into the channel's room at once, waiting only when it is full.

        ``await send.send`` per event is one round of the event loop each: on a busy shard
        (10,000 nodes each listing its pods) a node's ten pods took ten rounds to hand over.
        One checkpoint for the lot keeps a list a point where others run and cancels land.
        """
        for event in events:
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                await send.send(event)
            self._events += 1
        await trio.lowlevel.checkpoint()

    async def _list_page(self, params: Mapping[str, str]) -> ListEnvelope:
        """One page of the list (raw items), its errors raised as :mod:`fleet.errors` maps them."""
        response = await self._requester.request("GET", self.path, params=params)
        response.raise_for_status()
        try:
            return _list_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"list {self.path}: undecodable answer: {exc}") from exc

    def _list_params(self) -> dict[str, str]:
        params = {"limit": str(self.settings.page_size), **self._selectors}
        if self.settings.list_from_cache:
            params["resourceVersion"] = "0"
        return params

    async def _list_by_page(self, send: trio.MemorySendChannel[WatchEvent[T]]) -> None:
        """:meth:`_list` without ``keep_objects``: each page's difference handed over as it
        comes (see :attr:`objects`); DELETED for what no page held, at the end."""
        held = self._versions
        listed: set[str] = set()
        params = self._list_params()
        while True:
            # The page's answer is let go once decoded; its buffer need not wait for the objects.
            page = await self._list_page(params)
            events: list[WatchEvent[T]] = []
            for raw in page.items or ():
                obj = self._decode(raw)
                meta = obj.metadata
                key = object_key(meta)
                listed.add(key)
                old = held.get(key)
                if old is None:
                    events.append(WatchEvent("ADDED", obj))
                elif old[0] != meta.uid:
                    events.append(WatchEvent("DELETED", self._tombstone(key, *old)))
                    events.append(WatchEvent("ADDED", obj))
                elif old[1] != meta.resource_version:
                    events.append(WatchEvent("MODIFIED", obj))
                held[key] = (meta.uid, meta.resource_version)
            token = page.metadata.continue_
            rv = page.metadata.resource_version
            del page
            await self._hand_over(send, events)
            del events
            if not token:
                break
            params = {**params, "continue": token}
        self._backoff.mark_healthy()
        self._served()
        gone = [key for key in held if key not in listed]
        await self._hand_over(
            send, [WatchEvent("DELETED", self._tombstone(key, *held.pop(key))) for key in gone]
        )
        self._rv = rv

    def _diff(self, fresh: dict[str, T]) -> list[WatchEvent[T]]:
        held = self._store
        events: list[WatchEvent[T]] = [
            WatchEvent("DELETED", old) for key, old in held.items() if key not in fresh
        ]
        for key, new in fresh.items():
            old = held.get(key)
            if old is None:
                events.append(WatchEvent("ADDED", new))
            elif old.metadata.uid != new.metadata.uid:
                # Deleted and re-created under the same name while we were not watching.
                events.append(WatchEvent("DELETED", old))
                events.append(WatchEvent("ADDED", new))
            elif old.metadata.resource_version != new.metadata.resource_version:
                events.append(WatchEvent("MODIFIED", new))
        return events

    def _diff_versions(self, fresh: dict[str, T]) -> list[WatchEvent[T]]:
        """:meth:`_diff` against the kept (uid, resourceVersion) pairs; a DELETED event of an
        object not seen in the list carries its metadata only (name, namespace, uid, rv)."""
        held = self._versions
        events: list[WatchEvent[T]] = [
            WatchEvent("DELETED", self._tombstone(key, *version))
            for key, version in held.items()
            if key not in fresh
        ]
        for key, new in fresh.items():
            old = held.get(key)
            meta = new.metadata
            if old is None:
                events.append(WatchEvent("ADDED", new))
            elif old[0] != meta.uid:
                events.append(WatchEvent("DELETED", self._tombstone(key, *old)))
                events.append(WatchEvent("ADDED", new))
            elif old[1] != meta.resource_version:
                events.append(WatchEvent("MODIFIED", new))
        return events

    def _tombstone(self, key: str, uid: str, resource_version: str) -> T:
        namespace, _, name = key.rpartition("/")
        meta = {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": resource_version,
        }
        return self._decode(msgspec.Raw(_encode({"metadata": meta})))

    def _decode(self, raw: msgspec.Raw) -> T:
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InputError(f"{self.path}: object does not fit the view: {exc}") from exc

    # -- watching --------------------------------------------------------------

    async def _watch(self, send: trio.MemorySendChannel[WatchEvent[T]]) -> bool:
        """One watch request, until it ends. Returns whether it was productive.

        Raises the mapped error for an error answer or ERROR event, and
        ReadTimeout after ``inactivity_timeout`` seconds without a byte. The
        inactivity clock runs only while waiting for bytes: time spent blocked
        on a slow consumer does not count against the server.
        """
        settings = self.settings
        timeout = self._rng.randint(settings.min_watch_timeout, settings.max_watch_timeout)
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self._rv,
            "timeoutSeconds": str(timeout),
            **self._selectors,
        }
        started = self._clock()
        self._watch_deadline = started + timeout
        self._last_bookmark = None
        self._watches += 1
        splitter = _LineSplitter(settings.max_object_size)
        async with AsyncExitStack() as stack:
            error_body: bytes | None = None
            with trio.move_on_after(settings.inactivity_timeout) as opening:
                response = await stack.enter_async_context(
                    self._requester.stream("GET", self.path, params=params)
                )
                if not 200 <= response.status < 300:
                    error_body = await response.aread()
            if opening.cancelled_caught:
                raise ReadTimeout(
                    f"watch {self.path}: no answer in {settings.inactivity_timeout} s"
                )
            if error_body is not None:
                raise error_for(response.status, error_body, response.headers)
            self._backoff.mark_healthy()
            self._served()
            self._watch_opened = self._clock()
            chunks = response.aiter_bytes()
            try:
                while True:
                    chunk = await self._next_chunk(chunks)
                    if chunk is None:
                        break
                    for line in splitter.feed(chunk):
                        self._received = True
                        await self._handle(line, send)
                rest = splitter.rest()
                if rest:
                    # A line without its newline: the server closed mid-object.
                    raise ProtocolError(f"watch {self.path}: stream ended inside an event")
            finally:
                self._watch_opened = None
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    with trio.CancelScope(shield=True):
                        await aclose()
        return self._received or self._clock() - started >= settings.short_watch

    def _silence_limit(self) -> float:
        """Seconds of silence after which the current watch is presumed dead."""
        settings = self.settings
        if self._server_bookmarks:
            return settings.inactivity_timeout
        until_end = self._watch_deadline + settings.server_end_grace - self._clock()
        return max(settings.inactivity_timeout, until_end)

    async def _next_chunk(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        limit = self._silence_limit()
        with trio.move_on_after(limit) as scope:
            try:
                return await anext(chunks)
            except StopAsyncIteration:
                return None
        assert scope.cancelled_caught
        if self._server_bookmarks:  # they stopped: wait for the server's end from now on
            self._server_bookmarks = False
            self._bookmarks_failed = True
        raise ReadTimeout(f"watch {self.path}: no bytes for {limit:.0f} s")

    async def _handle(self, line: bytes, send: trio.MemorySendChannel[WatchEvent[T]]) -> None:
        try:
            envelope = _envelope_decoder.decode(line)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"watch {self.path}: undecodable event: {exc}") from exc
        kind = envelope.type
        if kind in _CHANGES:
            obj = self._decode(envelope.object)
            key = object_key(obj.metadata)
            if not self._keep:
                if kind == "DELETED":
                    self._versions.pop(key, None)
                else:
                    self._versions[key] = (obj.metadata.uid, obj.metadata.resource_version)
            elif kind == "DELETED":
                self._store.pop(key, None)
            else:
                self._store[key] = obj
            self._rv = obj.metadata.resource_version or self._rv
            await send.send(WatchEvent(_CHANGES[kind], obj))
            self._events += 1
        elif kind == "BOOKMARK":
            # A bookmark says "you are current up to here" and nothing else.
            rv = self._decode_aux(_meta_decoder, envelope.object).metadata.resource_version
            self._rv = rv or self._rv
            self._bookmarks += 1
            now, last = self._clock(), self._last_bookmark
            window = self.settings.inactivity_timeout
            periodic = last is not None and now - last <= window
            if periodic and self._watch_deadline - now > window and not self._bookmarks_failed:
                self._server_bookmarks = True  # periodic, not just the one before the end
            self._last_bookmark = now
        elif kind == "ERROR":
            status = self._decode_aux(_status_decoder, envelope.object)
            raise api_error_from_status(status.code, msgspec.to_builtins(status))
        else:
            log.warning("watch %s: ignoring event of unknown type %r", self.path, kind)

    def _decode_aux(self, decoder: msgspec.json.Decoder[_A], raw: msgspec.Raw) -> _A:
        try:
            return decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise ProtocolError(f"watch {self.path}: malformed event object: {exc}") from exc
