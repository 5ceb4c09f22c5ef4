"""A Node CR moved between two live shards is never driven by both (autojump clock).

The coordinator and two shard engines share one in-memory apiserver; the old
owner's CR watch is slow (each event held back), as on a loaded machine where
one process reads its watch seconds after another. The node writes the server
served, by ``fieldManager``, must form one run per owner: the old owner's last
write before the new owner's first.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from itertools import pairwise

import pytest
import trio
import trio.testing

from fleet._settings import CoordinatorSettings, FleetSettings, ShardSettings
from fleet.coordinator import Coordinator, owner
from fleet.kube import BatchRequest, MemoryApiserver, MemoryClient, Response, StreamResponse
from fleet.machinery import MERGE_PATCH
from fleet.wire import (
    HANDOVER_ANNOTATION,
    RELEASED_ANNOTATION,
    SHARD_LABEL,
    shard_field_manager,
)
from shards import ShardEngine
from shards._context import FencedRequester, HandedOver
from shards._handover import HandoverGate, node_of, pod_of

wall = MemoryApiserver.wall

CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
NODES = "/api/v1/nodes"
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
PODS = "/api/v1/namespaces/default/pods"
WATCH_LAG = 3.0
"""Seconds each CR watch event of the old owner is held back: longer than a node's whole
adoption by the new owner (GETs, Lease, status), shorter than a Lease renewal interval."""
CR_COUNT = 8


class _SlowCrWatch(MemoryClient):
    """A shard's connection whose Node CR watch delivers each event ``lag`` seconds late."""

    def __init__(self, server: MemoryApiserver) -> None:
        super().__init__(server)
        self.lag = 0.0

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[StreamResponse]:  # fmt: skip
        async with super()._stream(method, path, params, headers) as response:
            yield _Late(response, self) if path.startswith("/apis/mock.zhizuqiu.cn/") else response


class _Late:
    def __init__(self, response: StreamResponse, client: _SlowCrWatch) -> None:
        self.status = response.status
        self.headers = response.headers
        self._response = response
        self._client = client

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():  # the memory server: one event a chunk
            await trio.sleep(self._client.lag)
            yield chunk

    async def aread(self) -> bytes:
        return await self._response.aread()


def _settings() -> FleetSettings:
    return FleetSettings(
        shard=ShardSettings(pod_cidr_allocation="shard"),
        coordinator=CoordinatorSettings(max_moves_per_second=2),
    )


async def _run_shard(
    nursery: trio.Nursery, shard: str, control: MemoryClient | MemoryApiserver
) -> ShardEngine:
    engine = ShardEngine(_settings(), shard, control=control, wall=wall, rng=random.Random(7))
    await nursery.start(engine.run)
    return engine


def _node_writes(api: MemoryApiserver) -> dict[str, list[tuple[float, str]]]:
    """Each node's writes (its Node, status, Lease) the server took, by node: (time, writer)."""
    out: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for call in api.calls:
        if call.method not in ("POST", "PUT", "PATCH", "DELETE"):
            continue
        name = node_of(call.path)
        if name is None and call.path in (NODES, NODE_LEASES) and isinstance(call.body, dict):
            name = call.body.get("metadata", {}).get("name")  # a create
        if name is not None:
            out[name].append((call.at, call.params.get("fieldManager", "")))
    return out


async def test_a_cr_moved_between_live_shards_has_one_driver_at_a_time(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    for i in range(CR_COUNT):
        api.create(CRS, {"apiVersion": "mock.zhizuqiu.cn/v1alpha1", "kind": "Node",
                         "metadata": {"name": f"n{i}"}, "spec": {}})  # fmt: skip
    slow = _SlowCrWatch(api)
    await _run_shard(nursery, "0", slow)
    coordinator = Coordinator(
        api.client(), _settings(), identity="coordinator@test/1", wall=wall,
        rng=random.Random(1),
    )  # fmt: skip
    await nursery.start(coordinator.run)
    await trio.sleep(30)  # every CR on shard 0, every node registered and renewing
    keys = [f"default/n{i}" for i in range(CR_COUNT)]
    assert {k: coordinator.assignments()[k] for k in keys} == dict.fromkeys(keys, "0")

    slow.lag = WATCH_LAG  # from now on shard 0 reads of every move seconds late
    await _run_shard(nursery, "1", api.client())
    await trio.sleep(60)
    final = {k: (api.get(f"{CRS}/{k.partition('/')[2]}") or {})["metadata"]["labels"] for k in keys}
    moved = [k for k in keys if owner(k, ["0", "1"]) == "1"]
    assert moved and all(final[k][SHARD_LABEL] == "1" for k in moved)
    assert all(final[k][SHARD_LABEL] == "0" for k in keys if k not in moved)

    writes = _node_writes(api)
    first, second = shard_field_manager("0"), shard_field_manager("1")
    for key in keys:
        name = key.partition("/")[2]
        writers = [w for _, w in writes[name]]
        runs = [writers[0], *(b for a, b in pairwise(writers) if a != b)]
        expected = [first, second] if key in moved else [first]
        assert runs == expected, f"{name} driven by {runs}: " + ", ".join(
            f"{t:.2f} {w}" for t, w in writes[name] if t > 30
        )
        # And the new owner renews it (the move did not just stop the node).
        if key in moved:
            assert any(t > 60 and w == second for t, w in writes[name])


async def test_a_shard_lets_go_of_a_marked_cr_and_drives_it_again_when_handed_back(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    api.create(CRS, {"apiVersion": "mock.zhizuqiu.cn/v1alpha1", "kind": "Node",
                     "metadata": {"name": "n1", "labels": {SHARD_LABEL: "0"}}, "spec": {}})  # fmt: skip
    engine = await _run_shard(nursery, "0", api)
    await trio.sleep(15)
    mine = shard_field_manager("0")
    api.patch(f"{CRS}/n1", {"metadata": {"annotations": {HANDOVER_ANNOTATION: "1"}}})
    await trio.sleep(1)
    cr = api.get(f"{CRS}/n1")
    assert cr is not None and cr["metadata"]["annotations"][RELEASED_ANNOTATION] == "0"
    (released,) = [
        c.at for c in api.log("PATCH", f"{CRS}/n1") if RELEASED_ANNOTATION in str(c.body)
    ]
    await trio.sleep(30)  # three renewal intervals: nothing of the node from shard 0
    assert [t for t, w in _node_writes(api)["n1"] if t >= released and w == mine] == []
    assert engine.ctx.handover.released("n1")
    # The target died meanwhile and n1 stays on shard 0: the label write clears the marks.
    api.patch(f"{CRS}/n1", {"metadata": {"annotations": {HANDOVER_ANNOTATION: None,
                                                         RELEASED_ANNOTATION: None}}})  # fmt: skip
    back = trio.current_time()
    await trio.sleep(15)
    assert any(t > back for t, _ in _node_writes(api)["n1"])
    assert not engine.ctx.handover.released("n1")
    assert puts_after(api, f"{NODE_LEASES}/n1", back)


async def test_a_released_nodes_pod_writes_are_refused_like_its_own(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """A pod's path does not name its node: pod status writes and deletes went out after
    the node was released (queued, retried, or built from a state read before), to land
    after the new owner's. They are refused at the door like the node's, until the node is
    handed back; a pod of the same name on a node still driven is written."""
    api = MemoryApiserver()
    for name in ("n1", "n2"):
        api.create(CRS, {"apiVersion": "mock.zhizuqiu.cn/v1alpha1", "kind": "Node",
                         "metadata": {"name": name, "labels": {SHARD_LABEL: "0"}}, "spec": {}})  # fmt: skip
    for name, node in (("p1", "n1"), ("p2", "n2")):
        api.create(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                          "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})  # fmt: skip
    engine = await _run_shard(nursery, "0", api)
    await trio.sleep(15)
    for name in ("p1", "p2"):
        pod = api.get(f"{PODS}/{name}")
        assert pod is not None and pod["status"]["phase"] == "Running"
    api.patch(f"{CRS}/n1", {"metadata": {"annotations": {HANDOVER_ANNOTATION: "1"}}})
    await trio.sleep(1)
    assert engine.ctx.handover.released("n1")

    status = b'{"status": {"message": "late"}}'
    for requester in (engine.ctx.hot, engine.ctx.control):
        with pytest.raises(HandedOver):
            await requester.request(
                "PATCH", f"{PODS}/p1/status", body=status, content_type=MERGE_PATCH
            )
        with pytest.raises(HandedOver):
            await requester.request("DELETE", f"{PODS}/p1")
    await engine.ctx.hot.request(
        "PATCH", f"{PODS}/p2/status", body=status, content_type=MERGE_PATCH
    )  # n2 is still driven here
    await trio.sleep(30)
    (released,) = [
        c.at for c in api.log("PATCH", f"{CRS}/n1") if RELEASED_ANNOTATION in str(c.body)
    ]
    assert [  # nor any of the shard's own
        c.method for c in api.log(None, f"{PODS}/p1") if c.method != "GET" and c.at >= released
    ] == []

    # Handed back: the node and its pods are written again.
    api.patch(f"{CRS}/n1", {"metadata": {"annotations": {HANDOVER_ANNOTATION: None,
                                                         RELEASED_ANNOTATION: None}}})  # fmt: skip
    await trio.sleep(15)
    assert not engine.ctx.handover.refuses(f"{PODS}/p1/status")
    await engine.ctx.hot.request(
        "PATCH", f"{PODS}/p1/status", body=status, content_type=MERGE_PATCH
    )


def test_pod_of_reads_the_pod_of_a_path_and_a_pod_made_again_elsewhere_is_let_through() -> None:
    assert pod_of(f"{PODS}/p1/status") == "default/p1"
    assert pod_of(f"{PODS}/p1") == "default/p1"
    assert pod_of(PODS) is None
    assert pod_of("/api/v1/namespaces/default/events/e") is None
    assert pod_of(f"{NODES}/n1") is None
    gate = HandoverGate()
    gate.hold_pods("n1", ["default/p1"])  # not released: nothing held
    assert not gate.refuses(f"{PODS}/p1/status")
    gate.release("n1")
    gate.hold_pods("n1", ["default/p1", "default/p3"])
    assert gate.refuses(f"{PODS}/p1/status") and gate.refuses(f"{PODS}/p3")
    gate.drop_pod("default/p1")  # deleted, or made again on a node still driven
    assert not gate.refuses(f"{PODS}/p1/status") and gate.refuses(f"{PODS}/p3")
    gate.restore("n1")
    assert not gate.refuses(f"{PODS}/p3")
    gate.release("n1")
    assert not gate.refuses(f"{PODS}/p3")  # held again only when its driver lets go again


def puts_after(api: MemoryApiserver, path: str, since: float) -> list[float]:
    return [c.at for c in api.log(None, path) if c.method in ("PUT", "PATCH") and c.at > since]


# -- the door and the drain --------------------------------------------------------------------


class _Held:
    """A requester whose writes for node ``n1`` are answered only when the test says so."""

    def __init__(self) -> None:
        self.answer = trio.Event()
        self.sent: list[str] = []

    async def request(self, method: str, path: str, **_: object) -> Response:
        self.sent.append(f"{method} {path}")
        if node_of(path) == "n1" and method != "GET":
            await self.answer.wait()
        await trio.lowlevel.checkpoint()
        return Response(200, b"{}")

    async def request_batch(self, requests: list[BatchRequest]) -> list[Response]:
        self.sent.extend(f"{r.method} {r.path}" for r in requests)
        if any(node_of(r.path) == "n1" for r in requests):
            await self.answer.wait()
        await trio.lowlevel.checkpoint()
        return [Response(200, b"{}") for _ in requests]


def test_node_of_reads_the_node_of_a_path() -> None:
    assert node_of(f"{NODES}/n1/status") == "n1"
    assert node_of(f"{NODE_LEASES}/n1") == "n1"
    assert node_of(NODES) is None
    assert node_of("/api/v1/namespaces/default/pods/p/status") is None


async def test_released_node_writes_are_refused_and_drain_waits_for_those_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = HandoverGate()
    inner = _Held()
    fenced = FencedRequester(inner, lambda: True, field_manager="m", gate=gate)  # type: ignore[arg-type]
    drained = trio.Event()

    async def drain() -> None:
        await gate.drain()
        drained.set()

    async with trio.open_nursery() as nursery:
        # A renewal of n1 out (sent, not yet answered) when the handover begins.
        nursery.start_soon(lambda: fenced.request("PUT", f"{NODE_LEASES}/n1"))
        await trio.testing.wait_all_tasks_blocked()
        gate.release("n1")
        with pytest.raises(HandedOver):
            await fenced.request("PATCH", f"{NODES}/n1/status")
        answers = await fenced.request_batch(
            [
                BatchRequest("PUT", f"{NODE_LEASES}/n1", None, b"{}", None),
                BatchRequest("PUT", f"{NODE_LEASES}/n2", None, b"{}", None),
            ]
        )
        assert isinstance(answers[0], HandedOver) and isinstance(answers[1], Response)
        assert inner.sent == [f"PUT {NODE_LEASES}/n1", f"PUT {NODE_LEASES}/n2"]
        await fenced.request("GET", f"{NODES}/n1")  # reads are not writes: they go
        nursery.start_soon(drain)
        await trio.sleep(5)
        assert not drained.is_set()  # the renewal sent before the release is still out
        inner.answer.set()
        await trio.testing.wait_all_tasks_blocked()
        assert drained.is_set()
    assert gate.refused == 2
    gate.restore("n1")
    assert not gate.refuses(f"{NODES}/n1/status")


# -- many handovers at once ----------------------------------------------------------------------

MANY = 192
"""CRs marked for handover in one instant (a shard coming back takes half the fleet)."""
WRITE_LATENCY = 0.5
"""Seconds each write takes to be answered: a loaded apiserver."""
RELEASED_WITHIN = 6.0
"""Seconds from the marks to the last release: one drain and the release PATCHes side by side,
whatever the number marked. One drain and one PATCH at a time per timer worker took ~16 s for
96 at this latency (a returning shard's 500 took 50-100 s on a loaded sandbox: nodes NotReady,
neither shard driving them meanwhile)."""


class _SlowWrites(MemoryClient):
    """Every write answered after :data:`WRITE_LATENCY` seconds."""

    async def request(self, method: str, path: str, **kwargs: object) -> Response:
        if method not in ("GET", "HEAD"):
            await trio.sleep(WRITE_LATENCY)
        return await super().request(method, path, **kwargs)  # type: ignore[arg-type]


async def test_many_crs_marked_at_once_are_released_together_not_one_drain_each(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = MemoryApiserver()
    for i in range(MANY):
        api.create(CRS, {"apiVersion": "mock.zhizuqiu.cn/v1alpha1", "kind": "Node",
                         "metadata": {"name": f"n{i}", "labels": {SHARD_LABEL: "0"}},
                         "spec": {}})  # fmt: skip
    engine = await _run_shard(nursery, "0", _SlowWrites(api))
    await trio.sleep(60)  # every node registered and renewing
    assert len(puts_after(api, NODE_LEASES + "/n0", 30)) >= 1
    marked = trio.current_time()
    for i in range(MANY):
        api.patch(f"{CRS}/n{i}", {"metadata": {"annotations": {HANDOVER_ANNOTATION: "1"}}})
    await trio.sleep(40)
    released = {
        c.path.rpartition("/")[2]: c.at
        for c in api.log("PATCH", f"{CRS}/")
        if RELEASED_ANNOTATION in str(c.body)
    }
    assert len(released) == MANY
    last = max(released.values()) - marked
    assert last <= RELEASED_WITHIN, f"the last of {MANY} releases {last:.1f} s after the marks"
    # And each still after every write of its node: none of shard 0's after its release.
    writes = _node_writes(api)
    late = [n for n, t in released.items() if any(at > t for at, _ in writes[n])]
    assert late == []
    assert all(engine.ctx.handover.released(f"n{i}") for i in range(MANY))
