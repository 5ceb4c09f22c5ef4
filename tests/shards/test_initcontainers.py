"""Init containers in order (``spec.initContainers`` of a MockStatus, ``shards._initrun``).

Each init container waits (PodInitializing), runs, completes, then the next
starts; the app containers wait (PodInitializing) and Initialized is False
until the last one is done; the steps wait for them. A failing one fails the
pod under restartPolicy Never, or is restarted with the kubelet's back-off
(Init:CrashLoopBackOff). Plans alone, then the shard on the autojump clock.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from fleet.api import load_mock_status
from fleet.errors import InputError
from fleet.kube import MemoryApiserver
from shards._initrun import InitEntry, InitRun
from shards._scripts import compile_script
from tests.shards.test_engine import CRS, PODS, node_cr, phase, pod, start
from tests.shards.test_mockstatus import SCRIPTS, states, status

INITS = (("fetch", False), ("migrate", False), ("proxy", True))


def _script(name: str, init: list[dict[str, Any]], *steps: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
        "kind": "MockStatus",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"initContainers": init, "steps": list(steps)},
    }


def _kinds(step: Any) -> dict[str, str]:
    return {name: f"{s.kind}:{s.reason}" if s.reason else s.kind for name, s in step.init_overrides}


def test_init_containers_run_one_after_the_other_and_the_steps_wait() -> None:
    plan = compile_script(
        load_mock_status(
            _script(
                "s",
                [{"runFor": "5s"}, {"name": "proxy", "runFor": "2s"}],
                {"after": "0s", "phase": "Running"},
            )
        )
    )
    assert plan.init == InitRun(InitEntry(run_for=5.0), (("proxy", InitEntry(run_for=2.0)),))
    first = plan.state_at(1.0, "Always", INITS)
    assert first.phase == "Pending" and first.containers.reason == "PodInitializing"
    assert _kinds(first) == {
        "fetch": "running",
        "migrate": "waiting:PodInitializing",
        "proxy": "waiting:PodInitializing",
    }
    assert plan.next_change_after(1.0, "Always", INITS) == 5.0
    assert _kinds(plan.state_at(6.0, "Always", INITS)) == {
        "fetch": "terminated:Completed",
        "migrate": "running",
        "proxy": "waiting:PodInitializing",
    }
    sidecar = dict(plan.state_at(10.5, "Always", INITS).init_overrides)["proxy"]
    assert (sidecar.kind, sidecar.ready) == ("running", False)  # starting: the next waits
    assert plan.next_change_after(10.5, "Always", INITS) == 12.0
    # Done at 12 s: the Running step (after 0s) waited for them; its containers start then.
    done = plan.state_at(12.0, "Always", INITS)
    assert done.phase == "Running" and done.started_at == 12.0
    assert dict(done.init_overrides)["migrate"].finished_at == 10.0
    assert plan.next_change_after(12.0, "Always", INITS) is None
    # A pod without init containers, and the same Plan: the steps as written.
    assert plan.state_at(0.0, "Always", ()).phase == "Running"


def test_a_failing_init_container_fails_the_pod_under_never() -> None:
    run = InitRun(named=(("migrate", InitEntry(run_for=3.0, exit_code=2)),))
    step, change = run.step_at(1.0, INITS, "Never")
    assert step.phase == "Pending" and change == 3.0
    step, change = run.step_at(4.0, INITS, "Never")
    assert step.phase == "Failed" and change is None
    migrate = dict(step.init_overrides)["migrate"]
    assert (migrate.kind, migrate.exit_code, migrate.reason) == ("terminated", 2, "Error")
    assert dict(step.init_overrides)["proxy"].reason == "PodInitializing"  # never started
    assert run.done_at(INITS, "Never") is None


def test_a_failing_init_container_restarts_with_back_off_then_completes() -> None:
    run = InitRun(named=(("fetch", InitEntry(run_for=2.0, exit_code=1, failures=2)),))
    # Runs at 0 and 2 (the first restart at once), then a 10 s back-off: 14, completes 16.
    step, change = run.step_at(5.0, INITS, "OnFailure")
    fetch = dict(step.init_overrides)["fetch"]
    assert (fetch.kind, fetch.reason, fetch.restart_count, fetch.backoff) == (
        "waiting",
        "CrashLoopBackOff",
        1,
        10.0,
    )
    assert change == 14.0 and step.phase == "Pending"
    assert run.done_at(INITS, "OnFailure") == 16.0
    done = dict(run.completed(INITS, "OnFailure"))["fetch"]
    assert (done.kind, done.restart_count, done.exit_code) == ("terminated", 2, 0)
    assert done.last is not None and done.last.exit_code == 1
    # No failures count: it never completes; the ones after it never start.
    forever = InitRun(named=(("fetch", InitEntry(run_for=2.0, exit_code=1)),))
    assert forever.done_at(INITS, "Always") is None
    late, _ = forever.step_at(10_000.0, INITS, "Always")
    assert dict(late.init_overrides)["migrate"].reason == "PodInitializing"
    assert late.phase == "Pending"


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ([{"runFor": "1s"}, {"runFor": "2s"}], "a second entry with no name"),
        ([{"name": "a"}, {"name": "a"}], "a second entry with name 'a'"),
        ([{"failures": 2}], "failures needs a non-zero exitCode"),
        ([{"runFor": "soon"}], "runFor"),
    ],
)
def test_bad_init_containers(init: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_mock_status(_script("s", init, {"after": "0s", "phase": "Running"}))


def _inits(api: MemoryApiserver, name: str) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in status(api, name)["initContainerStatuses"]}


def _conditions(api: MemoryApiserver, name: str) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status(api, name)["conditions"]}


def _init_pod(name: str, script: str, restart_policy: str = "Always") -> dict[str, Any]:
    obj = pod(name, "n1", mockStatus=script)
    obj["spec"]["restartPolicy"] = restart_policy
    obj["spec"]["initContainers"] = [
        {"name": "fetch", "image": "busybox"},
        {"name": "migrate", "image": "busybox"},
    ]
    return obj


async def test_init_containers_in_order_on_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        _script(
            "inits",
            [{"runFor": "4s"}],
            {"after": "0s", "phase": "Running"},
            {"after": "30s", "phase": "Succeeded"},
        ),
    )
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, _init_pod("p", "inits"))
    await trio.sleep(2)  # 2 s in: fetch runs, migrate waits
    inits = _inits(api, "p")
    assert list(inits) == ["fetch", "migrate"]  # spec order
    assert "running" in inits["fetch"]["state"] and inits["fetch"]["ready"] is False
    assert inits["migrate"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert states(api, "p")["main"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    initialized = _conditions(api, "p")["Initialized"]
    assert (initialized["status"], initialized["reason"], initialized["message"]) == (
        "False",
        "ContainersNotInitialized",
        "containers with incomplete status: [fetch migrate]",
    )
    assert phase(api, "p") == "Pending"
    await trio.sleep(4)  # 6 s in: fetch completed at 4, migrate runs
    inits = _inits(api, "p")
    fetch = inits["fetch"]["state"]["terminated"]
    assert (fetch["reason"], fetch["exitCode"], inits["fetch"]["ready"]) == ("Completed", 0, True)
    assert fetch["finishedAt"] > fetch["startedAt"]
    assert "running" in inits["migrate"]["state"]
    assert _conditions(api, "p")["Initialized"]["message"] == (
        "containers with incomplete status: [migrate]"
    )
    await trio.sleep(4)  # 10 s in: both done at 8, the app runs
    assert phase(api, "p") == "Running"
    assert _conditions(api, "p")["Initialized"]["status"] == "True"
    main = states(api, "p")["main"]["state"]["running"]
    migrate = _inits(api, "p")["migrate"]["state"]["terminated"]
    assert main["startedAt"] >= migrate["finishedAt"]
    await trio.sleep(30)
    assert phase(api, "p") == "Succeeded"


async def test_failing_init_container_on_the_shard(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        _script(
            "bad-migration",
            [{"name": "migrate", "runFor": "3s", "exitCode": 1, "failures": 2}],
            {"after": "0s", "phase": "Running"},
        ),
    )
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, _init_pod("never", "bad-migration", "Never"))
    api.create(PODS, _init_pod("loops", "bad-migration", "Always"))
    await trio.sleep(5)  # migrate exited at 3 s
    assert phase(api, "never") == "Failed"
    migrate = _inits(api, "never")["migrate"]["state"]["terminated"]
    assert (migrate["exitCode"], migrate["reason"]) == (1, "Error")
    assert states(api, "never")["main"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert _conditions(api, "never")["Initialized"]["status"] == "False"
    # Under Always: restarted at once (3 s), exited again (6 s), back-off 10 s.
    await trio.sleep(4)  # 9 s in
    migrate = _inits(api, "loops")["migrate"]
    assert migrate["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert migrate["state"]["waiting"]["message"].startswith(
        "back-off 10s restarting failed container=migrate pod=loops_default("
    )
    assert migrate["restartCount"] == 1 and migrate["lastState"]["terminated"]["exitCode"] == 1
    assert phase(api, "loops") == "Pending"
    await trio.sleep(12)  # 21 s in: the third run (16 s) completed at 19 s
    migrate = _inits(api, "loops")["migrate"]
    assert migrate["state"]["terminated"]["reason"] == "Completed"
    assert migrate["restartCount"] == 2
    assert phase(api, "loops") == "Running"
    assert _conditions(api, "loops")["Initialized"]["status"] == "True"


async def test_app_containers_show_pod_initializing_until_they_start(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """After the init containers, before the step that starts the app: PodInitializing, the
    kubelet's default waiting reason for a pod with init containers (not ContainerCreating)."""
    api = MemoryApiserver()
    api.create(CRS, node_cr("n1"))
    api.create(
        SCRIPTS,
        _script(
            "late-start",
            [{"runFor": "2s"}],
            {"after": "0s", "phase": "Pending"},
            {"after": "10s", "phase": "Running"},
        ),
    )
    await start(api, nursery)
    await trio.sleep(2)
    api.create(PODS, _init_pod("p", "late-start"))
    await trio.sleep(6)  # both init containers done at 4 s
    assert all("terminated" in c["state"] for c in _inits(api, "p").values())
    assert _conditions(api, "p")["Initialized"]["status"] == "True"
    assert states(api, "p")["main"]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert phase(api, "p") == "Pending"
    await trio.sleep(5)  # 11 s in
    assert phase(api, "p") == "Running"
