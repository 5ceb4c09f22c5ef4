"""Node scripts end to end: ``examples/nodescripts.yaml`` on ``up``, and one shard's node
following a NodeScript on the sandbox and on the real control plane.

Real delays of a few seconds (the scripts' steps); the details are tested on the autojump
clock in test_nodescripts.py.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from fleet._settings import FleetSettings, ShardSettings
from fleet.api import load_node_script
from fleet.kube import Client, HotTransport, load_config
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine, compile_node_script
from tests._apiserver import Apiserver, install_fleet_crds, unique
from tests._up_process import kubectl, kubectl_json, up_process, wait_until

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nodescripts.yaml"
CRS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes"
SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodescripts"


def _condition(node: dict[str, Any], kind: str) -> str:
    for c in node.get("status", {}).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return ""


def test_example_node_scripts_validate() -> None:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text(encoding="utf-8")))
    scripts = {d["metadata"]["name"]: load_node_script(d) for d in docs}
    assert set(scripts) == {"disk-trouble", "flappy"}
    assert scripts["flappy"].spec.priority > scripts["disk-trouble"].spec.priority


@pytest.mark.kubectl
def test_example_on_up(tmp_path: Path) -> None:
    with up_process(tmp_path, "--nodes", "4") as up:
        kubectl(up.kubeconfig, "apply", "-f", str(EXAMPLE))

        def valid() -> bool:
            items = kubectl_json(up.kubeconfig, "get", "nodescripts", "-A")["items"]
            conditions = [(i.get("status") or {}).get("conditions") or [] for i in items]
            return len(items) == 2 and all(
                c and all(x["type"] == "Valid" and x["status"] == "True" for x in c)
                for c in conditions
            )

        wait_until(valid, 20, "both NodeScripts Valid=True")
        header = kubectl(up.kubeconfig, "get", "nscript", "-A").stdout.splitlines()[0].split()
        assert header == ["NAMESPACE", "NAME", "VALID", "PRIORITY", "PERCENT", "AGE"]
        script = kubectl_json(
            up.kubeconfig, "get", "nodescript", "disk-trouble", "-n", FLEET_NAMESPACE
        )
        timeline = compile_node_script(load_node_script(script), _created(script))
        names = [
            n["metadata"]["name"] for n in kubectl_json(up.kubeconfig, "get", "nodes")["items"]
        ]
        chosen = {n for n in names if timeline.applies(n)}
        assert len(names) == 4 and chosen  # half of them, by name (deterministic)

        def pressured() -> set[str] | None:
            nodes = kubectl_json(up.kubeconfig, "get", "nodes")["items"]
            hit = {n["metadata"]["name"] for n in nodes if _condition(n, "DiskPressure") == "True"}
            return hit if hit == chosen else None

        wait_until(pressured, 20, f"DiskPressure on {sorted(chosen)} only")
        for name in chosen:
            node = kubectl_json(up.kubeconfig, "get", "node", name)
            taints = {t["key"] for t in node["spec"].get("taints") or []}
            assert "example.com/disk-full" in taints
            assert node["status"]["capacity"]["pods"] == "10"
        events = kubectl_json(up.kubeconfig, "get", "events", "-n", "default")["items"]
        assert {
            e["involvedObject"]["name"] for e in events if e["reason"] == "NodeHasDiskPressure"
        } == chosen


def _created(obj: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))


async def test_a_node_follows_its_script_on_the_apiserver(
    nursery: trio.Nursery, apiserver: Apiserver
) -> None:
    """Conditions, a taint and capacity written as the kubelet writes them, then a kubelet
    restart; on the real control plane the node-lifecycle controller sees the condition."""
    config = load_config(apiserver.kubeconfig)
    async with Client(config) as client, HotTransport(config) as hot:
        await install_fleet_crds(client)  # the sandbox starts without them
        namespaces = {
            n["metadata"]["name"] for n in (await client.list("/api/v1/namespaces")).items
        }
        if FLEET_NAMESPACE not in namespaces:
            await client.create("/api/v1/namespaces", {"metadata": {"name": FLEET_NAMESPACE}})
        shard, name = unique("nscript"), unique("nscript-node")
        # On the real control plane its controller-manager allocates podCIDRs (one out of its
        # range makes it exit), as `up --control-plane real` tells its shards.
        shard_settings = (
            ShardSettings(pod_cidr_allocation="cluster")
            if apiserver.real is not None
            else ShardSettings(pod_cidr_allocation="shard")
        )
        settings = FleetSettings(shard=shard_settings)
        engine = ShardEngine(settings, shard, control=client, hot=hot)
        engine_scope = trio.CancelScope()

        async def run_engine(task_status: trio.TaskStatus[None]) -> None:
            with engine_scope:  # stopped before the client closes
                await engine.run(task_status=task_status)

        await nursery.start(run_engine)
        try:
            await _follow(client, apiserver, shard, name)
        finally:
            engine_scope.cancel()


def _taints(node: dict[str, Any]) -> set[str]:
    return {t["key"] for t in node["spec"].get("taints") or []}


# What kube-controller-manager (v1.24, as fleet.realcp runs it) does, and so how long the test
# waits for it. Its node-lifecycle controller taints a node by its conditions
# (TaintNodesByCondition: MemoryPressure=True -> node.kubernetes.io/memory-pressure:NoSchedule)
# on each Node update event (its nodeUpdateQueue), not on a period; but only once its caches
# have synced, and a fresh controller-manager starts its informers only after every controller
# has started, which the node-IPAM one (--allocate-node-cidrs) holds up by
# KCM_INFORMERS_HELD_AT_START.
KCM_INFORMERS_HELD_AT_START = 10.0
"""Seconds the node-IPAM controller's start takes: its listNodes polls every 10 s and waits
the first 10 s before trying (the realcp log: "node_ipam_controller ... Sending events"
then "range_allocator ... Sending events" 10.0 s later, then "Caches are synced for taint")."""
NODE_MONITOR_PERIOD = 5.0
"""``--node-monitor-period`` (its default; the fixture leaves it): how often the
node-lifecycle controller lists the nodes, posting RegisteredNode for each new one."""
BUSY_APISERVER = 15.0
"""Seconds more on the session's shared real apiserver: ~20 tests' fleets go through it, and
CI's 2 cores also run the test's own shard."""
KCM_SEES_NODE_WITHIN = KCM_INFORMERS_HELD_AT_START + NODE_MONITOR_PERIOD + BUSY_APISERVER
"""Until the node-lifecycle controller's RegisteredNode Event for the node: its taint workers
run and it knows the node."""
KCM_TAINTS_WITHIN = BUSY_APISERVER
"""Until its condition taint, once it runs: a watch event, a GET and a PATCH."""


async def _follow(client: Client, apiserver: Apiserver, shard: str, name: str) -> None:
    """The node registers, follows its NodeScript, and is as its CR says after the restart.

    The restart step is added to the script once the pressure has shown all it must (on the
    real control plane: kube-controller-manager's taint), so the pressure lasts as long as
    that takes; a restart at a fixed offset raced a slow controller-manager (the taint was
    never there to see once the restart had ended the pressure)."""
    await client.create(
        CRS,
        {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
            "spec": {},
        },
    )
    path = f"/api/v1/nodes/{name}"

    async def node_until(check: Any, within: float) -> dict[str, Any]:
        """The Node, once ``check(node)`` holds."""
        with trio.fail_after(within):
            while True:
                response = await client.request("GET", path)
                if response.status != 404:
                    found: dict[str, Any] = await client.get(path)
                    if check(found):
                        return found
                await trio.sleep(0.1)

    async def node_reasons() -> dict[str, int]:
        """The node's Events: reason -> count."""
        reasons: dict[str, int] = {}
        events = await client.list(
            "/api/v1/namespaces/default/events", field_selector=f"involvedObject.name={name}"
        )
        for e in events.items:
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + int(e.get("count") or 1)
        return reasons

    await node_until(lambda n: _condition(n, "Ready") == "True", 30)
    if apiserver.real is not None:  # the node-lifecycle controller runs and knows the node
        with trio.fail_after(KCM_SEES_NODE_WITHIN):
            while True:
                if "RegisteredNode" in await node_reasons():
                    break
                await trio.sleep(0.2)
    pressure = {
        "after": "1s",
        "conditions": [{"type": "MemoryPressure", "status": "True"}],
        "taints": [{"key": "example.com/scripted", "effect": "NoSchedule"}],
        "capacity": {"pods": "9"},
    }
    script = await client.create(
        SCRIPTS,
        {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "NodeScript",
            "metadata": {"name": unique("pressure")},
            "spec": {
                "selector": {"matchLabels": {"kubernetes.io/hostname": name}},
                "steps": [pressure],
            },
        },
    )
    found = await node_until(
        lambda n: (
            _condition(n, "MemoryPressure") == "True" and "example.com/scripted" in _taints(n)
        ),
        8 if apiserver.real is None else 20,  # the real one: a session's shared, busy apiserver
    )
    memory = next(c for c in found["status"]["conditions"] if c["type"] == "MemoryPressure")
    assert memory["reason"] == "KubeletHasInsufficientMemory"
    assert found["status"]["capacity"]["pods"] == "9"
    if apiserver.real is not None:  # kube-controller-manager: TaintNodesByCondition
        await node_until(
            lambda n: "node.kubernetes.io/memory-pressure" in _taints(n), KCM_TAINTS_WITHIN
        )
    # The restart a second from now: a step added to a script the node already follows.
    elapsed = (datetime.now(UTC) - _created(script)).total_seconds()
    await client.patch(
        f"{SCRIPTS}/{script['metadata']['name']}",
        {
            "spec": {
                "steps": [pressure, {"after": f"{math.ceil(elapsed) + 1}s", "kubeletRestart": True}]
            }
        },
        patch_type="merge",
    )
    found = await node_until(  # the restart step: the node as its CR says again
        lambda n: (
            _condition(n, "MemoryPressure") == "False" and "example.com/scripted" not in _taints(n)
        ),
        30,
    )
    assert found["status"]["capacity"]["pods"] == "200"
    reasons: dict[str, int] = {}
    with trio.fail_after(10):  # Events go out in the write queue's quiet moments
        while reasons.get("Starting", 0) < 2 or "NodeHasInsufficientMemory" not in reasons:
            reasons = await node_reasons()
            await trio.sleep(0.2)
    assert reasons["NodeHasSufficientMemory"] >= 2  # at start, and after the pressure
