"""CRUD semantics of the sandbox apiserver over HTTP: what the transcripts show a real one does."""

from __future__ import annotations

import pytest

from fleet.sandbox import RunningSandbox
from tests.sandbox._http import client, make_namespace, pod


async def test_health_version_and_auth(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        assert (await c.get("/healthz")).text == "ok"
        assert (await c.get("/version")).json()["major"] == "1"
        assert (await c.get("/api")).json()["versions"] == ["v1"]
    async with client(sandbox, token="wrong") as c:
        r = await c.get("/api/v1/namespaces")
        assert r.status_code == 401
        assert r.json()["reason"] == "Unauthorized"
        assert (await c.get("/livez")).status_code == 200


async def test_create_get_update_conflict(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "crud")
        r = await c.post("/api/v1/namespaces/crud/pods", json=pod("p1", labels={"app": "demo"}))
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
        assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
        assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"

        dup = await c.post("/api/v1/namespaces/crud/pods", json=pod("p1"))
        assert dup.status_code == 409
        assert dup.json()["message"] == 'pods "p1" already exists'

        updated = dict(
            created, metadata=dict(created["metadata"], labels={"app": "demo", "x": "1"})
        )
        r = await c.put("/api/v1/namespaces/crud/pods/p1", json=updated)
        assert r.status_code == 200
        assert int(r.json()["metadata"]["resourceVersion"]) > int(
            created["metadata"]["resourceVersion"]
        )
        r = await c.put("/api/v1/namespaces/crud/pods/p1", json=updated)  # stale resourceVersion
        assert r.status_code == 409
        assert r.json()["message"] == (
            'Operation cannot be fulfilled on pods "p1": the object has been modified; '
            "please apply your changes to the latest version and try again"
        )
        missing = await c.get("/api/v1/namespaces/crud/pods/missing")
        assert missing.status_code == 404
        assert missing.json()["details"] == {"name": "missing", "kind": "pods"}


async def test_generate_name_and_errors_store_nothing(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "errs")
        body = pod("")
        body["metadata"] = {"generateName": "gen-"}
        r = await c.post("/api/v1/namespaces/errs/pods", json=body)
        assert r.status_code == 201
        assert r.json()["metadata"]["name"].startswith("gen-")
        assert len(r.json()["metadata"]["name"]) == len("gen-") + 5

        bad = pod("bad")
        bad["spec"]["containers"] = [{"name": "Bad_Name"}]
        r = await c.post("/api/v1/namespaces/errs/pods", json=bad)
        assert r.status_code == 422
        fields = [cause["field"] for cause in r.json()["details"]["causes"]]
        assert fields == ["spec.containers[0].name", "spec.containers[0].image"]
        r = await c.post(
            "/api/v1/namespaces/errs/pods",
            content=b'{"apiVersion":"v1","kind":"Pod"',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400
        r = await c.post("/api/v1/namespaces/no-such-ns/pods", json=pod("x"))
        assert r.status_code == 404
        names = [
            p["metadata"]["name"]
            for p in (await c.get("/api/v1/namespaces/errs/pods")).json()["items"]
        ]
        assert len(names) == 1 and names[0].startswith("gen-")


async def test_patch_types_and_status_subresource(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "patch")
        url = "/api/v1/namespaces/patch/pods/p"
        await c.post("/api/v1/namespaces/patch/pods", json=pod("p", labels={"a": "1"}))
        r = await c.patch(
            url,
            content=b'{"metadata":{"labels":{"a":null,"m":"1"}}}',
            headers={"content-type": "application/merge-patch+json"},
        )
        assert r.json()["metadata"]["labels"] == {"m": "1"}
        r = await c.patch(
            url,
            content=b'[{"op":"add","path":"/metadata/labels/j","value":"2"}]',
            headers={"content-type": "application/json-patch+json"},
        )
        assert r.json()["metadata"]["labels"] == {"m": "1", "j": "2"}
        r = await c.patch(
            url,
            content=b'[{"op":"test","path":"/metadata/labels/j","value":"9"}]',
            headers={"content-type": "application/json-patch+json"},
        )
        assert r.status_code == 422
        r = await c.patch(
            url,
            content=b'{"spec":{"containers":[{"name":"c","image":"busybox:1.37"}]}}',
            headers={"content-type": "application/strategic-merge-patch+json"},
        )
        assert r.json()["spec"]["containers"][0]["image"] == "busybox:1.37"
        r = await c.patch(url, content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 415
        # the main resource ignores status; /status ignores spec
        r = await c.patch(
            url,
            content=b'{"status":{"phase":"Running"}}',
            headers={"content-type": "application/merge-patch+json"},
        )
        assert r.json()["status"]["phase"] == "Pending"
        r = await c.patch(
            url + "/status",
            content=b'{"status":{"phase":"Running"},"spec":{"activeDeadlineSeconds":5}}',
            headers={"content-type": "application/merge-patch+json"},
        )
        assert r.json()["status"]["phase"] == "Running"
        assert "activeDeadlineSeconds" not in r.json()["spec"]
        r = await c.patch(
            url,
            content=b'{"spec":{"nodeName":"n1"}}',
            headers={"content-type": "application/strategic-merge-patch+json"},
        )
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec"


async def test_graceful_deletion_and_finalizers(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "del")
        base = "/api/v1/namespaces/del/pods"
        await c.post(base, json=pod("bound", node="n1"))
        r = await c.delete(f"{base}/bound")
        assert r.status_code == 200
        meta = r.json()["metadata"]
        assert meta["deletionGracePeriodSeconds"] == 30 and meta["deletionTimestamp"]
        assert (await c.get(f"{base}/bound")).status_code == 200
        uid = meta["uid"]
        r = await c.request("DELETE", f"{base}/bound", json={"preconditions": {"uid": "wrong"}})
        assert r.status_code == 409
        r = await c.request(
            "DELETE", f"{base}/bound?gracePeriodSeconds=0", json={"preconditions": {"uid": uid}}
        )
        assert r.status_code == 200
        assert (await c.get(f"{base}/bound")).status_code == 404

        await c.post(base, json=pod("unbound"))
        assert (await c.delete(f"{base}/unbound")).status_code == 200
        assert (await c.get(f"{base}/unbound")).status_code == 404

        await c.post(base, json=pod("fin", finalizers=["example.com/hold"]))
        r = await c.delete(f"{base}/fin?gracePeriodSeconds=0")
        assert r.json()["metadata"]["deletionTimestamp"]
        assert (await c.get(f"{base}/fin")).status_code == 200
        r = await c.patch(
            f"{base}/fin",
            content=b'{"metadata":{"finalizers":null}}',
            headers={"content-type": "application/merge-patch+json"},
        )
        assert r.status_code == 200
        assert (await c.get(f"{base}/fin")).status_code == 404

        await c.post(base, json=pod("dry"))
        assert (await c.delete(f"{base}/dry?dryRun=All")).status_code == 200
        assert (await c.get(f"{base}/dry")).status_code == 200


async def test_owner_references_are_garbage_collected(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "gc")
        cm = (
            await c.post(
                "/api/v1/namespaces/gc/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}},
            )
        ).json()
        child = pod("child")
        child["metadata"]["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": cm["metadata"]["uid"]}
        ]
        await c.post("/api/v1/namespaces/gc/pods", json=child)
        await c.delete("/api/v1/namespaces/gc/configmaps/owner")
        assert (await c.get("/api/v1/namespaces/gc/pods/child")).status_code == 404


async def test_namespace_deletion_takes_its_content(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "gone")
        await c.post("/api/v1/namespaces/gone/pods", json=pod("p", node="n1"))
        r = await c.delete("/api/v1/namespaces/gone")
        assert r.status_code == 200
        assert (await c.get("/api/v1/namespaces/gone")).status_code == 404
        assert (await c.get("/api/v1/namespaces/gone/pods/p")).status_code == 404


async def test_a_generated_name_already_taken_is_drawn_again(
    sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # kube-apiserver retries generateName clashes (RetryGenerateName): one DaemonSet's 5,000
    # pods drew a taken suffix once in a bench run and the pod was refused with a 409.
    from fleet.sandbox import _objects

    drawn = iter(["gen-aaaaa", "gen-aaaaa", "gen-bbbbb"])
    monkeypatch.setattr(_objects, "generated_name", lambda prefix: next(drawn))
    async with client(sandbox) as c:
        names = []
        for _ in range(2):
            r = await c.post(
                "/api/v1/namespaces/default/configmaps", json={"metadata": {"generateName": "gen-"}}
            )
            assert r.status_code == 201, r.text
            names.append(r.json()["metadata"]["name"])
    assert names == ["gen-aaaaa", "gen-bbbbb"]
