"""The bench report: a versioned JSON schema, a Markdown summary and PNG plots.

:class:`Report` is the whole schema, a tree of msgspec Structs with camelCase
JSON names (``docs/bench.md`` documents every field; :func:`report_schema`
gives it as JSON Schema). A report is validated on write (encoded, then
decoded back into the schema with its constraints) and on read (a file of
another ``schemaVersion`` is refused with a clear message, not misread).

Schema versions: 1 is the first. A change that removes or renames a field,
or changes a field's meaning, bumps :data:`SCHEMA_VERSION`; adding an
optional field does not.

Plots need matplotlib (the ``plots`` extra). Without it the report says so in
``plots.skipped`` and nothing crashes.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from bench._procstat import CONTROL_PLANE_COMPONENTS
from fleet.errors import ConfigError, InputError

__all__ = [
    "SCHEMA_VERSION",
    "ApiserverSummary",
    "ChaosResult",
    "CleanupResult",
    "ComponentMemory",
    "ComponentUsage",
    "FaultResult",
    "LatencyRow",
    "Percentiles",
    "PlotsInfo",
    "ProcessUsage",
    "Report",
    "RequestRow",
    "SloResult",
    "StepResult",
    "StorageRow",
    "TargetInfo",
    "TimelineSample",
    "read_report",
    "report_schema",
    "summary_markdown",
    "verdict",
    "write_plots",
    "write_report",
]

SCHEMA_VERSION = 1
"""The version this code writes and reads."""

NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Count = Annotated[int, msgspec.Meta(ge=0)]


class _Base(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class Percentiles(_Base, frozen=True):
    """Latency percentiles of one phase, in seconds."""

    count: Count
    p50: NonNegative
    p90: NonNegative
    p99: NonNegative
    max: NonNegative | None = None
    mean: NonNegative | None = None


class StepResult(_Base, frozen=True):
    """One timed step of a scenario (``nodes-ready``, ``pods-running``, ``pods-deleted``)."""

    name: str
    seconds: NonNegative
    """From the step's first request to the last object observed in its target state."""
    target: Count
    """Objects the step set out to bring to its state."""
    reached: Count
    """Objects observed in that state when the step ended."""
    ok: bool
    """All of them, within the step's timeout."""
    per_second: NonNegative = 0.0
    """``reached / seconds``."""
    reason: str = ""
    """Why the step failed (empty when it did not): how far it got, and the last write
    error seen during it, if any."""
    cpu_seconds: dict[str, NonNegative] = {}
    """CPU-seconds each process component spent during the step (``kube-apiserver``,
    ``etcd``, ``shard 0``, ``control-plane``, the bench's own process ...); empty when the
    processes were not sampled."""


class FaultResult(_Base, frozen=True):
    """One fault of the ``faults`` scenario: what was tried, and what it did to the fleet."""

    name: str
    """``watch-cut``, ``pause``, ``restart``, ``429-storm``, ``410-storm``, ``malformed``,
    ``shard-kill``, ``coordinator-failover``."""
    tried: str
    did: str
    """What the fault did, in counts (connections cut, requests answered 429 ...)."""
    fault_seconds: NonNegative
    settle_seconds: NonNegative
    """From the fault's end until every node was Ready, every pod Running and every node
    Lease renewed by the shard its CR is labelled with."""
    moves: Count
    """Node CRs the coordinator moved from one shard to another meanwhile."""
    crashes: Count
    """Fleet processes that exited (those the fault killed excepted)."""
    not_ready: Count
    """Nodes whose Ready left True, or whose Lease went unrenewed past its duration."""
    regressed: Count
    """Pods whose phase went backwards."""
    restarted: Count
    """Pods with a container restart."""
    two_drivers: Count
    """Nodes written by a shard after another took over (no shard-label move between)."""
    lost: Count
    """CRs, Nodes, node Leases or pods that should exist and do not."""
    ok: bool
    """Settled in time and every count zero."""
    reason: str = ""

    def counts(self) -> dict[str, int]:
        """The counts that must be zero, by their report names."""
        return {
            "crashes": self.crashes,
            "notReady": self.not_ready,
            "regressed": self.regressed,
            "restarted": self.restarted,
            "twoDrivers": self.two_drivers,
            "lost": self.lost,
        }

    def line(self) -> str:
        """One line for the console: the fault, what it did, its counts."""
        counts = " ".join(f"{k}={v}" for k, v in self.counts().items())
        return (
            f"fault {self.name}: {self.tried} ({self.did}); took {self.fault_seconds:.1f} s, "
            f"settled in {self.settle_seconds:.1f} s; moves={self.moves} {counts}"
            + ("" if self.ok else f"  FAILED: {self.reason}")
        )


class RequestRow(_Base, frozen=True):
    """Requests the apiserver served during the run, for one key."""

    verb: str
    group: str
    resource: str
    subresource: str
    code: str
    count: NonNegative


class LatencyRow(_Base, frozen=True):
    """Apiserver-side latency of one verb and resource over the run (from buckets)."""

    verb: str
    resource: str
    """``pods``, ``pods/status``, ``leases.coordination.k8s.io``."""
    count: NonNegative
    p50: NonNegative | None
    p90: NonNegative | None
    p99: NonNegative | None
    first_bucket: NonNegative | None = None
    """Upper bound of the histogram's first bucket: a percentile at or below it only says
    "within the first bucket" (interpolation from 0 is no measurement), and the summary
    shows it as ``<= bound``."""


class StorageRow(_Base, frozen=True):
    """Stored objects of one resource before and after the run."""

    resource: str
    before: float
    after: float


class ApiserverSummary(_Base, frozen=True):
    """What the run cost the apiserver, from its ``/metrics`` before and after."""

    latency_family: str | None
    """The histogram the latencies come from (SLI, else SLO, else plain duration)."""
    requests_total: NonNegative
    requests_per_second: NonNegative
    requests_by_verb: dict[str, NonNegative]
    requests: list[RequestRow]
    latency: list[LatencyRow]
    inflight_peak: dict[str, float]
    """Highest ``apiserver_current_inflight_requests`` seen in any scrape, by kind."""
    watches_peak: NonNegative
    """Highest count of open watches seen in any scrape."""
    storage: list[StorageRow]
    """Resources whose stored object count changed."""
    scrapes: Count


class ComponentMemory(_Base, frozen=True):
    """One control-plane component's memory over a chaos scenario's window."""

    name: str
    """``kube-apiserver``, ``etcd``, or ``sandbox`` (the sandbox apiserver's own process)."""
    peak_rss_bytes: Count | None = None
    """Peak RSS of its processes, sampled from ``/proc`` (a control plane the bench started:
    its child processes); None: not a process the bench sees."""
    metrics_peak_bytes: Count | None = None
    """Peak of ``process_resident_memory_bytes`` read from its ``/metrics``; None: not
    exposed (the sandbox exposes no such gauge and has no etcd)."""


CHAOS_MEMORY_COMPONENTS = ("kube-apiserver", "etcd")
"""The components whose memory a chaos section always has a row for ("not exposed" when
nothing was measured)."""


class ChaosResult(_Base, frozen=True):
    """What a chaos scenario did to the control plane (restart-storm, node-flap, partition,
    pod-churn), from the disturbance's start until the cluster settled."""

    kind: str
    nodes_disturbed: Count
    """Nodes restarted, flapped or partitioned (0 for pod-churn)."""
    disturb_seconds: NonNegative
    """From the first disturbing write to the last (the whole flapping for node-flap)."""
    settle_seconds: NonNegative | None
    """From the end of the disturbance until every node was Ready, untainted and (restart-storm)
    had reported again; None: not within the timeout."""
    not_ready_peak: Count
    """Most of the run's nodes not Ready at once."""
    nodes_tainted: Count
    """Nodes that got the unreachable or not-ready NoExecute taint."""
    pods_evicted: Count
    """The run's pods deleted by the control plane (the bench deleted none of them)."""
    container_restarts: Count = 0
    """Sum of the run's pods' restartCounts at the end (pod-churn: CrashLoopBackOff)."""
    watch_requests: NonNegative | None = None
    """WATCH requests ``apiserver_request_total`` counted over the window. kube-apiserver
    counts a watch when it ends (its metrics handler records after the stream returns),
    and so does the sandbox: watches ended."""
    watches_started: NonNegative | None = None
    """Watches started over the window: those ended (:attr:`watch_requests`) plus the
    change in open watches (``apiserver_longrunning_requests``): watches restarted."""
    apiserver: ApiserverSummary | None = None
    """Requests and latencies by verb over the window (None: /metrics not read)."""
    memory: tuple[ComponentMemory, ...] = ()
    """kube-apiserver's and etcd's memory over the window (rows whose figures are None:
    not exposed), and the sandbox's process where it has one of its own."""


class TimelineSample(_Base, frozen=True):
    """One periodic sample while the scenario ran."""

    t: NonNegative
    """Seconds since the run started."""
    pods_by_phase: dict[str, Count]
    """The run's pods by phase (``Pending``, ``Running``, ``Terminating``, ...)."""
    nodes_ready: Count
    requests_by_verb: dict[str, NonNegative] | None = None
    """Cumulative apiserver request counters by verb at this time (None: scrape failed)."""
    inflight: dict[str, float] | None = None


class SloResult(_Base, frozen=True):
    """One row of the SLO table."""

    slo: str
    subject: str
    count: Count
    p99: NonNegative
    threshold: NonNegative
    passed: bool


class ProcessUsage(_Base, frozen=True):
    """CPU and memory of the fleet's own processes (those the bench started)."""

    pids: list[int]
    cpu_seconds: NonNegative
    peak_rss_bytes: Count


class ComponentUsage(_Base, frozen=True):
    """CPU and memory of one component of the machine under test, over the whole run."""

    name: str
    """``kube-apiserver``, ``etcd``, ``kube-controller-manager``, ``kube-scheduler``,
    ``control-plane`` (``up``'s scheduler and controllers), ``shard K``, or the bench's own
    process (named for what it holds, e.g. ``bench + coordinator``)."""
    pids: list[int]
    cpu_seconds: NonNegative
    peak_rss_bytes: Count


class CleanupResult(_Base, frozen=True):
    """What the bench deleted at the end, and whether anything was left."""

    deleted: Count
    leftover: Count
    errors: tuple[str, ...] = ()
    state: Literal["finished", "running", "interrupted"] = "finished"
    """``running``: the report was written when the steps were done, before the cleanup,
    and is written again when the cleanup ends (one that still says so was cut short
    before that: killed); ``deleted`` and ``leftover`` are not counted yet.
    ``interrupted``: a signal stopped the cleanup; ``leftover`` was counted after it."""


class PlotsInfo(_Base, frozen=True):
    written: tuple[str, ...] = ()
    """File names (relative to the report) of the PNGs written."""
    skipped: str | None = None
    """Why plots were not written (e.g. matplotlib is not installed)."""


class TargetInfo(_Base, frozen=True):
    server: str
    mode: Literal["sandbox", "real", "cluster"]
    """``sandbox``: the bench started its own sandbox; ``real``: its own real control plane
    (``--control-plane real``); ``cluster``: from a kubeconfig."""
    fleet: Literal["started", "external", "none"]
    """``started``: the bench ran the fleet itself; ``external``: one already drives the cluster;
    ``none``: no fleet (``--shards 0``), the apiserver alone."""
    traffic_profile: str | None = None
    """``shard.trafficProfile`` of the fleet the bench started (``lean`` or ``kubelet``);
    None: not the bench's fleet (external: its own settings), or none."""
    kubelet_events: bool | None = None
    """``shard.events`` of the fleet the bench started; None: not the bench's fleet, or none."""


class Report(_Base, frozen=True):
    """A bench run, everything in it (docs/bench.md, "Report schema")."""

    schema_version: Literal[1]
    """The schema this report follows (:data:`SCHEMA_VERSION`)."""
    tool: str
    run_id: str
    """Also the value of the ``bench.kubemock-fleet.io/run`` label on every object created."""
    scenario: str
    scenario_type: str
    parameters: dict[str, Any]
    """The scenario as run (after CLI overrides)."""
    target: TargetInfo
    started_at: str
    """RFC 3339, UTC."""
    duration_seconds: NonNegative
    steps: list[StepResult]
    pods_created: Count
    pods_running: Count
    """Distinct pods observed Running."""
    pods_deleted: Count
    nodes_created: Count
    nodes_ready: Count
    writes_per_second: NonNegative
    """The bench's own creates and deletes over their steps' time."""
    pod_startup: dict[str, Percentiles]
    """Client-observed pod startup, split as ClusterLoader2 does: ``create_to_schedule``,
    ``schedule_to_run``, ``run_to_watch``, ``pod_startup`` (create to watch)."""
    client_latency: dict[str, Percentiles]
    """Round trips of the bench's own calls by phase (``create pods``, ``delete pods``)."""
    apiserver: ApiserverSummary | None
    """None when ``/metrics`` could not be read (the report says why in ``notes``)."""
    slo: list[SloResult]
    slo_passed: bool
    """Every row passed (and there was at least one)."""
    timeline: list[TimelineSample]
    cleanup: CleanupResult
    fleet_usage: ProcessUsage | None = None
    components: list[ComponentUsage] = []
    """Every process sampled, by component (the apiserver's beside the fleet's and the
    bench's): empty when none was (a cluster elsewhere, no ``/proc``)."""
    plots: PlotsInfo = PlotsInfo()
    faults: list[FaultResult] = []
    """The ``faults`` scenario's faults, in the order injected (empty for other scenarios)."""
    chaos: ChaosResult | None = None
    """The chaos scenarios' section (None for the others)."""
    notes: tuple[str, ...] = ()
    completed: bool = True
    """False when the run was interrupted (Ctrl-C) or a step failed: figures are partial."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Report)


def report_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12), generated from the Structs."""
    return msgspec.json.schema(Report)


def validate(report: Report) -> bytes:
    """Encode ``report`` and check it against the schema; the JSON bytes."""
    data = _encoder.encode(report)
    try:
        _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InputError(f"bench report does not fit its schema: {exc}") from exc
    return data


def write_report(report: Report, path: Path) -> None:
    """Write ``report`` as indented JSON, validated first."""
    data = validate(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(data, indent=2) + b"\n")


def read_report(path: Path) -> Report:
    """Read and validate a report; refuse another schema version by name."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read report: {exc}") from exc
    try:
        head = msgspec.json.decode(raw, type=dict[str, Any])
    except msgspec.DecodeError as exc:
        raise InputError(f"{path}: not JSON: {exc}") from exc
    version = head.get("schemaVersion")
    if version != SCHEMA_VERSION:
        raise InputError(
            f"{path}: report schemaVersion {version!r}; this version reads {SCHEMA_VERSION}"
        )
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InputError(
            f"{path}: report does not fit schema version {SCHEMA_VERSION}: {exc}"
        ) from exc


# --------------------------------------------------------------------------- Markdown


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def _bucket_ms(seconds: float | None, first_bucket: float | None) -> str:
    """A percentile from a histogram: ``<= bound`` when it falls in the first bucket."""
    if seconds is not None and first_bucket is not None and seconds <= first_bucket:
        return f"<= {first_bucket * 1000:g} ms"
    return _ms(seconds)


def verdict(report: Report) -> str:
    """``PASS`` only when the run completed, every step reached its target and every SLO
    row passed; otherwise ``FAIL`` and what failed."""
    failed = [step.name for step in report.steps if not step.ok]
    reasons = []
    if failed:
        reasons.append(f"step{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed")
    if not report.completed and not failed:
        reasons.append("the run did not complete")
    if not report.slo_passed:
        reasons.append("SLOs failed" if report.slo else "no SLO rows")
    return "PASS" if not reasons else "FAIL (" + "; ".join(reasons) + ")"


def _cleanup_line(cleanup: CleanupResult) -> str:
    """The summary's line on the cleanup, which says when it did not finish."""
    if cleanup.state == "running":
        return (
            "Cleanup: still running when this report was written (the bench stopped before "
            "it wrote its outcome): objects of the run may be left."
        )
    counts = f"{cleanup.deleted} deleted, {cleanup.leftover} left over."
    return (
        f"Cleanup interrupted: {counts}" if cleanup.state == "interrupted" else f"Cleanup: {counts}"
    )


def _components_table(report: Report) -> list[str]:
    """CPU-seconds per component and step, the whole run, and peak RSS."""
    steps = [step.name for step in report.steps]
    out = [
        "## CPU by component",
        "",
        "| component | "
        + " | ".join(f"{name} CPU-s" for name in steps)
        + " | whole run CPU-s | peak RSS MiB |",
        "|---|" + "---|" * (len(steps) + 2),
    ]
    for c in sorted(report.components, key=lambda c: -c.cpu_seconds):
        cells = [f"{step.cpu_seconds.get(c.name, 0.0):.1f}" for step in report.steps]
        out.append(
            f"| {c.name} | "
            + " | ".join([*cells, f"{c.cpu_seconds:.1f}"])
            + f" | {c.peak_rss_bytes / 2**20:.0f} |"
        )
    totals = [f"{sum(step.cpu_seconds.values()):.1f}" for step in report.steps]
    whole = sum(c.cpu_seconds for c in report.components)
    seconds = [f"{step.seconds:.1f}" for step in report.steps]
    out.append("| **all** | " + " | ".join([*totals, f"{whole:.1f}"]) + " | |")
    out.append(
        "| (wall-clock s) | " + " | ".join([*seconds, f"{report.duration_seconds:.1f}"]) + " | |"
    )
    cores = os.cpu_count() or 1
    busy = [
        f"{sum(step.cpu_seconds.values()) / step.seconds:.2f}" if step.seconds > 0 else "-"
        for step in report.steps
    ]
    # What the cluster itself spent, spread over every core: no fleet, however cheap, makes
    # a step shorter than this on this machine (the step was CPU-bound if cores were busy).
    floor = [
        f"{sum(v for k, v in step.cpu_seconds.items() if k in CONTROL_PLANE_COMPONENTS) / cores:.1f}"
        for step in report.steps
    ]
    out.append(f"| (cores busy, of {cores}) | " + " | ".join([*busy, ""]) + " | |")
    out.append(
        f"| (control plane's CPU-s / {cores} cores: the step's floor, s) | "
        + " | ".join([*floor, ""])
        + " | |"
    )
    return out


def _mib_or_not_exposed(value: int | None) -> str:
    return "not exposed" if value is None else f"{value / 2**20:.0f}"


def _memory_table(memory: tuple[ComponentMemory, ...]) -> list[str]:
    """kube-apiserver's and etcd's rows always ("not exposed" where nothing was read)."""
    rows = {row.name: row for row in memory}
    for name in CHAOS_MEMORY_COMPONENTS:
        rows.setdefault(name, ComponentMemory(name=name))
    ordered = [rows[n] for n in CHAOS_MEMORY_COMPONENTS] + [
        row for n, row in rows.items() if n not in CHAOS_MEMORY_COMPONENTS
    ]
    out = [
        "| memory over the window | peak RSS MiB (/proc) | peak process_resident_memory_bytes MiB "
        "(/metrics) |",
        "|---|---:|---:|",
    ]
    for row in ordered:
        out.append(
            f"| {row.name} | {_mib_or_not_exposed(row.peak_rss_bytes)} | "
            f"{_mib_or_not_exposed(row.metrics_peak_bytes)} |"
        )
    return out


def _chaos_section(chaos: ChaosResult) -> list[str]:
    settle = (
        f"{chaos.settle_seconds:.1f} s" if chaos.settle_seconds is not None else "**not settled**"
    )
    out = [
        f"## Chaos: {chaos.kind}",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| nodes disturbed | {chaos.nodes_disturbed} |",
        f"| disturbance (s) | {chaos.disturb_seconds:.1f} |",
        f"| settled after the disturbance | {settle} |",
        f"| NotReady nodes at peak | {chaos.not_ready_peak} |",
        f"| nodes tainted unreachable / not-ready | {chaos.nodes_tainted} |",
        f"| pods evicted | {chaos.pods_evicted} |",
        f"| container restarts | {chaos.container_restarts} |",
        "| watches ended (WATCH requests counted) | "
        + (f"{chaos.watch_requests:.0f}" if chaos.watch_requests is not None else "n/a")
        + " |",
        "| watches started (ended + change in open watches) | "
        + (f"{chaos.watches_started:.0f}" if chaos.watches_started is not None else "n/a")
        + " |",
    ]
    out += ["", *_memory_table(chaos.memory)]
    api = chaos.apiserver
    if api is None:
        return out
    out += [
        "",
        f"Over the disturbance and settling: {api.requests_total:.0f} requests, "
        f"{api.requests_per_second:.1f}/s; by verb (per second): "
        + ", ".join(
            f"{verb} {count / max(api.requests_total, 1) * api.requests_per_second:.1f}"
            for verb, count in sorted(api.requests_by_verb.items())
        ),
        "",
        "| verb resource | count | p50 | p99 |",
        "|---|---:|---:|---:|",
    ]
    for row in api.latency:
        out.append(
            f"| {row.verb} {row.resource} | {row.count:.0f} | "
            f"{_bucket_ms(row.p50, row.first_bucket)} | {_bucket_ms(row.p99, row.first_bucket)} |"
        )
    return out


def summary_markdown(report: Report) -> str:
    """A human summary of ``report`` (what ``summary.md`` holds)."""
    out = [f"# Bench `{report.scenario}` ({report.scenario_type})", ""]
    out.append(
        f"- run `{report.run_id}` at {report.started_at}, {report.duration_seconds:.1f} s, "
        f"against {report.target.mode} `{report.target.server}` (fleet {report.target.fleet}"
        + (
            f", traffic profile {report.target.traffic_profile}"
            if report.target.traffic_profile
            else ""
        )
        + (
            f", kubelet Events {'on' if report.target.kubelet_events else 'off'}"
            if report.target.kubelet_events is not None
            else ""
        )
        + ")"
    )
    if not report.completed:
        out.append("- **incomplete run**: figures are partial")
    out.append(
        f"- nodes: {report.nodes_created} created, {report.nodes_ready} Ready; pods: "
        f"{report.pods_created} created, {report.pods_running} Running, {report.pods_deleted} deleted"
    )
    out.append(f"- bench writes/s: {report.writes_per_second:.1f}")
    failed = [step for step in report.steps if not step.ok]
    out += ["", f"## Result: {verdict(report)}"]
    if failed:
        out += [
            "",
            *[f"- step {step.name} FAILED: {step.reason or 'see notes'}" for step in failed],
        ]
    out += [
        "",
        f"## SLOs: {'PASS' if report.slo_passed else 'FAIL'}",
        "",
        "| SLO | subject | samples | p99 | threshold | result |",
        "|---|---|---:|---:|---:|---|",
    ]
    for slo in report.slo:
        out.append(
            f"| {slo.slo} | {slo.subject} | {slo.count} | {_ms(slo.p99)} | {_ms(slo.threshold)} | "
            f"{'pass' if slo.passed else '**FAIL**'} |"
        )
    if not report.slo:
        out.append("| (no rows: nothing measured) | | | | | |")
    out += [
        "",
        "## Steps",
        "",
        "| step | target | reached | seconds | per second | ok |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for step in report.steps:
        out.append(
            f"| {step.name} | {step.target} | {step.reached} | {step.seconds:.2f} | "
            f"{step.per_second:.1f} | {'yes' if step.ok else f'**no**: {step.reason}'} |"
        )
    if report.faults:
        out += [
            "",
            "## Faults",
            "",
            "| fault | tried | did | fault s | settle s | moves | crashes | notReady | regressed "
            "| restarted | twoDrivers | lost | ok |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for f in report.faults:
            cells = " | ".join(str(v) for v in f.counts().values())
            out.append(
                f"| {f.name} | {f.tried} | {f.did} | {f.fault_seconds:.1f} | "
                f"{f.settle_seconds:.1f} | {f.moves} | {cells} | "
                f"{'yes' if f.ok else f'**no**: {f.reason}'} |"
            )
    if report.chaos is not None:
        out += ["", *_chaos_section(report.chaos)]
    if report.pod_startup:
        out += [
            "",
            "## Pod startup (client-observed)",
            "",
            "| phase | count | p50 | p90 | p99 |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, p in report.pod_startup.items():
            out.append(f"| {name} | {p.count} | {_ms(p.p50)} | {_ms(p.p90)} | {_ms(p.p99)} |")
    api = report.apiserver
    if api is not None:
        out += [
            "",
            f"## Apiserver ({api.latency_family or 'no latency histogram'})",
            "",
            f"{api.requests_total:.0f} requests, {api.requests_per_second:.1f}/s; "
            f"peak watches {api.watches_peak:.0f}; peak inflight "
            + (", ".join(f"{k} {v:.0f}" for k, v in sorted(api.inflight_peak.items())) or "n/a"),
            "",
            "| verb resource | count | p50 | p90 | p99 |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in api.latency:
            out.append(
                f"| {row.verb} {row.resource} | {row.count:.0f} | "
                f"{_bucket_ms(row.p50, row.first_bucket)} | "
                f"{_bucket_ms(row.p90, row.first_bucket)} | {_bucket_ms(row.p99, row.first_bucket)} |"
            )
        if any(
            row.first_bucket is not None
            and any(v is not None and v <= row.first_bucket for v in (row.p50, row.p90, row.p99))
            for row in api.latency
        ):
            out += [
                "",
                "`<= x ms`: within the histogram's first bucket, which holds no finer measure.",
            ]
    if report.fleet_usage is not None:
        u = report.fleet_usage
        out += [
            "",
            f"Fleet processes {u.pids}: {u.cpu_seconds:.2f} CPU-s, peak RSS "
            f"{u.peak_rss_bytes / 2**20:.1f} MiB",
        ]
    if report.components:
        out += ["", *_components_table(report)]
    out += ["", _cleanup_line(report.cleanup)]
    if report.plots.written:
        out += ["", *[f"![{name}]({name})" for name in report.plots.written]]
    elif report.plots.skipped:
        out += ["", f"Plots skipped: {report.plots.skipped}"]
    if report.notes:
        out += ["", "## Notes", "", *[f"- {note}" for note in report.notes]]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots


def write_plots(report: Report, directory: Path) -> PlotsInfo:
    """Write the PNG plots beside the report; say why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PlotsInfo(
            skipped="matplotlib is not installed (pip install 'kubemock-fleet[plots]')"
        )
    directory.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    samples = report.timeline
    if samples:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        phases = sorted({phase for s in samples for phase in s.pods_by_phase})
        times = [s.t for s in samples]
        for phase in phases:
            ax.plot(times, [s.pods_by_phase.get(phase, 0) for s in samples], label=phase)
        ax.plot(times, [s.nodes_ready for s in samples], label="nodes Ready", linestyle="--")
        ax.set(xlabel="seconds", ylabel="objects", title=f"{report.scenario}: pods by phase")
        ax.legend(loc="best")
        fig.savefig(directory / "pods-by-phase.png", dpi=100)
        plt.close(fig)
        written.append("pods-by-phase.png")

        scraped = [s for s in samples if s.requests_by_verb is not None]
        if len(scraped) >= 2:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            verbs = sorted({v for s in scraped for v in (s.requests_by_verb or {})})
            mids = [(a.t + b.t) / 2 for a, b in itertools.pairwise(scraped)]
            for verb in verbs:
                rates = []
                for a, b in itertools.pairwise(scraped):
                    dt = max(b.t - a.t, 1e-9)
                    ra, rb = (
                        (a.requests_by_verb or {}).get(verb, 0.0),
                        (b.requests_by_verb or {}).get(verb, 0.0),
                    )
                    rates.append(max(rb - ra, 0.0) / dt)
                ax.plot(mids, rates, label=verb)
            ax.set(xlabel="seconds", ylabel="requests/s", title="apiserver requests/s by verb")
            ax.legend(loc="best")
            fig.savefig(directory / "apiserver-requests.png", dpi=100)
            plt.close(fig)
            written.append("apiserver-requests.png")

    rows: list[tuple[str, float, float, float]] = [
        (f"pod {name}", p.p50, p.p90, p.p99) for name, p in report.pod_startup.items()
    ]
    if report.apiserver is not None:
        rows += [
            (f"{r.verb} {r.resource}", r.p50 or 0.0, r.p90 or 0.0, r.p99 or 0.0)
            for r in report.apiserver.latency
        ]
    if rows:
        fig, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * len(rows) + 1.5)))
        ys = list(range(len(rows)))
        height = 0.27
        for offset, (label, index) in enumerate((("p50", 1), ("p90", 2), ("p99", 3))):
            ax.barh(
                [y + (offset - 1) * height for y in ys],
                [r[index] * 1000 for r in rows],
                height=height,
                label=label,
            )
        ax.set_yticks(ys, [r[0] for r in rows])
        ax.invert_yaxis()
        ax.set(xlabel="milliseconds", title="latency percentiles")
        ax.legend(loc="best")
        fig.tight_layout()
        fig.savefig(directory / "latency-percentiles.png", dpi=100)
        plt.close(fig)
        written.append("latency-percentiles.png")
    return PlotsInfo(written=tuple(written))
