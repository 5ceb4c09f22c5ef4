"""The sandbox benchmark runs end to end and reports a well-formed result.

Tiny counts: this checks the plumbing (a server process, client processes,
server CPU read from /proc, the watch case's in-server writer, JSON shape),
never timing thresholds, which only mean something with real counts
(docs/performance.md, "Sandbox apiserver").
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.sandbox import PatchCase, SandboxBenchResult, WatchCase, format_report
from fleet.cli import app
from fleet.errors import InputError


def test_bench_sandbox_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "sandbox",
            "--requests",
            "40",
            "--repeats",
            "2",
            "--inflight",
            "2",
            "--scheme",
            "http",
            "--watchers",
            "2",
            "--events",
            "50",
            "--rate",
            "1000",
            "--json",
            "--output",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert result.stderr.splitlines() == [  # progress, one line per case
        "bench: case 1/4: PATCH, empty app, lean http, 2 in flight",
        "bench: case 2/4: PATCH lease, lean http, 2 in flight",
        "bench: case 3/4: PATCH pod-status, lean http, 2 in flight",
        "bench: case 4/4: watch, lean http, 2 watchers, 1000 writes/s",
    ]
    assert json.loads((tmp_path / "sandbox.json").read_text()) == report
    assert set(report) == {"machine", "python", "command", "load", "patch", "watch"}
    assert "--inflight 2" in report["command"]
    cases = {(c["app"], c["body"]): c for c in report["patch"]}
    assert set(cases) == {("empty", "lease"), ("sandbox", "lease"), ("sandbox", "pod-status")}
    for case in cases.values():
        assert case["server"] == "lean" and case["scheme"] == "http" and case["inflight"] == 2
        assert case["requests"] == 40
        assert case["patches_per_s"] > 0
        assert case["server_cpu_us_per_patch"] >= 0  # /proc counts CPU in 10 ms ticks
        assert case["client_cpu_us_per_patch"] > 0
        assert case["server_peak_rss_mib"] > 0
    [watch] = report["watch"]
    assert watch["watchers"] == 2 and watch["events"] == 50 and watch["target_rate"] == 1000
    assert watch["write_rate"] > 0
    assert watch["events_per_s_per_watcher"] > 0
    assert isinstance(watch["kept_up"], bool)
    assert watch["server_peak_rss_mib"] > 0


def test_bench_sandbox_report() -> None:
    patch = PatchCase("sandbox", "lean", "http", "lease", 16, 5000, 4000.0, 200.0, 0.8, 40.0, 60.0)
    watch = WatchCase(
        "lean", "http", 10, 20000, 10000, 10000.0, 9990.0, True, 3.0, 50.0, 0.5, 1.2, 70.0
    )
    text = format_report(
        SandboxBenchResult("x86_64, 2 cores", "3.11", "cmd", "load average 1", [patch], [watch])
    )
    assert "| lean | sandbox | http | lease | 16 | 4,000 | 200 µs | 5,000 |" in text
    assert "| lean | http | 10 | 10000 | 10,000 | 9,990 | yes |" in text


def test_bench_sandbox_rejects_bad_options() -> None:
    result = CliRunner().invoke(app, ["bench", "sandbox", "--scheme", "gopher"])
    assert isinstance(result.exception, InputError)
