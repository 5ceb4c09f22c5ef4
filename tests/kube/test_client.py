"""The general httpx client against a scripted apiserver (httpx.MockTransport), and resource paths."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import trio

from fleet.errors import (
    AlreadyExists,
    ApiError,
    ConfigError,
    Conflict,
    ConnectError,
    Forbidden,
    Gone,
    InputError,
    Invalid,
    NotFound,
    ProtocolError,
    ReadTimeout,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from fleet.kube._client import Client, ClientTimeouts
from fleet.kube._cluster import ClusterConfig
from fleet.kube._paths import resource_path
from fleet.kube._rest import ListResult

Handler = Callable[[httpx.Request], httpx.Response]


class CountingAuth:
    def __init__(self) -> None:
        self.generation = 1
        self.invalidations = 0

    async def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer token-{self.generation}"}

    async def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


def client(handler: Handler, **config: Any) -> Client:
    cfg = ClusterConfig(server=config.pop("server", "https://kube.test:6443"), **config)
    return Client(cfg, transport=httpx.MockTransport(handler))


def status(code: int, reason: str, message: str = "m", **details: Any) -> httpx.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }
    if details:
        body["details"] = details
    return httpx.Response(code, json=body)


POD_PATH = "/api/v1/namespaces/default/pods/web-0"


async def test_get_sends_identity_auth_and_sni_and_decodes() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "Pod", "metadata": {"name": "web-0"}})

    auth = CountingAuth()
    async with client(handler, auth=auth, tls_server_name="kubernetes.default.svc") as c:
        pod = await c.get(POD_PATH, params={"resourceVersion": "0"})
    assert pod == {"kind": "Pod", "metadata": {"name": "web-0"}}
    request = seen[0]
    assert str(request.url) == f"https://kube.test:6443{POD_PATH}?resourceVersion=0"
    assert request.headers["user-agent"].startswith("kubemock-fleet/")
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == "Bearer token-1"
    assert request.extensions["sni_hostname"] == "kubernetes.default.svc"
    assert auth.invalidations == 0


async def test_server_path_prefix_is_kept() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url.path)
        return httpx.Response(200, json={})

    async with client(handler, server="https://rancher.test/k8s/clusters/c-1") as c:
        await c.get("/api/v1/nodes")
    assert urls == ["/k8s/clusters/c-1/api/v1/nodes"]


@pytest.mark.parametrize(
    ("response", "error", "check"),
    [
        (status(404, "NotFound", 'pods "web-0" not found'), NotFound, None),
        (status(409, "AlreadyExists", "exists"), AlreadyExists, None),
        (status(409, "Conflict", "the object has been modified"), Conflict, None),
        (
            status(
                422,
                "Invalid",
                "bad",
                causes=[{"field": "spec.containers", "reason": "FieldValueRequired"}],
            ),
            Invalid,
            lambda e: e.causes == [{"field": "spec.containers", "reason": "FieldValueRequired"}],
        ),
        (status(410, "Expired", "too old resource version"), Gone, None),
        (
            httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={"kind": "Status", "reason": "TooManyRequests"},
            ),
            TooManyRequests,
            lambda e: e.retry_after == 3,
        ),
        (
            status(429, "TooManyRequests", retryAfterSeconds=5),
            TooManyRequests,
            lambda e: e.retry_after == 5,
        ),
        (status(403, "Forbidden", "nope"), Forbidden, None),
        (status(500, "InternalError", "boom"), ServerError, lambda e: e.retry_after is None),
        (
            status(503, "ServiceUnavailable", retryAfterSeconds=1),
            ServerError,
            lambda e: e.retry_after == 1,
        ),
        (
            httpx.Response(502, text="<html>bad gateway</html>"),
            ServerError,
            lambda e: "bad gateway" in e.message,
        ),
    ],
)
async def test_error_status_maps_to_api_error(
    response: httpx.Response, error: type[ApiError], check: Callable[[ApiError], bool] | None
) -> None:
    async with client(lambda request: response) as c:
        with pytest.raises(error) as info:
            await c.get(POD_PATH)
    assert type(info.value) is error
    assert info.value.status == response.status_code
    if check is not None:
        assert check(info.value)


async def test_401_invalidates_and_retries_once() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        if request.headers["authorization"] == "Bearer token-1":
            return status(401, "Unauthorized")
        return httpx.Response(200, json={"ok": True})

    auth = CountingAuth()
    async with client(handler, auth=auth) as c:
        assert await c.get(POD_PATH) == {"ok": True}
    assert tokens == ["Bearer token-1", "Bearer token-2"]
    assert auth.invalidations == 1


async def test_401_twice_raises_unauthorized() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return status(401, "Unauthorized")

    auth = CountingAuth()
    async with client(handler, auth=auth) as c:
        with pytest.raises(Unauthorized):
            await c.get(POD_PATH)
    assert calls == 2
    assert auth.invalidations == 1


async def test_list_follows_continue_tokens() -> None:
    pages = {
        None: ({"continue": "c1", "resourceVersion": "100"}, [1, 2]),
        "c1": ({"continue": "c2", "resourceVersion": "100"}, [3, 4]),
        "c2": ({"resourceVersion": "100"}, [5]),
    }
    params_seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        params_seen.append(params)
        metadata, numbers = pages[params.get("continue")]
        items = [{"metadata": {"name": f"p{n}"}} for n in numbers]
        return httpx.Response(200, json={"kind": "PodList", "metadata": metadata, "items": items})

    async with client(handler) as c:
        result = await c.list(
            "/api/v1/pods",
            label_selector="app=web",
            field_selector="spec.nodeName=n1",
            limit=2,
            resource_version="0",
        )
    assert isinstance(result, ListResult)
    assert [item["metadata"]["name"] for item in result.items] == ["p1", "p2", "p3", "p4", "p5"]
    assert result.resource_version == "100"
    assert result.kind == "PodList"
    assert result.pages == 3
    assert params_seen[0] == {
        "labelSelector": "app=web",
        "fieldSelector": "spec.nodeName=n1",
        "limit": "2",
        "resourceVersion": "0",
    }
    # Later pages carry the token and the selectors, never resourceVersion.
    assert params_seen[1] == {
        "labelSelector": "app=web",
        "fieldSelector": "spec.nodeName=n1",
        "limit": "2",
        "continue": "c1",
    }
    assert params_seen[2]["continue"] == "c2"


async def test_list_with_expired_continue_token_raises_gone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "continue" in request.url.params:
            return status(410, "Expired", "The provided continue parameter is too old")
        return httpx.Response(
            200, json={"metadata": {"continue": "c1", "resourceVersion": "9"}, "items": [{}]}
        )

    async with client(handler) as c:
        with pytest.raises(Gone, match="too old"):
            await c.list("/api/v1/pods")


async def test_create_and_replace_send_json() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201 if request.method == "POST" else 200, content=request.content)

    body = {"metadata": {"name": "n"}, "spec": {"x": 1}}
    async with client(handler) as c:
        assert await c.create("/api/v1/nodes", body, field_manager="fleet") == body
        assert await c.replace("/api/v1/nodes/n", body) == body
    assert [(r.method, r.headers["content-type"]) for r in seen] == [
        ("POST", "application/json"),
        ("PUT", "application/json"),
    ]
    assert dict(seen[0].url.params) == {"fieldManager": "fleet"}
    assert json.loads(seen[1].content) == body


@pytest.mark.parametrize(
    ("patch_type", "content_type", "body"),
    [
        ("json", "application/json-patch+json", [{"op": "replace", "path": "/spec/x", "value": 2}]),
        ("merge", "application/merge-patch+json", {"spec": {"x": 2}}),
        ("strategic", "application/strategic-merge-patch+json", {"status": {"conditions": []}}),
        ("apply", "application/apply-patch+yaml", {"apiVersion": "v1", "kind": "Node"}),
    ],
)
async def test_patch_content_types(patch_type: Any, content_type: str, body: Any) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"patched": True})

    async with client(handler) as c:
        result = await c.patch(
            "/api/v1/nodes/n", body, patch_type=patch_type, field_manager="fleet", force=True
        )
    assert result == {"patched": True}
    assert seen[0].method == "PATCH"
    assert seen[0].headers["content-type"] == content_type
    assert json.loads(seen[0].content) == body
    assert dict(seen[0].url.params) == {"fieldManager": "fleet", "force": "true"}


async def test_patch_refuses_what_the_server_would() -> None:
    async with client(lambda request: httpx.Response(200, json={})) as c:
        with pytest.raises(InputError, match="field_manager"):
            await c.patch("/api/v1/nodes/n", {}, patch_type="apply")
        with pytest.raises(InputError, match="list of operations"):
            await c.patch("/api/v1/nodes/n", {"op": "add"}, patch_type="json")
        with pytest.raises(InputError, match="unknown patch type"):
            await c.patch("/api/v1/nodes/n", {}, patch_type="xml")  # type: ignore[arg-type]


async def test_delete_sends_delete_options() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "Status", "status": "Success"})

    async with client(handler) as c:
        await c.delete(
            POD_PATH,
            grace_period_seconds=0,
            preconditions_uid="u-1",
            preconditions_resource_version="7",
            propagation_policy="Background",
            dry_run=True,
        )
        await c.delete(POD_PATH)
        await c.delete_collection(
            "/api/v1/namespaces/default/pods",
            label_selector="a=b",
            field_selector="x=y",
            grace_period_seconds=5,
            propagation_policy="Foreground",
        )
    assert seen[0].method == "DELETE"
    assert seen[0].headers["content-type"] == "application/json"
    assert json.loads(seen[0].content) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "7"},
        "propagationPolicy": "Background",
        "dryRun": ["All"],
    }
    assert json.loads(seen[1].content) == {"kind": "DeleteOptions", "apiVersion": "v1"}
    assert dict(seen[2].url.params) == {"labelSelector": "a=b", "fieldSelector": "x=y"}
    assert json.loads(seen[2].content)["gracePeriodSeconds"] == 5
    async with client(handler) as c:
        with pytest.raises(InputError, match="propagation_policy"):
            await c.delete(POD_PATH, propagation_policy="Sometimes")


async def test_non_json_success_is_a_protocol_error() -> None:
    async with client(lambda request: httpx.Response(200, text="<html>")) as c:
        with pytest.raises(ProtocolError, match="not a JSON object"):
            await c.get(POD_PATH)


@pytest.mark.parametrize(
    ("exc", "mapped"),
    [
        (httpx.ConnectError("refused"), ConnectError),
        (httpx.ConnectTimeout("slow"), ConnectError),
        (httpx.ReadTimeout("slow"), ReadTimeout),
        (httpx.PoolTimeout("busy"), ReadTimeout),
        (httpx.RemoteProtocolError("peer closed"), ProtocolError),
        (httpx.ReadError("reset"), ProtocolError),
    ],
)
async def test_httpx_errors_are_mapped(exc: Exception, mapped: type[Exception]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with client(handler) as c:
        with pytest.raises(mapped) as info:
            await c.get(POD_PATH)
    assert info.value.__cause__ is exc


async def test_unsupported_scheme_is_a_config_error() -> None:
    async with Client(ClusterConfig(server="ftp://kube.test")) as c:
        with pytest.raises(ConfigError):
            await c.request("GET", "/api")


class _Body(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


async def test_stream_yields_bytes_retries_401_and_closes() -> None:
    bodies: list[_Body] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["watch"] == "true"
        if request.headers["authorization"] == "Bearer token-1":
            return status(401, "Unauthorized")
        body = _Body(b'{"type":"ADDED"}\n', b'{"type":"DELETED"}\n')
        bodies.append(body)
        return httpx.Response(200, stream=body)

    auth = CountingAuth()
    async with client(handler, auth=auth) as c:
        async with c.stream("GET", "/api/v1/pods", params={"watch": "true"}) as stream:
            assert stream.status == 200
            got = [chunk async for chunk in stream.aiter_bytes()]
        assert got == [b'{"type":"ADDED"}\n', b'{"type":"DELETED"}\n']
        assert bodies[0].closed
        async with c.stream("GET", "/api/v1/pods", params={"watch": "true"}) as stream:
            assert await stream.aread() == b'{"type":"ADDED"}\n{"type":"DELETED"}\n'
    assert auth.invalidations == 1


async def test_request_returns_error_answers_unraised() -> None:
    async with client(lambda request: status(404, "NotFound", "gone")) as c:
        response = await c.request("GET", POD_PATH)
    assert response.status == 404
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(NotFound):
        response.raise_for_status()


def test_timeouts_have_documented_defaults() -> None:
    timeouts = ClientTimeouts()
    assert (timeouts.connect, timeouts.read, timeouts.write, timeouts.pool) == (
        10.0,
        60.0,
        10.0,
        10.0,
    )
    assert timeouts.stream_read is None


@pytest.mark.parametrize(
    ("args", "kwargs", "path"),
    [
        (("", "v1", "pods"), {}, "/api/v1/pods"),
        (("", "v1", "pods"), {"namespace": "default"}, "/api/v1/namespaces/default/pods"),
        (
            ("", "v1", "pods"),
            {"namespace": "d", "name": "p", "subresource": "status"},
            "/api/v1/namespaces/d/pods/p/status",
        ),
        (("", "v1", "nodes"), {"name": "node-1"}, "/api/v1/nodes/node-1"),
        (
            ("coordination.k8s.io", "v1", "leases"),
            {"namespace": "kube-node-lease", "name": "n1"},
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
        ),
        (
            ("mock.zhizuqiu.cn", "v1alpha1", "nodes"),
            {"name": "a b%"},
            "/apis/mock.zhizuqiu.cn/v1alpha1/nodes/a%20b%25",
        ),
        (("", "v1", "nodes"), {"name": "system:node:x"}, "/api/v1/nodes/system%3Anode%3Ax"),
    ],
)
def test_resource_path(args: tuple[str, str, str], kwargs: dict[str, str], path: str) -> None:
    assert resource_path(*args, **kwargs) == path


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "a/status"},
        {"namespace": "x/y"},
        {"name": ".."},
        {"name": ""},
        {"subresource": "status"},
    ],
)
def test_resource_path_refuses_names_that_would_reroute(kwargs: dict[str, str]) -> None:
    with pytest.raises(InputError):
        resource_path("", "v1", "pods", **kwargs)


class _StallAfterFirstChunk(httpx.AsyncBaseTransport):
    """Reads one chunk of the request body, then never answers: a send cut by cancellation."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.stalled = trio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            self.chunks.append(chunk)
            self.stalled.set()
            await trio.sleep_forever()
        raise AssertionError("unreachable: the body has one chunk and the send is cancelled")


async def test_request_cancelled_mid_send_leaves_no_unfinished_generator() -> None:
    # httpx's ByteStream iterates through an async generator (encode/httpx#3686): cancelled
    # mid-send it stays suspended, and trio reports it at garbage collection -- an error here,
    # as warnings are. The client sends bodies through a plain iterator object instead.
    transport = _StallAfterFirstChunk()
    cfg = ClusterConfig(server="http://127.0.0.1:1")
    async with Client(cfg, transport=transport) as client:
        with trio.move_on_after(1):
            await client.patch("/api/v1/nodes/n", {"a": 1}, patch_type="merge")
    assert transport.chunks == [b'{"a":1}']
    del transport
    gc.collect()
