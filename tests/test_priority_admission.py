"""PriorityClasses at pod admission, on the sandbox and kube-apiserver alike (the Priority
admission plugin): the class's value and preemption policy copied into the pod, the global
default applied by name, an unknown class refused, one global default at most, the system
classes present and their prefix reserved."""

from __future__ import annotations

import json
from typing import Any

from fleet.kube import Client, load_config
from tests._apiserver import Apiserver, unique

PCS = "/apis/scheduling.k8s.io/v1/priorityclasses"


async def _call(client: Client, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    r = await client.request(
        method, path, body=data, content_type="application/json" if data else None
    )
    return r.status, json.loads(r.content) if r.content else None


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "schedulerName": "none",
            **spec,
        },
    }


async def test_priority_admission(apiserver: Apiserver) -> None:
    ns, high, default = unique("priority"), unique("high"), unique("default")
    pods = f"/api/v1/namespaces/{ns}/pods"
    async with Client(load_config(apiserver.kubeconfig)) as client:
        _, system = await _call(client, "GET", f"{PCS}/system-node-critical")
        assert system["value"] == 2000001000
        status, err = await _call(
            client, "POST", PCS, {"metadata": {"name": "system-mine"}, "value": 1}
        )
        assert status == 422 and err["details"]["causes"][0]["field"] == "metadata.name"
        await _call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        status, _ = await _call(
            client, "POST", PCS,
            {"metadata": {"name": high}, "value": 1000, "preemptionPolicy": "Never"},
        )  # fmt: skip
        assert status == 201

        _, plain = await _call(client, "POST", pods, _pod("plain"))
        assert plain["spec"]["priority"] == 0
        assert plain["spec"]["preemptionPolicy"] == "PreemptLowerPriority"
        assert "priorityClassName" not in plain["spec"]

        _, named = await _call(client, "POST", pods, _pod("named", priorityClassName=high))
        assert (named["spec"]["priority"], named["spec"]["preemptionPolicy"]) == (1000, "Never")

        status, err = await _call(client, "POST", pods, _pod("unknown", priorityClassName="nope"))
        assert status == 403
        assert (
            err["message"]
            == 'pods "unknown" is forbidden: no PriorityClass with name nope was found'
        )
        status, err = await _call(
            client, "POST", pods, _pod("sent", priorityClassName=high, priority=5)
        )
        assert (
            status == 403
            and "the integer value of priority (5) must not be provided" in err["message"]
        )

        status, _ = await _call(
            client, "POST", PCS, {"metadata": {"name": default}, "value": 7, "globalDefault": True}
        )
        assert status == 201
        try:
            status, err = await _call(
                client, "POST", PCS,
                {"metadata": {"name": unique("second")}, "value": 8, "globalDefault": True},
            )  # fmt: skip
            assert status == 403
            assert f"PriorityClass {default} is already marked as default" in err["message"]
            _, defaulted = await _call(client, "POST", pods, _pod("defaulted"))
            assert defaulted["spec"]["priorityClassName"] == default
            assert defaulted["spec"]["priority"] == 7
        finally:
            # A global default left behind would change every later pod on the shared server.
            await _call(client, "DELETE", f"{PCS}/{default}")
            await _call(client, "DELETE", f"{PCS}/{high}")
            await _call(client, "DELETE", f"/api/v1/namespaces/{ns}")
