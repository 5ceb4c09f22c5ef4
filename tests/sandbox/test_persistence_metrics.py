"""--data persistence across a clean restart, /metrics, discovery and /openapi for kubectl."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from tests.sandbox._http import client


async def test_state_survives_a_clean_restart(tmp_path: Path) -> None:
    settings = SandboxSettings(
        kubeconfig_out=tmp_path / "kc", data_file=tmp_path / "data.json", tls=False
    )
    async with trio.open_nursery() as nursery:
        sb: RunningSandbox = await nursery.start(serve_sandbox, settings)
        async with client(sb) as c:
            r = await c.post(
                "/api/v1/namespaces/default/configmaps",
                json={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "keep"},
                    "data": {"a": "b"},
                },
            )
            rv = int(r.json()["metadata"]["resourceVersion"])
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        sb = await nursery.start(serve_sandbox, settings)
        async with client(sb) as c:
            r = await c.get("/api/v1/namespaces/default/configmaps/keep")
            assert r.json()["data"] == {"a": "b"}
            r = await c.post(
                "/api/v1/namespaces/default/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "next"}},
            )
            assert int(r.json()["metadata"]["resourceVersion"]) > rv
        nursery.cancel_scope.cancel()


async def test_metrics_discovery_openapi(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await c.get("/api/v1/namespaces/default/pods")
        text = (await c.get("/metrics")).text
        assert (
            'apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",'
            'scope="namespace",subresource="",verb="LIST",version="v1"}' in text
        )
        assert "apiserver_request_duration_seconds_bucket" in text
        assert 'apiserver_storage_objects{resource="namespaces"} 4.0' in text
        resources = {r["name"]: r for r in (await c.get("/api/v1")).json()["resources"]}
        assert resources["pods"]["shortNames"] == ["po"] and "pods/status" in resources
        groups = [g["name"] for g in (await c.get("/apis")).json()["groups"]]
        assert {"apps", "coordination.k8s.io", "apiextensions.k8s.io", "events.k8s.io"} <= set(
            groups
        )
        only_aggregated = {
            "accept": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        }
        assert (await c.get("/apis", headers=only_aggregated)).status_code == 406
        v2 = await c.get(
            "/openapi/v2",
            headers={"accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"},
        )
        assert v2.status_code == 200 and v2.content.startswith(b"\n\x032.0")  # swagger = 1
        again = await c.get("/openapi/v2", headers={"if-none-match": v2.headers["etag"]})
        assert again.status_code == 304
        index = (await c.get("/openapi/v3")).json()["paths"]
        assert index["apis/apps/v1"]["serverRelativeURL"].startswith(
            "/openapi/v3/apis/apps/v1?hash="
        )


async def test_a_watch_is_counted_when_it_ends_as_kube_apiserver_counts_it(
    sandbox: RunningSandbox,
) -> None:
    """kube-apiserver's apiserver_request_total records a WATCH after its stream returns
    (the metrics handler wraps the whole request); the sandbox counted it when it began,
    so a chaos report's "watches" differed between the two for the same watches."""
    from bench import parse_metrics

    async def counts(c: httpx.AsyncClient) -> tuple[float, float]:
        scrape = parse_metrics((await c.get("/metrics")).text)
        ended = sum(
            v
            for k, v in scrape.requests.items()
            if (k.verb, k.resource, k.subresource, k.code) == ("WATCH", "configmaps", "", "200")
        )
        return ended, scrape.longrunning.get(("WATCH", "", "configmaps"), 0.0)

    async with client(sandbox) as c:
        ended, open_before = await counts(c)
        path = "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"
        async with c.stream("GET", path) as stream:
            assert stream.status_code == 200
            assert await counts(c) == (ended, open_before + 1)  # open: in the gauge alone
            async for _ in stream.aiter_bytes():  # the server ends it after 1 s
                pass
        # The server's handler counts it once the stream is closed, a moment after the
        # client read its end.
        for _ in range(100):
            if (now := await counts(c)) == (ended + 1, open_before):
                break
            await trio.sleep(0.05)
        assert now == (ended + 1, open_before)
