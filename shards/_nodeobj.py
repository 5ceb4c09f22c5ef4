"""The Node and Lease objects a fake kubelet writes, shaped as a real kubelet's.

From a resolved :class:`KubeletSpec` (the engine maps a Node CR onto it) this
module builds, with no I/O:

- :func:`node_body`: the ``v1.Node`` POSTed at registration. Labels as the
  recorded kubelet sets them (``kubernetes.io/hostname``, ``kubernetes.io/os``,
  ``kubernetes.io/arch`` and the ``beta.kubernetes.io/*`` pair), then
  ``type=kubemock``, then the CR's labels; ``spec.providerID``, taints and, when
  the CR gives one, ``podCIDR(s)``; a complete status. Unlike the recorded
  kubelet (Ready=False ``CSINode is not yet initialized`` for its first ~10 s)
  the node registers Ready at once: a fake has nothing to wait for, and 10,000
  nodes save 10,000 status PATCHes.
- :func:`node_status`: the status the kubelet wants on each report, built on
  the one the apiserver holds: conditions MemoryPressure, DiskPressure,
  PIDPressure, Ready with fresh heartbeats and transition times kept while the
  status holds; conditions of other writers (node-problem-detector, CNI) left
  alone. NetworkUnavailable is not a kubelet condition (the recorded kubelet
  never reports it; a CNI plugin or the cloud route controller sets it, and
  the scheduler only cares when it is True), so it is written only when
  ``KubeletSpec.network_unavailable_condition`` asks for it, as False with the
  route controller's wording, as kube-mock did.
- :func:`node_status_patch`: the kubelet's strategic-merge status PATCH (two-way
  diff with ``$setElementOrder/conditions``), and
  :func:`status_changed`: whether anything but heartbeats changed, for the
  kubelet's "PATCH on change, or every nodeStatusReportFrequency (5 min)".
- :func:`lease_body` / :func:`renew_lease`: the node Lease in kube-node-lease
  (holder = node name, 40 s, renewTime a MicroTime with six fractional digits,
  ownerReference to the Node with its uid) and the renewal PUT body. Leases are
  the hot path (one PUT per node every 10 s), so they are msgspec Structs with
  one reused encoder and decoder; the PUT carries the Lease as the last write
  returned it (resourceVersion included), less managedFields, which an update
  that omits them leaves as they are. :func:`trim_lease` gives the form a
  shard keeps between renewals: that Lease as JSON bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import msgspec

from fleet.machinery import format_micro_time, format_time, two_way_merge_patch
from shards._podstatus import JSON

__all__ = [
    "DEFAULT_CONTAINER_RUNTIME_VERSION",
    "DEFAULT_KUBELET_VERSION",
    "KUBELET_NODE_CONDITIONS",
    "LEASE_DURATION_SECONDS",
    "LEASE_NAMESPACE",
    "KubeletSpec",
    "Lease",
    "LeaseMeta",
    "LeaseSpec",
    "OwnerReference",
    "Taint",
    "decode_lease",
    "encode_lease",
    "lease_as_json",
    "lease_body",
    "node_body",
    "node_labels",
    "node_status",
    "node_status_patch",
    "renew_lease",
    "reported_conditions",
    "status_changed",
    "trim_lease",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


def _empty() -> Mapping[str, str]:
    return _EMPTY


DEFAULT_KUBELET_VERSION = "v1.30.0"
"""Reported only where the apiserver's ``/version`` could not be read (a shard reports the
apiserver's own by default), and a CR names no ``kubeletVersion``."""
DEFAULT_CONTAINER_RUNTIME_VERSION = "containerd://1.7.13"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
"""The kubelet default ``nodeLeaseDurationSeconds``; renewals every 40 * 0.25 = 10 s."""

KUBELET_NODE_CONDITIONS = ("MemoryPressure", "DiskPressure", "PIDPressure", "Ready")

_NETWORK_UNAVAILABLE = ("False", "RouteCreated", "RouteController created a route")

# type -> (status, reason, message): the kubelet's healthy wording (kubelet-requests.md).
_HEALTHY: Mapping[str, tuple[str, str, str]] = MappingProxyType(
    {
        "MemoryPressure": (
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        "DiskPressure": ("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        "PIDPressure": ("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        "Ready": ("True", "KubeletReady", "kubelet is posting ready status"),
    }
)


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    effect: str
    """``NoSchedule``, ``PreferNoSchedule`` or ``NoExecute``."""
    value: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


@dataclass(frozen=True, slots=True)
class KubeletSpec:
    """Everything a fake kubelet registers, resolved (quantities as strings, IPs chosen)."""

    name: str
    internal_ips: tuple[str, ...]
    """The node's InternalIP(s), one per family, primary first."""
    capacity: Mapping[str, str]
    """``cpu``, ``memory``, ``pods``, ``ephemeral-storage``, extended resources..."""
    allocatable: Mapping[str, str] | None = None
    """None: equal to ``capacity``."""
    labels: Mapping[str, str] = field(default_factory=_empty)
    annotations: Mapping[str, str] = field(default_factory=_empty)
    taints: tuple[Taint, ...] = ()
    port: int = 10250
    """``status.daemonEndpoints.kubeletEndpoint.Port``."""
    pod_cidrs: tuple[str, ...] = ()
    """Written to ``spec.podCIDR(s)`` when set; else the controller-manager allocates."""
    provider_id: str | None = None
    """None: ``kubemock://<name>``. Cloud node controllers delete nodes without one."""
    kubelet_version: str = DEFAULT_KUBELET_VERSION
    kube_proxy_version: str | None = None
    """None: same as ``kubelet_version``."""
    os: str = "linux"
    arch: str = "amd64"
    container_runtime_version: str = DEFAULT_CONTAINER_RUNTIME_VERSION
    kernel_version: str = "6.1.0-kubemock"
    os_image: str = "kubemock-fleet"
    machine_id: str = ""
    system_uuid: str = ""
    boot_id: str = ""
    network_unavailable_condition: bool = False
    """Also report NetworkUnavailable=False (RouteCreated), as kube-mock did."""
    conditions: tuple[tuple[str, str, str, str], ...] = ()
    """(type, status, reason, message) reported instead of the healthy wording (a node
    script, ``shards._nodescripts``); a type the kubelet does not report is added."""

    @property
    def resolved_provider_id(self) -> str:
        return self.provider_id if self.provider_id is not None else f"kubemock://{self.name}"


def node_labels(spec: KubeletSpec) -> dict[str, str]:
    """The kubelet's default labels, then ``type=kubemock``, then the CR's (which win)."""
    labels = {
        "beta.kubernetes.io/arch": spec.arch,
        "beta.kubernetes.io/os": spec.os,
        "kubernetes.io/arch": spec.arch,
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": spec.os,
        "type": "kubemock",
    }
    labels.update(spec.labels)
    return labels


def _node_info(spec: KubeletSpec) -> dict[str, str]:
    return {
        "machineID": spec.machine_id,
        "systemUUID": spec.system_uuid,
        "bootID": spec.boot_id,
        "kernelVersion": spec.kernel_version,
        "osImage": spec.os_image,
        "containerRuntimeVersion": spec.container_runtime_version,
        "kubeletVersion": spec.kubelet_version,
        "kubeProxyVersion": spec.kube_proxy_version or spec.kubelet_version,
        "operatingSystem": spec.os,
        "architecture": spec.arch,
    }


def _addresses(spec: KubeletSpec) -> list[dict[str, str]]:
    out = [{"type": "InternalIP", "address": ip} for ip in spec.internal_ips]
    out.append({"type": "Hostname", "address": spec.name})
    return out


def reported_conditions(spec: KubeletSpec) -> Mapping[str, tuple[str, str, str]]:
    """The conditions the kubelet reports: type -> (status, reason, message), in order."""
    if spec.network_unavailable_condition:
        wanted: Mapping[str, tuple[str, str, str]] = {
            "NetworkUnavailable": _NETWORK_UNAVAILABLE,
            **_HEALTHY,
        }
    else:
        wanted = _HEALTHY
    if not spec.conditions:
        return wanted
    scripted = {
        kind: (status, reason, message) for kind, status, reason, message in spec.conditions
    }
    out = {kind: scripted.get(kind, value) for kind, value in wanted.items()}
    for kind, value in scripted.items():
        out.setdefault(kind, value)
    return out


def node_status(
    spec: KubeletSpec, now: datetime, current: Mapping[str, JSON] | None = None
) -> dict[str, JSON]:
    """The full node status the kubelet wants at ``now``, on top of ``current``.

    Every kubelet condition gets ``lastHeartbeatTime = now``; its
    ``lastTransitionTime`` is kept while its status holds. Conditions other
    writers own stay where they are; the kubelet's are updated in place or
    appended, as the kubelet's setters do. Keys the kubelet does not manage
    (``images``, ``volumesInUse``...) are carried over.
    """
    current = current or {}
    now_text = format_time(now)
    status: dict[str, JSON] = dict(current)
    status["capacity"] = dict(spec.capacity)
    status["allocatable"] = dict(
        spec.allocatable if spec.allocatable is not None else spec.capacity
    )

    wanted = reported_conditions(spec)
    conditions: list[JSON] = [
        dict(c) for c in current.get("conditions") or [] if isinstance(c, Mapping)
    ]
    index = {c.get("type"): i for i, c in enumerate(conditions)}
    for kind, (value, reason, message) in wanted.items():
        previous = conditions[index[kind]] if kind in index else None
        transition = (
            previous.get("lastTransitionTime")
            if previous is not None and previous.get("status") == value
            else None
        ) or now_text
        condition = {
            "type": kind,
            "status": value,
            "lastHeartbeatTime": now_text,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        }
        if kind in index:
            conditions[index[kind]] = condition
        else:
            index[kind] = len(conditions)
            conditions.append(condition)
    status["conditions"] = conditions
    status["addresses"] = _addresses(spec)
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": spec.port}}
    status["nodeInfo"] = _node_info(spec)
    return status


def node_body(spec: KubeletSpec, now: datetime) -> dict[str, JSON]:
    """The ``v1.Node`` to POST to ``/api/v1/nodes`` at registration."""
    metadata: dict[str, JSON] = {"name": spec.name, "labels": node_labels(spec)}
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    node_spec: dict[str, JSON] = {}
    if spec.pod_cidrs:
        node_spec["podCIDR"] = spec.pod_cidrs[0]
        node_spec["podCIDRs"] = list(spec.pod_cidrs)
    node_spec["providerID"] = spec.resolved_provider_id
    if spec.taints:
        node_spec["taints"] = [taint.to_json() for taint in spec.taints]
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": node_spec,
        "status": node_status(spec, now),
    }


def _without_heartbeats(status: Mapping[str, JSON]) -> dict[str, JSON]:
    out = dict(status)
    conditions = out.get("conditions")
    if isinstance(conditions, list):
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastHeartbeatTime"}
            if isinstance(c, Mapping)
            else c
            for c in conditions
        ]
    return out


def status_changed(current: Mapping[str, JSON], desired: Mapping[str, JSON]) -> bool:
    """True if ``desired`` differs from ``current`` in anything but heartbeat times.

    The kubelet's ``nodeStatusHasChanged``: when False the report is due only
    every nodeStatusReportFrequency (5 min by default).
    """
    return _without_heartbeats(current) != _without_heartbeats(desired)


def node_status_patch(current: Mapping[str, JSON], desired: Mapping[str, JSON]) -> dict[str, JSON]:
    """The body of ``PATCH /api/v1/nodes/<name>/status`` (strategic merge), ``{}`` if equal.

    The kubelet sends the two-way patch between the Node it read and the one
    it wants, without a resourceVersion precondition; ``{}`` is what it sends
    on its first report when nothing differs.
    """
    diff = two_way_merge_patch(current, desired)
    return {"status": diff} if diff else {}


# --- Lease ---------------------------------------------------------------------------------


class OwnerReference(msgspec.Struct, omit_defaults=True):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    blockOwnerDeletion: bool | None = None


class LeaseMeta(msgspec.Struct, omit_defaults=True):
    name: str
    namespace: str
    uid: str = ""
    resourceVersion: str = ""
    creationTimestamp: str | None = None
    ownerReferences: list[OwnerReference] = []


class LeaseSpec(msgspec.Struct, omit_defaults=True):
    holderIdentity: str | None = None
    leaseDurationSeconds: int | None = None
    renewTime: str | None = None
    acquireTime: str | None = None
    leaseTransitions: int | None = None


class Lease(msgspec.Struct, omit_defaults=True):
    """A coordination.k8s.io/v1 Lease, only the fields a node Lease uses.

    ``kind`` and ``apiVersion`` have no defaults so that ``omit_defaults`` never drops them.
    """

    kind: str
    apiVersion: str
    metadata: LeaseMeta
    spec: LeaseSpec


_LEASE_ENCODER = msgspec.json.Encoder()
_LEASE_DECODER = msgspec.json.Decoder(Lease)


def lease_body(node_name: str, node_uid: str, now: datetime) -> Lease:
    """The Lease to POST to ``/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases``.

    The kubelet creates it only once it can read its Node, for the Node's uid.
    """
    return Lease(
        kind="Lease",
        apiVersion="coordination.k8s.io/v1",
        metadata=LeaseMeta(
            name=node_name,
            namespace=LEASE_NAMESPACE,
            ownerReferences=[
                OwnerReference(apiVersion="v1", kind="Node", name=node_name, uid=node_uid)
            ],
        ),
        spec=LeaseSpec(
            holderIdentity=node_name,
            leaseDurationSeconds=LEASE_DURATION_SECONDS,
            renewTime=format_micro_time(now),
        ),
    )


def renew_lease(lease: Lease, now: datetime, *, node_uid: str | None = None) -> Lease:
    """The PUT body renewing ``lease`` (as the last write returned it) at ``now``.

    Only renewTime changes, as with the kubelet; holder and duration are
    restored if someone changed them, and the owner reference is added when
    missing and the Node's uid is known.
    """
    owners = lease.metadata.ownerReferences
    if not owners and node_uid:
        owners = [
            OwnerReference(apiVersion="v1", kind="Node", name=lease.metadata.name, uid=node_uid)
        ]
    metadata = msgspec.structs.replace(lease.metadata, ownerReferences=owners)
    spec = msgspec.structs.replace(
        lease.spec,
        holderIdentity=lease.metadata.name,
        leaseDurationSeconds=LEASE_DURATION_SECONDS,
        renewTime=format_micro_time(now),
    )
    return Lease(metadata=metadata, spec=spec, kind=lease.kind, apiVersion=lease.apiVersion)


def encode_lease(lease: Lease) -> bytes:
    """JSON bytes of a Lease body (one reused encoder; kind/apiVersion always present)."""
    return _LEASE_ENCODER.encode(lease)


def decode_lease(data: bytes) -> Lease:
    """Decode a Lease the apiserver returned, ignoring managedFields and the rest."""
    return _LEASE_DECODER.decode(data)


def trim_lease(data: bytes) -> bytes:
    """A Lease the apiserver returned, as the JSON of just what a renewal carries.

    What a shard keeps per node between renewals: one bytes object of ~0.4 KiB,
    where the decoded :class:`Lease` is ~18 objects and ~1.1 KiB (11 MB over
    10,000 nodes); decoding it again for each renewal costs a few microseconds.
    """
    return _LEASE_ENCODER.encode(_LEASE_DECODER.decode(data))


def lease_as_json(lease: Lease) -> dict[str, Any]:
    """The Lease as plain JSON data (for tests and logs)."""
    result: dict[str, Any] = msgspec.json.decode(encode_lease(lease))
    return result
