"""The generated CRDs: structural schemas holding every model field, names, columns, status."""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from fleet.api import QUANTITY_PATTERN, MockNode, MockStatus, NodeConfig, crd_manifests
from fleet.api._types import CAPACITY_PATTERN, WHOLE_PATTERN

# The keys of apiextensions.k8s.io/v1 JSONSchemaProps a structural schema may use here.
_ALLOWED = {
    "type", "format", "description", "properties", "items", "additionalProperties", "required",
    "enum", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems",
    "anyOf", "nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_INT_OR_STRING = [{"type": "integer"}, {"type": "string"}]


def _check_structural(node: dict[str, Any], path: str) -> list[str]:
    """The structural rules of apiextensions (KEP 2019-06-24): a list of violations."""
    faults = [f"{path}: key {key!r} not allowed" for key in node if key not in _ALLOWED]
    if node.get("x-kubernetes-int-or-string"):
        if "type" in node or node.get("anyOf") != _INT_OR_STRING:
            faults.append(f"{path}: int-or-string must be anyOf integer/string with no type")
    elif "anyOf" in node:
        faults.append(f"{path}: anyOf is only allowed for int-or-string")
    elif node.get("type") not in _TYPES:
        faults.append(f"{path}: missing or bad type {node.get('type')!r}")
    if "properties" in node and "additionalProperties" in node:
        faults.append(f"{path}: both properties and additionalProperties")
    if node.get("x-kubernetes-preserve-unknown-fields") and node.get("type") != "object":
        faults.append(f"{path}: preserve-unknown-fields on a non-object")
    if node.get("type") == "array" and "items" not in node:
        faults.append(f"{path}: array without items")
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            faults.append(f"{path}: required {name!r} is not a property")
    for name, child in node.get("properties", {}).items():
        faults += _check_structural(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        faults += _check_structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        faults += _check_structural(node["additionalProperties"], f"{path}{{}}")
    return faults


def _crd(name: str) -> dict[str, Any]:
    return next(c for c in crd_manifests() if c["metadata"]["name"] == name)


def _schema(name: str) -> dict[str, Any]:
    versions = _crd(name)["spec"]["versions"]
    assert len(versions) == 1
    schema: dict[str, Any] = versions[0]["schema"]["openAPIV3Schema"]
    return schema


CRDS = ["nodes.mock.zhizuqiu.cn", "mockstatuses.mock.zhizuqiu.cn", "nodescripts.mock.zhizuqiu.cn"]


@pytest.mark.parametrize("name", CRDS)
def test_schema_is_structural(name: str) -> None:
    schema = _schema(name)
    assert _check_structural(schema, "") == []
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert "$ref" not in json.dumps(schema) and "$defs" not in json.dumps(schema)


def test_the_structural_check_catches_faults() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "b": {"$ref": "#/$defs/B"},
            "c": {"type": "array"},
        },
        "required": ["d"],
    }
    faults = _check_structural(bad, "")
    assert len(faults) == 5, faults


def _model_paths(model: type[BaseModel], prefix: str) -> set[str]:
    """Every field of a model, by its JSON name, recursing into sub-models and lists of them."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        paths.add(path)
        for sub in _models_in(field.annotation):
            paths |= _model_paths(sub, path + ("[]" if _is_list(field.annotation) else ""))
    return paths


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return typing.get_origin(annotation) is list


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _schema_paths(node: dict[str, Any], prefix: str) -> set[str]:
    paths: set[str] = set()
    for name, child in node.get("properties", {}).items():
        paths.add(f"{prefix}.{name}")
        paths |= _schema_paths(child, f"{prefix}.{name}")
    if isinstance(node.get("items"), dict):
        paths |= _schema_paths(node["items"], f"{prefix}[]")
    return paths


@pytest.mark.parametrize(("name", "model"), [(CRDS[0], MockNode), (CRDS[1], MockStatus)])
def test_schema_contains_every_field(name: str, model: type[BaseModel]) -> None:
    in_schema = _schema_paths(_schema(name), "")
    in_model = {p for p in _model_paths(model, "") if not p.startswith(".metadata.")}
    assert in_model - in_schema == set()
    assert in_schema - in_model == set()


KUBE_MOCK_SPEC_FIELDS = [
    "suspend", "image", "imagePullPolicy", "imagePullSecrets", "tolerations", "nodeSelector",
    "affinity", "securityContext", "resources", "kubeconfigSecret", "apiserverCertSecret",
    "apiserverKeySecret", "statusUpdatesInterval", "nodeConfig",
]  # fmt: skip
KUBE_MOCK_NODE_CONFIG_FIELDS = [
    "cpu", "memory", "pods", "address", "port", "startupTimeout", "logLevel", "kLogV", "labels", "taints",
]  # fmt: skip


def test_every_kube_mock_field_is_in_the_schema() -> None:
    spec = _schema(CRDS[0])["properties"]["spec"]["properties"]
    assert set(KUBE_MOCK_SPEC_FIELDS) <= set(spec)
    assert set(KUBE_MOCK_NODE_CONFIG_FIELDS) <= set(spec["nodeConfig"]["properties"])


# The quantity schema as a real apiserver accepted it (../shared/apiserver-transcripts/crd.json).
RECORDED_QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    "x-kubernetes-int-or-string": True,
}


def test_quantities_are_int_or_string_as_the_apiserver_records() -> None:
    """The recorded int-or-string form; the patterns narrowed to what a capacity can be and
    ``minimum: 0`` for the integer form: refused at apply time."""
    assert RECORDED_QUANTITY["pattern"] == QUANTITY_PATTERN
    config = _schema(CRDS[0])["properties"]["spec"]["properties"]["nodeConfig"]["properties"]
    capacity = {**RECORDED_QUANTITY, "pattern": CAPACITY_PATTERN, "minimum": 0}
    whole = {**RECORDED_QUANTITY, "pattern": WHOLE_PATTERN, "minimum": 0}
    for name, expected in (
        ("cpu", capacity),
        ("memory", capacity),
        ("ephemeralStorage", capacity),
        ("pods", whole),
    ):
        node = {k: v for k, v in config[name].items() if k != "description"}
        assert node == expected, name
    assert config["extendedResources"]["additionalProperties"] == whole
    assert config["allocatable"]["additionalProperties"] == capacity


CAPACITIES = ["0", "1", "+5", "100Gi", "0.5", "500m", "1e3", "1.5k", "1E-3", ".5Ki", "-1Gi", "-0.5",
              "-3", "1x", "", "1.55e1"]  # fmt: skip
COUNTS = ["0", "2", "200", "1k", "1.5k", "1Ki", "2000m", "0m", "1e3", "2.5", "500m", "-1", "1.55e1",
          "1.5", ".5"]  # fmt: skip


def _model_accepts(field: str, value: str) -> bool:
    try:
        NodeConfig.model_validate({field: value})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize("value", CAPACITIES)
def test_the_capacity_pattern_refuses_only_what_the_model_refuses(value: str) -> None:
    if re.search(CAPACITY_PATTERN, value) is None:
        assert not _model_accepts("memory", value)
    assert (re.search(CAPACITY_PATTERN, value) is not None) == (
        value not in ("-1Gi", "-0.5", "-3", "1x", "")
    )


@pytest.mark.parametrize("value", COUNTS)
def test_the_whole_pattern_refuses_only_what_the_model_refuses(value: str) -> None:
    if re.search(WHOLE_PATTERN, value) is None:
        assert not _model_accepts("pods", value)
    assert (re.search(WHOLE_PATTERN, value) is not None) == (
        value not in ("2.5", "500m", "-1", "1.5", ".5")
    )


def test_preserve_unknown_fields_only_where_needed() -> None:
    text = json.dumps(crd_manifests())
    assert text.count("x-kubernetes-preserve-unknown-fields") == 3
    spec = _schema(CRDS[0])["properties"]["spec"]["properties"]
    for name in ("affinity", "securityContext", "resources"):
        assert (
            spec[name]["type"] == "object"
            and spec[name]["x-kubernetes-preserve-unknown-fields"] is True
        )


def test_go_regexp_compatible_patterns() -> None:
    """Patterns run in the apiserver's Go RE2: no \\u escapes, no lookarounds or backreferences."""
    for pattern in re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', json.dumps(crd_manifests())):
        decoded = json.loads(f'"{pattern}"')
        assert "\\u" not in decoded and "(?=" not in decoded and "(?!" not in decoded
        re.compile(decoded)


def test_node_crd_names_columns_and_status() -> None:
    crd = _crd(CRDS[0])
    spec = crd["spec"]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert (spec["group"], spec["scope"]) == ("mock.zhizuqiu.cn", "Namespaced")
    assert spec["names"] == {
        "kind": "Node",
        "listKind": "NodeList",
        "plural": "nodes",
        "singular": "node",
        "shortNames": ["mnode", "mn"],
        "categories": ["kubemock"],
    }
    version = spec["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Shard",
        "Node",
        "Ready",
        "Age",
    ]
    assert columns["Shard"]["jsonPath"] == ".status.shard"
    assert columns["Node"]["jsonPath"] == ".status.nodeName"
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert set(status) == {"shard", "nodeName", "observedGeneration", "conditions"}
    assert status["conditions"]["items"]["required"] == ["type", "status"]


# Short names of the built-in resources of Kubernetes 1.24-1.33 (kubectl api-resources).
BUILTIN_SHORT_NAMES = {
    "cs", "cm", "ep", "ev", "limits", "ns", "no", "pvc", "pv", "po", "rc", "quota", "sa", "svc",
    "crd", "crds", "ds", "deploy", "rs", "sts", "hpa", "cj", "csr", "ing", "netpol", "pdb", "psp",
    "pc", "sc", "ipa", "vac",
}  # fmt: skip


def test_short_names_do_not_clash() -> None:
    short = [s for c in crd_manifests() for s in c["spec"]["names"]["shortNames"]]
    assert len(short) == len(set(short))
    assert not set(short) & BUILTIN_SHORT_NAMES


def test_mockstatus_crd() -> None:
    crd = _crd(CRDS[1])
    spec = crd["spec"]
    assert spec["names"]["kind"] == "MockStatus"
    assert spec["names"]["plural"] == "mockstatuses"
    # Shard 0 writes the Valid condition through the status subresource.
    assert spec["versions"][0]["subresources"] == {"status": {}}
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Valid", "Priority", "Age"]
    schema = _schema(CRDS[1])
    assert schema["required"] == ["spec"]
    policy = schema["properties"]["spec"]["properties"]
    assert set(policy["selector"]["properties"]) == {
        "namespaces",
        "matchLabels",
        "matchExpressions",
        "matchAnnotations",
        "ownerKinds",
    }
    assert policy["branches"]["items"]["required"] == ["weight", "steps"]
    step = policy["steps"]["items"]["properties"]
    assert step["distribution"]["enum"] == ["uniform", "normal"]
    steps = schema["properties"]["spec"]["properties"]["steps"]
    assert steps["minItems"] == 1
    assert steps["items"]["properties"]["phase"]["enum"] == [
        "Pending",
        "Running",
        "Succeeded",
        "Failed",
    ]


def test_no_defaults_in_the_schema() -> None:
    """Defaults live in the models (and the descriptions say them), not in apiserver defaulting."""
    assert '"default"' not in json.dumps(crd_manifests())
