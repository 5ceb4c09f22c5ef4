"""The wire contract between the coordinator, the shards, ``up`` and the bench.

The processes never talk to each other: they meet on the apiserver, through
the names below (docs/architecture.md, "Conventions on the wire", draws the
table). Each is defined here once, so the writer and the reader of a label or
a Lease cannot drift apart. Layer 0, beside ``fleet.errors``: it imports
nothing of the project.
"""

from __future__ import annotations

__all__ = [
    "API_VERSION",
    "COORDINATOR_LEASE",
    "FINALIZER",
    "FLEET_NAMESPACE",
    "GROUP",
    "HANDOVER_ANNOTATION",
    "HANDOVER_FIELD_MANAGER",
    "MOCKSTATUS_PLURAL",
    "NODESCRIPT_PLURAL",
    "NODE_CR_ANNOTATION",
    "NODE_PLURAL",
    "RELEASED_ANNOTATION",
    "SHARD_LABEL",
    "SHARD_LEASE_PREFIX",
    "VERSION",
    "shard_field_manager",
    "shard_host",
    "shard_lease_name",
]

FLEET_NAMESPACE = "kube-mock-system"
"""Home of the shard and coordinator Leases, and the default namespace of Node CRs."""

GROUP = "mock.zhizuqiu.cn"
"""The API group of kube-mock's custom resources (Node, MockStatus)."""
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NODE_PLURAL = "nodes"
"""The Node CR's plural (``nodes.mock.zhizuqiu.cn``, not core ``nodes``)."""
MOCKSTATUS_PLURAL = "mockstatuses"
NODESCRIPT_PLURAL = "nodescripts"

SHARD_LABEL = "fleet.mock.zhizuqiu.cn/shard"
"""Label on a Node CR naming the shard that drives it (written by the coordinator only)."""
SHARD_LEASE_PREFIX = "kubemock-fleet-shard-"
"""Shard K holds the Lease ``kubemock-fleet-shard-<K>`` in the fleet namespace."""
COORDINATOR_LEASE = "kubemock-fleet-coordinator"
"""The leader-election Lease of the coordinator replicas."""
FINALIZER = "mock.zhizuqiu.cn/node-cleanup"
"""On every Node CR a shard drives: the shard removes its Node and Lease before the CR goes."""
HANDOVER_ANNOTATION = "fleet.mock.zhizuqiu.cn/handover"
"""On a Node CR: the shard the coordinator is moving it to from the live shard its label
names (first phase of a handover, docs/architecture.md); the label stays until the labelled
shard answers with :data:`RELEASED_ANNOTATION`."""
RELEASED_ANNOTATION = "fleet.mock.zhizuqiu.cn/released"
"""On a Node CR: the shard that let go of it for a handover (written by that shard once
nothing of its for the node is in flight); the coordinator then writes the new label and
removes both annotations in one PATCH."""
HANDOVER_FIELD_MANAGER = "kubemock-fleet-handover"
"""The ``fieldManager`` of the coordinator's :data:`HANDOVER_ANNOTATION` writes (its label
writes name none): an audit log tells a handover begun from a label moved."""
NODE_CR_ANNOTATION = "fleet.mock.zhizuqiu.cn/node-cr"
"""On the v1.Node: ``<namespace>/<name>`` of the Node CR driving it."""
KUBELET_RESTART_ANNOTATION = "fleet.mock.zhizuqiu.cn/kubelet-restart"
"""On a Node CR: a new value restarts the node's kubelet (it re-registers, relists its pods,
rewrites its status); ``bench restart-storm`` writes it. Any value: only a change counts."""


def shard_lease_name(shard: str | int) -> str:
    """The name of shard ``shard``'s Lease (``kubemock-fleet-shard-<K>``)."""
    return f"{SHARD_LEASE_PREFIX}{shard}"


def shard_field_manager(shard: str | int) -> str:
    """The ``fieldManager`` of every write shard ``shard`` makes (same as its Lease name)."""
    return f"{SHARD_LEASE_PREFIX}{shard}"


def shard_host(shard: str | int) -> str:
    """``shard-<K>``: the first part of the shard's Lease holder identity and its Event source host."""
    return f"shard-{shard}"
