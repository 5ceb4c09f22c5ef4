"""``metrics.k8s.io/v1beta1`` in the sandbox: what metrics-server would serve, from the kubelets.

metrics-server cannot run next to the sandbox (no API aggregation), so the sandbox answers
``NodeMetrics`` and ``PodMetrics`` itself and ``kubectl top nodes`` / ``kubectl top pods``
work on ``up``. Each request reads the Summary API (``/nodes/{node}/stats/summary``, the
fleet's per-node form; ``usageNanoCores`` is the usage now, no second scrape for a rate)
of the nodes it concerns, with the kubelet client certificate of ``pods/log``; the scrape and
the objects are ``fleet.kube``'s (shared with ``fleet.metricsapi``, the aggregated server
beside a real kube-apiserver). Nodes whose kubelet does not answer are left out, as
metrics-server leaves out nodes it could not scrape; a single one asked for is 404.

Lists take a ``labelSelector`` (``kubectl top pods -l app=web``), matched against the
Node's or Pod's labels as metrics-server does; only the matching nodes are scraped.
Not served: field selectors, watch, the ``window`` metrics-server derives from its scrape
interval (a fixed ``WINDOW``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from fleet.errors import InputError
from fleet.kube import (
    METRICS_GROUP,
    METRICS_VERSION,
    fetch_summaries,
    metrics_list,
    node_metrics,
    pod_metrics,
)
from fleet.machinery import format_time, utc_now
from fleet.sandbox import _libs
from fleet.sandbox._kubeletproxy import CONNECT_TIMEOUT, KubeletClientCert, node_endpoint
from fleet.sandbox._registry import Registry, ResourceType
from fleet.sandbox._status import StatusError, bad_request
from fleet.sandbox._store import Store

__all__ = ["GROUP", "MetricsApi", "metrics_types"]

GROUP = METRICS_GROUP
VERSION = METRICS_VERSION
FETCH_TIMEOUT = 10.0
"""Seconds a kubelet may take to answer (metrics-server's own default scrape timeout)."""
_NODES = ("", "nodes")
_PODS = ("", "pods")


def metrics_types() -> list[ResourceType]:
    """The two resources, for discovery (kubectl top checks the group is there)."""
    return [
        ResourceType(GROUP, VERSION, "nodes", "NodeMetrics", False, ("get", "list")),
        ResourceType(GROUP, VERSION, "pods", "PodMetrics", True, ("get", "list")),
    ]


def _not_found(kind: str, name: str) -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'{kind}.{GROUP} "{name}" not found',
        {"name": name, "group": GROUP, "kind": kind},
    )


class MetricsApi:
    """Answers ``metrics.k8s.io`` requests from the nodes' kubelets."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    async def serve(
        self,
        cert: KubeletClientCert | None,
        plural: str,
        namespace: str | None,
        name: str | None,
        label_selector: str = "",
    ) -> dict[str, Any]:
        if cert is None:
            raise StatusError(503, "ServiceUnavailable", "no kubelet client certificate")
        try:
            selector = (
                _libs.parse_label_selector(label_selector) if label_selector.strip() else None
            )
        except InputError as exc:
            raise bad_request(str(exc)) from exc

        def selected(obj: dict[str, Any] | None) -> bool:
            labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
            return selector is None or selector.matches(labels)

        if plural == "nodes":
            return await self._nodes(cert, name, selected)
        return await self._pods(cert, namespace, name, selected)

    async def _summaries(
        self, cert: KubeletClientCert, nodes: list[str]
    ) -> dict[str, dict[str, Any]]:
        endpoints: dict[str, str] = {}
        for node in nodes:
            try:
                endpoints[node] = node_endpoint(self.store.get(_NODES, "", node), node)
            except StatusError:  # no such node, or no address: not scraped
                continue
        timeout = httpx.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)
        async with httpx.AsyncClient(verify=cert.context(), timeout=timeout) as client:
            return await fetch_summaries(client, endpoints)

    async def _nodes(
        self, cert: KubeletClientCert, name: str | None, selected: Callable[[Any], bool]
    ) -> dict[str, Any]:
        objects = self.store.collection(_NODES).objects
        names = (
            [name]
            if name is not None
            else sorted(n for (_, n), node in objects.items() if selected(node))
        )
        if name is not None and ("", name) not in objects:
            raise _not_found("nodes", name)
        summaries = await self._summaries(cert, names)
        created = format_time(utc_now())
        items = [
            node_metrics(
                node,
                ((objects.get(("", node)) or {}).get("metadata") or {}).get("labels") or {},
                summaries[node],
                created,
            )
            for node in names
            if node in summaries
        ]
        if name is not None:
            if not items:
                raise _not_found("nodes", name)
            return {"kind": "NodeMetrics", "apiVersion": f"{GROUP}/{VERSION}", **items[0]}
        return metrics_list("NodeMetricsList", items)

    async def _pods(
        self,
        cert: KubeletClientCert,
        namespace: str | None,
        name: str | None,
        selected: Callable[[Any], bool],
    ) -> dict[str, Any]:
        objects = self.store.collection(_PODS).objects
        wanted: dict[tuple[str, str], dict[str, Any]] = {
            key: pod
            for key, pod in objects.items()
            if (namespace is None or key[0] == namespace)
            and (name is None or key[1] == name)
            and (name is not None or selected(pod))
        }
        if name is not None and not wanted:
            raise _not_found("pods", name)
        nodes = sorted(
            {str((p.get("spec") or {}).get("nodeName")) for p in wanted.values()} - {"None", ""}
        )
        items = pod_metrics(await self._summaries(cert, nodes), wanted, format_time(utc_now()))
        if name is not None:
            if not items:
                raise _not_found("pods", name)
            return {"kind": "PodMetrics", "apiVersion": f"{GROUP}/{VERSION}", **items[0]}
        return metrics_list("PodMetricsList", items)
