"""``metrics.k8s.io/v1beta1`` objects from kubelets' Summary API, as metrics-server makes them.

Shared by the two places that serve the group without a metrics-server: the sandbox (its
own API) and ``fleet.metricsapi`` (an aggregated API server beside a real kube-apiserver).
Each knows its Nodes and Pods its own way; what they share is here: asking the nodes'
kubelets for ``/nodes/{node}/stats/summary`` (the fleet's per-node form of the kubelet's
``/stats/summary``; ``usageNanoCores`` is the usage now, no second scrape for a rate), at
most ``FETCHES_IN_FLIGHT`` at once, and turning the answers into ``NodeMetrics`` and
``PodMetrics``. Nodes whose kubelet does not answer are left out, as metrics-server leaves
out nodes it could not scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import trio

__all__ = [
    "METRICS_GROUP",
    "METRICS_VERSION",
    "fetch_summaries",
    "metrics_list",
    "node_metrics",
    "pod_metrics",
]

log = logging.getLogger("fleet.kube")

METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"
FETCHES_IN_FLIGHT = 16
"""Kubelets asked at once for one request (``kubectl top`` on a fleet of tens of nodes)."""
FETCH_TIMEOUT = 10.0
"""Seconds a kubelet has to answer as a whole (metrics-server's default scrape timeout); one
that takes longer is left out, whatever its client's own timeouts (they bound each read,
not the answer)."""
WINDOW = "10s"
"""The ``window`` reported: metrics-server's with its default 15 s resolution rounds to it."""


def _cpu(stats: Mapping[str, Any]) -> str:
    return f"{int((stats.get('cpu') or {}).get('usageNanoCores') or 0)}n"


def _memory(stats: Mapping[str, Any]) -> str:
    return f"{int((stats.get('memory') or {}).get('workingSetBytes') or 0) // 1024}Ki"


def _time(stats: Mapping[str, Any]) -> str:
    return str((stats.get("cpu") or {}).get("time") or "")


async def fetch_summaries(
    client: httpx.AsyncClient, endpoints: Mapping[str, str], per_node: float = FETCH_TIMEOUT
) -> dict[str, dict[str, Any]]:
    """Each node's Summary, by name, from the kubelet at ``endpoints[node]`` (``host:port``),
    each within ``per_node`` seconds; ``client`` carries the kubelet client certificate."""
    out: dict[str, dict[str, Any]] = {}
    limiter = trio.CapacityLimiter(FETCHES_IN_FLIGHT)

    async def fetch(node: str, endpoint: str) -> None:
        async with limiter:
            with trio.move_on_after(per_node) as slow:
                try:
                    answer = await client.get(f"https://{endpoint}/nodes/{node}/stats/summary")
                    if answer.status_code == 200:
                        out[node] = answer.json()
                except (httpx.HTTPError, ValueError) as exc:
                    log.debug("metrics: node %s: %s", node, exc)
            if slow.cancelled_caught:
                log.debug("metrics: node %s: no answer within %g s", node, per_node)

    async with trio.open_nursery() as nursery:
        for node, endpoint in endpoints.items():
            nursery.start_soon(fetch, node, endpoint)
    return out


def node_metrics(
    name: str, labels: Mapping[str, str], summary: Mapping[str, Any], created: str
) -> dict[str, Any]:
    """One ``NodeMetrics`` item (no kind: a list's item) from the node's Summary;
    ``created`` is the time of the answer (metrics-server's ``creationTimestamp``: the object
    is made for the request)."""
    stats = summary.get("node") or {}
    return {
        "metadata": {"name": name, "creationTimestamp": created, "labels": dict(labels)},
        "timestamp": _time(stats),
        "window": WINDOW,
        "usage": {"cpu": _cpu(stats), "memory": _memory(stats)},
    }


def pod_metrics(
    summaries: Mapping[str, Mapping[str, Any]],
    wanted: Mapping[tuple[str, str], Mapping[str, Any]],
    created: str,
) -> list[dict[str, Any]]:
    """``PodMetrics`` items of the pods in ``wanted`` (``(namespace, name)`` -> the Pod) found
    in ``summaries``, sorted by namespace and name; ``created`` as for :func:`node_metrics`."""
    items: list[dict[str, Any]] = []
    for summary in summaries.values():
        for stats in summary.get("pods") or []:
            ref = stats.get("podRef") or {}
            key = (ref.get("namespace", ""), ref.get("name", ""))
            pod = wanted.get(key)
            if pod is None:
                continue
            meta = pod.get("metadata") or {}
            items.append(
                {
                    "metadata": {
                        "name": key[1],
                        "namespace": key[0],
                        "creationTimestamp": created,
                        "labels": meta.get("labels") or {},
                    },
                    "timestamp": _time(stats),
                    "window": WINDOW,
                    "containers": [
                        {"name": c.get("name", ""), "usage": {"cpu": _cpu(c), "memory": _memory(c)}}
                        for c in stats.get("containers") or []
                    ],
                }
            )
    items.sort(key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
    return items


def metrics_list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """``NodeMetricsList`` or ``PodMetricsList`` (``kind``) of ``items``."""
    return {
        "kind": kind,
        "apiVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
        "metadata": {},
        "items": items,
    }
