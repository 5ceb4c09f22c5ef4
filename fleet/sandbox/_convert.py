"""Conversion between the versions of a built-in kind that one group serves.

A group serving a kind at more than one version keeps one object, at the storage version
(the group's preferred one), and shows it at the version each request names, as
kube-apiserver converts through its internal type. Two kinds differ in shape between the
versions the sandbox serves (k8s.io/kubernetes ``pkg/apis/autoscaling/v1/conversion.go``,
``pkg/apis/flowcontrol/v1beta2/conversion.go``):

- HorizontalPodAutoscaler autoscaling/v1 <-> v2: ``targetCPUUtilizationPercentage`` is the
  CPU ``Utilization`` Resource metric, ``currentCPUUtilizationPercentage`` its current value;
  what v1 cannot say (other metrics, ``behavior``, status conditions and other current
  metrics) travels in the ``autoscaling.alpha.kubernetes.io/{metrics,behavior,conditions,
  current-metrics}`` annotations, JSON of the v2 form, so a v1 read-modify-write keeps it;
- PriorityLevelConfiguration flowcontrol v1beta2 <-> v1beta3: ``assuredConcurrencyShares``
  is ``nominalConcurrencyShares``.

Every other kind is the same object with another ``apiVersion``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fleet.sandbox._store import clone

__all__ = ["Converter", "converter"]

Convert = Callable[[dict[str, Any]], dict[str, Any]]

_A = "autoscaling.alpha.kubernetes.io/"
METRICS, BEHAVIOR, CONDITIONS, CURRENT = (
    _A + "metrics",
    _A + "behavior",
    _A + "conditions",
    _A + "current-metrics",
)


def _is_cpu_utilization(metric: dict[str, Any]) -> bool:
    resource = metric.get("resource") or {}
    return (
        metric.get("type") == "Resource"
        and resource.get("name") == "cpu"
        and (resource.get("target") or {}).get("type") == "Utilization"
    )


def _put_json(annotations: dict[str, Any], key: str, value: Any) -> None:
    if value:
        annotations[key] = json.dumps(value, separators=(",", ":"))


def _take_json(annotations: dict[str, Any], key: str) -> Any:
    text = annotations.pop(key, None)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def hpa_to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = clone(obj)
    spec, status = out.get("spec") or {}, out.get("status")
    annotations = dict(out["metadata"].get("annotations") or {})
    metrics = spec.pop("metrics", None) or []
    cpu = [m for m in metrics if _is_cpu_utilization(m)]
    if cpu:
        spec["targetCPUUtilizationPercentage"] = cpu[0]["resource"]["target"].get(
            "averageUtilization"
        )
    _put_json(annotations, METRICS, [m for m in metrics if not _is_cpu_utilization(m)])
    _put_json(annotations, BEHAVIOR, spec.pop("behavior", None))
    if status is not None:
        current = status.pop("currentMetrics", None) or []
        cpu_now = [m for m in current if (m.get("resource") or {}).get("name") == "cpu"]
        if cpu_now:
            value = (cpu_now[0]["resource"].get("current") or {}).get("averageUtilization")
            if value is not None:
                status["currentCPUUtilizationPercentage"] = value
        _put_json(annotations, CURRENT, [m for m in current if m not in cpu_now])
        _put_json(annotations, CONDITIONS, status.pop("conditions", None))
    if annotations:
        out["metadata"]["annotations"] = annotations
    return out


def hpa_to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = clone(obj)
    spec = out.setdefault("spec", {})
    annotations = dict(out.setdefault("metadata", {}).get("annotations") or {})
    metrics = _take_json(annotations, METRICS) or []
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        cpu = {"type": "Utilization", "averageUtilization": target}
        metrics.insert(0, {"type": "Resource", "resource": {"name": "cpu", "target": cpu}})
    if metrics:
        spec["metrics"] = metrics
    behavior = _take_json(annotations, BEHAVIOR)
    if behavior:
        spec["behavior"] = behavior
    status = out.get("status")
    current = _take_json(annotations, CURRENT) or []
    conditions = _take_json(annotations, CONDITIONS)
    if status is not None:
        now = status.pop("currentCPUUtilizationPercentage", None)
        if now is not None:
            cpu_now = {"averageUtilization": now}
            current.insert(0, {"type": "Resource", "resource": {"name": "cpu", "current": cpu_now}})
        if current:
            status["currentMetrics"] = current
        if conditions:
            status["conditions"] = conditions
    if annotations:
        out["metadata"]["annotations"] = annotations
    else:
        out["metadata"].pop("annotations", None)
    return out


def _rename_shares(old: str, new: str) -> Convert:
    def convert(obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = clone(obj)
        limited = (out.get("spec") or {}).get("limited")
        if isinstance(limited, dict) and old in limited:
            limited[new] = limited.pop(old)
        return out

    return convert


class Converter:
    """To the storage version and back, for one served version of one kind."""

    def __init__(self, api_version: str, to_storage: Convert, from_storage: Convert) -> None:
        self.api_version = api_version
        self._to_storage = to_storage
        self._from_storage = from_storage

    def to_storage(self, obj: dict[str, Any], storage_api_version: str) -> dict[str, Any]:
        out = self._to_storage(obj)
        out["apiVersion"] = storage_api_version
        return out

    def from_storage(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = self._from_storage(obj)
        out["apiVersion"] = self.api_version
        return out


def _same(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = clone(obj)
    return out


_SHAPES: dict[tuple[str, str, str], tuple[Convert, Convert]] = {
    ("autoscaling", "horizontalpodautoscalers", "v1"): (hpa_to_v2, hpa_to_v1),
    ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations", "v1beta2"): (
        _rename_shares("assuredConcurrencyShares", "nominalConcurrencyShares"),
        _rename_shares("nominalConcurrencyShares", "assuredConcurrencyShares"),
    ),
}


def converter(group: str, plural: str, version: str, api_version: str) -> Converter:
    """The converter of a served version that is not the storage version."""
    to_storage, from_storage = _SHAPES.get((group, plural, version), (_same, _same))
    return Converter(api_version, to_storage, from_storage)
