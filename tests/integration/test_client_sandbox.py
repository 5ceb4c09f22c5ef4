"""fleet.kube's Client and HotTransport against the real sandbox apiserver.

Every test reaches the sandbox through ``load_config(kubeconfig)``: over TLS
with the CA and bearer token the sandbox wrote, and over plain http.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from fleet.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    Unauthorized,
)
from fleet.kube import (
    Client,
    ClusterConfig,
    HotTransport,
    HotTransportSettings,
    Requester,
    error_for,
    load_config,
    resource_path,
    write_kubeconfig,
)
from fleet.sandbox import RunningSandbox
from tests._apiserver import Apiserver

from .conftest import StartSandbox

JSON = "application/json"
MERGE = "application/merge-patch+json"


def configmap(
    name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {},
    }


def pod(
    name: str, *, node: str | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox:1.36"}]}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


async def make_namespace(client: Client, name: str) -> None:
    await client.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


def cms(ns: str, name: str | None = None) -> str:
    return resource_path("", "v1", "configmaps", namespace=ns, name=name)


def pods(ns: str, name: str | None = None) -> str:
    return resource_path("", "v1", "pods", namespace=ns, name=name)


# -- the config itself ---------------------------------------------------------------------


async def test_kubeconfig_is_what_the_apiserver_serves(
    apiserver: Apiserver, config: ClusterConfig
) -> None:
    assert config.server == apiserver.url
    assert (config.ssl_context is not None) == apiserver.url.startswith("https://")
    assert config.namespace == "default"
    if apiserver.sandbox is not None:
        assert await config.auth.headers() == {"Authorization": f"Bearer {apiserver.sandbox.token}"}
    else:  # the real control plane's admin authenticates by its client certificate
        assert await config.auth.headers() == {}
        async with Client(config) as client:
            assert (await client.get("/version"))["gitVersion"].startswith("v1.")


# -- Client verbs ----------------------------------------------------------------------------


async def test_create_get_list_paged(config: ClusterConfig) -> None:
    async with Client(config) as client:
        await make_namespace(client, "paging")
        created = [
            await client.create(cms("paging"), configmap(f"cm-{i}", {"i": str(i)}))
            for i in range(5)
        ]
        assert [c["metadata"]["name"] for c in created] == [f"cm-{i}" for i in range(5)]
        assert all(c["metadata"]["uid"] and c["metadata"]["resourceVersion"] for c in created)

        got = await client.get(cms("paging", "cm-3"))
        assert got["data"] == {"i": "3"}
        assert got["metadata"]["uid"] == created[3]["metadata"]["uid"]

        listed = await client.list(cms("paging"), limit=2)
        assert listed.pages == 3
        assert listed.kind == "ConfigMapList"
        assert [i["metadata"]["name"] for i in listed.items] == [f"cm-{i}" for i in range(5)]
        assert int(listed.resource_version) >= int(created[-1]["metadata"]["resourceVersion"])

        # A write between pages does not show in later pages: the token pins the snapshot.
        page = await client.get(cms("paging"), params={"limit": "2"})
        token = page["metadata"]["continue"]
        await client.delete(cms("paging", "cm-4"))
        rest = await client.get(cms("paging"), params={"limit": "2", "continue": token})
        rest2 = await client.get(
            cms("paging"), params={"limit": "2", "continue": rest["metadata"]["continue"]}
        )
        assert [i["metadata"]["name"] for i in rest2["items"]] == ["cm-4"]
        assert [
            i["metadata"]["name"] for i in (await client.list(cms("paging"), limit=2)).items
        ] == [f"cm-{i}" for i in range(4)]

        selected = await client.list(cms("paging"), limit=1, field_selector="metadata.name=cm-1")
        assert [i["metadata"]["name"] for i in selected.items] == ["cm-1"]


async def test_replace_and_the_four_patch_types(config: ClusterConfig) -> None:
    async with Client(config) as client:
        await make_namespace(client, "patching")
        obj = await client.create(cms("patching"), configmap("cm", {"a": "1"}))
        obj["data"]["b"] = "2"
        replaced = await client.replace(cms("patching", "cm"), obj)
        assert replaced["data"] == {"a": "1", "b": "2"}
        assert int(replaced["metadata"]["resourceVersion"]) > int(
            obj["metadata"]["resourceVersion"]
        )

        jsonpatched = await client.patch(
            cms("patching", "cm"),
            [
                {"op": "test", "path": "/data/a", "value": "1"},
                {"op": "replace", "path": "/data/a", "value": "10"},
            ],
            patch_type="json",
        )
        assert jsonpatched["data"] == {"a": "10", "b": "2"}

        merged = await client.patch(
            cms("patching", "cm"), {"data": {"b": None, "c": "3"}}, patch_type="merge"
        )
        assert merged["data"] == {"a": "10", "c": "3"}

        p = await client.create(pods("patching"), pod("web", labels={"app": "web"}))
        # Strategic merge: containers merge by name, so the image changes and nothing is lost.
        smp = await client.patch(
            pods("patching", "web"),
            {
                "metadata": {"labels": {"tier": "front"}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]},
            },
            patch_type="strategic",
        )
        assert smp["metadata"]["labels"] == {"app": "web", "tier": "front"}
        assert [(c["name"], c["image"]) for c in smp["spec"]["containers"]] == [
            ("c", "busybox:1.37")
        ]
        assert smp["metadata"]["uid"] == p["metadata"]["uid"]

        applied = await client.patch(
            cms("patching", "applied"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "applied"},
                "data": {"x": "1"},
            },
            patch_type="apply",
            field_manager="integration",
        )
        # Apply creates the absent object (the sandbox keeps no managedFields: docs/sandbox.md).
        assert applied["data"] == {"x": "1"} and applied["metadata"]["uid"]
        reapplied = await client.patch(
            cms("patching", "applied"),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "applied"},
                "data": {"x": "2"},
            },
            patch_type="apply",
            field_manager="integration",
            force=True,
        )
        assert reapplied["data"] == {"x": "2"}
        assert reapplied["metadata"]["uid"] == applied["metadata"]["uid"]


async def test_delete_with_preconditions_and_grace(config: ClusterConfig) -> None:
    async with Client(config) as client:
        await make_namespace(client, "deleting")
        obj = await client.create(cms("deleting"), configmap("cm"))
        meta = obj["metadata"]
        with pytest.raises(Conflict) as wrong_uid:
            await client.delete(cms("deleting", "cm"), preconditions_uid="not-" + meta["uid"])
        assert "UID in the precondition" in wrong_uid.value.message
        with pytest.raises(Conflict):
            await client.delete(cms("deleting", "cm"), preconditions_resource_version="1")
        await client.get(cms("deleting", "cm"))  # still there

        dry = await client.delete(cms("deleting", "cm"), dry_run=True)
        assert dry["kind"] in ("ConfigMap", "Status")
        await client.get(cms("deleting", "cm"))

        gone = await client.delete(
            cms("deleting", "cm"),
            preconditions_uid=meta["uid"],
            preconditions_resource_version=meta["resourceVersion"],
        )
        assert gone.get("status") == "Success" or gone.get("metadata", {}).get("uid") == meta["uid"]
        with pytest.raises(NotFound):
            await client.get(cms("deleting", "cm"))

        # A pod bound to a node is deleted gracefully: it stays, marked, until grace 0.
        await client.create(pods("deleting"), pod("bound", node="node-1"))
        marked = await client.delete(pods("deleting", "bound"), grace_period_seconds=30)
        assert marked["metadata"]["deletionGracePeriodSeconds"] == 30
        assert marked["metadata"]["deletionTimestamp"]
        assert (await client.get(pods("deleting", "bound")))["metadata"]["deletionTimestamp"]
        await client.delete(pods("deleting", "bound"), grace_period_seconds=0)
        with pytest.raises(NotFound):
            await client.get(pods("deleting", "bound"))


# -- errors from real Status answers -----------------------------------------------------------


async def test_status_errors_map_to_the_hierarchy(config: ClusterConfig) -> None:
    async with Client(config) as client:
        await make_namespace(client, "errors")
        with pytest.raises(NotFound) as not_found:
            await client.get(cms("errors", "nope"))
        assert not_found.value.status == 404 and not_found.value.reason == "NotFound"
        assert not_found.value.body["details"]["name"] == "nope"

        obj = await client.create(cms("errors"), configmap("cm"))
        with pytest.raises(AlreadyExists) as exists:
            await client.create(cms("errors"), configmap("cm"))
        assert exists.value.status == 409 and exists.value.reason == "AlreadyExists"

        await client.patch(cms("errors", "cm"), {"data": {"v": "1"}}, patch_type="merge")
        with pytest.raises(Conflict) as stale:
            await client.replace(cms("errors", "cm"), obj)  # obj carries the old resourceVersion
        assert not isinstance(stale.value, AlreadyExists)
        assert stale.value.reason == "Conflict"
        assert "the object has been modified" in stale.value.message

        bad = configmap("Not_A_Valid_Name")
        with pytest.raises(Invalid) as invalid:
            await client.create(cms("errors"), bad)
        assert invalid.value.status == 422
        assert invalid.value.causes, invalid.value.body
        assert any(c.get("field") == "metadata.name" for c in invalid.value.causes)

        with pytest.raises(Invalid) as bad_patch:
            await client.patch(
                cms("errors", "cm"), [{"op": "remove", "path": "/data/absent"}], patch_type="json"
            )
        assert "rejected our request" in bad_patch.value.message
        with pytest.raises(BadRequest):  # an object where the operations list belongs
            response = await client.request(
                "PATCH",
                cms("errors", "cm"),
                body=b'{"op":"add"}',
                content_type="application/json-patch+json",
            )
            response.raise_for_status()


async def test_gone_for_a_compacted_resource_version(start_sandbox: StartSandbox) -> None:
    sb = await start_sandbox(watch_history=3, watch_history_window=0)
    async with Client(load_config(sb.kubeconfig)) as client:
        await make_namespace(client, "gone")
        first = await client.create(cms("gone"), configmap("cm-0"))
        await client.create(cms("gone"), configmap("cm-1"))
        page = await client.get(cms("gone"), params={"limit": "1"})
        for i in range(2, 7):
            await client.create(cms("gone"), configmap(f"cm-{i}"))
        # An exact list at a resourceVersion the history no longer holds...
        with pytest.raises(Gone) as exact:
            await client.get(
                cms("gone"),
                params={
                    "resourceVersion": first["metadata"]["resourceVersion"],
                    "resourceVersionMatch": "Exact",
                },
            )
        assert exact.value.status == 410
        # ... and a continue token whose snapshot has been compacted are both 410 Gone.
        with pytest.raises(Gone) as expired:
            await client.get(
                cms("gone"), params={"limit": "1", "continue": page["metadata"]["continue"]}
            )
        assert expired.value.reason == "Expired"


async def test_wrong_token_is_unauthorized(
    sb: RunningSandbox, tmp_path: Path, start_sandbox: StartSandbox
) -> None:
    if not sb.url.startswith("https://"):
        # Plain http does not require the token by default; ask for it.
        sb = await start_sandbox(tls=False, require_token=True)
    wrong = tmp_path / "wrong-kubeconfig"
    write_kubeconfig(wrong, server=sb.url, token="not-the-token", ca_data=sb.ca_pem)
    async with Client(load_config(wrong)) as client:
        with pytest.raises(Unauthorized) as client_401:
            await client.get("/api/v1/namespaces")
        assert client_401.value.status == 401
    async with HotTransport(load_config(wrong)) as hot:
        response = await hot.request("GET", "/api/v1/namespaces")
        assert response.status == 401
        with pytest.raises(Unauthorized):
            response.raise_for_status()
    async with Client(load_config(sb.kubeconfig)) as client:
        assert (await client.list("/api/v1/namespaces")).items


async def test_too_large_resource_version_is_a_server_error_with_retry_after(
    start_sandbox: StartSandbox,
) -> None:
    sb = await start_sandbox(too_large_rv_wait=0.2)
    async with Client(load_config(sb.kubeconfig)) as client:
        with pytest.raises(ServerError) as timeout:
            await client.list("/api/v1/namespaces", resource_version="999999")
        assert timeout.value.status == 504 and timeout.value.reason == "Timeout"
        assert timeout.value.retry_after == 1.0


@pytest.mark.parametrize("kind", ["client", "hot"])
async def test_stream_error_answers_map_too(
    kind: str,
    apiserver: Apiserver,
    config: ClusterConfig,
    tmp_path: Path,
    start_sandbox: StartSandbox,
) -> None:
    requester: Requester
    async with Client(config) if kind == "client" else HotTransport(config) as requester:
        params = {"watch": "true", "labelSelector": "app in (", "timeoutSeconds": "1"}
        async with requester.stream("GET", "/api/v1/pods", params=params) as response:
            error = error_for(response.status, await response.aread(), response.headers)
        assert isinstance(error, BadRequest) and "unable to parse requirement" in error.message
    if apiserver.sandbox is None:
        return  # a wrong token is the sandbox's case; the real one authenticates certificates
    sb = apiserver.sandbox
    if not sb.url.startswith("https://"):
        sb = await start_sandbox(tls=False, require_token=True)
    wrong = tmp_path / "wrong-kubeconfig"
    write_kubeconfig(wrong, server=sb.url, token="not-the-token", ca_data=sb.ca_pem)
    async with (
        Client(load_config(wrong))
        if kind == "client"
        else HotTransport(load_config(wrong)) as requester
    ):
        async with requester.stream("GET", "/api/v1/pods", params={"watch": "true"}) as response:
            error = error_for(response.status, await response.aread(), response.headers)
        assert isinstance(error, Unauthorized)


# -- HotTransport ------------------------------------------------------------------------------


async def test_hot_transport_verbs_and_keepalive(config: ClusterConfig) -> None:
    encode = msgspec.json.encode
    decode = msgspec.json.decode
    async with HotTransport(config, HotTransportSettings(connections=4)) as hot:
        r = await hot.request(
            "POST",
            "/api/v1/namespaces",
            body=encode({"metadata": {"name": "hot"}}),
            content_type=JSON,
        )
        assert r.status == 201, r.content
        r = await hot.request(
            "POST", cms("hot"), body=encode(configmap("cm", {"a": "1"})), content_type=JSON
        )
        assert r.status == 201, r.content
        created = decode(r.content)
        r = (await hot.request("GET", cms("hot", "cm"))).raise_for_status()
        assert decode(r.content)["data"] == {"a": "1"}
        r = await hot.request(
            "PATCH", cms("hot", "cm"), body=b'{"data":{"a":"2"}}', content_type=MERGE
        )
        assert decode(r.raise_for_status().content)["data"] == {"a": "2"}
        r = await hot.request("PUT", cms("hot", "cm"), body=encode(created), content_type=JSON)
        assert r.status == 409
        with pytest.raises(Conflict):
            r.raise_for_status()
        r = (await hot.request("GET", cms("hot"), params={"limit": "1"})).raise_for_status()
        assert [i["metadata"]["name"] for i in decode(r.content)["items"]] == ["cm"]
        r = (await hot.request("DELETE", cms("hot", "cm"))).raise_for_status()
        r = await hot.request("GET", cms("hot", "cm"))
        assert r.status == 404
        # Eight requests one after another, all on one kept-alive connection.
        assert hot.statistics().opened == 1

        # Sixteen at once over four connections: never more than four sockets.
        async def get_one() -> None:
            (await hot.request("GET", "/api/v1/namespaces/hot")).raise_for_status()

        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(get_one)
        stats = hot.statistics()
        assert 2 <= stats.opened <= 4
        assert stats.idle == 4 and stats.waiting == 0
        for _ in range(10):
            await get_one()
        assert hot.statistics().opened == stats.opened  # no reconnects


async def test_hot_transport_watch_stream_is_chunked(config: ClusterConfig) -> None:
    async with HotTransport(config) as hot, Client(config) as client:
        await make_namespace(client, "hotwatch")
        start = await client.list(cms("hotwatch"))
        params = {
            "watch": "true",
            "resourceVersion": start.resource_version,
            "timeoutSeconds": "30",
        }
        big = "x" * 200_000  # spans many chunks and socket reads
        async with hot.stream("GET", cms("hotwatch"), params=params) as response:
            assert response.status == 200
            assert response.headers.get("transfer-encoding", "").lower() == "chunked"
            await client.create(cms("hotwatch"), configmap("a", {"v": "1"}))
            await client.patch(cms("hotwatch", "a"), {"data": {"v": big}}, patch_type="merge")
            await client.delete(cms("hotwatch", "a"))
            buf = b""
            events: list[dict[str, Any]] = []
            with trio.fail_after(5):
                async for chunk in response.aiter_bytes():
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    events += [decode_line(line) for line in lines if line]
                    if len(events) == 3:
                        break
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "a"),
            ("MODIFIED", "a"),
            ("DELETED", "a"),
        ]
        assert events[1]["object"]["data"]["v"] == big
        assert hot.statistics().opened == 1  # the watch's own connection; the pool was untouched


async def test_hot_transport_watch_ends_at_timeout_seconds(config: ClusterConfig) -> None:
    async with HotTransport(config) as hot:
        params = {"watch": "true", "timeoutSeconds": "1"}
        with trio.fail_after(5):
            async with hot.stream("GET", "/api/v1/namespaces", params=params) as response:
                assert response.status == 200
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
        types = [decode_line(line)["type"] for line in body.split(b"\n") if line]
        assert types and set(types) == {"ADDED"}  # the initial namespaces, then a clean end


def decode_line(line: bytes) -> dict[str, Any]:
    event: dict[str, Any] = msgspec.json.decode(line)
    return event
