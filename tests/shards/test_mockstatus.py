"""Pods following a MockStatus: compiled scripts, the shard's watch, missing and changed scripts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import trio
import yaml

from fleet._settings import FleetSettings
from fleet.api import crd_manifests, load_mock_status
from fleet.kube import Client, HotTransport, MemoryApiserver, load_config
from fleet.sandbox import RunningSandbox
from shards import ShardEngine
from shards._plan import ContainerState
from shards._scripts import compile_script
from tests.shards.test_engine import CRS, EVENTS, PODS, node_cr, phase, pod, start, warnings

BASE = MemoryApiserver.BASE
stamp = MemoryApiserver.stamp

SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/mockstatuses"
OTHER_SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/other/mockstatuses"

SAMPLE = """\
apiVersion: mock.zhizuqiu.cn/v1alpha1
kind: MockStatus
metadata: {name: crash-then-fail, namespace: default}
spec:
  steps:
    - after: 5s
      phase: Pending
      containers: [{waiting: {reason: ErrImagePull, message: pull access denied}}]
    - after: 20s
      phase: Running
      containers: [{name: sidecar, ready: false, restartCount: 2}]
    - after: 2m
      phase: Failed
      reason: OOMKilled
      message: the pod ran out of memory
      containers: [{terminated: {exitCode: 137, reason: OOMKilled}}]
"""


def script(name: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "MockStatus",
        "metadata": {"name": name},
        "spec": {"steps": list(steps)},
    }


def two_containers(name: str, node: str, mock_status: str) -> dict[str, Any]:
    obj = pod(name, node, mockStatus=mock_status)
    obj["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
    return obj


def status(api: MemoryApiserver, name: str) -> dict[str, Any]:
    obj = api.get(f"{PODS}/{name}")
    assert obj is not None
    result: dict[str, Any] = obj["status"]
    return result


def states(api: MemoryApiserver, name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status(api, name).get("containerStatuses") or []}


async def phases_until(api: MemoryApiserver, name: str, end: float) -> list[tuple[float, str]]:
    """(time, phase) at each phase change of pod ``name`` until trio time ``end``."""
    seen: list[tuple[float, str]] = []
    while trio.current_time() < end:
        now = phase(api, name)
        if now is not None and (not seen or seen[-1][1] != now):
            seen.append((trio.current_time(), now))
        await trio.sleep(0.25)
    return seen


def test_compile_script_steps_and_container_defaults() -> None:
    plan = compile_script(load_mock_status(yaml.safe_load(SAMPLE)))
    assert [(s.at, s.phase, s.source) for s in plan.steps] == [
        (0.0, "Pending", "creation"),
        (5.0, "Pending", "mockStatus"),
        (20.0, "Running", "mockStatus"),
        (120.0, "Failed", "mockStatus"),
    ]
    pulling = plan.state_at(6.0)
    assert pulling.containers == ContainerState(
        "waiting", reason="ErrImagePull", message="pull access denied"
    )
    running = plan.state_at(30.0)
    assert running.container_state("main") == ContainerState("running", ready=True)
    assert running.container_state("sidecar") == ContainerState(
        "running", ready=False, restart_count=2
    )
    assert running.started_at == 20.0
    failed = plan.final
    assert (failed.reason, failed.message, failed.started_at) == (
        "OOMKilled",
        "the pod ran out of memory",
        20.0,
    )
    assert failed.container_state("any") == ContainerState(
        "terminated", reason="OOMKilled", exit_code=137
    )
    assert plan.next_change_after(120.0) is None
    # Terminal defaults: exit 0 Completed in Succeeded, exit 1 Error in Failed; a terminal
    # step without a Running step before it starts its containers at its own offset.
    done = compile_script(
        load_mock_status(script("s", {"after": "0s", "phase": "Succeeded"}))
    ).final
    assert done.containers == ContainerState("terminated", reason="Completed", exit_code=0)
    assert (done.at, done.started_at) == (0.0, 0.0)
    crashed = compile_script(load_mock_status(script("f", {"after": "3s", "phase": "Failed"})))
    assert crashed.final.containers == ContainerState("terminated", reason="Error", exit_code=1)
    assert crashed.final.started_at == 3.0


async def test_pod_follows_its_mock_status(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, yaml.safe_load(SAMPLE))
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, two_containers("p", "n1", "crash-then-fail"))
    await trio.sleep(3)  # 3 s in: before the first step, still being created
    assert {n: c["state"] for n, c in states(api, "p").items()} == {
        "main": {"waiting": {"reason": "ContainerCreating"}},
        "sidecar": {"waiting": {"reason": "ContainerCreating"}},
    }
    await trio.sleep(5)  # 8 s in
    assert status(api, "p")["phase"] == "Pending"
    waiting = states(api, "p")["main"]["state"]["waiting"]
    assert waiting == {"reason": "ErrImagePull", "message": "pull access denied"}
    seen = await phases_until(api, "p", created + 125)
    assert [p for _, p in seen] == ["Pending", "Running", "Failed"]
    assert 20 <= seen[1][0] - created < 21
    assert 120 <= seen[2][0] - created < 121
    final = status(api, "p")
    assert (final["reason"], final["message"]) == ("OOMKilled", "the pod ran out of memory")
    terminated = states(api, "p")["sidecar"]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "OOMKilled")
    # No Warning about the pod; the kernel's OOM kill of each container, on the node.
    reasons = [(w["reason"], w["involvedObject"]["kind"]) for w in warnings(api)]
    assert reasons == [("OOMKilling", "Node")] * 2


async def test_sidecar_override_while_running(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, yaml.safe_load(SAMPLE))
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, two_containers("p", "n1", "crash-then-fail"))
    await trio.sleep(30)
    running = status(api, "p")
    assert running["phase"] == "Running"
    assert "reason" not in running  # the ErrImagePull step had no pod-level reason
    containers = states(api, "p")
    assert (containers["main"]["ready"], containers["main"]["restartCount"]) == (True, 0)
    assert (containers["sidecar"]["ready"], containers["sidecar"]["restartCount"]) == (False, 2)
    assert "running" in containers["sidecar"]["state"]
    conditions = {c["type"]: c["status"] for c in running["conditions"]}
    assert conditions["Ready"] == "False" and conditions["ContainersReady"] == "False"


async def test_missing_mock_status_waits_then_applies_from_creation(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, pod("p", "n1", mockStatus="later"))
    await trio.sleep(30)
    pending = status(api, "p")
    assert pending["phase"] == "Pending"
    assert pending["reason"] == "MockStatusNotFound"
    assert "no MockStatus default/later" in pending["message"]
    events = warnings(api)
    assert [(e["reason"], e["type"], e["involvedObject"]["name"]) for e in events] == [
        ("MockStatusNotFound", "Warning", "p")
    ]
    # A MockStatus of that name in another namespace does not count.
    api.create(OTHER_SCRIPTS, script("later", {"after": "0s", "phase": "Running"}))
    await trio.sleep(2)
    assert status(api, "p")["reason"] == "MockStatusNotFound"
    # Created 32 s after the pod: the pod goes straight to the state at 32 s (no replay
    # of the Pending step), then on along its timeline.
    api.create(
        SCRIPTS,
        script(
            "later",
            {"after": "10s", "phase": "Running"},
            {"after": "60s", "phase": "Succeeded"},
        ),
    )
    seen = await phases_until(api, "p", created + 65)
    assert [p for _, p in seen] == ["Pending", "Running", "Succeeded"]
    assert seen[1][0] - created < 33
    assert 60 <= seen[2][0] - created < 61
    done = status(api, "p")
    assert "reason" not in done and "message" not in done
    started = states(api, "p")["main"]["state"]["terminated"]["startedAt"]
    # The timeline's 10 s, not the moment the script appeared.
    assert started == stamp(BASE + timedelta(seconds=created + 10))
    assert len(warnings(api)) == 1


async def test_changed_mock_status_replans_but_terminal_states_stay(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        script("job", {"after": "0s", "phase": "Running"}, {"after": "10s", "phase": "Succeeded"}),
    )
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, pod("done", "n1", mockStatus="job"))
    await trio.sleep(15)
    assert phase(api, "done") == "Succeeded"
    born = trio.current_time()
    api.create(PODS, pod("young", "n1", mockStatus="job"))
    await trio.sleep(2)
    assert phase(api, "young") == "Running"
    # The script now fails its pods at 40 s: the running pod follows, the finished one stays.
    api.patch(
        f"{SCRIPTS}/job",
        {
            "spec": {
                "steps": [
                    {"after": "0s", "phase": "Running"},
                    {"after": "40s", "phase": "Failed", "reason": "DeadlineExceeded"},
                ]
            }
        },
    )
    young = await phases_until(api, "young", created + 60)
    assert [p for _, p in young] == ["Running", "Failed"]
    assert 40 <= young[1][0] - born < 41  # 40 s after its own creation
    assert status(api, "young")["reason"] == "DeadlineExceeded"
    assert phase(api, "done") == "Succeeded"
    assert "reason" not in status(api, "done")


async def test_invalid_or_deleted_mock_status(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        script("flip", {"after": "0s", "phase": "Running"}, {"after": "50s", "phase": "Failed"}),
    )
    # Out of order: the CRD's schema cannot say so, the shard's validation does.
    api.create(
        SCRIPTS,
        script("broken", {"after": "9s", "phase": "Running"}, {"after": "3s", "phase": "Failed"}),
    )
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, pod("follower", "n1", mockStatus="flip"))
    api.create(PODS, pod("victim", "n1", mockStatus="broken"))
    await trio.sleep(3)
    victim = status(api, "victim")
    assert (victim["phase"], victim["reason"]) == ("Pending", "InvalidMockStatus")
    assert "must be later than" in victim["message"]
    waiting = states(api, "victim")["main"]["state"]["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert phase(api, "follower") == "Running"
    # A pod following a valid version keeps it when the script turns invalid, then is deleted.
    api.patch(
        f"{SCRIPTS}/flip",
        {
            "spec": {
                "steps": [
                    {"after": "0s", "phase": "Succeeded"},
                    # Long enough that a loaded machine still sees the Pending step: a pod the
                    # shard first sees after it has passed goes straight to Running, correctly.
                    {"after": "2s", "phase": "Running"},
                ]
            }
        },
    )
    await trio.sleep(5)
    assert phase(api, "follower") == "Running"
    api.delete(f"{SCRIPTS}/flip")
    seen = await phases_until(api, "follower", created + 55)
    assert [p for _, p in seen] == ["Running", "Failed"]
    assert 50 <= seen[1][0] - created < 51
    # The broken script fixed: its pod goes on.
    api.patch(
        f"{SCRIPTS}/broken",
        {"spec": {"steps": [{"after": "3s", "phase": "Running"}]}},
    )
    await trio.sleep(2)
    fixed = status(api, "victim")
    assert fixed["phase"] == "Running" and "reason" not in fixed
    reasons = sorted(
        (c.body["involvedObject"]["kind"], c.body["reason"])
        for c in api.log("POST", EVENTS)
        if c.body["type"] == "Warning"
    )
    # One on the pod; one on each MockStatus while invalid (shard 0 reports; test_policies).
    assert reasons == [("MockStatus", "InvalidMockStatus")] * 2 + [("Pod", "InvalidMockStatus")]


# -- against the sandbox ---------------------------------------------------------------------


async def test_mock_status_against_the_sandbox(
    nursery: trio.Nursery, sandbox: RunningSandbox
) -> None:
    config = load_config(sandbox.kubeconfig)
    client = Client(config)
    hot = HotTransport(config)

    async def get(path: str) -> dict[str, Any] | None:
        response = await client.request("GET", path)
        return None if response.status == 404 else await client.get(path)

    async def pod_status(name: str) -> dict[str, Any]:
        obj = await get(f"{PODS}/{name}")
        result: dict[str, Any] = (obj or {}).get("status") or {}
        return result

    async with client, hot:
        for crd in crd_manifests():
            await client.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        if await get("/api/v1/namespaces/kube-mock-system") is None:
            await client.create("/api/v1/namespaces", {"metadata": {"name": "kube-mock-system"}})
        await client.create(
            SCRIPTS,
            script(
                "pull-then-run",
                {
                    "after": "0s",
                    "phase": "Pending",
                    "containers": [{"waiting": {"reason": "ErrImagePull"}}],
                },
                # Long enough that a loaded machine still sees the Pending step: a pod the
                # shard first sees after it has passed goes straight to Running, correctly.
                {"after": "2s", "phase": "Running"},
            ),
        )
        engine = ShardEngine(FleetSettings(), "0", control=client, hot=hot)
        await nursery.start(engine.run)
        await client.create(CRS, node_cr("sb-node"))
        with trio.fail_after(5):  # the node first, so the pods' timelines start with it driven
            while True:
                if await get("/api/v1/nodes/sb-node") is not None:
                    break
                await trio.sleep(0.05)
        await client.create(PODS, pod("scripted", "sb-node", mockStatus="pull-then-run"))
        await client.create(PODS, pod("orphan", "sb-node", mockStatus="not-yet"))
        reasons: set[str] = set()
        with trio.fail_after(8):
            while True:
                scripted = await pod_status("scripted")
                for entry in scripted.get("containerStatuses") or []:
                    reasons.add((entry["state"].get("waiting") or {}).get("reason", ""))
                orphan = await pod_status("orphan")
                if scripted.get("phase") == "Running" and orphan.get("reason"):
                    break
                await trio.sleep(0.05)
        assert "ErrImagePull" in reasons
        assert (orphan["phase"], orphan["reason"]) == ("Pending", "MockStatusNotFound")
        events = await client.get("/api/v1/namespaces/default/events")
        assert [
            (e["reason"], e["involvedObject"]["name"])
            for e in events["items"]
            if e["type"] == "Warning"
        ] == [("MockStatusNotFound", "orphan")]
        await client.create(SCRIPTS, script("not-yet", {"after": "0s", "phase": "Succeeded"}))
        with trio.fail_after(4):
            while True:
                orphan = await pod_status("orphan")
                if orphan.get("phase") == "Succeeded":
                    break
                await trio.sleep(0.05)
        assert "reason" not in orphan


def test_example_file_is_a_valid_script_and_a_deployment_following_it() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "mockstatus.yaml"
    mock_status, deployment = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    plan = compile_script(load_mock_status(mock_status))
    assert [s.phase for s in plan.steps] == ["Pending", "Running", "Failed"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["zhizuqiu.github.com/mockStatus"] == mock_status["metadata"]["name"]
    names = {c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert {c.name for c in mock_status_containers(mock_status)} <= names | {None}


def mock_status_containers(raw: dict[str, Any]) -> list[Any]:
    return [c for s in load_mock_status(raw).spec.steps for c in s.containers]
