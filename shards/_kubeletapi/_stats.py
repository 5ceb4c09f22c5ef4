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
from shards._kubeletapi._usage import Usage, container_usage, node_base_usage, node_usage
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


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v}"'.replace("\\", "\\\\").replace("\n", "\\n") for k, v in labels.items()
    )
    return "{" + inner + "}"


def _float(value: float) -> str:
    return repr(float(value))


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
        ms = str(int(now.timestamp() * 1000))
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} [ALPHA] {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_float(value)} {ms}" for labels, value in samples)

        containers_cpu: list[tuple[str, float]] = []
        containers_memory: list[tuple[str, float]] = []
        containers_start: list[tuple[str, float]] = []
        pods_cpu: list[tuple[str, float]] = []
        pods_memory: list[tuple[str, float]] = []
        node_cpu = node_base_usage(node, "cpu", now).total
        node_memory = node_base_usage(node, "memory", now).now
        for pod in pods:
            cpu = container_usage(pod, "cpu", now)
            memory = container_usage(pod, "memory", now)
            if not cpu:
                continue
            for (name, c), (_, m) in zip(cpu, memory, strict=True):
                labels = _labels(container=name, namespace=pod.namespace, pod=pod.name)
                containers_cpu.append((labels, c.total))
                containers_memory.append((labels, m.now))
                containers_start.append((labels, pod.created.timestamp()))
            labels = _labels(namespace=pod.namespace, pod=pod.name)
            pod_cpu, pod_memory = _sum(cpu).total, _sum(memory).now
            pods_cpu.append((labels, pod_cpu))
            pods_memory.append((labels, pod_memory))
            node_cpu += pod_cpu
            node_memory += pod_memory
        family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the container in core-seconds",
            containers_cpu,
        )
        family(
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes",
            containers_memory,
        )
        family(
            "container_start_time_seconds",
            "gauge",
            "Start time of the container since unix epoch in seconds",
            containers_start,
        )
        family(
            "node_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the node in core-seconds",
            [("", node_cpu)],
        )
        family(
            "node_memory_working_set_bytes",
            "gauge",
            "Current working set of the node in bytes",
            [("", node_memory)],
        )
        family(
            "pod_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed by the pod in core-seconds",
            pods_cpu,
        )
        family(
            "pod_memory_working_set_bytes",
            "gauge",
            "Current working set of the pod in bytes",
            pods_memory,
        )
        lines.append(
            "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"
        )
        lines.append("# TYPE scrape_error gauge")
        lines.append("scrape_error 0")
        return "\n".join(lines) + "\n"

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
