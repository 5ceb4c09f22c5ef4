"""The StatefulSet controller against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.controlplane._statefulsets import StatefulSetController
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, fake_kubelets

STS = "/apis/apps/v1/namespaces/default/statefulsets"


def statefulset(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": name,
                 "podManagementPolicy": "OrderedReady",
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
                 **spec},
    }  # fmt: skip


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = StatefulSetController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api


def names(api: MemoryApiserver) -> list[str]:
    return sorted(
        p["metadata"]["name"]
        for p in api.items("/api/v1/namespaces/default/pods")
        if not p["metadata"].get("deletionTimestamp")
    )


def status(api: MemoryApiserver, name: str = "db") -> dict[str, Any]:
    found = api.get(f"{STS}/{name}")
    assert found is not None
    return dict(found.get("status") or {})


async def test_ordered_ready_creates_one_at_a_time_and_scales_down_from_the_top(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(STS, statefulset("db", 3))
    await eventually(lambda: names(api) == ["db-0"])
    await trio.sleep(5)
    assert names(api) == ["db-0"]  # db-1 waits for db-0 to be Running and Ready
    pod = api.get("/api/v1/namespaces/default/pods/db-0")
    assert pod is not None
    labels = pod["metadata"]["labels"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "db-0"
    assert labels["apps.kubernetes.io/pod-index"] == "0"
    assert labels["controller-revision-hash"].startswith("db-")
    assert (pod["spec"]["hostname"], pod["spec"]["subdomain"]) == ("db-0", "db")
    nursery.start_soon(fake_kubelets, api)
    seen: list[list[str]] = []

    def grown() -> bool:
        if not seen or seen[-1] != names(api):
            seen.append(names(api))
        return status(api).get("readyReplicas") == 3

    await eventually(grown, step=0.1)
    assert seen == [["db-0"], ["db-0", "db-1"], ["db-0", "db-1", "db-2"]]
    st = status(api)
    assert st["replicas"] == 3 and st["currentRevision"] == st["updateRevision"]
    assert st["currentReplicas"] == st["updatedReplicas"] == st["availableReplicas"] == 3

    api.patch(f"{STS}/db", {"spec": {"replicas": 1}})
    await eventually(lambda: names(api) == ["db-0"])
    await eventually(lambda: status(api).get("replicas") == 1)


async def test_parallel_and_rolling_update(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    nursery.start_soon(fake_kubelets, api)
    api.create(STS, statefulset("db", 3, podManagementPolicy="Parallel"))
    await eventually(lambda: names(api) == ["db-0", "db-1", "db-2"], within=1)
    await eventually(lambda: status(api).get("readyReplicas") == 3)
    before = status(api)["updateRevision"]
    api.patch(f"{STS}/db", {"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "db:2"}]}}}})  # fmt: skip
    order: list[str] = []

    def rolled() -> bool:
        for p in api.items("/api/v1/namespaces/default/pods"):
            image = p["spec"]["containers"][0]["image"]
            if image == "db:2" and p["metadata"]["name"] not in order:
                order.append(p["metadata"]["name"])
        st = status(api)
        return st.get("currentRevision") == st.get("updateRevision") != before and (
            st.get("readyReplicas") == 3
        )

    await eventually(rolled, step=0.1)
    assert order == ["db-2", "db-1", "db-0"]  # highest ordinal first
    assert status(api)["updatedReplicas"] == 3
