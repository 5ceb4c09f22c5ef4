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
raises :class:`~shards._library.ScriptError` (an :class:`~fleet.errors.InputError`
with a ``reason``): the pod driver keeps such a pod Pending with that reason and a
Warning Event. Every ADDED or MODIFIED MockStatus is passed to ``on_change``
(the pod driver re-plans the pods naming it); a DELETED one is only forgotten:
pods already following it keep the steps they have, new pods wait for it.

The watch, the per-spec cache and the wait for the first list are
:class:`~shards._library.WatchedLibrary`'s, shared with the NodeScripts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from fleet.api import (
    ContainerScript,
    InitContainerScript,
    MockStatus,
    MockStatusStep,
    load_mock_status,
    parse_go_duration,
)
from fleet.kube import ObjectMeta, Requester, WatchEvent
from fleet.wire import MOCKSTATUS_PLURAL
from shards._behaviours import CrashLoop, ReadinessFlap
from shards._initrun import InitEntry, InitRun
from shards._library import MockStatusView, Report, ScriptError, WatchedLibrary
from shards._plan import (
    ANNOTATION_MOCK_STATUS,
    COMPLETED,
    CONTAINER_CREATING,
    INIT_COMPLETED,
    POD_INITIALIZING,
    RUNNING_READY,
    Behaviour,
    ContainerState,
    Phase,
    Plan,
    ScriptResolver,
    Step,
)
from shards._policies import (
    PodFacts,
    Policy,
    PolicyIndex,
    compile_policy,
    jitter_draw,
    jittered_offsets,
    weighted_choice,
)

__all__ = [
    "INVALID_REASON",
    "MISSING_REASON",
    "SCRIPT_SOURCE",
    "ScriptLibrary",
    "Timeline",
    "compile_script",
    "compile_timeline",
]

MISSING_REASON = "MockStatusNotFound"
"""Pod ``status.reason`` (and Event reason) while its MockStatus does not exist."""
INVALID_REASON = "InvalidMockStatus"
"""Pod ``status.reason`` (and Event reason) while its MockStatus does not validate."""
SCRIPT_SOURCE = "mockStatus"
"""``Step.source`` of every step compiled from a MockStatus."""
PLAN_CACHE = 4096
"""Distinct per-pod Plans a jittered or branching MockStatus keeps to share between pods
(pods drawing the same whole seconds and branch share one); past it each pod has its own."""


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


def _behaviours(entry: ContainerScript) -> list[tuple[str | None, Behaviour]]:
    out: list[tuple[str | None, Behaviour]] = []
    if entry.restarts is not None:
        script = entry.restarts
        reason = script.reason or ("Completed" if script.exit_code == 0 else "Error")
        loop = CrashLoop(
            parse_go_duration(script.run_for) / 1e9,
            exit_code=script.exit_code,
            reason=reason,
            message=script.message or "",
            ready=True if entry.ready is None else entry.ready,
        )
        out.append((entry.name, loop))
    if entry.readiness is not None:
        flap = ReadinessFlap(
            parse_go_duration(entry.readiness.period) / 1e9,
            parse_go_duration(entry.readiness.not_ready_for) / 1e9,
        )
        out.append((entry.name, flap))
    return out


def _step(at: float, script: MockStatusStep, started: float | None) -> Step:
    default = _default_state(script.phase)
    overrides: list[tuple[str, ContainerState]] = []
    behaviours: list[tuple[str | None, Behaviour]] = []
    for entry in script.containers:
        state = _container_state(script.phase, entry)
        if entry.name is None:
            default = state
        else:
            overrides.append((entry.name, state))
        behaviours += _behaviours(entry)
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
        behaviours=tuple(behaviours),
    )


def init_run(entries: Sequence[InitContainerScript] | None) -> InitRun | None:
    """``spec.initContainers`` as an :class:`~shards._initrun.InitRun`; None without it."""
    if entries is None:
        return None
    default = InitEntry()
    named: list[tuple[str, InitEntry]] = []
    for script in entries:
        entry = InitEntry(
            run_for=parse_go_duration(script.run_for) / 1e9,
            exit_code=script.exit_code,
            failures=script.failures,
            reason=script.reason or ("OOMKilled" if script.exit_code == 137 else "Error"),
            message=script.message or "",
        )
        if script.name is None:
            default = entry
        else:
            named.append((script.name, entry))
    return InitRun(default, tuple(named))


def build_plan(
    entries: Sequence[tuple[float, MockStatusStep]], init: InitRun | None = None
) -> Plan:
    """The :class:`Plan` of MockStatus steps, each at its given offset (seconds, sorted).

    Before the first step the pod is Pending with containers ContainerCreating
    (init containers PodInitializing), as with the delay annotations. Containers
    count as started from the first Running step (a terminal step with no
    Running before it starts and ends them at its own offset). ``init``: the init
    containers run in order first, and the steps wait for them.
    """
    steps: list[Step] = []
    if entries[0][0] > 0:
        steps.append(Step(0.0, "Pending", CONTAINER_CREATING, POD_INITIALIZING, source="creation"))
    started: float | None = None
    for at, entry in entries:
        if entry.phase == "Running" and started is None:
            started = at
        begun = at if started is None and entry.phase in ("Succeeded", "Failed") else started
        steps.append(_step(at, entry, begun))
    return Plan(tuple(steps), init=init)


def compile_script(script: MockStatus) -> Plan:
    """A validated MockStatus without jitter or branches as a :class:`Plan`; see :func:`build_plan`."""
    return build_plan(
        [(entry.after_seconds(), entry) for entry in script.spec.steps],
        init_run(script.spec.init_containers),
    )


@dataclass(frozen=True, slots=True)
class _Timed:
    after: float
    jitter: float
    normal: bool
    step: MockStatusStep


@dataclass(slots=True)
class Timeline:
    """A compiled MockStatus: the :class:`Plan` of each pod, by uid (see :meth:`plan_for`)."""

    prefix: tuple[_Timed, ...]
    branches: tuple[tuple[_Timed, ...], ...] = ()
    weights: tuple[int, ...] = ()
    fixed: Plan | None = None
    """The one Plan of every pod when nothing is drawn (no jitter, no branches)."""
    policy: Policy | None = None
    """Its selector, when the MockStatus is a policy."""
    init: InitRun | None = None
    """Its ``spec.initContainers``, in every pod's Plan."""
    _plans: dict[tuple[int, tuple[float, ...]], Plan] = field(default_factory=dict)

    def plan_for(self, uid: str) -> Plan:
        """The pod's Plan: its branch drawn by weight, each jitter drawn, all from ``uid``.

        Jitter is drawn in whole seconds (status times have one-second resolution) for
        windows of a second or more, so pods drawing alike share a Plan. A step never
        comes before the one it follows: a draw that would is moved up to it.
        """
        if self.fixed is not None:
            return self.fixed
        branch = weighted_choice(uid, "branch", self.weights) if self.branches else -1
        timed = self.prefix + (self.branches[branch] if branch >= 0 else ())
        offsets = jittered_offsets(
            [(entry.after, entry.jitter) for entry in timed],
            lambda index: jitter_draw(
                uid, f"step/{index}", "normal" if timed[index].normal else "uniform"
            ),
        )
        key = (branch, tuple(offsets))
        plan = self._plans.get(key)
        if plan is None:
            plan = build_plan(
                [(at, entry.step) for at, entry in zip(offsets, timed, strict=True)], self.init
            )
            if len(self._plans) < PLAN_CACHE:
                self._plans[key] = plan
        return plan


def _timed(steps: Sequence[MockStatusStep]) -> tuple[_Timed, ...]:
    return tuple(
        _Timed(s.after_seconds(), s.jitter_seconds(), s.distribution == "normal", s) for s in steps
    )


def compile_timeline(script: MockStatus) -> Timeline:
    """A validated MockStatus as a :class:`Timeline`; InputError for a bad selector."""
    spec = script.spec
    policy = None
    if spec.selector is not None:
        meta = script.metadata
        policy = compile_policy(meta.namespace or "", meta.name, spec.selector, spec.priority)
    prefix = _timed(spec.steps)
    if spec.branches is None and not any(entry.jitter for entry in prefix):
        return Timeline(prefix, fixed=compile_script(script), policy=policy)
    branches = tuple(_timed(branch.steps) for branch in spec.branches or ())
    weights = tuple(branch.weight for branch in spec.branches or ())
    return Timeline(prefix, branches, weights, policy=policy, init=init_run(spec.init_containers))


# --- the library --------------------------------------------------------------


class ScriptLibrary(WatchedLibrary[Timeline]):
    """Every MockStatus in the cluster, compiled on demand; see the module docstring."""

    kind = "MockStatus"
    invalid_reason = INVALID_REASON
    meanwhile = "pods naming one wait for it"

    def __init__(
        self,
        requester: Requester,
        *,
        on_change: Callable[[str, str], None] | None = None,
        on_policies_change: Callable[[], None] | None = None,
        on_report: Report | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(requester, MOCKSTATUS_PLURAL, on_report=on_report, clock=clock, rng=rng)
        self.on_change = on_change
        """Called with each MockStatus (namespace, name) whose spec changed."""
        self.on_policies_change = on_policies_change
        """Called when a policy (a MockStatus with a selector) appears, changes or goes."""
        self.policies = PolicyIndex()
        self._signalled: dict[str, bytes] = {}
        """``namespace/name`` -> the spec the pod driver was last told about: a change to
        the status alone (our own report) re-plans nothing."""

    # -- resolving -------------------------------------------------------------------------

    def resolve(self, namespace: str, name: str, uid: str = "") -> Plan:
        """The Plan of MockStatus ``namespace/name`` for pod ``uid``; :class:`ScriptError` if
        none or invalid."""
        key = f"{namespace}/{name}"
        where = f"annotation {ANNOTATION_MOCK_STATUS}={name!r}"
        view = self.reflector.objects.get(key)
        if view is None:
            self._compiled.pop(key, None)
            raise ScriptError(
                f"{where}: no MockStatus {key}; the pod stays Pending until it is created",
                MISSING_REASON,
            )
        result, _fresh = self.compiled(key, view)
        if isinstance(result, ScriptError):
            raise ScriptError(f"{where}: {result}", result.reason)
        return result.plan_for(uid)

    def resolver(self, namespace: str, uid: str = "") -> ScriptResolver:
        """A :data:`~shards._plan.ScriptResolver` for pod ``uid`` in ``namespace``."""

        def resolve(name: str) -> Plan | None:
            return self.resolve(namespace, name, uid)

        return resolve

    def policy_plan(self, facts: PodFacts, uid: str) -> tuple[str, Plan] | None:
        """The policy a pod with these facts follows (``namespace/name``) and its Plan; None:
        no policy matches."""
        if not len(self.policies):
            return None
        key = self.policies.match(facts)
        view = self.reflector.objects.get(key) if key else None
        if view is None:
            return None
        result, _fresh = self.compiled(key, view)
        if isinstance(result, ScriptError):
            return None
        return key, result.plan_for(uid)

    def build(self, document: dict[str, Any], meta: ObjectMeta) -> Timeline:
        """A MockStatus document as its :class:`Timeline`."""
        return compile_timeline(load_mock_status(document))

    # -- watching --------------------------------------------------------------------------

    def on_event(self, event: WatchEvent[MockStatusView]) -> ScriptError | None:
        """Keep the policy index in step with one MockStatus event, and tell the pod driver;
        why the MockStatus does not validate (None: it does, or it is gone)."""
        meta = event.obj.metadata
        key = f"{meta.namespace}/{meta.name}"
        if event.type == "DELETED":
            self._compiled.pop(key, None)
            self._signalled.pop(key, None)
            if self.policies.remove(key) and self.on_policies_change is not None:
                self.on_policies_change()
            return None
        result, _fresh = self.compiled(key, event.obj)
        problem = result if isinstance(result, ScriptError) else None
        spec = bytes(event.obj.spec)
        if self._signalled.get(key) == spec:
            return problem  # only the status or metadata changed
        self._signalled[key] = spec
        policy = None if isinstance(result, ScriptError) else result.policy
        if policy is not None:
            self.policies.put(policy)  # a new generation even if equal: its steps may differ
            changed = True
        else:
            changed = self.policies.remove(key)
        if self.on_change is not None:
            self.on_change(meta.namespace, meta.name)
        if changed and self.on_policies_change is not None:
            self.on_policies_change()
        return problem
