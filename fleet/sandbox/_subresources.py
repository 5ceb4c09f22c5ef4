"""Subresources other than status: pods/binding, pods/eviction, */scale.

Binding is what a scheduler POSTs to place a pod; eviction is a graceful
delete (no PodDisruptionBudgets here); scale reads and writes
``spec.replicas`` through an ``autoscaling/v1`` Scale.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fleet.machinery import MERGE_PATCH, STRATEGIC_MERGE_PATCH
from fleet.sandbox._api import Api, Call, decode_body
from fleet.sandbox._deletion import Deleter
from fleet.sandbox._objects import rfc3339
from fleet.sandbox._patching import apply_patch
from fleet.sandbox._status import StatusError, conflict, stale, success
from fleet.sandbox._store import clone

_SCALE_SELECTOR_KINDS = {"Deployment", "ReplicaSet", "StatefulSet"}


def bind(api: Api, call: Call, pod_name: str) -> dict[str, Any]:
    """POST pods/{name}/binding (or namespaces/{ns}/bindings)."""
    rt = api.registry.get("", "v1", "pods")
    assert rt is not None
    body = decode_body(call.rt, call.body, call.content_type)
    target = (body.get("target") or {}).get("name")
    if not target:
        raise StatusError(
            422,
            "Invalid",
            f'Binding "{pod_name}" is invalid: target.name: Required value',
            {
                "name": pod_name,
                "kind": "Binding",
                "causes": [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value",
                        "field": "target.name",
                    }
                ],
            },
        )
    pod = api.lookup(rt, call.ns(), pod_name)
    if pod["metadata"].get("deletionTimestamp"):
        raise conflict(
            "pods/binding",
            "",
            pod_name,
            f"pod {pod_name} is being deleted, cannot be assigned to a host",
        )
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        raise conflict(
            "pods/binding", "", pod_name, f'pod {pod_name} is already assigned to node "{node}"'
        )
    new = clone(pod)
    new["spec"]["nodeName"] = target
    conds = [
        c
        for c in (new.setdefault("status", {}).get("conditions") or [])
        if c.get("type") != "PodScheduled"
    ]
    conds.append(
        {
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(api.now()),
        }
    )
    new["status"]["conditions"] = conds
    if not call.dry_run:
        api.store.commit(rt.key, "MODIFIED", new, pod)
    return success(201)


def evict(api: Api, deleter: Deleter, call: Call) -> dict[str, Any]:
    """POST pods/{name}/eviction: a delete with the eviction's DeleteOptions."""
    body = decode_body(call.rt, call.body, call.content_type) if call.body.strip() else {}
    opts = body.get("deleteOptions") or {}
    dcall = Call(
        rt=call.rt,
        namespace=call.namespace,
        name=call.name,
        query={},
        body=msgspec.json.encode(opts),
    )
    deleter.delete(dcall)
    return success(201)


def _scale_of(rt_kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    out_status: dict[str, Any] = {"replicas": status.get("replicas", 0)}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if sel and rt_kind in _SCALE_SELECTOR_KINDS:
        out_status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": spec.get("replicas", 0)},
        "status": out_status,
    }


def get_scale(api: Api, call: Call) -> dict[str, Any]:
    assert call.name is not None
    return _scale_of(call.rt.kind, api.lookup(call.rt, call.ns(), call.name))


def write_scale(api: Api, call: Call, method: str) -> dict[str, Any]:
    """PUT or PATCH of */scale: only spec.replicas reaches the object."""
    assert call.name is not None
    rt = call.rt
    obj = api.lookup(rt, call.ns(), call.name)
    current = _scale_of(rt.kind, obj)
    if method == "PUT":
        new_scale = decode_body(rt, call.body, call.content_type)
    else:
        # the patch applies to the Scale; a strategic merge of a Scale is a plain merge
        ct = call.content_type
        if ct == STRATEGIC_MERGE_PATCH:
            ct = MERGE_PATCH
        new_scale = apply_patch(rt, clone(current), call.body, ct)
    rv = (new_scale.get("metadata") or {}).get("resourceVersion")
    if rv and rv != obj["metadata"]["resourceVersion"]:
        raise stale(rt.plural, rt.group, call.name)
    replicas = (new_scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise StatusError(
            422,
            "Invalid",
            f'Scale.autoscaling "{call.name}" is invalid: spec.replicas: '
            f"Invalid value: {replicas}: must be greater than or equal to 0",
            {
                "name": call.name,
                "group": "autoscaling",
                "kind": "Scale",
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "spec.replicas",
                        "message": f"Invalid value: {replicas}: must be greater than or equal to 0",
                    }
                ],
            },
        )
    new = clone(obj)
    new.setdefault("spec", {})["replicas"] = replicas
    wcall = Call(rt=rt, namespace=call.namespace, name=call.name, query=call.query)
    stored = api.write(wcall, obj, new)
    return _scale_of(rt.kind, stored)
