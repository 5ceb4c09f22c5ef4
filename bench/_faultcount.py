"""Counting what a fault did to a running fleet: the fault suite's observers and its tally.

Shared by the ``faults`` bench scenario (``bench._faults``) and the fault test
(``tests/fleet/test_faults.py``). Observers, each fed by a watch or by the sandbox:

- :class:`WriteLog`: every successful write the sandbox served, with the
  ``fieldManager`` its client named (shards name themselves
  ``kubemock-fleet-shard-<K>``), put in with ``SandboxApp.wrap_handler``;
- :class:`LeaseLog`: on a real apiserver, whose writes are not ours to see,
  each node Lease renewal as a watch sees it, its writer taken from the Lease's
  ``managedFields``;
- :class:`LabelWatch`: each Node CR's shard label over time (the coordinator's moves);
- :class:`Seen`: each node's Ready condition and each pod's phase over time.

:class:`FaultCounter` runs one fault, waits for the fleet to settle (every
node Ready, every pod Running, every node Lease renewed since the fault by the
shard its CR is labelled with) and counts, as a :class:`~bench._report.FaultResult`:

- ``crashes``: fleet processes that exited (those a fault killed excepted);
- ``notReady``: nodes whose Ready condition left True, or whose Lease went
  unrenewed for longer than its duration (what marks a node NotReady);
- ``regressed`` / ``restarted``: pods whose phase went backwards, or with a
  container restart;
- ``twoDrivers``: nodes written by a shard after another took over with no
  shard-label move between;
- ``lost``: CRs, Nodes, node Leases or pods that should exist and do not.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Protocol
from urllib.parse import parse_qsl

import msgspec
import trio

from bench._report import FaultResult
from fleet.api import GROUP, VERSION
from fleet.errors import FleetError
from fleet.kube import Client, MetaOnly, ObjectMeta, Reflector, WatchEvent
from fleet.wire import SHARD_LABEL, SHARD_LEASE_PREFIX

__all__ = [
    "IN_FLIGHT",
    "NODE_LEASES",
    "FaultCounter",
    "LabelWatch",
    "LeaseLog",
    "Seen",
    "Unsettled",
    "WriteLog",
    "WriteSource",
    "Written",
    "shard_of",
]

NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
ALL_CRS = f"/apis/{GROUP}/{VERSION}/nodes"
"""Node CRs in every namespace (what :class:`LabelWatch` watches unless told)."""
SHARD_MANAGER = SHARD_LEASE_PREFIX
"""The ``fieldManager`` prefix of a shard's writes (``kubemock-fleet-shard-<K>``)."""
WATCH_BUFFER = 10_000
"""Events buffered between an observer's watch and its consumer."""
IN_FLIGHT = 1.0
"""Seconds after a shard's ``kill -9`` in which the apiserver may still serve what it had
sent (a pipelined batch of Lease renewals in the socket buffers, or the fault proxy's):
not writes of a second driver (``tests/fleet/test_failover.py`` allows the same)."""
SETTLE_POLL = 0.25
"""Seconds between looks at the observers while a fault settles (they are in memory)."""
EVIDENCE = 3
"""Nodes named in a non-zero count's evidence (the report's reason)."""
PHASES = {"": 0, "Pending": 0, "Running": 1, "Succeeded": 2, "Failed": 2}
"""Pod phases in lifecycle order: a pod seen going to a lower rank regressed."""

Handler = Callable[[Any, Any, dict[str, str]], Awaitable[Any]]
"""The sandbox's request handler (``fleet.sandbox.Handler``), as the write log wraps it."""


class Unsettled(FleetError):
    """A fault, or the fleet after it, did not reach what it waits for in time."""


async def wait_until(
    check: Callable[[], Awaitable[bool] | bool], within: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``check`` until true; the seconds it took. :class:`Unsettled` after ``within``."""
    start = trio.current_time()
    deadline = start + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return trio.current_time() - start
        if trio.current_time() > deadline:
            raise Unsettled(f"timed out after {within:g} s waiting for {what}")
        await trio.sleep(interval)


# --- who wrote what ----------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    time: float
    method: str
    path: str
    manager: str
    status: int
    name: str
    """``metadata.name`` of the object written (from the reply: POSTs have none in the path)."""


def _time(written: Written) -> float:
    return written.time


def shard_of(written: Written) -> str:
    """The shard id of a node write (its ``fieldManager`` names it)."""
    if not written.manager.startswith(SHARD_MANAGER):
        raise AssertionError(f"a node write with no shard: {written}")
    return written.manager[len(SHARD_MANAGER) :]


class WriteSource(Protocol):
    """Node writes with their writers: the sandbox's :class:`WriteLog` or a :class:`LeaseLog`."""

    def lease_writes(self, since: float = 0.0) -> dict[str, list[Written]]: ...

    def node_writes(self) -> dict[str, list[Written]]: ...


class WriteLog:
    """Every successful write the sandbox served, in the order it finished, with its writer.

    ``sandbox.app.wrap_handler(log.wrap)`` puts it in front of the sandbox's handler."""

    def __init__(self) -> None:
        self.writes: list[Written] = []

    def wrap(self, inner: Handler) -> Handler:
        async def handle(scope: Any, receive: Any, labels: dict[str, str]) -> Any:
            reply = await inner(scope, receive, labels)
            method = scope["method"]
            status = getattr(reply, "status", 0)
            if method in ("POST", "PUT", "PATCH", "DELETE") and 200 <= status < 300:
                query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
                self.writes.append(
                    Written(
                        time=trio.current_time(),
                        method=method,
                        path=scope["path"],
                        manager=query.get("fieldManager", ""),
                        status=status,
                        name=_name_of(getattr(reply, "body", b"")),
                    )
                )
            return reply

        return handle

    def node_writes(self) -> dict[str, list[Written]]:
        """Shards' writes that drive a node (its Lease, the v1.Node, its status) by node name,
        in order."""
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes:
            if not w.name or not w.manager.startswith(SHARD_MANAGER):
                continue  # the control plane's node lifecycle writes node status too
            if w.path.startswith(NODE_LEASES) or w.path.startswith("/api/v1/nodes"):
                out[w.name].append(w)
        return out

    def lease_writes(self, since: float = 0.0) -> dict[str, list[Written]]:
        """Successful node Lease creates and renewals since ``since``, by node name (a
        renewal is a PUT, or the merge PATCH a shard taking a node over renews it with)."""
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes[bisect_left(self.writes, since, key=_time) :]:
            if w.path.startswith(NODE_LEASES) and w.method in ("POST", "PUT", "PATCH"):
                out[w.name].append(w)
        return out


def _tail(path: str) -> str:
    """A node write's path, short: ``leases/<node>``, ``nodes/<node>/status``."""
    for prefix in (NODE_LEASES + "/", "/api/v1/nodes/"):
        if path.startswith(prefix):
            return ("leases/" if prefix != "/api/v1/nodes/" else "nodes/") + path[len(prefix) :]
    return path


def _name_of(body: bytes) -> str:
    try:
        obj = json.loads(body)
    except ValueError:
        return ""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str(meta.get("name") or "") if isinstance(meta, dict) else ""


class _LeaseMeta(ObjectMeta, rename="camel", omit_defaults=True, frozen=True):
    managed_fields: tuple[dict[str, Any], ...] = ()


class _LeaseView(msgspec.Struct, frozen=True):
    metadata: _LeaseMeta = _LeaseMeta()
    spec: dict[str, Any] = {}


class LeaseLog:
    """On a real apiserver, node Lease renewals as a watch sees them, each with its writer.

    The writer of a renewal is the shard manager whose ``managedFields`` entry changed
    since the Lease's previous version (the entry's time has a one-second grain: a
    renewal in the second of the last one by the same shard shows no change and is
    credited to the previous writer). A shard writing after another took over changes
    its entry again, which is what :meth:`FaultCounter.two_drivers` counts.
    """

    def __init__(self) -> None:
        self.writes: list[Written] = []
        self._entries: dict[str, dict[str, str]] = {}
        self._renewed: dict[str, str] = {}
        self._last: dict[str, str] = {}

    async def run(self, client: Client, *, task_status: trio.TaskStatus[None]) -> None:
        send, receive = trio.open_memory_channel[WatchEvent[_LeaseView]](WATCH_BUFFER)
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
                for manager in changed or [self._last.get(name, "")]:
                    if manager:
                        self._last[name] = manager
                        path = f"{NODE_LEASES}/{name}"
                        now = trio.current_time()
                        self.writes.append(Written(now, "PUT", path, manager, 200, name))

    def lease_writes(self, since: float = 0.0) -> dict[str, list[Written]]:
        out: dict[str, list[Written]] = defaultdict(list)
        for w in self.writes[bisect_left(self.writes, since, key=_time) :]:
            out[w.name].append(w)
        return out

    def node_writes(self) -> dict[str, list[Written]]:
        return self.lease_writes()


# --- what the watches saw ----------------------------------------------------------------


@dataclass(frozen=True)
class LabelChange:
    time: float
    key: str
    old: str | None
    new: str | None


class LabelWatch:
    """A watch on Node CRs recording each change of its shard label, with the time seen."""

    def __init__(self) -> None:
        self.labels: dict[str, str | None] = {}
        """``namespace/name`` of every CR seen and not deleted: its shard label now."""
        self.changes: list[LabelChange] = []
        self.created: dict[str, float] = {}

    async def run(
        self,
        client: Client,
        path: str = ALL_CRS,
        label_selector: str | None = None,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        reflector = Reflector(client, path, MetaOnly, label_selector=label_selector)
        send, receive = trio.open_memory_channel[WatchEvent[MetaOnly]](WATCH_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            await nursery.start(reflector.run, send)
            task_status.started()

    async def _consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[MetaOnly]]) -> None:
        async with receive:
            async for event in receive:
                meta = event.obj.metadata
                key = f"{meta.namespace}/{meta.name}"
                if event.type == "DELETED":
                    self.labels.pop(key, None)
                    continue
                label = meta.labels.get(SHARD_LABEL) or None
                old = self.labels.get(key)
                if key not in self.labels:
                    self.created.setdefault(key, trio.current_time())
                self.labels[key] = label
                if label != old:
                    self.changes.append(LabelChange(trio.current_time(), key, old, label))

    def moves_of(self, key: str) -> int:
        """Label changes from one shard to another (the first assignment not counted)."""
        return sum(1 for c in self.changes if c.key == key and c.old is not None)

    def moves(self) -> int:
        """Label changes from one shard to another, over every CR."""
        return sum(1 for c in self.changes if c.old is not None)

    def moves_by_node(self) -> dict[str, int]:
        """:meth:`moves_of` by node name (a CR's Node is named as the CR)."""
        out: dict[str, int] = defaultdict(int)
        for c in self.changes:
            if c.old is not None:
                out[c.key.rpartition("/")[2]] += 1
        return out


class _View(msgspec.Struct):
    metadata: ObjectMeta = ObjectMeta()
    status: dict[str, Any] = {}


def ready(node: dict[str, Any] | None) -> bool:
    """A Node's Ready condition is True."""
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class Seen:
    """What a watch saw of each node and pod since the start, with the observer's times
    (changes only)."""

    ready: dict[str, list[tuple[float, bool]]] = field(default_factory=dict)
    phases: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)

    async def run(
        self,
        client: Client,
        pods_path: str,
        label_selector: str | None = None,
        *,
        task_status: trio.TaskStatus[None],
    ) -> None:
        async with trio.open_nursery() as nursery:
            for reflector, consume in (
                (Reflector(client, "/api/v1/nodes", _View), self._node),
                (Reflector(client, pods_path, _View, label_selector=label_selector), self._pod),
            ):
                send, receive = trio.open_memory_channel[WatchEvent[_View]](WATCH_BUFFER)
                nursery.start_soon(self._consume, receive, consume)
                await nursery.start(reflector.run, send)
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

    def is_ready(self, node: str) -> bool:
        seen = self.ready.get(node)
        return seen[-1][1] if seen else False

    def phase(self, pod: str) -> str:
        seen = self.phases.get(pod)
        return seen[-1][1] if seen else ""


def regressed(seen: Sequence[tuple[float, str]]) -> bool:
    """The phase went backwards (Running to Pending, Succeeded to Running ...)."""
    ranks = [PHASES.get(phase, 0) for _, phase in seen]
    return any(b < a for a, b in pairwise(ranks))


# --- the tally ---------------------------------------------------------------------------


class FaultCounter:
    """Runs faults against a fleet and counts what each did (module docstring).

    ``nodes`` and ``pods`` are the names that must stay (a fault adding nodes extends
    ``nodes``); ``crs_path`` is the Node CRs' collection (namespaced), ``pods_path`` the
    pods'; ``selector`` narrows both lists. ``exited`` gives the fleet processes that
    exited without a fault meaning them to.
    """

    def __init__(
        self,
        client: Client,
        *,
        crs_path: str,
        pods_path: str,
        nodes: list[str],
        pods: list[str],
        writes: WriteSource,
        labels: LabelWatch,
        seen: Seen,
        exited: Callable[[], int],
        node_lease_duration: float,
        settle_within: float,
        selector: str | None = None,
        killed: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        self.client = client
        self.crs_path = crs_path
        self.pods_path = pods_path
        self.namespace = crs_path.rstrip("/").rsplit("/", 2)[-2]
        self.nodes = nodes
        self.pods = pods
        self.writes = writes
        self.labels = labels
        self.seen = seen
        self.exited = exited
        self.node_lease_duration = node_lease_duration
        self.settle_within = settle_within
        self.selector = selector
        self.killed = killed
        """Shard id -> when a fault killed its process (``FaultFleet.shard_killed``)."""

    def label_of(self, node: str) -> str | None:
        return self.labels.labels.get(f"{self.namespace}/{node}")

    async def case(self, name: str, tried: str, fault: Callable[[], Awaitable[str]]) -> FaultResult:
        """Run ``fault`` (it says what it did), let the fleet settle, count."""
        started = trio.current_time()
        moves_before = self.labels.moves()
        drivers_before = set(self.two_driver_nodes())
        did = ""
        reason = ""
        try:
            did = await fault()
        except Unsettled as exc:
            reason = f"the fault did not complete: {exc}"
        ended = trio.current_time()
        settle = 0.0
        if not reason:
            try:
                settle = await wait_until(
                    lambda: not self.unsettled(ended, quick=True),
                    self.settle_within,
                    "the fleet to settle",
                    SETTLE_POLL,
                )
            except Unsettled:
                settle = trio.current_time() - ended
                reason = f"not settled within {self.settle_within:g} s: {self.unsettled(ended)}"
        seen_down, lease_gaps = self.not_ready_parts(started)
        drivers = {
            node: seq for node, seq in self.two_driver_nodes().items() if node not in drivers_before
        }
        result = FaultResult(
            name=name,
            tried=tried,
            did=did,
            fault_seconds=ended - started,
            settle_seconds=settle,
            moves=self.labels.moves() - moves_before,
            crashes=self.exited(),
            not_ready=len(seen_down | set(lease_gaps)),
            regressed=sum(1 for p in self.pods if regressed(self.seen.phases.get(p, []))),
            restarted=sum(1 for p in self.pods if self.seen.restarts.get(p, 0) > 0),
            two_drivers=len(drivers),
            lost=await self.lost(),
            ok=False,
            reason=reason,
        )
        counts = result.counts()
        if not reason and any(counts.values()):
            reason = "non-zero: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v)
            reason += self._evidence(started, seen_down, lease_gaps, drivers)
        return msgspec.structs.replace(result, ok=not reason, reason=reason)

    def unsettled(self, since: float, *, quick: bool = False) -> str:
        """What keeps the fleet from being settled since ``since`` (the fault's end): nodes
        not Ready, pods not Running, node Leases not renewed by their labelled shard since.
        "" when settled; ``quick`` stops at the first kind found (the Lease check is the
        costly one)."""
        parts = []
        not_ready = [n for n in self.nodes if not self.seen.is_ready(n)]
        if not_ready:
            parts.append(f"{len(not_ready)} nodes not Ready (e.g. {', '.join(not_ready[:3])})")
        pending = [p for p in self.pods if self.seen.phase(p) != "Running"]
        if pending:
            parts.append(f"{len(pending)} pods not Running (e.g. {', '.join(pending[:3])})")
        if parts and quick:
            return "; ".join(parts)
        leases = self.writes.lease_writes(since=since)
        stale = self._unrenewed(leases)
        if stale:
            parts.append(
                f"{len(stale)} node Leases not renewed by their shard since the fault (e.g. "
                + ", ".join(
                    f"{n}: label {self.label_of(n)}, writers "
                    f"{sorted({w.manager for w in leases.get(n, [])})}"
                    for n in stale[:3]
                )
                + ")"
            )
        return "; ".join(parts)

    def _unrenewed(self, leases: dict[str, list[Written]]) -> list[str]:
        return [
            name
            for name in self.nodes
            if not any(
                w.manager == f"{SHARD_MANAGER}{self.label_of(name)}" for w in leases.get(name, [])
            )
        ]

    def not_ready(self, since: float) -> set[str]:
        """Nodes seen not Ready since ``since``, or whose Lease went a duration unrenewed."""
        seen_down, lease_gaps = self.not_ready_parts(since)
        return seen_down | set(lease_gaps)

    def not_ready_parts(self, since: float) -> tuple[set[str], dict[str, float]]:
        """The two halves of :meth:`not_ready`: nodes a watch saw not Ready since ``since``
        (the node lifecycle controller marked them), and nodes whose Lease went a duration
        or more between two renewals the apiserver served, with the longest gap."""
        seen_down = {
            name
            for name in self.nodes
            if any(t >= since and not ok for t, ok in self.seen.ready.get(name, []))
        }
        gaps: dict[str, float] = {}
        leases = self.writes.lease_writes(since=since - self.node_lease_duration)
        now = trio.current_time()
        for name in self.nodes:
            times = [w.time for w in leases.get(name, [])] + [now]
            longest = max((b - a for a, b in pairwise(times)), default=0.0)
            if longest >= self.node_lease_duration:
                gaps[name] = longest
        return seen_down, gaps

    def two_drivers(self) -> int:
        """Nodes with more runs of writers than label moves allow: shard A writing again
        after B took over (A, B, A) with one move between is one run too many."""
        return len(self.two_driver_nodes())

    def two_driver_nodes(self) -> dict[str, list[Written]]:
        """The nodes :meth:`two_drivers` counts, each with its shards' writes (those of a
        killed shard in its :data:`IN_FLIGHT` second left out)."""
        moves = self.labels.moves_by_node()
        killed = self.killed()
        out: dict[str, list[Written]] = {}
        for node, seq in self.writes.node_writes().items():
            kept = [
                w
                for w in seq
                if not (
                    shard_of(w) in killed
                    and killed[shard_of(w)] < w.time <= killed[shard_of(w)] + IN_FLIGHT
                )  # sent before the kill, served after it
            ]
            shards = [shard_of(w) for w in kept]
            runs = 1 + sum(1 for a, b in pairwise(shards) if a != b)
            if runs > moves.get(node, 0) + 1:
                out[node] = kept
        return out

    def _evidence(
        self,
        since: float,
        seen_down: set[str],
        lease_gaps: Mapping[str, float],
        drivers: Mapping[str, list[Written]],
    ) -> str:
        """What a non-zero notReady or twoDrivers is made of, for the report (times in
        seconds from the fault's start)."""
        parts = []
        if seen_down or lease_gaps:
            worst = sorted(lease_gaps.items(), key=lambda item: -item[1])[:EVIDENCE]
            parts.append(
                f"notReady: {len(seen_down)} seen not Ready, {len(lease_gaps)} with a Lease "
                f"gap >= {self.node_lease_duration:g} s between served renewals"
                + (" (longest: " + ", ".join(f"{n} {g:.1f} s" for n, g in worst) + ")")
                * bool(worst)
            )
        for node, seq in sorted(drivers.items())[:EVIDENCE]:
            switches = [b for a, b in pairwise(seq) if shard_of(a) != shard_of(b)]
            parts.append(
                f"twoDrivers {node} ({self.labels.moves_by_node().get(node, 0)} moves): "
                + ", ".join(
                    f"{shard_of(w)}@{w.time - since:.1f} {w.method} {_tail(w.path)} {w.status}"
                    for w in [seq[0], *switches]
                )
            )
        return "; " + "; ".join(parts) if parts else ""

    async def lost(self) -> int:
        """CRs, Nodes, node Leases and pods that should exist and do not."""
        crs = await self.names(self.crs_path, self.selector)
        nodes = await self.names("/api/v1/nodes", None)
        leases = await self.names(NODE_LEASES, None)
        pods = await self.names(self.pods_path, self.selector)
        return (
            sum(1 for n in self.nodes if n not in crs)
            + sum(1 for n in self.nodes if n not in nodes)
            + sum(1 for n in self.nodes if n not in leases)
            + sum(1 for p in self.pods if p not in pods)
        )

    async def names(self, path: str, selector: str | None) -> set[str]:
        listed = await self.client.list(path, label_selector=selector)
        return {str(item["metadata"]["name"]) for item in listed.items}
