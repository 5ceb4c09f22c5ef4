"""CPU the DaemonSet controller's syncs take over N nodes, in-process, on trio's mock clock.

Run from the repository root (``PYTHONPATH`` chooses the tree measured, e.g. an older
commit's ``git archive``)::

    .venv/bin/python tools/daemonset_sync_cpu.py 5000

One DaemonSet over N nodes of an in-memory apiserver (no HTTP, no scheduler): its pods
are made, then turn Ready 200 at a time every half second (what kubelets report). Prints
the syncs, the process CPU inside them (``time.process_time``) and the final status; the
wall clock is the mock clock's, so the figure is the controller's work, not the box's load.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import trio
import trio.testing

from fleet.controlplane import DaemonSetController, Informers, Rest
from fleet.kube import MemoryApiserver

DS = "/apis/apps/v1/namespaces/default/daemonsets"
PODS = "/api/v1/namespaces/default/pods"
READY_PER_STEP = 200
"""Pods turned Ready per half second."""
MAX_POLLS = 10_000
"""Half seconds (mock clock) to wait for every pod at most."""


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


def _ready(api: MemoryApiserver, name: str) -> None:
    stamp = MemoryApiserver.stamp
    api.patch(
        f"{PODS}/{name}/status",
        {"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(api.now())}]}},
    )  # fmt: skip


async def _measure(nodes: int) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    controller = DaemonSetController(Rest(api), informers, wall_clock=api.now)
    syncs, cpu = 0, 0.0
    sync_set = controller._sync_set

    async def counted(key: str, ds: Any) -> None:
        nonlocal syncs, cpu
        syncs += 1
        started = time.process_time()
        await sync_set(key, ds)
        cpu += time.process_time() - started

    controller._sync_set = counted  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(informers.run)
        await nursery.start(controller.run)
        for i in range(nodes):
            api.create("/api/v1/nodes", _node(f"n{i:05}"))
        await trio.sleep(1)
        api.create(DS, {
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"containers": [{"name": "c", "image": "agent"}]}}},
        })  # fmt: skip
        for _ in range(MAX_POLLS):
            if len(api.items(PODS)) >= nodes:
                break
            await trio.sleep(0.5)
        names = [p["metadata"]["name"] for p in api.items(PODS)]
        for i in range(0, nodes, READY_PER_STEP):
            for name in names[i : i + READY_PER_STEP]:
                _ready(api, name)
            await trio.sleep(0.5)
        await trio.sleep(5)
        found = api.get(f"{DS}/agent") or {}
        status = found.get("status") or {}
        stats = getattr(controller, "statistics", None)
        print(
            f"nodes {nodes}: {syncs} syncs, {cpu:.2f} CPU-s in them; ready "
            f"{status.get('numberReady')}/{status.get('desiredNumberScheduled')}"
            + (f"; {stats()}" if stats is not None else "")
        )
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(_measure, int(sys.argv[1]), clock=trio.testing.MockClock(autojump_threshold=0))
