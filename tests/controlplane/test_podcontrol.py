"""Deleting a controller's pods: uid preconditions, expectations, retries, Events."""

from __future__ import annotations

import logging

import msgspec
import pytest
import trio

from fleet.controlplane._events import EventRecorder
from fleet.controlplane._informer import Informers
from fleet.controlplane._podcontrol import RETRY_AFTER_FAILURE, Expectations, PodDeleter
from fleet.controlplane._queue import WorkQueue
from fleet.controlplane._resources import REPLICASETS, KObject
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, pod

RS = "/apis/apps/v1/namespaces/default/replicasets"
PODS = "/api/v1/namespaces/default/pods"


def view(obj: dict[str, object]) -> KObject:
    return msgspec.json.decode(msgspec.json.encode(obj), type=KObject)


async def test_gone_replaced_and_deleted_pods(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    api = MemoryApiserver(graceful_pod_deletion=False)
    informers = Informers(api)
    owners = informers.get(REPLICASETS)
    recorder = EventRecorder(Rest(api), wall_clock=api.now)
    await nursery.start(informers.run)
    await nursery.start(recorder.run)
    api.create(RS, {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": "web", "namespace": "default"}, "spec": {}})  # fmt: skip
    await eventually(lambda: owners.store.get("default/web"))
    kept = view(api.create(PODS, pod("kept")))
    api.create(PODS, pod("replaced"))
    # Pods as the controller last saw them: one since gone, one since made again (another uid).
    gone = view({**pod("gone"), "metadata": {"name": "gone", "namespace": "default", "uid": "a"}})
    replaced = view(
        {**pod("replaced"), "metadata": {"name": "replaced", "namespace": "default", "uid": "b"}}
    )
    expectations = Expectations(300.0, trio.current_time)
    queue = WorkQueue("replicasets", clock=trio.current_time)
    deleter = PodDeleter(
        Rest(api), owners, REPLICASETS, "replicaset-controller", expectations, queue, recorder
    )

    with caplog.at_level(logging.INFO, logger="fleet.controlplane"):
        await deleter.delete("default/web", [kept, gone, replaced])

    # The pods gone and refused count as observed; the deleted one waits for the pod watch.
    assert not expectations.satisfied("default/web")
    expectations.observe("default/web", deletes=1)
    assert expectations.satisfied("default/web")
    names = {p["metadata"]["name"] for p in api.items(PODS)}
    assert names == {"replaced"}  # the new pod of that name is untouched
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("replicaset default/web: deleting pod replaced failed: 409")
    # The owner is synced again RETRY_AFTER_FAILURE later.
    began = trio.current_time()
    nursery.start_soon(queue.run_timer)
    assert await queue.get() == "default/web"
    assert trio.current_time() == began + RETRY_AFTER_FAILURE
    await eventually(lambda: len(api.items("/api/v1/namespaces/default/events")) == 2)
    events = api.items("/api/v1/namespaces/default/events")
    assert sorted((e["reason"], e["message"]) for e in events) == [
        ("SuccessfulDelete", "Deleted pod: gone"),  # already gone: done all the same
        ("SuccessfulDelete", "Deleted pod: kept"),
    ]
    assert {e["involvedObject"]["kind"] for e in events} == {"ReplicaSet"}


async def test_nothing_to_delete_expects_nothing(autojump_clock: trio.testing.MockClock) -> None:
    api = MemoryApiserver()
    expectations = Expectations(300.0, trio.current_time)
    deleter = PodDeleter(
        Rest(api), Informers(api).get(REPLICASETS), REPLICASETS, "replicaset-controller",
        expectations, WorkQueue("replicasets", clock=trio.current_time), EventRecorder(None),
    )  # fmt: skip
    await deleter.delete("default/web", [])
    expectations.observe("default/web", adds=1)
    assert expectations.satisfied("default/web")
