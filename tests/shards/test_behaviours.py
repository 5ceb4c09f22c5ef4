"""Containers that change by themselves: crash loops with the kubelet's back-off, readiness flaps."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fleet.api import load_mock_status
from fleet.errors import InputError
from fleet.kube import MemoryApiserver
from shards._behaviours import BACKOFF_MAX, CrashLoop, ReadinessFlap, _runs
from shards._plan import RUNNING_READY, ContainerState
from tests.shards.test_engine import CRS, PODS, node_cr, phase, pod, start
from tests.shards.test_mockstatus import SCRIPTS, states, status

RUNNING = ContainerState("running", ready=True)


def test_backoff_is_the_kubelets_10s_doubling_to_5m_first_restart_at_once() -> None:
    starts, backoffs, period = _runs(5.0)
    assert backoffs[:9] == (0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0)
    assert starts[:5] == (0.0, 5.0, 20.0, 45.0, 90.0)
    assert period == 5.0 + BACKOFF_MAX
    # A run longer than twice the maximum: the back-off has expired by each exit.
    assert _runs(700.0)[1][:4] == (0.0, 0.0, 0.0, 0.0)


def test_crash_loop_states_restart_counts_and_last_state() -> None:
    loop = CrashLoop(5.0, exit_code=137, reason="OOMKilled")
    # The step began at offset 20 (seconds after the pod's creation).
    first, change, forced = loop.state_at(RUNNING, 1.0, 20.0, "Always")
    assert (first.kind, first.restart_count, first.started_at, first.last) == (
        "running",
        0,
        20.0,
        None,
    )
    assert (change, forced) == (25.0, None)
    second, change, _ = loop.state_at(RUNNING, 6.0, 20.0, "Always")
    assert (second.kind, second.restart_count, second.started_at, change) == (
        "running",
        1,
        25.0,
        30.0,
    )
    assert second.last is not None
    assert (second.last.exit_code, second.last.reason, second.last.finished_at) == (
        137,
        "OOMKilled",
        25.0,
    )
    waiting, change, _ = loop.state_at(RUNNING, 12.0, 20.0, "Always")
    assert (waiting.kind, waiting.reason, waiting.restart_count, waiting.backoff) == (
        "waiting",
        "CrashLoopBackOff",
        1,
        10.0,
    )
    assert change == 40.0  # exit at 30, back-off 10 s
    assert not waiting.ready
    # Hours later: settled at 5 min, counts computed, not replayed.
    late, _, _ = loop.state_at(RUNNING, 10_000.0, 20.0, "Always")
    assert late.restart_count == 37 and late.backoff == 300.0
    # Never (or OnFailure with exit 0): one run, then terminated for good; the pod ends.
    done, change, forced = loop.state_at(RUNNING, 9.0, 20.0, "Never")
    assert (done.kind, done.exit_code, done.reason, change, forced) == (
        "terminated",
        137,
        "OOMKilled",
        None,
        "Failed",
    )
    ok = CrashLoop(5.0, exit_code=0, reason="Completed")
    assert ok.state_at(RUNNING, 9.0, 0.0, "OnFailure")[2] == "Succeeded"
    assert ok.state_at(RUNNING, 9.0, 0.0, "Always")[0].restart_count == 1


def test_readiness_flap() -> None:
    flap = ReadinessFlap(30.0, 10.0)
    assert flap.state_at(RUNNING, 5.0, 100.0, "Always")[:2] == (RUNNING, 120.0)
    not_ready, change, _ = flap.state_at(RUNNING, 25.0, 100.0, "Always")
    assert (not_ready.ready, change) == (False, 130.0)
    assert flap.state_at(RUNNING, 31.0, 100.0, "Always")[0].ready
    waiting = ContainerState("waiting", reason="CrashLoopBackOff")
    assert flap.state_at(waiting, 25.0, 0.0, "Always")[0] is waiting


def _script(name: str, *steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "MockStatus",
        "metadata": {"name": name},
        "spec": {"steps": list(steps)},
    }


@pytest.mark.parametrize(
    ("container", "phase_", "message"),
    [
        ({"restarts": {"runFor": "5s"}}, "Pending", "restarts and readiness need a Running step"),
        (
            {"restarts": {"runFor": "5s"}, "waiting": {}},
            "Running",
            "restarts and readiness are for running containers",
        ),
        (
            {"readiness": {"period": "10s", "notReadyFor": "10s"}},
            "Running",
            "notReadyFor must be more than 0 and less than period",
        ),
    ],
)
def test_bad_behaviours(container: dict[str, Any], phase_: str, message: str) -> None:
    raw = {**_script("s", {"after": "0s", "phase": phase_, "containers": [container]})}
    raw["metadata"]["namespace"] = "default"
    with pytest.raises(InputError, match=message):
        load_mock_status(raw)


CRASHING = _script(
    "crashing",
    {"after": "0s", "phase": "Running"},
    {
        "after": "10s",
        "phase": "Running",
        "containers": [
            {
                "name": "main",
                "restarts": {"runFor": "5s", "exitCode": 137, "reason": "OOMKilled"},
            }
        ],
    },
)


async def test_crash_loop_on_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(SCRIPTS, CRASHING)
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, pod("p", "n1", mockStatus="crashing"))
    await trio.sleep(5)
    main = states(api, "p")["main"]
    first_id = main["containerID"]
    assert (main["restartCount"], main["lastState"]) == (0, {})
    await trio.sleep(12)  # 17 s in: exited at 15, restarted at once
    main = states(api, "p")["main"]
    assert main["restartCount"] == 1 and "running" in main["state"]
    assert main["containerID"] != first_id
    last = main["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"], last["containerID"]) == (137, "OOMKilled", first_id)
    await trio.sleep(5)  # 22 s in: exited at 20, back-off 10 s until 30
    main = states(api, "p")["main"]
    assert main["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert main["state"]["waiting"]["message"].startswith(
        "back-off 10s restarting failed container=main pod=p_default("
    )
    assert main["ready"] is False and main["restartCount"] == 1
    assert status(api, "p")["phase"] == "Running"
    ready = {c["type"]: c["status"] for c in status(api, "p")["conditions"]}
    assert ready["Ready"] == "False"
    await trio.sleep(10)  # 32 s in: running again
    main = states(api, "p")["main"]
    assert main["restartCount"] == 2 and "running" in main["state"] and main["ready"]
    # Writes only at changes: a handful of PATCHes, not one per second.
    assert len(api.log("PATCH", f"{PODS}/p/status")) <= 8


async def test_restart_policy_never_ends_the_pod(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    raw = _script(
        "once",
        {"after": "0s", "phase": "Running", "containers": [{"restarts": {"runFor": "5s"}}]},
    )
    api.create(SCRIPTS, raw)
    await start(api, nursery)
    await trio.sleep(2)
    obj = pod("p", "n1", mockStatus="once")
    obj["spec"]["restartPolicy"] = "Never"
    api.create(PODS, obj)
    await trio.sleep(3)
    assert phase(api, "p") == "Running"
    await trio.sleep(4)
    assert phase(api, "p") == "Failed"
    terminated = states(api, "p")["main"]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (1, "Error")


async def test_readiness_flaps_on_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    raw = _script(
        "flappy",
        {
            "after": "0s",
            "phase": "Running",
            "containers": [{"readiness": {"period": "20s", "notReadyFor": "5s"}}],
        },
    )
    api.create(SCRIPTS, raw)
    await start(api, nursery)
    await trio.sleep(2)
    created = trio.current_time()
    api.create(PODS, pod("p", "n1", mockStatus="flappy"))
    seen: list[tuple[float, str]] = []
    while trio.current_time() < created + 45:
        value = {c["type"]: c["status"] for c in status(api, "p").get("conditions") or []}.get(
            "Ready"
        )
        if value and (not seen or seen[-1][1] != value):
            seen.append((trio.current_time() - created, value))
        await trio.sleep(0.5)
    assert [v for _, v in seen] == ["True", "False", "True", "False", "True"]
    # Not ready for the last 5 s of every 20 s (creation times have whole seconds).
    for (at, _), expected in zip(seen[1:], [15, 20, 35, 40], strict=True):
        assert expected <= at < expected + 1.5
    assert RUNNING_READY.ready


async def test_sidecars_keep_running_beside_the_app_containers(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Restartable init containers (restartPolicy: Always) as Kubernetes >= 1.29 reports them:
    running, started and ready once the init phase is over; plain init containers complete."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    await start(api, nursery)
    await trio.sleep(2)
    obj = pod("p", "n1", delayRunning="5s", delaySucceeded="20s")
    obj["spec"]["initContainers"] = [
        {"name": "setup", "image": "busybox"},
        {"name": "proxy", "image": "envoy:1.30", "restartPolicy": "Always"},
    ]
    api.create(PODS, obj)
    await trio.sleep(2)
    inits = {c["name"]: c for c in status(api, "p")["initContainerStatuses"]}
    assert inits["proxy"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    await trio.sleep(6)  # Running
    inits = {c["name"]: c for c in status(api, "p")["initContainerStatuses"]}
    assert inits["setup"]["state"]["terminated"]["reason"] == "Completed"
    assert "started" not in inits["setup"]
    proxy = inits["proxy"]
    assert "running" in proxy["state"] and proxy["started"] is True and proxy["ready"] is True
    conditions = {c["type"]: c["status"] for c in status(api, "p")["conditions"]}
    assert conditions["Initialized"] == "True" and conditions["Ready"] == "True"
    await trio.sleep(15)  # Succeeded: the sidecar is stopped with the app
    assert phase(api, "p") == "Succeeded"
    inits = {c["name"]: c for c in status(api, "p")["initContainerStatuses"]}
    assert inits["proxy"]["state"]["terminated"]["exitCode"] == 0
    assert inits["proxy"]["started"] is False
