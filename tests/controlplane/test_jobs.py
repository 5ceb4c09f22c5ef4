"""The Job controller against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._informer import Informers
from fleet.controlplane._jobs import TRACKING_FINALIZER, JobController, format_indexes
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually

stamp = MemoryApiserver.stamp

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def job(name: str, **spec: Any) -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-name": name}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6,
                 "completionMode": "NonIndexed",
                 "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"restartPolicy": "Never",
                                       "containers": [{"name": "c", "image": "busybox"}]}},
                 **spec},
    }  # fmt: skip


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = JobController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api


def pods(api: MemoryApiserver, *, alive: bool = True) -> list[dict[str, Any]]:
    items = api.items("/api/v1/namespaces/default/pods")
    if alive:
        items = [
            p
            for p in items
            if not p["metadata"].get("deletionTimestamp")
            and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        ]
    return items


def get(api: MemoryApiserver, name: str) -> dict[str, Any]:
    found = api.get(f"{JOBS}/{name}")
    assert found is not None
    return found


def finish(api: MemoryApiserver, pod: dict[str, Any], phase: str = "Succeeded") -> None:
    """What the fleet's kubelet does when a pod's containers exit."""
    api.patch(
        f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}/status",
        {"status": {"phase": phase}},
    )


def conditions(job: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["reason"] for c in job.get("status", {}).get("conditions") or []}


async def test_runs_completions_at_most_parallelism_at_once(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    created = api.create(JOBS, job("pi", completions=3, parallelism=2))
    await eventually(lambda: len(pods(api)) == 2)
    first = pods(api)[0]
    assert first["metadata"]["finalizers"] == [TRACKING_FINALIZER]
    assert first["metadata"]["generateName"] == "pi-"
    assert first["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": created["metadata"]["uid"],
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip
    await eventually(lambda: get(api, "pi")["status"].get("active") == 2)
    status = get(api, "pi")["status"]
    assert status == {
        "active": 2,
        "ready": 0,
        "terminating": 0,
        "startTime": stamp(api.now()),
        "uncountedTerminatedPods": {},
    }
    for pod in pods(api):
        finish(api, pod)
    # Two done, one more to make; never more than the completions still missing.
    await eventually(lambda: get(api, "pi")["status"].get("succeeded") == 2)
    await eventually(lambda: len(pods(api)) == 1)
    finish(api, pods(api)[0])
    await eventually(lambda: "Complete" in conditions(get(api, "pi")))
    done = get(api, "pi")
    assert conditions(done) == {
        "SuccessCriteriaMet": "CompletionsReached",
        "Complete": "CompletionsReached",
    }
    assert done["status"]["succeeded"] == 3 and "failed" not in done["status"]
    assert "active" not in done["status"] and done["status"]["uncountedTerminatedPods"] == {}
    assert done["status"]["completionTime"] >= done["status"]["startTime"]
    assert {c["message"] for c in done["status"]["conditions"]} == {
        "Reached expected number of succeeded pods"
    }
    every = pods(api, alive=False)
    assert len(every) == 3 and all(not p["metadata"].get("finalizers") for p in every)


async def test_failures_back_off_then_exceed_the_backoff_limit(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("flaky", backoffLimit=1))
    await eventually(lambda: len(pods(api)) == 1)
    failed_at = trio.current_time()
    finish(api, pods(api)[0], "Failed")
    await eventually(lambda: len(pods(api)) == 1)
    assert trio.current_time() - failed_at >= 10.0  # DefaultJobPodFailureBackOff
    assert get(api, "flaky")["status"]["failed"] == 1
    finish(api, pods(api)[0], "Failed")
    await eventually(lambda: "Failed" in conditions(get(api, "flaky")))
    failed = get(api, "flaky")
    assert conditions(failed) == {
        "FailureTarget": "BackoffLimitExceeded",
        "Failed": "BackoffLimitExceeded",
    }
    assert failed["status"]["failed"] == 2 and "completionTime" not in failed["status"]
    assert not pods(api)


async def test_active_deadline_fails_the_job_and_deletes_its_pods(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("slow", parallelism=2, completions=4, activeDeadlineSeconds=30))
    await eventually(lambda: len(pods(api)) == 2)
    start = trio.current_time()
    await eventually(lambda: "Failed" in conditions(get(api, "slow")), within=120)
    assert 30 <= trio.current_time() - start <= 32
    assert conditions(get(api, "slow"))["Failed"] == "DeadlineExceeded"
    assert not pods(api, alive=False)  # deleted, their finalizers released
    assert get(api, "slow")["status"]["failed"] == 2


async def test_suspend_and_resume(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("later", suspend=True))
    await eventually(lambda: "Suspended" in conditions(get(api, "later")))
    assert not pods(api) and "startTime" not in get(api, "later")["status"]
    api.patch(f"{JOBS}/later", {"spec": {"suspend": False}})
    await eventually(lambda: len(pods(api)) == 1)
    await eventually(lambda: conditions(get(api, "later"))["Suspended"] == "JobResumed")
    assert get(api, "later")["status"]["startTime"]


async def test_indexed_job_gives_each_pod_its_index(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("idx", completions=3, parallelism=3, completionMode="Indexed"))
    await eventually(lambda: len(pods(api)) == 3)
    indexes = sorted(
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods(api)
    )
    assert indexes == ["0", "1", "2"]
    one = pods(api)[0]
    assert one["spec"]["hostname"].startswith("idx-")
    assert one["spec"]["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
    for pod in pods(api):
        finish(api, pod)
    await eventually(lambda: "Complete" in conditions(get(api, "idx")))
    assert get(api, "idx")["status"]["completedIndexes"] == "0-2"


async def test_pods_of_a_deleted_job_lose_the_finalizer(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("gone"))
    await eventually(lambda: len(pods(api)) == 1)
    name = pods(api)[0]["metadata"]["name"]
    api.delete(f"{JOBS}/gone")
    await eventually(
        lambda: (
            not (api.get(f"/api/v1/namespaces/default/pods/{name}") or {})
            .get("metadata", {})
            .get("finalizers")
        )
    )


async def test_ttl_after_finished_deletes_the_job(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(JOBS, job("short", ttlSecondsAfterFinished=60))
    await eventually(lambda: len(pods(api)) == 1)
    finish(api, pods(api)[0])
    await eventually(lambda: "Complete" in conditions(get(api, "short")))
    done_at = trio.current_time()
    await eventually(lambda: api.get(f"{JOBS}/short") is None, within=120)
    assert 59 <= trio.current_time() - done_at <= 62  # times are whole seconds


def test_format_indexes() -> None:
    assert format_indexes({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_indexes(set()) == ""
