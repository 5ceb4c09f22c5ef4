"""Kubelet restarts on demand: a Node CR annotation that restarts its node's kubelet.

A chaos scenario (``bench restart-storm``) needs every node of a fleet to restart
its kubelet at once, from outside the shard processes and on any cluster. The
trigger is the CR annotation :data:`~fleet.wire.KUBELET_RESTART_ANNOTATION`:
when its value changes, the shard restarts that node's kubelet
(:meth:`~shards._kubelets.NodeDriver.restart`) the way a NodeScript's
``kubeletRestart`` step does (one implementation: Starting Events, registration
POST/409/GET, a whole status report, its pods listed again, with a per-node pod
watch through a new watch). The first value a shard sees (at its start, or when
a CR moves to it) restarts nothing: only a change does.
"""

from __future__ import annotations

from typing import Protocol

from fleet.kube import WatchEvent
from fleet.wire import KUBELET_RESTART_ANNOTATION
from shards._cr import CrView

__all__ = ["KubeletRestarts"]


class _Restartable(Protocol):
    def restart(self, key: str) -> bool: ...


class KubeletRestarts:
    """Watches the Node CR events for a changed restart annotation (consumer task: no I/O)."""

    def __init__(self, nodes: _Restartable) -> None:
        self._nodes = nodes
        self._seen: dict[str, str] = {}
        """CR key -> the annotation's value when last seen ("" when absent)."""
        self.restarts = 0
        """Kubelets restarted."""

    def observe(self, event: WatchEvent[CrView]) -> None:
        meta = event.obj.metadata
        key = f"{meta.namespace}/{meta.name}"
        if event.type == "DELETED":
            self._seen.pop(key, None)
            return
        value = meta.annotations.get(KUBELET_RESTART_ANNOTATION, "")
        before = self._seen.get(key)
        self._seen[key] = value
        if before is None or before == value:
            return
        if self._nodes.restart(key):
            self.restarts += 1
