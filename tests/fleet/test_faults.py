"""Faults against a running fleet, each counted: a small fleet survives every one of them.

Two shard processes and two coordinator processes (one leads) drive 30 Node
CRs and 8 Running pods. They reach the apiserver through
:class:`tests.fleet._faultproxy.FaultProxy` (TCP on loopback), which cuts,
pauses or refuses their connections; 429 and 410 storms are answered by the
sandbox itself (its handler wrapped, as :class:`tests.fleet._fleet.WriteLog`
does). One after another, each for a few seconds:

========================  =====================================================
``watch-cut``             every connection cut, three times a second apart
``pause``                 no byte forwarded for 2.5 s (the apiserver under SIGSTOP)
``restart``               connections cut and refused for 2.5 s (the apiserver
                          restarting, its state kept)
``429-storm``             every request answered 429 (Retry-After: 1) for 2.5 s
``410-storm``             watches cut, then every watch answered 410 for 2.5 s
``malformed``             100 Node CRs with cpu 1e400 (past int64) and 100 pods with a
                          bad lifecycle annotation, created at once, then deleted
``shard-kill``            ``kill -9`` of a shard; it comes back
``coordinator-failover``  ``kill -9`` of the leading coordinator; new CRs still
                          get their shard from the other
========================  =====================================================

After each the fleet settles (every Node Ready, each node Lease renewed since
the fault by its labelled shard, every pod Running) and the case prints what
it tried and its counts, all asserted zero:

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
(:class:`_LeaseLog`) instead of the sandbox's write log. CRs and pods live in a
namespace of their own, nodes are named after it, and the CRs are deleted at
the end while the shards still run (they hold a finalizer).
"""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import trio

from fleet.kube import Client, ObjectMeta, Reflector, WatchEvent, load_config
from fleet.sandbox import RunningSandbox, StatusError
from fleet.wire import COORDINATOR_LEASE
from tests._apiserver import Apiserver, unique
from tests.fleet._faultproxy import FaultProxy
from tests.fleet._fleet import (
    FLEET_LEASES,
    FLEET_NS,
    NODE_LEASE_DURATION,
    NODE_LEASES,
    SHARD_MANAGER,
    LabelWatch,
    Processes,
    WriteLog,
    Written,
    coordinator_holder,
    cr_body,
    cr_path,
    kill9,
    prepare,
    ready,
    shard_leases,
    shard_of,
    wait_for,
    write_config,
)

SHARDS = ("0", "1")
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
PHASES = {"": 0, "Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}


class _View(msgspec.Struct):
    metadata: ObjectMeta = ObjectMeta()
    status: dict[str, Any] = {}


@dataclass
class _Seen:
    """What a watch saw of each node and pod since the start, with the test's times."""

    ready: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    phases: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    async def run(
        self, client: Client, namespace: str, *, task_status: trio.TaskStatus[None]
    ) -> None:
        async with trio.open_nursery() as nursery:
            for path, consume in (
                ("/api/v1/nodes", self._node),
                (f"/api/v1/namespaces/{namespace}/pods", self._pod),
            ):
                send, receive = trio.open_memory_channel[WatchEvent[_View]](10_000)
                nursery.start_soon(self._consume, receive, consume)
                await nursery.start(Reflector(client, path, _View).run, send)
            task_status.started()

    async def _consume(
        self,
        receive: trio.MemoryReceiveChannel[WatchEvent[_View]],
        consume: Callable[[str, _View], None],
    ) -> None:
        async with receive:
            async for event in receive:
                if event.type != "DELETED":
                    consume(event.obj.metadata.name, event.obj)

    def _node(self, name: str, obj: _View) -> None:
        now = ready({"status": obj.status})
        seen = self.ready.setdefault(name, [])
        if not seen or seen[-1][1] != now:
            seen.append((trio.current_time(), now))

    def _pod(self, name: str, obj: _View) -> None:
        phase = str(obj.status.get("phase") or "")
        seen = self.phases.setdefault(name, [])
        if not seen or seen[-1][1] != phase:
            seen.append((trio.current_time(), phase))
        statuses = obj.status.get("containerStatuses") or []
        self.restarts[name] = max([int(s.get("restartCount") or 0) for s in statuses] + [0])


class _Storm:
    """Wraps the sandbox's handler: while a storm is on, matching requests get its answer."""

    def __init__(self, sandbox: RunningSandbox) -> None:
        self.answer: StatusError | None = None
        self.watches_only = False
        self.answered = 0
        app = sandbox.app
        inner = app._handle

        async def handle(scope: Any, receive: Any, labels: dict[str, str]) -> Any:
            answer = self.answer
            if answer is not None and scope["path"].startswith(("/api/", "/apis/")):
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                if not self.watches_only or query.get("watch") in ("1", "true"):
                    self.answered += 1
                    raise answer
            return await inner(scope, receive, labels)

        app._handle = handle  # type: ignore[method-assign]


TOO_MANY = StatusError(
    429,
    "TooManyRequests",
    "Too many requests, please try again later.",
    {"retryAfterSeconds": 1},
    headers=[("Retry-After", "1")],
)
GONE = StatusError(410, "Expired", "too old resource version: 1 (2)")


@dataclass
class Counts:
    crashes: int = 0
    not_ready: int = 0
    regressed: int = 0
    restarted: int = 0
    two_drivers: int = 0
    lost: int = 0

    def line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in vars(self).items())


class _Fleet:
    """The running fleet, its observers and the counts of each case."""

    def __init__(
        self,
        nursery: trio.Nursery,
        client: Client,
        procs: Processes,
        proxy: FaultProxy,
        writes: WriteLog | _LeaseLog,
        storm: _Storm | None,
        namespace: str,
    ) -> None:
        self.nursery = nursery
        self.client = client
        self.procs = procs
        self.proxy = proxy
        self.writes = writes
        self.storm = storm
        self.labels = LabelWatch()
        self.seen = _Seen()
        self.shards: dict[str, trio.Process] = {}
        self.coordinators: list[trio.Process] = []
        self.killed: set[int] = set()
        self.ns = namespace
        """Where the CRs and pods of the test live (a unique one: the real apiserver is shared)."""
        self.pods_path = f"/api/v1/namespaces/{namespace}/pods"
        self.nodes = [f"{namespace}-{i:03d}" for i in range(NODES)]
        self.pods: list[str] = []
        self.report: list[str] = []

    async def start(self) -> None:
        await self.nursery.start(self.labels.run, self.client)
        await self.nursery.start(self.seen.run, self.client, self.ns)
        for k in SHARDS:
            self.shards[k] = await self.procs.shard(int(k))
        await wait_for(lambda: self._shards_up(), SETTLE_WITHIN, "the shard Leases")
        for name in ("coordinator-a", "coordinator-b"):
            self.coordinators.append(await self.procs.coordinator(name))
        await wait_for(self._leader, SETTLE_WITHIN, "a coordinator leader")
        async with trio.open_nursery() as creators:
            for name in self.nodes:
                creators.start_soon(self.client.create, cr_path(self.ns), cr_body(name))
        await wait_for(self._nodes_ready, SETTLE_WITHIN, "every Node Ready", interval=0.25)
        for i in range(PODS):
            name = f"pod-{i}"
            await self.client.create(self.pods_path, _pod(name, self.nodes[i]))
            self.pods.append(name)
        await wait_for(self._pods_running, SETTLE_WITHIN, "the pods Running", interval=0.25)

    async def _shards_up(self) -> bool:
        return await shard_leases(self.client) >= set(SHARDS)

    async def _leader(self) -> bool:
        return await coordinator_holder(self.client) is not None

    async def _nodes_ready(self) -> bool:
        nodes = {n["metadata"]["name"]: n for n in (await self.client.list("/api/v1/nodes")).items}
        return all(ready(nodes.get(name)) for name in self.nodes)

    async def _pods_running(self) -> bool:
        pods = (await self.client.list(self.pods_path)).items
        phase = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in pods}
        return all(phase.get(name) == "Running" for name in self.pods)

    async def clean_up(self) -> None:
        """Delete the CRs while the shards run (they hold a finalizer), and wait till gone."""
        async with trio.open_nursery() as deleters:
            for name in self.nodes:
                deleters.start_soon(self.client.delete, cr_path(self.ns, name))

        async def gone() -> bool:
            return not (await self.client.list(cr_path(self.ns))).items

        await wait_for(gone, SETTLE_WITHIN, "the CRs deleted")
        # Stop the fleet as an operator would (SIGTERM: Leases released), and leave no
        # leader Lease held by a coordinator of this test: the next test on the shared real
        # apiserver elects its own.
        running = [p for p in [*self.shards.values(), *self.coordinators] if p.returncode is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            for process in running:
                await process.wait()
        holder = await coordinator_holder(self.client)
        pids = {f"/{p.pid}" for p in self.coordinators}
        if holder is not None and any(holder.endswith(pid) for pid in pids):
            await self.client.delete(f"{FLEET_LEASES}/{COORDINATOR_LEASE}")
        await self.client.delete(f"/api/v1/namespaces/{self.ns}")  # and its pods

    def _renewed_since(self, since: float, only: str | None = None) -> bool:
        """Every node's Lease renewed since ``since`` by the shard its CR is labelled with."""
        leases = self.writes.lease_writes(since=since)
        for name in [only] if only else self.nodes:
            shard = self.labels.labels.get(f"{self.ns}/{name}")
            if not any(shard_of(w) == shard for w in leases.get(name, [])):
                return False
        return True

    async def case(self, name: str, tried: str, fault: Callable[[], Awaitable[str]]) -> Counts:
        """Run ``fault`` (it says what it did), let the fleet settle, count, print."""
        started = trio.current_time()
        moves_before = sum(self.labels.moves_of(k) for k in self.labels.labels)
        drivers_before = self._two_drivers()
        did = await fault()
        ended = trio.current_time()
        await wait_for(self._nodes_ready, SETTLE_WITHIN, f"{name}: every Node Ready", 0.25)
        await wait_for(self._pods_running, SETTLE_WITHIN, f"{name}: the pods Running", 0.25)
        try:
            await wait_for(lambda: self._renewed_since(ended), SETTLE_WITHIN, "")
        except AssertionError:
            leases = self.writes.lease_writes(since=ended)
            raise AssertionError(
                f"{name}: node Leases not renewed by their shard since the fault: "
                + ", ".join(
                    f"{n} (label {self.labels.labels.get(f'{self.ns}/{n}')}, "
                    f"writers {sorted({w.manager for w in leases.get(n, [])})})"
                    for n in self.nodes
                    if not self._renewed_since(ended, only=n)
                )
            ) from None
        counts = Counts(
            crashes=sum(
                1
                for p in [*self.shards.values(), *self.coordinators]
                if p.returncode is not None and p.pid not in self.killed
            ),
            not_ready=len(self._not_ready(started)),
            regressed=sum(1 for name in self.pods if _regressed(self.seen.phases.get(name, []))),
            restarted=sum(1 for name in self.pods if self.seen.restarts.get(name, 0) > 0),
            two_drivers=self._two_drivers() - drivers_before,
            lost=await self._lost(),
        )
        moves = sum(self.labels.moves_of(k) for k in self.labels.labels) - moves_before
        line = (
            f"fault {name}: {tried} ({did}); took {ended - started:.1f} s; "
            f"moves={moves} {counts.line()}"
        )
        print(line)
        self.report.append(line)
        return counts

    def _not_ready(self, since: float) -> set[str]:
        out = {
            name
            for name in self.nodes
            if any(t >= since and not ok for t, ok in self.seen.ready.get(name, []))
        }
        leases = self.writes.lease_writes()
        for name in self.nodes:
            times = [w.time for w in leases.get(name, [])] + [trio.current_time()]
            times = [t for t in times if t >= since - NODE_LEASE_DURATION]
            if any(b - a >= NODE_LEASE_DURATION for a, b in pairwise(times)):
                out.add(name)
        return out

    def _two_drivers(self) -> int:
        """Nodes with more runs of writers than label moves allow (assert_one_driver_at_a_time)."""
        moves: dict[str, int] = {}
        for key in self.labels.labels:
            node = key.rpartition("/")[2]
            moves[node] = moves.get(node, 0) + self.labels.moves_of(key)
        bad = 0
        for node, seq in self.writes.node_writes().items():
            shards = [shard_of(w) for w in seq]
            runs = 1 + sum(1 for a, b in pairwise(shards) if a != b)
            bad += runs > moves.get(node, 0) + 1
        return bad

    async def _lost(self) -> int:
        crs = {c["metadata"]["name"] for c in (await self.client.list(cr_path(self.ns))).items}
        nodes = {n["metadata"]["name"] for n in (await self.client.list("/api/v1/nodes")).items}
        leases = {
            lease["metadata"]["name"]
            for lease in (
                await self.client.list(
                    "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
                )
            ).items
        }
        pods = {p["metadata"]["name"] for p in (await self.client.list(self.pods_path)).items}
        return (
            sum(1 for n in self.nodes if n not in crs)
            + sum(1 for n in self.nodes if n not in nodes)
            + sum(1 for n in self.nodes if n not in leases)
            + sum(1 for p in self.pods if p not in pods)
        )


def _regressed(seen: list[tuple[float, str]]) -> bool:
    ranks = [PHASES.get(phase, 0) for _, phase in seen]
    return any(b < a for a, b in pairwise(ranks))


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


class _LeaseLog:
    """On a real apiserver, node Lease renewals as a watch sees them, each with its writer.

    The writer of a renewal is the shard manager whose ``managedFields`` entry changed
    since the Lease's previous version (the entry's time has a one-second grain: a
    renewal in the second of the last one by the same shard shows no change and is
    credited to the previous writer). A shard writing after another took over changes
    its entry again, which is what :meth:`_Fleet._two_drivers` counts.
    """

    def __init__(self) -> None:
        self.writes: list[Written] = []
        self._entries: dict[str, dict[str, str]] = {}
        self._renewed: dict[str, str] = {}

    async def run(self, client: Client, *, task_status: trio.TaskStatus[None]) -> None:
        send, receive = trio.open_memory_channel[WatchEvent[_LeaseView]](10_000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            await nursery.start(Reflector(client, NODE_LEASES, _LeaseView).run, send)
            task_status.started()

    async def _consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[_LeaseView]]) -> None:
        async with receive:
            async for event in receive:
                if event.type == "DELETED":
                    continue
                name = event.obj.metadata.name
                entries = {
                    str(e.get("manager")): str(e.get("time"))
                    for e in event.obj.metadata.managed_fields
                    if str(e.get("manager", "")).startswith(SHARD_MANAGER)
                }
                before = self._entries.get(name, {})
                self._entries[name] = entries
                renew = str(event.obj.spec.get("renewTime"))
                if self._renewed.get(name) == renew:
                    continue
                self._renewed[name] = renew
                changed = [m for m, t in sorted(entries.items()) if before.get(m) != t]
                last = next((w.manager for w in reversed(self.writes) if w.name == name), "")
                for manager in changed or [last]:
                    if manager:
                        path = f"{NODE_LEASES}/{name}"
                        now = trio.current_time()
                        self.writes.append(Written(now, "PUT", path, manager, 200, name))

    def lease_writes(self, since: float = 0.0) -> dict[str, list[Written]]:
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes:
            if w.time >= since:
                out[w.name].append(w)
        return out

    def node_writes(self) -> dict[str, list[Written]]:
        return self.lease_writes()


class _LeaseMeta(ObjectMeta, rename="camel", omit_defaults=True, frozen=True):
    managed_fields: tuple[dict[str, Any], ...] = ()


class _LeaseView(msgspec.Struct, frozen=True):
    metadata: _LeaseMeta = _LeaseMeta()
    spec: dict[str, Any] = {}


async def test_faults_counted(apiserver: Apiserver, nursery: trio.Nursery, tmp_path: Path) -> None:
    proxy = FaultProxy.before(apiserver.url)
    await nursery.start(proxy.run)
    proxied = proxy.kubeconfig(apiserver.kubeconfig, tmp_path / "proxied.kubeconfig")
    config = write_config(tmp_path / "fleet.yaml", shards=len(SHARDS), **LEASES)
    procs = Processes(nursery, Apiserver(apiserver.kind, apiserver.url, proxied), tmp_path, config)
    namespace = unique("faults")
    async with Client(load_config(apiserver.kubeconfig)) as client:
        await prepare(client, (FLEET_NS, namespace))
        writes: WriteLog | _LeaseLog
        if apiserver.sandbox is not None:
            writes, storm = WriteLog(apiserver.sandbox), _Storm(apiserver.sandbox)
        else:
            writes, storm = _LeaseLog(), None
            await nursery.start(writes.run, client)
        fleet = _Fleet(nursery, client, procs, proxy, writes, storm, namespace)
        try:
            await fleet.start()
            await _cases(fleet)
            await fleet.clean_up()
        except BaseException:
            print(procs.logs())
            raise


async def _cases(fleet: _Fleet) -> None:
    proxy, storm = fleet.proxy, fleet.storm
    zero = Counts()

    async def cuts() -> str:
        cut = 0
        for _ in range(3):
            cut += proxy.cut()
            await trio.sleep(1.0)
        return f"{cut} connections cut"

    counts = await fleet.case("watch-cut", "every connection cut 3 times, 1 s apart", cuts)
    assert counts == zero, counts

    async def pause() -> str:
        before = proxy.connections
        proxy.pause()
        await trio.sleep(OUTAGE)
        proxy.resume()
        return f"{proxy.connections - before} connections opened and held meanwhile"

    counts = await fleet.case("pause", f"apiserver silent for {OUTAGE:g} s (SIGSTOP)", pause)
    assert counts == zero, counts

    async def restart() -> str:
        before = proxy.connections
        cut = proxy.down()
        await trio.sleep(OUTAGE)
        proxy.up()
        return f"{cut} connections cut, {proxy.connections - before} refused"

    counts = await fleet.case("restart", f"apiserver down {OUTAGE:g} s, state kept", restart)
    assert counts == zero, counts

    if storm is None:  # a real apiserver: its answers are not the test's to forge
        print("fault 429-storm, 410-storm: skipped (they wrap the sandbox's handler)")
        await _later_cases(fleet)
        return

    async def too_many() -> str:
        before = storm.answered
        storm.answer = TOO_MANY
        await trio.sleep(OUTAGE)
        storm.answer = None
        return f"{storm.answered - before} requests answered 429"

    counts = await fleet.case("429-storm", f"every request 429 for {OUTAGE:g} s", too_many)
    assert counts == zero, counts

    async def gone() -> str:
        before = storm.answered
        storm.answer, storm.watches_only = GONE, True
        cut = proxy.cut()  # every watch starts again, into the storm
        await trio.sleep(OUTAGE)
        storm.answer, storm.watches_only = None, False
        return f"{cut} connections cut, {storm.answered - before} watches answered 410"

    counts = await fleet.case("410-storm", f"watches cut, every watch 410 for {OUTAGE:g} s", gone)
    assert counts == zero, counts

    await _later_cases(fleet)


async def _later_cases(fleet: _Fleet) -> None:
    client, zero = fleet.client, Counts()

    async def malformed() -> str:
        bad_crs = [f"{fleet.ns}-bad-{i:03d}" for i in range(MALFORMED)]
        bad_pods = [f"bad-pod-{i:03d}" for i in range(MALFORMED)]
        limit = trio.CapacityLimiter(16)

        async def create(path: str, body: dict[str, Any]) -> None:
            async with limit:
                await client.create(path, body)

        async with trio.open_nursery() as creators:
            for name in bad_crs:
                creators.start_soon(create, cr_path(fleet.ns), cr_body(name, cpu="1e400"))
            for i, name in enumerate(bad_pods):
                body = _pod(name, fleet.nodes[i % NODES], delayRunning="soon")
                creators.start_soon(create, fleet.pods_path, body)

        async def all_refused() -> bool:
            pods = (await client.list(fleet.pods_path)).items
            reasons = {p["metadata"]["name"]: (p.get("status") or {}).get("reason") for p in pods}
            return all(reasons.get(n) == "InvalidLifecycleAnnotation" for n in bad_pods)

        await wait_for(all_refused, SETTLE_WITHIN, "every bad pod Pending with its reason")
        nodes = {n["metadata"]["name"] for n in (await client.list("/api/v1/nodes")).items}
        assert not nodes & set(bad_crs), "a Node CR with a bad capacity registered a Node"
        async with trio.open_nursery() as deleters:
            for name in bad_crs:
                deleters.start_soon(client.delete, cr_path(fleet.ns, name))
            for name in bad_pods:
                deleters.start_soon(client.delete, f"{fleet.pods_path}/{name}")

        async def all_gone() -> bool:
            crs = {c["metadata"]["name"] for c in (await client.list(cr_path(fleet.ns))).items}
            pods = (await client.list(fleet.pods_path)).items
            return not crs & set(bad_crs) and not {p["metadata"]["name"] for p in pods} & set(
                bad_pods
            )

        await wait_for(all_gone, SETTLE_WITHIN, "the bad CRs and pods deleted")
        return f"{MALFORMED} CRs never registered, {MALFORMED} pods Pending with the reason, all deleted"

    counts = await fleet.case(
        "malformed",
        f"{MALFORMED} Node CRs with cpu=1e400 (past int64) and {MALFORMED} pods with delayRunning=soon at once",
        malformed,
    )
    assert counts == zero, counts

    async def shard_kill() -> str:
        victim = fleet.shards["1"]
        fleet.killed.add(victim.pid)
        await kill9(victim)
        victims = [k.rpartition("/")[2] for k, s in fleet.labels.labels.items() if s == "1"]
        await wait_for(
            lambda: all(fleet.labels.labels.get(f"{fleet.ns}/{n}") == "0" for n in victims),
            SETTLE_WITHIN,
            "the victim's CRs moved",
        )
        fleet.shards["1"] = await fleet.procs.shard(1)
        await wait_for(
            lambda: any(s == "1" for s in fleet.labels.labels.values()),
            SETTLE_WITHIN,
            "the shard's share back",
        )
        return f"{len(victims)} CRs moved to shard 0 and shard 1's share moved back"

    counts = await fleet.case("shard-kill", "kill -9 of shard 1, then it comes back", shard_kill)
    assert counts == zero, counts

    async def failover() -> str:
        holder = await coordinator_holder(client)
        assert holder is not None
        pid = int(holder.rpartition("/")[2])
        (leader,) = [p for p in fleet.coordinators if p.pid == pid]
        fleet.killed.add(pid)
        os.kill(pid, signal.SIGKILL)
        await leader.wait()
        await wait_for(
            lambda: _other_leader(client, holder), SETTLE_WITHIN, "the other coordinator leading"
        )
        fresh = [f"{fleet.ns}-{NODES + i:03d}" for i in range(3)]
        for name in fresh:
            await client.create(cr_path(fleet.ns), cr_body(name))
        fleet.nodes.extend(fresh)
        await wait_for(
            lambda: all(fleet.labels.labels.get(f"{fleet.ns}/{n}") for n in fresh),
            SETTLE_WITHIN,
            "new CRs labelled by the new leader",
        )
        return f"leader {holder} killed, {await coordinator_holder(client)} leads"

    counts = await fleet.case(
        "coordinator-failover", "kill -9 of the leading coordinator; 3 new CRs", failover
    )
    assert counts == zero, counts


async def _other_leader(client: Client, old: str) -> bool:
    holder = await coordinator_holder(client)
    return holder is not None and holder != old
