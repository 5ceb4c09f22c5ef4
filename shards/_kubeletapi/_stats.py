"""The kubelet's stats endpoints for one node: ``/stats/summary``, ``/metrics/resource``,
``/metrics/cadvisor`` (a subset), from the usage model of ``_usage``.

Shapes as a v1.24 kubelet writes them: the Summary API (``stats/v1alpha1``: usage now in
``usageNanoCores``, the counter in ``usageCoreNanoSeconds``, memory working set) that
metrics-server < 0.6 read and the sandbox's ``metrics.k8s.io`` reads; the resource metrics
(Prometheus text, each sample with its timestamp) that metrics-server ≥ 0.6 scrapes and
turns into rates between two scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from fleet.machinery import format_time
from shards._kubeletapi._http import Reply, Request
from shards._kubeletapi._usage import (
    Usage,
    container_usage,
    node_base_usage,
    node_usage,
    pod_usage,
)
from shards._kubeletapi._view import NodeInfo, PodInfo, ShardView

__all__ = ["Stats"]

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
_encode = msgspec.json.Encoder().encode


def _cpu(usage: Usage, time: str) -> dict[str, Any]:
    return {
        "time": time,
        "usageNanoCores": int(usage.now * 1e9),
        "usageCoreNanoSeconds": int(usage.total * 1e9),
    }


def _memory(usage: Usage, time: str, available: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"time": time}
    if available is not None:
        out["availableBytes"] = max(int(available - usage.now), 0)
    working = int(usage.now)
    out.update(
        usageBytes=working,
        workingSetBytes=working,
        rssBytes=working,
        pageFaults=0,
        majorPageFaults=0,
    )
    return out


def _sum(parts: Sequence[tuple[str, Usage]]) -> Usage:
    return Usage(sum(u.now for _, u in parts), sum(u.total for _, u in parts))


def _escape(value: str) -> str:
    """A Prometheus label value: backslash, double quote and newline escaped (names and
    namespaces never hold them; the check is what most values cost)."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _float(value: float) -> str:
    return repr(float(value))


def _family(name: str, kind: str, help_text: str) -> tuple[str, str]:
    return f"# HELP {name} [ALPHA] {help_text}", f"# TYPE {name} {kind}"


_HELP_CONTAINER_CPU = "Cumulative cpu time consumed by the container in core-seconds"
_HELP_CONTAINER_MEMORY = "Current working set of the container in bytes"
_HELP_CONTAINER_START = "Start time of the container since unix epoch in seconds"
_HELP_NODE_CPU = "Cumulative cpu time consumed by the node in core-seconds"
_HELP_NODE_MEMORY = "Current working set of the node in bytes"
_HELP_POD_CPU = "Cumulative cpu time consumed by the pod in core-seconds"
_HELP_POD_MEMORY = "Current working set of the pod in bytes"
_HELP_SCRAPE_ERROR = "1 if there was an error while getting container metrics, 0 otherwise"


class Stats:
    """Answers the stats paths of a node (``KubeletServer.stats``)."""

    def __init__(self, view: ShardView, wall: Callable[[], datetime]) -> None:
        self.view = view
        self._wall = wall

    def handle(self, rest: str, node: NodeInfo, request: Request) -> Reply:
        now = self._wall()
        pods = self.view.pods_on(node.name)
        if rest == "stats/summary":
            return Reply(200, _encode(self.summary(node, pods, now)), "application/json")
        if rest == "metrics/resource":
            return Reply(200, self.resource_metrics(node, pods, now).encode(), PROMETHEUS)
        if rest == "metrics/cadvisor":
            return Reply(200, self.cadvisor(node, pods, now).encode(), PROMETHEUS)
        return Reply(404, b"404 page not found\n")

    def summary(self, node: NodeInfo, pods: Sequence[PodInfo], now: datetime) -> dict[str, Any]:
        time = format_time(now)
        capacity = node.capacity.get("memory")
        from fleet.api import parse_quantity

        memory_capacity = float(parse_quantity(capacity).value) if capacity else None
        out_pods = []
        for pod in pods:
            cpu = container_usage(pod, "cpu", now)
            memory = dict(container_usage(pod, "memory", now))
            if not cpu:
                continue
            started = format_time(pod.created)
            out_pods.append(
                {
                    "podRef": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                    "startTime": started,
                    "containers": [
                        {
                            "name": name,
                            "startTime": started,
                            "cpu": _cpu(usage, time),
                            "memory": _memory(memory[name], time),
                        }
                        for name, usage in cpu
                    ],
                    "cpu": _cpu(_sum(cpu), time),
                    "memory": _memory(_sum(list(memory.items())), time),
                }
            )
        return {
            "node": {
                "nodeName": node.name,
                "startTime": format_time(node.created or now),
                "cpu": _cpu(node_usage(node, pods, "cpu", now), time),
                "memory": _memory(node_usage(node, pods, "memory", now), time, memory_capacity),
            },
            "pods": out_pods,
        }

    def resource_metrics(self, node: NodeInfo, pods: Sequence[PodInfo], now: datetime) -> str:
        """The Prometheus text metrics-server scrapes every 15 s from every node: written
        straight into lines (no samples kept, one pass over the pods for both resources),
        this being the kubelet API's hottest path (docs/performance.md)."""
        stamp = f" {int(now.timestamp() * 1000)}"
        containers_cpu: list[str] = []
        containers_memory: list[str] = []
        containers_start: list[str] = []
        pods_cpu: list[str] = []
        pods_memory: list[str] = []
        node_cpu = node_base_usage(node, "cpu", now).total
        node_memory = node_base_usage(node, "memory", now).now
        for pod in pods:
            usage = pod_usage(pod, now)
            if not usage:
                continue
            of_pod = f'namespace="{_escape(pod.namespace)}",pod="{_escape(pod.name)}"}}'
            started = f" {_float(pod.created.timestamp())}{stamp}"
            pod_cpu = pod_memory = 0.0
            for name, cpu, memory in usage:
                labels = f'{{container="{_escape(name)}",{of_pod}'
                containers_cpu.append(
                    f"container_cpu_usage_seconds_total{labels} {_float(cpu)}{stamp}"
                )
                containers_memory.append(
                    f"container_memory_working_set_bytes{labels} {_float(memory)}{stamp}"
                )
                containers_start.append(f"container_start_time_seconds{labels}{started}")
                pod_cpu += cpu
                pod_memory += memory
            pods_cpu.append(f"pod_cpu_usage_seconds_total{{{of_pod} {_float(pod_cpu)}{stamp}")
            pods_memory.append(
                f"pod_memory_working_set_bytes{{{of_pod} {_float(pod_memory)}{stamp}"
            )
            node_cpu += pod_cpu
            node_memory += pod_memory
        return "\n".join(
            [
                *_family("container_cpu_usage_seconds_total", "counter", _HELP_CONTAINER_CPU),
                *containers_cpu,
                *_family("container_memory_working_set_bytes", "gauge", _HELP_CONTAINER_MEMORY),
                *containers_memory,
                *_family("container_start_time_seconds", "gauge", _HELP_CONTAINER_START),
                *containers_start,
                *_family("node_cpu_usage_seconds_total", "counter", _HELP_NODE_CPU),
                f"node_cpu_usage_seconds_total {_float(node_cpu)}{stamp}",
                *_family("node_memory_working_set_bytes", "gauge", _HELP_NODE_MEMORY),
                f"node_memory_working_set_bytes {_float(node_memory)}{stamp}",
                *_family("pod_cpu_usage_seconds_total", "counter", _HELP_POD_CPU),
                *pods_cpu,
                *_family("pod_memory_working_set_bytes", "gauge", _HELP_POD_MEMORY),
                *pods_memory,
                *_family("scrape_error", "gauge", _HELP_SCRAPE_ERROR),
                "scrape_error 0",
                "",
            ]
        )

    def cadvisor(self, node: NodeInfo, pods: Sequence[PodInfo], now: datetime) -> str:
        """cAdvisor's two most-read series (cpu counter, working set), per container."""
        ms = str(int(now.timestamp() * 1000))
        cpu_lines, memory_lines = [], []
        for pod in pods:
            memory = dict(container_usage(pod, "memory", now))
            for name, usage in container_usage(pod, "cpu", now):
                labels = _labels(
                    container=name,
                    id=f"/kubepods/pod{pod.uid}/{name}",
                    image="",
                    name=name,
                    namespace=pod.namespace,
                    pod=pod.name,
                )
                cpu_lines.append(
                    f"container_cpu_usage_seconds_total{labels} {_float(usage.total)} {ms}"
                )
                memory_lines.append(
                    f"container_memory_working_set_bytes{labels} {_float(memory[name].now)} {ms}"
                )
        return (
            "\n".join(
                [
                    "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
                    "# TYPE container_cpu_usage_seconds_total counter",
                    *cpu_lines,
                    "# HELP container_memory_working_set_bytes Current working set in bytes.",
                    "# TYPE container_memory_working_set_bytes gauge",
                    *memory_lines,
                ]
            )
            + "\n"
        )
