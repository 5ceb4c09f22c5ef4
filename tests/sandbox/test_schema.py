"""CRD schema validation, pruning and defaulting against the recorded apiserver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import InputError
from fleet.sandbox._schema import (
    Cause,
    invalid_message,
    strict_decoding_message,
    validate_custom_resource,
)

DATA = json.loads((Path(__file__).parent / "data" / "schema" / "crd-nodes.json").read_text())
SCHEMA = DATA["schema"]
CASES = {c["exchange"]: c for c in DATA["cases"]}


def _newer(cause: dict[str, str]) -> dict[str, str]:
    """1.24 reported type errors as FieldValueInvalid; 1.25+ as FieldValueTypeInvalid."""
    if "must be of type" in cause["message"]:
        return {**cause, "reason": "FieldValueTypeInvalid"}
    return cause


@pytest.mark.parametrize("exchange", [5, 6, 10, 11, 12, 13])
def test_accepted_objects_are_pruned_like_the_apiserver(exchange: int) -> None:
    case = CASES[exchange]
    obj, causes, _ = validate_custom_resource(case["request"], SCHEMA, field_validation="Ignore")
    assert causes == []
    assert obj["spec"] == case["response"]["spec"]
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    # key order as Go encodes a map: sorted
    assert list(obj["spec"]) == list(case["response"]["spec"])


@pytest.mark.parametrize("exchange", [7, 8, 9, 28])
def test_rejected_objects_have_the_recorded_causes_and_message(exchange: int) -> None:
    case = CASES[exchange]
    _, causes, _ = validate_custom_resource(case["request"], SCHEMA)
    want = [_newer(c) for c in case["response"]["details"]["causes"]]
    got = [c.to_dict() for c in causes]
    # the apiserver does not order causes of a CR (README: crd.json bad-many)
    assert sorted(got, key=json.dumps) == sorted(want, key=json.dumps)
    name = case["response"]["details"]["name"]
    message = invalid_message("Node.mock.zhizuqiu.cn", name, causes)
    if len(causes) == 1:
        assert message == case["response"]["message"]
    else:
        assert message.startswith(f'Node.mock.zhizuqiu.cn "{name}" is invalid: [')
        for c in want:
            assert f"{c['field']}: {c['message']}" in message


UNKNOWN = CASES[11]["request"]
UNKNOWN_PATHS = ["spec.nodeConfig.extra", "spec.unknownField", "topLevelUnknown"]


def test_strict_reports_unknown_fields() -> None:
    obj, causes, warnings = validate_custom_resource(UNKNOWN, SCHEMA, field_validation="Strict")
    assert [c.field for c in causes] == UNKNOWN_PATHS
    assert {c.reason for c in causes} == {"FieldValueUnknown"}
    assert warnings == []
    assert strict_decoding_message("Node", "v1alpha1", causes) == (
        'Node in version "v1alpha1" cannot be handled as a Node: strict decoding error: '
        'unknown field "spec.nodeConfig.extra", unknown field "spec.unknownField", '
        'unknown field "topLevelUnknown"'
    )
    assert "unknownField" not in obj["spec"]


def test_warn_reports_warnings_only() -> None:
    _, causes, warnings = validate_custom_resource(UNKNOWN, SCHEMA, field_validation="Warn")
    assert causes == []
    assert warnings == [f'unknown field "{p}"' for p in UNKNOWN_PATHS]


def test_bogus_field_validation_is_rejected_with_the_recorded_text() -> None:
    with pytest.raises(InputError) as info:
        validate_custom_resource(UNKNOWN, SCHEMA, field_validation="Bogus")
    assert str(info.value) == (
        'fieldValidation: Unsupported value: "Bogus": supported values: "", "Ignore", "Strict", "Warn"'
    )


RICH = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"]},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 5, "default": 1},
                "name": {"type": "string", "maxLength": 3, "minLength": 2},
                "when": {"type": "string", "format": "date-time"},
                "items": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {"type": "object", "properties": {"k": {"type": "integer"}}},
                },
                "opt": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "template": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {
                        "spec": {"type": "object", "properties": {"x": {"type": "string"}}}
                    },
                },
                "nested": {
                    "type": "object",
                    "default": {},
                    "properties": {"v": {"type": "string", "default": "d"}},
                },
            },
        },
    },
}


def _causes(spec: dict[str, Any]) -> list[dict[str, str]]:
    _, causes, _ = validate_custom_resource({"spec": spec}, RICH)
    return [c.to_dict() for c in causes]


def test_defaults_are_applied_recursively() -> None:
    obj, causes, _ = validate_custom_resource({"spec": {"mode": "a"}}, RICH)
    assert causes == []
    assert obj["spec"] == {"mode": "a", "nested": {"v": "d"}, "replicas": 1}


def test_preserve_unknown_and_embedded_resource() -> None:
    spec = {
        "mode": "a",
        "free": {"anything": {"deep": [1]}},
        "template": {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x"},
            "spec": {"x": "1", "y": 2},
            "other": 1,
        },
    }
    obj, _, warnings = validate_custom_resource({"spec": spec}, RICH, field_validation="Warn")
    assert obj["spec"]["free"] == {"anything": {"deep": [1]}}
    assert obj["spec"]["template"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "x"},
        "spec": {"x": "1"},
    }
    assert warnings == [
        'unknown field "spec.template.other"',
        'unknown field "spec.template.spec.y"',
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.mode"}),
        (
            {"mode": "c"},
            {
                "reason": "FieldValueNotSupported",
                "message": 'Unsupported value: "c": supported values: "a", "b"',
                "field": "spec.mode",
            },
        ),
        (
            {"mode": "a", "replicas": 9},
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: 9: spec.replicas in body should be less than or equal to 5",
                "field": "spec.replicas",
            },
        ),
        (
            {"mode": "a", "replicas": 0},
            {
                "reason": "FieldValueInvalid",
                "message": "Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
                "field": "spec.replicas",
            },
        ),
        (
            {"mode": "a", "name": "long"},
            {
                "reason": "FieldValueTooLong",
                "message": "Too long: may not be more than 3 bytes",
                "field": "spec.name",
            },
        ),
        (
            {"mode": "a", "name": "x"},
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "x": spec.name in body should be at least 2 chars long',
                "field": "spec.name",
            },
        ),
        (
            {"mode": "a", "when": "yesterday"},
            {
                "reason": "FieldValueTypeInvalid",
                "message": 'Invalid value: "yesterday": spec.when in body must be of type date-time: "yesterday"',
                "field": "spec.when",
            },
        ),
        (
            {"mode": "a", "items": [{"k": 1}, {"k": "x"}]},
            {
                "reason": "FieldValueTypeInvalid",
                "message": 'Invalid value: "string": spec.items[1].k in body must be of type integer: "string"',
                "field": "spec.items[1].k",
            },
        ),
        (
            {"mode": "a", "items": [{}, {}, {}]},
            {
                "reason": "FieldValueTooMany",
                "message": "Too many: 3: must have at most 2 items",
                "field": "spec.items",
            },
        ),
        (
            {"mode": "a", "replicas": None},
            None,
        ),
        (
            {"mode": "a", "opt": None},
            None,
        ),
        (
            {"mode": "a", "replicas": 2.0},
            None,
        ),
        (
            {"mode": "a", "name": None},
            {
                "reason": "FieldValueTypeInvalid",
                "message": 'Invalid value: "null": spec.name in body must be of type string: "null"',
                "field": "spec.name",
            },
        ),
    ],
)
def test_validation_messages(spec: dict[str, Any], expected: dict[str, str] | None) -> None:
    assert _causes(spec) == ([expected] if expected else [])


def test_invalid_message_dedupes_like_an_aggregate() -> None:
    c = Cause("spec.a", "FieldValueRequired", "Required value")
    assert invalid_message("W.g", "n", [c, c]) == 'W.g "n" is invalid: spec.a: Required value'
    d = Cause("spec.b", "FieldValueRequired", "Required value")
    assert invalid_message("W.g", "n", [c, d]) == (
        'W.g "n" is invalid: [spec.a: Required value, spec.b: Required value]'
    )


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("ab", max_size=2)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["spec", "status", "extra"]), _json, max_size=3))
def test_pruning_is_idempotent_and_never_invents_fields(obj: dict[str, Any]) -> None:
    once, _, _ = validate_custom_resource(obj, SCHEMA)
    twice, _, warnings = validate_custom_resource(once, SCHEMA, field_validation="Warn")
    assert twice == once
    assert warnings == []
    assert set(once) <= set(obj)
