"""Events from the control-plane loops: client-go's shape, spam filter, aggregation, dedup."""

from __future__ import annotations

from typing import Any

import msgspec
import trio

from fleet.controlplane._events import EventRecorder, EventSettings
from fleet.controlplane._informer import Informers
from fleet.controlplane._nodelifecycle import NodeLifecycleController, NodeLifecycleSettings
from fleet.controlplane._replicasets import ReplicaSetController
from fleet.controlplane._resources import NODES, KObject
from fleet.controlplane._rest import Rest
from fleet.kube import COMBINED, MemoryApiserver
from tests.controlplane._helpers import eventually, mark_ready, node, pod

stamp = MemoryApiserver.stamp

RS = "/apis/apps/v1/namespaces/default/replicasets"


def events(api: MemoryApiserver, namespace: str = "default") -> list[dict[str, Any]]:
    return api.items(f"/api/v1/namespaces/{namespace}/events")


def view(obj: dict[str, Any]) -> KObject:
    return msgspec.json.decode(msgspec.json.encode(obj), type=KObject)


async def test_identical_events_are_counted_similar_ones_combined_and_spam_held_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver()
    recorder = EventRecorder(Rest(api), EventSettings(), wall_clock=api.now)
    await nursery.start(recorder.run)
    n1 = view(api.create("/api/v1/nodes", node("n1")))
    for _ in range(3):
        recorder.record(n1, NODES, "Normal", "Starting", "Starting kubelet.", "kubelet")
    await eventually(lambda: events(api) and events(api)[0].get("count") == 3)
    [event] = events(api)
    assert event["metadata"]["name"].startswith("n1.")
    assert event["involvedObject"] == {
        "kind": "Node", "name": "n1", "uid": n1.metadata.uid, "apiVersion": "v1",
        "resourceVersion": n1.metadata.resource_version,
    }  # fmt: skip
    assert event["source"] == {"component": "kubelet"}
    assert (event["type"], event["reason"], event["message"]) == (
        "Normal", "Starting", "Starting kubelet.",
    )  # fmt: skip
    assert event["firstTimestamp"] == event["lastTimestamp"] == stamp(api.now())

    # Twelve messages differing only in text: the tenth and later become one combined event.
    for i in range(12):
        recorder.record(n1, NODES, "Normal", "Rebooted", f"reboot {i}", "kubelet")
    await eventually(lambda: recorder.written >= 1 + 9 + 3)
    rebooted = [e for e in events(api) if e["reason"] == "Rebooted"]
    assert len(rebooted) == 10
    combined = next(e for e in rebooted if e["message"].startswith(COMBINED))
    assert combined["message"] == COMBINED + "reboot 11" and combined["count"] == 3

    # 25 per source and object, then one every 5 minutes.
    for i in range(20):
        recorder.record(n1, NODES, "Normal", f"Reason{i}", "x", "kubelet")
    await eventually(lambda: recorder.filtered + recorder.written >= 15 + 20)
    assert (recorder.written, recorder.filtered) == (25, 10)
    await trio.sleep(300)
    recorder.record(n1, NODES, "Normal", "Later", "x", "kubelet")
    await eventually(lambda: any(e["reason"] == "Later" for e in events(api)))


async def test_controllers_tell_what_they_did(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    recorder = EventRecorder(Rest(api), wall_clock=api.now)
    rs_controller = ReplicaSetController(Rest(api), informers, wall_clock=api.now, events=recorder)
    lifecycle = NodeLifecycleController(
        Rest(api), informers, NodeLifecycleSettings(), wall_clock=api.now, events=recorder
    )
    api.create("/api/v1/nodes", node("n1"))
    api.create("/api/v1/pods", pod("p", node_name="n1"))
    for part in (recorder, informers, rs_controller, lifecycle):
        await nursery.start(part.run)
    mark_ready(api, "default", "p")
    api.create(RS, {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    })  # fmt: skip
    await eventually(
        lambda: len([e for e in events(api) if e["reason"] == "SuccessfulCreate"]) == 2
    )
    created = [e for e in events(api) if e["reason"] == "SuccessfulCreate"]
    assert {e["message"].split(": ")[0] for e in created} == {"Created pod"}
    assert {e["source"]["component"] for e in created} == {"replicaset-controller"}
    assert created[0]["involvedObject"]["kind"] == "ReplicaSet"
    api.patch(f"{RS}/web", {"spec": {"replicas": 1}})
    await eventually(lambda: any(e["reason"] == "SuccessfulDelete" for e in events(api)))

    # The node falls silent (no Lease, no heartbeat): Unknown, its pods not Ready, events.
    await eventually(lambda: any(e["reason"] == "NodeNotReady" for e in events(api)), within=120)
    await eventually(
        lambda: any(e["involvedObject"]["kind"] == "Pod" for e in events(api)
                    if e["reason"] == "NodeNotReady")
    )  # fmt: skip
    on_node = sorted(
        (e["reason"], e["message"], e["source"]["component"])
        for e in events(api)
        if e["involvedObject"]["kind"] == "Node"
    )
    assert on_node == [
        ("NodeNotReady", "Node n1 status is now: NodeNotReady", "node-controller"),
        ("RegisteredNode", "Node n1 event: Registered Node n1 in Controller", "node-controller"),
    ]
    on_pod = next(
        e for e in events(api)
        if e["reason"] == "NodeNotReady" and e["involvedObject"]["kind"] == "Pod"
    )  # fmt: skip
    assert (on_pod["type"], on_pod["message"]) == ("Warning", "Node is not ready")
    p = api.get("/api/v1/namespaces/default/pods/p")
    assert p is not None
    ready = next(c for c in p["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


async def test_writes_are_paced_at_qps_after_a_burst(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver()
    recorder = EventRecorder(Rest(api), EventSettings(qps=10, burst=5), wall_clock=api.now)
    await nursery.start(recorder.run)
    nodes = [view(api.create("/api/v1/nodes", node(f"n{i}"))) for i in range(25)]
    start = trio.current_time()
    for n in nodes:
        recorder.record(n, NODES, "Normal", "Starting", "Starting kubelet.", "kubelet")
    await eventually(lambda: recorder.written == 25, step=0.01)
    # 5 at once, then 20 more at 10 a second.
    assert 1.9 <= trio.current_time() - start <= 2.2


async def test_an_event_carries_the_time_it_was_recorded_not_written(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """As client-go's ``makeEvent``: a write held back by the rate keeps the event's time, so
    ``kubectl describe`` (by time, then name) shows a pod's Scheduled before a kubelet's later
    Pulling even when the scheduler's write went second."""
    api = MemoryApiserver()
    recorder = EventRecorder(Rest(api), EventSettings(qps=1.0, burst=1), wall_clock=api.now)
    await nursery.start(recorder.run)
    nodes = [view(api.create("/api/v1/nodes", node(f"n{i}"))) for i in range(3)]
    recorded = api.now()
    for n in nodes:
        recorder.record(n, NODES, "Normal", "Starting", "Starting kubelet.", "kubelet")
    await eventually(lambda: recorder.written == 3)
    assert api.now() >= recorded + 2  # the last one written two seconds later
    for event in events(api):
        assert event["firstTimestamp"] == event["lastTimestamp"] == stamp(recorded)
        nanos = int(event["metadata"]["name"].rpartition(".")[2], 16)
        assert abs(nanos / 1e9 - recorded) < 0.001


async def test_the_spam_filter_keys_on_the_object_not_its_version_and_counts_what_it_holds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    # client-go's getSpamKey leaves out the resourceVersion: an object that changes between
    # its events is still one bucket. And a held-back repeat is counted in its series.
    api = MemoryApiserver()
    recorder = EventRecorder(Rest(api), EventSettings(spam_burst=2), wall_clock=api.now)
    await nursery.start(recorder.run)
    n1 = api.create("/api/v1/nodes", node("n1"))
    for i in range(4):
        changed = api.patch("/api/v1/nodes/n1", {"metadata": {"labels": {"step": str(i)}}})
        assert changed is not None
        recorder.record(view(changed), NODES, "Normal", "Starting", "Starting kubelet.", "k")
    await eventually(lambda: recorder.written + recorder.filtered == 4)
    assert (recorder.written, recorder.filtered) == (2, 2)
    await trio.sleep(300)
    recorder.record(view(n1), NODES, "Normal", "Starting", "Starting kubelet.", "k")
    await eventually(lambda: recorder.written == 3)
    [event] = events(api)
    assert event["count"] == 5  # two written, two held back, this one
