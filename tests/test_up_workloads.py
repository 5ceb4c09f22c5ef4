"""Workload controllers end to end under ``up``: sandbox, control plane, fleet and kubectl.

- Jobs: a Job's pods run on fake nodes, finish Succeeded (kube-mock's own use of
  ``zhizuqiu.github.com/delaySucceeded`` is Jobs), the Job completes, and
  ``kubectl wait --for=condition=complete`` sees it.
- DaemonSets and StatefulSets: their pods land on the fleet's nodes, turn Ready, and
  ``kubectl rollout status`` returns, also after a rollout of a new image; a Service over
  them gets a cluster IP, Endpoints and an EndpointSlice of their IPs.
"""

from __future__ import annotations

import gc
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from fleet.kube import Client, load_config
from fleet.up import RunningUp, Up, UpSettings

pytestmark = pytest.mark.kubectl

KUBECTL = "/usr/bin/kubectl"

JOB: dict[str, Any] = {
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
    "spec": {"completions": 3, "parallelism": 2,
             "template": {"metadata": {"annotations": {"zhizuqiu.github.com/delaySucceeded": "1s"}},
                          "spec": {"restartPolicy": "Never",
                                   "containers": [{"name": "pi", "image": "perl:5.34"}]}}},
}  # fmt: skip


async def test_a_job_completes_on_the_fleet(tmp_path: Path) -> None:
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=2))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        with trio.fail_after(15):
            while up.status().nodes_ready < 2:  # noqa: ASYNC110 - polling the store is the point
                await trio.sleep(0.1)
        async with Client(load_config(running.kubeconfig)) as client:
            await client.create("/apis/batch/v1/namespaces/default/jobs", JOB)
            wait = await trio.to_thread.run_sync(
                lambda: subprocess.run(
                    [
                        KUBECTL,
                        "--kubeconfig",
                        str(running.kubeconfig),
                        "wait",
                        "--for=condition=complete",
                        "job/pi",
                        "--timeout=40s",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
            )
            assert wait.returncode == 0, wait.stderr
            assert wait.stdout.strip() == "job.batch/pi condition met"
            job = await client.get("/apis/batch/v1/namespaces/default/jobs/pi")
            pods = (
                await client.list("/api/v1/namespaces/default/pods", label_selector="job-name=pi")
            ).items
        status = job["status"]
        assert status["succeeded"] == 3 and status["uncountedTerminatedPods"] == {}
        assert status["startTime"] <= status["completionTime"]
        assert len(pods) == 3
        for pod in pods:
            assert pod["status"]["phase"] == "Succeeded"
            assert pod["spec"]["nodeName"].startswith("fleet-node-")
            assert not pod["metadata"].get("finalizers")  # counted, released
        table = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [KUBECTL, "--kubeconfig", str(running.kubeconfig), "get", "job", "pi"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        )
        assert table.stdout.splitlines()[1].split()[:3] == ["pi", "Complete", "3/3"]

        def describe(*what: str) -> list[list[str]]:
            out = subprocess.run(
                [KUBECTL, "--kubeconfig", str(running.kubeconfig), "describe", *what],
                capture_output=True, text=True, timeout=20,
            ).stdout  # fmt: skip
            tail = out.split("Events:", 1)[1].splitlines()[3:]
            return [line.split() for line in tail if line.strip()]

        job_events = await trio.to_thread.run_sync(describe, "job", "pi")
        reasons = [row[1] for row in job_events]
        assert reasons.count("SuccessfulCreate") == 3 and reasons[-1] == "Completed"
        assert job_events[-1][3:] == ["job-controller", "Job", "completed"]
        pod_name = pods[0]["metadata"]["name"]
        pod_events = await trio.to_thread.run_sync(describe, "pod", pod_name)
        node_name = pods[0]["spec"]["nodeName"]
        assert pod_events[0] == [
            "Normal", "Scheduled", *pod_events[0][2:3], "default-scheduler",
            "Successfully", "assigned", f"default/{pod_name}", "to", node_name,
        ]  # fmt: skip
        up.stop()
    gc.collect()


WORKLOADS = """apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: agent, image: "agent:1"}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "db:1"}]
"""


async def test_daemonsets_and_statefulsets_roll_out_on_the_fleet(tmp_path: Path) -> None:
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=3))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        with trio.fail_after(15):
            while up.status().nodes_ready < 3:  # noqa: ASYNC110 - polling the store is the point
                await trio.sleep(0.1)

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, "--kubeconfig", str(running.kubeconfig), *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=90,
            )

        async def run(*args: str, stdin: str | None = None) -> str:
            proc = await trio.to_thread.run_sync(lambda: kubectl(*args, stdin=stdin))
            assert proc.returncode == 0, (args, proc.stderr)
            return proc.stdout

        await run("apply", "-f", "-", stdin=WORKLOADS)
        out = await run("rollout", "status", "ds/agent", "--timeout=60s")
        assert 'daemon set "agent" successfully rolled out' in out
        out = await run("rollout", "status", "sts/db", "--timeout=60s")
        # The defaulted ``partition: 0`` makes kubectl report it as a partitioned roll out.
        assert out.strip() == "partitioned roll out complete: 3 new pods have been updated..."
        table = (await run("get", "ds,sts")).splitlines()
        assert table[0].split() == [
            "NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR",
            "AGE",
        ]  # fmt: skip
        assert table[1].split()[:7] == ["daemonset.apps/agent", "3", "3", "3", "3", "3", "<none>"]
        sts_header = next(i for i, line in enumerate(table) if i > 0 and line.startswith("NAME"))
        assert table[sts_header].split() == ["NAME", "READY", "AGE"]
        assert table[sts_header + 1].split()[:2] == ["statefulset.apps/db", "3/3"]
        nodes = (await run("get", "pods", "-l", "app=agent", "-o",
                           "jsonpath={.items[*].spec.nodeName}")).split()  # fmt: skip
        assert sorted(nodes) == ["fleet-node-0", "fleet-node-1", "fleet-node-2"]
        index = await run("get", "pod", "db-2", "-o",
                          "jsonpath={.metadata.labels.apps\\.kubernetes\\.io/pod-index}")  # fmt: skip
        assert index == "2"

        # A Service over the StatefulSet's pods: Endpoints and an EndpointSlice of their IPs.
        await run("create", "service", "clusterip", "db", "--tcp=5432:5432")
        await run("patch", "service", "db", "-p", '{"spec":{"selector":{"app":"db"}}}')
        ips = sorted((await run("get", "pods", "-l", "app=db", "-o",
                                "jsonpath={.items[*].status.podIP}")).split())  # fmt: skip
        assert len(ips) == 3
        with trio.fail_after(20):
            while True:
                got = await run("get", "endpoints", "db", "-o",
                                "jsonpath={.subsets[*].addresses[*].ip}")  # fmt: skip
                if sorted(got.split()) == ips:
                    break
                await trio.sleep(0.2)
        row = await run("get", "endpointslices", "-l", "kubernetes.io/service-name=db")
        cells = row.splitlines()[1].split()
        assert cells[0].startswith("db-") and cells[1:3] == ["IPv4", "5432"]
        cluster_ip = await run("get", "service", "db", "-o", "jsonpath={.spec.clusterIP}")
        assert cluster_ip.startswith("10.96.")

        await run("set", "image", "ds/agent", "agent=agent:2")
        await run("set", "image", "sts/db", "db=db:2")
        await run("rollout", "status", "ds/agent", "--timeout=60s")
        await run("rollout", "status", "sts/db", "--timeout=60s")
        images = await run("get", "pods", "-o", "jsonpath={.items[*].spec.containers[0].image}")
        assert sorted(images.split()) == ["agent:2"] * 3 + ["db:2"] * 3
        up.stop()
    gc.collect()


DRAINABLE = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "nginx:1.25"}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"""


async def test_kubectl_drain_honours_a_disruption_budget(tmp_path: Path) -> None:
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=2))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        with trio.fail_after(15):
            while up.status().nodes_ready < 2:  # noqa: ASYNC110 - polling the store is the point
                await trio.sleep(0.1)

        async def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return await trio.to_thread.run_sync(
                lambda: subprocess.run(
                    [KUBECTL, "--kubeconfig", str(running.kubeconfig), *args],
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
            )

        assert (await run("apply", "-f", "-", stdin=DRAINABLE)).returncode == 0
        assert (await run("rollout", "status", "deploy/web", "--timeout=60s")).returncode == 0
        with trio.fail_after(20):
            while True:
                got = await run("get", "pdb", "web", "-o", "jsonpath={.status.currentHealthy}")
                if got.stdout == "2":
                    break
                await trio.sleep(0.2)
        node = (await run("get", "pods", "-l", "app=web", "-o",
                          "jsonpath={.items[0].spec.nodeName}")).stdout  # fmt: skip
        drain = await run("drain", node, "--ignore-daemonsets", "--timeout=3s")
        assert drain.returncode != 0
        assert "Cannot evict pod as it would violate the pod's disruption budget" in drain.stderr
        await run("patch", "pdb", "web", "--type=merge", "-p", '{"spec":{"minAvailable":1}}')
        drain = await run("drain", node, "--ignore-daemonsets", "--timeout=30s")
        assert drain.returncode == 0, drain.stderr
        assert f"node/{node} drained" in drain.stdout
        up.stop()
    gc.collect()


PREEMPTION = """apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: urgent}
value: 1000
---
apiVersion: v1
kind: Pod
metadata: {name: urgent}
spec:
  priorityClassName: urgent
  containers: [{name: c, image: busybox, resources: {requests: {cpu: "1"}}}]
"""


async def test_a_pod_of_higher_priority_preempts_on_the_fleet(tmp_path: Path) -> None:
    """One node filled by a pod of priority 0; kubectl applies a PriorityClass and a pod of it:
    the filler is evicted (a Preempted event, as kubectl lists it) and the new pod runs there."""
    up = Up(UpSettings(port=0, kubeconfig_out=tmp_path / "kc", nodes=1))
    async with trio.open_nursery() as nursery:
        running: RunningUp = await nursery.start(up.run)
        with trio.fail_after(15):
            while up.status().nodes_ready < 1:  # noqa: ASYNC110 - polling the store is the point
                await trio.sleep(0.1)

        def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, "--kubeconfig", str(running.kubeconfig), *args],
                input=stdin, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        async with Client(load_config(running.kubeconfig)) as client:
            node = (await client.list("/api/v1/nodes")).items[0]
            cpu = node["status"]["allocatable"]["cpu"]
            filler = await client.create(
                "/api/v1/namespaces/default/pods",
                {"metadata": {"name": "filler"}, "spec": {"containers": [
                    {"name": "c", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}]}},
            )  # fmt: skip
            ready = await trio.to_thread.run_sync(
                kubectl, "wait", "--for=condition=Ready", "pod/filler", "--timeout=30s"
            )
            assert ready.returncode == 0, ready.stderr
            applied = await trio.to_thread.run_sync(
                lambda: kubectl("apply", "-f", "-", stdin=PREEMPTION)
            )
            assert applied.returncode == 0, applied.stderr
            running_there = await trio.to_thread.run_sync(
                kubectl, "wait", "--for=jsonpath={.status.phase}=Running", "pod/urgent",
                "--timeout=40s",
            )  # fmt: skip
            assert running_there.returncode == 0, running_there.stderr
            urgent = await client.get("/api/v1/namespaces/default/pods/urgent")
            assert urgent["spec"]["nodeName"] == node["metadata"]["name"]
            assert urgent["status"]["nominatedNodeName"] == node["metadata"]["name"]
            gone = await client.request("GET", "/api/v1/namespaces/default/pods/filler")
            assert gone.status == 404
            events = await trio.to_thread.run_sync(
                kubectl, "get", "events", "--field-selector", "reason=Preempted",
                "-o", "jsonpath={.items[*].message}",
            )  # fmt: skip
            assert events.stdout == (
                f"Preempted by pod {urgent['metadata']['uid']} on node {node['metadata']['name']}"
            )
            assert filler["metadata"]["uid"]  # the victim was the one created above
        up.stop()
    gc.collect()
