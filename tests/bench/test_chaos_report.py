"""A chaos section's figures from what the bench read: watches ended and started, the
control plane's memory from /metrics and /proc, and how the summary shows them ("not
exposed" where nothing was read, as on the sandbox)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from bench import parse_metrics, read_report, summary_markdown, write_report
from bench._chaos import control_plane_memory, watch_restarts
from bench._promtext import Scrape
from bench._report import ChaosResult, ComponentMemory
from tests.bench.test_report import _report

# What a Go server's process collector exposes (kube-apiserver's and etcd's /metrics),
# among families the bench does not read.
GO_PROCESS = """\
# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.
# TYPE etcd_server_has_leader gauge
etcd_server_has_leader 1
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 6.8489216e+07
# HELP process_virtual_memory_bytes Virtual memory size in bytes.
# TYPE process_virtual_memory_bytes gauge
process_virtual_memory_bytes 1.1e+10
"""
V124 = (Path(__file__).parent / "data" / "apiserver-v1.24-metrics.txt").read_text()


def test_resident_memory_is_read_where_a_server_exposes_it() -> None:
    assert parse_metrics(GO_PROCESS).resident_bytes == 68_489_216
    assert parse_metrics(V124 + GO_PROCESS).resident_bytes == 68_489_216
    # The recorded kube-apiserver scrape kept none of it; the sandbox exposes none.
    assert parse_metrics(V124).resident_bytes is None


def test_watches_started_are_those_ended_plus_the_change_in_open_ones() -> None:
    """kube-apiserver counts a WATCH when it ends: 300 restarted per-node watches are 300
    ended and 300 opened again (open count unchanged); 40 new ones never ended are
    started all the same, seen in the open-watch gauge alone."""
    open_ = {("WATCH", "", "pods"): 100.0}
    before = Scrape(longrunning=open_)
    assert watch_restarts(before, Scrape(longrunning=open_), 300.0) == (300.0, 300.0)
    more = Scrape(longrunning={("WATCH", "", "pods"): 140.0})
    assert watch_restarts(before, more, 0.0) == (0.0, 40.0)
    # Watches that ended and were not reopened (a shard gone): none started.
    fewer = Scrape(longrunning={("WATCH", "", "pods"): 60.0})
    assert watch_restarts(before, fewer, 40.0) == (40.0, 0.0)


def test_control_plane_memory_keeps_the_peaks_and_says_what_was_not_read() -> None:
    mib = 2**20
    real = control_plane_memory(
        {"kube-apiserver": 400 * mib, "etcd": 70 * mib, "shard 0": 90 * mib},
        [380.0 * mib, None, 395.5 * mib],
        [60.0 * mib, 66.0 * mib],
    )
    assert real == (
        ComponentMemory(
            name="kube-apiserver", peak_rss_bytes=400 * mib, metrics_peak_bytes=round(395.5 * mib)
        ),
        ComponentMemory(name="etcd", peak_rss_bytes=70 * mib, metrics_peak_bytes=66 * mib),
    )
    sandbox = control_plane_memory({"sandbox": 300 * mib, "bench": 90 * mib}, [None, None], [])
    assert sandbox == (
        ComponentMemory(name="kube-apiserver"),
        ComponentMemory(name="etcd"),
        ComponentMemory(name="sandbox", peak_rss_bytes=300 * mib),
    )


def _chaos(memory: tuple[ComponentMemory, ...]) -> ChaosResult:
    return ChaosResult(
        kind="restart-storm",
        nodes_disturbed=50,
        disturb_seconds=0.4,
        settle_seconds=3.4,
        not_ready_peak=0,
        nodes_tainted=0,
        pods_evicted=0,
        watch_requests=300,
        watches_started=310,
        memory=memory,
    )


def test_the_summary_shows_memory_or_says_not_exposed(tmp_path: Path) -> None:
    mib = 2**20
    real = msgspec.structs.replace(
        _report(),
        chaos=_chaos(
            (
                ComponentMemory(
                    name="kube-apiserver", peak_rss_bytes=374 * mib, metrics_peak_bytes=373 * mib
                ),
                ComponentMemory(name="etcd", peak_rss_bytes=65 * mib, metrics_peak_bytes=65 * mib),
            )
        ),
    )
    write_report(real, tmp_path / "report.json")
    assert read_report(tmp_path / "report.json") == real
    text = summary_markdown(real)
    assert "| watches ended (WATCH requests counted) | 300 |" in text
    assert "| watches started (ended + change in open watches) | 310 |" in text
    assert "| kube-apiserver | 374 | 373 |" in text and "| etcd | 65 | 65 |" in text
    # The sandbox: the rows are there, saying so, never left out silently; an old report
    # without memory reads and shows the same.
    for memory in ((ComponentMemory(name="sandbox", peak_rss_bytes=300 * mib),), ()):
        text = summary_markdown(msgspec.structs.replace(_report(), chaos=_chaos(memory)))
        assert "| kube-apiserver | not exposed | not exposed |" in text
        assert "| etcd | not exposed | not exposed |" in text
    assert "| sandbox | 300 | not exposed |" in summary_markdown(
        msgspec.structs.replace(
            _report(),
            chaos=_chaos((ComponentMemory(name="sandbox", peak_rss_bytes=300 * mib),)),
        )
    )
