"""The disruption controller: each PodDisruptionBudget's status, which evictions then honour.

As kube-controller-manager's ``disruption`` controller, as an API client:
for a policy/v1 PodDisruptionBudget, the pods of its namespace its selector
matches are counted — ``expectedPods`` (their controllers' ``replicas``: a
ReplicaSet's, or its Deployment's, a StatefulSet's; for a plain integer
``minAvailable`` the matching pods themselves), ``currentHealthy`` (Ready and
not being deleted, minus those an eviction just took: ``disruptedPods``,
forgotten after two minutes as in the real one), ``desiredHealthy`` (from
``minAvailable`` or ``maxUnavailable``, a number or a percentage rounded up)
and ``disruptionsAllowed``, with the ``DisruptionAllowed`` condition
(SufficientPods / InsufficientPods) and ``observedGeneration``. The sandbox's
``pods/eviction`` refuses (429) what the status does not allow, as the real
apiserver does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from fleet.controlplane._informer import Informer, Informers
from fleet.controlplane._jobs import merge_patch_body
from fleet.controlplane._podutil import is_ready
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import (
    DEPLOYMENTS,
    PODDISRUPTIONBUDGETS,
    PODS,
    REPLICASETS,
    STATEFULSETS,
    KObject,
    condition,
    controller_of,
    parse_time,
    rfc3339,
)
from fleet.controlplane._rest import Rest
from fleet.errors import ConfigError, FleetError, NotFound
from fleet.kube import WatchEvent, object_key
from fleet.machinery import label_selector_from_dict

__all__ = ["DisruptionController", "DisruptionSettings"]

log = logging.getLogger(__name__)

DELETION_TIMEOUT = 120.0
"""Seconds an evicted pod counts as disrupted before the controller forgets it (``DeletionTimeout``)."""


@dataclass(frozen=True, slots=True)
class DisruptionSettings:
    """How the disruption controller works."""

    workers: int = 2
    max_queue: int = 100_000

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("disruption: workers must be >= 1")


def _scaled(value: object, total: int) -> int:
    """An IntOrString against ``total`` (percentages rounded up)."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            return math.ceil(int(value[:-1]) * total / 100)
        except ValueError:
            return 0
    try:
        return int(str(value))
    except ValueError:
        return 0


class DisruptionController:
    """Keeps PodDisruptionBudgets' status, as an apiserver client."""

    def __init__(
        self,
        rest: Rest,
        informers: Informers,
        settings: DisruptionSettings | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = s = settings if settings is not None else DisruptionSettings()
        self._rest = rest
        self._wall = wall_clock
        self._informers = informers
        self._budgets: Informer[KObject] = informers.get(PODDISRUPTIONBUDGETS)
        self._pods: Informer[KObject] = informers.get(PODS)
        self._sets: Informer[KObject] = informers.get(REPLICASETS)
        self._deployments: Informer[KObject] = informers.get(DEPLOYMENTS)
        self._statefulsets: Informer[KObject] = informers.get(STATEFULSETS)
        self._budgets.subscribe(self._on_budget)
        self._pods.subscribe(self._on_pod)
        self.queue = WorkQueue("disruption", max_keys=s.max_queue, clock=clock)

    async def _on_budget(self, event: WatchEvent[KObject]) -> None:
        await self.queue.add(object_key(event.obj.metadata))

    async def _on_pod(self, event: WatchEvent[KObject]) -> None:
        pod = event.obj
        for key, pdb in list(self._budgets.store.items()):
            if pdb.metadata.namespace != pod.metadata.namespace:
                continue
            if label_selector_from_dict(pdb.spec.get("selector")).matches(pod.metadata.labels):
                await self.queue.add(key)

    def _expected(self, pods: list[KObject]) -> int:
        """The replicas the pods' controllers want (``getExpectedPodCount``)."""
        total = 0
        seen: set[tuple[str, str]] = set()
        for pod in pods:
            ref = controller_of(pod.metadata)
            if ref is None:
                continue
            ns = pod.metadata.namespace
            owner: KObject | None = None
            if ref.kind == "ReplicaSet":
                rs = self._sets.get(ns, ref.name)
                dref = controller_of(rs.metadata) if rs is not None else None
                if dref is not None and dref.kind == "Deployment":
                    owner, ident = self._deployments.get(ns, dref.name), ("Deployment", dref.name)
                else:
                    owner, ident = rs, ("ReplicaSet", ref.name)
            elif ref.kind == "StatefulSet":
                owner, ident = self._statefulsets.get(ns, ref.name), ("StatefulSet", ref.name)
            else:
                continue
            if owner is not None and ident not in seen:
                seen.add(ident)
                total += int(owner.spec.get("replicas", 1))
        return total

    async def _sync(self, key: str) -> None:
        pdb = self._budgets.store.get(key)
        if pdb is None:
            return
        try:
            await self._sync_budget(key, pdb)
        except NotFound:
            return
        except FleetError as exc:
            log.info("poddisruptionbudget %s: sync failed: %s", key, exc)
            self.queue.add_after(key, 1.0)

    async def _sync_budget(self, key: str, pdb: KObject) -> None:
        selector = label_selector_from_dict(pdb.spec.get("selector"))
        ns = pdb.metadata.namespace
        pods = [
            p
            for p in self._pods.store.values()
            if p.metadata.namespace == ns and selector.matches(p.metadata.labels)
        ]
        now = self._wall()
        live = {p.metadata.name: p for p in pods if p.metadata.deletion_timestamp is None}
        disrupted: dict[str, Any] = {}
        for name, since in (pdb.status.get("disruptedPods") or {}).items():
            at = parse_time(since)
            if name in live and at is not None and now - at < DELETION_TIMEOUT:
                disrupted[name] = since
                self.queue.add_after(key, at + DELETION_TIMEOUT - now + 0.5)
        healthy = sum(1 for n, p in live.items() if is_ready(p) and n not in disrupted)
        spec = pdb.spec
        if spec.get("maxUnavailable") is not None:
            expected = self._expected(pods)
            desired = max(0, expected - _scaled(spec["maxUnavailable"], expected))
        elif isinstance(spec.get("minAvailable"), int):
            expected = len(pods)
            desired = int(spec["minAvailable"])
        else:
            expected = self._expected(pods)
            desired = _scaled(spec.get("minAvailable", "100%"), expected)
        allowed = max(0, healthy - desired)
        status: dict[str, Any] = {
            "observedGeneration": pdb.metadata.generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
        }
        if disrupted:
            status["disruptedPods"] = disrupted
        value = "True" if allowed > 0 else "False"
        old = condition(pdb.status, "DisruptionAllowed")
        status["conditions"] = [
            {
                "type": "DisruptionAllowed",
                "status": value,
                "observedGeneration": pdb.metadata.generation,
                "lastTransitionTime": (
                    old.get("lastTransitionTime")
                    if old is not None and old.get("status") == value
                    else rfc3339(now)
                ),
                "reason": "SufficientPods" if allowed > 0 else "InsufficientPods",
                "message": "",
            }
        ]
        if _same(status, pdb.status):
            return
        body: dict[str, Any] = {"status": merge_patch_body(pdb.status, status)}
        body["metadata"] = {"resourceVersion": pdb.metadata.resource_version}
        await self._rest.merge_patch(
            PODDISRUPTIONBUDGETS.path(ns, pdb.metadata.name, "status"), body
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reconcile until cancelled; reports started at once, works once the informers synced."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.queue.run_timer)
            task_status.started()
            await self._informers.wait_synced(
                self._budgets, self._pods, self._sets, self._deployments, self._statefulsets
            )
            for _ in range(self.settings.workers):
                nursery.start_soon(self.queue.work, self._sync)


def _same(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    return dict(new) == {k: v for k, v in old.items() if k in new or k == "disruptedPods"}
