"""Garbage collection on the in-memory apiserver (which, unlike the sandbox, collects nothing itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import trio

from fleet.controlplane._gc import GarbageCollector
from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver, resource_path
from tests.controlplane._helpers import eventually, node, pod


def ref(
    owner: dict[str, Any], *, block: bool | None = None, controller: bool = True
) -> dict[str, Any]:
    out = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
    }
    if block is not None:
        out["blockOwnerDeletion"] = block
    return out


def owned_pod(name: str, *owners: dict[str, Any], node_name: str | None = None) -> dict[str, Any]:
    body = pod(name, node_name=node_name)
    body["metadata"]["ownerReferences"] = list(owners)
    return body


def rs(name: str, *owners: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if owners:
        meta["ownerReferences"] = list(owners)
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": meta,
        "spec": {"replicas": 1},
    }


@pytest.fixture
async def api(nursery: trio.Nursery) -> AsyncIterator[MemoryApiserver]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    gc = GarbageCollector(Rest(api), informers)
    await nursery.start(informers.run)
    await nursery.start(gc.run)
    yield api


def names(api: MemoryApiserver, group: str, plural: str) -> set[str]:
    return {o["metadata"]["name"] for o in api.items(resource_path(group, "v1", plural))}


async def test_background_cascade(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    owner = api.create("/apis/apps/v1/replicasets", rs("web"))
    api.create("/api/v1/pods", owned_pod("a", ref(owner)))
    api.create("/api/v1/pods", owned_pod("b", ref(owner)))
    api.create("/api/v1/pods", pod("unowned"))
    await trio.sleep(5)
    assert names(api, "", "pods") == {"a", "b", "unowned"}
    api.remove("/apis/apps/v1/namespaces/default/replicasets/web")
    await eventually(lambda: names(api, "", "pods") == {"unowned"}, within=10)


async def test_dependent_keeps_its_live_owners(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    one = api.create("/apis/apps/v1/replicasets", rs("one"))
    two = api.create("/apis/apps/v1/replicasets", rs("two"))
    api.create("/api/v1/pods", owned_pod("p", ref(one), ref(two, controller=False)))
    await trio.sleep(2)
    api.remove("/apis/apps/v1/namespaces/default/replicasets/one")
    await eventually(
        lambda: (
            [
                r["name"]
                for r in (api.get("/api/v1/namespaces/default/pods/p") or {})["metadata"].get(
                    "ownerReferences", []
                )
            ]
            == ["two"]
        ),
        within=10,
    )
    await trio.sleep(5)
    assert names(api, "", "pods") == {"p"}


async def test_owner_of_unknown_kind_is_never_guessed(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(
        "/api/v1/pods",
        owned_pod(
            "p",
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "name": "w",
                "uid": "nope",
                "controller": True,
            },
        ),
    )
    await trio.sleep(30)
    assert names(api, "", "pods") == {"p"}


async def test_foreground_cascade_waits_for_blocking_dependents(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    deploy = api.create(
        "/apis/apps/v1/deployments",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "d", "namespace": "default"},
            "spec": {},
        },
    )
    owner = api.create("/apis/apps/v1/replicasets", rs("d-1", ref(deploy, block=True)))
    api.create("/api/v1/pods", owned_pod("a", ref(owner, block=True)))
    api.create("/api/v1/pods", owned_pod("b", ref(owner, block=True)))
    await trio.sleep(2)
    response = await api.request(
        "DELETE",
        "/apis/apps/v1/namespaces/default/deployments/d",
        body=b'{"propagationPolicy":"Foreground"}',
    )
    assert response.ok
    d = api.get("/apis/apps/v1/namespaces/default/deployments/d")
    assert d is not None and d["metadata"]["finalizers"] == ["foregroundDeletion"]
    await eventually(lambda: not names(api, "apps", "deployments"), within=10)
    assert not names(api, "apps", "replicasets")
    assert not names(api, "", "pods")
    # The owner went last: after every pod and the ReplicaSet.
    order = [
        (kind, o["metadata"]["name"])
        for _, (_, kind), t, o in [(h[0], h[1], h[2], h[3]) for h in api.history]
        if t == "DELETED"
    ]
    assert order[-1] == ("deployments", "d")
    assert order.index(("replicasets", "d-1")) > max(
        order.index(("pods", "a")), order.index(("pods", "b"))
    )


async def test_orphan_keeps_dependents(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    owner = api.create("/apis/apps/v1/replicasets", rs("web"))
    api.create("/api/v1/pods", owned_pod("a", ref(owner)))
    await trio.sleep(2)
    response = await api.request(
        "DELETE",
        "/apis/apps/v1/namespaces/default/replicasets/web",
        body=b'{"propagationPolicy":"Orphan"}',
    )
    assert response.ok
    await eventually(lambda: not names(api, "apps", "replicasets"), within=10)
    await trio.sleep(5)
    p = api.get("/api/v1/namespaces/default/pods/a")
    assert p is not None and "ownerReferences" not in p["metadata"]


async def test_pods_of_a_deleted_node_go_after_quarantine(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create("/api/v1/nodes", node("n1"))
    api.create("/api/v1/pods", pod("on-n1", node_name="n1"))
    api.create("/api/v1/pods", pod("pending"))
    await trio.sleep(60)
    assert names(api, "", "pods") == {"on-n1", "pending"}
    api.remove("/api/v1/nodes/n1")
    gone = trio.current_time()
    await eventually(lambda: names(api, "", "pods") == {"pending"}, within=120)
    assert 40 <= trio.current_time() - gone <= 40 + 20 + 0.5


async def test_namespace_deletion_empties_then_finalizes(
    api: MemoryApiserver, autojump_clock: trio.testing.MockClock
) -> None:
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
    )
    api.create("/api/v1/pods", pod("p", namespace="team"))
    api.create(
        "/api/v1/configmaps",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "team", "finalizers": ["example.com/hold"]},
        },
    )
    api.create("/api/v1/pods", pod("stays", namespace="default"))
    await trio.sleep(2)
    response = await api.request("DELETE", "/api/v1/namespaces/team", body=b"{}")
    assert response.ok
    await eventually(lambda: not api.items("/api/v1/namespaces/team/pods"), within=10)
    await trio.sleep(20)
    assert "team" in names(api, "", "namespaces")  # a finalizer holds the ConfigMap
    cm = api.get("/api/v1/namespaces/team/configmaps/cm")
    assert cm is not None and cm["metadata"].get("deletionTimestamp")
    cm["metadata"]["finalizers"] = []
    api.update("/api/v1/configmaps", cm)
    await eventually(lambda: "team" not in names(api, "", "namespaces"), within=10)
    assert api.log("PUT", containing="/namespaces/team/finalize")
    assert names(api, "", "pods") == {"stays"}


class _RacingRest(Rest):
    """A Rest whose owner lookups race a watch event removing the dependent (a namespace
    being emptied): the dependent is gone from the graph by the time the GET answers."""

    def __init__(self, api: MemoryApiserver, victim: str) -> None:
        super().__init__(api)
        self._api = api
        self._victim = victim

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        if self._api.get(self._victim) is not None:
            self._api.remove(self._victim)
            await trio.sleep(1)  # the informer hands the DELETED event to the collector
        return await super().get(path, params)


async def test_dependent_removed_while_its_owner_is_looked_up(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Deleting a namespace holding a Deployment used to end the whole process here (a
    KeyError on the graph after the owner GET)."""
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    gc = GarbageCollector(Rest(api), informers)
    gc._rest = _RacingRest(api, "/api/v1/namespaces/default/pods/racer")
    await nursery.start(informers.run)
    await nursery.start(gc.run)
    ghost = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone", "uid": "gone-uid"}
    api.create("/api/v1/pods", owned_pod("racer", {**ghost, "controller": True}))
    await trio.sleep(5)
    assert names(api, "", "pods") == set()
    # The collector still works afterwards.
    owner = api.create("/apis/apps/v1/replicasets", rs("web"))
    api.create("/api/v1/pods", owned_pod("a", ref(owner)))
    await trio.sleep(2)
    api.remove("/apis/apps/v1/namespaces/default/replicasets/web")
    await eventually(lambda: names(api, "", "pods") == set(), within=10)
