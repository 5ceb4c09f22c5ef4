"""The transport micro-benchmark runs end to end and reports a well-formed result.

Tiny request counts: this checks the plumbing (server process, one process per
case, JSON shape), never timing thresholds, which only mean something on a
quiet machine with real request counts (docs/performance.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.transport import BenchResult, CaseResult, format_table
from fleet.cli import app
from fleet.errors import InputError


def test_bench_transport_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "transport",
            "--requests",
            "40",
            "--repeats",
            "2",
            "--inflight",
            "1",
            "--inflight",
            "4",
            "--json",
            "--output",
            str(tmp_path),
            "--client",
            "httpx",
            "--client",
            "hot",
            "--client",
            "h11",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # Progress on stderr, one line per case as it starts: never silent.
    assert result.stderr.splitlines() == [
        f"bench: case {i}/6: {client}, {level} in flight (2 x 40 requests)"
        for i, (client, level) in enumerate(
            [(c, n) for c in ("httpx", "hot", "h11") for n in (1, 4)], start=1
        )
    ]
    assert json.loads((tmp_path / "transport.json").read_text()) == report
    assert set(report) == {"machine", "python", "command", "cases"}
    assert "--inflight 4" in report["command"]
    cases = {(case["client"], case["inflight"]): case for case in report["cases"]}
    assert set(cases) == {(c, n) for c in ("httpx", "hot", "h11") for n in (1, 4)}
    for case in cases.values():
        assert case["requests"] == 40
        assert case["cpu_us_per_request"] > 0
        assert case["peak_rss_mib"] > 0
        assert case["wall_s"] > 0


def test_bench_transport_table() -> None:
    cases = [
        CaseResult("httpx", 16, 10, 800.0, 35.0, 1.0),
        CaseResult("hot", 16, 10, 40.0, 30.0, 0.1),
    ]
    table = format_table(BenchResult("x86_64, 2 cores", "3.11", "cmd", cases))
    assert "| httpx | 800 µs | 35 MiB |" in table
    assert "| hot | 40 µs | 30 MiB |" in table
    assert "16: 20.0x" in table


def test_bench_rejects_unknown_scenario_and_client() -> None:
    assert CliRunner().invoke(app, ["bench", "sandbox-load"]).exit_code != 0
    result = CliRunner().invoke(app, ["bench", "transport", "--client", "curl"])
    assert isinstance(result.exception, InputError)
