"""What the kubelet API reads of the shard: its driven nodes and the pods on them.

The server never touches the node and pod drivers directly: the engine hands it a
:class:`ShardView` (a Protocol) that answers from what the drivers already hold, so a
request costs no apiserver round trip and the drivers need not know the server exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["ContainerInfo", "ContainerRuns", "NodeInfo", "PodInfo", "ShardView"]


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerRuns:
    """A container's runs at one moment, as its status shows them: what ``kubectl logs``
    reads (the kubelet picks the container by ``validateContainerLogStatus``)."""

    current: tuple[datetime, datetime | None] | None
    """The run the log is read from without ``previous``: (start, end; None while it runs).
    A container waiting to restart shows its last run; None when it never ran."""
    previous: tuple[datetime, datetime] | None = None
    """``lastState.terminated``: the run before (start, end); None: never restarted."""
    waiting: str = "ContainerCreating"
    """The waiting reason, when :attr:`current` is None."""


@dataclass(slots=True)
class PodInfo:
    """A pod on a driven node, as the kubelet API needs it. Built per request and never
    changed; not ``frozen``: a frozen dataclass's ``__init__`` takes twice as long, and a
    scrape builds one for every pod of its node."""

    namespace: str
    name: str
    uid: str
    node: str
    created: datetime
    phase: str
    """``status.phase`` as the shard last wrote or saw it (``Pending`` when unknown)."""
    containers: Sequence[ContainerInfo]
    init_containers: Sequence[ContainerInfo] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    runs: Callable[[str, datetime], ContainerRuns] | None = None
    """The runs of a container as of a moment (restarts); None: one run since creation
    once the pod is past Pending, never restarted."""

    def container(self, name: str) -> ContainerInfo | None:
        for c in (*self.containers, *self.init_containers):
            if c.name == name:
                return c
        return None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A driven node: its name and what it reports."""

    name: str
    capacity: Mapping[str, str]
    allocatable: Mapping[str, str]
    created: datetime | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)


class ShardView(Protocol):
    """Read-only answers from the shard's drivers (see ``_engine``)."""

    def node(self, name: str) -> NodeInfo | None:
        """A node this shard drives now, or None."""
        ...

    def nodes(self) -> Sequence[str]:
        """Names of the nodes this shard drives now."""
        ...

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        """A pod on one of the driven nodes, or None."""
        ...

    def pods_on(self, node: str) -> Sequence[PodInfo]:
        """The pods held for a driven node."""
        ...
