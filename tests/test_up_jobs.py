"""Jobs end to end under ``up``: a Job's pods run on a fake node, finish Succeeded, the Job completes.

kube-mock's own use of ``zhizuqiu.github.com/delaySucceeded`` is Jobs; here the whole
chain is real: sandbox, scheduler, Job controller, a shard's fake kubelet, and kubectl.
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
        up.stop()
    gc.collect()
