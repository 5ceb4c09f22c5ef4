"""The watched library both kinds of script share: one watch, compiled once per spec.

A shard keeps every MockStatus (``_scripts``) and every NodeScript
(``_nodescripts``) of the cluster the same way: one
:class:`~fleet.kube.Reflector` over all namespaces holding each object as a
:class:`MockStatusView` (the spec kept raw, validated when compiled), a
consumer that hands each event to the library's :meth:`WatchedLibrary.on_event`
and tells ``on_report`` how each listed or changed one validates (shard 0
writes that on the object, ``_scriptreport``), and a compiled result cached
per spec (:meth:`WatchedLibrary.compiled`), so a change to the status alone
(our own report) compiles nothing again.

:meth:`WatchedLibrary.run` waits at most ``SYNC_WAIT`` seconds for the first
list before reporting started, so a cluster without the CRD (or without the
RBAC verbs) does not hold the shard up; the reflector keeps retrying behind it.
What differs between the kinds is typed hooks: :meth:`~WatchedLibrary.on_event`
(what an event changes), :meth:`~WatchedLibrary.build` (a validated document
as the compiled form) and the class's :attr:`~WatchedLibrary.kind`,
:attr:`~WatchedLibrary.invalid_reason` and :attr:`~WatchedLibrary.meanwhile`.
"""

from __future__ import annotations

import abc
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import trio

from fleet.api import CRDS_MISSING_HINT
from fleet.errors import InputError
from fleet.kube import ObjectMeta, Reflector, Requester, WatchEvent, resource_path
from fleet.wire import GROUP, VERSION

__all__ = [
    "EVENT_BUFFER",
    "SYNC_WAIT",
    "MockStatusView",
    "Report",
    "ScriptError",
    "WatchedLibrary",
]

log = logging.getLogger(__name__)

SYNC_WAIT = 10.0
"""Seconds the shard waits for a library's first list before starting anyway."""
EVENT_BUFFER = 256
"""Watch events between a library's reflector and its consumer."""

_decode_spec = msgspec.json.Decoder(dict[str, Any]).decode


class MockStatusView(msgspec.Struct, frozen=True):
    """A script (MockStatus or NodeScript) as the reflector holds it; the spec is
    validated when compiled."""

    metadata: ObjectMeta = ObjectMeta()
    spec: msgspec.Raw = msgspec.Raw(b"{}")
    status: msgspec.Raw = msgspec.Raw(b"{}")


class ScriptError(InputError):
    """A script is missing or invalid; ``reason`` is the pod's status.reason (or the
    condition's and Event's reason)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


Report = Callable[[MockStatusView, ScriptError | None], Awaitable[None]]
"""Told each script listed or changed, and why it does not validate (None: it does)."""

T = TypeVar("T")


class WatchedLibrary(abc.ABC, Generic[T]):
    """Every script of one kind in the cluster, compiled to ``T``; see the module docstring."""

    kind: ClassVar[str]
    """The kind's name, in log lines."""
    invalid_reason: ClassVar[str]
    """``ScriptError.reason`` of a script that does not validate."""
    meanwhile: ClassVar[str]
    """What the shard does while the first list is not in, in the log line that says so."""

    def __init__(
        self,
        requester: Requester,
        plural: str,
        *,
        on_report: Report | None,
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        self.reflector: Reflector[MockStatusView] = Reflector(
            requester,
            resource_path(GROUP, VERSION, plural),
            MockStatusView,
            clock=clock,
            rng=rng,
            missing_hint=CRDS_MISSING_HINT,
        )
        self.on_report = on_report
        """Awaited with each script listed or changed, and why it does not validate
        (None: it does); shard 0 reports it on the object (``shards._scriptreport``)."""
        self._compiled: dict[str, tuple[bytes, T | ScriptError]] = {}
        """``namespace/name`` -> (its spec, its compiled form or why it has none)."""
        self.synced = trio.Event()

    # -- hooks ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def on_event(self, event: WatchEvent[MockStatusView]) -> ScriptError | None:
        """Keep the library in step with one event; why the script does not validate
        (None: it does, or it is gone)."""

    @abc.abstractmethod
    def build(self, document: dict[str, Any], meta: ObjectMeta) -> T:
        """The compiled form of one script (``document``: its metadata and decoded spec);
        InputError or ValueError when it does not validate."""

    # -- compiling -----------------------------------------------------------------------------

    def compiled(self, key: str, view: MockStatusView) -> tuple[T | ScriptError, bool]:
        """The compiled form of script ``key`` at ``view`` (or why it has none), and whether
        it was compiled now (its spec is new) rather than taken from the cache."""
        spec = bytes(view.spec)
        cached = self._compiled.get(key)
        if cached is not None and cached[0] == spec:
            return cached[1], False
        result = self._compile(view)
        self._compiled[key] = (spec, result)
        return result, True

    def _compile(self, view: MockStatusView) -> T | ScriptError:
        meta = view.metadata
        try:
            spec = _decode_spec(view.spec)
            document = {"metadata": {"name": meta.name, "namespace": meta.namespace}, "spec": spec}
            return self.build(document, meta)
        except (InputError, msgspec.DecodeError, ValueError) as exc:
            return ScriptError(str(exc), self.invalid_reason)

    # -- watching ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the scripts until cancelled; started once listed (or after ``SYNC_WAIT``)."""
        send, receive = trio.open_memory_channel[WatchEvent[MockStatusView]](EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            nursery.start_soon(self._reflect, send)
            with trio.move_on_after(SYNC_WAIT):
                await self.synced.wait()
            if not self.synced.is_set():
                log.warning(
                    "%s list not in after %.0f s (%s); %s",
                    self.kind,
                    SYNC_WAIT,
                    self.reflector.statistics().last_error,
                    self.meanwhile,
                )
            task_status.started()

    async def _reflect(self, send: trio.MemorySendChannel[WatchEvent[MockStatusView]]) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.reflector.run, send)
            self.synced.set()

    async def _consume(
        self, receive: trio.MemoryReceiveChannel[WatchEvent[MockStatusView]]
    ) -> None:
        async with receive:
            async for event in receive:
                problem = self.on_event(event)
                if event.type != "DELETED" and self.on_report is not None:
                    await self.on_report(event.obj, problem)
