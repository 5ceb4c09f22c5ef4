"""deploy/ keeps the fleet's own pods off the fake nodes its shards register."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleet.wire import SHARD_LABEL
from shards._nodeobj import KubeletSpec, node_labels

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def workload(kind: str, name: str) -> dict[str, Any]:
    for path in DEPLOY.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
                found: dict[str, Any] = doc
                return found
    raise AssertionError(f"no {kind} {name} in deploy/")


def selects(term: dict[str, Any], labels: dict[str, str]) -> bool:
    """A nodeSelectorTerm's matchExpressions against a Node's labels, as the scheduler reads them."""
    for expr in term.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "kubemock-fleet-coordinator"), ("StatefulSet", "kubemock-fleet-shard")],
)
def test_the_fleet_stays_off_its_own_fake_nodes(kind: str, name: str) -> None:
    pod = workload(kind, name)["spec"]["template"]["spec"]
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    terms = required["nodeSelectorTerms"]
    fake = KubeletSpec(name="fake-1", internal_ips=("240.0.0.1",), capacity={"cpu": "1"})
    # What a shard registers (its label wins over the CR's), and what an older one did.
    labelled = node_labels(dataclasses.replace(fake, labels={SHARD_LABEL: "0"}))
    for labels in (labelled, node_labels(fake)):
        assert not any(selects(t, labels) for t in terms), labels
    real = {"kubernetes.io/hostname": "worker-1", "kubernetes.io/os": "linux"}
    assert any(selects(t, real) for t in terms)
