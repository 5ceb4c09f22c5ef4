"""Deployments through ReplicaSets to pods, on the in-memory apiserver and the autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from fleet.controlplane._deployments import (
    DeploymentController,
    pod_template_hash,
    resolve_fenceposts,
)
from fleet.controlplane._informer import Informers
from fleet.controlplane._replicasets import ReplicaSetController
from fleet.controlplane._resources import KObject
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, fake_kubelets


def deployment(
    name: str, replicas: int, image: str = "nginx:1", strategy: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": image}]},
        },
    }
    if strategy is not None:
        spec["strategy"] = strategy
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    rest = Rest(api)
    rs = ReplicaSetController(rest, informers, wall_clock=api.now)
    dc = DeploymentController(rest, informers, wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(rs.run)
    await nursery.start(dc.run)
    yield api


def live_pods(api: MemoryApiserver) -> list[dict[str, Any]]:
    return [
        p
        for p in api.items("/api/v1/namespaces/default/pods")
        if not p["metadata"].get("deletionTimestamp")
    ]


def dstatus(api: MemoryApiserver, name: str = "web") -> dict[str, Any]:
    d = api.get(f"/apis/apps/v1/namespaces/default/deployments/{name}")
    assert d is not None
    return dict(d.get("status") or {})


def conditions(api: MemoryApiserver, name: str = "web") -> dict[str, tuple[str, str]]:
    return {
        c["type"]: (c["status"], c["reason"]) for c in dstatus(api, name).get("conditions") or []
    }


def sets(api: MemoryApiserver) -> dict[str, int]:
    return {
        rs["metadata"]["name"]: rs["spec"]["replicas"]
        for rs in api.items("/apis/apps/v1/namespaces/default/replicasets")
    }


def test_template_hash_is_stable_and_safe() -> None:
    template = {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    h = pod_template_hash(template)
    assert h == pod_template_hash(dict(reversed(list(template.items()))))
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 1 <= len(h) <= 10
    assert pod_template_hash(template, 1) != h
    assert pod_template_hash({**template, "spec": {"containers": []}}) != h


def test_fenceposts() -> None:
    def d(replicas: int, strategy: dict[str, Any] | None = None) -> KObject:
        spec: dict[str, Any] = {"replicas": replicas}
        if strategy:
            spec["strategy"] = strategy
        return KObject(spec=spec)

    assert resolve_fenceposts(d(4)) == (1, 1)
    assert resolve_fenceposts(d(10)) == (3, 2)
    assert resolve_fenceposts(d(1)) == (1, 0)
    assert resolve_fenceposts(d(3, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})) == (
        0,
        1,
    )
    assert resolve_fenceposts(d(3, {"type": "Recreate"})) == (0, 0)


async def test_new_deployment_becomes_available(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    d = api.create("/apis/apps/v1/deployments", deployment("web", 3))
    await eventually(lambda: len(live_pods(api)) == 3)
    [(rs_name, replicas)] = sets(api).items()
    rs = api.get(f"/apis/apps/v1/namespaces/default/replicasets/{rs_name}")
    assert rs is not None
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs_name == f"web-{h}" and replicas == 3
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert all(p["metadata"]["labels"]["pod-template-hash"] == h for p in live_pods(api))
    await eventually(
        lambda: conditions(api).get("Available") == ("False", "MinimumReplicasUnavailable")
    )
    assert conditions(api)["Progressing"][1] in ("NewReplicaSetCreated", "ReplicaSetUpdated")
    nursery.start_soon(fake_kubelets, api)
    await eventually(
        lambda: conditions(api).get("Progressing") == ("True", "NewReplicaSetAvailable")
    )
    assert conditions(api)["Available"] == ("True", "MinimumReplicasAvailable")
    st = dstatus(api)
    assert {
        k: st[k]
        for k in (
            "observedGeneration",
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        )
    } == {
        "observedGeneration": 1,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    assert "unavailableReplicas" not in st  # omitempty
    progressing = next(c for c in st["conditions"] if c["type"] == "Progressing")
    assert progressing["message"] == f'ReplicaSet "{rs_name}" has successfully progressed.'
    d2 = api.get("/apis/apps/v1/namespaces/default/deployments/web")
    assert (
        d2 is not None and d2["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    )


async def test_rolling_update_respects_surge_and_unavailable(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    nursery.start_soon(fake_kubelets, api)
    api.create("/apis/apps/v1/deployments", deployment("web", 4))
    await eventually(
        lambda: conditions(api).get("Progressing") == ("True", "NewReplicaSetAvailable")
    )
    [first] = sets(api)
    d = api.get("/apis/apps/v1/namespaces/default/deployments/web")
    assert d is not None
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    api.update("/apis/apps/v1/deployments", d)
    most, least = 0, 4
    with trio.fail_after(300):
        while not (
            conditions(api).get("Progressing") == ("True", "NewReplicaSetAvailable")
            and dstatus(api).get("observedGeneration") == 2
        ):
            live = live_pods(api)
            ready = [p for p in live if p.get("status", {}).get("conditions")]
            most, least = max(most, len(live)), min(least, len(ready))
            await trio.sleep(0.1)
    assert most <= 4 + 1  # maxSurge 25 % of 4
    assert least >= 4 - 1  # maxUnavailable 25 % of 4
    assert most == 5  # it did surge
    final = sets(api)
    assert final[first] == 0 and len(final) == 2
    [second] = set(final) - {first}
    assert final[second] == 4
    rs = api.get(f"/apis/apps/v1/namespaces/default/replicasets/{second}")
    assert (
        rs is not None and rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    )
    assert all(p["spec"]["containers"][0]["image"] == "nginx:2" for p in live_pods(api))
    assert dstatus(api)["updatedReplicas"] == 4


async def test_recreate_waits_for_old_pods(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    nursery.start_soon(fake_kubelets, api)
    api.create("/apis/apps/v1/deployments", deployment("web", 3, strategy={"type": "Recreate"}))
    await eventually(
        lambda: conditions(api).get("Progressing") == ("True", "NewReplicaSetAvailable")
    )
    [first] = sets(api)
    d = api.get("/apis/apps/v1/namespaces/default/deployments/web")
    assert d is not None
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    api.update("/apis/apps/v1/deployments", d)
    overlap = False
    with trio.fail_after(300):
        while not (
            conditions(api).get("Progressing") == ("True", "NewReplicaSetAvailable")
            and dstatus(api).get("observedGeneration") == 2
        ):
            images = {p["spec"]["containers"][0]["image"] for p in live_pods(api)}
            overlap = overlap or images == {"nginx:1", "nginx:2"}
            await trio.sleep(0.1)
    assert not overlap
    assert sets(api)[first] == 0
    assert {p["spec"]["containers"][0]["image"] for p in live_pods(api)} == {"nginx:2"}
    assert len(live_pods(api)) == 3


async def test_scaling_keeps_the_replica_set(
    api: MemoryApiserver, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    nursery.start_soon(fake_kubelets, api)
    api.create("/apis/apps/v1/deployments", deployment("web", 2))
    await eventually(lambda: dstatus(api).get("availableReplicas") == 2)
    for replicas in (5, 1):
        d = api.get("/apis/apps/v1/namespaces/default/deployments/web")
        assert d is not None
        d["spec"]["replicas"] = replicas
        api.update("/apis/apps/v1/deployments", d)
        await eventually(
            lambda r=replicas: (
                dstatus(api).get("availableReplicas") == r  # type: ignore[misc]
                and len(live_pods(api)) == r
            )
        )
        assert list(sets(api).values()) == [replicas]
