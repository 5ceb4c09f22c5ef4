"""Containers that change by themselves: crash loops with the kubelet's back-off, readiness flaps.

Both are :class:`~shards._plan.Behaviour` s attached to a step of a Plan
(``Step.behaviours``) and evaluated when the pod is, never by a task of their
own: the pod's one timer is armed for :meth:`Plan.next_change_after`, which
asks them for their next change. Pure arithmetic on the time since the step
began, so a pod seen late (shard restart) goes straight to the right run and
restart count, as with steps.

:class:`CrashLoop`: the container runs ``run_for`` seconds, exits with
``exit_code``, and the kubelet restarts it as ``kuberuntime`` does
(``doBackOff`` and ``flowcontrol.Backoff``): the first restart at once, then
after a back-off of 10 s doubling to 5 min (waiting, reason
``CrashLoopBackOff``, message ``back-off 20s restarting failed container=...``),
the back-off starting afresh when the last restart is more than twice the
maximum ago. ``restartCount`` counts the restarts, ``lastState.terminated``
shows the previous run, each run has its own containerID. Under
``restartPolicy: Never`` (or ``OnFailure`` with exit code 0) the container
stays terminated after its one run, and a loop that covers every container
ends the pod Failed (or Succeeded).

:class:`ReadinessFlap`: a running container is ready, then not ready for
``not_ready_for`` seconds of every ``period`` (a failing readiness probe).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field, replace

from shards._plan import ContainerState, LastTerminated, Phase

__all__ = [
    "BACKOFF_INITIAL",
    "BACKOFF_MAX",
    "CrashLoop",
    "ReadinessFlap",
]

BACKOFF_INITIAL = 10.0
"""kubelet ``backOffPeriod``: the first back-off after a restart, in seconds."""
BACKOFF_MAX = 300.0
"""kubelet ``MaxContainerBackOff``: the back-off doubles up to 5 minutes."""
_SIMULATED = 24
"""Runs computed one by one; past them the back-off has settled and runs repeat."""


def _runs(run_for: float) -> tuple[tuple[float, ...], tuple[float, ...], float]:
    """Start offsets of the first runs, the back-off in force after each exit, and the
    period after them, by the kubelet's rules (see the module docstring)."""
    starts = [0.0]
    backoffs: list[float] = []
    backoff = 0.0  # no entry in the kubelet's back-off table yet
    updated = 0.0  # the entry's lastUpdate: when the last restart happened
    for _ in range(_SIMULATED):
        start = starts[-1]
        end = start + run_for
        expired = backoff == 0.0 or end - updated > 2 * BACKOFF_MAX
        restart = end if expired else max(end, min(end + backoff, updated + 2 * BACKOFF_MAX))
        backoffs.append(0.0 if expired else restart - end)
        if backoff == 0.0 or restart - updated > 2 * BACKOFF_MAX:
            backoff = BACKOFF_INITIAL
        else:
            backoff = min(backoff * 2, BACKOFF_MAX)
        updated = restart
        starts.append(restart)
    period = starts[-1] - starts[-2]
    return tuple(starts), tuple(backoffs), period


@dataclass(frozen=True, slots=True)
class CrashLoop:
    """A container that exits after ``run_for`` seconds, restarted with back-off."""

    run_for: float
    exit_code: int = 1
    reason: str = "Error"
    message: str = ""
    ready: bool = True
    """Readiness while it runs."""
    _starts: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _backoffs: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _period: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts, backoffs, period = _runs(max(self.run_for, 0.0))
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_backoffs", backoffs)
        object.__setattr__(self, "_period", max(period, 1e-3))

    def _run(self, since: float) -> tuple[int, float, float]:
        """(run index, its start, the back-off waited after it) at ``since``."""
        starts = self._starts
        last = len(starts) - 1
        if since < starts[last]:
            index = bisect.bisect_right(starts, since) - 1
            return index, starts[index], self._backoffs[index]
        extra = int((since - starts[last]) // self._period)
        return last + extra, starts[last] + extra * self._period, self._backoffs[-1]

    def start_of(self, index: int) -> float:
        """Start of run ``index`` (0: the first), from the step's beginning."""
        last = len(self._starts) - 1
        if index <= last:
            return self._starts[index]
        return self._starts[last] + (index - last) * self._period

    def state_at(
        self, base: ContainerState, since: float, offset: float, restart_policy: str
    ) -> tuple[ContainerState, float | None, Phase | None]:
        restarts = restart_policy == "Always" or (
            restart_policy == "OnFailure" and self.exit_code != 0
        )
        count0 = base.restart_count
        if not restarts:
            if since < self.run_for:
                state = ContainerState(
                    "running", ready=self.ready, restart_count=count0, started_at=offset
                )
                return state, offset + self.run_for, None
            state = ContainerState(
                "terminated",
                reason=self.reason,
                message=self.message,
                exit_code=self.exit_code,
                restart_count=count0,
                started_at=offset,
                finished_at=offset + self.run_for,
            )
            return state, None, "Failed" if self.exit_code else "Succeeded"
        index, start, backoff = self._run(since)
        last = None
        if index > 0:
            previous = self.start_of(index - 1)
            last = LastTerminated(
                exit_code=self.exit_code,
                reason=self.reason,
                started_at=offset + previous,
                finished_at=offset + previous + self.run_for,
                restart_count=count0 + index - 1,
                message=self.message,
            )
        end = start + self.run_for
        if since < end:
            state = ContainerState(
                "running",
                ready=self.ready,
                restart_count=count0 + index,
                started_at=offset + start,
                last=last,
            )
            return state, offset + end, None
        # Exited, waiting out the back-off before the next run.
        state = ContainerState(
            "waiting",
            reason="CrashLoopBackOff",
            restart_count=count0 + index,
            last=LastTerminated(
                exit_code=self.exit_code,
                reason=self.reason,
                started_at=offset + start,
                finished_at=offset + end,
                restart_count=count0 + index,
                message=self.message,
            ),
            backoff=backoff,
        )
        return state, offset + self.start_of(index + 1), None


@dataclass(frozen=True, slots=True)
class ReadinessFlap:
    """A running container ready, then not ready for ``not_ready_for`` of every ``period``."""

    period: float
    not_ready_for: float

    def state_at(
        self, base: ContainerState, since: float, offset: float, restart_policy: str
    ) -> tuple[ContainerState, float | None, Phase | None]:
        if base.kind != "running" or self.period <= 0:
            return base, None, None
        cycle = since // self.period
        into = since - cycle * self.period
        ready_for = self.period - self.not_ready_for
        begin = offset + cycle * self.period
        if into < ready_for:
            return replace(base, ready=base.ready), begin + ready_for, None
        return replace(base, ready=False), begin + self.period, None
