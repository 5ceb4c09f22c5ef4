"""Subresources other than status: pods/binding, pods/eviction, */scale.

Binding is what a scheduler POSTs to place a pod; eviction is a graceful
delete (no PodDisruptionBudgets here); scale reads and writes
``spec.replicas`` through an ``autoscaling/v1`` Scale.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fleet.machinery import MERGE_PATCH, STRATEGIC_MERGE_PATCH, label_selector_from_dict
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


PDB_KEY = ("policy", "poddisruptionbudgets")
_VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def _too_many(cause_message: str) -> StatusError:
    return StatusError(
        429,
        "TooManyRequests",
        _VIOLATION,
        {"causes": [{"reason": "DisruptionBudget", "message": cause_message}]},
    )


def _honour_budget(api: Api, call: Call) -> None:
    """The eviction REST's PodDisruptionBudget check; takes one allowed disruption (or 429)."""
    assert call.name is not None
    pod = api.lookup(call.rt, call.ns(), call.name)
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending") or (
        pod["metadata"].get("deletionTimestamp")
    ):
        return  # canIgnorePDB
    pdb_rt = api.registry.by_key(PDB_KEY)
    if pdb_rt is None:
        return
    labels = pod["metadata"].get("labels") or {}
    budgets = [
        b
        for (ns, _), b in api.store.collection(PDB_KEY).objects.items()
        if ns == call.ns()
        and label_selector_from_dict((b.get("spec") or {}).get("selector")).matches(labels)
    ]
    if not budgets:
        return
    if len(budgets) > 1:
        raise StatusError(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support.",
        )
    pdb = budgets[0]
    name = pdb["metadata"]["name"]
    status = pdb.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(pdb["metadata"].get("generation") or 0):
        raise _too_many(f"The disruption budget {name} is still being processed by the server.")
    if int(status.get("disruptionsAllowed") or 0) <= 0:
        raise _too_many(
            f"The disruption budget {name} needs {int(status.get('desiredHealthy') or 0)} "
            f"healthy pods and has {int(status.get('currentHealthy') or 0)} currently"
        )
    new = clone(pdb)
    new_status = new.setdefault("status", {})
    new_status["disruptionsAllowed"] = int(status["disruptionsAllowed"]) - 1
    new_status.setdefault("disruptedPods", {})[call.name] = rfc3339(api.now())
    if not call.dry_run:
        api.write(Call(rt=pdb_rt, namespace=call.ns(), name=name, subresource="status"), pdb, new)


def evict(api: Api, deleter: Deleter, call: Call) -> dict[str, Any]:
    """POST pods/{name}/eviction: the PodDisruptionBudget check, then a delete with the
    eviction's DeleteOptions."""
    body = decode_body(call.rt, call.body, call.content_type) if call.body.strip() else {}
    _honour_budget(api, call)
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
