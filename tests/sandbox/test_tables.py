"""Table responses: golden files recorded from a real apiserver, and printer logic."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet.sandbox._tables import human_duration, jsonpath_find, table_for

GOLDEN = sorted((Path(__file__).parent / "data" / "tables").glob("*.json"))
NOW = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_tables(path: Path) -> None:
    golden = json.loads(path.read_text())
    want = golden["expected"]
    got = table_for(
        golden["resource"],
        golden["objects"],
        list_meta=want["metadata"],
        crd_columns=golden["crd_columns"],
        now=NOW,
    )
    for row in got["rows"]:
        for i in golden["age_cells"]:
            row["cells"][i] = "<age>"
    assert got == want


def _ts(delta: timedelta) -> str:
    return (NOW - delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": _ts(timedelta(minutes=5))},
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
        "status": status,
    }


def _cells(obj: dict[str, Any], resource: str = "pods") -> list[Any]:
    cells: list[Any] = table_for(resource, [obj], now=NOW)["rows"][0]["cells"]
    return cells


RUNNING = {"state": {"running": {}}, "ready": True, "restartCount": 0}


@pytest.mark.parametrize(
    ("status", "ready", "reason"),
    [
        ({"phase": "Pending"}, "0/2", "Pending"),
        (
            {
                "phase": "Pending",
                "initContainerStatuses": [{"state": {"waiting": {"reason": "PodInitializing"}}}],
            },
            "0/2",
            "Init:0/1",
        ),
        (
            {
                "phase": "Pending",
                "initContainerStatuses": [{"state": {"terminated": {"exitCode": 1}}}],
            },
            "0/2",
            "Init:ExitCode:1",
        ),
        (
            {
                "phase": "Pending",
                "initContainerStatuses": [{"state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [
                    {"state": {"waiting": {"reason": "ContainerCreating"}}},
                    RUNNING,
                ],
            },
            "1/2",
            "ContainerCreating",
        ),
        ({"phase": "Running", "containerStatuses": [RUNNING, RUNNING]}, "2/2", "Running"),
        (
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ]
                * 2,
            },
            "0/2",
            "Completed",
        ),
        (
            {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    RUNNING,
                    {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                ],
            },
            "1/2",
            "NotReady",
        ),
    ],
)
def test_pod_status_column(status: dict[str, Any], ready: str, reason: str) -> None:
    cells = _cells(_pod(**status))
    assert cells[1:3] == [ready, reason]
    assert cells[4] == "5m"


def test_pod_terminating_restarts_and_wide_columns() -> None:
    pod = _pod(
        phase="Running",
        podIPs=[{"ip": "10.0.0.9"}],
        conditions=[{"type": "G", "status": "True"}],
        containerStatuses=[
            {
                **RUNNING,
                "restartCount": 2,
                "lastState": {"terminated": {"finishedAt": _ts(timedelta(seconds=30))}},
            },
            RUNNING,
        ],
    )
    pod["metadata"]["deletionTimestamp"] = _ts(timedelta(0))
    pod["spec"]["nodeName"] = "n1"
    pod["spec"]["readinessGates"] = [{"conditionType": "G"}, {"conditionType": "H"}]
    assert _cells(pod) == [
        "p",
        "2/2",
        "Terminating",
        "2 (30s ago)",
        "5m",
        "10.0.0.9",
        "n1",
        "<none>",
        "1/2",
    ]


def test_succeeded_pod_row_has_completed_condition() -> None:
    row = table_for("pods", [_pod(phase="Succeeded")], now=NOW)["rows"][0]
    assert row["conditions"][0]["type"] == "Completed"


@pytest.mark.parametrize(
    ("conditions", "unschedulable", "expected"),
    [
        ([{"type": "Ready", "status": "True"}], False, "Ready"),
        ([{"type": "Ready", "status": "Unknown"}], False, "NotReady"),
        ([], False, "Unknown"),
        ([{"type": "Ready", "status": "False"}], True, "NotReady,SchedulingDisabled"),
    ],
)
def test_node_status_column(
    conditions: list[dict[str, str]], unschedulable: bool, expected: str
) -> None:
    node = {
        "metadata": {
            "name": "n",
            "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "x"},
        },
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": conditions},
    }
    cells = _cells(node, "nodes")
    assert cells[1:3] == [expected, "control-plane,x"]
    assert cells[3] == "<unknown>"
    assert cells[7:] == ["<unknown>"] * 3


def test_deployment_and_replicaset_rows() -> None:
    d = {
        "metadata": {"name": "d", "creationTimestamp": _ts(timedelta(hours=3))},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "spec": {"containers": [{"name": "c", "image": "i:1"}, {"name": "s", "image": "j"}]}
            },
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2, "replicas": 3},
    }
    assert _cells(d, "deployments") == ["d", "2/3", 3, 2, "3h", "c,s", "i:1,j", "app=d"]
    assert _cells(d, "replicasets") == ["d", 3, 3, 2, "3h", "c,s", "i:1,j", "app=d"]


def test_small_kinds() -> None:
    assert _cells(
        {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": ""}}, "configmaps"
    )[:2] == ["c", 2]
    assert _cells({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "1"}}, "secrets")[
        :3
    ] == ["s", "Opaque", 1]
    assert _cells({"metadata": {"name": "ns"}, "status": {"phase": "Active"}}, "namespaces")[
        :2
    ] == ["ns", "Active"]
    assert _cells({"metadata": {"name": "sa"}, "secrets": [{"name": "x"}]}, "serviceaccounts")[
        :2
    ] == ["sa", 1]
    svc = {
        "metadata": {"name": "svc"},
        "spec": {
            "type": "NodePort",
            "clusterIPs": ["10.96.0.1"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}],
            "selector": {"app": "a"},
        },
    }
    assert _cells(svc, "services") == [
        "svc",
        "NodePort",
        "10.96.0.1",
        "<none>",
        "80:30080/TCP",
        "<unknown>",
        "app=a",
    ]


def test_event_row() -> None:
    ev = {
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"},
        "reason": "Pulled",
        "type": "Normal",
        "message": " done ",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": _ts(timedelta(minutes=20)),
        "lastTimestamp": _ts(timedelta(minutes=1)),
        "count": 3,
    }
    assert _cells(ev, "events") == [
        "60s",
        "Normal",
        "Pulled",
        "pod/p",
        "spec.containers{c}",
        "kubelet, n1",
        "done",
        "20m",
        3,
        "e1",
    ]


def test_default_convertor_for_crds_and_unknown_resources() -> None:
    crd = {"metadata": {"name": "x.y.z", "creationTimestamp": "2023-12-31T00:00:00Z"}}
    t = table_for("customresourcedefinitions", [crd], now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Created At"]
    assert t["rows"][0]["cells"] == ["x.y.z", "2023-12-31T00:00:00Z"]


def test_custom_resource_default_age_column_and_include_object() -> None:
    cr = {"metadata": {"name": "a", "creationTimestamp": _ts(timedelta(days=3))}, "spec": {}}
    t = table_for("widgets", [cr], crd_columns=[], include_object="Object", now=NOW)
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Age"]
    assert t["rows"][0] == {"cells": ["a", "3d"], "object": cr}
    t = table_for("widgets", [cr], crd_columns=[], include_object="None", now=NOW)
    assert t["rows"][0]["object"] is None


def test_printer_column_jsonpath_filters_and_types() -> None:
    cr = {
        "metadata": {"name": "a"},
        "status": {
            "conditions": [
                {"type": "Synced", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "n": 2.0,
            "m": {"k": 1},
        },
    }
    cols = [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "N", "type": "integer", "jsonPath": ".status.n"},
        {"name": "M", "type": "string", "jsonPath": ".status.m"},
        {"name": "Missing", "type": "string", "jsonPath": ".status.nope"},
        {"name": "Bad", "type": "date", "jsonPath": ".metadata.name"},
    ]
    row = table_for("widgets", [cr], crd_columns=cols, now=NOW)["rows"][0]
    assert row["cells"] == ["a", "True", 2, '{"k":1}', None, "<invalid>"]
    assert jsonpath_find(cr, ".status.conditions[*].type") == ["Synced", "Ready"]
    assert jsonpath_find(cr, "{.status.conditions[-1].type}") == ["Ready"]
    assert jsonpath_find({"a": {"b.c": 1}}, ".a['b.c']") == [1]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (49 * 3600, "2d1h"),
        (10 * 86400, "10d"),
        (800 * 86400, "2y70d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text
