"""The ReplicaSet controller against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._informer import Informers
from fleet.controlplane._replicasets import ReplicaSetController
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, mark_ready


def replicaset(name: str, replicas: int, *, min_ready: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }  # fmt: skip


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = ReplicaSetController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield api


def pods(api: MemoryApiserver) -> list[dict[str, Any]]:
    return [
        p
        for p in api.items("/api/v1/namespaces/default/pods")
        if not p["metadata"].get("deletionTimestamp")
    ]


def status(api: MemoryApiserver, name: str) -> dict[str, Any]:
    rs = api.get(f"/apis/apps/v1/namespaces/default/replicasets/{name}")
    assert rs is not None
    return dict(rs.get("status") or {})


async def test_creates_pods_from_the_template_and_reports_status(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    rs = api.create("/apis/apps/v1/replicasets", replicaset("web", 3))
    await eventually(lambda: len(pods(api)) == 3)
    for p in pods(api):
        assert p["metadata"]["name"].startswith("web-")
        assert p["metadata"]["labels"] == {"app": "web"}
        assert p["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web",
                "uid": rs["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    await eventually(lambda: status(api, "web").get("replicas") == 3)
    mark_ready(api, "default", pods(api)[0]["metadata"]["name"])
    mark_ready(api, "default", pods(api)[1]["metadata"]["name"])
    await eventually(lambda: status(api, "web").get("readyReplicas") == 2)
    assert status(api, "web") == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 2,
        "availableReplicas": 2,
        "observedGeneration": 1,
    }
    await trio.sleep(10)
    assert len(api.log("POST", containing="/pods")) == 3  # expectations: no double creation


async def test_replaces_a_deleted_pod_once(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create("/apis/apps/v1/replicasets", replicaset("web", 2))
    await eventually(lambda: len(pods(api)) == 2)
    victim = pods(api)[0]["metadata"]["name"]
    api.remove(f"/api/v1/namespaces/default/pods/{victim}")
    await eventually(
        lambda: len(pods(api)) == 2 and victim not in {p["metadata"]["name"] for p in pods(api)}
    )
    await trio.sleep(10)
    assert len(api.log("POST", containing="/pods")) == 3


async def test_scale_down_removes_not_ready_then_newest(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create("/apis/apps/v1/replicasets", replicaset("web", 1))
    await eventually(lambda: len(pods(api)) == 1)
    oldest = pods(api)[0]["metadata"]["name"]
    await trio.sleep(5)
    rs = api.get("/apis/apps/v1/namespaces/default/replicasets/web")
    assert rs is not None
    api.update("/apis/apps/v1/replicasets", {**rs, "spec": {**rs["spec"], "replicas": 3}})
    await eventually(lambda: len(pods(api)) == 3)
    names = sorted((p["metadata"]["name"] for p in pods(api)), key=lambda n: n != oldest)
    mark_ready(api, "default", names[0])
    mark_ready(api, "default", names[1])  # names[2] stays not ready
    await eventually(lambda: status(api, "web").get("readyReplicas") == 2)
    rs = api.get("/apis/apps/v1/namespaces/default/replicasets/web")
    assert rs is not None
    api.update("/apis/apps/v1/replicasets", {**rs, "spec": {**rs["spec"], "replicas": 2}})
    await eventually(lambda: len(pods(api)) == 2)
    assert {p["metadata"]["name"] for p in pods(api)} == {names[0], names[1]}
    rs = api.get("/apis/apps/v1/namespaces/default/replicasets/web")
    assert rs is not None
    api.update("/apis/apps/v1/replicasets", {**rs, "spec": {**rs["spec"], "replicas": 1}})
    await eventually(lambda: len(pods(api)) == 1)
    assert pods(api)[0]["metadata"]["name"] == oldest
    await eventually(lambda: status(api, "web").get("replicas") == 1)
    assert status(api, "web")["observedGeneration"] == 4


async def test_available_after_min_ready_seconds(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create("/apis/apps/v1/replicasets", replicaset("web", 1, min_ready=10))
    await eventually(lambda: len(pods(api)) == 1)
    mark_ready(api, "default", pods(api)[0]["metadata"]["name"])
    ready_at = trio.current_time()
    await eventually(lambda: status(api, "web").get("readyReplicas") == 1)
    assert status(api, "web")["availableReplicas"] == 0
    await eventually(lambda: status(api, "web").get("availableReplicas") == 1, within=30)
    assert 10 <= trio.current_time() - ready_at <= 12
