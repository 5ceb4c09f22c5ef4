"""The shard benchmark runs end to end and reports a well-formed result.

A tiny population (a few nodes and pods, seconds of steady state): this checks
the plumbing (stub apiserver and shard in their own processes, JSON shape,
figures present and positive), never the issue's thresholds, which only mean
something at full size on a quiet machine (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench.shard import (
    BenchResult,
    RunningCase,
    SteadyCase,
    _Pair,
    _sockets,
    format_report,
    load_policy,
)
from fleet.cli import app
from fleet.errors import InputError

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
    assert set(report) == {
        "machine",
        "python",
        "command",
        "load",
        "steady",
        "running",
        "scrape",
        "traffic_profile",
        "policy",
    }
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
    # lean: no kubelet reads, no node connections (the stub's HTTP/1.1 path, as before)
    assert report["traffic_profile"] == "lean" and "--traffic-profile" not in report["command"]
    assert steady["stub_connections"]["h2"] == 0
    assert not {"node_get", "csinode_get", "services_watch"} & set(steady["requests"])
    assert steady["per_node_per_minute"]["shard_lease_write"] > 0
    assert steady["sockets"] > 0
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


KUBELET_KINDS = (
    "runtimeclasses_list",
    "runtimeclasses_watch",
    "csidrivers_list",
    "csidrivers_watch",
    "services_list",
    "services_watch",
    "node_own_list",
    "node_own_watch",
    "pods_node_list",
    "pods_node_watch",
    "configmaps_list",
    "configmaps_watch",
    "csinode_get",
    "csinode_post",
)
"""What each node of the kubelet profile sends the stub once at start-up (shards._traffic)."""
POLICY = {
    "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
    "kind": "MockStatus",
    "metadata": {"name": "every-pod", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "bench"}},
        "steps": [{"after": "0s", "phase": "Running"}],
    },
}


def test_bench_shard_kubelet_profile_starts_every_nodes_informers() -> None:
    # 20 nodes: each lists and watches what a kubelet does, over ONE HTTP/2 connection of its
    # own (h2c to the stub), and creates its CSINode; the stub lists the policy it was given.
    nodes = 20
    pair = _Pair(nodes, 2 * nodes, traffic_profile="kubelet", policy=[POLICY])
    try:

        def started(stats: dict[str, Any]) -> bool:
            totals = stats["totals"]
            return all(totals.get(kind, 0) >= nodes for kind in KUBELET_KINDS)

        stats = pair.wait_for(started, 60, "every node's informers")
        assert stats["connections"]["h2"] == nodes
        assert stats["unknown"] == ["GET /version"]  # the shard's server check, as in lean
        assert _sockets(pair.shard.pid) >= nodes + 1  # its node connections and its pool
        listed = pair.stub_call(f"/apis/{POLICY['apiVersion']}/mockstatuses")
        assert listed["items"] == [POLICY]
    finally:
        pair.stop()


def test_bench_shard_kubelet_profile_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "shard",
            "--nodes",
            "6",
            "--pods",
            "12",
            "--duration",
            "2",
            "--traffic-profile",
            "kubelet",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["traffic_profile"] == "kubelet"
    assert report["command"].endswith("--duration 2 --traffic-profile kubelet")
    steady = report["steady"]
    assert steady["stub_connections"]["h2"] == 6  # one per node, held in steady state
    assert steady["sockets"] >= 7


def test_bench_shard_policy_file(tmp_path: Path) -> None:
    multi = tmp_path / "policies.yaml"
    multi.write_text(
        json.dumps(POLICY) + "\n---\n" + json.dumps({**POLICY, "metadata": {"name": "b"}})
    )
    assert [o["metadata"]["name"] for o in load_policy(multi)] == ["every-pod", "b"]
    as_list = tmp_path / "policies.json"
    as_list.write_text(json.dumps({"kind": "List", "items": [POLICY]}))
    assert load_policy(as_list) == [POLICY]
    bad = tmp_path / "bad.yaml"
    for text, fault in (
        ("kind: MockStatus\nspec: [", r"not YAML or JSON \(line 2\)"),
        ("", "no MockStatus in it"),
        ('{"kind": "Pod"}', "object 1 is a Pod, not a MockStatus"),
        (json.dumps({**POLICY, "spec": {"steps": "soon"}}), "object 1: spec.steps: "),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"^--policy .*bad.yaml: " + fault):
            load_policy(bad)
    # on the command line: one line naming the fault (fleet.cli's main prints it), before any
    # process starts
    for args, message in (
        (["shard", "--nodes", "2", "--policy", str(bad)], "bad.yaml: object 1: spec.steps: "),
        (["shard", "--policy", str(tmp_path / "none.yaml")], "none.yaml: cannot read it"),
        (["transport", "--policy", str(multi)], "--policy is for bench shard only"),
    ):
        result = CliRunner().invoke(app, ["bench", *args])
        assert isinstance(result.exception, InputError), result.output
        assert message in str(result.exception) and "\n" not in str(result.exception)


def test_bench_shard_report_names_the_profile_and_sockets() -> None:
    fields: dict[str, Any] = {name: 0 for name in SteadyCase.__dataclass_fields__}
    fields.update(
        requests={},
        lane_startup={},
        lane_steady={},
        stub_startup={},
        stub_steady={},
        loadavg=(0.0, 0.0, 0.0),
        sockets=1012,
        sockets_max=1020,
        per_node_per_minute={"node_get": 5.97, "lease_put": 5.9, "other": 0.0},
        stub_connections={"http/1.1": 13, "h2": 1000},
    )
    steady = SteadyCase(**fields)
    text = format_report(
        BenchResult("m", "3.11", "cmd", "load", steady, None, traffic_profile="kubelet")
    )
    assert "| traffic profile | `kubelet` | |" in text
    assert (
        "| shard sockets end / max (stub connections) | 1,012 / 1,020 (http/1.1 13, h2 1,000) | |"
        in text
    )
    assert "| stub requests per node per minute (steady) | node_get 5.97, lease_put 5.9 | |" in text


def _children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(child) for child in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_terminated_bench_shard_stops_its_stub_and_shard() -> None:
    # SIGTERM (a CI job's timeout, `kill`) killed the bench alone before: its stub apiserver
    # and shard kept running under init.
    bench = subprocess.Popen(
        [sys.executable, "-m", "fleet", "bench", "shard", "--nodes", "4", "--pods", "4",
         "--duration", "60", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started: set[int] = set()
    try:
        deadline = time.monotonic() + 30
        while len(_children(bench.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        started = _children(bench.pid)
        assert len(started) == 2, "the stub and the shard did not start"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=30) != 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in started if _alive(pid)]
    finally:
        for pid in started | _children(bench.pid):
            if _alive(pid):  # left behind (the failure this test is about): not for long
                os.kill(pid, signal.SIGKILL)
        bench.kill()
        bench.wait()
