"""The shard benchmark runs end to end and reports a well-formed result.

A tiny population (a few nodes and pods, seconds of steady state): this checks
the plumbing (stub apiserver and shard in their own processes, JSON shape,
figures present and positive), never the issue's thresholds, which only mean
something at full size on a quiet machine (docs/performance.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bench.shard import BenchResult, RunningCase, format_report
from fleet.cli import app

STEADY = 3
"""Seconds of steady state (also the settle and idle windows): the shard renews its own Lease
every 2 s, so one renewal falls in it with a second to spare."""
SCRAPE_INTERVAL = 11
"""Seconds between scrape rounds, and so of the idle and the scraped windows: each holds a
renewal of every node Lease (every 10 s, jittered by 4 %), which the lateness is read from
(metrics-server's default is 15 s)."""


def test_bench_shard_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "shard",
            "--nodes",
            "8",
            "--pods",
            "40",
            "--duration",
            str(STEADY),
            "--json",
            "--output",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    progress = result.stderr.splitlines()  # one line per case as it starts
    assert progress[0].startswith(
        f"bench: steady: 8 nodes, 40 pods: start-up, then {STEADY} s measured"
    )
    assert progress[1] == "bench: running: 40 pods bound -> Running on 8 nodes, 3 times"
    assert json.loads((tmp_path / "shard.json").read_text()) == report
    assert set(report) == {"machine", "python", "command", "load", "steady", "running", "scrape"}
    assert report["scrape"] is None
    assert f"--nodes 8 --pods 40 --duration {STEADY}" in report["command"]
    steady = report["steady"]
    assert (steady["nodes"], steady["pods"]) == (8, 40)
    for key in (
        "registered_s",
        "registered_cpu_s",
        "running_s",
        "running_cpu_s",
        "duration_s",
        "rss_mib",
        "peak_rss_mib",
    ):
        assert steady[key] > 0, key
    assert steady["cpu_percent"] >= 0 and steady["writes_per_s"] > 0
    assert steady["requests"]["shard_lease_write"] > 0  # the shard's own Lease, every 2 s
    assert steady["renewals_missed_shard"] == 0
    running = report["running"]
    assert (running["nodes"], running["pods"], running["repeats"]) == (8, 40, 3)
    assert running["cpu_s"] > 0 and running["wall_s"] > 0 and running["peak_rss_mib"] > 0
    assert len(running["all_cpu_s"]) == 3


def test_bench_shard_scrape_json(tmp_path: Path) -> None:
    # metrics-server's scrape against the shard's kubelet API: every node answered, each
    # round, and the shard's CPU for it measured net of its Leases
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "shard-scrape",
            "--nodes",
            "6",
            "--pods",
            "30",
            "--duration",
            "2",
            "--scrape-interval",
            str(SCRAPE_INTERVAL),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["steady"] is None and report["running"] is None
    assert report["command"] == (  # two rounds at least: one interval scraped
        "kubemock-fleet bench shard-scrape --nodes 6 --pods 30 "
        f"--duration {SCRAPE_INTERVAL} --scrape-interval {SCRAPE_INTERVAL}"
    )
    scrape = report["scrape"]
    assert (scrape["nodes"], scrape["pods"], scrape["rounds"]) == (6, 30, 2)
    assert scrape["failed"] == 0 and len(scrape["round_wall_s"]) == 2
    assert scrape["bytes_per_node"] > 500  # 5 pods' and a node's series
    assert scrape["renewals_scraped"] > 0  # (its CPU, a few ms, is below /proc's 10 ms tick)
    assert scrape["late_scraped_shard"] == 0


def test_bench_shard_report_rows() -> None:
    running = RunningCase(1000, 10000, 3, 4.5, 4.0, 6.0, 2.5, 90.0, [4.5, 4.7, 4.6])
    text = format_report(BenchResult("x86_64, 2 cores", "3.11", "cmd", "load", None, running))
    assert "| 10,000 pods bound -> Running (1,000 nodes, min of 3) | 4.50 s CPU" in text
    assert "<= 10 s CPU" in text


def test_memprobe_reports_what_the_shard_holds() -> None:
    from bench._memprobe import probe

    # Enough pods for the shard's own allocations to stand out of the top 40 lines: with
    # 60, one line of them came 38th, behind start-up's imports (more kinds, more imports).
    report = probe(6, 300, frames=1, settle=0.5)
    assert (report["nodes"], report["pods"]) == (6, 300)
    assert 0 < report["end_rss_mib"] <= report["peak_rss_mib"]
    assert report["running_s"] >= report["registered_s"] > 0
    held = dict(report["own_types"])
    assert held["PodRecord"] == 300 and held["NodeState"] == 6
    assert report["traced_mib"] > 0
    assert any("shards/" in line for line, _mib, _count in report["lines"])
