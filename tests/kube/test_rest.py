"""The verb layer over a requester that is not httpx: the same verbs, the same errors."""

from __future__ import annotations

import json

import pytest

from fleet.errors import Conflict, NotFound, ProtocolError
from fleet.kube import (
    BatchRequest,
    FakeApiserver,
    FakeRequest,
    MemoryApiserver,
    Response,
    Rest,
    json_response,
    status_response,
)

PODS = "/api/v1/namespaces/default/pods"


def _pod(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {}}


async def test_verbs_over_the_memory_apiserver() -> None:
    rest = Rest(MemoryApiserver(graceful_pod_deletion=False))
    created = await rest.create(PODS, _pod("a"), field_manager="bench")
    uid = created["metadata"]["uid"]
    assert (await rest.get(f"{PODS}/a"))["metadata"]["uid"] == uid
    patched = await rest.merge_patch(f"{PODS}/a", {"metadata": {"labels": {"x": "1"}}})
    assert patched["metadata"]["labels"] == {"x": "1"}
    with pytest.raises(Conflict):
        await rest.delete(f"{PODS}/a", preconditions_uid="not-" + uid)
    listed = await rest.list(PODS, label_selector="x=1")
    assert [p["metadata"]["name"] for p in listed.items] == ["a"]
    await rest.delete(f"{PODS}/a", preconditions_uid=uid, grace_period_seconds=0)
    with pytest.raises(NotFound):
        await rest.get(f"{PODS}/a")


async def test_what_reaches_the_requester() -> None:
    def handler(request: FakeRequest) -> Response:
        if request.method == "GET" and request.path == f"{PODS}/html":
            return Response(200, b"<html>")
        if request.method == "GET" and request.path == f"{PODS}/gone":
            return status_response(404, "NotFound")
        if request.method == "DELETE":
            return Response(200, b"")  # an empty 2xx body decodes as {}
        return json_response({"kind": "Pod"})

    fake = FakeApiserver(handler)
    rest = Rest(fake)
    assert await rest.delete(f"{PODS}/a", preconditions_uid="", propagation_policy="Orphan") == {}
    await rest.patch(f"{PODS}/a", [{"op": "add", "path": "/x", "value": 1}], patch_type="json")
    with pytest.raises(NotFound):
        await rest.get(f"{PODS}/gone")
    with pytest.raises(ProtocolError, match="not a JSON object"):
        await rest.get(f"{PODS}/html")
    delete, patch = fake.requests[:2]
    assert delete.body is not None
    # An empty uid names no object: no precondition.
    assert json.loads(delete.body) == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Orphan",
    }
    assert patch.content_type == "application/json-patch+json"
    # The seam passes through, batches included.
    answers = await rest.request_batch([BatchRequest("GET", f"{PODS}/a")] * 2)
    assert [a.status for a in answers if isinstance(a, Response)] == [200, 200]
