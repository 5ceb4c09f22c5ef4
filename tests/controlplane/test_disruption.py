"""The disruption controller against the in-memory apiserver, on the autojump clock."""

from __future__ import annotations

from typing import Any

import trio

from fleet.controlplane._disruption import DisruptionController
from fleet.controlplane._informer import Informers
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, mark_ready, pod

PDBS = "/apis/policy/v1/namespaces/default/poddisruptionbudgets"


def pdb(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec},
    }  # fmt: skip


def status(api: MemoryApiserver, name: str) -> dict[str, Any]:
    found = api.get(f"{PDBS}/{name}")
    assert found is not None
    return dict(found.get("status") or {})


async def test_budgets_count_healthy_pods_against_their_controllers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = DisruptionController(Rest(api), informers, wall_clock=api.now)
    await nursery.start(controller.run)
    await nursery.start(informers.run)
    rs = api.create(
        "/apis/apps/v1/namespaces/default/replicasets",
        {"apiVersion": "apps/v1", "kind": "ReplicaSet",
         "metadata": {"name": "web", "namespace": "default"},
         "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "image": "x"}]}}}},
    )  # fmt: skip
    for i in range(3):
        body = pod(f"web-{i}", labels={"app": "web"}, node_name="n1")
        body["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
             "uid": rs["metadata"]["uid"], "controller": True}
        ]  # fmt: skip
        api.create("/api/v1/namespaces/default/pods", body)
    api.create(PDBS, pdb("max", maxUnavailable=1))
    api.create(PDBS, pdb("min", minAvailable=2))
    await eventually(lambda: status(api, "max").get("expectedPods") == 4)
    assert status(api, "max")["desiredHealthy"] == 3  # replicas 4, at most 1 unavailable
    assert status(api, "max")["disruptionsAllowed"] == 0
    cond = status(api, "max")["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == (
        "DisruptionAllowed", "False", "InsufficientPods",
    )  # fmt: skip
    for i in range(3):
        mark_ready(api, "default", f"web-{i}")
    await eventually(lambda: status(api, "min").get("disruptionsAllowed") == 1)
    st = status(api, "min")
    assert (st["expectedPods"], st["currentHealthy"], st["desiredHealthy"]) == (3, 3, 2)
    assert st["conditions"][0]["reason"] == "SufficientPods"
    assert st["observedGeneration"] == 1
    assert status(api, "max")["disruptionsAllowed"] == 0  # 3 healthy of the 3 needed
