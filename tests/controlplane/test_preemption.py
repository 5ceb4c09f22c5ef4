"""Preemption by the scheduler, against the in-memory apiserver on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._events import EventRecorder
from fleet.controlplane._informer import Informers
from fleet.controlplane._preemption import Candidate, Victim, pick_node, select_victims
from fleet.controlplane._rest import Rest
from fleet.controlplane._scheduler import Scheduler, SchedulerSettings
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, node, pod

PODS = "/api/v1/namespaces/default/pods"


def _pod(name: str, priority: int, *, node_name: str | None = None, started: str = "", **spec: Any) -> dict[str, Any]:  # fmt: skip
    body = pod(name, cpu="1", node_name=node_name, spec={"priority": priority, **spec})
    if node_name:
        body["status"] = {"phase": "Running", "startTime": started or "2026-01-01T00:00:00Z"}
    return body


async def _start(nursery: trio.Nursery, api: MemoryApiserver) -> Scheduler:
    informers = Informers(api)
    rest = Rest(api)
    events = EventRecorder(rest, wall_clock=api.now)
    scheduler = Scheduler(
        rest, informers, SchedulerSettings(seed=1), wall_clock=api.now, events=events
    )
    await nursery.start(informers.run)
    await nursery.start(events.run)
    await nursery.start(scheduler.run)
    return scheduler


@pytest.fixture
async def graceful(nursery: trio.Nursery) -> AsyncIterator[tuple[MemoryApiserver, Scheduler]]:
    api = MemoryApiserver()  # deleted pods stay, terminating, until a kubelet finishes them
    yield api, await _start(nursery, api)


def _get(api: MemoryApiserver, name: str) -> dict[str, Any]:
    got = api.get(f"{PODS}/{name}")
    assert got is not None, name
    return got


async def test_a_higher_priority_pod_preempts_the_latest_started_lower_one(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    api, scheduler = graceful
    api.create("/api/v1/nodes", node("a", cpu="2"))
    api.create(PODS, _pod("old", 0, node_name="a", started="2026-01-01T00:00:00Z"))
    api.create(PODS, _pod("new", 0, node_name="a", started="2026-01-01T00:05:00Z"))
    await trio.sleep(1)
    high = api.create(PODS, _pod("high", 100))

    victim = await eventually(lambda: _get(api, "new")["metadata"].get("deletionTimestamp"))
    assert victim
    assert not _get(api, "old")["metadata"].get("deletionTimestamp")
    target = [
        c for c in _get(api, "new")["status"]["conditions"] if c["type"] == "DisruptionTarget"
    ]
    assert target[0]["reason"] == "PreemptionByScheduler"
    assert (
        target[0]["message"] == "default-scheduler: preempting to accommodate a higher priority pod"
    )
    status = await eventually(
        lambda: _get(api, "high")["status"].get("nominatedNodeName") and _get(api, "high")["status"]
    )
    assert status["nominatedNodeName"] == "a"
    # The preemptor's status is written before its victim goes (kube-scheduler's order of
    # effect: the pod cannot be bound anywhere before it says where it was nominated).
    order = [(c.method, c.path) for c in api.calls if c.method in ("PATCH", "DELETE")]
    nominated_at = order.index(("PATCH", f"{PODS}/high/status"))
    assert order.index(("DELETE", f"{PODS}/new")) > nominated_at
    assert _get(api, "high")["spec"].get("nodeName") is None  # the victim still holds its cpu
    events = await eventually(
        lambda: [
            e for e in api.items("/api/v1/namespaces/default/events") if e["reason"] == "Preempted"
        ]
    )
    assert [
        (e["involvedObject"]["name"], e["type"], e["message"], e["source"]["component"])
        for e in events
    ] == [
        (
            "new",
            "Normal",
            f"Preempted by pod {high['metadata']['uid']} on node a",
            "default-scheduler",
        )
    ]
    # A pod of no higher priority than the others does not take the room kept for "high".
    api.create(PODS, _pod("late", 0))
    await trio.sleep(5)
    assert _get(api, "late")["spec"].get("nodeName") is None
    assert scheduler.statistics().preemptions == 1  # none again while "new" is going
    api.remove(f"{PODS}/new")  # the kubelet finished it
    await eventually(lambda: _get(api, "high")["spec"].get("nodeName") == "a")
    await trio.sleep(5)
    assert _get(api, "late")["spec"].get("nodeName") is None
    assert len(api.log("DELETE")) == 1


async def test_never_policy_and_equal_priorities_do_not_preempt(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    api, scheduler = graceful
    api.create("/api/v1/nodes", node("a", cpu="1"))
    api.create(PODS, _pod("held", 10, node_name="a"))
    await trio.sleep(1)
    api.create(PODS, _pod("polite", 100, preemptionPolicy="Never"))
    api.create(PODS, _pod("peer", 10))

    def message(name: str) -> str | None:
        for c in _get(api, name)["status"].get("conditions") or []:
            if c["type"] == "PodScheduled":
                return str(c["message"])
        return None

    assert (
        await eventually(lambda: message("polite"))
        == "0/1 nodes are available: 1 Insufficient cpu."
    )
    assert await eventually(lambda: message("peer")) == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod."
    )
    await trio.sleep(10)
    assert api.log("DELETE") == [] and scheduler.statistics().preemptions == 0


def test_victims_and_node_choice() -> None:
    def fits_with_room(room: int) -> Any:
        return lambda gone: len(gone) >= room

    pods = [Victim("a", 1, 10.0), Victim("b", 5, 20.0), Victim("c", 5, 5.0), Victim("d", 9, 0.0)]
    # One pod must go: the least important, the most recently started of them (reprieve order).
    assert select_victims(9, pods, fits_with_room(1)) == Candidate([Victim("a", 1, 10.0)])
    # Two must go: the reprieve keeps the higher ones while it can.
    got = select_victims(9, pods, fits_with_room(2))
    assert got is not None and [v.key for v in got.victims] == ["b", "a"]
    assert select_victims(1, pods, fits_with_room(1)) is None  # nothing below priority 1
    assert select_victims(9, pods, fits_with_room(4)) is None  # "d" (9) is no victim
    choice = {
        "x": Candidate([Victim("x1", 5, 0.0)]),
        "y": Candidate([Victim("y1", 3, 0.0), Victim("y2", 3, 0.0)]),
        "z": Candidate([Victim("z1", 3, 0.0)]),
    }
    assert pick_node(choice) == "z"  # lowest top priority, then the smallest sum
    assert pick_node({"x": Candidate([Victim("x1", 5, 0.0)]), "free": Candidate([])}) == "free"
    assert pick_node({}) is None


PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


def _budget(name: str, app: str, allowed: int, disrupted: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": app}}, "minAvailable": 1},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1,
                   "expectedPods": 1, "observedGeneration": 1,
                   "disruptedPods": {p: "2026-01-01T00:00:00Z" for p in disrupted}},
    }  # fmt: skip


def _labelled(name: str, app: str, node_name: str, started: str, cpu: str = "1") -> dict[str, Any]:
    body = _pod(name, 0, node_name=node_name, started=started)
    body["spec"]["containers"][0]["resources"]["requests"]["cpu"] = cpu
    body["metadata"]["labels"] = {"app": app}
    return body


async def test_preemption_prefers_the_node_whose_victims_violate_no_budget(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    """Without budgets "a" is chosen (its victim started later: the latest earliest start
    wins the last tie); its pod's budget allows no disruption, so "b" is chosen instead."""
    api, scheduler = graceful
    api.create("/api/v1/nodes", node("a", cpu="1"))
    api.create("/api/v1/nodes", node("b", cpu="1"))
    api.create(PODS, _labelled("guarded", "db", "a", "2026-01-01T00:05:00Z"))
    api.create(PODS, _labelled("free", "web", "b", "2026-01-01T00:00:00Z"))
    api.create(PDBS, _budget("db", "db", 0))
    api.create(PDBS, _budget("web", "web", 1))
    await trio.sleep(1)
    api.create(PODS, _pod("high", 100))
    await eventually(lambda: _get(api, "free")["metadata"].get("deletionTimestamp"))
    assert not _get(api, "guarded")["metadata"].get("deletionTimestamp")
    assert _get(api, "high")["status"].get("nominatedNodeName") == "b"
    assert scheduler.statistics().preemptions == 1


async def test_a_budget_violating_victim_is_still_taken_when_nothing_else_frees_room(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    """Budgets are best effort in preemption (kube-scheduler's words): they order, not forbid."""
    api, _ = graceful
    api.create("/api/v1/nodes", node("a", cpu="1"))
    api.create(PODS, _labelled("guarded", "db", "a", "2026-01-01T00:05:00Z"))
    api.create(PDBS, _budget("db", "db", 0))
    await trio.sleep(1)
    api.create(PODS, _pod("high", 100))
    await eventually(lambda: _get(api, "guarded")["metadata"].get("deletionTimestamp"))


def test_victims_that_would_violate_a_budget_are_reprieved_first() -> None:
    def fits_with_room(room: int) -> Any:
        return lambda gone: len(gone) >= room

    # Equal priority: without budgets "guarded" (started later, less important) would be
    # the one victim; its budget allows no disruption, so it is reprieved first.
    pods = [Victim("plain", 1, 0.0), Victim("guarded", 1, 10.0, budgets=("default/db",))]
    assert select_victims(9, pods, fits_with_room(1), {"default/db": 0}) == Candidate(
        [Victim("plain", 1, 0.0)], 0
    )
    assert select_victims(9, pods, fits_with_room(1), {"default/db": 1}) == Candidate(
        [Victim("guarded", 1, 10.0, budgets=("default/db",))], 0
    )
    # Both must go: one violation counted, victims most important first.
    got = select_victims(9, pods, fits_with_room(2), {"default/db": 0})
    assert got is not None and got.pdb_violations == 1
    assert [v.key for v in got.victims] == ["plain", "guarded"]
    # A budget counted down over the node's pods: with one disruption allowed the second
    # matching pod (in importance order) is the violating one.
    two = [Victim("p1", 1, 0.0, ("default/db",)), Victim("p2", 1, 5.0, ("default/db",))]
    got = select_victims(9, two, fits_with_room(2), {"default/db": 1})
    assert got is not None and got.pdb_violations == 1
    # Fewer violations beat a lower victim priority when picking the node.
    assert (
        pick_node({
            "y": Candidate([Victim("y1", 1, 0.0, ("default/db",))], 1),
            "x": Candidate([Victim("x1", 5, 0.0)], 0),
        })
        == "x"
    )  # fmt: skip
    # The last tie: the latest earliest start among the top-priority victims.
    assert (
        pick_node({
            "early": Candidate([Victim("e1", 1, 0.0), Victim("e2", 1, 100.0)]),
            "late": Candidate([Victim("l1", 1, 50.0), Victim("l2", 1, 60.0)]),
        })
        == "late"
    )  # fmt: skip


async def test_a_pod_its_budget_already_counts_as_disrupted_is_no_violation(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    """``disruptedPods`` lists pods an eviction already took: the budget does not count them
    again, so "a" wins the last tie as it would without budgets."""
    api, _ = graceful
    api.create("/api/v1/nodes", node("a", cpu="1"))
    api.create("/api/v1/nodes", node("b", cpu="1"))
    api.create(PODS, _labelled("guarded", "db", "a", "2026-01-01T00:05:00Z"))
    api.create(PODS, _labelled("free", "web", "b", "2026-01-01T00:00:00Z"))
    api.create(PDBS, _budget("db", "db", 0, disrupted=("guarded",)))
    await trio.sleep(1)
    api.create(PODS, _pod("high", 100))
    await eventually(lambda: _get(api, "guarded")["metadata"].get("deletionTimestamp"))
    assert not _get(api, "free")["metadata"].get("deletionTimestamp")
    assert _get(api, "high")["status"].get("nominatedNodeName") == "a"


async def test_a_budget_with_an_empty_selector_matches_nothing(
    graceful: tuple[MemoryApiserver, Scheduler], autojump_clock: trio.testing.MockClock
) -> None:
    """Node "a" frees room by evicting two pods of priority 0, "b" one of priority 5: "a" wins
    (the lowest top priority). A budget selecting everything with one disruption allowed
    would make "a"'s second victim a violation and pick "b"; an empty selector selects nothing."""
    api, _ = graceful
    api.create("/api/v1/nodes", node("a", cpu="1"))
    api.create("/api/v1/nodes", node("b", cpu="1"))
    for name in ("a1", "a2"):
        api.create(PODS, _labelled(name, "x", "a", "2026-01-01T00:00:00Z", cpu="500m"))
    b1 = _pod("b1", 5, node_name="b")
    b1["metadata"]["labels"] = {"app": "x"}
    api.create(PODS, b1)
    everything = _budget("all", "x", 1)
    everything["spec"]["selector"] = {}
    api.create(PDBS, everything)
    await trio.sleep(1)
    api.create(PODS, _pod("high", 100))
    await eventually(lambda: _get(api, "high")["status"].get("nominatedNodeName"))
    assert _get(api, "high")["status"]["nominatedNodeName"] == "a"
