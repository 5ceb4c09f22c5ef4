"""LIST and WATCH semantics: resourceVersions, paging, selectors, bookmarks, 410 Gone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import trio

from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from tests.sandbox._http import client, make_namespace, pod


async def _watch(c: httpx.AsyncClient, url: str, params: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with c.stream("GET", url, params={"watch": "true", **params}) as r:
        assert r.status_code == 200
        buf = b""
        async for chunk in r.aiter_bytes():
            buf += chunk
            *lines, buf = buf.split(b"\n")
            events.extend(json.loads(line) for line in lines if line)
    return events


async def test_watch_from_list_rv_and_selector_transitions(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "w")
        base = "/api/v1/namespaces/w/pods"
        rv = (await c.get(base)).json()["metadata"]["resourceVersion"]
        await c.post(base, json=pod("ls", labels={"tier": "a"}))
        merge = {"content-type": "application/merge-patch+json"}
        for labels in ('{"tier":"b"}', '{"other":"x"}', '{"tier":"a"}'):
            await c.patch(
                f"{base}/ls", content=b'{"metadata":{"labels":%s}}' % labels.encode(), headers=merge
            )
        await c.delete(f"{base}/ls")
        events = await _watch(
            c, base, {"resourceVersion": rv, "labelSelector": "tier=a", "timeoutSeconds": "1"}
        )
        # an unbound pod is deleted at once: MODIFIED (deletionTimestamp, grace 0), then DELETED
        assert [e["type"] for e in events] == ["ADDED", "DELETED", "ADDED", "MODIFIED", "DELETED"]
        # leaving the selector sends the last matching state
        assert events[1]["object"]["metadata"]["labels"] == {"tier": "a"}
        everything = await _watch(c, base, {"resourceVersion": rv, "timeoutSeconds": "1"})
        assert [e["type"] for e in everything] == [
            "ADDED",
            "MODIFIED",
            "MODIFIED",
            "MODIFIED",
            "MODIFIED",
            "DELETED",
        ]


async def test_watch_zero_sends_current_state_then_changes(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "w0")
        base = "/api/v1/namespaces/w0/pods"
        await c.post(base, json=pod("a"))
        await c.post(base, json=pod("b", node="n1"))
        async with trio.open_nursery() as nursery:
            got: list[list[dict[str, Any]]] = []

            async def run() -> None:
                got.append(
                    await _watch(
                        c,
                        base,
                        {
                            "resourceVersion": "0",
                            "timeoutSeconds": "1",
                            "fieldSelector": "spec.nodeName!=",
                        },
                    )
                )

            nursery.start_soon(run)
            await trio.sleep(0.3)
            await c.post(base, json=pod("c", node="n1"))
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in got[0]] == [
            ("ADDED", "b"),
            ("ADDED", "c"),
        ]


async def test_too_old_and_bad_selectors(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        events = await _watch(c, "/api/v1/pods", {"resourceVersion": "1", "timeoutSeconds": "1"})
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
        r = await c.get("/api/v1/pods", params={"fieldSelector": "spec.foo=bar"})
        assert r.status_code == 400 and r.json()["message"] == "field label not supported: spec.foo"
        r = await c.get("/api/v1/pods", params={"labelSelector": "a in (b"})
        assert r.status_code == 400
        r = await c.get("/api/v1/pods", params={"resourceVersionMatch": "Exact"})
        assert r.status_code == 422


async def test_bookmarks_and_server_closes_at_timeout(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = SandboxSettings(kubeconfig_out=tmp_path / "kc", bookmark_interval=0.3, tls=False)
    sb: RunningSandbox = await nursery.start(serve_sandbox, settings)
    async with client(sb) as c:
        start = trio.current_time()
        events = await _watch(
            c,
            "/api/v1/namespaces/default/pods",
            {"allowWatchBookmarks": "true", "timeoutSeconds": "1"},
        )
        assert 0.9 < trio.current_time() - start < 3
        assert events and {e["type"] for e in events} == {"BOOKMARK"}
        assert events[-1]["object"]["metadata"]["resourceVersion"] == str(sb.app.store.rv)


async def test_paging_is_consistent_and_counts_remaining(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "page")
        base = "/api/v1/namespaces/page/pods"
        for i in range(5):
            await c.post(base, json=pod(f"page-{i}"))
        first = (await c.get(base, params={"limit": "2"})).json()
        assert [p["metadata"]["name"] for p in first["items"]] == ["page-0", "page-1"]
        assert first["metadata"]["remainingItemCount"] == 3
        await c.delete(f"{base}/page-3")  # the pages still show the list as it was
        second = (
            await c.get(base, params={"limit": "2", "continue": first["metadata"]["continue"]})
        ).json()
        assert [p["metadata"]["name"] for p in second["items"]] == ["page-2", "page-3"]
        third = (
            await c.get(base, params={"limit": "2", "continue": second["metadata"]["continue"]})
        ).json()
        assert [p["metadata"]["name"] for p in third["items"]] == ["page-4"]
        assert "continue" not in third["metadata"]
        everything = (await c.get(base, params={"limit": "2", "resourceVersion": "0"})).json()
        assert len(everything["items"]) == 4
        r = await c.get(base, params={"limit": "2", "continue": "garbage!"})
        assert r.status_code == 400


async def test_exact_list_and_history_limit(nursery: trio.Nursery, tmp_path: Path) -> None:
    settings = SandboxSettings(
        kubeconfig_out=tmp_path / "kc",
        watch_history=3,
        watch_history_window=0,
        tls=False,
        too_large_rv_wait=0.1,
    )
    sb: RunningSandbox = await nursery.start(serve_sandbox, settings)
    async with client(sb) as c:
        base = "/api/v1/namespaces/default/configmaps"
        rv = (
            await c.post(
                base, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
            )
        ).json()
        r = await c.get(
            base,
            params={
                "resourceVersion": rv["metadata"]["resourceVersion"],
                "resourceVersionMatch": "Exact",
            },
        )
        assert [o["metadata"]["name"] for o in r.json()["items"]] == ["a"]
        for name in "bcde":
            await c.post(
                base, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            )
        r = await c.get(
            base,
            params={
                "resourceVersion": rv["metadata"]["resourceVersion"],
                "resourceVersionMatch": "Exact",
            },
        )
        assert r.status_code == 410
        r = await c.get(base, params={"resourceVersion": "99999999"})
        assert r.status_code == 504 and r.headers["retry-after"] == "1"
