"""Pods indexed by spec.nodeName: a kubelet's list of its own pods looks at its pods only."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.sandbox import RunningSandbox
from fleet.sandbox import _fields as fields_module
from fleet.sandbox._store import Collection, Store
from tests.sandbox._http import client, make_namespace, pod

PODS = ("", "pods")


def _rebuilt(coll: Collection) -> dict[str, set[tuple[str, str]]]:
    """The index as a scan of the current objects builds it."""
    out: dict[str, set[tuple[str, str]]] = {}
    for key, obj in coll.objects.items():
        out.setdefault(obj["spec"].get("nodeName") or "", set()).add(key)
    return out


def _stored(name: str, node: str | None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name}, "spec": pod(name, node=node)["spec"]}


async def test_the_index_follows_creates_bindings_deletes_and_loads() -> None:
    store = Store(history_limit=100, watch_queue=10)
    store.commit(PODS, "ADDED", _stored("a", "n1"), None)
    store.commit(PODS, "ADDED", _stored("b", "n1"), None)
    unbound = store.commit(PODS, "ADDED", _stored("u", None), None)
    store.commit(PODS, "MODIFIED", _stored("u", "n2"), unbound)  # bound
    gone = store.get(PODS, "ns", "a")
    assert gone is not None
    store.commit(PODS, "DELETED", gone, gone)
    coll = store.collection(PODS)
    assert coll.index == _rebuilt(coll) == {"n1": {("ns", "b")}, "n2": {("ns", "u")}}
    assert [o["metadata"]["name"] for o in coll.indexed("n2")] == ["u"]
    assert coll.indexed("n3") == []

    again = Store(history_limit=100, watch_queue=10)
    again.load(store.dump())
    loaded = again.collection(PODS)
    assert loaded.index == coll.index
    # other resources are not indexed
    assert store.collection(("", "nodes")).index_field is None


async def test_a_list_by_node_name_looks_at_that_nodes_pods_only(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with client(sandbox) as c:
        for ns in ("i1", "i2"):
            await make_namespace(c, ns)
        for i in range(40):
            await c.post("/api/v1/namespaces/i1/pods", json=pod(f"other-{i}", node="n2"))
        await c.post("/api/v1/namespaces/i1/pods", json=pod("mine", node="n1"))
        await c.post("/api/v1/namespaces/i2/pods", json=pod("mine-too", node="n1"))
        await c.post("/api/v1/namespaces/i1/pods", json=pod("moving"))
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "moving"},
            "target": {"kind": "Node", "name": "n1"},
        }
        r = await c.post("/api/v1/namespaces/i1/pods/moving/binding", json=binding)
        assert r.status_code == 201, r.text
        r = await c.delete(
            "/api/v1/namespaces/i2/pods/mine-too", params={"gracePeriodSeconds": "0"}
        )
        assert r.status_code == 200, r.text

        looked_at: list[str] = []
        field_set = fields_module.field_set

        def counting(rt: Any, obj: Any) -> dict[str, str]:
            looked_at.append(obj["metadata"]["name"])
            return field_set(rt, obj)

        monkeypatch.setattr(fields_module, "field_set", counting)

        async def names(url: str, selector: str, **extra: str) -> list[str]:
            r = await c.get(url, params={"fieldSelector": selector, **extra})
            assert r.status_code == 200, r.text
            return [o["metadata"]["name"] for o in r.json()["items"]]

        # mine-too (i2) was deleted: gone from the index too
        assert await names("/api/v1/pods", "spec.nodeName=n1") == ["mine", "moving"]
        assert sorted(looked_at) == ["mine", "moving"]  # not the 40 pods of n2
        assert await names("/api/v1/namespaces/i2/pods", "spec.nodeName=n1") == []
        assert await names("/api/v1/pods", "spec.nodeName=n1,metadata.name=moving") == ["moving"]
        assert await names("/api/v1/pods", "spec.nodeName==n9") == []
        # paged: the second page is served from the first's resourceVersion (scanned)
        first = await c.get(
            "/api/v1/pods", params={"fieldSelector": "spec.nodeName=n1", "limit": "1"}
        )
        assert [o["metadata"]["name"] for o in first.json()["items"]] == ["mine"]
        token = first.json()["metadata"]["continue"]
        assert await names(
            "/api/v1/pods", "spec.nodeName=n1", limit="1", **{"continue": token}
        ) == ["moving"]
        assert await names("/api/v1/pods", "spec.nodeName!=n2") == ["mine", "moving"]
