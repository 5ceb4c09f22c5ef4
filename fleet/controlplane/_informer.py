"""Shared informers: one list+watch per resource, fanned out to every loop that wants it.

kube-controller-manager runs one informer per resource for all its
controllers; so does :class:`Informers` here. Each :class:`Informer` runs a
:class:`~fleet.kube._watching.Reflector` (the list+watch contract lives there)
and one task that hands every event, in order, to the handlers subscribed
before it started. Handlers are async so that a full work queue slows the
watch down instead of losing keys. :attr:`Informer.synced` is set once the
first list has been handed over (client-go's ``HasSynced``). A handler that
raises on one event is logged and counted (:attr:`Informer.handler_errors`),
and the next handler and event go on: one object never ends the informer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import trio

from fleet.controlplane._guard import log_failure
from fleet.controlplane._resources import KObject, Resource
from fleet.kube import Reflector, Requester, View, WatchEvent, WatchSettings

__all__ = ["Handler", "Informer", "Informers"]

T = TypeVar("T", bound=View)

Handler = Callable[[WatchEvent[T]], Awaitable[None]]


class Informer(Generic[T]):
    """One resource's list+watch and its subscribers."""

    def __init__(
        self,
        requester: Requester,
        resource: Resource,
        view: type[T],
        *,
        namespace: str | None = None,
        buffer: int = 1024,
        settings: WatchSettings | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.resource = resource
        self.reflector: Reflector[T] = Reflector(
            requester, resource.path(namespace), view, settings=settings, clock=clock
        )
        self._handlers: list[Handler[T]] = []
        self._buffer = buffer
        self.synced = trio.Event()
        self.handler_errors = 0
        """Events a handler raised on (each logged, then skipped by that handler)."""

    def subscribe(self, handler: Handler[T]) -> None:
        """Add a handler; must happen before :meth:`run`."""
        self._handlers.append(handler)

    @property
    def store(self) -> Mapping[str, T]:
        """The objects listed and watched so far, by ``namespace/name``."""
        return self.reflector.objects

    def get(self, namespace: str, name: str) -> T | None:
        return self.reflector.objects.get(f"{namespace}/{name}" if namespace else name)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; reports started at once (wait on :attr:`synced`)."""
        send, receive = trio.open_memory_channel[WatchEvent[T] | None](self._buffer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch, receive)
            # The reflector owns (and closes) ``send``; a clone marks the end of the first list.
            marker = send.clone()
            task_status.started()
            await nursery.start(self.reflector.run, send)
            async with marker:
                await marker.send(None)  # after the first list's events: "synced"

    async def _dispatch(self, receive: trio.MemoryReceiveChannel[WatchEvent[T] | None]) -> None:
        async with receive:
            async for event in receive:
                if event is None:
                    self.synced.set()
                    continue
                for handler in self._handlers:
                    try:
                        await handler(event)
                    except Exception as exc:  # one object's error must not end the watch
                        self.handler_errors += 1
                        meta = event.obj.metadata
                        what = f"{event.type} {meta.namespace + '/' if meta.namespace else ''}{meta.name}"
                        log_failure(f"informer {self.resource.plural}", what, exc)


class Informers:
    """The shared informers of one control plane, made on first request."""

    def __init__(
        self,
        requester: Requester,
        *,
        buffer: int = 1024,
        settings: WatchSettings | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._requester = requester
        self._buffer = buffer
        self._settings = settings
        self._clock = clock
        self._informers: dict[tuple[Resource, str | None], Informer[KObject]] = {}
        self._typed: dict[tuple[Resource, type[View]], Informer[Any]] = {}
        self._running = False

    def get(self, resource: Resource, namespace: str | None = None) -> Informer[KObject]:
        """The informer of ``resource`` (in one namespace, or all); made if new."""
        key = (resource, namespace)
        informer = self._informers.get(key)
        if informer is None:
            if self._running:
                raise RuntimeError(f"informer for {resource.plural} requested after start")
            informer = self._informers[key] = Informer(
                self._requester, resource, KObject, namespace=namespace,
                buffer=self._buffer, settings=self._settings, clock=self._clock,
            )  # fmt: skip
        return informer

    def get_view(self, resource: Resource, view: type[T]) -> Informer[T]:
        """The informer of ``resource`` decoding into ``view`` (for objects with top-level
        fields beyond spec and status, such as Endpoints); made if new."""
        key = (resource, view)
        informer = self._typed.get(key)
        if informer is None:
            if self._running:
                raise RuntimeError(f"informer for {resource.plural} requested after start")
            informer = self._typed[key] = Informer(
                self._requester, resource, view,
                buffer=self._buffer, settings=self._settings, clock=self._clock,
            )  # fmt: skip
        return informer

    def all(self) -> list[Informer[Any]]:
        return [*self._informers.values(), *self._typed.values()]

    async def wait_synced(self, *informers: Informer[Any]) -> None:
        for informer in informers:
            await informer.synced.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every informer requested so far until cancelled."""
        self._running = True
        async with trio.open_nursery() as nursery:
            for informer in self.all():
                await nursery.start(informer.run)
            task_status.started()
