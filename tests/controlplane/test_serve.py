"""``fleet.controlplane.serve_control_plane``, the control plane's composition root, on the
in-memory apiserver and trio's autojump clock.

What the root adds to the loops (each tested alone beside it): the enabled loops
built over one set of informers and run together, ready once the informers have
listed, and a clean stop on cancellation. ``test_sandbox.py`` runs the same root
over HTTP against the sandbox, in real time.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio

from fleet.controlplane import ControlPlane, ControlPlaneSettings, serve_control_plane
from fleet.kube import ClusterConfig, MemoryApiserver
from tests.controlplane._helpers import eventually, node

CONFIG = ClusterConfig(server="https://memory.invalid")
"""Unused: the in-memory apiserver is passed as the transport."""
PODS = "/api/v1/namespaces/default/pods"

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
}  # fmt: skip


def cluster() -> MemoryApiserver:
    """Two Ready nodes and a Deployment of 3, as a user leaves them before the loops start."""
    api = MemoryApiserver(graceful_pod_deletion=False)
    for name in ("n1", "n2"):
        api.create("/api/v1/nodes", node(name))
    api.create("/apis/apps/v1/deployments", DEPLOYMENT)
    return api


async def test_serve_control_plane_runs_the_loops_together_and_stops_clean(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    api = cluster()
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[ControlPlane]) -> None:
        with scope:
            await serve_control_plane(
                CONFIG, transport=api, wall_clock=api.now, task_status=task_status
            )
        stopped.set()

    plane: ControlPlane = await nursery.start(serve)
    # Every loop on by default, as in a real cluster; reported once the informers listed.
    assert plane.scheduler is not None and plane.deployments is not None
    assert plane.replicasets is not None and plane.gc is not None
    assert {c.path for c in api.log("GET")} >= {
        "/api/v1/pods",
        "/api/v1/nodes",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/replicasets",
    }

    # Deployment -> ReplicaSet -> pods -> bound, through the one set of informers.
    def bound() -> list[str]:
        names = [p["spec"].get("nodeName") for p in api.items(PODS)]
        return names if len(names) == 3 and all(names) else []

    assert set(await eventually(bound, within=10)) <= {"n1", "n2"}

    # Cancelled: every loop stops at once, and no request follows.
    cancelled = trio.current_time()
    scope.cancel()
    await stopped.wait()
    assert trio.current_time() == cancelled
    calls = len(api.calls)
    await trio.sleep(60)
    assert len(api.calls) == calls


async def test_serve_control_plane_runs_only_the_loops_switched_on(
    autojump_clock: trio.abc.Clock, nursery: trio.Nursery
) -> None:
    """Beside a real kube-scheduler (``up --control-plane real``): no scheduler of ours, so
    the pods the other loops create stay unbound."""
    api = cluster()
    settings = ControlPlaneSettings(scheduler=False)
    plane: ControlPlane = await nursery.start(
        partial(serve_control_plane, CONFIG, settings, transport=api, wall_clock=api.now)
    )
    assert plane.scheduler is None and plane.deployments is not None
    await eventually(lambda: len(api.items(PODS)) == 3, within=10)
    await trio.sleep(30)
    assert [p["spec"].get("nodeName") for p in api.items(PODS)] == [None] * 3
    assert not api.log("POST", PODS, containing="/binding")
    nursery.cancel_scope.cancel()
