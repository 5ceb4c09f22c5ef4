"""The Deployment controller: rolls a Deployment's template out through ReplicaSets.

As kube-controller-manager's ``deployment`` controller, enough for
``kubectl rollout status`` and ``kubectl wait --for=condition=Available``:

- the *new* ReplicaSet is the owned one whose template equals the
  Deployment's (ignoring ``pod-template-hash``); it is created as
  ``<deployment>-<hash>``, the hash an FNV-32a of the template and
  ``status.collisionCount``, safe-encoded as the real one does (the real
  hash runs over Go's ``%#v`` of the struct, which a Python client cannot
  reproduce, so names differ from a real cluster's but are stable);
- ``RollingUpdate`` (``maxSurge``/``maxUnavailable``, 25 % each by default):
  the new ReplicaSet grows while the total stays within replicas + maxSurge;
  old ones shrink (unhealthy pods first, then oldest ReplicaSets first) while
  the available pods stay at least replicas - maxUnavailable;
  ``Recreate``: old ReplicaSets go to 0, and only when their pods are gone
  does the new one grow;
- ``revisionHistoryLimit`` (10) old ReplicaSets at 0 are kept, older ones
  deleted; ``deployment.kubernetes.io/revision`` annotations are kept on the
  ReplicaSets and the Deployment;
- status: ``replicas``, ``updatedReplicas``, ``readyReplicas``,
  ``availableReplicas``, ``unavailableReplicas``, ``observedGeneration``,
  ``collisionCount``, and the conditions ``Available``
  (MinimumReplicasAvailable / MinimumReplicasUnavailable) and
  ``Progressing`` (NewReplicaSetCreated, ReplicaSetUpdated,
  NewReplicaSetAvailable).

Left out: ``progressDeadlineSeconds`` (ProgressDeadlineExceeded), proportional
scaling of several live ReplicaSets during a rollout, pausing beyond "do
nothing but status", and adoption of orphan ReplicaSets.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from fleet.controlplane._events import NO_EVENTS, EventRecorder
from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._replicasets import owner_reference
from fleet.controlplane._resources import (
    DEPLOYMENTS,
    REPLICASETS,
    KObject,
    condition,
    controlled,
    controller_of,
    rfc3339,
)
from fleet.controlplane._rest import Rest
from fleet.errors import AlreadyExists, ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key

__all__ = [
    "HASH_LABEL",
    "DeploymentController",
    "DeploymentSettings",
    "pod_template_hash",
    "resolve_fenceposts",
]

log = logging.getLogger(__name__)

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
"""``rand.SafeEncodeString``'s alphabet: no vowels, no 0/1/3 (no words, no look-alikes)."""


@dataclass(frozen=True, slots=True)
class DeploymentSettings:
    workers: int = 5
    """Deployments synced at once (``--concurrent-deployment-syncs``)."""
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"deployments: workers must be >= 1, got {self.workers}")


def pod_template_hash(template: Mapping[str, Any], collision_count: int = 0) -> str:
    """FNV-32a of the template (canonical JSON) and the collision count, safe-encoded."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += collision_count.to_bytes(4, "little")
    h = 0x811C9DC5
    for byte in data:
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(h))


def _int_or_percent(value: object, total: int, *, round_up: bool, default: str) -> int:
    if value is None:
        value = default
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        try:
            pct = int(text[:-1])
        except ValueError:
            return 0
        scaled = pct * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    try:
        return int(text)
    except ValueError:
        return 0


def resolve_fenceposts(deployment: KObject) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as numbers (``deploymentutil.ResolveFenceposts``)."""
    replicas = int(deployment.spec.get("replicas", 1))
    strategy = deployment.spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _int_or_percent(rolling.get("maxSurge"), replicas, round_up=True, default="25%")
    unavailable = _int_or_percent(
        rolling.get("maxUnavailable"), replicas, round_up=False, default="25%"
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1  # validation forbids both 0; the controller would otherwise stall
    return surge, unavailable


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(template)
    meta = dict(out.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != HASH_LABEL}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    if meta:
        out["metadata"] = meta
    else:
        out.pop("metadata", None)
    return out


def _revision(rs: KObject) -> int:
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


def _replicas(rs: KObject) -> int:
    return int(rs.spec.get("replicas", 1))


def _st(rs: KObject, field: str) -> int:
    return int(rs.status.get(field) or 0)


class DeploymentController:
    """Reconciles Deployments into ReplicaSets, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: DeploymentSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
        events: EventRecorder = NO_EVENTS,
    ) -> None:
        self._events = events
        self.settings = s = settings if settings is not None else DeploymentSettings()
        self._rest = rest
        self._wall = wall_clock
        self._informers = informers
        self._deployments: Informer[KObject] = informers.get(DEPLOYMENTS)
        self._sets: Informer[KObject] = informers.get(REPLICASETS)
        self._deployments.subscribe(self._on_deployment)
        self._sets.subscribe(self._on_set)
        self.queue = WorkQueue("deployments", max_keys=s.max_queue, clock=clock)
        self._owned: dict[str, set[str]] = defaultdict(set)
        """Deployment uid -> keys of the ReplicaSets it controls."""

    async def _on_deployment(self, event: WatchEvent[KObject]) -> None:
        if event.type == "DELETED":
            self._owned.pop(event.obj.metadata.uid, None)
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_set(self, event: WatchEvent[KObject]) -> None:
        rs = event.obj
        ref = controller_of(rs.metadata)
        if ref is None or ref.kind != "Deployment":
            return
        key = object_key(rs.metadata)
        if event.type == "DELETED":
            self._owned[ref.uid].discard(key)
        else:
            self._owned[ref.uid].add(key)
        await self.queue.add(f"{rs.metadata.namespace}/{ref.name}")

    def _sets_of(self, d: KObject) -> list[KObject]:
        out = controlled(d.metadata.uid, self._owned.get(d.metadata.uid, ()), self._sets.store)
        return sorted(
            out,
            key=lambda r: (
                r.metadata.creation_timestamp is None,
                r.metadata.creation_timestamp,
                r.metadata.name,
            ),
        )

    # -- sync ------------------------------------------------------------------------------------

    async def _sync(self, key: str) -> None:
        d = self._deployments.store.get(key)
        if d is None or d.metadata.deletion_timestamp is not None:
            return
        sets = self._sets_of(d)
        wanted = _without_hash(d.spec.get("template") or {})
        new = next(
            (rs for rs in sets if _without_hash(rs.spec.get("template") or {}) == wanted), None
        )
        olds = [rs for rs in sets if rs is not new]
        targets = {rs.metadata.name: _replicas(rs) for rs in sets}
        created = False
        if not d.spec.get("paused"):
            replicas = int(d.spec.get("replicas", 1))
            recreate = (d.spec.get("strategy") or {}).get("type") == "Recreate"
            if recreate:
                if any(targets[rs.metadata.name] for rs in olds):
                    for rs in olds:
                        targets[rs.metadata.name] = 0
                elif not any(_st(rs, "replicas") for rs in olds):
                    if new is None:
                        new = await self._create_set(d, olds, replicas)
                        created = new is not None
                    else:
                        targets[new.metadata.name] = replicas
            else:
                if new is None:
                    new = await self._create_set(
                        d, olds, self._new_replicas(d, olds, None, targets)
                    )
                    created = new is not None
                    if new is not None:
                        targets[new.metadata.name] = _replicas(new)
                if new is not None:
                    targets[new.metadata.name] = self._new_replicas(d, olds, new, targets)
                    self._scale_down_olds(d, new, olds, targets)
            await self._apply_scale(d, sets, targets)
            await self._cleanup(d, olds, targets)
        await self._write_status(d, new, olds, created)

    def _new_replicas(
        self, d: KObject, olds: list[KObject], new: KObject | None, targets: Mapping[str, int]
    ) -> int:
        """``NewRSNewReplicas``: how big the new ReplicaSet may be now."""
        replicas = int(d.spec.get("replicas", 1))
        current = targets[new.metadata.name] if new is not None else 0
        if not any(targets[rs.metadata.name] for rs in olds):
            return replicas  # nothing to surge against: just follow the spec (scaling)
        surge, _ = resolve_fenceposts(d)
        total = current + sum(targets[rs.metadata.name] for rs in olds)
        room = replicas + surge - total
        if room <= 0:
            return current
        return current + max(0, min(room, replicas - current))

    def _scale_down_olds(
        self, d: KObject, new: KObject, olds: list[KObject], targets: dict[str, int]
    ) -> None:
        """``reconcileOldReplicaSets``: unhealthy pods first, then oldest ReplicaSets first."""
        old_pods = sum(_st(rs, "replicas") for rs in olds)
        if old_pods == 0:
            return
        replicas = int(d.spec.get("replicas", 1))
        _, unavailable = resolve_fenceposts(d)
        min_available = replicas - unavailable
        all_pods = old_pods + _st(new, "replicas")
        new_unavailable = max(0, targets[new.metadata.name] - _st(new, "availableReplicas"))
        budget = all_pods - min_available - new_unavailable
        if budget <= 0:
            return
        for rs in olds:
            if budget <= 0:
                break
            name = rs.metadata.name
            unhealthy = targets[name] - min(_st(rs, "availableReplicas"), targets[name])
            if targets[name] == 0 or unhealthy <= 0:
                continue
            cut = min(budget, unhealthy)
            targets[name] -= cut
            budget -= cut
        # A ReplicaSet's status lags its spec: never count more available pods than it keeps.
        available = sum(min(_st(rs, "availableReplicas"), _replicas(rs)) for rs in [*olds, new])
        budget = available - min_available
        for rs in olds:
            if budget <= 0:
                break
            name = rs.metadata.name
            cut = min(targets[name], budget)
            targets[name] -= cut
            budget -= cut

    async def _create_set(self, d: KObject, olds: list[KObject], replicas: int) -> KObject | None:
        meta = d.metadata
        collisions = int(d.status.get("collisionCount") or 0)
        template = d.spec.get("template") or {}
        h = pod_template_hash(template, collisions)
        tmeta = dict(template.get("metadata") or {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), HASH_LABEL: h}
        selector = dict(d.spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: h}
        surge, _ = resolve_fenceposts(d)
        revision = max((_revision(rs) for rs in olds), default=0) + 1
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta.name}-{h}",
                "namespace": meta.namespace,
                "labels": tmeta["labels"],
                "annotations": {
                    REVISION: str(revision),
                    DESIRED: str(d.spec.get("replicas", 1)),
                    MAX_REPLICAS: str(int(d.spec.get("replicas", 1)) + surge),
                },
                "ownerReferences": [owner_reference(d, "apps/v1", "Deployment")],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": int(d.spec.get("minReadySeconds") or 0),
                "selector": selector,
                "template": {**template, "metadata": tmeta},
            },
        }  # fmt: skip
        path = REPLICASETS.path(meta.namespace)
        try:
            created = await self._rest.create(path, body)
        except AlreadyExists:
            try:
                existing = await self._rest.get(
                    REPLICASETS.path(meta.namespace, f"{meta.name}-{h}")
                )
            except FleetError:
                return None
            refs = (existing.get("metadata") or {}).get("ownerReferences") or []
            ours = any(r.get("uid") == meta.uid and r.get("controller") for r in refs)
            same = _without_hash(
                (existing.get("spec") or {}).get("template") or {}
            ) == _without_hash(template)
            if not (ours and same):
                # A hash collision: the next attempt hashes with a higher count.
                await self._patch_status(d, {"collisionCount": collisions + 1})
            self.queue.add_after(object_key(meta), 1.0)
            return None  # the watch shows it, or the next attempt hashes anew
        except FleetError as exc:
            log.info(
                "deployment %s/%s: creating its ReplicaSet failed: %s",
                meta.namespace,
                meta.name,
                exc,
            )
            self.queue.add_after(object_key(meta), 1.0)
            return None
        if replicas > 0:
            self._events.record(
                d, DEPLOYMENTS, "Normal", "ScalingReplicaSet",
                f"Scaled up replica set {meta.name}-{h} from 0 to {replicas}",
                "deployment-controller",
            )  # fmt: skip
        if meta.annotations.get(REVISION) != str(revision):
            try:
                await self._rest.merge_patch(
                    DEPLOYMENTS.path(meta.namespace, meta.name),
                    {"metadata": {"annotations": {REVISION: str(revision)}}},
                )
            except FleetError as exc:
                log.info(
                    "deployment %s/%s: revision annotation: %s", meta.namespace, meta.name, exc
                )
        return msgspec.convert(created, KObject)

    async def _apply_scale(
        self, d: KObject, sets: list[KObject], targets: Mapping[str, int]
    ) -> None:
        replicas = int(d.spec.get("replicas", 1))
        surge, _ = resolve_fenceposts(d)
        for rs in sets:
            want = targets.get(rs.metadata.name)
            if want is None or want == _replicas(rs):
                continue
            patch = {
                "metadata": {
                    "annotations": {DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)}
                },
                "spec": {"replicas": want},
            }
            try:
                await self._rest.merge_patch(
                    REPLICASETS.path(rs.metadata.namespace, rs.metadata.name), patch
                )
            except FleetError as exc:
                log.info("deployment: scaling %s failed: %s", rs.metadata.name, exc)
                self.queue.add_after(object_key(d.metadata), 1.0)
                continue
            direction = "up" if want > _replicas(rs) else "down"
            self._events.record(
                d, DEPLOYMENTS, "Normal", "ScalingReplicaSet",
                f"Scaled {direction} replica set {rs.metadata.name} from {_replicas(rs)} to {want}",
                "deployment-controller",
            )  # fmt: skip

    async def _cleanup(self, d: KObject, olds: list[KObject], targets: Mapping[str, int]) -> None:
        limit = int(d.spec.get("revisionHistoryLimit", 10))
        idle = [
            rs for rs in olds
            if targets[rs.metadata.name] == 0 and _st(rs, "replicas") == 0
            and rs.metadata.deletion_timestamp is None
        ]  # fmt: skip
        idle.sort(key=_revision)
        for rs in idle[: max(0, len(idle) - limit)]:
            try:
                await self._rest.delete(
                    REPLICASETS.path(rs.metadata.namespace, rs.metadata.name),
                    preconditions_uid=rs.metadata.uid,
                )
            except FleetError as exc:
                log.info("deployment: deleting old %s failed: %s", rs.metadata.name, exc)

    # -- status ------------------------------------------------------------------------------------

    def _condition(
        self, d: KObject, kind: str, status: str, reason: str, message: str
    ) -> dict[str, Any]:
        now = rfc3339(self._wall())
        old = condition(d.status, kind)
        if old is not None and old.get("status") == status:
            transition = old.get("lastTransitionTime") or now
            if old.get("reason") == reason and old.get("message") == message:
                return dict(old)
        else:
            transition = now
        return {
            "type": kind,
            "status": status,
            "lastUpdateTime": now,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }

    async def _write_status(
        self, d: KObject, new: KObject | None, olds: list[KObject], created: bool
    ) -> None:
        sets = [*olds] + ([new] if new is not None else [])
        replicas = int(d.spec.get("replicas", 1))
        _, unavailable = resolve_fenceposts(d)
        total = sum(_st(rs, "replicas") for rs in sets)
        updated = _st(new, "replicas") if new is not None else 0
        ready = sum(_st(rs, "readyReplicas") for rs in sets)
        available = sum(_st(rs, "availableReplicas") for rs in sets)
        status: dict[str, Any] = {
            "observedGeneration": d.metadata.generation,
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            # omitempty in DeploymentStatus: absent at 0 (None removes it in the merge patch)
            "unavailableReplicas": max(0, replicas - available) or None,
        }
        if d.status.get("collisionCount") is not None:
            status["collisionCount"] = d.status["collisionCount"]
        if available >= replicas - unavailable:
            avail = self._condition(
                d,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            avail = self._condition(
                d,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        name = new.metadata.name if new is not None else ""
        complete = (
            new is not None and updated == replicas and total == replicas
            and available == replicas and _st(new, "observedGeneration") >= new.metadata.generation
        )  # fmt: skip
        progressing: dict[str, Any] | None
        if complete:
            progressing = self._condition(
                d,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{name}" has successfully progressed.',
            )
        elif created:
            progressing = self._condition(
                d,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{name}"',
            )
        elif new is not None:
            progressing = self._condition(
                d,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{name}" is progressing.',
            )
        else:
            progressing = None
        conds = [avail] + ([progressing] if progressing is not None else [])
        others = [
            c
            for c in d.status.get("conditions") or ()
            if c.get("type") not in ("Available", "Progressing")
        ]
        status["conditions"] = conds + others
        if all(d.status.get(k) == v for k, v in status.items()):
            return
        await self._patch_status(d, status)

    async def _patch_status(self, d: KObject, status: Mapping[str, Any]) -> None:
        try:
            await self._rest.merge_patch(
                DEPLOYMENTS.path(d.metadata.namespace, d.metadata.name, "status"),
                {"status": status},
            )
        except NotFound:
            return
        except FleetError as exc:
            log.info("deployment %s: status update failed: %s", d.metadata.name, exc)
            self.queue.add_after(object_key(d.metadata), 1.0)

    # -- running -------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(self._deployments, self._sets)
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)
