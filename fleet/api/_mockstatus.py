"""The MockStatus custom resource: a scripted pod lifecycle (kube-mock planned it, never built it).

A pod opts in with the annotation ``zhizuqiu.github.com/mockStatus: <name>``,
naming a MockStatus in the pod's own namespace. The spec is an ordered list of
steps; each takes effect ``after`` a Go duration counted from the pod's
creationTimestamp and sets the pod's ``phase`` (and, optionally, a pod-level
reason/message and per-container states)::

    apiVersion: mock.zhizuqiu.cn/v1alpha1
    kind: MockStatus
    metadata: {name: crash-then-fail, namespace: default}
    spec:
      steps:
        - after: 0s
          phase: Pending
          containers: [{waiting: {reason: ErrImagePull}}]
        - after: 20s
          phase: Running
        - after: 2m
          phase: Failed
          containers: [{terminated: {exitCode: 137, reason: OOMKilled}}]

Before the first step the pod is Pending with containers waiting
(ContainerCreating), as with kube-mock's annotations. ``after`` strictly
increases, and nothing may follow a Succeeded or Failed step: the first
terminal state sticks. A container entry without ``name`` applies to every
container; a named one overrides it for that container. Pod IPs are not
scripted here (many pods share one MockStatus; IPs would collide): the
``zhizuqiu.github.com/podIPs`` annotation sets them. The shard compiles a
MockStatus into the same plan of timed steps as the delay annotations.

A MockStatus can also be a *policy*: with ``spec.selector`` (namespaces,
labels, annotations, owner kinds) it applies to every matching pod that has no
lifecycle annotation of its own, the highest ``spec.priority`` winning. Steps
may carry a ``jitter`` (uniform or normal over ``[after, after+jitter]``) and
the timeline may end in weighted ``branches``; both are drawn per pod from its
uid, so a run replays the same way. Branches are one level deep (a CRD schema
cannot be recursive).

``spec.initContainers`` runs a pod's init containers in order from its
creation, as the kubelet does: each waits (PodInitializing), runs for its
``runFor`` and completes before the next starts; a failing one fails the pod
under ``restartPolicy: Never`` and is restarted with the kubelet's back-off
otherwise (Init:CrashLoopBackOff). The steps wait for them: each takes effect
at the later of its ``after`` and the end of the init containers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._steps import TimedStep, check_duty_cycle, check_later
from ._types import Condition, CRModel, GoDuration, ObjectMeta, StringMap

__all__ = [
    "ContainerScript",
    "InitContainerScript",
    "LabelSelectorRequirement",
    "MockStatus",
    "MockStatusBranch",
    "MockStatusSpec",
    "MockStatusStatus",
    "MockStatusStep",
    "PodSelector",
    "ReadinessScript",
    "RestartsScript",
    "TerminatedScript",
    "WaitingScript",
]

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed"]
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class WaitingScript(CRModel):
    """A container waiting: `state.waiting` of a containerStatus."""

    reason: str = Field(default="ContainerCreating", min_length=1)
    message: str | None = None


class TerminatedScript(CRModel):
    """A container terminated. `exitCode` defaults to 0 in Succeeded, 1 otherwise."""

    exit_code: int | None = Field(default=None, alias="exitCode", ge=0, le=255)
    reason: str | None = Field(default=None, description="Default: Completed (exit 0) or Error.")
    message: str | None = None
    signal: int | None = Field(default=None, ge=0)


class RestartsScript(CRModel):
    """The container exits after each run and the kubelet restarts it, with its back-off."""

    run_for: GoDuration = Field(
        alias="runFor", description="How long each run lasts before the container exits."
    )
    exit_code: int = Field(default=1, alias="exitCode", ge=0, le=255)
    reason: str | None = Field(
        default=None, description="Default: Completed (exit 0) or Error; OOMKilled with 137."
    )
    message: str | None = None


class ReadinessScript(CRModel):
    """A readiness probe that fails for `notReadyFor` of every `period`."""

    period: GoDuration = Field(description="Length of one ready/not-ready cycle.")
    not_ready_for: GoDuration = Field(
        alias="notReadyFor", description="The not-ready part, at the end of each period."
    )


class ContainerScript(CRModel):
    """State of one container (by `name`), or of every container (no name)."""

    name: str | None = Field(default=None, description="Container name; omitted: every container.")
    waiting: WaitingScript | None = None
    terminated: TerminatedScript | None = None
    ready: bool | None = Field(default=None, description="Default: true when Running, else false.")
    restart_count: int | None = Field(default=None, alias="restartCount", ge=0)
    restarts: RestartsScript | None = Field(
        default=None,
        description=(
            "Running only: the container exits after runFor and is restarted as the "
            "restartPolicy says, back-off 10s doubling to 5m (CrashLoopBackOff)."
        ),
    )
    readiness: ReadinessScript | None = Field(
        default=None, description="Running only: readiness flapping on a period."
    )

    @model_validator(mode="after")
    def _one_state(self) -> ContainerScript:
        if self.waiting is not None and self.terminated is not None:
            raise ValueError("a container is either waiting or terminated, not both")
        if (self.restarts or self.readiness) and (self.waiting or self.terminated):
            raise ValueError(
                "restarts and readiness are for running containers: no waiting/terminated"
            )
        if self.readiness is not None:
            check_duty_cycle(
                "readiness: notReadyFor", self.readiness.period, self.readiness.not_ready_for
            )
        return self


class InitContainerScript(CRModel):
    """How one init container (by `name`), or every other one (no name), runs."""

    name: str | None = Field(
        default=None, description="Init container name; omitted: every init container not named."
    )
    run_for: GoDuration = Field(
        default="0s",
        alias="runFor",
        description=(
            "How long each run lasts before it exits (a sidecar: before it counts as "
            "started and the next init container starts)."
        ),
    )
    exit_code: int = Field(
        default=0,
        alias="exitCode",
        ge=0,
        le=255,
        description=(
            "Exit code of its failing runs; 0 (default): it completes on its first run. "
            "Not 0: under restartPolicy Never the pod fails; otherwise the kubelet restarts "
            "it with its back-off (Init:CrashLoopBackOff)."
        ),
    )
    failures: int | None = Field(
        default=None,
        ge=0,
        description=(
            "With a non-zero exitCode: runs that fail before one completes; omitted: every "
            "run fails (the pod never initializes)."
        ),
    )
    reason: str | None = Field(
        default=None, description="Reason of a failed run. Default: Error (OOMKilled with 137)."
    )
    message: str | None = None

    @model_validator(mode="after")
    def _failures_need_exit_code(self) -> InitContainerScript:
        if self.failures is not None and self.exit_code == 0:
            raise ValueError("failures needs a non-zero exitCode (exit 0 completes the run)")
        return self


class MockStatusStep(TimedStep):
    """From `after` on (since the pod's creation), the pod is in `phase`."""

    @model_validator(mode="after")
    def _behaviours_run(self) -> MockStatusStep:
        if self.phase != "Running" and any(c.restarts or c.readiness for c in self.containers):
            raise ValueError("restarts and readiness need a Running step")
        return self

    after: GoDuration = Field(
        description="Go duration since the pod's creationTimestamp, e.g. 10s."
    )
    jitter: GoDuration | None = Field(
        default=None,
        description=(
            "The step takes effect at a point of [after, after+jitter] drawn for each pod "
            "(seeded by its uid: the same pod draws the same point every time)."
        ),
    )
    distribution: Literal["uniform", "normal"] = Field(
        default="uniform",
        description=(
            "How the jitter is drawn: uniform over the window (default), or normal around "
            "its middle with a standard deviation of jitter/6, clamped to the window."
        ),
    )
    phase: PodPhase
    reason: str | None = Field(default=None, description="status.reason of the pod, e.g. Evicted.")
    message: str | None = Field(default=None, description="status.message of the pod.")
    containers: list[ContainerScript] = Field(default_factory=list)


def _check_order(steps: list[MockStatusStep], where: str, first: int = 0) -> None:
    for i in range(1, len(steps)):
        prev, step = steps[i - 1], steps[i]
        if prev.phase in TERMINAL_PHASES:
            raise ValueError(
                f"{where}step {i + first} follows the terminal step {i + first - 1} "
                f"({prev.phase}): a terminal phase sticks"
            )
        check_later(prev, step, i + first, where)


class LabelSelectorRequirement(CRModel):
    """One metav1.LabelSelectorRequirement: `key` `operator` `values`."""

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class PodSelector(CRModel):
    """Which pods a MockStatus applies to without an annotation naming it (every field ANDed)."""

    namespaces: list[str] | None = Field(
        default=None,
        description=(
            "Namespaces of the pods; omitted: the MockStatus's own namespace only; "
            '["*"]: every namespace.'
        ),
    )
    match_labels: StringMap | None = Field(
        default=None, alias="matchLabels", description="Labels the pod must carry."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        alias="matchExpressions",
        description="Label requirements, as a Deployment's selector.",
    )
    match_annotations: StringMap | None = Field(
        default=None,
        alias="matchAnnotations",
        description="Annotations the pod must carry, with these exact values.",
    )
    owner_kinds: list[str] | None = Field(
        default=None,
        alias="ownerKinds",
        description="The pod must have an ownerReference of one of these kinds (e.g. Job).",
    )


class MockStatusBranch(CRModel):
    """One way the timeline goes on after `spec.steps`, taken by a share of the pods."""

    name: str | None = Field(default=None, description="For messages only.")
    weight: int = Field(
        ge=0, description="Relative share of the pods taking this branch (e.g. 95 and 5)."
    )
    steps: list[MockStatusStep] = Field(
        min_length=1, description="Steps after spec.steps; after counts from creation."
    )


class MockStatusSpec(CRModel):
    """The ordered steps of a scripted pod lifecycle, and which pods follow it."""

    steps: list[MockStatusStep] = Field(min_length=1)
    branches: list[MockStatusBranch] | None = Field(
        default=None,
        description=(
            "After the last of steps, each pod takes one branch, drawn by weight "
            "(seeded by its uid)."
        ),
    )
    selector: PodSelector | None = Field(
        default=None,
        description=(
            "Pods this MockStatus applies to without naming it in an annotation; "
            "omitted: only pods annotated with its name."
        ),
    )
    init_containers: list[InitContainerScript] | None = Field(
        default=None,
        alias="initContainers",
        description=(
            "The pod's init containers run in spec order from its creation, each to "
            "completion before the next (Initialized False, app containers "
            "PodInitializing); the steps wait for them. Omitted: they complete at once."
        ),
    )
    priority: int = Field(
        default=0,
        description=(
            "Among the MockStatuses whose selector matches a pod, the highest priority "
            "wins (ties: namespace/name, alphabetically first)."
        ),
    )

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[MockStatusStep]) -> list[MockStatusStep]:
        _check_order(steps, "")
        return steps

    @field_validator("init_containers")
    @classmethod
    def _init_names(
        cls, entries: list[InitContainerScript] | None
    ) -> list[InitContainerScript] | None:
        seen: set[str | None] = set()
        for i, entry in enumerate(entries or ()):
            if entry.name in seen:
                which = f"name {entry.name!r}" if entry.name else "no name"
                raise ValueError(f"initContainers[{i}]: a second entry with {which}")
            seen.add(entry.name)
        return entries

    @model_validator(mode="after")
    def _branches_follow(self) -> MockStatusSpec:
        if self.branches is None:
            return self
        if not self.branches:
            raise ValueError("branches: give at least one branch, or omit branches")
        if sum(branch.weight for branch in self.branches) <= 0:
            raise ValueError("branches: the weights add up to 0: no pod could take any branch")
        last = self.steps[-1]
        for b, branch in enumerate(self.branches):
            where = f"branches[{b}]: "
            _check_order([last, *branch.steps], where, first=len(self.steps) - 1)
        return self


class MockStatusStatus(CRModel):
    """What shard 0 reports on a MockStatus: whether it validates."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Valid: True, or False with reason InvalidMockStatus and the fault.",
    )


class MockStatus(CRModel):
    """MockStatus is a scripted pod lifecycle, named by the zhizuqiu.github.com/mockStatus pod annotation or applied to the pods its selector matches."""

    api_version: Literal["mock.zhizuqiu.cn/v1alpha1"] = Field(
        default="mock.zhizuqiu.cn/v1alpha1", alias="apiVersion"
    )
    kind: Literal["MockStatus"] = "MockStatus"
    metadata: ObjectMeta
    spec: MockStatusSpec
    status: MockStatusStatus | None = None
