"""The CronJob controller against the in-memory apiserver, on the autojump clock.

Trio time 0 is 2024-05-01T12:00:00Z (``fleet.kube.MemoryApiserver``'s base time), so ``*/1`` fires at 60, 120, ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._cronjobs import SCHEDULED_ANNOTATION, CronJobController
from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually

stamp = MemoryApiserver.stamp

CRONJOBS = "/apis/batch/v1/namespaces/default/cronjobs"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
MINUTES_AT_BASE = 1714564800 // 60  # 2024-05-01T12:00:00Z


def cronjob(name: str, schedule: str = "*/1 * * * *", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
                 "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1, **spec,
                 "jobTemplate": {"metadata": {"labels": {"team": "a"}},
                                 "spec": {"template": {"spec": {
                                     "restartPolicy": "OnFailure",
                                     "containers": [{"name": "c", "image": "busybox"}]}}}}},
    }  # fmt: skip


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = CronJobController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api


def jobs(api: MemoryApiserver) -> list[dict[str, Any]]:
    return api.items(JOBS)


def names(api: MemoryApiserver) -> list[str]:
    return sorted(j["metadata"]["name"] for j in jobs(api))


def cj_status(api: MemoryApiserver, name: str) -> dict[str, Any]:
    found = api.get(f"{CRONJOBS}/{name}")
    assert found is not None
    return dict(found.get("status") or {})


def complete(api: MemoryApiserver, name: str, kind: str = "Complete") -> None:
    """What the Job controller writes when a Job finishes."""
    now = stamp(api.now())
    api.patch(
        f"{JOBS}/{name}/status",
        {"status": {"completionTime": now,
                    "conditions": [{"type": kind, "status": "True", "lastTransitionTime": now}]}},
    )  # fmt: skip


async def test_makes_one_job_per_scheduled_minute(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    created = api.create(CRONJOBS, cronjob("tick"))
    await eventually(lambda: len(jobs(api)) == 1, within=120)
    assert 60 <= trio.current_time() < 61
    job = jobs(api)[0]
    assert job["metadata"]["name"] == f"tick-{MINUTES_AT_BASE + 1}"
    assert job["metadata"]["labels"] == {"team": "a"}
    assert job["metadata"]["annotations"] == {SCHEDULED_ANNOTATION: "2024-05-01T12:01:00Z"}
    assert job["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    await eventually(lambda: cj_status(api, "tick").get("lastScheduleTime"))
    status = cj_status(api, "tick")
    assert status["lastScheduleTime"] == "2024-05-01T12:01:00Z"
    assert [r["name"] for r in status["active"]] == [job["metadata"]["name"]]
    await eventually(lambda: len(jobs(api)) == 2, within=120)
    assert 120 <= trio.current_time() < 121
    complete(api, f"tick-{MINUTES_AT_BASE + 1}")
    await eventually(lambda: len(cj_status(api, "tick").get("active") or []) == 1)
    assert cj_status(api, "tick")["lastSuccessfulTime"] == stamp(api.now())


async def test_forbid_skips_while_a_job_runs(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(CRONJOBS, cronjob("solo", concurrencyPolicy="Forbid"))
    await eventually(lambda: len(jobs(api)) == 1, within=120)
    await trio.sleep(130)  # two more scheduled times pass while the first Job runs
    assert len(jobs(api)) == 1
    complete(api, names(api)[0])
    await eventually(lambda: len(jobs(api)) == 2, within=70)


async def test_replace_deletes_the_running_job(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(CRONJOBS, cronjob("swap", concurrencyPolicy="Replace"))
    await eventually(lambda: len(jobs(api)) == 1, within=120)
    first = names(api)[0]
    await eventually(lambda: names(api) == [f"swap-{MINUTES_AT_BASE + 2}"], within=120)
    assert first not in names(api)


async def test_history_limits_and_suspend(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(CRONJOBS, cronjob("keep", successfulJobsHistoryLimit=1, failedJobsHistoryLimit=0))
    await eventually(lambda: len(jobs(api)) == 1, within=120)
    complete(api, names(api)[0])
    await eventually(lambda: len(jobs(api)) == 2, within=120)
    complete(api, names(api)[1])
    # Two succeeded, one kept: the older goes.
    await eventually(lambda: names(api) == [f"keep-{MINUTES_AT_BASE + 2}"])
    await eventually(lambda: len(jobs(api)) == 2, within=120)
    complete(api, names(api)[1], "Failed")
    await eventually(lambda: names(api) == [f"keep-{MINUTES_AT_BASE + 2}"])
    api.patch(f"{CRONJOBS}/keep", {"spec": {"suspend": True}})
    await trio.sleep(300)
    assert names(api) == [f"keep-{MINUTES_AT_BASE + 2}"]


async def test_schedule_in_a_time_zone(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    # 21:05 in Tokyo is 12:05 UTC: trio time 300.
    api.create(CRONJOBS, cronjob("tokyo", "5 21 * * *", timeZone="Asia/Tokyo"))
    await eventually(lambda: len(jobs(api)) == 1, within=400)
    assert 300 <= trio.current_time() < 301
    annotations = jobs(api)[0]["metadata"]["annotations"]
    assert annotations[SCHEDULED_ANNOTATION] == "2024-05-01T21:05:00+09:00"
