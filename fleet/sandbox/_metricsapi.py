"""``metrics.k8s.io/v1beta1`` in the sandbox: what metrics-server would serve, from the kubelets.

metrics-server cannot run next to the sandbox (no API aggregation), so the sandbox answers
``NodeMetrics`` and ``PodMetrics`` itself and ``kubectl top nodes`` / ``kubectl top pods``
work on ``up``. Each request reads the Summary API (``/nodes/{node}/stats/summary``, the
fleet's per-node form; ``usageNanoCores`` is the usage now, no second scrape for a rate)
of the nodes it concerns, at most ``FETCHES_IN_FLIGHT`` at once, with the kubelet client
certificate of ``pods/log``. Nodes whose kubelet does not answer are left out, as
metrics-server leaves out nodes it could not scrape; a single one asked for is 404.

Lists take a ``labelSelector`` (``kubectl top pods -l app=web``), matched against the
Node's or Pod's labels as metrics-server does; only the matching nodes are scraped.
Not served: field selectors, watch, the ``window`` metrics-server derives from its scrape
interval (a fixed ``WINDOW``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import trio

from fleet.errors import InputError
from fleet.sandbox import _libs
from fleet.sandbox._kubeletproxy import CONNECT_TIMEOUT, KubeletClientCert, node_endpoint
from fleet.sandbox._registry import Registry, ResourceType
from fleet.sandbox._status import StatusError, bad_request
from fleet.sandbox._store import Store

__all__ = ["GROUP", "MetricsApi", "metrics_types"]

log = logging.getLogger("fleet.sandbox")

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
FETCHES_IN_FLIGHT = 16
"""Kubelets asked at once for one request (a sandbox runs tens of nodes, not thousands)."""
FETCH_TIMEOUT = 10.0
"""Seconds a kubelet may take to answer (metrics-server's own default scrape timeout)."""
WINDOW = "10s"
"""The ``window`` reported: metrics-server's with its default 15 s resolution rounds to it."""
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


def _cpu(stats: dict[str, Any]) -> str:
    return f"{int((stats.get('cpu') or {}).get('usageNanoCores') or 0)}n"


def _memory(stats: dict[str, Any]) -> str:
    return f"{int((stats.get('memory') or {}).get('workingSetBytes') or 0) // 1024}Ki"


def _time(stats: dict[str, Any]) -> str:
    return str((stats.get("cpu") or {}).get("time") or "")


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
        out: dict[str, dict[str, Any]] = {}
        limiter = trio.CapacityLimiter(FETCHES_IN_FLIGHT)
        timeout = httpx.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT)

        async with httpx.AsyncClient(verify=cert.context(), timeout=timeout) as client:

            async def fetch(node: str) -> None:
                async with limiter:
                    try:
                        endpoint = node_endpoint(self.store.get(_NODES, "", node), node)
                        answer = await client.get(f"https://{endpoint}/nodes/{node}/stats/summary")
                        if answer.status_code == 200:
                            out[node] = answer.json()
                    except (StatusError, httpx.HTTPError, ValueError) as exc:
                        log.debug("metrics: node %s: %s", node, exc)

            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(fetch, node)
        return out

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
        items = []
        for node in names:
            summary = summaries.get(node)
            if summary is None:
                continue
            stats = summary.get("node") or {}
            meta = (objects.get(("", node)) or {}).get("metadata") or {}
            items.append(
                {
                    "metadata": {
                        "name": node,
                        "creationTimestamp": _time(stats),
                        "labels": meta.get("labels") or {},
                    },
                    "timestamp": _time(stats),
                    "window": WINDOW,
                    "usage": {"cpu": _cpu(stats), "memory": _memory(stats)},
                }
            )
        if name is not None:
            if not items:
                raise _not_found("nodes", name)
            return {"kind": "NodeMetrics", "apiVersion": f"{GROUP}/{VERSION}", **items[0]}
        return {
            "kind": "NodeMetricsList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "items": items,
        }

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
        summaries = await self._summaries(cert, nodes)
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
                            "creationTimestamp": _time(stats),
                            "labels": meta.get("labels") or {},
                        },
                        "timestamp": _time(stats),
                        "window": WINDOW,
                        "containers": [
                            {
                                "name": c.get("name", ""),
                                "usage": {"cpu": _cpu(c), "memory": _memory(c)},
                            }
                            for c in stats.get("containers") or []
                        ],
                    }
                )
        items.sort(key=lambda i: (i["metadata"]["namespace"], i["metadata"]["name"]))
        if name is not None:
            if not items:
                raise _not_found("pods", name)
            return {"kind": "PodMetrics", "apiVersion": f"{GROUP}/{VERSION}", **items[0]}
        return {
            "kind": "PodMetricsList",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {},
            "items": items,
        }
