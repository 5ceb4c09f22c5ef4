"""The coordinator end to end on an in-memory apiserver: assign, fail over, rebalance."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from fleet._metrics import FleetMetrics
from fleet._settings import CoordinatorSettings, FleetSettings
from fleet.api import GROUP, VERSION
from fleet.coordinator import Coordinator, owner
from fleet.coordinator._leases import lease_path
from fleet.errors import ConnectError
from fleet.kube import MemoryApiserver, MemoryClient, Response, StreamResponse, resource_path
from fleet.wire import (
    FINALIZER,
    FLEET_NAMESPACE,
    HANDOVER_ANNOTATION,
    HANDOVER_FIELD_MANAGER,
    RELEASED_ANNOTATION,
    SHARD_LABEL,
    shard_lease_name,
)

NS = FLEET_NAMESPACE
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)
SHARDS = ["0", "1", "2"]


def wall() -> datetime:
    return EPOCH + timedelta(seconds=trio.current_time())


def nodes_path(namespace: str, name: str | None = None) -> str:
    return resource_path(GROUP, VERSION, "nodes", namespace=namespace, name=name)


def add_node(server: MemoryApiserver, namespace: str, name: str) -> None:
    server.create(
        nodes_path(namespace),
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Node", "metadata": {"name": name}},
    )


def labels(server: MemoryApiserver) -> dict[str, str | None]:
    metas = [obj["metadata"] for obj in server.items(resource_path(GROUP, VERSION, "nodes"))]
    return {f"{m['namespace']}/{m['name']}": m.get("labels", {}).get(SHARD_LABEL) for m in metas}


async def fake_shard(
    client: MemoryClient, shard: str, *, task_status: trio.TaskStatus[None]
) -> None:
    """Holds and renews shard K's Lease every 2 s, as a shard process does."""
    name = shard_lease_name(shard)
    spec = {"holderIdentity": f"shard-{shard}@test/1", "leaseDurationSeconds": 15}
    existing = client.server.get(lease_path(NS, name))
    if existing is None:
        client.server.create(
            lease_path(NS), {"metadata": {"name": name}, "spec": {**spec, "renewTime": "t0"}}
        )
    task_status.started()
    while True:
        await trio.sleep(2)
        lease = client.server.get(lease_path(NS, name))
        assert lease is not None
        lease["spec"] = {**spec, "renewTime": wall().isoformat()}
        await client.request("PUT", lease_path(NS, name), body=json.dumps(lease).encode())


async def fake_releases(client: MemoryClient, shard: str) -> None:
    """Lets go of shard K's CRs being handed over, within 0.1 s, as a shard process does."""
    crs = resource_path(GROUP, VERSION, "nodes")
    while True:
        await trio.sleep(0.1)
        for obj in client.server.items(crs):
            meta = obj["metadata"]
            annotations = meta.get("annotations") or {}
            if (
                (meta.get("labels") or {}).get(SHARD_LABEL) == shard
                and annotations.get(HANDOVER_ANNOTATION, shard) != shard
                and annotations.get(RELEASED_ANNOTATION) != shard
            ):
                body = {"metadata": {"annotations": {RELEASED_ANNOTATION: shard}}}
                await client.request(
                    "PATCH",
                    nodes_path(meta["namespace"], meta["name"]),
                    params={"fieldManager": f"shard-{shard}"},
                    body=json.dumps(body).encode(),
                    content_type="application/merge-patch+json",
                )


async def test_assigns_fails_over_and_rebalances(autojump_clock: trio.abc.Clock) -> None:
    server = MemoryApiserver()
    for i in range(300):
        add_node(server, "default" if i % 2 else "team-a", f"node-{i}")
    settings = FleetSettings(coordinator=CoordinatorSettings(max_moves_per_second=20))
    metrics = FleetMetrics()
    coordinator = Coordinator(
        server.client(), settings, identity="coordinator@test/1", metrics=metrics,
        wall=wall, rng=random.Random(0),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        scopes = {shard: trio.CancelScope() for shard in SHARDS}
        for shard in SHARDS:
            nursery.start_soon(_scoped, scopes[shard], server.client(), shard)
        await trio.testing.wait_all_tasks_blocked()

        start = trio.current_time()
        await nursery.start(coordinator.run)
        assert coordinator.ready()
        with trio.fail_after(5):
            await coordinator.elector.leading.wait()
        await trio.sleep(1)
        assert coordinator.is_leader
        # Every CR assigned to its rendezvous owner, within a second of leading.
        assigned = labels(server)
        assert assigned == {key: owner(key, SHARDS) for key in assigned}
        first_writes = [t for t, method, path, _ in server.writes if method == "PATCH"]
        assert len(first_writes) == 300 and max(first_writes) - start <= 1.0
        assert set(Counter(assigned.values())) == set(SHARDS)

        # A new CR is assigned within a second.
        created = trio.current_time()
        add_node(server, "default", "late")
        await trio.sleep(1)
        assert labels(server)["default/late"] == owner("default/late", SHARDS)
        late_patch = [t for t, m, p, _ in server.writes if m == "PATCH" and p.endswith("/late")]
        assert late_patch and late_patch[0] - created <= 1.0

        # Shard 2 dies: its CRs move only after its Lease expired by observation.
        scopes["2"].cancel()
        last_renewal = max(t for t, m, p, _ in server.writes if p.endswith(shard_lease_name("2")))
        died = trio.current_time()
        await trio.sleep(20)
        after = labels(server)
        assert "2" not in after.values()
        moved = {k for k in after if assigned.get(k, owner(k, SHARDS)) == "2"}
        assert 70 <= len(moved) <= 130
        failover_times = [t for t, m, p, _ in server.writes if m == "PATCH" and t > died]
        assert len(failover_times) == len(moved)
        assert min(failover_times) >= last_renewal + 15
        assert max(failover_times) <= last_renewal + 15 + 1
        # Only shard 2's CRs moved.
        assert all(after[k] == assigned.get(k, owner(k, SHARDS)) for k in after if k not in moved)
        assert metrics.moves.labels(reason="failover")._value.get() == len(moved)
        # The dead shard's assignment series is gone, not left at its last count.
        (family,) = metrics.assignments.collect()
        gauge = {s.labels["shard"]: s.value for s in family.samples}
        assert set(gauge) == {"0", "1"} and sum(gauge.values()) == len(after)

        # Shard 2 returns: it gets its share back at <= 20 moves/s, not as a storm.
        back = trio.current_time()
        nursery.start_soon(_scoped, trio.CancelScope(), server.client(), "2")
        await trio.sleep(30)
        final = labels(server)
        assert final == {key: owner(key, SHARDS) for key in final}
        # Each move back is a handover: marked (at the bounded rate), let go by shard 0 or 1,
        # then relabelled, in that order.
        patches = [c for c in server.calls if c.method == "PATCH" and c.at > back]
        marks = {
            c.path: c.at for c in patches if c.params.get("fieldManager") == HANDOVER_FIELD_MANAGER
        }
        releases = {
            c.path: c.at for c in patches if c.params.get("fieldManager", "").startswith("shard-")
        }
        relabels = {c.path: c.at for c in patches if "labels" in c.body["metadata"]}  # fmt: skip
        assert len(marks) == len(releases) == len(relabels) == len(moved)
        assert all(marks[p] < releases[p] < relabels[p] for p in marks)
        rebalance = sorted(marks.values())
        for t in rebalance:
            in_window = [u for u in rebalance if t <= u < t + 1]
            assert len(in_window) <= 20 + 20  # one second's burst, then the rate
        assert rebalance[-1] - rebalance[0] >= (len(moved) - 20) / 20 - 0.5
        text = metrics.scrape().decode()
        assert 'kubemock_fleet_moves_total{reason="rebalance"}' in text
        assert "kubemock_fleet_leader 1.0" in text
        nursery.cancel_scope.cancel()


async def _scoped(scope: trio.CancelScope, client: MemoryClient, shard: str) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fake_releases, client, shard)
            await fake_shard(client, shard, task_status=trio.TASK_STATUS_IGNORED)


class _MissesShard(MemoryClient):
    """A connection whose watches miss every change to one shard's Lease, and whose GETs of
    that Lease fail while ``reads_fail``: the coordinator's view broken, not the shard."""

    def __init__(self, server: MemoryApiserver, shard: str) -> None:
        super().__init__(server)
        self.lease = shard_lease_name(shard)
        self.reads_fail = False

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: bytes | None = None, content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:  # fmt: skip
        if self.reads_fail and method == "GET" and path.endswith("/" + self.lease):
            raise ConnectError("connection refused (test)")
        return await super().request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )

    @asynccontextmanager
    async def _stream(
        self, method: str, path: str, params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> AsyncIterator[StreamResponse]:  # fmt: skip
        async with super()._stream(method, path, params, headers) as response:
            yield _Filtered(response, self.lease.encode())


class _Filtered:
    def __init__(self, response: StreamResponse, drop: bytes) -> None:
        self.status = response.status
        self.headers = response.headers
        self._response = response
        self._drop = drop

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_bytes():  # the memory server: one event a chunk
            if self._drop not in chunk:
                yield chunk

    async def aread(self) -> bytes:
        return await self._response.aread()


async def test_a_shard_renewing_unseen_by_the_watch_keeps_its_nodes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Expiry by observation alone would move shard 0's CRs while it drives them (two
    drivers, as an apiserver restart showed); a fresh read of its Lease keeps them."""
    server = MemoryApiserver()
    for i in range(90):
        add_node(server, "default", f"node-{i}")
    client = _MissesShard(server, "0")
    coordinator = Coordinator(
        client, FleetSettings(), identity="coordinator@test/1", wall=wall, rng=random.Random(0)
    )
    async with trio.open_nursery() as nursery:
        scopes = {shard: trio.CancelScope() for shard in SHARDS}
        for shard in SHARDS:
            nursery.start_soon(_scoped, scopes[shard], server.client(), shard)
        await trio.testing.wait_all_tasks_blocked()
        await nursery.start(coordinator.run)
        with trio.fail_after(5):
            await coordinator.elector.leading.wait()
        await trio.sleep(1)
        assigned = labels(server)
        assert set(assigned.values()) == set(SHARDS)

        client.reads_fail = True  # nor can the coordinator read it: it waits
        await trio.sleep(30)
        assert labels(server) == assigned
        assert coordinator.live_shards() == set(SHARDS)

        client.reads_fail = False  # a read shows the renewals the watch missed
        await trio.sleep(10)
        assert labels(server) == assigned

        scopes["0"].cancel()  # now shard 0 dies: a read confirms it, its CRs move
        await trio.sleep(30)
        after = labels(server)
        assert "0" not in after.values()
        assert all(after[k] == v for k, v in assigned.items() if v != "0")
        nursery.cancel_scope.cancel()


class _Noting(MemoryClient):
    """A connection noting the (method, path) of every request it is sent."""

    def __init__(self, server: MemoryApiserver) -> None:
        super().__init__(server)
        self.sent: list[tuple[str, str]] = []

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: bytes | None = None, content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:  # fmt: skip
        self.sent.append((method, path))
        return await super().request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )


async def test_label_writes_go_through_the_writes_requester(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Thousands of label PATCHes take ``writes`` (the hot transport under
    ``serve_coordinator``): through httpx's pool they cost half the coordinator's CPU."""
    server = MemoryApiserver()
    for i in range(20):
        add_node(server, "default", f"node-{i}")
    control, writes = _Noting(server), _Noting(server)
    coordinator = Coordinator(
        control, FleetSettings(), identity="coordinator@test/1", writes=writes,
        wall=wall, rng=random.Random(0),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        for shard in SHARDS:
            await nursery.start(fake_shard, server.client(), shard)
        await nursery.start(coordinator.run)
        await trio.sleep(5)
        assert all(v in SHARDS for v in labels(server).values())
        label_writes = [p for m, p in writes.sent if m == "PATCH" and "/nodes/" in p]
        assert len(label_writes) == 20
        assert not [p for m, p in control.sent if m == "PATCH" and "/nodes/" in p]
        nursery.cancel_scope.cancel()


class _ChangesFirst(MemoryClient):
    """A connection that changes CR ``name`` (an annotation, as a user might) just before
    passing on the first PATCH of it: that PATCH meets a newer resourceVersion."""

    def __init__(self, server: MemoryApiserver, name: str) -> None:
        super().__init__(server)
        self.name = name
        self.changed = False

    async def request(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None,
        body: bytes | None = None, content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:  # fmt: skip
        if method == "PATCH" and path.endswith("/" + self.name) and not self.changed:
            self.changed = True
            user = {"metadata": {"annotations": {"team": "a"}, "finalizers": ["user/keep"]}}
            await super().request(
                "PATCH", path, body=json.dumps(user).encode(),
                content_type="application/merge-patch+json",
            )  # fmt: skip
        return await super().request(
            method, path, params=params, body=body, content_type=content_type, headers=headers
        )


async def test_the_first_label_brings_the_shards_finalizer(
    autojump_clock: trio.abc.Clock,
) -> None:
    """One CR write per node instead of two (the shard's finalizer PATCH); a CR changed
    since the coordinator saw it gets its label alone, its finalizers untouched."""
    server = MemoryApiserver()
    for i in range(6):
        add_node(server, "default", f"node-{i}")
    writes = _ChangesFirst(server, "node-3")
    coordinator = Coordinator(
        server.client(), FleetSettings(), identity="coordinator@test/1", writes=writes,
        wall=wall, rng=random.Random(0),
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        for shard in SHARDS:
            await nursery.start(fake_shard, server.client(), shard)
        await nursery.start(coordinator.run)
        await trio.sleep(5)
        assert all(v in SHARDS for v in labels(server).values())
        for i in range(6):
            cr = server.get(nodes_path("default", f"node-{i}"))
            assert cr is not None
            expected = ["user/keep"] if i == 3 else [FINALIZER]
            assert cr["metadata"].get("finalizers") == expected, i
        nursery.cancel_scope.cancel()
