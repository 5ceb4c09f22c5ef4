"""The shard's side of a handover: stop a node's writes at the door, then drain what is out.

When the coordinator moves a Node CR off this live shard it first marks it
(:data:`fleet.wire.HANDOVER_ANNOTATION`) and waits for this shard to answer
(:data:`fleet.wire.RELEASED_ANNOTATION`) before it writes the new label, so the
new owner starts only after the answer (docs/architecture.md, "Ownership and
fencing"). The answer must therefore come after the last write of this shard
for the node has been *served*, not merely after the driver stopped: a renewal
built a moment ago may still be on its way to the lane's batch, or sitting in a
pipelined connection. :class:`HandoverGate` gives that order:

* :meth:`HandoverGate.release` names a node let go: from then on every write
  whose path is that node's (its ``v1.Node``, any subresource, its Lease in
  ``kube-node-lease``) is refused by the shard's
  :class:`~shards._context.FencedRequester` before it is sent, wherever it was
  built or queued (the lane, the write queue, a sync half-way); so is every
  write of the pods it ran (their status, their deletion), which the pod driver
  names as it lets go of them (:meth:`HandoverGate.hold_pods`): a pod's path
  does not name its node, and a pod status write queued or retried past the
  release would land after the new owner wrote that pod;
* :meth:`HandoverGate.drain` returns once every write sent before it was called
  has been answered (or failed): the writes of the released node that got past
  the door before it closed are among them.

Both steps are synchronous at the door (trio switches tasks only at an await),
so a write is either refused or counted in the drain. A node this shard drives
again (the CR came back) is :meth:`HandoverGate.restore`\\ d.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import trio

__all__ = ["HandoverGate", "node_of", "pod_of"]

_NODES = "/api/v1/nodes/"
_NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"
_NAMESPACES = "/api/v1/namespaces/"


def node_of(path: str) -> str | None:
    """The node a write to ``path`` is for (its v1.Node or its Lease), or None."""
    for prefix in (_NODES, _NODE_LEASES):
        if path.startswith(prefix):
            return path[len(prefix) :].partition("/")[0] or None
    return None


def pod_of(path: str) -> str | None:
    """The pod (``namespace/name``) a write to ``path`` is for (it or a subresource), or None."""
    if not path.startswith(_NAMESPACES):
        return None
    namespace, kind, name, *_ = (*path[len(_NAMESPACES) :].split("/"), "", "")
    return f"{namespace}/{name}" if kind == "pods" and namespace and name else None


class HandoverGate:
    """Released node names, and the shard's writes in flight by epoch; see the module docstring."""

    def __init__(self) -> None:
        self._released: set[str] = set()
        self._pods: dict[str, str] = {}
        """Pods (``namespace/name``) of released nodes: pod -> its node."""
        self._epoch = 0
        self._open: Counter[int] = Counter()
        """Writes out per epoch (the epoch current when each was sent)."""
        self._changed = trio.Event()
        self.refused = 0
        """Writes refused because their node had been released (each a write that would
        have landed after the handover began)."""

    def release(self, name: str) -> None:
        """No write for node ``name`` leaves the shard from now on (until :meth:`restore`)."""
        self._released.add(name)

    def restore(self, name: str) -> None:
        """Node ``name`` is this shard's again: its writes, and its pods', go out."""
        self._released.discard(name)
        if name in self._pods.values():
            self._pods = {pod: node for pod, node in self._pods.items() if node != name}

    def hold_pods(self, name: str, pods: Iterable[str]) -> None:
        """``pods`` (``namespace/name``) ran on node ``name``, released: their writes are
        refused with the node's (until :meth:`restore` or :meth:`drop_pod`)."""
        if name in self._released:
            self._pods.update(dict.fromkeys(pods, name))

    def drop_pod(self, pod: str) -> None:
        """Pod ``pod`` is no longer a released node's: deleted, or made again (the same
        name) on a node this shard drives, whose writes must go."""
        self._pods.pop(pod, None)

    def released(self, name: str) -> bool:
        return name in self._released

    def refuses(self, path: str) -> bool:
        """True if a write to ``path`` is for a released node or one of its pods (counted)."""
        if not self._released:
            return False
        name = node_of(path)
        if name is None and self._pods:
            pod = pod_of(path)
            name = None if pod is None else self._pods.get(pod)
        if name is None or name not in self._released:
            return False
        self.refused += 1
        return True

    @contextmanager
    def sending(self, count: int = 1) -> Iterator[None]:
        """Around a write (or a batch of ``count``) being sent and answered."""
        epoch = self._epoch
        self._open[epoch] += count
        try:
            yield
        finally:
            self._open[epoch] -= count
            if self._open[epoch] <= 0:
                del self._open[epoch]
                self._changed.set()

    async def drain(self) -> None:
        """Return once every write sent before this call has been answered or has failed."""
        epoch = self._epoch
        self._epoch += 1
        while any(e <= epoch for e in self._open):
            if self._changed.is_set():
                self._changed = trio.Event()
            await self._changed.wait()
        await trio.lowlevel.checkpoint()
