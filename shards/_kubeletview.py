"""The kubelet API's view of a shard: its driven nodes and their pods, from the drivers.

:class:`DriverView` implements :class:`shards._kubeletapi.ShardView` over the
:class:`~shards._kubelets.NodeDriver` and :class:`~shards._pods.PodDriver` the engine
runs: every answer comes from what they already hold (no apiserver request), built per
request (the kubelet API is asked rarely; the drivers keep no second copy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial

from shards._kubeletapi import ContainerInfo, ContainerRuns, NodeInfo, PodInfo
from shards._kubelets import NodeDriver
from shards._pods import PodDriver, PodRecord, _inits, _PodSpec

__all__ = ["DriverView"]

SPEC_CACHE = 16_384
"""Pod specs whose containers are kept as the kubelet API reads them. A spec is shared by
the pods of one template on one node (``PodDriver._slim``), and a scrape of a node reads all
its pods: converting their containers on each request was half the cost of the view
(``pod_info``: 19 -> 12 µs a pod, micro-benchmark at load 10; 5 µs with ``PodInfo``
not frozen)."""


def _containers(items: Sequence[object]) -> tuple[ContainerInfo, ...]:
    out = []
    for c in items:
        resources = c.resources  # type: ignore[attr-defined]
        out.append(
            ContainerInfo(
                c.name,  # type: ignore[attr-defined]
                {k: str(v) for k, v in resources.requests.items()},
                {k: str(v) for k, v in resources.limits.items()},
            )
        )
    return tuple(out)


def container_runs(record: PodRecord) -> Callable[[str, datetime], ContainerRuns]:
    """A container's runs as of a moment, from the pod's Plan (the status the shard writes
    for that moment): the current run (or the last one, while it waits to restart) and
    ``lastState.terminated``. A ``partial``, nothing worked out until it is called: every
    ``PodInfo`` of a scrape carries one, and only ``logs`` calls it."""
    return partial(_runs, record)


def _runs(record: PodRecord, container: str, now: datetime) -> ContainerRuns:
    inits = {c.name for c in record.spec.init_containers}

    def at(offset: float) -> datetime:
        return record.creation + timedelta(seconds=offset)

    elapsed = (now - record.creation).total_seconds()
    step = record.plan.state_at(elapsed, record.spec.restart_policy, _inits(record))
    state = step.init_state(container) if container in inits else step.container_state(container)
    last = state.last
    previous = None if last is None else (at(last.started_at), at(last.finished_at))
    started = state.started_at if state.started_at is not None else step.started_at
    if state.kind == "running" and started is not None:
        current: tuple[datetime, datetime | None] | None = (at(started), None)
    elif state.kind == "terminated" and started is not None:
        finished = state.finished_at if state.finished_at is not None else step.at
        current = (at(started), at(max(finished, started)))
    else:  # waiting: the last run is what is read, as the kubelet does in a back-off
        current = previous
    return ContainerRuns(current, previous, state.reason or "ContainerCreating")


_specs: dict[int, tuple[object, tuple[ContainerInfo, ...], tuple[ContainerInfo, ...]]] = {}
"""``id(spec)`` -> (the spec, held so that its id is not reused; containers; init
containers). Emptied when full: specs come and go with templates and nodes."""


def _spec_containers(spec: _PodSpec) -> tuple[tuple[ContainerInfo, ...], tuple[ContainerInfo, ...]]:
    cached = _specs.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1], cached[2]
    if len(_specs) >= SPEC_CACHE:
        _specs.clear()
    containers, inits = _containers(spec.containers), _containers(spec.init_containers)
    _specs[id(spec)] = (spec, containers, inits)
    return containers, inits


def pod_info(record: PodRecord) -> PodInfo:
    containers, inits = _spec_containers(record.spec)
    return PodInfo(
        namespace=record.namespace,
        name=record.name,
        uid=record.uid,
        node=record.node,
        created=record.creation,
        phase=record.phase,
        containers=containers,
        init_containers=inits,
        annotations=record.annotations,
        runs=container_runs(record),
    )


class DriverView:
    """A :class:`~shards._kubeletapi.ShardView` over the engine's drivers."""

    def __init__(self, nodes: NodeDriver, pods: PodDriver) -> None:
        self._nodes = nodes
        self._pods = pods

    def node(self, name: str) -> NodeInfo | None:
        state = self._nodes.state_of(name)
        if state is None or not state.driving or state.spec is None:
            return None
        spec = state.spec
        return NodeInfo(
            name=name,
            capacity=spec.capacity,
            allocatable=spec.allocatable if spec.allocatable is not None else spec.capacity,
            created=state.cr.metadata.creation_timestamp,
            annotations=spec.annotations,
        )

    def nodes(self) -> Sequence[str]:
        return sorted(state.name for state in self._nodes.states.values() if state.driving)

    def pod(self, namespace: str, name: str) -> PodInfo | None:
        record = self._pods.pods.get(f"{namespace}/{name}")
        if record is None or self.node(record.node) is None:
            return None
        return pod_info(record)

    def pods_on(self, node: str) -> Sequence[PodInfo]:
        return [pod_info(r) for r in self._pods.on_node(node)]
