"""fleet.kube's Reflector against the real sandbox, over HotTransport and over Client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

from fleet.kube import (
    BaseRequester,
    Client,
    ClusterConfig,
    HotTransport,
    ObjectMeta,
    Reflector,
    Requester,
    Response,
    StreamResponse,
    WatchEvent,
    WatchSettings,
    load_config,
    resource_path,
)
from tests._apiserver import Apiserver, install_fleet_crds, unique

from .conftest import StartSandbox


class ConfigMapView(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    data: dict[str, str] = {}


Events = trio.MemoryReceiveChannel[WatchEvent[ConfigMapView]]


def cms(ns: str, name: str | None = None) -> str:
    return resource_path("", "v1", "configmaps", namespace=ns, name=name)


def configmap(
    name: str, data: dict[str, str] | None = None, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data or {},
    }


@asynccontextmanager
async def requester(kind: str, config: ClusterConfig) -> AsyncIterator[Requester]:
    if kind == "hot":
        async with HotTransport(config) as hot:
            yield hot
    else:
        async with Client(config) as client:
            yield client


@pytest.fixture(params=["hot", "client"])
def via(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


async def next_event(events: Events) -> tuple[str, str, dict[str, str]]:
    with trio.fail_after(2):
        event = await events.receive()
    return event.type, event.obj.metadata.name, event.obj.data


async def no_event(events: Events, seconds: float = 0.3) -> None:
    with trio.move_on_after(seconds):
        event = await events.receive()
        raise AssertionError(f"unexpected event {event}")


async def start_reflector(nursery: trio.Nursery, reflector: Reflector[ConfigMapView]) -> Events:
    send, receive = trio.open_memory_channel[WatchEvent[ConfigMapView]](1000)
    await nursery.start(reflector.run, send)
    return receive


async def test_list_then_added_modified_deleted(via: str, config: ClusterConfig) -> None:
    ns = unique("refl")
    async with (
        Client(config) as client,
        requester(via, config) as req,
        trio.open_nursery() as nursery,
    ):
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for i in range(5):
            await client.create(cms(ns), configmap(f"cm-{i}", {"i": str(i)}))
        reflector = Reflector(req, cms(ns), ConfigMapView, settings=WatchSettings(page_size=2))
        events = await start_reflector(nursery, reflector)
        assert [await next_event(events) for _ in range(5)] == [
            ("ADDED", f"cm-{i}", {"i": str(i)}) for i in range(5)
        ]
        await client.create(cms(ns), configmap("new", {"v": "1"}))
        assert await next_event(events) == ("ADDED", "new", {"v": "1"})
        patched = await client.patch(cms(ns, "new"), {"data": {"v": "2"}}, patch_type="merge")
        assert await next_event(events) == ("MODIFIED", "new", {"v": "2"})
        await client.delete(cms(ns, "cm-0"))
        assert await next_event(events) == ("DELETED", "cm-0", {"i": "0"})
        await no_event(events, 0.1)
        assert sorted(reflector.objects) == [
            f"{ns}/cm-1",
            f"{ns}/cm-2",
            f"{ns}/cm-3",
            f"{ns}/cm-4",
            f"{ns}/new",
        ]
        stats = reflector.statistics()
        assert stats.events == 8 and stats.relists == 0 and stats.restarts == 0
        assert stats.last_error is None
        # The reflector stands at its last event (the DELETE), past the PATCH before it. A
        # real apiserver's list carries the whole cluster's latest revision, which other
        # writers (the controller-manager, other tests) move on: at most that.
        listed = int((await client.list(cms(ns))).resource_version)
        assert int(patched["metadata"]["resourceVersion"]) < int(stats.resource_version) <= listed
        nursery.cancel_scope.cancel()


async def test_label_selector_transitions(via: str, config: ClusterConfig) -> None:
    ns = unique("sel")
    async with (
        Client(config) as client,
        requester(via, config) as req,
        trio.open_nursery() as nursery,
    ):
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await client.create(cms(ns), configmap("web", labels={"app": "web"}))
        await client.create(cms(ns), configmap("db", labels={"app": "db"}))
        reflector = Reflector(req, cms(ns), ConfigMapView, label_selector="app=web")
        events = await start_reflector(nursery, reflector)
        assert await next_event(events) == ("ADDED", "web", {})
        # Stops matching: arrives as DELETED (its last matching state).
        await client.patch(
            cms(ns, "web"),
            {"metadata": {"labels": {"app": "other"}}, "data": {"k": "v"}},
            patch_type="merge",
        )
        assert await next_event(events) == ("DELETED", "web", {})
        assert dict(reflector.objects) == {}
        # Starts matching: ADDED.
        await client.patch(
            cms(ns, "db"), {"metadata": {"labels": {"app": "web"}}}, patch_type="merge"
        )
        assert await next_event(events) == ("ADDED", "db", {})
        # Changes that never match are never seen.
        await client.patch(cms(ns, "web"), {"data": {"k": "w"}}, patch_type="merge")
        await no_event(events)
        assert list(reflector.objects) == [f"{ns}/db"]
        nursery.cancel_scope.cancel()


async def test_bookmarks_advance_the_resource_version(
    via: str, start_sandbox: StartSandbox
) -> None:
    sb = await start_sandbox(bookmark_interval=0.2)
    config = load_config(sb.kubeconfig)
    async with (
        Client(config) as client,
        requester(via, config) as req,
        trio.open_nursery() as nursery,
    ):
        for ns in ("quiet", "busy"):
            await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        await client.create(cms("quiet"), configmap("only"))
        reflector = Reflector(req, cms("quiet"), ConfigMapView)
        events = await start_reflector(nursery, reflector)
        assert await next_event(events) == ("ADDED", "only", {})
        listed_rv = int(reflector.resource_version)
        # Writes elsewhere move the global resourceVersion; only bookmarks tell this watch.
        last = {}
        for i in range(3):
            last = await client.create(cms("busy"), configmap(f"b-{i}"))
        target = int(last["metadata"]["resourceVersion"])
        for _ in range(40):  # bookmarks every 0.2 s: one within 2 s at the latest
            if int(reflector.resource_version) >= target:
                break
            await trio.sleep(0.05)
        else:
            raise AssertionError(f"no bookmark moved {reflector.resource_version} to {target}")
        assert reflector.statistics().bookmarks >= 1
        assert int(reflector.resource_version) > listed_rv
        await no_event(events, 0.05)
        assert reflector.statistics().events == 1
        assert reflector.statistics().restarts == 0
        nursery.cancel_scope.cancel()


class GatedRequester(BaseRequester):
    """A real transport whose watches after the first wait for a gate: the reflector is
    held between two watches while the world moves on."""

    def __init__(self, inner: Requester) -> None:
        self.inner = inner
        self.watches = 0
        self.between = trio.Event()  # set when the reflector wants its second watch
        self.gate = trio.Event()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        return await self.inner.request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamResponse]:
        self.watches += 1
        if self.watches >= 2:
            self.between.set()
            await self.gate.wait()
        async with self.inner.stream(method, path, params=params, headers=headers) as response:
            yield response


async def test_gone_relists_and_synthesizes_deletions(
    via: str, start_sandbox: StartSandbox
) -> None:
    sb = await start_sandbox(watch_history=5, watch_history_window=0, bookmark_before_timeout=0.0)
    config = load_config(sb.kubeconfig)
    async with (
        Client(config) as client,
        requester(via, config) as req,
        trio.open_nursery() as nursery,
    ):
        for ns in ("held", "noise"):
            await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        for name in ("keep", "doomed", "changed"):
            await client.create(cms("held"), configmap(name, {"v": "1"}))
        gated = GatedRequester(req)
        # The server ends each watch after one second; the second one waits for the gate.
        settings = WatchSettings(min_watch_timeout=1, max_watch_timeout=1)
        reflector = Reflector(gated, cms("held"), ConfigMapView, settings=settings)
        events = await start_reflector(nursery, reflector)
        assert sorted([await next_event(events) for _ in range(3)]) == [
            ("ADDED", n, {"v": "1"}) for n in ("changed", "doomed", "keep")
        ]
        with trio.fail_after(3):
            await gated.between.wait()
        old_rv = int(reflector.resource_version)
        # While no watch is open: a deletion, a change, a creation, and enough other
        # writes that the 5-event history no longer reaches back to the reflector's rv.
        await client.delete(cms("held", "doomed"))
        await client.patch(cms("held", "changed"), {"data": {"v": "2"}}, patch_type="merge")
        await client.create(cms("held"), configmap("born", {"v": "1"}))
        for i in range(6):
            await client.create(cms("noise"), configmap(f"n-{i}"))
        gated.gate.set()
        # The watch from old_rv gets a 410 (an ERROR event); the relist hands over the difference.
        assert sorted([await next_event(events) for _ in range(3)]) == [
            ("ADDED", "born", {"v": "1"}),
            ("DELETED", "doomed", {"v": "1"}),
            ("MODIFIED", "changed", {"v": "2"}),
        ]
        stats = reflector.statistics()
        assert stats.relists == 1
        assert stats.last_error is not None and "Gone" in stats.last_error
        assert int(stats.resource_version) > old_rv
        assert sorted(reflector.objects) == ["held/born", "held/changed", "held/keep"]
        # And it watches on from the relist.
        await client.delete(cms("held", "keep"))
        assert await next_event(events) == ("DELETED", "keep", {"v": "1"})
        nursery.cancel_scope.cancel()


class NodeCRView(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = ObjectMeta()
    spec: dict[str, Any] = {}


async def test_two_megabyte_objects(via: str, apiserver: Apiserver, config: ClusterConfig) -> None:
    # A Node CR (its spec.resources keeps unknown fields) carries the big payload: the
    # apiserver caps ConfigMaps at 1 MiB, not custom resources. A real one stores no
    # object over etcd's request limit (1.5 MiB; docs/sandbox.md): 1.4 MiB there.
    ns = unique("big")
    path = resource_path("mock.zhizuqiu.cn", "v1alpha1", "nodes", namespace=ns)
    big = "x" * (1_400_000 if apiserver.is_real else 2 * 1024 * 1024)
    async with (
        Client(config) as client,
        requester(via, config) as req,
        trio.open_nursery() as nursery,
    ):
        await install_fleet_crds(client)
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        node = {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": "n1"},
            "spec": {"resources": {"blob": big}},
        }
        await client.create(path, node)
        reflector = Reflector(req, path, NodeCRView)
        send, events = trio.open_memory_channel[WatchEvent[NodeCRView]](10)
        await nursery.start(reflector.run, send)
        with trio.fail_after(5):
            listed = await events.receive()
            assert (listed.type, listed.obj.spec["resources"]["blob"] == big) == ("ADDED", True)
            await client.patch(
                f"{path}/n1",
                {"spec": {"resources": {"blob": big.replace("x", "y")}}},
                patch_type="merge",
            )
            changed = await events.receive()
        assert changed.type == "MODIFIED"
        assert changed.obj.spec["resources"]["blob"] == "y" * len(big)
        nursery.cancel_scope.cancel()


async def test_a_quiet_watch_is_not_taken_for_dead(config: ClusterConfig) -> None:
    """A real apiserver sends no bookmark on a watch of a resource nothing changes: a
    reflector that counted that silence against its inactivity timeout re-watched (and
    logged it) every 150 s for nothing. Silence counts only while bookmarks come."""
    ns = unique("quiet")
    async with Client(config) as client, trio.open_nursery() as nursery:
        await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        reflector = Reflector(
            client, cms(ns), ConfigMapView, settings=WatchSettings(inactivity_timeout=1.0)
        )
        await start_reflector(nursery, reflector)
        await trio.sleep(4)
        stats = reflector.statistics()
        assert stats.restarts == 0 and stats.relists == 0, stats
        assert stats.last_error is None
        nursery.cancel_scope.cancel()
