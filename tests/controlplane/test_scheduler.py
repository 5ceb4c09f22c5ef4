"""The scheduler against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.controlplane._scheduler import Scheduler, SchedulerSettings, unschedulable_message
from fleet.kube import MemoryApiserver, status_response
from tests.controlplane._helpers import eventually, node, pod


@dataclass
class Env:
    api: MemoryApiserver
    scheduler: Scheduler

    def node_of(self, name: str, namespace: str = "default") -> str | None:
        obj = self.api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return None if obj is None else obj["spec"].get("nodeName")

    def scheduled_condition(self, name: str) -> dict[str, str] | None:
        obj = self.api.get(f"/api/v1/namespaces/default/pods/{name}")
        assert obj is not None
        for cond in obj.get("status", {}).get("conditions") or []:
            if cond["type"] == "PodScheduled":
                return dict(cond)
        return None


@pytest.fixture
async def env(nursery: trio.Nursery) -> AsyncIterator[Env]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    scheduler = Scheduler(Rest(api), informers, SchedulerSettings(seed=1), wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(scheduler.run)
    yield Env(api, scheduler)


async def test_binds_pending_pods_spreading_least_allocated(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a"))
    env.api.create("/api/v1/nodes", node("b"))
    await trio.sleep(1)  # let the node watch deliver them
    for i in range(6):
        env.api.create("/api/v1/pods", pod(f"p{i}", cpu="1"))
    await eventually(lambda: all(env.node_of(f"p{i}") for i in range(6)))
    placed = Counter(env.node_of(f"p{i}") for i in range(6))
    assert placed == {"a": 3, "b": 3}
    assert env.scheduler.node_usage("a") == (3000, 0, 3)
    assert len(env.api.log("POST", containing="/binding")) == 6
    cond = env.scheduled_condition("p0")
    assert cond is not None and cond["status"] == "True"


async def test_other_schedulers_and_bound_pods_are_left_alone(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("mine", spec={"schedulerName": "default-scheduler"}))
    env.api.create("/api/v1/pods", pod("theirs", spec={"schedulerName": "other"}))
    env.api.create("/api/v1/pods", pod("bound", node_name="elsewhere"))
    await eventually(lambda: env.node_of("mine"))
    await trio.sleep(5)
    assert env.node_of("theirs") is None
    assert env.node_of("bound") == "elsewhere"
    assert len(env.api.log("POST", containing="/binding")) == 1


async def test_unschedulable_message_condition_and_event(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create(
        "/api/v1/nodes",
        node("a", cpu="8", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    env.api.create("/api/v1/nodes", node("b", cpu="1"))
    env.api.create("/api/v1/nodes", node("c", cpu="1"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("big", cpu="2"))
    expected = (
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
        "2 Insufficient cpu. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, "
        "2 No preemption victims found for incoming pod."
    )
    cond = await eventually(lambda: env.scheduled_condition("big"))
    assert cond["status"] == "False"
    assert cond["reason"] == "Unschedulable"
    assert cond["message"] == expected
    events = await eventually(lambda: env.api.items("/api/v1/namespaces/default/events"))
    assert [(e["type"], e["reason"], e["message"]) for e in events] == [
        ("Warning", "FailedScheduling", expected)
    ]
    assert events[0]["involvedObject"]["name"] == "big"
    # Our own status write does not make the pod retry: one attempt, one event.
    await trio.sleep(10)
    assert env.scheduler.statistics().failed_attempts == 1
    assert len(env.api.items("/api/v1/namespaces/default/events")) == 1


def test_unschedulable_message_format() -> None:
    assert unschedulable_message(0, {}) == "no nodes available to schedule pods"
    assert unschedulable_message(
        5, {"Insufficient memory": 2, "node(s) were unschedulable": 1, "Insufficient cpu": 2}
    ) == (
        "0/5 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu, "
        "2 Insufficient memory."
    )


async def test_retried_when_a_node_is_added(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("small", cpu="1"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("big", cpu="2"))
    await eventually(lambda: env.scheduled_condition("big"))
    assert env.node_of("big") is None
    env.api.create("/api/v1/nodes", node("large", cpu="4"))
    await trio.sleep(1)  # let the node watch deliver them
    await eventually(lambda: env.node_of("big") == "large", within=5)


async def test_retried_when_a_bound_pod_goes_away(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a", cpu="2"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("first", cpu="2"))
    await eventually(lambda: env.node_of("first") == "a")
    env.api.create("/api/v1/pods", pod("second", cpu="2"))
    cond = await eventually(lambda: env.scheduled_condition("second"))
    assert cond["message"] == (
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
        "1 No preemption victims found for incoming pod."
    )
    env.api.remove("/api/v1/namespaces/default/pods/first")
    await eventually(lambda: env.node_of("second") == "a", within=5)


async def test_finished_pods_free_their_node(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a", pods="1"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("done", node_name="a", phase="Succeeded"))
    env.api.create("/api/v1/pods", pod("p"))
    await eventually(lambda: env.node_of("p") == "a")


async def test_retried_periodically(env: Env, autojump_clock: trio.testing.MockClock) -> None:
    env.api.create("/api/v1/nodes", node("a", cpu="1"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("big", cpu="2"))
    await eventually(lambda: env.scheduler.statistics().failed_attempts == 1)
    start = trio.current_time()
    await eventually(lambda: env.scheduler.statistics().failed_attempts == 2, within=120)
    assert 0 < trio.current_time() - start <= 60.1


async def test_not_ready_unschedulable_and_tainted_nodes(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("down", ready="Unknown"))
    env.api.create("/api/v1/nodes", node("cordoned", unschedulable=True))
    env.api.create("/api/v1/nodes", node("tainted", taints=[{"key": "k", "effect": "NoExecute"}]))
    env.api.create(
        "/api/v1/nodes", node("soft", taints=[{"key": "s", "effect": "PreferNoSchedule"}], cpu="1")
    )
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("p", cpu="2"))
    cond = await eventually(lambda: env.scheduled_condition("p"))
    assert cond["message"] == (
        "0/4 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {k: }, "
        "1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, "
        "1 node(s) were unschedulable. preemption: 0/4 nodes are available: "
        "1 No preemption victims found for incoming pod, "
        "3 Preemption is not helpful for scheduling."
    )
    env.api.create(
        "/api/v1/pods", pod("tolerant", spec={"tolerations": [{"key": "k", "operator": "Exists"}]})
    )
    await eventually(lambda: env.node_of("tolerant") in ("tainted", "soft"))
    env.api.create(
        "/api/v1/pods", pod("anything", spec={"tolerations": [{"operator": "Exists"}]}, cpu="3")
    )
    await eventually(lambda: env.node_of("anything") in ("down", "cordoned", "tainted"))


async def test_node_selector_and_required_affinity(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a", labels={"zone": "z1", "gen": "3"}))
    env.api.create("/api/v1/nodes", node("b", labels={"zone": "z2", "gen": "5", "ssd": "true"}))
    env.api.create("/api/v1/nodes", node("c", labels={"zone": "z3"}))
    await trio.sleep(1)  # let the node watch deliver them

    def affinity(
        *exprs: dict[str, object], fields: list[dict[str, object]] | None = None
    ) -> dict[str, object]:
        term: dict[str, object] = {"matchExpressions": list(exprs)}
        if fields:
            term["matchFields"] = fields
        return {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}
                }
            }
        }

    env.api.create("/api/v1/pods", pod("sel", spec={"nodeSelector": {"zone": "z2"}}))
    env.api.create(
        "/api/v1/pods",
        pod("in", spec=affinity({"key": "zone", "operator": "In", "values": ["z1", "z9"]})),
    )
    env.api.create(
        "/api/v1/pods",
        pod("notin", spec=affinity({"key": "zone", "operator": "NotIn", "values": ["z1", "z2"]})),
    )
    env.api.create(
        "/api/v1/pods", pod("exists", spec=affinity({"key": "ssd", "operator": "Exists"}))
    )
    env.api.create(
        "/api/v1/pods", pod("dne", spec=affinity({"key": "gen", "operator": "DoesNotExist"}))
    )
    env.api.create(
        "/api/v1/pods", pod("gt", spec=affinity({"key": "gen", "operator": "Gt", "values": ["4"]}))
    )
    env.api.create(
        "/api/v1/pods", pod("lt", spec=affinity({"key": "gen", "operator": "Lt", "values": ["4"]}))
    )
    env.api.create(
        "/api/v1/pods",
        pod(
            "field",
            spec=affinity(fields=[{"key": "metadata.name", "operator": "In", "values": ["c"]}]),
        ),
    )
    env.api.create(
        "/api/v1/pods",
        pod("none", spec=affinity({"key": "zone", "operator": "In", "values": ["z9"]})),
    )
    want = {
        "sel": "b",
        "in": "a",
        "notin": "c",
        "exists": "b",
        "dne": "c",
        "gt": "b",
        "lt": "a",
        "field": "c",
    }
    await eventually(lambda: all(env.node_of(p) for p in want))
    assert {p: env.node_of(p) for p in want} == want
    cond = await eventually(lambda: env.scheduled_condition("none"))
    assert (
        cond["message"]
        == "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )


async def test_memory_and_pod_count_limits(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    env.api.create("/api/v1/nodes", node("a", memory="1Gi", pods="2"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("m1", memory="600Mi"))
    await eventually(lambda: env.node_of("m1"))
    env.api.create("/api/v1/pods", pod("s1"))
    await eventually(lambda: env.node_of("s1"))
    env.api.create("/api/v1/pods", pod("m2", memory="600Mi"))
    cond = await eventually(lambda: env.scheduled_condition("m2"))
    assert cond["message"] == (
        "0/1 nodes are available: 1 Insufficient memory, 1 Too many pods. preemption: "
        "0/1 nodes are available: 1 No preemption victims found for incoming pod."
    )


async def test_bind_failure_backs_off_and_retries(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    failures: list[float] = []

    def fail(method: str, path: str) -> object:
        if path.endswith("/binding") and not failures:
            failures.append(trio.current_time())
            return status_response(500, "InternalError", "etcd is sad")
        return None

    env.api.fail = fail  # type: ignore[assignment]
    env.api.create("/api/v1/nodes", node("a"))
    await trio.sleep(1)  # let the node watch deliver them
    env.api.create("/api/v1/pods", pod("p", cpu="4"))
    await eventually(lambda: env.node_of("p") == "a")
    assert len(env.api.log("POST", containing="/binding")) == 2
    assert env.scheduler.statistics().bind_errors == 1
    assert env.scheduler.node_usage("a") == (4000, 0, 1)


async def test_many_pods_fill_nodes_exactly(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    for i in range(20):
        env.api.create("/api/v1/nodes", node(f"n{i:02}", cpu="2", pods="110"))
    await trio.sleep(1)
    for i in range(50):
        env.api.create("/api/v1/pods", pod(f"p{i}", cpu="1"))
    await eventually(lambda: env.scheduler.statistics().scheduled == 40)
    await trio.sleep(1)
    placed = Counter(env.node_of(f"p{i}") for i in range(50))
    assert placed[None] == 10
    assert all(count == 2 for name, count in placed.items() if name is not None)


async def test_a_node_beyond_int64_is_scored_not_fatal(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    """A Node whose memory is 1e400 (stored as typed by any apiserver) once raised
    OverflowError in scoring and ended the process."""
    env.api.create("/api/v1/nodes", node("huge", memory="1e400", cpu="1e400"))
    env.api.create("/api/v1/nodes", node("small"))
    await trio.sleep(1)
    for i in range(4):
        env.api.create("/api/v1/pods", pod(f"p{i}", cpu="1", memory="1Gi"))
    await eventually(lambda: all(env.node_of(f"p{i}") for i in range(4)))
    assert env.scheduler.statistics().errors == 0


async def test_an_error_deciding_one_pod_is_retried_not_fatal(
    env: Env, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any bug in handling one pod costs a log line and a retry with backoff, never the loop."""
    env.api.create("/api/v1/nodes", node("a"))
    await trio.sleep(1)
    decide = env.scheduler._decide
    failures = 0

    def flaky(p: Any) -> tuple[str | None, str]:
        nonlocal failures
        if p.metadata.name == "poison" and failures < 3:
            failures += 1
            raise ZeroDivisionError("boom")
        return decide(p)

    monkeypatch.setattr(env.scheduler, "_decide", flaky)
    env.api.create("/api/v1/pods", pod("poison"))
    env.api.create("/api/v1/pods", pod("fine"))
    await eventually(lambda: env.node_of("fine") and env.node_of("poison"))
    assert failures == 3
    stats = env.scheduler.statistics()
    assert stats.errors == 3
    assert env.scheduler.queue.statistics().failing == 0
    # Three retries backed off 0.1 + 0.2 + 0.4 s at least.
    assert trio.current_time() >= 1 + 0.7


async def test_higher_priority_pods_are_scheduled_first(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    # Three pods wait for a node that has room for two; when it comes, the two of highest
    # priority get it, whatever order they came in (a FIFO would take "low" first).
    for name, priority in (("low", 0), ("high", 1000), ("mid", 10)):
        env.api.create("/api/v1/pods", pod(name, spec={"priority": priority}))
    await eventually(lambda: env.scheduled_condition("mid"))
    env.api.create("/api/v1/nodes", node("a", pods="2"))
    await eventually(lambda: env.node_of("high") and env.node_of("mid"))
    await trio.sleep(5)
    assert env.node_of("low") is None


async def test_a_pod_pinned_by_name_is_tried_on_its_node_alone(
    env: Env, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DaemonSet pods name their node (``matchFields`` ``metadata.name``): like kube-scheduler's
    NodeAffinity PreFilter, the scheduler looks at that node only, not at every node."""
    from fleet.controlplane import _scheduler

    for i in range(300):
        env.api.create("/api/v1/nodes", node(f"n{i:03}"))
    await trio.sleep(1)  # let the node watch deliver them
    looked_at: list[str] = []
    real_filter = _scheduler._filter

    def counting(info: Any, n: Any, usage: Any) -> list[str]:
        looked_at.append(n.name)
        return real_filter(info, n, usage)

    monkeypatch.setattr(_scheduler, "_filter", counting)
    pin = {"key": "metadata.name", "operator": "In", "values": ["n123"]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [pin]}]}}}  # fmt: skip
    env.api.create("/api/v1/pods", pod("daemon", spec={"affinity": affinity}))
    await eventually(lambda: env.node_of("daemon") == "n123")
    assert looked_at == ["n123"]
