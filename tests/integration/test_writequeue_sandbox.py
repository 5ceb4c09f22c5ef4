"""fleet.kube's WriteQueue over HotTransport against the real sandbox."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
import trio

from fleet.errors import Conflict
from fleet.kube import (
    Client,
    ClusterConfig,
    HotTransport,
    Write,
    WriteQueue,
    WriteQueueSettings,
    WriteResult,
    resource_path,
)

MERGE = "application/merge-patch+json"
JSON = "application/json"
NS = "leases"
CONFLICT_NS = "leases-conflict"
"""Each test its own namespace: on the real apiserver they share one cluster."""


def lease_path(name: str | None = None, ns: str = NS) -> str:
    return resource_path("coordination.k8s.io", "v1", "leases", namespace=ns, name=name)


def lease(name: str, holder: str = "nobody") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 40},
    }


def holder_patch(name: str, holder: str, outcomes: Counter[str]) -> Write:
    return Write(
        "PATCH",
        lease_path(name),
        msgspec.json.encode({"spec": {"holderIdentity": holder}}),
        MERGE,
        on_result=lambda result: outcomes.update([result.outcome]),
    )


async def holders(client: Client) -> dict[str, str]:
    listed = await client.list(lease_path())
    return {item["metadata"]["name"]: item["spec"]["holderIdentity"] for item in listed.items}


async def test_coalesced_merge_patches_all_land_newest(config: ClusterConfig) -> None:
    names = [f"node-{i:02}" for i in range(20)]
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        await client.create("/api/v1/namespaces", {"metadata": {"name": NS}})
        for name in names:
            await client.create(lease_path(), lease(name))
        queue = WriteQueue(hot, WriteQueueSettings(workers=4))
        outcomes: Counter[str] = Counter()

        # Round 1: 200 patches (10 per Lease) queued before any writer runs: only the
        # newest per Lease is sent.
        for round_ in range(10):
            for name in names:
                await queue.submit(name, holder_patch(name, f"r1-{round_}", outcomes))
        assert queue.statistics().depth == 20
        await nursery.start(queue.run)
        with trio.fail_after(5):
            await queue.join()
        stats = queue.statistics()
        assert (stats.sent, stats.coalesced, stats.failed) == (20, 180, 0)
        assert outcomes == Counter(sent=20, superseded=180)
        assert await holders(client) == {name: "r1-9" for name in names}

        # Round 2: 200 more while the writers run: however they interleave, every write
        # ends exactly once and each Lease ends with its newest value.
        outcomes.clear()
        for round_ in range(10):
            for name in names:
                await queue.submit(name, holder_patch(name, f"r2-{round_}", outcomes))
        with trio.fail_after(5):
            await queue.join()
        after = queue.statistics()
        assert sum(outcomes.values()) == 200
        assert set(outcomes) <= {"sent", "superseded"}
        assert after.sent - stats.sent == outcomes["sent"] >= 20
        assert after.coalesced - stats.coalesced == outcomes["superseded"]
        assert after.failed == 0 and after.retried == 0 and after.depth == 0
        assert await holders(client) == {name: "r2-9" for name in names}

        # The same patch again changes nothing: dropped without a request.
        result = await queue.write("node-00", holder_patch("node-00", "r2-9", outcomes))
        assert result.outcome == "noop"
        # A real renewal repeats itself on purpose: force sends it anyway.
        forced = Write(
            "PATCH", lease_path("node-00"), b'{"spec":{"holderIdentity":"r2-9"}}', MERGE, force=True
        )
        assert (await queue.write("node-00", forced)).outcome == "sent"
        nursery.cancel_scope.cancel()


async def test_conflict_rereads_and_missing_object_drops(config: ClusterConfig) -> None:
    async with (
        Client(config) as client,
        HotTransport(config) as hot,
        trio.open_nursery() as nursery,
    ):
        await client.create("/api/v1/namespaces", {"metadata": {"name": CONFLICT_NS}})
        stale = await client.create(lease_path(ns=CONFLICT_NS), lease("held", "first"))
        await client.patch(
            lease_path("held", ns=CONFLICT_NS),
            {"spec": {"leaseDurationSeconds": 15}},
            patch_type="merge",
        )
        queue = WriteQueue(hot, WriteQueueSettings(workers=2))
        await nursery.start(queue.run)
        conflicts: list[Conflict] = []

        async def reread(exc: Conflict) -> Write:
            conflicts.append(exc)
            response = (
                await hot.request("GET", lease_path("held", ns=CONFLICT_NS))
            ).raise_for_status()
            fresh = msgspec.json.decode(response.content)
            fresh["spec"]["holderIdentity"] = "second"
            return Write(
                "PUT", lease_path("held", ns=CONFLICT_NS), msgspec.json.encode(fresh), JSON
            )

        stale["spec"]["holderIdentity"] = "second"
        put = Write(
            "PUT",
            lease_path("held", ns=CONFLICT_NS),
            msgspec.json.encode(stale),
            JSON,
            on_conflict=reread,
        )
        with trio.fail_after(5):
            result: WriteResult = await queue.write("held", put)
        assert result.outcome == "sent", result
        assert result.attempts == 2
        assert len(conflicts) == 1 and conflicts[0].status == 409
        assert "the object has been modified" in conflicts[0].message
        got = await client.get(lease_path("held", ns=CONFLICT_NS))
        # The re-read kept the concurrent change and applied ours on top.
        assert got["spec"] == {"holderIdentity": "second", "leaseDurationSeconds": 15}

        # Without on_conflict a 409 ends the write as "conflict".
        with trio.fail_after(5):
            given_up = await queue.write(
                "held",
                Write("PUT", lease_path("held", ns=CONFLICT_NS), msgspec.json.encode(stale), JSON),
            )
        assert given_up.outcome == "conflict" and isinstance(given_up.error, Conflict)

        # A write for an object that does not exist is dropped, not retried.
        missing = Write(
            "PATCH", lease_path("never", ns=CONFLICT_NS), b'{"spec":{"holderIdentity":"x"}}', MERGE
        )
        with trio.fail_after(5):
            dropped = await queue.write("never", missing)
        assert dropped.outcome == "gone" and dropped.attempts == 1
        assert dropped.error is not None and getattr(dropped.error, "status", None) == 404
        stats = queue.statistics()
        assert (
            stats.gone_dropped == 1 and stats.retried == 1 and stats.failed == 1 and stats.sent == 1
        )
        nursery.cancel_scope.cancel()
