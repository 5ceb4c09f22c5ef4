"""Node CR -> fake kubelet: the mapping, the finalizer, and the CR's own status.

The shard reads its Node CRs (``mock.zhizuqiu.cn/v1alpha1``, kind ``Node``)
through a reflector into :class:`CrView` (metadata plus ``spec``/``status``
left as plain JSON, so a malformed CR never stops the watch), validates each
with :func:`fleet.api.load_node` at the edge, and maps the model onto a
:class:`~shards._nodeobj.KubeletSpec` with :func:`kubelet_spec`: the models'
defaults (cpu 20, memory 100Gi, pods 200, ephemeral-storage 100Gi), the
InternalIP the engine chose (``nodeConfig.address``, the existing Node's, or
one from the shard's range), the pod CIDRs, and the annotation
:data:`fleet.wire.NODE_CR_ANNOTATION` that names the CR on the v1.Node, so that two CRs
of one name in different namespaces, even on different shards, can tell that
the Node is not theirs. Equal capacity and label sets are one read-only
mapping shared by every node that has them.

:func:`cr_status` builds the CR status the shard writes (merge patch to
``/status``, only on change): shard id, node name, observedGeneration and the
conditions Registered and Ready (metav1.Condition, transition times kept
while a status holds). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

import msgspec

from fleet.api import MockNode, parse_go_duration
from fleet.kube import ObjectMeta, resource_path
from fleet.machinery import format_time
from fleet.wire import GROUP, NODE_CR_ANNOTATION, NODE_PLURAL, VERSION
from shards._nodeobj import DEFAULT_KUBELET_VERSION, KubeletSpec, Taint

__all__ = [
    "ConditionValue",
    "CrView",
    "cr_path",
    "cr_raw",
    "cr_status",
    "kubelet_spec",
    "status_differs",
    "status_interval",
]

SHARED_MAPPINGS = 4096
"""Distinct capacity/label sets :func:`kubelet_spec` shares before it starts afresh: far more
than the node templates of any fleet, and a bound on what a fleet of all-different nodes costs."""
_shared: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
_EMPTY: Mapping[str, str] = MappingProxyType({})


def _share(values: Mapping[str, str]) -> Mapping[str, str]:
    """One read-only mapping for every node with these values.

    The nodes of one template have equal capacity, allocatable and labels: one copy
    for all of them instead of ~0.7 KiB of dicts and quantity strings per node.
    """
    if not values:
        return _EMPTY
    key = tuple(values.items())
    shared = _shared.get(key)
    if shared is None:
        if len(_shared) >= SHARED_MAPPINGS:
            _shared.clear()
        shared = _shared[key] = MappingProxyType(dict(values))
    return shared


class CrView(msgspec.Struct, frozen=True):
    """A Node CR as the shard's reflector holds it; validated later, by the models."""

    metadata: ObjectMeta = ObjectMeta()
    spec: dict[str, Any] = {}
    status: dict[str, Any] = {}


def cr_path(namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    """Path of the Node CR collection (all namespaces when ``namespace`` is None) or one CR."""
    return resource_path(
        GROUP, VERSION, NODE_PLURAL, namespace=namespace, name=name, subresource=sub
    )


def cr_raw(view: CrView) -> dict[str, Any]:
    """The CR as the models read it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Node",
        "metadata": msgspec.to_builtins(view.metadata),
        "spec": view.spec,
    }


def status_interval(cr: MockNode, default: float) -> float:
    """Seconds between unchanged node status reports: the CR's statusUpdatesInterval or ``default``."""
    text = cr.spec.status_updates_interval
    if not text:
        return default
    seconds = parse_go_duration(text) / 1e9
    return seconds if seconds > 0 else default


def kubelet_spec(
    cr: MockNode,
    *,
    key: str,
    internal_ips: tuple[str, ...],
    pod_cidrs: tuple[str, ...],
    labels: Mapping[str, str] = _EMPTY,
    kubelet_version: str = DEFAULT_KUBELET_VERSION,
) -> KubeletSpec:
    """The fake kubelet a validated CR describes, with the addresses the engine chose.

    ``labels`` are the engine's own (the shard label), added over the CR's;
    ``kubelet_version`` is reported where the CR names none (the apiserver's version).
    """
    config = cr.spec.node_config
    capacity = _share({name: str(amount) for name, amount in config.capacity().items()})
    allocatable = (
        _share({name: str(amount) for name, amount in config.allocatable_resources().items()})
        if config.allocatable
        else None
    )
    namespace = cr.metadata.namespace or ""
    return KubeletSpec(
        name=cr.metadata.name,
        internal_ips=internal_ips,
        capacity=capacity,
        allocatable=allocatable,
        labels=_share({**config.labels, **labels} if labels else config.labels),
        annotations={**config.annotations, NODE_CR_ANNOTATION: key},
        taints=tuple(Taint(t.key, t.effect, t.value or "") for t in config.taints),
        port=config.port,
        pod_cidrs=pod_cidrs,
        provider_id=config.provider_id or f"kubemock://{namespace}/{cr.metadata.name}",
        kubelet_version=config.kubelet_version or kubelet_version,
        os=config.os,
        arch=config.arch,
        container_runtime_version=config.container_runtime_version,
        os_image=config.os_image or "kubemock-fleet",
        kernel_version=config.kernel_version or "6.1.0-kubemock",
    )


@dataclass(frozen=True, slots=True)
class ConditionValue:
    """What a condition says, without its time."""

    status: str
    reason: str
    message: str = ""


def cr_status(
    *,
    previous: Mapping[str, Any],
    shard: str,
    node_name: str,
    generation: int | None,
    registered: ConditionValue,
    ready: ConditionValue,
    now: datetime,
) -> dict[str, Any]:
    """The CR status the shard wants; transition times kept where the status holds."""
    old = {
        str(c.get("type")): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)
    }
    conditions = []
    for kind, value in (("Registered", registered), ("Ready", ready)):
        before = old.get(kind)
        kept = (
            before.get("lastTransitionTime")
            if before and before.get("status") == value.status
            else None
        )
        condition: dict[str, Any] = {
            "type": kind,
            "status": value.status,
            "reason": value.reason,
            "message": value.message,
            "lastTransitionTime": kept or format_time(now),
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        conditions.append(condition)
    status: dict[str, Any] = {"shard": shard, "nodeName": node_name, "conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = generation
    return status


def status_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True if writing ``desired`` would change ``current`` (times aside)."""

    def strip(status: Mapping[str, Any]) -> Any:
        return (
            status.get("shard"),
            status.get("nodeName"),
            status.get("observedGeneration"),
            [
                (c.get("type"), c.get("status"), c.get("reason"), c.get("message") or "")
                for c in status.get("conditions") or []
                if isinstance(c, Mapping)
            ],
        )

    return bool(strip(current) != strip(desired))
