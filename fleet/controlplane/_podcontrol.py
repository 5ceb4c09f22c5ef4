"""Deleting the pods a controller owns, as kube-controller-manager's ``PodControl`` does.

:class:`Expectations` (client-go's ``ControllerExpectations``) remembers the creations
and deletions in flight per controller key, for every controller that makes pods.

The ReplicaSet, Job and DaemonSet controllers delete surplus pods the same way
(``controller.RealPodControl.DeletePod`` and the expectations around it): the
deletions are expected first, so a sync that runs before the watch shows them
does not delete again; each DELETE carries the pod's uid as a precondition (a
pod of the same name made since is not touched); a pod already gone counts as
deleted (the watch will not show its deletion: it is observed at once); a failed
DELETE is logged, no longer expected, and the owner synced again a second later;
a deleted or already gone one is a ``SuccessfulDelete`` Event on the owner (when
it still exists).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleet.controlplane._events import EventRecorder
from fleet.controlplane._informer import Informer
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import PODS, KObject, Resource
from fleet.controlplane._rest import Rest
from fleet.errors import FleetError, NotFound

__all__ = ["RETRY_AFTER_FAILURE", "Expectations", "PodDeleter"]

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 1.0
"""Seconds after a failed DELETE before the owner is synced again."""


class Expectations:
    """Creations and deletions in flight per controller key (client-go ``ControllerExpectations``)."""

    def __init__(self, timeout: float, clock: Callable[[], float]) -> None:
        self._timeout = timeout
        self._clock = clock
        self._pending: dict[str, tuple[int, int, float]] = {}

    def expect(self, key: str, adds: int, deletes: int) -> None:
        self._pending[key] = (adds, deletes, self._clock())

    def observe(self, key: str, *, adds: int = 0, deletes: int = 0) -> None:
        current = self._pending.get(key)
        if current is not None:
            self._pending[key] = (current[0] - adds, current[1] - deletes, current[2])

    def satisfied(self, key: str) -> bool:
        current = self._pending.get(key)
        if current is None:
            return True
        adds, deletes, since = current
        return (adds <= 0 and deletes <= 0) or self._clock() - since > self._timeout

    def forget(self, key: str) -> None:
        self._pending.pop(key, None)


@dataclass(frozen=True, slots=True)
class PodDeleter:
    """Deletes pods for the owners of one controller; see the module docstring."""

    rest: Rest
    owners: Informer[KObject]
    """The controller's informer of owners (its store read at each Event)."""
    resource: Resource
    """The owners' resource, for the Events."""
    component: str
    """The Events' source component (``replicaset-controller``)."""
    expectations: Expectations
    queue: WorkQueue
    events: EventRecorder

    async def delete(self, key: str, pods: Sequence[KObject]) -> None:
        """Delete ``pods``, which the owner at ``key`` controls."""
        if not pods:
            return
        self.expectations.expect(key, 0, len(pods))
        for pod in pods:
            try:
                await self.rest.delete(
                    PODS.path(pod.metadata.namespace, pod.metadata.name),
                    preconditions_uid=pod.metadata.uid,
                )
            except NotFound:
                self.expectations.observe(key, deletes=1)
            except FleetError as exc:
                log.info(
                    "%s %s: deleting pod %s failed: %s",
                    self.resource.kind.lower(),
                    key,
                    pod.metadata.name,
                    exc,
                )
                self.expectations.observe(key, deletes=1)
                self.queue.add_after(key, RETRY_AFTER_FAILURE)
                continue
            owner = self.owners.store.get(key)
            if owner is not None:
                self.events.record(
                    owner, self.resource, "Normal", "SuccessfulDelete",
                    f"Deleted pod: {pod.metadata.name}", self.component,
                )  # fmt: skip
