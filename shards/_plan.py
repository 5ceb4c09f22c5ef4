"""Pod lifecycle plans: a pod's annotations compiled into timed steps.

kube-mock drives a pod's status from annotations whose Go durations are
measured from the pod's ``creationTimestamp``:

- ``zhizuqiu.github.com/delayRunning``, ``delaySucceeded``, ``delayFailed``;
- no delay annotation at all: Running at once;
- before the first delay passes: Pending (containers waiting, reason
  ``ContainerCreating``);
- afterwards: the state of the latest delay passed. Unlike kube-mock, which
  could turn a Succeeded pod back to Running, the first terminal state
  (Succeeded or Failed) sticks: the timeline ends there. At equal delays a
  terminal state wins over Running (the pod ran for no time) and Succeeded wins
  over Failed (kube-mock's order);
- ``zhizuqiu.github.com/podIPs``: the pod's IPs, comma separated, at most one
  per family (dual stack);
- ``zhizuqiu.github.com/mockStatus``: the name of a scripted lifecycle
  (a MockStatus resource, fleet.api). Resolving and compiling it is the
  caller's business: pass a ``scripts`` resolver that returns a :class:`Plan`.

A :class:`Plan` is only a sorted tuple of :class:`Step` s, each saying from
which offset (seconds after creation) the pod is in which phase and what its
containers look like. The shard engine asks ``plan.state_at(elapsed)`` and
``plan.next_change_after(elapsed)``; it never interprets annotations itself, so
a pod seen late (shard restart, late binding) goes straight to the state its
timeline says and nothing is replayed, and a scripted lifecycle plugs in by
producing another Plan. A Plan may also run the pod's init containers in
order first (:class:`InitSequence`, ``_initrun``): its steps then wait for them,
and ``state_at`` and ``next_change_after`` are given the pod's init containers
(``inits``). This module is pure: no clock, no I/O.
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal, Protocol

from fleet.api import parse_delay
from fleet.errors import InputError

__all__ = [
    "ANNOTATION_DELAY_FAILED",
    "ANNOTATION_DELAY_RUNNING",
    "ANNOTATION_DELAY_SUCCEEDED",
    "ANNOTATION_MOCK_STATUS",
    "ANNOTATION_POD_IPS",
    "ANNOTATION_PREFIX",
    "COMPLETED",
    "CONTAINER_CREATING",
    "INIT_COMPLETED",
    "POD_INITIALIZING",
    "RUNNING_NOW",
    "RUNNING_READY",
    "Behaviour",
    "ContainerState",
    "InitContainers",
    "InitSequence",
    "LastTerminated",
    "Phase",
    "Plan",
    "ScriptResolver",
    "Step",
    "compile_plan",
    "parse_pod_ips",
]

_PREFIX = "zhizuqiu.github.com/"
ANNOTATION_PREFIX = _PREFIX
"""Every lifecycle annotation starts with it: a pod's other annotations never change its Plan."""
ANNOTATION_DELAY_RUNNING = _PREFIX + "delayRunning"
ANNOTATION_DELAY_SUCCEEDED = _PREFIX + "delaySucceeded"
ANNOTATION_DELAY_FAILED = _PREFIX + "delayFailed"
ANNOTATION_MOCK_STATUS = _PREFIX + "mockStatus"
ANNOTATION_POD_IPS = _PREFIX + "podIPs"

Phase = Literal["Pending", "Running", "Succeeded", "Failed"]
StateKind = Literal["waiting", "running", "terminated"]

TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class LastTerminated:
    """A container's previous run, as ``lastState.terminated`` shows it."""

    exit_code: int
    reason: str
    started_at: float
    """Offset from creation."""
    finished_at: float
    restart_count: int
    """``restartCount`` during that run (its containerID is derived from it)."""
    message: str = ""


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What a container looks like during a step (maps onto v1.ContainerState)."""

    kind: StateKind
    """``waiting``, ``running`` or ``terminated``."""
    reason: str = ""
    """waiting/terminated reason (``ContainerCreating``, ``Completed``, ``Error``)."""
    message: str = ""
    """waiting/terminated message; empty means none."""
    exit_code: int = 0
    """terminated only."""
    ready: bool = False
    """``containerStatuses[].ready``: readiness probe passed (running only)."""
    restart_count: int = 0
    """``containerStatuses[].restartCount``."""
    signal: int | None = None
    """terminated only: the signal that ended the container, if any."""
    started_at: float | None = None
    """Offset at which this run started, when it is not the step's (a restarted container)."""
    finished_at: float | None = None
    """terminated only: offset at which this run ended, when it is not the step's."""
    last: LastTerminated | None = None
    """``lastState.terminated``: the previous run, if the container was restarted."""
    backoff: float = 0.0
    """waiting in CrashLoopBackOff: the kubelet's current back-off, for its message."""


class Behaviour(Protocol):
    """What a container does by itself during a step: crash and restart, flap its readiness.

    Pure and shared by every pod of a Plan: it answers for ``since`` seconds into the
    step, given the pod's ``restartPolicy``."""

    def state_at(
        self, base: ContainerState, since: float, offset: float, restart_policy: str
    ) -> tuple[ContainerState, float | None, Phase | None]:
        """The container's state ``since`` seconds into a step that began at ``offset``; the
        next offset at which it changes (None: never); the pod phase it forces (None: none)."""
        ...


InitContainers = tuple[tuple[str, bool], ...]
"""A pod's init containers in spec order: (name, restartable: a sidecar)."""


class InitSequence(Protocol):
    """The pod's init containers, run one after the other from its creation (``_initrun``).

    Pure and shared by every pod of a Plan; answers for one pod's init containers."""

    def done_at(self, inits: InitContainers, restart_policy: str) -> float | None:
        """Offset at which the last init container completed; None: never (one keeps
        failing, or failed the pod)."""
        ...

    def step_at(
        self, elapsed: float, inits: InitContainers, restart_policy: str
    ) -> tuple[Step, float | None]:
        """The pod while its init containers run (before :meth:`done_at`), and the next
        offset at which that changes (None: never)."""
        ...

    def completed(
        self, inits: InitContainers, restart_policy: str
    ) -> tuple[tuple[str, ContainerState], ...]:
        """The init containers once all completed, those that differ from
        :data:`INIT_COMPLETED` (restarted ones: their count and last run)."""
        ...


CONTAINER_CREATING = ContainerState("waiting", reason="ContainerCreating")
POD_INITIALIZING = ContainerState("waiting", reason="PodInitializing")
RUNNING_READY = ContainerState("running", ready=True)
COMPLETED = ContainerState("terminated", reason="Completed", exit_code=0)
# A completed init container reports ready=true (kubelet: init status ready == succeeded).
INIT_COMPLETED = ContainerState("terminated", reason="Completed", exit_code=0, ready=True)


@dataclass(frozen=True, slots=True)
class Step:
    """The pod's state from ``at`` seconds after creation until the next step."""

    at: float
    """Offset from ``creationTimestamp`` in seconds (>= 0)."""
    phase: Phase
    containers: ContainerState
    """State of every app container, unless ``overrides`` names it."""
    init_containers: ContainerState = INIT_COMPLETED
    """State of every init container (a Pending step uses ``POD_INITIALIZING``)."""
    started_at: float | None = None
    """Offset at which the containers started (``state.*.startedAt``); None: never ran."""
    source: str = ""
    """What produced this step (an annotation name, ``default``), for events and messages."""
    overrides: tuple[tuple[str, ContainerState], ...] = ()
    """Per-container states by name, for scripted lifecycles."""
    reason: str = ""
    """Pod-level ``status.reason`` (scripted lifecycles only; empty: none)."""
    message: str = ""
    """Pod-level ``status.message`` (scripted lifecycles only; empty: none)."""
    behaviours: tuple[tuple[str | None, Behaviour], ...] = ()
    """Containers (by name; None: every one) that change by themselves during the step."""
    init_overrides: tuple[tuple[str, ContainerState], ...] = ()
    """Per-init-container states by name (init containers run in order)."""

    def resolved(self, elapsed: float, restart_policy: str) -> tuple[Step, float | None]:
        """This step ``elapsed`` seconds after creation with its behaviours applied, and the
        next offset at which they change the pod (None: never). Built per evaluation, not
        kept: the Plan holds one Step for every pod."""
        if not self.behaviours:
            return self, None
        since = max(0.0, elapsed - self.at)
        containers, overrides = self.containers, dict(self.overrides)
        following: float | None = None
        phase: Phase | None = None
        for name, behaviour in self.behaviours:
            base = containers if name is None else overrides.get(name, containers)
            state, change, forced = behaviour.state_at(base, since, self.at, restart_policy)
            if change is not None and (following is None or change < following):
                following = change
            if forced is not None and name is None:
                phase = forced
            if name is None:
                containers = state  # a named override still wins for its container
            else:
                overrides[name] = state
        step = replace(
            self,
            containers=containers,
            overrides=tuple(overrides.items()),
            phase=phase or self.phase,
            behaviours=(),
        )
        return step, following

    def container_state(self, name: str) -> ContainerState:
        for key, state in self.overrides:
            if key == name:
                return state
        return self.containers

    def init_state(self, name: str) -> ContainerState:
        for key, state in self.init_overrides:
            if key == name:
                return state
        return self.init_containers

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def stopped(self, at: float) -> Step:
        """This step with running containers stopped, as on pod deletion.

        A real kubelet (kubelet-requests.md, deletion sequence) keeps the phase,
        reports the killed containers terminated with exit code 0, not ready and
        not started, and a running init container terminated too. Waiting and
        already terminated containers are left as they are.
        """

        def stop(state: ContainerState) -> ContainerState:
            if state.kind != "running":
                return state
            return ContainerState("terminated", reason="Completed", exit_code=0)

        def stop_init(state: ContainerState) -> ContainerState:
            if state.kind != "running":
                return state
            return INIT_COMPLETED

        return replace(
            self,
            at=at,
            containers=stop(self.containers),
            init_containers=stop_init(self.init_containers),
            overrides=tuple((name, stop(state)) for name, state in self.overrides),
            init_overrides=tuple((name, stop_init(state)) for name, state in self.init_overrides),
            source="deletion",
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """A pod's lifecycle: steps sorted by offset, the first at offset 0."""

    steps: tuple[Step, ...]
    pod_ips: tuple[str, ...] = ()
    """IPs from ``zhizuqiu.github.com/podIPs`` (normalised); empty: allocate from the pool."""
    init: InitSequence | None = None
    """The pod's init containers run in order first; the steps wait for them. None: they
    complete at once (Pending steps show them PodInitializing, the others completed)."""
    _offsets: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a Plan needs at least one step")
        offsets = tuple(step.at for step in self.steps)
        if offsets[0] != 0.0 or any(b < a for a, b in itertools.pairwise(offsets)):
            raise ValueError(f"Plan steps must start at 0 and be sorted, got offsets {offsets}")
        object.__setattr__(self, "_offsets", offsets)

    def state_at(
        self, elapsed: float, restart_policy: str = "Always", inits: InitContainers = ()
    ) -> Step:
        """The step in force ``elapsed`` seconds after creation (negative: the first), its
        containers' behaviours (restarts, readiness) applied. ``inits``: the pod's init
        containers (they matter only to a Plan with :attr:`init`)."""
        init = self.init
        done: float | None = None
        if init is not None and inits:
            done = init.done_at(inits, restart_policy)
            if done is None or elapsed < done:
                return init.step_at(elapsed, inits, restart_policy)[0]
        index = bisect.bisect_right(self._offsets, elapsed) - 1
        step = self.steps[max(index, 0)]
        step = step.resolved(elapsed, restart_policy)[0] if step.behaviours else step
        if done is not None and init is not None:
            # The containers started once the init containers were done, not before.
            started = step.started_at
            step = replace(
                step,
                init_containers=INIT_COMPLETED,
                init_overrides=init.completed(inits, restart_policy),
                started_at=None if started is None else max(started, done),
            )
        return step

    def next_change_after(
        self, elapsed: float, restart_policy: str = "Always", inits: InitContainers = ()
    ) -> float | None:
        """Offset of the next change strictly after ``elapsed`` (a step, or a container's
        behaviour within one, or an init container's); None when the timeline is over."""
        init = self.init
        if init is not None and inits:
            done = init.done_at(inits, restart_policy)
            if done is None or elapsed < done:
                return init.step_at(elapsed, inits, restart_policy)[1]
        index = bisect.bisect_right(self._offsets, max(elapsed, 0.0))
        following = self._offsets[index] if index < len(self._offsets) else None
        step = self.steps[max(index - 1, 0)]
        if step.behaviours and elapsed >= step.at:
            change = step.resolved(elapsed, restart_policy)[1]
            if change is not None and change > elapsed:
                if following is None or change < following:
                    following = change
        return following

    @property
    def final(self) -> Step:
        return self.steps[-1]


RUNNING_NOW = Plan((Step(0.0, "Running", RUNNING_READY, started_at=0.0, source="default"),))
"""The plan of a pod without lifecycle annotations: Running and Ready at once."""

ScriptResolver = Callable[[str], Plan | None]
"""Maps a ``mockStatus`` name to its Plan, or None if no such script exists."""


# --- pod IPs ------------------------------------------------------------------


def parse_pod_ips(text: str) -> tuple[str, ...]:
    """Parse ``zhizuqiu.github.com/podIPs``: comma-separated IPs, at most one per family.

    Returns the IPs in the given order, normalised (``ipaddress`` canonical form).
    Raises ValueError naming the fault.
    """
    parts = [part.strip() for part in text.split(",")]
    if not parts or any(not part for part in parts):
        raise ValueError(f"empty entry in IP list {text!r}")
    ips: list[str] = []
    versions: set[int] = set()
    for part in parts:
        try:
            address = ipaddress.ip_address(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a valid IP address") from None
        if address.version in versions:
            raise ValueError(
                f"{text!r} has two IPv{address.version} addresses: at most one per family (dual stack)"
            )
        versions.add(address.version)
        ips.append(str(address))
    return tuple(ips)


# --- compiling ----------------------------------------------------------------

_RANK = {"Running": 0, "Failed": 1, "Succeeded": 2}  # tie order at equal offsets, last wins


def _failed_state(value: str) -> ContainerState:
    return ContainerState(
        "terminated",
        reason="Error",
        exit_code=1,
        message=(
            "container exited with code 1: failure scheduled by "
            f"{ANNOTATION_DELAY_FAILED}={value} (kubemock-fleet)"
        ),
    )


@lru_cache(maxsize=4096)
def _compile_delays(
    running: str | None, succeeded: str | None, failed: str | None
) -> tuple[Step, ...]:
    events: list[tuple[float, int, Phase, str]] = []
    sources: tuple[tuple[str, str | None, Phase], ...] = (
        (ANNOTATION_DELAY_RUNNING, running, "Running"),
        (ANNOTATION_DELAY_SUCCEEDED, succeeded, "Succeeded"),
        (ANNOTATION_DELAY_FAILED, failed, "Failed"),
    )
    for annotation, value, phase in sources:
        if value is None:
            continue
        try:
            seconds = parse_delay(value.strip())
        except InputError as exc:
            raise InputError(f"annotation {annotation}={value!r}: {exc}") from exc
        events.append((seconds, _RANK[phase], phase, value))
    if not events:
        return RUNNING_NOW.steps
    events.sort(key=lambda event: (event[0], event[1]))
    # Collapse equal offsets: the highest-ranked event of an instant wins.
    collapsed: list[tuple[float, Phase, str]] = []
    for seconds, _rank, phase, value in events:
        if collapsed and collapsed[-1][0] == seconds:
            collapsed[-1] = (seconds, phase, value)
        else:
            collapsed.append((seconds, phase, value))

    steps: list[Step] = []
    if collapsed[0][0] > 0:
        steps.append(Step(0.0, "Pending", CONTAINER_CREATING, POD_INITIALIZING, source="creation"))
    started: float | None = None
    for seconds, phase, value in collapsed:
        if phase == "Running":
            if started is None:
                started = seconds
            steps.append(
                Step(
                    seconds,
                    "Running",
                    RUNNING_READY,
                    started_at=started,
                    source=ANNOTATION_DELAY_RUNNING,
                )
            )
            continue
        source = ANNOTATION_DELAY_SUCCEEDED if phase == "Succeeded" else ANNOTATION_DELAY_FAILED
        state = COMPLETED if phase == "Succeeded" else _failed_state(value)
        steps.append(
            Step(
                seconds,
                phase,
                state,
                started_at=seconds if started is None else started,
                source=source,
            )
        )
        break  # the first terminal state sticks
    return tuple(steps)


def compile_plan(annotations: Mapping[str, str], *, scripts: ScriptResolver | None = None) -> Plan:
    """Compile a pod's annotations into its lifecycle :class:`Plan`.

    Raises :class:`fleet.errors.InputError` naming the annotation and value when
    a duration or IP does not parse, or when ``mockStatus`` names no script.
    Plans are cached by annotation values: a Deployment's pods share one.
    """
    ips_text = annotations.get(ANNOTATION_POD_IPS)
    pod_ips: tuple[str, ...] = ()
    if ips_text is not None:
        try:
            pod_ips = parse_pod_ips(ips_text)
        except ValueError as exc:
            raise InputError(f"annotation {ANNOTATION_POD_IPS}={ips_text!r}: {exc}") from exc

    script = annotations.get(ANNOTATION_MOCK_STATUS)
    if script is not None:
        plan = scripts(script) if scripts is not None else None
        if plan is None:
            raise InputError(
                f"annotation {ANNOTATION_MOCK_STATUS}={script!r}: no MockStatus of that name"
            )
        return replace(plan, pod_ips=pod_ips) if pod_ips else plan

    steps = _compile_delays(
        annotations.get(ANNOTATION_DELAY_RUNNING),
        annotations.get(ANNOTATION_DELAY_SUCCEEDED),
        annotations.get(ANNOTATION_DELAY_FAILED),
    )
    if steps is RUNNING_NOW.steps and not pod_ips:
        return RUNNING_NOW
    return _plan_for(steps, pod_ips)


@lru_cache(maxsize=4096)
def _plan_for(steps: tuple[Step, ...], pod_ips: tuple[str, ...]) -> Plan:
    return Plan(steps, pod_ips)
