"""The NodeScript custom resource: how a population of fake nodes behaves over time.

A NodeScript applies to the Node CRs its ``spec.selector`` matches (their
namespace, the v1.Node's labels, the CR's annotations), the highest
``spec.priority`` winning, or to a Node CR annotated
``zhizuqiu.github.com/nodeScript: <name>`` (a NodeScript of its own namespace;
the annotation wins over every selector). ``spec.percent`` takes a share of
the matching nodes, drawn per node from its name. Steps take effect ``after``
a Go duration counted from the NodeScript's creationTimestamp (plus a
per-node ``jitter``), so a scenario starts when it is applied and replays the
same way on every shard::

    apiVersion: mock.zhizuqiu.cn/v1alpha1
    kind: NodeScript
    metadata: {name: disk-trouble, namespace: kube-mock-system}
    spec:
      selector: {matchLabels: {pool: batch}}
      percent: 20
      steps:
        - after: 30s
          jitter: 30s
          conditions: [{type: DiskPressure, status: "True"}]
          taints: [{key: example.com/disk, effect: NoSchedule}]
        - after: 5m
          lease: Paused                  # a NotReady window: no Lease, no status
        - after: 6m
          kubeletRestart: true           # re-registers, relists its pods
        - after: 7m                      # back to what the CR says

Each step is the node's whole scripted state from its offset on: what it does
not name is as the Node CR says.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._mockstatus import LabelSelectorRequirement
from ._quantity import parse_quantity
from ._steps import TimedStep, check_duty_cycle, check_later
from ._types import Condition, CRModel, GoDuration, ObjectMeta, StringMap, Taint

__all__ = [
    "NODE_SCRIPT_CONDITIONS",
    "LeaseFlapScript",
    "NodeConditionScript",
    "NodeScript",
    "NodeScriptSelector",
    "NodeScriptSpec",
    "NodeScriptStatus",
    "NodeScriptStep",
]

NODE_SCRIPT_CONDITIONS = (
    "MemoryPressure",
    "DiskPressure",
    "PIDPressure",
    "NetworkUnavailable",
    "Ready",
)
"""The node conditions a script may set (the kubelet's, and the route controller's)."""


class NodeConditionScript(CRModel):
    """One node condition as the node reports it while the step is in force."""

    type: Literal["MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable", "Ready"]
    status: Literal["True", "False", "Unknown"]
    reason: str | None = Field(default=None, description="Default: the kubelet's wording.")
    message: str | None = Field(default=None, description="Default: the kubelet's wording.")


class LeaseFlapScript(CRModel):
    """The node's Lease pauses for `pausedFor` at the end of every `period` (NotReady flaps)."""

    period: GoDuration = Field(description="Length of one renewing/paused cycle.")
    paused_for: GoDuration = Field(
        alias="pausedFor",
        description="The paused part: over the Lease's 40 s, the node goes NotReady.",
    )


class NodeScriptStep(TimedStep):
    """From `after` on (since the NodeScript's creation), the node behaves so."""

    after: GoDuration = Field(description="Go duration since the NodeScript's creationTimestamp.")
    jitter: GoDuration | None = Field(
        default=None,
        description="The step takes effect at a point of [after, after+jitter] drawn per node.",
    )
    conditions: list[NodeConditionScript] = Field(
        default_factory=list,
        description="Conditions reported instead of the healthy ones (kubelet Events on change).",
    )
    taints: list[Taint] = Field(
        default_factory=list, description="Taints added to the CR's while the step is in force."
    )
    capacity: StringMap | None = Field(
        default=None,
        description="Capacity (and allocatable) by resource, over the CR's, e.g. pods: '10'.",
    )
    lease: Literal["Renewing", "Paused"] = Field(
        default="Renewing",
        description=(
            "Paused: the kubelet stops renewing its Lease and reporting status (a NotReady "
            "window: the node-lifecycle controller marks it after the Lease's 40 s)."
        ),
    )
    flap: LeaseFlapScript | None = Field(
        default=None, description="The Lease pauses on a period (NotReady at a rate)."
    )
    kubelet_restart: bool = Field(
        default=False,
        alias="kubeletRestart",
        description=(
            "At the step's start the kubelet restarts: Starting Events, re-registration "
            "(POST, 409, GET), a status report, and a relist of its pods."
        ),
    )

    @field_validator("capacity")
    @classmethod
    def _quantities(cls, capacity: dict[str, str] | None) -> dict[str, str] | None:
        for name, value in (capacity or {}).items():
            if not name:
                raise ValueError("capacity: an empty resource name")
            parse_quantity(value)
        return capacity

    @model_validator(mode="after")
    def _consistent(self) -> NodeScriptStep:
        kinds = [c.type for c in self.conditions]
        for kind in kinds:
            if kinds.count(kind) > 1:
                raise ValueError(f"conditions: {kind} given twice")
        if self.flap is not None:
            if self.lease == "Paused":
                raise ValueError("flap needs lease: Renewing (Paused already stops it)")
            check_duty_cycle("flap: pausedFor", self.flap.period, self.flap.paused_for)
        return self


class NodeScriptSelector(CRModel):
    """Which Node CRs a NodeScript applies to (every field ANDed)."""

    namespaces: list[str] | None = Field(
        default=None,
        description=(
            "Namespaces of the Node CRs; omitted: the NodeScript's own namespace only; "
            '["*"]: every namespace.'
        ),
    )
    match_labels: StringMap | None = Field(
        default=None, alias="matchLabels", description="Labels the v1.Node must carry."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, alias="matchExpressions", description="Label requirements on the v1.Node."
    )
    match_annotations: StringMap | None = Field(
        default=None,
        alias="matchAnnotations",
        description="Annotations the Node CR must carry, with these exact values.",
    )


class NodeScriptSpec(CRModel):
    """The steps of a node script, and which nodes follow it."""

    steps: list[NodeScriptStep] = Field(min_length=1)
    selector: NodeScriptSelector | None = Field(
        default=None,
        description=(
            "Node CRs this applies to; omitted: only those annotated "
            "zhizuqiu.github.com/nodeScript with its name."
        ),
    )
    priority: int = Field(
        default=0, description="Among matching NodeScripts the highest wins (ties: by name)."
    )
    percent: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of the matching nodes that follow it, drawn per node from its name.",
    )

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[NodeScriptStep]) -> list[NodeScriptStep]:
        for i in range(1, len(steps)):
            check_later(steps[i - 1], steps[i], i)
        return steps


class NodeScriptStatus(CRModel):
    """What shard 0 reports on a NodeScript: whether it validates."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Valid: True, or False with reason InvalidNodeScript and the fault.",
    )


class NodeScript(CRModel):
    """NodeScript is how the fake nodes its selector matches behave over time: conditions, NotReady windows, flaps, kubelet restarts, taints, capacity."""

    api_version: Literal["mock.zhizuqiu.cn/v1alpha1"] = Field(
        default="mock.zhizuqiu.cn/v1alpha1", alias="apiVersion"
    )
    kind: Literal["NodeScript"] = "NodeScript"
    metadata: ObjectMeta
    spec: NodeScriptSpec
    status: NodeScriptStatus | None = None
