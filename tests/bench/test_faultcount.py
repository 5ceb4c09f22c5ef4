"""The fault suite's counts from what its observers recorded: two drivers, NotReady, regressions.

The observers' records are written by hand here (the whole suite, with real
processes, is ``tests/fleet/test_faults.py``); each count is shown to catch
what it names and to leave alone what it must not count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from bench import FaultCounter, LabelWatch, Seen, WriteLog, Written
from bench._faultcount import NODE_LEASES, LabelChange, regressed

LEASE_DURATION = 40.0


def _lease(t: float, node: str, shard: str) -> Written:
    return Written(t, "PUT", f"{NODE_LEASES}/{node}", f"kubemock-fleet-shard-{shard}", 200, node)


def _counter(
    writes: list[Written],
    changes: Sequence[LabelChange] = (),
    killed: dict[str, float] | None = None,
) -> FaultCounter:
    log = WriteLog()
    log.writes = sorted(writes, key=lambda w: w.time)
    labels = LabelWatch()
    labels.changes = list(changes)
    client: Any = None  # the counts below read no apiserver
    return FaultCounter(
        client,
        crs_path="/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/ns/nodes",
        pods_path="/api/v1/namespaces/ns/pods",
        nodes=["n1", "n2"],
        pods=[],
        writes=log,
        labels=labels,
        seen=Seen(),
        exited=lambda: 0,
        node_lease_duration=LEASE_DURATION,
        settle_within=10.0,
        killed=lambda: killed or {},
    )


def test_a_shard_writing_after_another_took_over_is_two_drivers() -> None:
    # n1: shard 0, then 1 after one move: fine. n2: 0, 1, 0 with one move: two drivers.
    move = [
        LabelChange(5.0, "ns/n1", "0", "1"),
        LabelChange(5.0, "ns/n2", "0", "1"),
    ]
    writes = [
        _lease(1, "n1", "0"), _lease(9, "n1", "1"),
        _lease(1, "n2", "0"), _lease(9, "n2", "1"), _lease(12, "n2", "0"),
    ]  # fmt: skip
    assert _counter(writes, move).two_drivers() == 1
    assert _counter(writes[:2] + writes[2:4], move).two_drivers() == 0
    # With no move at all, n1's switch from 0 to 1 is two drivers as well.
    assert _counter(writes[:2]).two_drivers() == 1
    # The control plane's node lifecycle writes node status with no fieldManager: no driver.
    lifecycle = Written(5, "PATCH", "/api/v1/nodes/n1/status", "", 200, "n1")
    assert _counter([*writes[:2], lifecycle], move).two_drivers() == 0


def test_a_killed_shards_last_writes_served_just_after_its_kill_are_not_a_second_driver() -> None:
    """Shard 0 killed at 10.0: its renewal served at 10.4 was sent before it died (a
    pipelined batch in the socket buffers), not driving after shard 1 took over at 10.2;
    one served 2 s after the kill would be (its process is dead: another one wrote)."""
    move = [LabelChange(10.1, "ns/n1", "0", "1")]
    in_flight = [_lease(9, "n1", "0"), _lease(10.2, "n1", "1"), _lease(10.4, "n1", "0")]
    assert _counter(in_flight, move).two_drivers() == 1  # not told of the kill: counted
    assert _counter(in_flight, move, {"0": 10.0}).two_drivers() == 0
    late = [_lease(9, "n1", "0"), _lease(10.2, "n1", "1"), _lease(12.0, "n1", "0")]
    assert _counter(late, move, {"0": 10.0}).two_drivers() == 1


async def test_a_lease_unrenewed_past_its_duration_is_not_ready(
    autojump_clock: trio.abc.Clock,
) -> None:
    await trio.sleep(100.0)  # now = 100
    writes = [
        _lease(50, "n1", "0"), _lease(60, "n1", "0"), _lease(95, "n1", "0"),
        _lease(50, "n2", "0"), _lease(91, "n2", "0"), _lease(99, "n2", "0"),
    ]  # fmt: skip
    # n1: renewals 10 and 35 s apart, then 5 s to now: Ready. n2: 41 s without one.
    assert _counter(writes).not_ready(since=60.0) == {"n2"}
    # A gap that ended before the fault's window does not count for it.
    assert _counter(writes).not_ready(since=140.0) == set()
    # A Lease not renewed up to now counts too.
    await trio.sleep(LEASE_DURATION)
    assert _counter(writes).not_ready(since=120.0) == {"n1", "n2"}


def test_a_pod_going_back_in_its_lifecycle_regressed() -> None:
    assert regressed([(0, ""), (1, "Pending"), (2, "Running"), (3, "Succeeded")]) is False
    assert regressed([(0, "Pending"), (1, "Running"), (2, "Pending")]) is True
    assert regressed([(0, "Running"), (1, "Failed"), (2, "Running")]) is True


async def test_a_non_zero_count_says_what_it_is_made_of(autojump_clock: trio.abc.Clock) -> None:
    """The report's reason names the halves of notReady and each second driver's writes,
    so a count can be traced to its cause (a late status PATCH is not a Lease renewal)."""
    await trio.sleep(100.0)
    move = [LabelChange(55.0, "ns/n1", "0", "1")]
    status = Written(70, "PATCH", "/api/v1/nodes/n1/status", "kubemock-fleet-shard-0", 200, "n1")
    writes = [
        _lease(50, "n1", "0"), _lease(60, "n1", "1"), status, _lease(70, "n1", "1"),
        _lease(91, "n1", "1"), _lease(50, "n2", "0"), _lease(95, "n2", "0"),
    ]  # fmt: skip
    counter = _counter(writes, move)
    seen_down, gaps = counter.not_ready_parts(since=60.0)
    assert seen_down == set() and gaps == {"n2": 45.0}
    drivers = counter.two_driver_nodes()
    assert list(drivers) == ["n1"]
    evidence = counter._evidence(60.0, seen_down, gaps, drivers)
    assert "0 seen not Ready, 1 with a Lease gap >= 40 s" in evidence
    assert "n2 45.0 s" in evidence
    assert "twoDrivers n1 (1 moves): 0@-10.0 PUT leases/n1 200, 1@0.0 PUT leases/n1 200, " in (
        evidence
    )
    assert "0@10.0 PATCH nodes/n1/status 200" in evidence
