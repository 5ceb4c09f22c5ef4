"""The DaemonSet controller against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._daemonsets import DaemonSetController, target_node
from fleet.controlplane._informer import Informers
from fleet.controlplane._resources import KObject
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, fake_kubelets, mark_ready, node

DS = "/apis/apps/v1/namespaces/default/daemonsets"


def daemonset(name: str, image: str = "agent:1", **tmpl_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": image}],
                                       **tmpl_spec}}},
    }  # fmt: skip


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = DaemonSetController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api


def pods(api: MemoryApiserver) -> list[dict[str, Any]]:
    return [
        p
        for p in api.items("/api/v1/namespaces/default/pods")
        if not p["metadata"].get("deletionTimestamp")
    ]


def placed(api: MemoryApiserver) -> list[str]:
    import msgspec

    return sorted(target_node(msgspec.convert(p, KObject)) for p in pods(api))


def status(api: MemoryApiserver, name: str = "agent") -> dict[str, Any]:
    found = api.get(f"{DS}/{name}")
    assert found is not None
    return dict(found.get("status") or {})


async def test_one_pod_per_eligible_node(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create("/api/v1/nodes", node("n1", labels={"disk": "ssd"}))
    api.create(
        "/api/v1/nodes",
        node("n2", labels={"disk": "ssd"},
             taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    )  # fmt: skip
    api.create("/api/v1/nodes", node("n3"))
    # Not-ready nodes still get their daemon pod: the controller adds the toleration.
    api.create(
        "/api/v1/nodes",
        node("n4", labels={"disk": "ssd"}, ready="False",
             taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    )  # fmt: skip
    api.create(DS, daemonset("agent", nodeSelector={"disk": "ssd"}))
    await eventually(lambda: placed(api) == ["n1", "n4"])
    pod = next(p for p in pods(api) if p["metadata"]["name"].startswith("agent-"))
    assert pod["metadata"]["labels"]["app"] == "agent"
    assert pod["metadata"]["labels"]["pod-template-generation"] == "1"
    assert "controller-revision-hash" in pod["metadata"]["labels"]
    keys = {t["key"] for t in pod["spec"]["tolerations"]}
    assert "node.kubernetes.io/unschedulable" in keys and "node.kubernetes.io/not-ready" in keys
    await eventually(lambda: status(api).get("desiredNumberScheduled") == 2)
    assert status(api) == {
        "currentNumberScheduled": 2,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 2,
        "numberReady": 0,
        "observedGeneration": 1,
        "updatedNumberScheduled": 2,
        "numberUnavailable": 2,
    }
    for p in pods(api):
        mark_ready(api, "default", p["metadata"]["name"])
    await eventually(lambda: status(api).get("numberAvailable") == 2)
    assert "numberUnavailable" not in status(api)

    # A new eligible node gets a pod; a node that goes away loses it.
    api.create("/api/v1/nodes", node("n5", labels={"disk": "ssd"}))
    await eventually(lambda: placed(api) == ["n1", "n4", "n5"])
    api.remove("/api/v1/nodes/n1")
    await eventually(lambda: placed(api) == ["n4", "n5"])
    # A label change makes a node ineligible.
    api.patch("/api/v1/nodes/n5", {"metadata": {"labels": {"disk": "hdd"}}})
    await eventually(lambda: placed(api) == ["n4"])


async def test_rolling_update_keeps_max_unavailable(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    for i in range(4):
        api.create("/api/v1/nodes", node(f"n{i}"))
    nursery.start_soon(fake_kubelets, api)
    api.create(DS, daemonset("agent"))
    await eventually(lambda: status(api).get("numberAvailable") == 4)
    api.patch(f"{DS}/agent", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "agent:2"}]}}}})  # fmt: skip
    worst = 0

    def done() -> bool:
        nonlocal worst
        st = status(api)
        worst = max(worst, 4 - int(st.get("numberAvailable", 0)))
        images = {p["spec"]["containers"][0]["image"] for p in pods(api)}
        return (
            images == {"agent:2"}
            and st.get("updatedNumberScheduled") == 4
            and st.get("numberAvailable") == 4
            and st.get("observedGeneration") == 2
        )

    await eventually(done, step=0.1)
    assert worst == 1  # never more than maxUnavailable nodes without an available pod


async def test_node_heartbeats_do_not_wake_daemonsets(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = DaemonSetController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    api.create("/api/v1/nodes", node("n1"))
    api.create(DS, daemonset("agent"))
    await eventually(lambda: status(api).get("desiredNumberScheduled") == 1)
    await trio.sleep(5)
    added = controller.queue.statistics().added
    for beat in range(20):  # what every kubelet writes every 10 s
        api.patch(
            "/api/v1/nodes/n1/status",
            {"status": {"conditions": [{"type": "Ready", "status": "True",
                                        "lastHeartbeatTime": f"2024-05-01T12:00:{beat:02d}Z"}]}},
        )  # fmt: skip
        await trio.sleep(1)
    assert controller.queue.statistics().added == added
    api.patch("/api/v1/nodes/n1", {"metadata": {"labels": {"zone": "a"}}})
    await eventually(lambda: controller.queue.statistics().added > added)


async def test_a_failed_creation_in_a_batch_is_made_up_without_duplicates(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    from fleet.kube import status_response

    refused: list[float] = []

    def fail(method: str, path: str) -> object:
        # The fourth creation is refused once, in the slow-start batch of 4: the creations
        # after it wait for the next sync (slowStartBatch), which makes up the missing ones.
        if (
            method == "POST"
            and path.endswith("/pods")
            and len(api.log("POST", containing="/pods")) == 4
            and not refused
        ):
            refused.append(trio.current_time())
            return status_response(500, "InternalError", "etcd is sad")
        return None

    for i in range(20):
        api.create("/api/v1/nodes", node(f"n{i:02d}"))
    await trio.sleep(1)
    api.fail = fail  # type: ignore[assignment]
    api.create(DS, daemonset("agent"))
    await eventually(lambda: len(refused) == 1)
    await eventually(lambda: len(pods(api)) == 20)
    await trio.sleep(5)
    assert placed(api) == [f"n{i:02d}" for i in range(20)]  # one each, none twice
    assert len(api.log("POST", containing="/pods")) == 21  # the refused one, once more


async def test_many_pods_turning_ready_make_few_syncs(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    """A pod's own progress waits ``status_delay`` before its DaemonSet syncs: 50 pods turning
    Ready over 2.5 s make a status write per half second, not fifty (each sync walks every
    node)."""
    for i in range(50):
        api.create("/api/v1/nodes", node(f"n{i:02}"))
    api.create(DS, daemonset("agent"))
    await eventually(lambda: len(pods(api)) == 50)
    await eventually(lambda: status(api).get("currentNumberScheduled") == 50)
    await trio.sleep(5)
    before = len(api.log("PATCH", containing="/daemonsets/agent/status"))
    for p in pods(api):
        mark_ready(api, "default", p["metadata"]["name"])
        await trio.sleep(0.05)
    await eventually(lambda: status(api).get("numberReady") == 50)
    await trio.sleep(5)
    writes = len(api.log("PATCH", containing="/daemonsets/agent/status")) - before
    # 2.5 s of progress at one sync per 0.5 s is 5-6 writes (7 with a boundary each side);
    # a sync per pod event, as before the batching, is 50: this fails then.
    assert 1 <= writes <= 7


@pytest.fixture
async def watched(
    nursery: trio.Nursery,
) -> AsyncIterator[tuple[MemoryApiserver, DaemonSetController]]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = DaemonSetController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api, controller


async def _settled(api: MemoryApiserver, controller: DaemonSetController, pods_: int) -> None:
    await eventually(lambda: len(pods(api)) == pods_)
    await eventually(lambda: status(api).get("currentNumberScheduled") == pods_)
    await trio.sleep(5)  # let the delayed status syncs run out


async def test_a_node_added_later_gets_its_pod_looking_at_that_node_alone(
    watched: tuple[MemoryApiserver, DaemonSetController], autojump_clock: trio.testing.MockClock
) -> None:
    api, controller = watched
    for i in range(100):
        api.create("/api/v1/nodes", node(f"n{i:03}", labels={"disk": "ssd"}))
    api.create(DS, daemonset("agent", nodeSelector={"disk": "ssd"}))
    await _settled(api, controller, 100)
    before = controller.statistics()
    assert before.full_walks == 1

    api.create("/api/v1/nodes", node("late", labels={"disk": "ssd"}))
    api.create("/api/v1/nodes", node("other"))  # not selected: no pod
    await eventually(lambda: "late" in placed(api))
    await eventually(lambda: status(api).get("desiredNumberScheduled") == 101)
    await trio.sleep(5)
    after = controller.statistics()
    assert placed(api).count("late") == 1 and "other" not in placed(api)
    assert status(api)["currentNumberScheduled"] == 101
    assert after.full_walks == before.full_walks
    # The two nodes, looked at again when the new pod shows up (created, then bound...):
    # a handful of looks, where one sync over every node is 102.
    assert after.nodes_examined - before.nodes_examined <= 10


async def test_a_node_whose_labels_stop_matching_loses_its_pod(
    watched: tuple[MemoryApiserver, DaemonSetController], autojump_clock: trio.testing.MockClock
) -> None:
    api, controller = watched
    for i in range(50):
        api.create("/api/v1/nodes", node(f"n{i:02}", labels={"disk": "ssd"}))
    api.create(DS, daemonset("agent", nodeSelector={"disk": "ssd"}))
    await _settled(api, controller, 50)
    before = controller.statistics()

    api.patch("/api/v1/nodes/n07", {"metadata": {"labels": {"disk": "hdd"}}})
    await eventually(lambda: "n07" not in placed(api))
    await eventually(lambda: status(api).get("desiredNumberScheduled") == 49)
    assert len(placed(api)) == 49
    assert status(api)["currentNumberScheduled"] == 49
    assert status(api)["numberMisscheduled"] == 0
    # Back again: the pod comes back.
    api.patch("/api/v1/nodes/n07", {"metadata": {"labels": {"disk": "ssd"}}})
    await eventually(lambda: placed(api).count("n07") == 1)
    await eventually(lambda: status(api).get("desiredNumberScheduled") == 50)
    after = controller.statistics()
    assert after.full_walks == before.full_walks
    assert after.nodes_examined - before.nodes_examined <= 10


async def test_pod_progress_syncs_look_at_the_changed_nodes_not_every_node(
    watched: tuple[MemoryApiserver, DaemonSetController], autojump_clock: trio.testing.MockClock
) -> None:
    """Each status sync looks only at the nodes whose pods moved: 200 pods turning Ready one
    by one over 20 s make ~40 syncs; a walk over every node each sync would be ~8,000 looks."""
    api, controller = watched
    for i in range(200):
        api.create("/api/v1/nodes", node(f"n{i:03}"))
    api.create(DS, daemonset("agent"))
    await _settled(api, controller, 200)
    before = controller.statistics()
    syncs_before = controller.queue.statistics().added
    for p in pods(api):
        mark_ready(api, "default", p["metadata"]["name"])
        await trio.sleep(0.1)
    await eventually(lambda: status(api).get("numberReady") == 200)
    assert status(api).get("numberAvailable") == 200
    after = controller.statistics()
    syncs = controller.queue.statistics().added - syncs_before
    assert syncs >= 20  # many syncs ran...
    assert after.full_walks == before.full_walks
    assert after.nodes_examined - before.nodes_examined <= 200  # ...each node looked at once


async def test_counts_stay_true_through_churn(
    watched: tuple[MemoryApiserver, DaemonSetController], autojump_clock: trio.testing.MockClock
) -> None:
    """The status sums kept per node agree with a count from the apiserver after nodes come
    and go, pods are deleted by hand or fail, and a node is tainted."""
    api, controller = watched
    for i in range(20):
        api.create("/api/v1/nodes", node(f"n{i:02}"))
    api.create(DS, daemonset("agent"))
    await _settled(api, controller, 20)
    for p in pods(api)[:10]:
        mark_ready(api, "default", p["metadata"]["name"])
    victim = next(p for p in pods(api) if target_node_of(p) == "n15")
    api.remove(f"/api/v1/namespaces/default/pods/{victim['metadata']['name']}")
    failed = next(p for p in pods(api) if target_node_of(p) == "n16")
    api.patch(
        f"/api/v1/namespaces/default/pods/{failed['metadata']['name']}/status",
        {"status": {"phase": "Failed"}},
    )
    api.remove("/api/v1/nodes/n19")
    api.patch(
        "/api/v1/nodes/n18",
        {"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}},
    )
    api.create("/api/v1/nodes", node("n20"))

    def true_counts() -> bool:
        names = [f"n{i:02}" for i in range(21) if i not in (18, 19)]
        st = status(api)
        return (
            placed(api) == names
            and st.get("desiredNumberScheduled") == 19
            and st.get("currentNumberScheduled") == 19
            and st.get("numberMisscheduled") == 0
            and st.get("updatedNumberScheduled") == 19
            and st.get("numberReady") == sum(1 for p in pods(api) if _ready(p))
        )

    await eventually(true_counts)
    assert failed["metadata"]["name"] not in {p["metadata"]["name"] for p in pods(api)}


def target_node_of(p: dict[str, Any]) -> str:
    import msgspec

    return target_node(msgspec.convert(p, KObject))


def _ready(p: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or ()
    )


async def test_its_own_status_writes_do_not_wake_it(
    watched: tuple[MemoryApiserver, DaemonSetController], autojump_clock: trio.testing.MockClock
) -> None:
    """Creating 300 pods takes a few syncs: each status write shows up as a change of the
    DaemonSet, which, synced again, wrote the status again while the pods kept coming (one
    sync and one write per pod seen)."""
    api, controller = watched
    for i in range(300):
        api.create("/api/v1/nodes", node(f"n{i:03}"))
    await trio.sleep(1)
    before = controller.queue.statistics().added
    api.create(DS, daemonset("agent"))
    await _settled(api, controller, 300)
    assert controller.queue.statistics().added - before <= 10
    writes = len(api.log("PATCH", containing="/daemonsets/agent/status"))
    # At least the one status write; a write per pod seen (the old loop) is ~300: fails then.
    assert 1 <= writes <= 10
    # A status written by someone else is put right.
    api.patch(f"{DS}/agent/status", {"status": {"numberReady": 7}})
    await eventually(lambda: status(api).get("numberReady") == 0)
