"""CustomResourceDefinitions generated from the CR models.

:func:`crd_manifests` turns each model's pydantic JSON schema into the
structural ``openAPIV3Schema`` apiextensions.k8s.io/v1 wants: ``$ref``/``$defs``
inlined; the ``anyOf [X, null]`` of optional fields collapsed to ``X`` (the
apiserver prunes nulls of CRs anyway); ``title`` and ``default`` dropped
(defaults live in the models, where kube-mock's omitted-means-zero bug cannot
come back, and the field descriptions state them); quantities kept in the
one ``anyOf`` form structural schemas allow (``x-kubernetes-int-or-string``);
``x-kubernetes-preserve-unknown-fields`` only on the core/v1 objects the fleet
accepts but does not interpret (affinity, securityContext, resources).

Names: the plural ``nodes`` is kube-mock's and stays (its users' manifests and
RBAC say ``nodes.mock.zhizuqiu.cn``), but it shadows core ``nodes`` for
``kubectl get nodes``, so the short names ``mnode``/``mn`` give a short way to
reach the CRs; neither is a short name of any built-in resource (core ``nodes``
is ``no``). ``mockstatuses`` gets ``mst``. Both kinds are in the category
``kubemock`` (``kubectl get kubemock``) and not in ``all``: a fleet has
thousands of Node CRs.

``crdgen crd`` writes this output; ``deploy/crds/`` holds it.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from ._mockstatus import MockStatus
from ._node import GROUP, VERSION, MockNode
from ._nodescript import NodeScript

__all__ = ["crd_manifests", "structural_schema"]

# pydantic schema keys a CRD schema does not carry (see the module docstring).
_DROPPED = ("title", "default", "$defs")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref`` and collapse optional ``anyOf [X, null]`` into X (one level)."""
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        node = {**copy.deepcopy(defs[name]), **node}
    any_of = node.get("anyOf")
    if any_of is not None and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in any_of if o != {"type": "null"}]
        if len(options) != 1:
            raise ValueError(f"a union of types is not structural: {any_of!r}")
        del node["anyOf"]
        inner = _resolve(options[0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k not in inner or k == "description"}}
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    for key in _DROPPED:
        node.pop(key, None)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "properties" in node:
        node["properties"] = {k: _convert(v, defs) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _convert(node["items"], defs)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        node["additionalProperties"] = _convert(extra, defs)
    elif extra is not None:
        raise ValueError(f"additionalProperties: {extra!r} is not structural; use PreservedObject")
    if node.get("x-kubernetes-int-or-string"):
        node["anyOf"] = [_convert(o, defs) for o in node["anyOf"]]
    return node


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural openAPIV3Schema of a CR model (apiVersion, kind, metadata as the apiserver wants)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema = _convert(raw, defs)
    props = schema["properties"]
    props["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object.",
    }
    props["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents.",
    }
    props["metadata"] = {"type": "object"}
    required = [
        name
        for name in schema.get("required", [])
        if name not in ("metadata", "apiVersion", "kind")
    ]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    return schema


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    model: type[BaseModel],
    printer_columns: list[dict[str, Any]],
    status: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": structural_schema(model)},
    }
    if status:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = printer_columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "kubemock-fleet"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["kubemock"],
            },
            "versions": [version],
        },
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_VALID = {
    "name": "Valid",
    "type": "string",
    "jsonPath": '.status.conditions[?(@.type=="Valid")].status',
}
"""A script's condition Valid, which shard 0 reports (MockStatus, NodeScript)."""
_PRIORITY = {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"}


CRDS_MISSING_HINT = (
    "the kubemock-fleet CRDs are not installed; install them with "
    "`crdgen crd | kubectl apply -f -` (or `kubectl apply -k deploy/`)"
)
"""What a component watching the fleet's custom resources says, once, when they are not served."""


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs of nodes, mockstatuses and nodescripts (mock.zhizuqiu.cn), as dicts."""
    node_columns: list[dict[str, Any]] = [
        {"name": "Shard", "type": "string", "jsonPath": ".status.shard"},
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        _AGE,
        {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend", "priority": 1},
        {"name": "CPU", "type": "string", "jsonPath": ".spec.nodeConfig.cpu", "priority": 1},
        {"name": "Memory", "type": "string", "jsonPath": ".spec.nodeConfig.memory", "priority": 1},
        {"name": "Pods", "type": "string", "jsonPath": ".spec.nodeConfig.pods", "priority": 1},
    ]
    return [
        _crd(
            kind="Node",
            plural="nodes",
            singular="node",
            short_names=["mnode", "mn"],
            model=MockNode,
            printer_columns=node_columns,
            status=True,
        ),
        _crd(
            kind="MockStatus",
            plural="mockstatuses",
            singular="mockstatus",
            short_names=["mst"],
            model=MockStatus,
            printer_columns=[
                _VALID,
                _PRIORITY,
                _AGE,
            ],
            status=True,
        ),
        _crd(
            kind="NodeScript",
            plural="nodescripts",
            singular="nodescript",
            short_names=["nscript"],
            model=NodeScript,
            printer_columns=[
                _VALID,
                _PRIORITY,
                {"name": "Percent", "type": "integer", "jsonPath": ".spec.percent"},
                _AGE,
            ],
            status=True,
        ),
    ]
