"""Real kubectl binaries (1.27 and the default 1.32/1.33) against the shared sandbox.

Each test works in its own namespace of the session's sandbox.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.sandbox import RunningSandbox

KUBECTL = "/usr/bin/kubectl"
KUBECTL_127 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"
KUBECTL_133 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"

POD = """apiVersion: v1
kind: Pod
metadata: {name: x, labels: {app: x}}
spec:
  containers: [{name: c, image: "busybox:1.36"}]
"""
DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  replicas: 1
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d}}
    spec:
      containers: [{name: c, image: "nginx:1.25"}]
"""
CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""
WIDGET = """apiVersion: example.com/v1
kind: Widget
metadata: {name: w1}
spec: {size: 3, unknown: dropped}
"""

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl(
    shared_sandbox: RunningSandbox, tmp_path: Path, request: pytest.FixtureRequest
) -> Kubectl:
    namespace = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    if len(namespace) > 50:  # keep it a DNS label and unique across parametrized ids
        digest = hashlib.sha1(namespace.encode()).hexdigest()[:8]
        namespace = f"{namespace[:41].strip('-')}-{digest}"

    def run(
        *args: str,
        binary: str = KUBECTL,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = 20,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            binary,
            "--kubeconfig",
            str(shared_sandbox.kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
            "-n",
            namespace,
            *args,
        ]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc

    run("create", "namespace", namespace, binary=KUBECTL_127)  # 1.27 sends JSON here
    return run


@pytest.mark.kubectl
@pytest.mark.parametrize("binary", [KUBECTL_127, KUBECTL_133], ids=["1.27", "1.33"])
def test_apply_get_patch_delete_pod(kubectl: Kubectl, binary: str) -> None:
    assert "pod/x created" in kubectl("apply", "-f", "-", stdin=POD, binary=binary).stdout
    assert "pod/x unchanged" in kubectl("apply", "-f", "-", stdin=POD, binary=binary).stdout
    changed = POD.replace("{app: x}", "{app: x, v: '2'}")
    assert "pod/x configured" in kubectl("apply", "-f", "-", stdin=changed, binary=binary).stdout
    got = json.loads(kubectl("get", "pod", "x", "-o", "json", binary=binary).stdout)
    assert got["metadata"]["labels"] == {"app": "x", "v": "2"}
    assert "kind: Pod" in kubectl("get", "pod", "x", "-o", "yaml", binary=binary).stdout
    wide = kubectl("get", "pods", "-o", "wide", binary=binary).stdout
    assert wide.split("\n")[0].split() == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED",
        "NODE",
        "READINESS",
        "GATES",
    ]
    assert "Pending" in wide
    kubectl(
        "patch",
        "pod",
        "x",
        "--type=merge",
        "-p",
        '{"metadata":{"labels":{"m":"1"}}}',
        binary=binary,
    )
    kubectl(
        "patch",
        "pod",
        "x",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/metadata/labels/j","value":"1"}]',
        binary=binary,
    )
    kubectl("patch", "pod", "x", "-p", '{"metadata":{"labels":{"s":"1"}}}', binary=binary)
    labels = json.loads(kubectl("get", "pod", "x", "-o", "json", binary=binary).stdout)["metadata"][
        "labels"
    ]
    assert {"m", "j", "s"} <= labels.keys()
    assert 'pod "x" deleted' in kubectl("delete", "pod", "x", binary=binary).stdout
    assert kubectl("get", "pod", "x", check=False, binary=binary).returncode == 1


@pytest.mark.kubectl
def test_wait_watch_scale(kubectl: Kubectl, shared_sandbox: RunningSandbox) -> None:
    kubectl("apply", "-f", "-", stdin=DEPLOYMENT)
    assert "scaled" in kubectl("scale", "deploy/d", "--replicas=3").stdout
    assert kubectl("get", "deploy", "d", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    kubectl("apply", "-f", "-", stdin=POD)
    timed_out = kubectl("wait", "--for=condition=Ready", "pod/x", "--timeout=1s", check=False)
    assert timed_out.returncode == 1 and "timed out" in timed_out.stderr
    kubectl(
        "patch",
        "pod",
        "x",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"conditions":[{"type":"Ready","status":"True"}]}}',
    )
    assert (
        "condition met" in kubectl("wait", "--for=condition=Ready", "pod/x", "--timeout=5s").stdout
    )
    watcher = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(shared_sandbox.kubeconfig),
            "-n",
            "test-wait-watch-scale",
            "get",
            "pods",
            "--watch",
            "--output-watch-events",
            "--request-timeout=3s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    kubectl("label", "pod", "x", "seen=yes")
    out, _err = watcher.communicate(timeout=10)
    assert "ADDED" in out and "MODIFIED" in out


@pytest.mark.kubectl
def test_crd_then_custom_resource(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=5s")
    strict = kubectl(
        "apply", "-f", "-", stdin=WIDGET, check=False
    )  # kubectl asks fieldValidation=Strict
    assert (
        strict.returncode == 1
        and 'strict decoding error: unknown field "spec.unknown"' in strict.stderr
    )
    assert (
        "widget.example.com/w1 created"
        in kubectl("apply", "--validate=false", "-f", "-", stdin=WIDGET).stdout
    )
    table = kubectl("get", "wd").stdout.split("\n")
    assert table[0].split() == ["NAME", "SIZE"] and table[1].split() == ["w1", "3"]
    got = json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert got["spec"] == {"size": 3}  # unknown field pruned
    bad = kubectl(
        "patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":"big"}}', check=False
    )
    assert bad.returncode == 1 and "spec.size" in bad.stderr
    assert "api-resources" not in kubectl("api-resources", "--api-group=example.com").stderr
    assert "widgets" in kubectl("api-resources", "--api-group=example.com").stdout
    kubectl("delete", "-f", "-", stdin=CRD)


@pytest.mark.kubectl
@pytest.mark.parametrize("binary", [KUBECTL_127, KUBECTL_133], ids=["1.27", "1.33"])
def test_server_side_apply_of_the_readme_deployment(kubectl: Kubectl, binary: str) -> None:
    example = (Path(__file__).resolve().parents[2] / "examples" / "deployment.yaml").read_text()
    applied = kubectl("apply", "--server-side", "-f", "-", stdin=example, binary=binary)
    assert "deployment.apps/kube-mock-example serverside-applied" in applied.stdout
    scaled = example.replace("replicas: 20", "replicas: 7")
    assert scaled != example
    kubectl("apply", "--server-side", "-f", "-", stdin=scaled, binary=binary)
    got = json.loads(
        kubectl("get", "deploy", "kube-mock-example", "-o", "json", binary=binary).stdout
    )
    assert got["spec"]["replicas"] == 7
    template = got["spec"]["template"]
    assert template["metadata"]["annotations"] == {"zhizuqiu.github.com/delayRunning": "10s"}
    assert template["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "100m",
        "memory": "20Mi",
    }
