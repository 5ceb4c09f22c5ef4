"""The kubelet API a shard serves for its nodes (``kubectl logs``, ``nodes/proxy``, stats).

Private to ``shards`` (the engine wires it); the modules, one job each:
``_settings`` (the frozen settings), ``_http`` (HTTP/1.1 over TLS, framed by hand on trio),
``_server`` (routing), ``_auth`` (authentication and authorization), ``_logs`` (container logs), ``_usage`` and
``_stats`` (resource usage and the stats endpoints), ``_exec`` (exec and attach over
WebSocket or SPDY), ``_commands`` (what a command answers), ``_spdy`` (SPDY/3.1 framing),
``_portforward`` (responders on forwarded ports), ``_addresses`` (each node its own
loopback address), ``_view`` (what the server reads of the shard). docs/kubelet-api.md says what is served.
"""

from __future__ import annotations

import dataclasses

from shards._kubeletapi._auth import WebhookAuth as WebhookAuth
from shards._kubeletapi._logs import ANNOTATION_LOG_INTERVAL as ANNOTATION_LOG_INTERVAL
from shards._kubeletapi._logs import ANNOTATION_LOGS as ANNOTATION_LOGS
from shards._kubeletapi._server import KubeletEndpoint as KubeletEndpoint
from shards._kubeletapi._server import KubeletServer as KubeletServer
from shards._kubeletapi._settings import KubeletApiSettings as KubeletApiSettings
from shards._kubeletapi._settings import kubelet_api_settings as kubelet_api_settings
from shards._kubeletapi._view import ContainerInfo as ContainerInfo
from shards._kubeletapi._view import ContainerRuns as ContainerRuns
from shards._kubeletapi._view import NodeInfo as NodeInfo
from shards._kubeletapi._view import PodInfo as PodInfo
from shards._kubeletapi._view import ShardView as ShardView
from shards._nodeobj import KubeletSpec

KUBELET_ANNOTATION_PREFIXES = (
    "fleet.mock.zhizuqiu.cn/log",
    "fleet.mock.zhizuqiu.cn/usage-",
    "fleet.mock.zhizuqiu.cn/exec",
    "fleet.mock.zhizuqiu.cn/port.",
)
"""Pod annotations the kubelet API reads (the pod driver keeps them with the lifecycle ones)."""
METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"
"""On a Node: the path of its ``/metrics/resource`` at its kubelet endpoint (KWOK's
convention, which metrics-server follows): ``/nodes/<node>/metrics/resource`` here, since
every node of a shard shares one address and port."""

__all__ = [
    "ANNOTATION_LOGS",
    "ANNOTATION_LOG_INTERVAL",
    "KUBELET_ANNOTATION_PREFIXES",
    "METRICS_PATH_ANNOTATION",
    "ContainerInfo",
    "ContainerRuns",
    "KubeletApiSettings",
    "KubeletEndpoint",
    "KubeletServer",
    "NodeInfo",
    "PodInfo",
    "ShardView",
    "WebhookAuth",
    "kubelet_api_settings",
    "served_spec",
]


def served_spec(spec: KubeletSpec, endpoint: KubeletEndpoint) -> KubeletSpec:
    """``spec`` with the shard's kubelet endpoint: its port, and the metrics path annotation."""
    return dataclasses.replace(
        spec,
        port=endpoint.port,
        annotations={
            **spec.annotations,
            METRICS_PATH_ANNOTATION: f"/nodes/{spec.name}/metrics/resource",
        },
    )
