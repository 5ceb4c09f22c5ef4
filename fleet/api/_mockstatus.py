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
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._duration import parse_go_duration
from ._types import CRModel, GoDuration, ObjectMeta

__all__ = [
    "ContainerScript",
    "MockStatus",
    "MockStatusSpec",
    "MockStatusStep",
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


class ContainerScript(CRModel):
    """State of one container (by `name`), or of every container (no name)."""

    name: str | None = Field(default=None, description="Container name; omitted: every container.")
    waiting: WaitingScript | None = None
    terminated: TerminatedScript | None = None
    ready: bool | None = Field(default=None, description="Default: true when Running, else false.")
    restart_count: int | None = Field(default=None, alias="restartCount", ge=0)

    @model_validator(mode="after")
    def _one_state(self) -> ContainerScript:
        if self.waiting is not None and self.terminated is not None:
            raise ValueError("a container is either waiting or terminated, not both")
        return self


class MockStatusStep(CRModel):
    """From `after` on (since the pod's creation), the pod is in `phase`."""

    after: GoDuration = Field(
        description="Go duration since the pod's creationTimestamp, e.g. 10s."
    )
    phase: PodPhase
    reason: str | None = Field(default=None, description="status.reason of the pod, e.g. Evicted.")
    message: str | None = Field(default=None, description="status.message of the pod.")
    containers: list[ContainerScript] = Field(default_factory=list)

    def after_seconds(self) -> float:
        """``after`` in seconds."""
        return parse_go_duration(self.after) / 1e9


class MockStatusSpec(CRModel):
    """The ordered steps of a scripted pod lifecycle."""

    steps: list[MockStatusStep] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[MockStatusStep]) -> list[MockStatusStep]:
        for i in range(1, len(steps)):
            prev, step = steps[i - 1], steps[i]
            if prev.phase in TERMINAL_PHASES:
                raise ValueError(
                    f"step {i} follows the terminal step {i - 1} ({prev.phase}): a terminal phase sticks"
                )
            if parse_go_duration(step.after) <= parse_go_duration(prev.after):
                raise ValueError(
                    f'step {i}: after "{step.after}" must be later than step {i - 1}\'s "{prev.after}"'
                )
        return steps


class MockStatus(CRModel):
    """MockStatus is a scripted pod lifecycle, named by the zhizuqiu.github.com/mockStatus pod annotation."""

    api_version: Literal["mock.zhizuqiu.cn/v1alpha1"] = Field(
        default="mock.zhizuqiu.cn/v1alpha1", alias="apiVersion"
    )
    kind: Literal["MockStatus"] = "MockStatus"
    metadata: ObjectMeta
    spec: MockStatusSpec
