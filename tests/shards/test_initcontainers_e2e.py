"""Init containers end to end, as ``kubectl get pods`` (1.33) shows them.

A pod with two init containers of a MockStatus (3 s each, its Running step at
9 s) goes Init:0/2 -> Init:1/2 -> PodInitializing -> Running in the STATUS
column; one whose init container keeps failing goes Init:CrashLoopBackOff. On
``up`` (its sandbox, its scheduler), and with one shard against the
``apiserver`` param (the sandbox's Table printer and kube-apiserver's own).
Real delays of a few seconds; the timing is tested on the autojump clock in
test_initcontainers.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import yaml

from fleet._settings import FleetSettings, ShardSettings
from fleet.kube import Client, HotTransport, load_config
from fleet.wire import FLEET_NAMESPACE, SHARD_LABEL
from shards import ShardEngine
from tests._apiserver import Apiserver, install_fleet_crds, unique
from tests._up_process import up_process

KUBECTL_133 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
needs_133 = pytest.mark.skipif(
    not os.path.exists(KUBECTL_133) and not os.environ.get("CI"), reason=f"no {KUBECTL_133}"
)
SEQUENCE = ["Init:0/2", "Init:1/2", "PodInitializing", "Running"]
SCRIPTS = "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/{namespace}/mockstatuses"


def _scripts(namespace: str) -> list[dict[str, Any]]:
    def script(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
            "kind": "MockStatus",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    return [
        script(
            "inits-e2e",
            {
                "initContainers": [{"runFor": "3s"}],
                "steps": [{"after": "0s", "phase": "Pending"}, {"after": "9s", "phase": "Running"}],
            },
        ),
        script(
            "bad-init-e2e",
            {
                "initContainers": [{"name": "migrate", "runFor": "1s", "exitCode": 1}],
                "steps": [{"after": "0s", "phase": "Running"}],
            },
        ),
    ]


def _pod(name: str, namespace: str, script: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "initContainers": [
            {"name": "fetch", "image": "busybox"},
            {"name": "migrate", "image": "busybox"},
        ],
        "containers": [{"name": "app", "image": "nginx"}],
        "tolerations": [{"operator": "Exists"}],
    }
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"zhizuqiu.github.com/mockStatus": script},
        },
        "spec": spec,
    }


def _status(kubeconfig: Path, namespace: str, name: str) -> str:
    result = subprocess.run(
        [KUBECTL_133, "get", "pod", name, "-n", namespace, "--no-headers"],
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=30,
    )
    fields = result.stdout.split()
    return fields[2] if result.returncode == 0 and len(fields) > 2 else ""


def _statuses_until(
    kubeconfig: Path, namespace: str, name: str, last: str, within: float
) -> list[str]:
    """The pod's STATUS column as it changes, until it shows ``last``."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = _status(kubeconfig, namespace, name)
        if status and (not seen or seen[-1] != status):
            seen.append(status)
        if status == last:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{name}: no {last} within {within} s: {seen}")


def _check(kubeconfig: Path, namespace: str) -> None:
    seen = _statuses_until(kubeconfig, namespace, "inits", "Running", 40)
    # Every stage, in order (the first may be missed while the pod is being scheduled).
    assert seen[-3:] == SEQUENCE[1:], seen
    assert all(s in ("Pending", *SEQUENCE) for s in seen), seen
    seen = _statuses_until(kubeconfig, namespace, "bad-init", "Init:CrashLoopBackOff", 30)
    assert "Running" not in seen and "PodInitializing" not in seen, seen


@pytest.mark.kubectl
@needs_133
def test_init_containers_on_up(tmp_path: Path) -> None:
    with up_process(tmp_path, "--nodes", "1") as up:
        docs = [*_scripts("default"), _pod("inits", "default", "inits-e2e", None)]
        docs.append(_pod("bad-init", "default", "bad-init-e2e", None))
        manifest = tmp_path / "inits.yaml"
        manifest.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
        subprocess.run(
            [KUBECTL_133, "apply", "-f", str(manifest)],
            check=True,
            capture_output=True,
            env={**os.environ, "KUBECONFIG": str(up.kubeconfig)},
            timeout=60,
        )
        _check(up.kubeconfig, "default")


@needs_133
async def test_init_containers_on_the_apiserver(
    nursery: trio.Nursery, apiserver: Apiserver
) -> None:
    config = load_config(apiserver.kubeconfig)
    namespace, shard, node = unique("inits"), unique("inits-shard"), unique("inits-node")
    async with Client(config) as client, HotTransport(config) as hot:
        await install_fleet_crds(client)
        names = {n["metadata"]["name"] for n in (await client.list("/api/v1/namespaces")).items}
        for ns in (FLEET_NAMESPACE, namespace):
            if ns not in names:
                await client.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        allocation: Literal["cluster", "shard"] = (
            "cluster" if apiserver.real is not None else "shard"
        )
        engine = ShardEngine(
            FleetSettings(shard=ShardSettings(pod_cidr_allocation=allocation)),
            shard,
            control=client,
            hot=hot,
        )
        scope = trio.CancelScope()

        async def run_engine(task_status: trio.TaskStatus[None]) -> None:
            with scope:
                await engine.run(task_status=task_status)

        await nursery.start(run_engine)
        try:
            await client.create(
                "/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes",
                {
                    "apiVersion": "mock.zhizuqiu.cn/v1alpha1",
                    "kind": "Node",
                    "metadata": {"name": node, "labels": {SHARD_LABEL: shard}},
                    "spec": {},
                },
            )
            for script in _scripts(namespace):
                await client.create(SCRIPTS.format(namespace=namespace), script)
            with trio.fail_after(30):
                while True:  # registered
                    if (await client.request("GET", f"/api/v1/nodes/{node}")).status != 404:
                        break
                    await trio.sleep(0.2)
            await trio.sleep(1)  # the shard has listed the MockStatuses
            pods = f"/api/v1/namespaces/{namespace}/pods"
            await client.create(pods, _pod("inits", namespace, "inits-e2e", node))
            await client.create(pods, _pod("bad-init", namespace, "bad-init-e2e", node))
            await trio.to_thread.run_sync(_check, apiserver.kubeconfig, namespace)
        finally:
            scope.cancel()
            await client.request(
                "DELETE", f"/apis/mock.zhizuqiu.cn/v1alpha1/namespaces/default/nodes/{node}"
            )
