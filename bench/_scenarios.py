"""Bench scenarios: the built-in ones, and YAML files users write, validated by pydantic.

A scenario is one :class:`ScenarioSpec`: which load (``type``) and its sizes.
A YAML file names the built-in ``type`` it runs and overrides any of its
defaults; unknown fields are refused (a typo is not silently ignored)::

    name: density-2k
    type: node-density
    nodes: 2000
    rate: 100          # Node CR creates per second
    timeout: 10m

Durations are Go syntax (``90s``, ``10m``) or plain seconds. The types:

===============  ===========================================================
node-density     ``nodes`` Node CRs, timed to ``nodes`` Ready Nodes (watched)
pod-startup      ``nodes`` Ready, then ``pods`` pods (bare, or through
                 Deployments) timed to Running; per-pod startup latency
churn            ``nodes`` Ready, then pods created at ``rate``/s for
                 ``duration``, each deleted once Running
heartbeat-soak   ``nodes`` Ready, then nothing for ``duration``: the cost of
                 heartbeats (Leases, node status) alone
kwok-ci          KWOK's CI benchmark: 5,000 nodes Ready, 10,000 pods Running,
                 10,000 pods deleted, each step timed
daemonset        ``nodes`` Ready, then one DaemonSet over them, timed to a
                 Running pod on every node (the cluster's DaemonSet controller
                 and scheduler place them)
faults           ``nodes`` Ready and ``pods`` Running on a fleet of its own
                 (2 shards, 2 coordinators) behind a fault proxy, then faults
                 one after another (watch cuts, apiserver pause and restart of
                 ``outage`` s, 429 and 410 storms on the sandbox, ``malformed``
                 bad CRs and pods, shard kill -9, coordinator failover), each
                 settled and counted (``bench._faults``); the bench's own
                 apiserver only
restart-storm    ``nodes`` Ready, ``pods`` Running, then every node restarts
                 its kubelet at once (re-registers, relists its pods,
                 rewrites its status); timed until every node has reported
                 again and is Ready
node-flap        ``nodes`` Ready, ``pods`` Running, then ``fraction`` of the
                 nodes go quiet for ``down`` every ``period`` (NotReady once
                 the control plane's grace period passes), for ``duration``
partition        ``nodes`` Ready, ``pods`` Running, then ``fraction`` of the
                 nodes stop renewing for ``down`` and come back; timed until
                 every node is Ready and untainted again
pod-churn        ``nodes`` Ready, ``pods`` standing, ``fraction`` of them in
                 CrashLoopBackOff (a MockStatus policy), then ``churn`` on top
===============  ===========================================================

The four chaos types (the last four) report what the control plane did in a
``chaos`` section: apiserver requests and latencies by verb over the disturbance
and the settling, watches ended and started, kube-apiserver's and etcd's memory
("not exposed" on the sandbox), the peak of NotReady nodes, nodes tainted
unreachable or not-ready, pods evicted, and how long it took to settle. Their
pods tolerate the NoExecute taints for ``tolerationSeconds`` (300 s, what the
DefaultTolerationSeconds admission gives) so evictions happen as on a real
cluster; node-side, the fleet is driven through Node CRs only (``spec.suspend``,
and the kubelet-restart annotation), so they run against any cluster a fleet drives.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from fleet.api import parse_delay
from fleet.errors import ConfigError, InputError
from fleet.wire import FLEET_NAMESPACE

__all__ = ["BUILTIN", "CHAOS_TYPES", "ScenarioSpec", "ScenarioType", "SloSpec", "load_scenario"]

ScenarioType = Literal[
    "node-density",
    "pod-startup",
    "churn",
    "heartbeat-soak",
    "kwok-ci",
    "daemonset",
    "faults",
    "restart-storm",
    "node-flap",
    "partition",
    "pod-churn",
]
CHAOS_TYPES = frozenset({"restart-storm", "node-flap", "partition", "pod-churn"})
"""Scenario types that disturb the fleet and report a ``chaos`` section."""


def _seconds(value: object) -> object:
    if isinstance(value, str):
        try:
            return parse_delay(value)
        except InputError as exc:
            raise ValueError(str(exc)) from exc
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class SloSpec(_Model):
    """Thresholds of the SLO table (seconds); the defaults are the Kubernetes SLOs."""

    mutating_p99: Seconds = 1.0
    pod_startup_p99: Seconds = 5.0


class ScenarioSpec(_Model):
    """One load, fully specified."""

    name: str = Field(min_length=1, max_length=63)
    type: ScenarioType
    nodes: int = Field(0, ge=0, description="Node CRs to create (each becomes a Ready Node).")
    pods: int = Field(0, ge=0, description="Pods to create (pod-startup, kwok-ci).")
    workload: Literal["pods", "deployment"] = Field(
        "pods", description="Bare pods, or Deployments of podsPerDeployment replicas."
    )
    pods_per_deployment: int = Field(100, ge=1)
    placement: Literal["scheduler", "direct"] = Field(
        "scheduler",
        description="scheduler: pods select the run's nodes by label and the cluster's scheduler binds "
        "them; direct: the bench sets spec.nodeName round-robin (no scheduler needed).",
    )
    rate: float = Field(50.0, gt=0, description="Bench writes (creates, deletes) per second.")
    concurrency: int = Field(16, ge=1, le=1024, description="Bench writes in flight at most.")
    duration: Seconds = Field(60.0, description="How long churn and heartbeat-soak run.")
    timeout: Seconds = Field(300.0, description="How long one step may take before it fails.")
    scrape_interval: Seconds = Field(
        5.0, description="Seconds between /metrics scrapes and samples."
    )
    namespace: str = Field(
        "kubemock-bench", description="Where the bench's pods and Deployments go."
    )
    node_namespace: str = Field(FLEET_NAMESPACE, description="Where the bench's Node CRs go.")
    node_config: dict[str, Any] = Field(
        default_factory=dict, description="spec.nodeConfig of every Node CR."
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Annotations of every pod (e.g. zhizuqiu.github.com/delayRunning).",
    )
    outage: Seconds = Field(
        8.0,
        description="faults: seconds of each apiserver pause, restart and storm (the default is "
        "inside the fleet's 10 s renew deadlines: no CR should move).",
    )
    malformed: int = Field(
        100, ge=0, description="faults: malformed Node CRs, and as many malformed pods, at once."
    )
    fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Chaos: the share of the nodes disturbed (node-flap, partition), or of "
        "the standing pods crash-looping (pod-churn).",
    )
    down: Seconds = Field(
        60.0, description="Chaos: how long a disturbed node stops renewing (partition, node-flap)."
    )
    period: Seconds = Field(120.0, description="node-flap: seconds from one flap to the next.")
    toleration_seconds: int = Field(
        300,
        ge=0,
        description="Chaos: tolerationSeconds of the pods' NoExecute tolerations of the "
        "unreachable and not-ready taints (300: DefaultTolerationSeconds'); a node "
        "down longer has its pods evicted.",
    )
    kubelet_events: bool | None = Field(
        None,
        description="The Events the bench's own fleet posts as kubelets do (Starting, NodeReady, "
        "Pulling, Pulled, Created, Started, Killing): null leaves the fleet's setting (on); "
        "kwok-ci turns them off, as KWOK's default stages post none. A fleet the bench did "
        "not start keeps its own.",
    )
    crash_run_for: Seconds = Field(
        10.0,
        description="pod-churn: how long each run of a crash-looping container lasts before "
        "it exits 1; the kubelet's back-off (10 s doubling to 5 min) then spaces the restarts, "
        "as for a real crash loop.",
    )
    slo: SloSpec = SloSpec()

    @model_validator(mode="after")
    def _sizes(self) -> ScenarioSpec:
        if self.nodes < 1:  # every type places its load on nodes
            raise ValueError(f"a {self.type} scenario needs nodes >= 1")
        if self.type == "faults":
            if self.nodes < 2:
                raise ValueError("a faults scenario needs nodes >= 2 (a shard each)")
            if self.workload != "pods":
                raise ValueError("a faults scenario counts bare pods: workload must be pods")
            if self.outage >= self.timeout:
                raise ValueError(
                    f"a faults scenario needs outage < timeout ({self.timeout:g} s): the fleet "
                    "settles after each outage within the step's timeout"
                )
        if self.type == "node-flap" and self.down >= self.period:
            raise ValueError("a node-flap scenario needs down < period")
        if self.type in ("pod-startup", "kwok-ci", "pod-churn") and self.pods < 1:
            raise ValueError(f"a {self.type} scenario needs pods >= 1")
        return self

    def parameters(self) -> dict[str, Any]:
        """The scenario as JSON-ready data (camelCase, as a YAML file spells it)."""
        return self.model_dump(mode="json", by_alias=True)


BUILTIN: dict[str, dict[str, Any]] = {
    "node-density": {"type": "node-density", "nodes": 100},
    "pod-startup": {"type": "pod-startup", "nodes": 10, "pods": 100},
    "churn": {"type": "churn", "nodes": 10, "rate": 10.0, "duration": 60.0},
    "heartbeat-soak": {"type": "heartbeat-soak", "nodes": 100, "duration": 600.0},
    # KWOK's CI benchmark (kwok .github/workflows/test.yaml, "benchmark"): 5k nodes, 10k pods.
    "kwok-ci": {
        "type": "kwok-ci",
        "nodes": 5000,
        "pods": 10000,
        "rate": 200.0,
        "concurrency": 32,
        "timeout": 1200.0,
        # KWOK's default stages (the bar's workload) post no Events; a real kubelet's four
        # per container start are measured apart (docs/performance.md).
        "kubeletEvents": False,
    },
    # The classic DaemonSet scale test: one pod on each of 5,000 nodes (issue 15's bar: 60 s).
    "daemonset": {
        "type": "daemonset",
        "nodes": 5000,
        "rate": 200.0,
        "concurrency": 32,
        "timeout": 1200.0,
    },
    # Faults at scale (issue: "a bench scenario for the large sizes"); 5,000 nodes runs too.
    "faults": {
        "type": "faults",
        "nodes": 1000,
        "pods": 5000,
        "rate": 100.0,
        "concurrency": 16,
        "timeout": 600.0,
    },
    # Chaos: small enough to run anywhere; `--nodes 1000` (or 5000) for the figures.
    "restart-storm": {"type": "restart-storm", "nodes": 100, "pods": 500, "rate": 200.0},
    "node-flap": {
        "type": "node-flap",
        "nodes": 100,
        "pods": 500,
        "fraction": 0.1,
        "down": 60.0,
        "period": 120.0,
        "duration": 240.0,
        "rate": 200.0,
    },
    "partition": {
        "type": "partition",
        "nodes": 100,
        "pods": 500,
        "fraction": 0.2,
        "down": 90.0,
        "tolerationSeconds": 30,
        "rate": 200.0,
    },
    "pod-churn": {
        "type": "pod-churn",
        "nodes": 10,
        "pods": 200,
        "fraction": 0.2,
        "rate": 10.0,
        "duration": 60.0,
    },
}
"""The built-in scenarios by name: each is its ``type`` with these defaults."""


def _validate(
    data: dict[str, Any], where: str, flags: Mapping[str, str] | None = None
) -> ScenarioSpec:
    """``flags``: the command-line flag that set each field given (its error names the flag)."""
    try:
        return ScenarioSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top)"
            flag = (flags or {}).get(str(err["loc"][0])) if err["loc"] else None
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{flag} {err['input']}: {msg}" if flag else f"{loc}: {msg}")
        raise ConfigError(f"{where}: {'; '.join(problems)}") from exc


def load_scenario(
    name_or_file: str,
    overrides: dict[str, Any] | None = None,
    *,
    flags: Mapping[str, str] | None = None,
) -> ScenarioSpec:
    """A built-in scenario by name, or a YAML file; ``overrides`` (e.g. ``--nodes``) win.

    ``flags`` names the command-line flag of each override, for the error message."""
    extra = {k: v for k, v in (overrides or {}).items() if v is not None}
    given = {k: f for k, f in (flags or {}).items() if k in extra}
    if name_or_file in BUILTIN:
        return _validate(
            {"name": name_or_file, **BUILTIN[name_or_file], **extra},
            f"scenario {name_or_file}",
            given,
        )
    path = Path(name_or_file)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        raise ConfigError(
            f"unknown scenario {name_or_file!r}: one of {', '.join(BUILTIN)} or a .yaml file"
        )
    try:
        doc = yaml.load(
            path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: a scenario is a mapping with at least 'type'")
    kind = doc.get("type")
    if kind not in BUILTIN:
        raise ConfigError(f"{path}: type: must be one of {', '.join(BUILTIN)}, got {kind!r}")
    data = {"name": path.stem, **BUILTIN[kind], **doc, **extra}
    return _validate(data, str(path), given)
