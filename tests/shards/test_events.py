"""The kubelets' Events (shards._events): what a real kubelet posts, counted in series.

Compared with kubelet-requests.md "Events": node events in ``default`` about
``{kind: Node, name, uid: <name>}``, container events about the Pod with a
fieldPath, source ``{component: kubelet, host: <node>}``; a repeat is a PATCH
of count and lastTimestamp, not a new Event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.kube import AGGREGATE_MAX, AGGREGATE_WINDOW, COMBINED, MemoryApiserver, Write
from shards._events import (
    QUIET_DEPTH,
    ContainerEvent,
    KubeletEvents,
    container_events,
)
from tests._up_process import kubectl, kubectl_json, up_process, wait_until
from tests.shards.test_engine import CRS, EVENTS, NODES, PODS, node_cr, pod, start
from tests.shards.test_mockstatus import SCRIPTS

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


class _Writes:
    """A write queue that is always quiet and keeps what it is given, decoded."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def statistics(self) -> _Depth:
        return _Depth(0)

    async def submit(self, key: str, write: Write) -> None:
        self.sent.append((write.method, write.path, json.loads(write.body)))
        await trio.lowlevel.checkpoint()


async def test_alike_events_with_ten_messages_are_combined_as_client_go_does(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # client-go's EventAggregator: grouped by source, object (not its fieldPath), type and
    # reason; from the 10th distinct message within 10 minutes, one combined series.
    now = [BASE]
    queue = _Writes()
    events = KubeletEvents(queue, wall=lambda: now[0])  # type: ignore[arg-type]
    await nursery.start(events.run)

    def oom(i: int) -> None:
        events.pod(
            "default",
            "p",
            "uid-p",
            [_oom_event(f"kill {i}")],
            host="n1",
        )
        now[0] += timedelta(seconds=30)

    for i in range(AGGREGATE_MAX - 1):
        oom(i)
    events.node("n1", "Starting", "Starting kubelet.")  # another reason: a group of its own
    oom(100)
    oom(101)
    await trio.sleep(1)
    messages = [(method, body.get("message")) for method, _, body in queue.sent]
    assert messages[: AGGREGATE_MAX - 1] == [("POST", f"kill {i}") for i in range(9)]
    assert messages[AGGREGATE_MAX - 1] == ("POST", "Starting kubelet.")
    method, _, combined = queue.sent[AGGREGATE_MAX]
    assert (method, combined["message"]) == ("POST", COMBINED + "kill 100")
    assert combined["reason"] == "OOMKilling" and combined["count"] == 1
    assert combined["involvedObject"] == {"kind": "Node", "name": "n1", "uid": "n1"}
    method, path, repeat = queue.sent[AGGREGATE_MAX + 1]  # the next one counts in that series
    assert (method, repeat) == ("PATCH", {**repeat, "count": 2, "message": COMBINED + "kill 101"})
    assert path.endswith("/events/" + combined["metadata"]["name"])
    assert events.combined == 2
    # Ten minutes without one: the group starts over.
    now[0] += timedelta(seconds=AGGREGATE_WINDOW + 1)
    oom(200)
    await trio.sleep(1)
    assert queue.sent[-1][0] == "POST" and queue.sent[-1][2]["message"] == "kill 200"


async def test_containers_of_one_pod_are_one_group(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # The fieldPath is not part of the group: a pod of twelve containers posts nine
    # "Created container <c>" of their own, then the combined series counts the rest.
    queue = _Writes()
    events = KubeletEvents(queue, wall=lambda: BASE)  # type: ignore[arg-type]
    await nursery.start(events.run)
    created = [
        ContainerEvent("Created", f"Created container c{i}", f"spec.containers{{c{i}}}")
        for i in range(12)
    ]
    events.pod("default", "p", "uid-p", created, host="n1")
    await trio.sleep(1)
    assert [m for m, _, _ in queue.sent] == ["POST"] * 10 + ["PATCH"] * 2
    assert queue.sent[9][2]["message"] == COMBINED + "Created container c9"
    assert queue.sent[9][2]["involvedObject"]["fieldPath"] == "spec.containers{c9}"
    assert [body["count"] for _, _, body in queue.sent[10:]] == [2, 3]


def _oom_event(message: str) -> ContainerEvent:
    return ContainerEvent(
        "OOMKilling", message, "", type_="Warning", on_node=True, component="kernel-monitor"
    )


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


def _pod_events(api: MemoryApiserver, reason: str) -> list[Any]:
    return [c.body for c in api.log("POST", EVENTS) if c.body["reason"] == reason]


def _stored(api: MemoryApiserver, reason: str) -> list[Any]:
    return [e for e in api.items(EVENTS) if e["reason"] == reason]


def _crash_loop(name: str, reason: str = "OOMKilled", exit_code: int = 137) -> dict[str, Any]:
    restarts = {"runFor": "5s", "exitCode": exit_code, "reason": reason}
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "MockStatus",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "steps": [
                {"after": "0s", "phase": "Running"},
                {"after": "10s", "phase": "Running", "containers": [{"restarts": restarts}]},
            ]
        },
    }


async def test_a_crash_loop_posts_back_off_in_one_series_and_oom_killing_on_the_node(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    # Runs of 5 s from 10 s: exits at 15 (restarted at once), 20 (back-off 10 s to 30),
    # 35 (20 s to 55), 60 (40 s to 100), 105.
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, _crash_loop("oom"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="oom"))
    await trio.sleep(110)
    obj = api.get(f"{PODS}/p")
    assert obj is not None
    uid = obj["metadata"]["uid"]
    (backoff,) = _pod_events(api, "BackOff")  # one Event, then its series
    assert backoff["type"] == "Warning"
    assert (
        backoff["message"] == f"Back-off restarting failed container main in pod p_default({uid})"
    )
    assert backoff["involvedObject"]["fieldPath"] == "spec.containers{main}"
    assert backoff["source"] == {"component": "kubelet", "host": "n1"}
    assert backoff["count"] == 1
    # Four windows (from 20, 35, 60, 105); the 20 s one holds one more sync, the 40 s one 3.
    (stored,) = _stored(api, "BackOff")
    assert stored["count"] == 4 + 1 + 3
    assert stored["firstTimestamp"] < stored["lastTimestamp"]
    ooms = _pod_events(api, "OOMKilling")
    assert len(ooms) == 5  # one per exit, each a run (a container id) of its own
    first = ooms[0]
    assert first["type"] == "Warning"
    assert first["involvedObject"] == {"kind": "Node", "name": "n1", "uid": "n1"}
    assert first["metadata"]["namespace"] == "default"
    assert first["source"] == {"component": "kernel-monitor", "host": "n1"}
    assert first["message"].startswith("Memory cgroup out of memory: Killed process ")
    assert "(main) total-vm:" in first["message"]
    assert len({e["message"] for e in ooms}) == 5
    assert not [e for e in _pod_events(api, "Killing")]  # the kernel killed it, not the kubelet


async def test_a_plain_crash_loop_posts_no_oom_killing(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, _crash_loop("err", "Error", 1))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="err"))
    await trio.sleep(40)
    assert _pod_events(api, "BackOff") and not _pod_events(api, "OOMKilling")


async def test_the_spam_filter_throttles_writes_and_the_series_keeps_counting(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, _crash_loop("oom"))
    engine, _ = await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="oom"))
    await trio.sleep(3600)
    posts = [c for c in api.log("POST", EVENTS) if c.body["involvedObject"].get("name") == "p"]
    names = {f"{EVENTS}/{c.body['metadata']['name']}" for c in posts}
    about_p = posts + [c for c in api.log("PATCH", EVENTS) if c.path in names]
    assert len(about_p) > len(posts)  # the series were PATCHed too
    # 25 at once, then one per 5 min: a crash loop of an hour (16 restarts, each a Pulled,
    # Created, Started, BackOff and the node's OOMKilling) is not 5 writes a restart.
    assert 25 <= len(about_p) <= 25 + 3600 // 300 + 1
    events = engine.ctx.kubelet_events
    assert events is not None and events.throttled > 30
    (stored,) = _stored(api, "BackOff")
    patches = [p.body["count"] for p in api.log("PATCH", f"{EVENTS}/{stored['metadata']['name']}")]
    assert patches == sorted(patches) and patches[-1] == stored["count"]
    # Counted while throttled: the count is past the number of writes of the series.
    assert stored["count"] > len(patches) + 1


async def test_readiness_flapping_posts_unhealthy_per_failed_probe(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    flap = {"readiness": {"period": "60s", "notReadyFor": "30s"}}
    api.create(
        SCRIPTS,
        {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "MockStatus",
            "metadata": {"name": "flappy", "namespace": "default"},
            "spec": {"steps": [{"after": "0s", "phase": "Running", "containers": [flap]}]},
        },
    )
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="flappy"))
    await trio.sleep(40)  # not ready from 30 s: the 3 failed probes that made it so
    (unhealthy,) = _pod_events(api, "Unhealthy")
    assert unhealthy["type"] == "Warning"
    assert unhealthy["message"] == "Readiness probe failed: HTTP probe failed with statuscode: 503"
    assert unhealthy["involvedObject"]["fieldPath"] == "spec.containers{main}"
    assert unhealthy["source"] == {"component": "kubelet", "host": "n1"}
    assert unhealthy["count"] == 3
    await trio.sleep(25)  # ready again at 60 s: 30 s of probes every 10 s failed meanwhile
    (stored,) = _stored(api, "Unhealthy")
    assert stored["count"] == 3 + 2
    await trio.sleep(30)  # not ready again at 90 s
    (stored,) = _stored(api, "Unhealthy")
    assert stored["count"] == 3 + 2 + 3
    assert len(_pod_events(api, "Unhealthy")) == 1


async def test_a_sidecar_is_killed_when_its_pod_ends(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    obj = pod("p", "n1", delayRunning="5s", delaySucceeded="20s")
    obj["spec"]["initContainers"] = [
        {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always"},
    ]
    api.create(PODS, obj)
    await trio.sleep(25)
    (killing,) = _pod_events(api, "Killing")
    assert killing["message"] == "Stopping container proxy"
    assert killing["involvedObject"]["fieldPath"] == "spec.initContainers{proxy}"
    assert killing["type"] == "Normal"


async def test_a_repeat_of_an_expired_event_creates_it_again_with_its_count(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, _crash_loop("oom"))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="oom"))
    await trio.sleep(25)  # the first back-off window (20 s)
    (first,) = _stored(api, "BackOff")
    api.delete(f"{EVENTS}/{first['metadata']['name']}")  # its TTL ran out
    await trio.sleep(20)  # the second window (35 s): PATCH, 404, then POST again
    await trio.sleep(20)  # the third (60 s)
    posts = _pod_events(api, "BackOff")
    assert len(posts) == 2
    assert posts[1]["metadata"]["name"] == first["metadata"]["name"]
    (stored,) = _stored(api, "BackOff")
    assert stored["count"] >= 3


UP_SCRIPTS = """
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: oom-loop, namespace: default}
spec:
  selector: {matchLabels: {app: oom-loop}}
  steps:
    - after: 0s
      phase: Running
      containers: [{restarts: {runFor: 2s, exitCode: 137, reason: OOMKilled}}]
---
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: flapping, namespace: default}
spec:
  selector: {matchLabels: {app: flapping}}
  steps:
    - after: 0s
      phase: Running
      containers: [{readiness: {period: 6s, notReadyFor: 3s}}]
---
apiVersion: v1
kind: Pod
metadata: {name: oom-loop, namespace: default, labels: {app: oom-loop}}
spec:
  containers: [{name: app, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: flapping, namespace: default, labels: {app: flapping}}
spec:
  containers: [{name: app, image: nginx}]
"""


@pytest.mark.kubectl
def test_back_off_unhealthy_and_oom_killing_on_up(tmp_path: Path) -> None:
    """kubectl sees what a kubelet (and node-problem-detector) would have posted."""
    with up_process(tmp_path, "--nodes", "1") as up:
        kubectl(up.kubeconfig, "apply", "-f", "-", stdin=UP_SCRIPTS)

        def events() -> dict[str, list[dict[str, Any]]] | None:
            items = kubectl_json(up.kubeconfig, "get", "events", "-n", "default")["items"]
            by: dict[str, list[dict[str, Any]]] = {}
            for item in items:
                by.setdefault(item["reason"], []).append(item)
            backoff = by.get("BackOff") or [{}]
            unhealthy = by.get("Unhealthy") or [{}]
            done = (
                backoff[0].get("count", 0) >= 2
                and unhealthy[0].get("count", 0) >= 3
                and len(by.get("OOMKilling", ())) >= 3
            )
            return by if done else None

        by = wait_until(events, 40, "BackOff x2, Unhealthy x3, 3 OOMKilling")
        (backoff,) = by["BackOff"]
        assert backoff["type"] == "Warning"
        assert backoff["involvedObject"]["name"] == "oom-loop"
        assert backoff["message"].startswith(
            "Back-off restarting failed container app in pod oom-loop_default("
        )
        assert backoff["source"]["component"] == "kubelet"
        (unhealthy,) = by["Unhealthy"]
        assert unhealthy["message"] == (
            "Readiness probe failed: HTTP probe failed with statuscode: 503"
        )
        assert unhealthy["involvedObject"]["fieldPath"] == "spec.containers{app}"
        oom = by["OOMKilling"][0]
        assert oom["involvedObject"]["kind"] == "Node"
        assert oom["source"]["component"] == "kernel-monitor"
        assert oom["source"]["host"] == oom["involvedObject"]["name"]
        table = kubectl(up.kubeconfig, "get", "events", "-n", "default").stdout
        assert "BackOff" in table and "OOMKilling" in table
