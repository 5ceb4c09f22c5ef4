"""Faults against a running fleet, each counted: a small fleet survives every one of them.

Two shard processes and two coordinator processes (one leads) drive 30 Node
CRs and 8 Running pods: the bench's fault suite (``bench.FaultFleet``,
``bench.run_faults``; the ``faults`` bench scenario runs the same at 1,000 nodes
and more). They reach the apiserver through ``bench.FaultProxy`` (TCP on
loopback), which cuts, pauses or refuses their connections; 429 and 410 storms
are answered by the sandbox itself (``bench.Storm`` in front of its handler).
One after another, each for a few seconds:

========================  =====================================================
``watch-cut``             every connection cut, three times a second apart
``pause``                 no byte forwarded for 2.5 s (the apiserver under SIGSTOP)
``restart``               connections cut and refused for 2.5 s (the apiserver
                          restarting, its state kept)
``429-storm``             every request answered 429 (Retry-After: 1) for 2.5 s
``410-storm``             watches cut, then every watch answered 410 for 2.5 s
``malformed``             100 Node CRs with cpu 1e400 (past int64) and 100 pods with a
                          bad lifecycle annotation, created at once, then deleted
``shard-kill``            ``kill -9`` of the last shard; it comes back
``coordinator-failover``  ``kill -9`` of the leading coordinator; new CRs still
                          get their shard from the other
========================  =====================================================

After each the fleet settles (every Node Ready, each node Lease renewed since
the fault by its labelled shard, every pod Running) and the case prints what
it tried and its counts (``bench.FaultCounter``), all asserted zero:

- ``crashes``: fleet processes that exited (the one a case killed excepted);
- ``not_ready``: nodes whose Ready condition left True, or whose Lease went
  unrenewed for longer than its duration (what marks a node NotReady);
- ``regressed`` / ``restarted``: pods whose phase went backwards, or with a
  container restart;
- ``two_drivers``: nodes written by a shard after another took over with no
  shard-label move between (the sandbox's write log names each write's
  ``fieldManager``);
- ``lost``: CRs, Nodes, node Leases or pods that should exist and do not.

Lease durations are scaled down as in the other fleet tests, but long enough
that a 2.5 s outage is inside every renew deadline: those faults must not move
a single CR.

Against both apiservers (the ``apiserver`` fixture): the same proxy stands in
front of the real kube-apiserver, whose answers are not the test's to forge, so
the 429 and 410 storms run on the sandbox only; on the real one the writer of each node
Lease renewal comes from the Lease's ``managedFields`` as a watch sees them
(``bench.LeaseLog``) instead of the sandbox's write log. CRs and pods live in a
namespace of their own, nodes are named after it, and the CRs are deleted at
the end while the shards still run (they hold a finalizer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from bench import (
    FAULTS,
    STORMS,
    FaultCounter,
    FaultFleet,
    FaultSuite,
    LabelWatch,
    LeaseLog,
    Seen,
    Storm,
    run_faults,
)
from fleet.kube import Client, load_config
from fleet.sandbox import gone, too_many_requests
from fleet.wire import COORDINATOR_LEASE
from tests._apiserver import Apiserver, unique
from tests.fleet._fleet import (
    FLEET_LEASES,
    FLEET_NS,
    NODE_LEASE_DURATION,
    WriteLog,
    coordinator_holder,
    cr_body,
    cr_path,
    prepare,
    shard_leases,
    wait_for,
    write_config,
)

SHARDS = 2
NODES = 30
PODS = 8
MALFORMED = 100
OUTAGE = 2.5
"""Seconds of each pause, restart and storm: inside the renew deadlines below."""
SETTLE_WITHIN = 60.0
"""Seconds the fleet may take to settle after a fault (generous: a loaded machine)."""
LEASES = {
    # Shard and leader Leases: 5 s, renew deadline 4 s, renewals every second (and a retry
    # every 0.5 s for the leader), so an outage of OUTAGE seconds fences nobody.
    "shardLeaseDuration": "5s",
    "shardRenewDeadline": "4s",
    "shardRenewInterval": "1s",
    "leaderLeaseDuration": "5s",
    "leaderRenewDeadline": "4s",
}


def _pod(name: str, node: str, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "annotations": {f"zhizuqiu.github.com/{k}": v for k, v in annotations.items()},
        },
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
    }


async def test_faults_counted(apiserver: Apiserver, nursery: trio.Nursery, tmp_path: Path) -> None:
    config = write_config(tmp_path / "fleet.yaml", shards=SHARDS, **LEASES)
    namespace = unique("faults")
    async with Client(load_config(apiserver.kubeconfig)) as client:
        await prepare(client, (FLEET_NS, namespace))
        writes: WriteLog | LeaseLog
        storm: Storm | None = None
        if apiserver.sandbox is not None:
            writes = WriteLog(apiserver.sandbox)
            storm = Storm(too_many_requests(1), gone("too old resource version: 1 (2)"))
            apiserver.sandbox.app.wrap_handler(storm.wrap)
        else:
            writes = LeaseLog()
            await nursery.start(writes.run, client)
        labels, seen = LabelWatch(), Seen()
        crs, pods = cr_path(namespace), f"/api/v1/namespaces/{namespace}/pods"
        await nursery.start(labels.run, client, crs)
        await nursery.start(seen.run, client, pods)
        fleet = FaultFleet(
            apiserver.kubeconfig, apiserver.url, config, tmp_path, shards=SHARDS, coordinators=2
        )
        counter = FaultCounter(
            client,
            crs_path=crs,
            pods_path=pods,
            nodes=[f"{namespace}-{i:03d}" for i in range(NODES)],
            pods=[f"pod-{i}" for i in range(PODS)],
            writes=writes,
            labels=labels,
            seen=seen,
            exited=fleet.exited,
            killed=lambda: fleet.shard_killed,
            node_lease_duration=NODE_LEASE_DURATION,
            settle_within=SETTLE_WITHIN,
        )
        await nursery.start(fleet.run)
        try:
            await _start(client, counter)
            suite = FaultSuite(
                client=client,
                fleet=fleet,
                counter=counter,
                storm=storm,
                outage=OUTAGE,
                malformed=MALFORMED,
                cr_body=cr_body,
                pod_body=_pod,
                fresh_name=lambda i: f"{namespace}-{i:03d}",
            )
            results = await run_faults(suite, lambda result: print(result.line()))
            ran = [r.name for r in results]
            assert ran == [n for n, _, _ in FAULTS if storm is not None or n not in STORMS], ran
            for result in results:
                assert result.ok, result.line()
                assert not any(result.counts().values()), result.line()
            if storm is None:
                print("fault 429-storm, 410-storm: skipped (they wrap the sandbox's handler)")
            await _clean_up(client, counter, fleet, namespace)
        except BaseException:
            print(fleet.logs())
            raise


async def _start(client: Client, counter: FaultCounter) -> None:
    async def shards_up() -> bool:
        return await shard_leases(client) >= {str(k) for k in range(SHARDS)}

    async def leader() -> bool:
        return await coordinator_holder(client) is not None

    await wait_for(shards_up, SETTLE_WITHIN, "the shard Leases")
    await wait_for(leader, SETTLE_WITHIN, "a coordinator leader")
    async with trio.open_nursery() as creators:
        for name in counter.nodes:
            creators.start_soon(client.create, counter.crs_path, cr_body(name))
    await wait_for(
        lambda: all(counter.seen.is_ready(n) for n in counter.nodes),
        SETTLE_WITHIN,
        "every Node Ready",
        interval=0.25,
    )
    for i, name in enumerate(counter.pods):
        await client.create(counter.pods_path, _pod(name, counter.nodes[i]))
    await wait_for(
        lambda: all(counter.seen.phase(p) == "Running" for p in counter.pods),
        SETTLE_WITHIN,
        "the pods Running",
        interval=0.25,
    )


async def _clean_up(
    client: Client, counter: FaultCounter, fleet: FaultFleet, namespace: str
) -> None:
    """Delete the CRs while the shards run (they hold a finalizer), and wait till gone."""
    async with trio.open_nursery() as deleters:
        for name in counter.nodes:
            deleters.start_soon(client.delete, f"{counter.crs_path}/{name}")

    async def all_gone() -> bool:
        return not (await client.list(counter.crs_path)).items

    await wait_for(all_gone, SETTLE_WITHIN, "the CRs deleted")
    # Stop the fleet as an operator would (SIGTERM: Leases released), and leave no leader
    # Lease held by a coordinator of this test: the next test on the shared real apiserver
    # elects its own.
    fleet.stop()
    with trio.move_on_after(30):
        await fleet.stopped.wait()
    holder = await coordinator_holder(client)
    pids = {f"/{p.pid}" for p in fleet.coordinators}
    if holder is not None and any(holder.endswith(pid) for pid in pids):
        await client.delete(f"{FLEET_LEASES}/{COORDINATOR_LEASE}")
    await client.delete(f"/api/v1/namespaces/{namespace}")  # and its pods
