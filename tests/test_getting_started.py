"""The README's Getting Started, end to end: kube-mock's example, with kubectl, against ``up``
(on the sandbox, and with ``--control-plane real``).

``up`` runs as a child process, as a user runs it; everything else is the
real kubectl. The Node CR of kube-mock's README is applied unchanged
(``examples/node-sample.yaml``), then its Deployment. To keep the test short
the 20-replica Deployment is applied as a copy whose delay is
:data:`DELAY` instead of 10 s; the real file (``examples/deployment.yaml``)
is applied too, in another namespace, and its pods must still be Pending
when the short ones are Running.

Times are measured from each pod's ``creationTimestamp`` (whole seconds,
truncated, so the real creation is at most a second later): a watch
(``kubectl get pods -w``) stamps each pod's phase changes as they arrive.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests._apiserver import real_binaries
from tests._up_process import KUBECTL, kubectl, kubectl_json, node_ready, up_process, wait_until

pytestmark = pytest.mark.kubectl

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DELAY = 2.0
"""Seconds before Running in the shortened copy of the example Deployment."""
REPLICAS = 20
SLACK = 3.0
"""Seconds a pod may turn Running after its delay (a watch event's trip, a loaded CI box)."""
WATCH_FIELDS = (
    '{.metadata.name} {.status.phase} {.metadata.creationTimestamp} {.spec.nodeName}{"\\n"}'
)


def _created(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class PodWatch:
    """``kubectl get pods -w`` in a thread: (arrival time, phase, creation, node) per event."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.events: dict[str, list[tuple[float, str, float, str]]] = {}
        self._process = subprocess.Popen(
            [KUBECTL, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", namespace, "-w",
             "-o", f"jsonpath={WATCH_FIELDS}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            parts = line.split()
            if len(parts) >= 3:
                node = parts[3] if len(parts) > 3 else ""
                self.events.setdefault(parts[0], []).append(
                    (time.time(), parts[1], _created(parts[2]), node)
                )

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._thread.join(timeout=5)
        assert self._process.stdout is not None
        self._process.stdout.close()

    def running(self) -> dict[str, float]:
        """Pod -> when it was first seen Running."""
        out: dict[str, float] = {}
        for pod, events in list(self.events.items()):
            for at, phase, _, _ in list(events):
                if phase == "Running":
                    out[pod] = at
                    break
        return out


@pytest.mark.parametrize("control_plane", ["sandbox", pytest.param("real", marks=pytest.mark.real)])
def test_getting_started_kube_mock_example(tmp_path: Path, control_plane: str) -> None:
    # On the real control plane `up` starts its own (this is `up --control-plane real` under
    # test): kube-scheduler and kube-controller-manager place and run the pods.
    flags = (
        []
        if control_plane == "sandbox"
        else ["--control-plane", "real", "--binaries", str(real_binaries())]
    )
    with up_process(tmp_path, *flags) as up:
        kc = up.kubeconfig
        # 1. kube-mock's Node CR, unchanged: a fake node that turns Ready.
        out = kubectl(kc, "apply", "-f", str(EXAMPLES / "node-sample.yaml")).stdout
        assert out.strip() == "node.mock.zhizuqiu.cn/node-sample created"
        wait_until(lambda: node_ready(kc, "node-sample"), 15, "node-sample Ready")
        table = kubectl(kc, "get", "nodes").stdout.splitlines()
        assert table[0].split()[:2] == ["NAME", "STATUS"]
        assert [row.split()[:2] for row in table[1:]] == [["node-sample", "Ready"]]

        # 2. The example Deployment: the real file (10 s) and a copy with a short delay.
        kubectl(kc, "create", "namespace", "ten-seconds")
        kubectl(kc, "create", "namespace", "short")
        if control_plane == "real":
            # kube-controller-manager gives each namespace its "default" ServiceAccount a
            # moment after it is made, and pods are refused until then: a ReplicaSet's
            # retries would start the pods seconds late (docs/sandbox.md).
            for ns in ("ten-seconds", "short"):
                wait_until(
                    lambda ns=ns: (
                        kubectl(kc, "get", "sa", "default", "-n", ns, check=False).returncode == 0
                    ),
                    10,
                    f"the default ServiceAccount of {ns}",
                )
        kubectl(kc, "apply", "-n", "ten-seconds", "-f", str(EXAMPLES / "deployment.yaml"))
        original = (EXAMPLES / "deployment.yaml").read_text()
        assert "zhizuqiu.github.com/delayRunning: 10s" in original
        short = original.replace("delayRunning: 10s", f"delayRunning: {DELAY:g}s")
        watch = PodWatch(kc, "short")
        try:
            applied = time.time()
            out = kubectl(kc, "apply", "-n", "short", "-f", "-", stdin=short).stdout
            assert out.strip() == "deployment.apps/kube-mock-example created"
            wait_until(
                lambda: len(watch.running()) == REPLICAS, DELAY + 20, f"{REPLICAS} pods Running"
            )
        finally:
            watch.close()

        # Pending first, on the fake node, then Running DELAY after creation (not before).
        assert len(watch.events) == REPLICAS
        running = watch.running()
        for pod, events in watch.events.items():
            assert events[0][1] == "Pending", (pod, events)
            created = events[0][2]
            assert applied - 1.0 <= created <= applied + SLACK
            phases = [phase for _, phase, _, _ in events]
            assert set(phases[: phases.index("Running")]) == {"Pending"}, (pod, phases)
            assert created + DELAY <= running[pod] <= created + 1.0 + DELAY + SLACK, (pod, events)

        pods = kubectl_json(kc, "get", "pods", "-n", "short")["items"]
        assert {p["spec"]["nodeName"] for p in pods} == {"node-sample"}
        for pod in pods:
            assert pod["status"]["phase"] == "Running"
            started = _created(
                pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
            )
            assert started - _created(pod["metadata"]["creationTimestamp"]) >= DELAY
        kubectl(
            kc, "rollout", "status", "-n", "short", "deployment/kube-mock-example", "--timeout=20s"
        )
        kubectl(
            kc,
            "wait",
            "-n",
            "short",
            "--for=condition=Available",
            "deployment/kube-mock-example",
            "--timeout=20s",
        )

        # The real 10 s example: scheduled onto the fake node too, and still Pending.
        slow = kubectl_json(kc, "get", "pods", "-n", "ten-seconds")["items"]
        assert len(slow) == REPLICAS
        assert time.time() - min(_created(p["metadata"]["creationTimestamp"]) for p in slow) < 10.0
        assert {p["status"]["phase"] for p in slow} == {"Pending"}
        assert {p["spec"].get("nodeName") for p in slow} == {"node-sample"}

        _kubelet_commands(kc, pods)
        assert up.stop() == 0


def _kubelet_commands(kc: Path, pods: list[dict[str, Any]]) -> None:
    """The README's step 5 (in the namespace ``short``): logs, exec, port-forward, top."""
    names = {p["metadata"]["name"] for p in pods}
    ns = ("-n", "short")
    deploy = "deploy/kube-mock-example"
    log = kubectl(kc, "logs", deploy, "--tail", "1", *ns).stdout
    assert re.fullmatch(
        r'kubemock-fleet: container "container-0o8ycf" of pod short/(\S+) on node '
        r"node-sample: heartbeat \d+\n",
        log,
    ), log
    assert kubectl(kc, "exec", deploy, *ns, "--", "hostname").stdout.strip() in names
    port = _free_port()
    forward = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(kc), "port-forward", deploy, f"{port}:80", *ns],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as answer:
            said = answer.read().decode()
        assert re.fullmatch(r"kubemock-fleet: short/(\S+) port 80: GET /hello\n", said), said
    finally:
        forward.terminate()
        forward.wait(timeout=10)
        if forward.stdout is not None:
            forward.stdout.close()
    # on the real control plane, once the aggregator has found metrics.k8s.io available
    wait_until(
        lambda: kubectl(kc, "top", "pods", *ns, check=False).returncode == 0, 30, "kubectl top"
    )
    rows = kubectl(kc, "top", "pods", *ns, "--no-headers").stdout.splitlines()
    assert {row.split()[0] for row in rows} == names
    assert {tuple(row.split()[1:]) for row in rows} == {("10m", "10Mi")}  # 10 %, 50 % of requests

    def all_running() -> bool:
        listed = kubectl_json(kc, "get", "pods", "-A")["items"]
        return {p["status"]["phase"] for p in listed} == {"Running"} and len(listed) == 40

    wait_until(all_running, 15, "the ten-seconds pods Running too")
    nodes = kubectl(kc, "top", "nodes", "--no-headers").stdout.split()
    # 100m + 40 x 10m, 512Mi + 40 x 10Mi: the node's base and both Deployments' pods
    assert (nodes[0], nodes[1], nodes[3]) == ("node-sample", "500m", "912Mi"), nodes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


README = EXAMPLES.parent / "README.md"


def test_readme_opens_with_the_two_commands_and_replays_the_examples() -> None:
    text = README.read_text()
    blocks = text.split("```")
    # The first two fenced blocks, before any other, are the two commands for a fresh machine.
    first, second = (block.removeprefix("sh\n").strip() for block in blocks[1:4:2])
    assert (
        first
        == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/kubemock-fleet up"
    )
    assert (
        second
        == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    )
    ci = (EXAMPLES.parent / ".ci" / "run").read_text()
    assert "install -q -e '.[test]'" in ci and '"$venv/bin/python" -m pytest' in ci
    for command in (
        "kubectl apply -f examples/node-sample.yaml",
        "kubectl apply -f examples/deployment.yaml",
        "export KUBECONFIG=$PWD/kubemock-fleet.kubeconfig",
        "kubectl logs deploy/kube-mock-example --tail 1",
        "kubectl exec deploy/kube-mock-example -- hostname",
        "kubectl port-forward deploy/kube-mock-example 8080:80",
        "curl localhost:8080/hello",
        "kubectl top pods",
        "kubectl top nodes",
    ):
        assert command in text
    assert "zhizuqiu.github.com/delayRunning: 10s" in (EXAMPLES / "deployment.yaml").read_text()
