"""The shard process: thousands of fake kubelets and their pods in one trio process.

The public surface is :func:`serve_shard` (``_serve``: the shard process's
composition root, which the ``shard`` command and ``up`` both call),
:class:`ShardEngine` (run one shard against an
apiserver, given its settings and a Requester or two) and the pieces other
packages and tests name; everything else lives in the ``_``-prefixed modules:
``_engine`` (the tasks), ``_kubelets`` (Nodes, node status, CR status),
``_nodelease`` (node Leases; ``_leaselane`` sends their renewals),
``_nodescripts`` (NodeScripts: which nodes follow which, and what they do when),
``_scripts`` (MockStatuses; both on ``_library``, the watched library they share),
``_pods`` (pod lifecycle), ``_shardlease`` (the shard's Lease and the fence),
``_cr`` (Node CR -> kubelet), ``_kubeletapi`` (the kubelet API: logs, stats), and the pure parts ``_plan``, ``_podstatus``,
``_nodeobj``, ``_ipam``, ``_timers``.
"""

from shards._context import Fenced as Fenced
from shards._engine import TIMER_WORKERS as TIMER_WORKERS
from shards._engine import ShardEngine as ShardEngine
from shards._kubeletapi import KubeletApiSettings as KubeletApiSettings
from shards._kubeletapi import kubelet_api_settings as kubelet_api_settings
from shards._nodescripts import ANNOTATION_NODE_SCRIPT as ANNOTATION_NODE_SCRIPT
from shards._nodescripts import INVALID_NODE_SCRIPT as INVALID_NODE_SCRIPT
from shards._nodescripts import NodeOverlay as NodeOverlay
from shards._nodescripts import NodeTimeline as NodeTimeline
from shards._nodescripts import compile_node_script as compile_node_script
from shards._serve import serve_shard as serve_shard
from shards._serve import shard_metrics_port as shard_metrics_port
from shards._shardlease import ShardLease as ShardLease

__all__ = [
    "ANNOTATION_NODE_SCRIPT",
    "INVALID_NODE_SCRIPT",
    "TIMER_WORKERS",
    "Fenced",
    "KubeletApiSettings",
    "NodeOverlay",
    "NodeTimeline",
    "ShardEngine",
    "ShardLease",
    "compile_node_script",
    "kubelet_api_settings",
    "serve_shard",
    "shard_metrics_port",
]
