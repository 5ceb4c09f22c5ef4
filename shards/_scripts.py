"""MockStatus scripts: watched, compiled into Plans, resolved for pods by name.

A pod annotated ``zhizuqiu.github.com/mockStatus: <name>`` follows the
MockStatus ``<name>`` in its own namespace (fleet.api ``MockStatus``).
:class:`ScriptLibrary` keeps every MockStatus of the cluster through one
:class:`~fleet.kube._watching.Reflector` over all namespaces (one watch per
shard, however many namespaces the pods use), compiles each into the same
:class:`~shards._plan.Plan` the delay annotations produce (:func:`compile_script`,
cached per resourceVersion), and hands :func:`~shards._plan.compile_plan` a
per-namespace resolver (:meth:`ScriptLibrary.resolver`).

A name that resolves to nothing, or to a MockStatus that does not validate,
raises :class:`ScriptError` (an :class:`~fleet.errors.InputError` with a
``reason``): the pod driver keeps such a pod Pending with that reason and a
Warning Event. Every ADDED or MODIFIED MockStatus is passed to ``on_change``
(the pod driver re-plans the pods naming it); a DELETED one is only forgotten:
pods already following it keep the steps they have, new pods wait for it.

The library waits at most ``SYNC_WAIT`` seconds for its first list before
reporting started, so a cluster without the CRD (or without the RBAC verbs)
does not hold the shard up; the reflector keeps retrying behind it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from fleet.api import (
    CRDS_MISSING_HINT,
    ContainerScript,
    MockStatus,
    MockStatusStep,
    load_mock_status,
)
from fleet.errors import InputError
from fleet.kube import ObjectMeta, Reflector, Requester, WatchEvent, resource_path
from fleet.wire import GROUP, MOCKSTATUS_PLURAL, VERSION
from shards._plan import (
    ANNOTATION_MOCK_STATUS,
    COMPLETED,
    CONTAINER_CREATING,
    INIT_COMPLETED,
    POD_INITIALIZING,
    RUNNING_READY,
    ContainerState,
    Phase,
    Plan,
    ScriptResolver,
    Step,
)

__all__ = [
    "INVALID_REASON",
    "MISSING_REASON",
    "SCRIPT_SOURCE",
    "SYNC_WAIT",
    "MockStatusView",
    "ScriptError",
    "ScriptLibrary",
    "compile_script",
]

log = logging.getLogger(__name__)

SYNC_WAIT = 10.0
"""Seconds the shard waits for the first MockStatus list before starting anyway."""
EVENT_BUFFER = 256
MISSING_REASON = "MockStatusNotFound"
"""Pod ``status.reason`` (and Event reason) while its MockStatus does not exist."""
INVALID_REASON = "InvalidMockStatus"
"""Pod ``status.reason`` (and Event reason) while its MockStatus does not validate."""
SCRIPT_SOURCE = "mockStatus"
"""``Step.source`` of every step compiled from a MockStatus."""

_decode_spec = msgspec.json.Decoder(dict[str, Any]).decode


class MockStatusView(msgspec.Struct, frozen=True):
    """A MockStatus as the reflector holds it; the spec is validated when compiled."""

    metadata: ObjectMeta = ObjectMeta()
    spec: msgspec.Raw = msgspec.Raw(b"{}")


class ScriptError(InputError):
    """A pod's MockStatus is missing or invalid; ``reason`` is the pod's status.reason."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- compiling ----------------------------------------------------------------


def _default_state(phase: Phase) -> ContainerState:
    if phase == "Running":
        return RUNNING_READY
    if phase == "Succeeded":
        return COMPLETED
    if phase == "Failed":
        return ContainerState("terminated", reason="Error", exit_code=1)
    return CONTAINER_CREATING


def _container_state(phase: Phase, script: ContainerScript) -> ContainerState:
    restarts = script.restart_count or 0
    if script.waiting is not None:
        return ContainerState(
            "waiting",
            reason=script.waiting.reason,
            message=script.waiting.message or "",
            ready=False,
            restart_count=restarts,
        )
    if script.terminated is not None or phase in ("Succeeded", "Failed"):
        term = script.terminated
        exit_code = term.exit_code if term is not None else None
        if exit_code is None:
            exit_code = 0 if phase == "Succeeded" else 1
        reason = term.reason if term is not None else None
        return ContainerState(
            "terminated",
            reason=reason or ("Completed" if exit_code == 0 else "Error"),
            message=(term.message if term is not None else None) or "",
            exit_code=exit_code,
            ready=bool(script.ready),
            restart_count=restarts,
            signal=term.signal if term is not None else None,
        )
    if phase == "Running":
        ready = True if script.ready is None else script.ready
        return ContainerState("running", ready=ready, restart_count=restarts)
    return ContainerState(
        "waiting", reason=CONTAINER_CREATING.reason, ready=False, restart_count=restarts
    )


def _step(at: float, script: MockStatusStep, started: float | None) -> Step:
    default = _default_state(script.phase)
    overrides: list[tuple[str, ContainerState]] = []
    for entry in script.containers:
        state = _container_state(script.phase, entry)
        if entry.name is None:
            default = state
        else:
            overrides.append((entry.name, state))
    return Step(
        at,
        script.phase,
        default,
        INIT_COMPLETED,
        started_at=started,
        source=SCRIPT_SOURCE,
        overrides=tuple(overrides),
        reason=script.reason or "",
        message=script.message or "",
    )


def compile_script(script: MockStatus) -> Plan:
    """A validated MockStatus as a :class:`Plan` (offsets from the pod's creation).

    Before the first step the pod is Pending with containers ContainerCreating
    (init containers PodInitializing), as with the delay annotations. Containers
    count as started from the first Running step (a terminal step with no
    Running before it starts and ends them at its own offset).
    """
    steps: list[Step] = []
    first = script.spec.steps[0].after_seconds()
    if first > 0:
        steps.append(Step(0.0, "Pending", CONTAINER_CREATING, POD_INITIALIZING, source="creation"))
    started: float | None = None
    for entry in script.spec.steps:
        at = entry.after_seconds()
        if entry.phase == "Running" and started is None:
            started = at
        begun = at if started is None and entry.phase in ("Succeeded", "Failed") else started
        steps.append(_step(at, entry, begun))
    return Plan(tuple(steps))


# --- the library --------------------------------------------------------------


class ScriptLibrary:
    """Every MockStatus in the cluster, compiled on demand; see the module docstring."""

    def __init__(
        self,
        requester: Requester,
        *,
        on_change: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.reflector: Reflector[MockStatusView] = Reflector(
            requester,
            resource_path(GROUP, VERSION, MOCKSTATUS_PLURAL),
            MockStatusView,
            clock=clock,
            rng=rng,
            missing_hint=CRDS_MISSING_HINT,
        )
        self.on_change = on_change
        self._compiled: dict[str, tuple[str, Plan | ScriptError]] = {}
        """``namespace/name`` -> (resourceVersion, its Plan or why it has none)."""
        self.synced = trio.Event()

    # -- resolving -------------------------------------------------------------------------

    def resolve(self, namespace: str, name: str) -> Plan:
        """The Plan of MockStatus ``namespace/name``; :class:`ScriptError` if none or invalid."""
        key = f"{namespace}/{name}"
        where = f"annotation {ANNOTATION_MOCK_STATUS}={name!r}"
        view = self.reflector.objects.get(key)
        if view is None:
            self._compiled.pop(key, None)
            raise ScriptError(
                f"{where}: no MockStatus {key}; the pod stays Pending until it is created",
                MISSING_REASON,
            )
        rv = view.metadata.resource_version
        cached = self._compiled.get(key)
        if cached is None or cached[0] != rv:
            cached = (rv, self._compile(view))
            self._compiled[key] = cached
        result = cached[1]
        if isinstance(result, ScriptError):
            raise ScriptError(f"{where}: {result}", result.reason)
        return result

    def resolver(self, namespace: str) -> ScriptResolver:
        """A :data:`~shards._plan.ScriptResolver` for pods in ``namespace``."""

        def resolve(name: str) -> Plan | None:
            return self.resolve(namespace, name)

        return resolve

    @staticmethod
    def _compile(view: MockStatusView) -> Plan | ScriptError:
        meta = view.metadata
        try:
            spec = _decode_spec(view.spec)
            script = load_mock_status(
                {"metadata": {"name": meta.name, "namespace": meta.namespace}, "spec": spec}
            )
            return compile_script(script)
        except (InputError, msgspec.DecodeError, ValueError) as exc:
            return ScriptError(str(exc), INVALID_REASON)

    # -- watching --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch MockStatuses until cancelled; started once listed (or after ``SYNC_WAIT``)."""
        send, receive = trio.open_memory_channel[WatchEvent[MockStatusView]](EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            nursery.start_soon(self._reflect, send)
            with trio.move_on_after(SYNC_WAIT):
                await self.synced.wait()
            if not self.synced.is_set():
                log.warning(
                    "MockStatus list not in after %.0f s (%s); pods naming one wait for it",
                    SYNC_WAIT,
                    self.reflector.statistics().last_error,
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
                meta = event.obj.metadata
                if event.type == "DELETED":
                    self._compiled.pop(f"{meta.namespace}/{meta.name}", None)
                    continue
                if self.on_change is not None:
                    self.on_change(meta.namespace, meta.name)
