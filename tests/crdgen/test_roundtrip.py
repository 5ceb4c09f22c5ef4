"""The clone round trip: real-looking nodes -> ``crdgen clone`` -> kubectl apply -> the fleet's Nodes.

A source sandbox is seeded with the kind, EKS and GKE nodes of
``data/*.input.yaml``; ``crdgen clone`` (the command line) turns them into
Node CRs; a real kubectl applies that output, as is, to a second sandbox and
labels the CRs for shard 0; a shard engine (in-process, over the real client
and hot transport) registers a v1.Node per CR. Each registered Node must match
the node it was cloned from in capacity, allocatable, labels (but for the
hostname rewrite), taints, node info and provider-ID scheme.

What a clone leaves out on purpose, and so the comparison too: ``hugepages-*``
(neither core nor extended resources; kind reports them as 0), the taints the
node lifecycle controller and autoscaler add and remove by themselves
(:data:`crdgen._clone.LIFECYCLE_TAINTS`, e.g. the cordoned EKS node's), and
``type=kubemock``, the one label every fake kubelet adds.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from crdgen._clone import CLONED_FROM_ANNOTATION, LIFECYCLE_TAINTS
from crdgen._crd import render_crds
from fleet._settings import FleetSettings
from fleet.kube import Client, HotTransport, load_config
from fleet.sandbox import RunningSandbox, SandboxSettings, serve_sandbox
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine
from tests.crdgen.test_clone_cli import KUBECTL, all_input_nodes, invoke, seed

HOSTNAME = "kubernetes.io/hostname"
NAMESPACE = FLEET_NAMESPACE
INFO = (
    "kubeletVersion",
    "operatingSystem",
    "architecture",
    "osImage",
    "kernelVersion",
    "containerRuntimeVersion",
)


def modelled(resources: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in resources.items() if not k.startswith("hugepages-")}


def lasting_taints(node: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (t["key"], t.get("value") or "", t["effect"])
        for t in node["spec"].get("taints") or []
        if t["key"] not in LIFECYCLE_TAINTS
    }


def expected_labels(original: dict[str, Any], copy: str) -> dict[str, str]:
    """The original's labels, those naming the node (hostname above all) naming the copy;
    the shard label of shard 0."""
    old = original["metadata"]["name"]
    labels = dict(original["metadata"]["labels"])
    for key, value in labels.items():
        if key == HOSTNAME or value == old:
            labels[key] = copy
    # The shard driving the copy labels its Node too (what its node watch selects).
    return {"type": "kubemock", **labels, SHARD_LABEL: "0"}


@pytest.mark.kubectl
async def test_cloned_nodes_come_back_from_the_fleet(
    nursery: trio.Nursery, sandbox: RunningSandbox, tmp_path: Path
) -> None:
    originals = {n["metadata"]["name"]: n for n in all_input_nodes()}
    await seed(sandbox, list(originals.values()))
    out = tmp_path / "clones.yaml"
    source = str(sandbox.kubeconfig)
    result = await invoke(
        ["clone", "-f", source, "--disable-filter-master", "--copies", "2", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    crs = list(yaml.safe_load_all(out.read_text()))
    assert len(crs) == 2 * len(originals)

    (tmp_path / "target").mkdir()
    target: RunningSandbox = await nursery.start(
        serve_sandbox, SandboxSettings(port=0, kubeconfig_out=tmp_path / "target" / "kubeconfig")
    )
    kc = str(target.kubeconfig)
    crds = tmp_path / "crds.yaml"
    crds.write_text(render_crds())
    namespace = tmp_path / "namespace.yaml"
    # `kubectl create namespace` sends protobuf, which the sandbox does not decode.
    namespace.write_text(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n")

    def kubectl(*args: str) -> str:
        cmd = [KUBECTL, "--kubeconfig", kc, "--cache-dir", str(tmp_path / "cache"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc.stdout

    def apply_and_label() -> None:
        kubectl("apply", "-f", str(crds))
        kubectl("apply", "-f", str(namespace))
        kubectl("apply", "-f", str(out))
        kubectl("label", "nodes.mock.zhizuqiu.cn", "--all", "-n", NAMESPACE, f"{SHARD_LABEL}=0")

    await trio.to_thread.run_sync(apply_and_label)

    config = load_config(target.kubeconfig)
    client = Client(config)
    hot = HotTransport(config)
    # The engine stops before its client and transport close: a write of its in flight on a
    # closed pool connection failed the test (an AssertionError in the transport) on a busy box.
    async with client, hot, trio.open_nursery() as engine_nursery:
        engine = ShardEngine(FleetSettings(), "0", control=client, hot=hot)
        await engine_nursery.start(engine.run)
        wanted = {cr["metadata"]["name"] for cr in crs}
        with trio.fail_after(20):
            while True:
                nodes = {
                    n["metadata"]["name"]: n
                    for n in (await client.list("/api/v1/nodes")).items
                    if any(
                        c["type"] == "Ready" and c["status"] == "True"
                        for c in n["status"].get("conditions") or []
                    )
                }
                if set(nodes) == wanted:
                    break
                await trio.sleep(0.1)
        engine_nursery.cancel_scope.cancel()

    listed = json.loads(await trio.to_thread.run_sync(kubectl, "get", "nodes", "-o", "json"))
    assert {n["metadata"]["name"] for n in listed["items"]} == wanted
    dropped_lifecycle = 0
    for cr in crs:
        copy = cr["metadata"]["name"]
        original = originals[cr["metadata"]["annotations"][CLONED_FROM_ANNOTATION]]
        node = nodes[copy]
        where = f"{copy} (from {original['metadata']['name']})"
        assert node["status"]["capacity"] == modelled(original["status"]["capacity"]), where
        assert node["status"]["allocatable"] == modelled(original["status"]["allocatable"]), where
        assert node["metadata"]["labels"] == expected_labels(original, copy), where
        assert lasting_taints(node) == lasting_taints(original), where
        assert len(node["spec"].get("taints") or []) == len(lasting_taints(original)), where
        dropped_lifecycle += len(original["spec"].get("taints") or []) - len(
            lasting_taints(original)
        )
        info, original_info = node["status"]["nodeInfo"], original["status"]["nodeInfo"]
        assert {k: info[k] for k in INFO} == {k: original_info[k] for k in INFO}, where
        scheme = original["spec"]["providerID"].partition("://")[0]
        assert node["spec"]["providerID"].startswith(f"{scheme}://"), where
        assert node["spec"]["providerID"] != original["spec"]["providerID"], where
    # The data has what makes the comparison bite: extended resources, reserved
    # capacity, taints kept and taints dropped, labels naming the node.
    assert dropped_lifecycle > 0
    assert any("nvidia.com/gpu" in n["status"]["capacity"] for n in nodes.values())
    assert any(
        n["status"]["capacity"]["cpu"] != n["status"]["allocatable"]["cpu"] for n in nodes.values()
    )
    assert any(lasting_taints(n) for n in nodes.values())
