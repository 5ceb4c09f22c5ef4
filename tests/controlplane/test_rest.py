"""The loops' ``Rest``: fleet.kube's verbs; ``delete`` still takes the old short keywords."""

from __future__ import annotations

import json

from fleet.controlplane._rest import Rest
from fleet.kube import FakeApiserver, FakeRequest, Response, json_response
from fleet.kube import Rest as KubeRest


async def test_delete_takes_the_old_keywords() -> None:
    def handler(request: FakeRequest) -> Response:
        return json_response({})

    fake = FakeApiserver(handler)
    rest = Rest(fake)
    assert isinstance(rest, KubeRest)
    await rest.delete(
        "/api/v1/namespaces/d/pods/p", uid="u", propagation="Background", grace_seconds=0
    )
    await rest.delete("/api/v1/namespaces/d/pods/p", preconditions_uid="u", grace_period_seconds=3)
    old, new = (json.loads(r.body or b"") for r in fake.requests)
    assert old == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "u"},
        "propagationPolicy": "Background",
        "gracePeriodSeconds": 0,
    }
    assert new["preconditions"] == {"uid": "u"} and new["gracePeriodSeconds"] == 3
