"""Strategic merge patch: recorded apiserver results, directives, and properties."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.errors import InputError
from fleet.machinery import KNOWN_KINDS, strategic_merge_patch

DATA = Path(__file__).parent / "data" / "smp" / "recorded.json"
RECORDED = json.loads(DATA.read_text())["cases"]


def _at(obj: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part, {})
    return obj


@pytest.mark.parametrize("case", RECORDED, ids=[c["name"] for c in RECORDED])
def test_matches_recorded_apiserver(case: dict[str, Any]) -> None:
    got = strategic_merge_patch(case["original"], case["patch"], case["kind"])
    for path in case["compare"]:
        assert _at(got, path) == _at(case["expected"], path), path


def test_recorded_condition_order_is_exact() -> None:
    by_name = {c["name"]: c for c in RECORDED}
    case = by_name["node-status-conditions-merge-by-type"]
    got = strategic_merge_patch(case["original"], case["patch"], "Node")
    assert [c["type"] for c in got["status"]["conditions"]] == [
        "MemoryPressure",
        "PIDPressure",
        "Ready",
        "DiskPressure",
    ]


def test_inputs_are_not_modified() -> None:
    case = RECORDED[0]
    original, patch = copy.deepcopy(case["original"]), copy.deepcopy(case["patch"])
    strategic_merge_patch(original, patch, "Node")
    assert original == case["original"]
    assert patch == case["patch"]


POD = {
    "metadata": {"name": "p", "finalizers": ["a", "b"], "labels": {"x": "1"}},
    "spec": {
        "containers": [
            {
                "name": "c1",
                "image": "i1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80}],
            },
            {"name": "c2", "image": "i2"},
        ],
        "tolerations": [{"key": "t1"}],
        "volumes": [{"name": "v1", "emptyDir": {}}],
    },
    "status": {
        "containerStatuses": [{"name": "c1", "ready": False}, {"name": "c2", "ready": False}]
    },
}


def test_delete_directive_in_list_and_map() -> None:
    got = strategic_merge_patch(
        POD,
        {
            "spec": {
                "containers": [{"name": "c1", "$patch": "delete"}],
                "volumes": {"$patch": "delete"},
            }
        },
        "Pod",
    )
    assert [c["name"] for c in got["spec"]["containers"]] == ["c2"]
    assert got["spec"]["volumes"] == {}


def test_replace_directive_in_list() -> None:
    got = strategic_merge_patch(
        POD, {"spec": {"containers": [{"$patch": "replace"}, {"name": "c9", "image": "x"}]}}, "Pod"
    )
    assert got["spec"]["containers"] == [{"name": "c9", "image": "x"}]


def test_replace_directive_in_map() -> None:
    got = strategic_merge_patch(POD, {"metadata": {"$patch": "replace", "name": "q"}}, "Pod")
    assert got["metadata"] == {"name": "q"}


def test_nested_merge_keys_env_and_ports() -> None:
    got = strategic_merge_patch(
        POD,
        {
            "spec": {
                "containers": [
                    {
                        "name": "c1",
                        "env": [{"name": "B", "value": "3"}],
                        "ports": [{"containerPort": 81}],
                    }
                ]
            }
        },
        "Pod",
    )
    c1 = got["spec"]["containers"][0]
    assert c1["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]
    # a new item lands before the server-only ones (mergeSortedSlice), as MockCondition did
    assert c1["ports"] == [{"containerPort": 81}, {"containerPort": 80}]


def test_lists_without_strategy_are_replaced() -> None:
    got = strategic_merge_patch(
        POD,
        {
            "spec": {"tolerations": [{"key": "t2"}]},
            "status": {"containerStatuses": [{"name": "c2", "ready": True}]},
        },
        "Pod",
    )
    assert got["spec"]["tolerations"] == [{"key": "t2"}]
    assert got["status"]["containerStatuses"] == [{"name": "c2", "ready": True}]


def test_primitive_merge_list_and_delete_from_primitive_list() -> None:
    got = strategic_merge_patch(POD, {"metadata": {"finalizers": ["c", "a"]}}, "Pod")
    assert got["metadata"]["finalizers"] == ["c", "a", "b"]
    got = strategic_merge_patch(
        POD, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, "Pod"
    )
    assert got["metadata"]["finalizers"] == ["b"]


def test_set_element_order_on_primitive_list() -> None:
    got = strategic_merge_patch(
        POD,
        {"metadata": {"$setElementOrder/finalizers": ["b", "c", "a"], "finalizers": ["c"]}},
        "Pod",
    )
    assert got["metadata"]["finalizers"] == ["b", "c", "a"]


def test_retain_keys_clears_other_fields() -> None:
    got = strategic_merge_patch(
        POD,
        {
            "spec": {
                "volumes": [
                    {"name": "v1", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}
                ]
            }
        },
        "Pod",
    )
    assert got["spec"]["volumes"] == [{"name": "v1", "hostPath": {"path": "/x"}}]


def test_null_deletes_and_new_values_lose_directives() -> None:
    got = strategic_merge_patch(
        POD,
        {"metadata": {"labels": {"x": None}, "annotations": {"$patch": "replace", "a": "b"}}},
        "Pod",
    )
    assert got["metadata"]["labels"] == {}
    assert got["metadata"]["annotations"] == {"a": "b"}


def test_ownerreferences_merge_by_uid() -> None:
    orig = {"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}]}}
    got = strategic_merge_patch(
        orig, {"metadata": {"ownerReferences": [{"uid": "2", "name": "c"}]}}, "ReplicaSet"
    )
    assert got["metadata"]["ownerReferences"] == [
        {"uid": "1", "name": "a"},
        {"uid": "2", "name": "c"},
    ]


def test_node_taints_are_replaced_and_addresses_merged() -> None:
    orig = {
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "1"},
                {"type": "Hostname", "address": "h"},
            ]
        },
    }
    got = strategic_merge_patch(
        orig,
        {
            "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "2"}]},
        },
        "Node",
    )
    assert got["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]
    assert got["status"]["addresses"] == [
        {"type": "InternalIP", "address": "2"},
        {"type": "Hostname", "address": "h"},
    ]


def test_service_ports_merge_by_port() -> None:
    orig = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
    got = strategic_merge_patch(
        orig, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}, "Service"
    )
    assert got["spec"]["ports"] == [
        {"port": 80, "name": "http", "targetPort": 8080},
        {"port": 443, "name": "https"},
    ]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"metadata": {"$patch": "bogus"}}, "unknown patch type: bogus in map: map[$patch:bogus]"),
        (
            {"spec": {"containers": [{"$patch": "merge"}]}},
            "merging lists cannot yet be specified in the patch",
        ),
        (
            {"spec": {"containers": [{"image": "x"}]}},
            "map: map[image:x] does not contain declared merge key: name",
        ),
        ({"metadata": {"$retainKeys": "name"}}, "invalid patch format of retainKeys"),
        (
            {"metadata": {"$retainKeys": ["name"], "labels": {}}},
            "invalid patch format of retainKeys",
        ),
        (
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "c2"}],
                    "containers": [{"name": "c1", "image": "z"}],
                }
            },
            "doesn't match $setElementOrder list",
        ),
        ({"spec": {"containers": [[1]]}}, "list element types are not identical"),
        ({"spec": {"imagePullSecrets": [[1]]}}, "lists of lists are not supported"),
    ],
)
def test_bad_directives_raise_input_error(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message.replace("$", r"\$").replace("[", r"\[")):
        strategic_merge_patch(POD, patch, "Pod")


def test_unknown_kind_raises() -> None:
    assert "Pod" in KNOWN_KINDS and "Lease" in KNOWN_KINDS
    with pytest.raises(InputError):
        strategic_merge_patch({}, {}, "Widget")


# --- properties ---------------------------------------------------------------------

_keys = st.sampled_from(["a", "b", "c", "d"])
_scalars = st.one_of(st.integers(-3, 3), st.text("xy", max_size=2), st.booleans())
_maps: st.SearchStrategy[Any] = st.recursive(
    _scalars, lambda inner: st.dictionaries(_keys, inner, max_size=4), max_leaves=12
)
_patches: st.SearchStrategy[Any] = st.recursive(
    st.one_of(_scalars, st.none()),
    lambda inner: st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)


def _json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, the reference for maps without lists."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _json_merge_patch(result.get(k), v)
    return result


@given(st.dictionaries(_keys, _maps, max_size=4), st.dictionaries(_keys, _patches, max_size=4))
def test_maps_without_lists_behave_like_json_merge_patch(
    original: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert strategic_merge_patch(original, patch, "ConfigMap") == _json_merge_patch(original, patch)


_conditions = st.lists(
    st.fixed_dictionaries(
        {"type": st.sampled_from("ABCDEF"), "status": st.sampled_from(["True", "False"])}
    ),
    max_size=6,
    unique_by=lambda c: c["type"],
)


@given(_conditions, _conditions)
def test_patch_is_idempotent(original: list[dict[str, str]], patch: list[dict[str, str]]) -> None:
    node = {"status": {"conditions": original}}
    p = {"status": {"conditions": patch}}
    once = strategic_merge_patch(node, p, "Node")
    assert strategic_merge_patch(once, p, "Node") == once


@given(_conditions, _conditions)
def test_merge_by_type_keeps_every_type_once_with_patched_values(
    original: list[dict[str, str]], patch: list[dict[str, str]]
) -> None:
    got = strategic_merge_patch(
        {"status": {"conditions": original}}, {"status": {"conditions": patch}}, "Node"
    )
    merged = {c["type"]: c["status"] for c in original} | {c["type"]: c["status"] for c in patch}
    assert {c["type"]: c["status"] for c in got["status"]["conditions"]} == merged
    assert len(got["status"]["conditions"]) == len(merged)


@given(_conditions, st.data())
def test_set_element_order_orders_the_result(
    original: list[dict[str, str]], data: st.DataObject
) -> None:
    types = [c["type"] for c in original]
    order = data.draw(st.permutations(types))
    patched = data.draw(st.lists(st.sampled_from(order), unique=True)) if order else []
    patch_list = [{"type": t, "status": "True"} for t in order if t in patched]
    got = strategic_merge_patch(
        {"status": {"conditions": original}},
        {
            "status": {
                "$setElementOrder/conditions": [{"type": t} for t in order],
                "conditions": patch_list,
            }
        },
        "Node",
    )
    assert [c["type"] for c in got["status"].get("conditions", [])] == list(order)
