"""The kubelets' Events (shards._events): what a real kubelet posts, counted in series.

Compared with kubelet-requests.md "Events": node events in ``default`` about
``{kind: Node, name, uid: <name>}``, container events about the Pod with a
fieldPath, source ``{component: kubelet, host: <node>}``; a repeat is a PATCH
of count and lastTimestamp, not a new Event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import trio

from fleet.kube import MemoryApiserver, Write
from shards._events import QUIET_DEPTH, KubeletEvents, container_events
from tests.shards.test_engine import CRS, EVENTS, NODES, PODS, node_cr, pod, start

BASE = MemoryApiserver.BASE
stamp = MemoryApiserver.stamp
wall = MemoryApiserver.wall

NODE_EVENTS = [
    ("Starting", "Starting kubelet."),
    ("NodeHasSufficientMemory", "Node n1 status is now: NodeHasSufficientMemory"),
    ("NodeHasNoDiskPressure", "Node n1 status is now: NodeHasNoDiskPressure"),
    ("NodeHasSufficientPID", "Node n1 status is now: NodeHasSufficientPID"),
    ("NodeReady", "Node n1 status is now: NodeReady"),
]


def normal(api: MemoryApiserver, path: str = EVENTS) -> list[Any]:
    return [c.body for c in api.log("POST", path) if c.body["type"] == "Normal"]


async def test_a_registered_node_posts_what_a_kubelet_posts(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(5)
    events = normal(api)
    assert [(e["reason"], e["message"]) for e in events] == NODE_EVENTS
    first = events[0]
    assert first["involvedObject"] == {"kind": "Node", "name": "n1", "uid": "n1"}
    assert first["source"] == {"component": "kubelet", "host": "n1"}
    assert first["metadata"]["namespace"] == "default"
    assert first["metadata"]["name"].startswith("n1.")
    assert first["count"] == 1 and first["eventTime"] is None
    assert first["firstTimestamp"] == first["lastTimestamp"]
    assert len({e["metadata"]["name"] for e in events}) == 5  # one name each
    stored = api.items(EVENTS)
    assert len(stored) == 5


async def test_a_pods_containers_post_pulling_pulled_created_started_then_killing(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", delayRunning="3s"))
    await trio.sleep(10)
    obj = api.get(f"{PODS}/p")
    assert obj is not None
    events = [e for e in normal(api) if e["involvedObject"]["kind"] == "Pod"]
    main = obj["spec"]["containers"][0]["name"]
    image = obj["spec"]["containers"][0]["image"]  # as written, not as the runtime reports it
    assert [(e["reason"], e["message"]) for e in events] == [
        ("Pulling", f'Pulling image "{image}"'),
        ("Pulled", f'Successfully pulled image "{image}" in 3s'),
        ("Created", f"Created container {main}"),
        ("Started", f"Started container {main}"),
    ]
    involved = events[0]["involvedObject"]
    assert involved == {
        "kind": "Pod",
        "namespace": "default",
        "name": "p",
        "uid": obj["metadata"]["uid"],
        "apiVersion": "v1",
        "fieldPath": f"spec.containers{{{main}}}",
    }
    assert events[0]["source"] == {"component": "kubelet", "host": "n1"}
    api.delete(f"{PODS}/p")
    await trio.sleep(5)
    events = [e for e in normal(api) if e["involvedObject"]["kind"] == "Pod"]
    assert [(e["reason"], e["message"]) for e in events[4:]] == [
        ("Killing", f"Stopping container {main}")
    ]


async def test_a_repeat_is_a_patch_of_its_series(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # The node-lifecycle controller marks the node Unknown twice: the kubelet's NodeReady
    # (already posted at registration) is counted, not posted again.
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(5)
    (ready,) = [e for e in normal(api) if e["reason"] == "NodeReady"]
    for _ in range(2):
        node = api.get(f"{NODES}/n1")
        assert node is not None
        conditions = [
            {**c, "status": "Unknown", "reason": "NodeStatusUnknown"} if c["type"] == "Ready" else c
            for c in node["status"]["conditions"]
        ]
        api.patch(f"{NODES}/n1/status", {"status": {"conditions": conditions}})
        await trio.sleep(5)
    assert [e["reason"] for e in normal(api)].count("NodeReady") == 1
    name = ready["metadata"]["name"]
    patches = api.log("PATCH", f"{EVENTS}/{name}")
    assert [p.body["count"] for p in patches] == [2, 3]
    assert set(patches[-1].body) == {"count", "lastTimestamp", "message"}
    stored = api.get(f"{EVENTS}/{name}")
    assert stored is not None and stored["count"] == 3
    assert stored["lastTimestamp"] == stamp(BASE + timedelta(seconds=patches[-1].at))


async def test_events_can_be_turned_off(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery, events=False)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1"))
    await trio.sleep(10)
    assert normal(api) == []


@dataclass
class _Depth:
    depth: int


class _BusyQueue:
    """A write queue as the events task sees it: its depth, and what is submitted."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.submitted: list[tuple[float, str]] = []

    def statistics(self) -> _Depth:
        return _Depth(self.depth)

    async def submit(self, key: str, write: Write) -> None:
        self.submitted.append((trio.current_time(), write.method))
        await trio.lowlevel.checkpoint()


async def test_events_wait_for_a_quiet_write_queue_and_are_dropped_when_too_many(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    queue = _BusyQueue(QUIET_DEPTH)
    events = KubeletEvents(queue, wall=wall, buffer=3)  # type: ignore[arg-type]
    await nursery.start(events.run)
    for i in range(5):
        events.node(f"n{i}", "Starting", "Starting kubelet.")
    # One taken by the task (waiting for a quiet moment), three buffered, one dropped.
    assert (events.recorded, events.dropped) == (4, 1)
    await trio.sleep(30)
    assert queue.submitted == []  # status writes and renewals go first
    queue.depth = QUIET_DEPTH - 1
    await trio.sleep(1)
    assert [method for _, method in queue.submitted] == ["POST"] * 4
    assert queue.submitted[0][0] >= 30


def test_container_events_of_a_restart_and_of_an_init_container() -> None:
    def status(restarts: int, state: str) -> dict[str, Any]:
        return {
            "initContainerStatuses": [
                {"name": "init", "image": "busybox", "state": {"terminated": {"exitCode": 0}}}
            ],
            "containerStatuses": [
                {"name": "app", "image": "nginx", "restartCount": restarts, "state": {state: {}}}
            ],
        }

    first = container_events({}, status(0, "waiting"), pulled_in=1.25, deleting=False)
    assert [(e.reason, e.field_path) for e in first] == [
        ("Pulling", "spec.initContainers{init}"),
        ("Pulled", "spec.initContainers{init}"),
        ("Created", "spec.initContainers{init}"),
        ("Started", "spec.initContainers{init}"),
    ]
    assert first[1].message == 'Successfully pulled image "busybox" in 1.25s'
    again = container_events(
        status(0, "running"), status(1, "running"), pulled_in=9, deleting=False
    )
    assert [(e.reason, e.message) for e in again] == [
        ("Pulled", 'Container image "nginx" already present on machine'),
        ("Created", "Created container app"),
        ("Started", "Started container app"),
    ]
    # Ended by its script, not by a deletion: the kubelet kills nothing.
    assert (
        container_events(status(0, "running"), status(0, "terminated"), pulled_in=0, deleting=False)
        == []
    )
