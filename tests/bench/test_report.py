"""The report schema: round trip, validation on write and read, Markdown, plots with and without matplotlib."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pytest

from bench import (
    SCHEMA_VERSION,
    Report,
    read_report,
    report_schema,
    summary_markdown,
    verdict,
    write_plots,
    write_report,
)
from bench._report import (
    ApiserverSummary,
    CleanupResult,
    ComponentUsage,
    FaultResult,
    LatencyRow,
    Percentiles,
    SloResult,
    StepResult,
    TargetInfo,
    TimelineSample,
)
from fleet.errors import InputError


def _report() -> Report:
    return Report(
        schema_version=1,
        tool="kubemock-fleet test",
        run_id="abcd1234",
        scenario="pod-startup",
        scenario_type="pod-startup",
        parameters={"nodes": 2, "pods": 4},
        target=TargetInfo(server="https://127.0.0.1:6443", mode="sandbox", fleet="started"),
        started_at="2024-05-01T10:00:00Z",
        duration_seconds=3.5,
        steps=[
            StepResult(
                name="nodes-ready", seconds=0.5, target=2, reached=2, ok=True, per_second=4.0
            )
        ],
        pods_created=4,
        pods_running=4,
        pods_deleted=0,
        nodes_created=2,
        nodes_ready=2,
        writes_per_second=12.0,
        pod_startup={"pod_startup": Percentiles(count=4, p50=0.5, p90=0.9, p99=1.2)},
        client_latency={"create pods": Percentiles(count=4, p50=0.01, p90=0.02, p99=0.03)},
        apiserver=ApiserverSummary(
            latency_family="apiserver_request_sli_duration_seconds",
            requests_total=20,
            requests_per_second=5,
            requests_by_verb={"POST": 6, "GET": 14},
            requests=[],
            latency=[
                LatencyRow(verb="POST", resource="pods", count=4, p50=0.01, p90=0.02, p99=0.03)
            ],
            inflight_peak={"mutating": 2},
            watches_peak=3,
            storage=[],
            scrapes=3,
        ),
        slo=[
            SloResult(
                slo="pod-startup-latency",
                subject="pods",
                count=4,
                p99=1.2,
                threshold=5,
                passed=True,
            )
        ],
        slo_passed=True,
        timeline=[
            TimelineSample(t=0, pods_by_phase={}, nodes_ready=0, requests_by_verb={"GET": 1}),
            TimelineSample(
                t=1, pods_by_phase={"Running": 4}, nodes_ready=2, requests_by_verb={"GET": 9}
            ),
        ],
        cleanup=CleanupResult(deleted=6, leftover=0),
    )


def test_round_trip(tmp_path: Path) -> None:
    report = _report()
    write_report(report, tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schemaVersion"] == SCHEMA_VERSION
    assert data["podStartup"]["pod_startup"]["p99"] == 1.2
    assert read_report(tmp_path / "report.json") == report


def test_invalid_report_is_refused_on_write_and_read(tmp_path: Path) -> None:
    bad = msgspec.structs.replace(_report(), pods_created=-1)
    with pytest.raises(InputError, match="podsCreated"):
        write_report(bad, tmp_path / "bad.json")
    path = tmp_path / "report.json"
    write_report(_report(), path)
    data = json.loads(path.read_text())
    data["schemaVersion"] = 2
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="schemaVersion 2; this version reads 1"):
        read_report(path)
    data["schemaVersion"] = 1
    data["surprise"] = True
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="surprise"):
        read_report(path)


def test_json_schema_names_the_fields() -> None:
    schema = report_schema()
    props = schema["$defs"]["Report"]["properties"]
    assert {"schemaVersion", "runId", "steps", "apiserver", "slo", "timeline", "cleanup"} <= set(
        props
    )


def test_markdown_summary() -> None:
    text = summary_markdown(_report())
    assert "## SLOs: PASS" in text
    assert "| pod-startup-latency | pods | 4 | 1200.0 ms | 5000.0 ms | pass |" in text
    assert "| nodes-ready | 2 | 2 | 0.50 | 4.0 | yes |" in text


def test_plots_written(tmp_path: Path) -> None:
    info = write_plots(_report(), tmp_path)
    assert info.written == (
        "pods-by-phase.png",
        "apiserver-requests.png",
        "latency-percentiles.png",
    )
    for name in info.written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_skipped_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    info = write_plots(_report(), tmp_path)
    assert info.written == ()
    assert info.skipped is not None and "matplotlib is not installed" in info.skipped
    assert list(tmp_path.iterdir()) == []


def test_a_failed_step_is_not_next_to_a_bare_pass_and_says_why() -> None:
    """The result names the failed step and its reason, whatever the SLOs say."""
    report = _report()
    failed = StepResult(
        name="pods-running",
        seconds=5.0,
        target=10,
        reached=7,
        ok=False,
        reason="7 of 10 reached within the 5 s timeout",
    )
    report = msgspec.structs.replace(report, steps=[*report.steps, failed], completed=False)
    assert report.slo_passed
    assert verdict(report) == "FAIL (step pods-running failed)"
    text = summary_markdown(report)
    assert "## Result: FAIL (step pods-running failed)" in text
    assert "- step pods-running FAILED: 7 of 10 reached within the 5 s timeout" in text
    assert "| pods-running | 10 | 7 | 5.00 | 1.4 | **no**: 7 of 10 reached within" not in text
    assert "**no**: 7 of 10 reached within the 5 s timeout |" in text
    assert verdict(_report()) == "PASS"


def test_latencies_within_the_first_bucket_are_shown_as_its_bound() -> None:
    report = _report()
    assert report.apiserver is not None
    rows = [
        LatencyRow(
            verb="PATCH",
            resource="pods/status",
            count=100,
            p50=0.002,
            p90=0.004,
            p99=0.03,
            first_bucket=0.005,
        )
    ]
    api = msgspec.structs.replace(report.apiserver, latency=rows)
    text = summary_markdown(msgspec.structs.replace(report, apiserver=api))
    assert "| PATCH pods/status | 100 | <= 5 ms | <= 5 ms | 30.0 ms |" in text
    assert "`<= x ms`: within the histogram's first bucket" in text


def _fault(name: str, **counts: int) -> FaultResult:
    values = {
        "crashes": 0, "not_ready": 0, "regressed": 0, "restarted": 0, "two_drivers": 0, "lost": 0,
        **counts,
    }  # fmt: skip
    bad = ", ".join(f"{k}={v}" for k, v in values.items() if v)
    return FaultResult(
        name=name,
        tried="apiserver silent for 8 s (SIGSTOP)",
        did="12 connections opened and held meanwhile",
        fault_seconds=8.0,
        settle_seconds=3.5,
        moves=0,
        ok=not bad,
        reason=f"non-zero: {bad}" if bad else "",
        **values,
    )


def test_faults_round_trip_and_show_their_counts(tmp_path: Path) -> None:
    """A faults report keeps each fault's counts; the summary tables them, a failed one with
    why; the console line names every count."""
    report = msgspec.structs.replace(
        _report(), faults=[_fault("pause"), _fault("restart", not_ready=3, two_drivers=1)]
    )
    write_report(report, tmp_path / "report.json")
    assert read_report(tmp_path / "report.json") == report
    assert json.loads((tmp_path / "report.json").read_text())["faults"][1]["twoDrivers"] == 1
    text = summary_markdown(report)
    assert "## Faults" in text
    assert "| pause | apiserver silent for 8 s (SIGSTOP) | 12 connections opened" in text
    assert "| 0 | 3 | 0 | 0 | 1 | 0 | **no**: non-zero: not_ready=3, two_drivers=1 |" in text
    line = report.faults[1].line()
    assert "crashes=0 notReady=3 regressed=0 restarted=0 twoDrivers=1 lost=0" in line
    assert line.endswith("FAILED: non-zero: not_ready=3, two_drivers=1")
    assert "faults" not in summary_markdown(_report()).lower()


def test_cpu_table_shows_how_busy_the_cores_were_and_the_control_planes_floor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whether a step was CPU-bound, and the shortest it could be on this machine with no
    fleet at all: the control plane's own CPU spread over every core."""
    monkeypatch.setattr("bench._report.os.cpu_count", lambda: 2)
    step = StepResult(
        name="pods-running", seconds=10.0, target=4, reached=4, ok=True, per_second=0.4,
        cpu_seconds={"kube-apiserver": 9.0, "etcd": 1.0, "kube-scheduler": 4.0, "shard 0": 5.0},
    )  # fmt: skip
    usage = [
        ComponentUsage(name=name, pids=[1], cpu_seconds=cpu, peak_rss_bytes=2**20)
        for name, cpu in step.cpu_seconds.items()
    ]
    report = msgspec.structs.replace(_report(), steps=[step], components=usage)
    rows = {
        line.split(" | ")[0]: line.split(" | ")[1]
        for line in summary_markdown(report).splitlines()
        if line.startswith("| (")
    }
    assert rows["| (cores busy, of 2)"] == "1.90"
    assert rows["| (control plane's CPU-s / 2 cores: the step's floor, s)"] == "7.0"
