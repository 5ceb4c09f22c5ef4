"""The seam's one default: ``BaseRequester.request_batch`` sends one request after the other."""

from __future__ import annotations

import pytest
import trio

from fleet.errors import ConnectError, InputError
from fleet.kube import (
    BaseRequester,
    BatchRequest,
    FakeApiserver,
    FakeRequest,
    Response,
    json_response,
)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


async def test_default_request_batch_sends_one_by_one_with_errors_in_place(
    autojump_clock: trio.abc.Clock,
) -> None:
    in_flight = 0

    async def handler(request: FakeRequest) -> Response:
        nonlocal in_flight
        in_flight += 1
        assert in_flight == 1, "one at a time"
        await trio.sleep(0.1)
        in_flight -= 1
        if request.path.endswith("/cut"):
            raise ConnectError("cut")
        return json_response({"path": request.path})

    fake = FakeApiserver(handler)
    assert type(fake).request_batch is BaseRequester.request_batch
    batch = [
        BatchRequest("PUT", f"{LEASES}/a", {"fieldManager": "m"}, b"{}", "application/json"),
        BatchRequest("PUT", f"{LEASES}/cut", None, b"{}", "application/json"),
        BatchRequest("GET", f"{LEASES}/b"),
    ]
    answers = await fake.request_batch(batch)
    assert trio.current_time() == pytest.approx(0.3)
    assert [a.status if isinstance(a, Response) else type(a) for a in answers] == [
        200,
        ConnectError,
        200,
    ]
    sent = fake.log()
    assert [(r.method, r.path) for r in sent] == [(b.method, b.path) for b in batch]
    assert sent[0].params == {"fieldManager": "m"}
    assert sent[0].body == b"{}" and sent[0].content_type == "application/json"


async def test_default_request_batch_raises_what_is_not_a_transport_error() -> None:
    async def handler(request: FakeRequest) -> Response:
        raise InputError("bad path")

    with pytest.raises(InputError):
        await FakeApiserver(handler).request_batch([BatchRequest("GET", f"{LEASES}/a")])
