"""The bench's stub apiserver answers the shard Lease's renewal as kube-apiserver does: a
JSON patch whose ``test`` of the holder must pass (the shard renews by one since 8e3817c; a
stub without it fenced the bench's shard and bench shard-scrape failed every request)."""

from __future__ import annotations

import json
from typing import Any

from bench._stubapiserver import Population, StubServer

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
