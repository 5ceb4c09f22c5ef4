"""Node lifecycle on the in-memory apiserver: heartbeats, taints, evictions, recovery."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from fleet.controlplane._informer import Informers
from fleet.controlplane._nodelifecycle import (
    NodeLifecycleController,
    NodeLifecycleSettings,
    eviction_delay,
)
from fleet.controlplane._rest import Rest
from fleet.kube import MemoryApiserver
from tests.controlplane._helpers import eventually, node, pod

stamp = MemoryApiserver.stamp

UNREACHABLE = "node.kubernetes.io/unreachable"


@dataclass
class Kubelet:
    """Renews one node's Lease every 10 s while ``alive``."""

    api: MemoryApiserver
    name: str
    alive: bool = True
    renewals: list[float] = field(default_factory=list)

    async def run(self) -> None:
        self.api.create("/apis/coordination.k8s.io/v1/leases", {
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": self.name, "leaseDurationSeconds": 40,
                     "renewTime": stamp(self.api.now())}})  # fmt: skip
        while True:
            await trio.sleep(10)
            if self.alive:
                lease = self.api.get(
                    f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
                )
                assert lease is not None
                lease["spec"]["renewTime"] = (
                    f"{stamp(self.api.now())[:-1]}.{len(self.renewals):06d}Z"
                )
                self.api.update("/apis/coordination.k8s.io/v1/leases", lease)
                self.renewals.append(trio.current_time())


@dataclass
class Env:
    api: MemoryApiserver
    controller: NodeLifecycleController
    kubelet: Kubelet

    def node(self) -> dict[str, Any]:
        obj = self.api.get("/api/v1/nodes/n1")
        assert obj is not None
        return obj

    def ready(self) -> tuple[str, str]:
        cond = next(c for c in self.node()["status"]["conditions"] if c["type"] == "Ready")
        return cond["status"], cond.get("reason", "")

    def taints(self) -> set[tuple[str, str]]:
        return {(t["key"], t["effect"]) for t in self.node()["spec"].get("taints") or []}

    def pod_names(self) -> set[str]:
        return {p["metadata"]["name"] for p in self.api.items("/api/v1/pods")}


@pytest.fixture
async def env(nursery: trio.Nursery) -> AsyncIterator[Env]:
    api = MemoryApiserver(graceful_pod_deletion=False)
    api.create("/api/v1/nodes", node("n1", taints=[{"key": "other", "effect": "NoSchedule"}]))
    # A second node that stays Ready: with none Ready, kube-controller-manager taints
    # nothing NoExecute ("master disruption"; test_no_ready_node_left_taints_nothing_noexecute).
    api.create("/api/v1/nodes", node("live"))
    kubelet = Kubelet(api, "n1")
    nursery.start_soon(kubelet.run)
    nursery.start_soon(Kubelet(api, "live").run)
    informers = Informers(api)
    controller = NodeLifecycleController(
        Rest(api), informers, NodeLifecycleSettings(), wall_clock=api.now
    )
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    yield Env(api, controller, kubelet)


def test_eviction_delay() -> None:
    assert eviction_delay([], 300) == 300
    assert eviction_delay([{"key": "other", "operator": "Exists"}], 300) == 300
    assert (
        eviction_delay([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}], 300)
        is None
    )
    assert eviction_delay([{"operator": "Exists"}], 300) is None
    assert (
        eviction_delay(
            [
                {
                    "key": UNREACHABLE,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                },
                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 30},
            ],
            300,
        )
        == 30
    )


async def test_live_node_is_left_alone(env: Env, autojump_clock: trio.testing.MockClock) -> None:
    await trio.sleep(600)
    assert env.ready() == ("True", "KubeletReady")
    assert env.taints() == {("other", "NoSchedule")}
    assert not env.api.log("PATCH", containing="/nodes/")


async def test_silent_node_goes_unknown_tainted_pods_evicted_then_recovers(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    tolerate = {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    env.api.create("/api/v1/pods", pod("plain", node_name="n1"))
    env.api.create(
        "/api/v1/pods",
        pod("short", node_name="n1", spec={"tolerations": [{**tolerate, "tolerationSeconds": 60}]}),
    )
    env.api.create("/api/v1/pods", pod("forever", node_name="n1", spec={"tolerations": [tolerate]}))
    env.api.create("/api/v1/pods", pod("elsewhere", node_name="n2"))
    await trio.sleep(95)
    env.kubelet.alive = False
    last = env.kubelet.renewals[-1]
    await eventually(lambda: env.ready()[0] == "Unknown", within=120)
    assert 40 < trio.current_time() - last <= 40 + 5 + 0.5
    assert env.ready() == ("Unknown", "NodeStatusUnknown")
    ready = next(c for c in env.node()["status"]["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "Kubelet stopped posting node status."
    # In the same pass: the taint write is conditional on the status write's version (on
    # the one read before, it conflicted and waited for the next pass, 5 s on).
    await eventually(lambda: (UNREACHABLE, "NoExecute") in env.taints(), within=1)
    tainted = trio.current_time()
    assert env.taints() == {
        ("other", "NoSchedule"),
        (UNREACHABLE, "NoSchedule"),
        (UNREACHABLE, "NoExecute"),
    }

    await eventually(lambda: "short" not in env.pod_names(), within=120)
    assert 60 <= trio.current_time() - tainted <= 60 + 5 + 0.5
    assert "plain" in env.pod_names()
    await eventually(lambda: "plain" not in env.pod_names(), within=400)
    assert 300 <= trio.current_time() - tainted <= 300 + 5 + 0.5
    await trio.sleep(600)
    assert env.pod_names() == {"forever", "elsewhere"}
    assert env.controller.evictions == 2

    env.kubelet.alive = True
    # Heard from again, but Ready is still Unknown: the taints stay (the real controller
    # removes them only once the kubelet reports Ready=True).
    await trio.sleep(30)
    assert (UNREACHABLE, "NoExecute") in env.taints()
    env.api.patch(
        "/api/v1/nodes/n1/status",
        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}},
    )
    await eventually(lambda: UNREACHABLE not in {k for k, _ in env.taints()}, within=30)
    assert env.taints() == {("other", "NoSchedule")}
    await trio.sleep(100)
    assert env.taints() == {("other", "NoSchedule")}


async def test_a_ready_node_loses_the_admission_not_ready_taint(
    env: Env, autojump_clock: trio.testing.MockClock
) -> None:
    # A real kube-apiserver's TaintNodesByCondition admission taints every new Node
    # not-ready:NoSchedule; with no kube-controller-manager (envtest's binaries) this loop
    # must take it off once the node is Ready, or nothing is ever scheduled there.
    env.api.create("/api/v1/nodes", node("n2", taints=[
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
        {"key": "other", "effect": "NoSchedule"}]))  # fmt: skip
    env.api.create("/api/v1/nodes", node("n3", ready="False", taints=[
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]))  # fmt: skip
    await trio.sleep(11)  # two monitor passes: the first only notes a node it has not seen

    def taints(name: str) -> set[tuple[str, str]]:
        obj = env.api.get(f"/api/v1/nodes/{name}")
        assert obj is not None
        return {(t["key"], t["effect"]) for t in obj["spec"].get("taints") or []}

    assert taints("n2") == {("node.kubernetes.io/not-ready", "NoExecute"), ("other", "NoSchedule")}
    assert taints("n3") == {("node.kubernetes.io/not-ready", "NoSchedule")}  # not Ready: kept


async def _cluster(
    nursery: trio.Nursery, count: int, *, labels: dict[str, str] | None = None
) -> tuple[MemoryApiserver, list[Kubelet]]:
    """``count`` nodes ``m0``... with a live kubelet each and the controller's defaults."""
    api = MemoryApiserver(graceful_pod_deletion=False)
    kubelets = []
    for i in range(count):
        api.create("/api/v1/nodes", node(f"m{i}", labels=labels))
        kubelets.append(Kubelet(api, f"m{i}"))
        nursery.start_soon(kubelets[-1].run)
    informers = Informers(api)
    controller = NodeLifecycleController(
        Rest(api), informers, NodeLifecycleSettings(), wall_clock=api.now
    )
    await nursery.start(informers.run)
    await nursery.start(controller.run)
    await trio.sleep(15)  # every node heard from
    return api, kubelets


def _no_execute(api: MemoryApiserver) -> set[str]:
    return {
        n["metadata"]["name"]
        for n in api.items("/api/v1/nodes")
        if (UNREACHABLE, "NoExecute")
        in {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
    }


def _no_schedule(api: MemoryApiserver) -> set[str]:
    return {
        n["metadata"]["name"]
        for n in api.items("/api/v1/nodes")
        if (UNREACHABLE, "NoSchedule")
        in {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}
    }


async def test_noexecute_taints_come_one_per_10_s_in_a_healthy_zone(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A bench partition on kube-controller-manager tainted 2 of 10 silent nodes (the sandbox:
    all 10): its tainting queue takes one node per 1/--node-eviction-rate (10 s) a zone."""
    api, kubelets = await _cluster(nursery, 10)
    for kubelet in kubelets[:3]:  # 30 %: the zone stays healthy
        kubelet.alive = False
    await eventually(lambda: _no_schedule(api) == {"m0", "m1", "m2"}, within=60)
    start = trio.current_time()
    assert len(_no_execute(api)) == 1  # the bucket's one token: at once
    await eventually(lambda: len(_no_execute(api)) == 2, within=20)
    assert 10 - 5 <= trio.current_time() - start <= 10 + 5 + 0.5  # the next, 10 s on
    await eventually(lambda: len(_no_execute(api)) == 3, within=20)
    assert 20 - 5 <= trio.current_time() - start <= 20 + 5 + 0.5
    assert _no_execute(api) == {"m0", "m1", "m2"}


async def test_a_small_partially_disrupted_zone_taints_none_noexecute(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """3 of 5 nodes silent: at least 55 % and more than 2, in a zone of 50 nodes or fewer:
    kube-controller-manager stops tainting (and so evicting) there."""
    api, kubelets = await _cluster(nursery, 5)
    for kubelet in kubelets[:3]:
        kubelet.alive = False
    await eventually(lambda: _no_schedule(api) == {"m0", "m1", "m2"}, within=60)
    await trio.sleep(600)
    assert _no_execute(api) == set()


async def test_no_ready_node_left_taints_nothing_noexecute(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The last Ready node going silent puts every zone in full disruption: the NoExecute
    taints there are taken off, none is added ("master disruption"), until one is back."""
    api, kubelets = await _cluster(nursery, 2, labels={"topology.kubernetes.io/zone": "a"})
    kubelets[0].alive = False
    await eventually(lambda: _no_execute(api) == {"m0"}, within=60)
    kubelets[1].alive = False
    await eventually(lambda: _no_schedule(api) == {"m0", "m1"}, within=60)
    await eventually(lambda: _no_execute(api) == set(), within=10)
    await trio.sleep(300)
    assert _no_execute(api) == set()
