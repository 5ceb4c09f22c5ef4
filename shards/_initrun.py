"""Init containers in order, as the kubelet runs them: one at a time, each to completion.

An :class:`InitRun` is the :class:`~shards._plan.InitSequence` of a Plan whose
MockStatus has ``spec.initContainers``. From the pod's creation the kubelet
(``kuberuntime`` ``computeInitContainerActions``) starts the first init
container; each runs until it exits, and only a successful exit starts the
next. Meanwhile the pod is Pending, the init containers not yet started wait
(PodInitializing), the app containers wait (PodInitializing) and condition
Initialized is False (ContainersNotInitialized). A sidecar (an init container
with ``restartPolicy: Always``) starts in its turn and keeps running: the next
init container starts once it is started (``runFor`` after its own start).

A run that fails (a non-zero ``exitCode``): under the pod's ``restartPolicy:
Never`` the pod fails there (phase Failed, the init container terminated with
its exit code); otherwise the kubelet restarts it as it does any container
(:class:`~shards._behaviours.CrashLoop`: at once, then 10 s doubling to 5 min,
waiting CrashLoopBackOff meanwhile: ``kubectl`` shows Init:CrashLoopBackOff),
``failures`` times, after which a run completes and the sequence goes on; no
``failures``: it never does. Pure: one schedule per distinct set of init
containers and restart policy, cached, evaluated as arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from shards._behaviours import CrashLoop
from shards._plan import (
    INIT_COMPLETED,
    POD_INITIALIZING,
    ContainerState,
    InitContainers,
    LastTerminated,
    Phase,
    Step,
)

__all__ = ["INIT_SOURCE", "InitEntry", "InitRun"]

INIT_SOURCE = "initContainers"
"""``Step.source`` of the steps while the init containers run."""
_SCHEDULES = 1024
"""Distinct (init containers, restart policy, InitRun) schedules kept: a few per template."""


@dataclass(frozen=True, slots=True)
class InitEntry:
    """How one init container runs (``spec.initContainers[]`` of a MockStatus)."""

    run_for: float = 0.0
    exit_code: int = 0
    """Of its failing runs; 0: its first run completes."""
    failures: int | None = None
    """Failing runs before one completes (with a non-zero exit code); None: every one."""
    reason: str = "Error"
    message: str = ""


_COMPLETES = InitEntry()


@dataclass(frozen=True, slots=True)
class _Run:
    """One init container's part of a pod's schedule (offsets from creation)."""

    name: str
    start: float
    kind: Literal["sidecar", "completes", "fails", "loops"]
    entry: InitEntry
    end: float | None
    """When it completed (a sidecar: counted as started); None: never."""
    loop: CrashLoop | None = None

    def success_start(self) -> float:
        """Start of the run that completes, for a loop with ``failures``."""
        assert self.loop is not None and self.entry.failures is not None
        return self.start + self.loop.start_of(self.entry.failures)


@dataclass(frozen=True, slots=True)
class _Schedule:
    runs: tuple[_Run, ...]
    done: float | None
    failed: float | None
    """Under restartPolicy Never: when the failing run ended the pod."""


@dataclass(frozen=True, slots=True)
class InitRun:
    """The init containers of a MockStatus, by name and for every other one."""

    default: InitEntry = _COMPLETES
    named: tuple[tuple[str, InitEntry], ...] = ()

    def entry(self, name: str) -> InitEntry:
        for key, entry in self.named:
            if key == name:
                return entry
        return self.default

    def done_at(self, inits: InitContainers, restart_policy: str) -> float | None:
        return _schedule(self, inits, restart_policy).done

    def step_at(
        self, elapsed: float, inits: InitContainers, restart_policy: str
    ) -> tuple[Step, float | None]:
        schedule = _schedule(self, inits, restart_policy)
        runs = {run.name: run for run in schedule.runs}
        overrides: list[tuple[str, ContainerState]] = []
        following: float | None = None
        for name, _restartable in inits:
            run = runs.get(name)
            if run is None:  # after one that never completes: never starts
                overrides.append((name, POD_INITIALIZING))
                continue
            state, change = _state(run, elapsed)
            overrides.append((name, state))
            if (
                change is not None
                and change > elapsed
                and (following is None or change < following)
            ):
                following = change
        failed = schedule.failed is not None and elapsed >= schedule.failed
        phase: Phase = "Failed" if failed else "Pending"
        step = Step(
            0.0,
            phase,
            POD_INITIALIZING,
            POD_INITIALIZING,
            source=INIT_SOURCE,
            init_overrides=tuple(overrides),
        )
        return step, None if failed else following

    def completed(
        self, inits: InitContainers, restart_policy: str
    ) -> tuple[tuple[str, ContainerState], ...]:
        schedule = _schedule(self, inits, restart_policy)
        if schedule.done is None:
            return ()
        return tuple(
            (run.name, _state(run, schedule.done)[0])
            for run in schedule.runs
            if run.kind != "sidecar"
        )


@lru_cache(maxsize=_SCHEDULES)
def _schedule(run: InitRun, inits: InitContainers, restart_policy: str) -> _Schedule:
    """Each init container's start and end, from creation, by the kubelet's rules."""
    t = 0.0
    runs: list[_Run] = []
    for name, restartable in inits:
        entry = run.entry(name)
        if restartable:
            runs.append(_Run(name, t, "sidecar", entry, t + entry.run_for))
            t += entry.run_for
            continue
        if entry.exit_code == 0 or entry.failures == 0:
            runs.append(_Run(name, t, "completes", entry, t + entry.run_for))
            t += entry.run_for
            continue
        if restart_policy == "Never":
            runs.append(_Run(name, t, "fails", entry, None))
            return _Schedule(tuple(runs), None, t + entry.run_for)
        loop = CrashLoop(
            entry.run_for,
            exit_code=entry.exit_code,
            reason=entry.reason,
            message=entry.message,
            ready=False,
        )
        if entry.failures is None:
            runs.append(_Run(name, t, "loops", entry, None, loop))
            return _Schedule(tuple(runs), None, None)
        end = t + loop.start_of(entry.failures) + entry.run_for
        runs.append(_Run(name, t, "loops", entry, end, loop))
        t = end
    return _Schedule(tuple(runs), t, None)


def _state(run: _Run, elapsed: float) -> tuple[ContainerState, float | None]:
    """One init container at ``elapsed``, and when that changes next (None: never)."""
    if elapsed < run.start:
        return POD_INITIALIZING, run.start
    entry = run.entry
    if run.kind == "sidecar":
        assert run.end is not None
        started = elapsed >= run.end
        state = ContainerState("running", ready=started, started_at=run.start)
        return state, None if started else run.end
    if run.kind == "completes":
        assert run.end is not None
        if elapsed < run.end:
            return ContainerState("running", started_at=run.start), run.end
        return _completed(run.start, run.end), None
    ends = run.start + entry.run_for
    if run.kind == "fails":
        if elapsed < ends:
            return ContainerState("running", started_at=run.start), ends
        return ContainerState(
            "terminated",
            reason=entry.reason,
            message=entry.message,
            exit_code=entry.exit_code,
            started_at=run.start,
            finished_at=ends,
        ), None
    loop = run.loop
    assert loop is not None
    if run.end is not None and elapsed >= run.success_start():
        failures = entry.failures
        assert failures is not None
        begun = run.success_start()
        previous = run.start + loop.start_of(failures - 1)
        last = LastTerminated(
            exit_code=entry.exit_code,
            reason=entry.reason,
            started_at=previous,
            finished_at=previous + entry.run_for,
            restart_count=failures - 1,
            message=entry.message,
        )
        if elapsed < run.end:
            state = ContainerState("running", restart_count=failures, started_at=begun, last=last)
            return state, run.end
        return _completed(begun, run.end, restart_count=failures, last=last), None
    state, change, _phase = loop.state_at(
        ContainerState("running"), elapsed - run.start, run.start, "Always"
    )
    return state, change


def _completed(
    start: float, end: float, *, restart_count: int = 0, last: LastTerminated | None = None
) -> ContainerState:
    return ContainerState(
        "terminated",
        reason=INIT_COMPLETED.reason,
        exit_code=0,
        ready=True,  # a completed init container reports ready (kubelet)
        restart_count=restart_count,
        started_at=start,
        finished_at=end,
        last=last,
    )
