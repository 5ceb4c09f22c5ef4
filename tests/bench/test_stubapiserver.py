"""The bench's stub apiserver answers the shard Lease's renewal as kube-apiserver does: a
JSON patch whose ``test`` of the holder must pass (the shard renews by one since 8e3817c; a
stub without it fenced the bench's shard and bench shard-scrape failed every request)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bench._stubapiserver import Population, StubServer
from fleet.api import load_mock_status

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kubemock-fleet/leases"


def _reply(raw: bytes | None) -> tuple[int, dict[str, Any]]:
    assert raw is not None
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def _patch(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps(ops).encode()


def test_shard_lease_renewed_by_a_json_patch_that_tests_the_holder() -> None:
    stub = StubServer(Population(1, 1), 10.0)
    lease = {"metadata": {"name": "shard-0"}, "spec": {"holderIdentity": "shard-0-a"}}
    created, _ = _reply(stub.handle(None, "POST", LEASES, json.dumps(lease).encode()))  # type: ignore[arg-type]
    assert created == 201
    renew = [
        {"op": "test", "path": "/spec/holderIdentity", "value": "shard-0-a"},
        {"op": "add", "path": "/spec/renewTime", "value": "2026-01-01T00:00:00.000000Z"},
    ]
    code, renewed = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-0", _patch(renew)))  # type: ignore[arg-type]
    assert code == 200
    assert renewed["spec"] == {
        "holderIdentity": "shard-0-a",
        "renewTime": "2026-01-01T00:00:00.000000Z",
    }
    taken = [{"op": "test", "path": "/spec/holderIdentity", "value": "shard-0-b"}, *renew[1:]]
    code, refused = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-0", _patch(taken)))  # type: ignore[arg-type]
    assert (code, refused["reason"]) == (422, "Invalid")
    missing, _ = _reply(stub.handle(None, "PATCH", f"{LEASES}/shard-9", _patch(renew)))  # type: ignore[arg-type]
    assert missing == 404


def test_a_pod_is_read_back_with_the_status_written_and_event_repeats_are_answered() -> None:
    # A shard lets go of a settled pod's status and reads it back with a GET before its next
    # change (a crash loop's next restart); a stub answering 404 froze those pods' loops.
    stub = StubServer(Population(2, 4), 10.0)
    pods = "/api/v1/namespaces/default/pods"
    running = {"status": {"phase": "Running"}}
    patched, _ = _reply(
        stub.handle(None, "PATCH", f"{pods}/pod-000003/status", json.dumps(running).encode())  # type: ignore[arg-type]
    )
    assert patched == 200
    code, pod = _reply(stub.handle(None, "GET", f"{pods}/pod-000003", b""))  # type: ignore[arg-type]
    assert code == 200
    assert pod["metadata"]["uid"] == "pod-uid-00000003"
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"] == "node-00001"
    missing, _ = _reply(stub.handle(None, "GET", f"{pods}/pod-000004", b""))  # type: ignore[arg-type]
    assert missing == 404
    repeat = {"count": 2, "lastTimestamp": "2026-01-01T00:00:00Z", "message": "m"}
    event = "/api/v1/namespaces/default/events/p.1"
    code, _ = _reply(stub.handle(None, "PATCH", event, json.dumps(repeat).encode()))  # type: ignore[arg-type]
    assert code == 200
    assert stub.totals["pod_get"] == 2 and stub.totals["event_patch"] == 1


def test_the_bench_policy_example_is_valid_and_matches_every_stub_pod() -> None:
    # examples/bench-policy.yaml is what docs/performance.md's "every pod matches a policy"
    # figure ran: it must select the stub's pods and name their container.
    path = Path(__file__).resolve().parents[2] / "examples" / "bench-policy.yaml"
    (raw,) = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    policy = load_mock_status(raw)
    assert policy.spec.selector is not None
    pod = Population(10, 100).pod(7)
    wanted = policy.spec.selector.match_labels or {}
    assert wanted and wanted.items() <= pod["metadata"]["labels"].items()
    named = {
        c["name"] for branch in raw["spec"]["branches"] for step in branch["steps"]
        for c in step.get("containers", [])
    }  # fmt: skip
    assert named == {c["name"] for c in pod["spec"]["containers"]}
    assert sum(branch["weight"] for branch in raw["spec"]["branches"]) == 100
