"""The coordinator: assigns every Node CR to a live shard by writing its shard label.

While it holds the leader Lease (``_election``), the coordinator lists and
watches the Node CRs (all namespaces, or ``coordinator.namespaces``) and the
shard Leases in the fleet namespace, each with a :class:`fleet.kube.Reflector`.
After every change, and whenever a shard's Lease is due to expire or more
rebalance moves are allowed, it plans (``_planner``) and writes the moves as
merge PATCHes of the label ``fleet.mock.zhizuqiu.cn/shard`` (the wire
contract in ``docs/architecture.md``) through a :class:`fleet.kube.WriteQueue`
(``coordinator.maxWritesInFlight`` writers, retries with backoff). A CR's first
label write also adds the shards' cleanup finalizer (guarded by the CR's
resourceVersion; on a 409 the label goes alone), which the shard would
otherwise add by a PATCH of its own: one CR write less per node, and one watch
event less for each CR watcher.

Fencing rule: two shards never drive one node.

* A shard drives only the CRs labelled with its id, and only while its own
  Lease renewal is fresh: if it has not renewed within
  ``coordinator.shardRenewDeadline`` it stops driving every node, and it
  stops driving a CR as soon as it sees the label leave it.
* The coordinator moves a dead shard's CRs only after that shard's Lease has
  expired **by the coordinator's own observation**: ``shardLeaseDuration``
  after it last saw the Lease record change (``_liveness``), never by
  comparing the Lease's timestamps with the local clock, and only once a
  fresh GET of that Lease shows the record unchanged (a lagging or broken
  watch here proves nothing about the shard). Since
  ``shardRenewDeadline < shardLeaseDuration`` and the coordinator can only
  have seen a renewal after the shard sent it, a shard that could not renew
  has already stopped when its CRs move.
* A live shard loses a CR only by a handover in two phases, never by a bare
  relabel: two processes' watches give no order between them, and a write in
  flight can land late, so the old owner cannot be trusted to see a label
  change before the new owner acts on it. The coordinator first marks the CR
  (annotation ``fleet.mock.zhizuqiu.cn/handover: <target>``, the label
  unchanged); the labelled shard stops the node at once, refuses its node's
  writes from then on, waits until every write it had sent is answered, and
  answers (``fleet.mock.zhizuqiu.cn/released: <itself>``); only on seeing
  that does the coordinator write the new label (removing both marks). Each
  step is caused by the one before, as the apiserver served it, so the old
  owner's last write is served before the new owner's first, whatever the
  watch lag. If the old owner dies meanwhile its CRs move as a dead shard's
  (above), marks and all.
* Only the elected leader writes labels, and a leader steps down (cancelling
  this work) before its own lease could be taken over (``_election``).

A fresh leader knows nothing of past renewals, so every existing shard Lease
counts as just renewed: it waits a full lease duration before declaring any
shard dead. Unlabelled CRs and CRs labelled with a shard that has no Lease at
all are assigned at once.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping

import msgspec
import trio

from fleet._metrics import FleetMetrics
from fleet._settings import FleetSettings
from fleet.api import CRDS_MISSING_HINT
from fleet.coordinator._election import LeaderElector
from fleet.coordinator._leases import WallClock, get_lease, lease_path, lease_record, wall_clock
from fleet.coordinator._liveness import LeaseRecord, Liveness
from fleet.coordinator._planner import Move, Planner
from fleet.errors import ApiError, Conflict, TransportError
from fleet.kube import (
    MetaOnly,
    ObjectMeta,
    Reflector,
    Requester,
    WatchEvent,
    Write,
    WriteQueue,
    WriteQueueSettings,
    resource_path,
)
from fleet.machinery import MERGE_PATCH
from fleet.wire import (
    COORDINATOR_LEASE,
    FINALIZER,
    GROUP,
    HANDOVER_ANNOTATION,
    HANDOVER_FIELD_MANAGER,
    NODE_PLURAL,
    RELEASED_ANNOTATION,
    SHARD_LABEL,
    SHARD_LEASE_PREFIX,
    VERSION,
)

__all__ = ["Coordinator"]

log = logging.getLogger(__name__)


EVENT_BUFFER = 1024
"""Watch events buffered between a reflector and the coordinator; the consumer only
marks state dirty, so the buffer rarely holds more than one list's worth."""
BATCH_WINDOW = 0.1
"""Seconds to gather more changes before planning: a `kubectl apply` of 500 CRs is
planned in a few passes, not 500, and each new CR is still assigned well within 1 s."""
RETRY_DELAY = 1.0
"""Seconds before planning again after a label write failed (the write queue has
already retried it with backoff), or a re-read of an expired shard Lease failed."""

_merge_encoder = msgspec.json.Encoder()


class _LeaseSpecView(msgspec.Struct, rename="camel"):
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    renew_time: str | None = None


class _LeaseView(msgspec.Struct):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: _LeaseSpecView = msgspec.field(default_factory=_LeaseSpecView)


class Coordinator:
    """One coordinator replica: competes for leadership; while leader, assigns Node CRs.

    ``identity`` names this replica in the leader Lease (``coordinator@host/pid``).
    ``writes``: where the CRs' label PATCHes go (default ``requester``; ``serve_coordinator``
    gives its hot transport: thousands of them, where httpx's pool spent half the
    coordinator's CPU matching requests to connections). ``clock`` is monotonic (trio's), ``wall`` writes Lease timestamps, ``rng``
    jitters election retries: all injected for tests.
    """

    def __init__(
        self,
        requester: Requester,
        settings: FleetSettings,
        *,
        identity: str,
        writes: Requester | None = None,
        metrics: FleetMetrics | None = None,
        clock: Callable[[], float] = trio.current_time,
        wall: WallClock = wall_clock,
        rng: random.Random | None = None,
    ) -> None:
        self._requester = requester
        self._writes = writes if writes is not None else requester
        self._settings = settings
        self._conf = settings.coordinator
        self.identity = identity
        self.metrics = metrics if metrics is not None else FleetMetrics()
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self.elector = LeaderElector(
            requester,
            namespace=settings.namespace,
            name=COORDINATOR_LEASE,
            identity=identity,
            lease_duration=self._conf.leader_lease_duration,
            renew_deadline=self._conf.leader_renew_deadline,
            retry_period=self._conf.leader_retry_period,
            clock=clock,
            wall=wall,
            rng=self._rng,
        )
        self._running = False
        self._dirty = trio.Event()
        self._liveness = Liveness(clock)
        self._pending: dict[str, str] = {}
        """Labels written but not yet seen on the watch: key -> shard."""
        self._handing: dict[str, str] = {}
        """Handover marks written but not yet seen on the watch: key -> target shard."""
        self._nodes: list[Reflector[MetaOnly]] = []
        self._exported: set[str] = set()
        """Shards with an assignments gauge: one that leaves the fleet loses its series."""

    def ready(self) -> bool:
        """For /readyz: the replica is running (a standby is ready: it is waiting to lead)."""
        return self._running

    @property
    def is_leader(self) -> bool:
        return self.elector.is_leader

    def assignments(self) -> dict[str, str | None]:
        """Node CR key -> shard label, as this leader sees it (pending writes included)."""
        out: dict[str, str | None] = {}
        marked: set[str] = set()
        for reflector in self._nodes:
            for key, obj in reflector.objects.items():
                out[key] = obj.metadata.labels.get(SHARD_LABEL) or None
                if obj.metadata.annotations.get(HANDOVER_ANNOTATION):
                    marked.add(key)
        for key, shard in list(self._pending.items()):
            if key not in out or (out[key] == shard and key not in marked):
                # Deleted, or the watch caught up (a label write clears handover marks: one
                # handed back to its own shard is caught up only when they are gone).
                del self._pending[key]
            else:
                out[key] = shard
        return out

    def handovers(self) -> tuple[set[str], set[str]]:
        """Keys being handed over: ``(moving, released)``, the second those whose shard has
        let go (see the module docstring); label writes not yet seen left out."""
        moving: set[str] = set()
        released: set[str] = set()
        for reflector in self._nodes:
            for key, obj in reflector.objects.items():
                annotations = obj.metadata.annotations
                if not annotations.get(HANDOVER_ANNOTATION) or key in self._pending:
                    continue
                label = obj.metadata.labels.get(SHARD_LABEL)
                if label and annotations.get(RELEASED_ANNOTATION) == label:
                    released.add(key)
                else:
                    moving.add(key)
        for key in list(self._handing):
            seen = self._seen(key)
            if seen is None or seen.annotations.get(HANDOVER_ANNOTATION):
                del self._handing[key]  # gone, or the watch shows the mark: counted above
            else:
                moving.add(key)
        return moving, released

    def live_shards(self) -> frozenset[str]:
        return self._liveness.alive()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Compete for leadership and coordinate while leading, until cancelled."""
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.elector.run, self._lead)
                task_status.started()
        finally:
            self._running = False

    # -- while leading -----------------------------------------------------------------------

    async def _lead(self) -> None:
        self.metrics.leader.set(1)
        self._liveness = Liveness(self._clock)  # a new term trusts no old observation
        self._pending = {}
        self._handing = {}
        try:
            async with trio.open_nursery() as nursery:
                queue = WriteQueue(
                    self._writes,
                    WriteQueueSettings(workers=self._conf.max_writes_in_flight),
                    clock=self._clock,
                    rng=self._rng,
                )
                await nursery.start(queue.run)
                await self._start_leases(nursery)
                namespaces: list[str | None] = [*self._conf.namespaces] or [None]  # None: all
                self._nodes = [await self._start_nodes(nursery, ns) for ns in namespaces]
                await self._assign_loop(queue)
        finally:
            self._nodes = []
            self.metrics.leader.set(0)

    def _mark_dirty(self) -> None:
        self._dirty.set()

    async def _start_leases(self, nursery: trio.Nursery) -> None:
        reflector = Reflector(
            self._requester,
            lease_path(self._settings.namespace),
            _LeaseView,
            clock=self._clock,
            rng=self._rng,
        )
        send, receive = trio.open_memory_channel[WatchEvent[_LeaseView]](EVENT_BUFFER)
        nursery.start_soon(self._consume_leases, receive)
        await nursery.start(reflector.run, send)

    async def _consume_leases(
        self, receive: trio.MemoryReceiveChannel[WatchEvent[_LeaseView]]
    ) -> None:
        default = self._conf.shard_lease_duration
        async with receive:
            async for event in receive:
                name = event.obj.metadata.name
                if not name.startswith(SHARD_LEASE_PREFIX):
                    continue
                shard = name[len(SHARD_LEASE_PREFIX) :]
                if event.type == "DELETED":
                    self._liveness.forget(shard)
                    self._mark_dirty()
                    continue
                spec = event.obj.spec
                record = LeaseRecord(
                    holder=spec.holder_identity or "",
                    renew_time=spec.renew_time or "",
                    duration=float(spec.lease_duration_seconds or default),
                )
                before = self._liveness.alive()
                self._liveness.observe(shard, record)
                if self._liveness.alive() != before:
                    self._mark_dirty()

    async def _start_nodes(
        self, nursery: trio.Nursery, namespace: str | None
    ) -> Reflector[MetaOnly]:
        path = resource_path(GROUP, VERSION, NODE_PLURAL, namespace=namespace)
        reflector = Reflector(
            self._requester,
            path,
            MetaOnly,
            clock=self._clock,
            rng=self._rng,
            missing_hint=CRDS_MISSING_HINT,
        )
        send, receive = trio.open_memory_channel[WatchEvent[MetaOnly]](EVENT_BUFFER)
        nursery.start_soon(self._consume_nodes, receive)
        await nursery.start(reflector.run, send)
        return reflector

    async def _consume_nodes(
        self, receive: trio.MemoryReceiveChannel[WatchEvent[MetaOnly]]
    ) -> None:
        async with receive:
            async for _event in receive:
                self._mark_dirty()

    async def _assign_loop(self, queue: WriteQueue) -> None:
        planner = Planner(self._conf.max_moves_per_second, self._clock)
        while True:
            self._dirty = trio.Event()
            failed = not await self._confirm_expiries()
            assignments = self.assignments()
            live = self._liveness.alive()
            moving, released = self.handovers()
            moves = planner.next_moves(assignments, live, moving=moving, released=released)
            if moves:
                began = self._clock()
                failed = not await self._write_all(moves, queue) or failed
                assignments = self.assignments()
                failovers = Counter(m.source for m in moves if m.reason == "failover")
                for shard, count in sorted(failovers.items()):
                    # The failover's timeline in the log: dead -> CRs moved (-> adopted, in
                    # the adopting shard's log).
                    log.info(
                        "failover of shard %s: %d CRs moved in %.2f s",
                        shard,
                        count,
                        self._clock() - began,
                    )
            self._export(assignments, live)
            waits = [math.inf]
            if (expiry := self._liveness.next_expiry()) is not None:
                waits.append(max(0.0, expiry - self._clock()))
            if (more := planner.wake_in()) is not None:
                waits.append(max(BATCH_WINDOW, more))
            if failed:
                waits.append(RETRY_DELAY)
            with trio.move_on_after(min(waits)):
                await self._dirty.wait()
                await trio.sleep(BATCH_WINDOW)

    async def _confirm_expiries(self) -> bool:
        """Read again each Lease expired by observation; False if a read failed.

        The watch feeding ``_liveness`` may be what broke (a restarted apiserver,
        a relist in back-off) while the shard renewed through its own connection:
        only a fresh read that finds the record unchanged makes the shard dead.
        """
        settled = True
        for shard in self._liveness.unconfirmed():  # a handful of shards: one GET each
            name = f"{SHARD_LEASE_PREFIX}{shard}"
            try:
                lease = await get_lease(self._requester, self._settings.namespace, name)
            except (ApiError, TransportError) as exc:
                log.info("shard %s: Lease expired as observed, re-read failed: %s", shard, exc)
                settled = False
                continue
            record = None if lease is None else lease_record(lease, self._conf.shard_lease_duration)
            self._liveness.confirm(shard, record)
            if shard not in self._liveness.alive():
                log.info(
                    "shard %s: dead (its Lease expired as observed, a fresh read agrees)", shard
                )
            else:
                log.info("shard %s: alive after all (a fresh read shows it renewed)", shard)
        return settled

    def _export(self, assignments: Mapping[str, str | None], live: frozenset[str]) -> None:
        counts = Counter(shard for shard in assignments.values() if shard)
        shards = set(counts) | live
        for shard in self._exported - shards:  # dead and emptied: not a stale count
            self.metrics.assignments.remove(shard)
        for shard in shards:
            self.metrics.assignments.labels(shard=shard).set(counts.get(shard, 0))
        self._exported = shards
        self.metrics.live_shards.set(len(live))

    async def _write_all(self, moves: list[Move], queue: WriteQueue) -> bool:
        """Write every move through the write queue, waiting for all; False if any failed."""
        failures = 0
        todo = iter(moves)

        async def worker() -> None:
            nonlocal failures
            for move in todo:  # workers share one iterator: each move is written once
                if not await self._write(move, queue):
                    failures += 1

        async with trio.open_nursery() as nursery:
            for _ in range(min(queue.settings.workers, len(moves))):
                nursery.start_soon(worker)
        return failures == 0

    def _seen(self, key: str) -> ObjectMeta | None:
        """The metadata of CR ``key`` as the watch last showed it, if it did."""
        obj = next((r.objects[key] for r in self._nodes if key in r.objects), None)
        return None if obj is None else obj.metadata

    async def _write(self, move: Move, queue: WriteQueue) -> bool:
        namespace, _, name = move.key.rpartition("/")
        path = resource_path(GROUP, VERSION, NODE_PLURAL, namespace=namespace or None, name=name)
        handing = move.reason == "rebalance"  # from a live shard: mark it, it lets go first
        if handing:
            meta: dict[str, object] = {
                "annotations": {HANDOVER_ANNOTATION: move.target, RELEASED_ANNOTATION: None}
            }
            params = {"fieldManager": HANDOVER_FIELD_MANAGER}
        else:  # nobody drives it (any more): the label, and any handover's marks cleared
            meta = {
                "labels": {SHARD_LABEL: move.target},
                "annotations": {HANDOVER_ANNOTATION: None, RELEASED_ANNOTATION: None},
            }
            params = None
        label_only = _merge_encoder.encode({"metadata": meta})
        body = label_only
        on_conflict = None
        seen = self._seen(move.key)
        if (
            seen is not None
            and seen.deletion_timestamp is None
            and FINALIZER not in seen.finalizers
            and not handing
        ):
            # The shard's finalizer with its first label: a merge PATCH replaces the whole
            # list, so it is guarded by the resourceVersion the list was read at.
            body = _merge_encoder.encode(
                {
                    "metadata": {
                        **meta,
                        "finalizers": [*seen.finalizers, FINALIZER],
                        "resourceVersion": seen.resource_version,
                    }
                }
            )

            async def on_conflict(_: Conflict) -> Write:
                # The CR changed since it was seen: the label alone (the shard adds the
                # finalizer then, as it does for a CR labelled by anyone else).
                return Write("PATCH", path, label_only, MERGE_PATCH, params=params, force=True)

        # force: a CR deleted and re-created under the same name needs the same label again.
        write = Write(
            "PATCH", path, body, MERGE_PATCH, params=params, force=True, on_conflict=on_conflict
        )
        result = await queue.write(move.key, write)
        if result.outcome == "gone":
            return True  # deleted meanwhile: the watch drops it
        if not result.ok:
            log.warning(
                "%s of %s to shard %s failed: %s", move.reason, move.key, move.target, result.error
            )
            return False
        if handing:
            self._handing[move.key] = move.target
        else:
            self._pending[move.key] = move.target
        self.metrics.moves.labels(reason=move.reason).inc()
        log.info("%s %s: %s -> %s", move.reason, move.key, move.source or "-", move.target)
        return True
