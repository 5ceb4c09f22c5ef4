"""The shard's watch of the v1.Nodes it drives: what others write to them is noticed.

A real kubelet reads its Node every 10 s (``nodeStatusUpdateFrequency``, a GET
served from the apiserver's cache) and PATCHes its status when what it would
report differs from what is stored, else every ``nodeStatusReportFrequency``
(5 min). So when the node-lifecycle controller marks a node ``Ready=Unknown``
while the kubelet is in fact alive (its Lease was late under load), the
kubelet puts ``Ready=True`` back within ~10 s, and the controller then lifts
its ``unreachable`` taints before they evict anything.

A shard does the same for 10,000 nodes without a GET per node every 10 s:

- every Node it registers carries the label ``<SHARD_LABEL>=<K>`` (the key the
  coordinator puts on the Node CRs; on a v1.Node it is written by the shard
  that drives it, and moves with the node on a takeover), and one watch
  (:class:`NodeWatch`, through ``hot`` like the pod watch) selects them;
- each event is decoded into :class:`NodeObject`: name, uid,
  resourceVersion and ``spec.podCIDRs``, the status left undecoded (``msgspec.Raw``);
- the echo of the shard's own status write (its resourceVersion is the one the
  PATCH answer carried) ends there; otherwise only ``status.conditions``
  (type, status, reason, message) are decoded, with one reused decoder, and
  compared with what the kubelet reports (:func:`reports_differ`);
- a ``spec.podCIDRs`` the driver's node lacks (kube-controller-manager's
  allocation) becomes the node's pod CIDRs, its pod IP pool;
- on a difference, the driver keeps the event's status as the node's stored
  status and schedules an immediate status PATCH (the two-way diff against it
  restores the conditions, with new transition times).

Conditions other writers own (NetworkUnavailable, node-problem-detector's) and
everything outside ``status.conditions`` are left alone, as are spec and
metadata (taints are the controller-manager's; they go once Ready is True).
What the watch costs per node: the reflector's ``(uid, resourceVersion)`` pair
(``keep_objects=False``) and the resourceVersion of the node's last status
write in its :class:`~shards._kubelets.NodeState`.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec
import trio

from fleet.kube import Reflector, Requester, WatchEvent, resource_path
from shards._nodeobj import KubeletSpec, reported_conditions

__all__ = [
    "NODE_EVENT_BUFFER",
    "NodeObject",
    "NodeSpec",
    "NodeTaint",
    "NodeWatch",
    "reports_differ",
]

NODE_EVENT_BUFFER = 1024
"""Node watch events buffered for the consumer (which does no I/O)."""


class NodeMeta(msgspec.Struct, rename="camel", frozen=True):
    """The metadata the comparison needs; labels, annotations, managedFields stay undecoded."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    resource_version: str = ""


class NodeTaint(msgspec.Struct, frozen=True):
    key: str = ""
    effect: str = ""


class NodeSpec(msgspec.Struct, rename={"pod_cidrs": "podCIDRs"}, frozen=True):
    pod_cidrs: tuple[str, ...] = ()
    """Read back where the cluster allocates them (``shard.podCidrAllocation``)."""
    taints: tuple[NodeTaint, ...] = ()
    """Checked against the taints the node's CR and script own (another writer may drop
    them: see ``NodeDriver.node_seen``)."""


class NodeObject(msgspec.Struct, frozen=True):
    """A v1.Node as the watch hands it over: its status left as JSON until needed."""

    metadata: NodeMeta = NodeMeta()
    spec: NodeSpec = NodeSpec()
    status: msgspec.Raw = msgspec.Raw(b"{}")


class _Condition(msgspec.Struct, frozen=True):
    type: str = ""
    status: str = ""
    reason: str = ""
    message: str = ""


class _Conditions(msgspec.Struct, frozen=True):
    conditions: list[_Condition] | None = None


_decode_conditions = msgspec.json.Decoder(_Conditions).decode


def reports_differ(spec: KubeletSpec, status: msgspec.Raw | bytes) -> list[str]:
    """The kubelet conditions the stored ``status`` (JSON) does not hold as the kubelet reports
    them (empty: none), in the kubelet's order.

    A kubelet condition missing, or with another status, reason or message, is a
    difference; heartbeat and transition times, and other writers' conditions, are not.
    """
    wanted = reported_conditions(spec)
    stored = {c.type: c for c in _decode_conditions(status).conditions or ()}
    differ = []
    for kind, want in wanted.items():
        condition = stored.get(kind)
        if condition is None or (condition.status, condition.reason, condition.message) != want:
            differ.append(kind)
    return differ


class NodeWatch:
    """Lists and watches the Nodes labelled ``selector``, handing each event to ``on_event``."""

    def __init__(
        self,
        requester: Requester,
        selector: str,
        on_event: Callable[[WatchEvent[NodeObject]], None],
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self._on_event = on_event
        self.reflector: Reflector[NodeObject] = Reflector(
            requester,
            resource_path("", "v1", "nodes"),
            NodeObject,
            label_selector=selector,
            clock=clock,
            rng=rng,
            keep_objects=False,  # the driver holds what it needs of each node
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch until cancelled; started once the first list is handed over."""
        send, receive = trio.open_memory_channel[WatchEvent[NodeObject]](NODE_EVENT_BUFFER)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._consume, receive)
            await nursery.start(self.reflector.run, send)
            task_status.started()

    async def _consume(self, receive: trio.MemoryReceiveChannel[WatchEvent[NodeObject]]) -> None:
        async with receive:
            async for event in receive:
                self._on_event(event)
