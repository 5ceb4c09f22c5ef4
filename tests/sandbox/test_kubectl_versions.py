"""Every installed kubectl (1.27 … 1.33, and the default one) creates with its generators and reads back.

The generators switched to protobuf request bodies in 1.33; the older ones send JSON. A binary that
is missing fails the test: the suite promises these versions.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fleet.sandbox import RunningSandbox

VERSIONS = ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"]
BINARIES = {v: f"/usr/lib/google-cloud-sdk/bin/kubectl.{v}" for v in VERSIONS} | {
    "default": "/usr/bin/kubectl"
}


@pytest.mark.kubectl
@pytest.mark.parametrize("version", list(BINARIES))
def test_generators_across_versions(
    shared_sandbox: RunningSandbox, tmp_path: Path, version: str
) -> None:
    binary = BINARIES[version]
    assert Path(binary).exists(), f"{binary} is not installed"
    ns = "versions-" + version.replace(".", "-")

    def run(*args: str) -> str:
        cmd = [
            binary,
            "--kubeconfig",
            str(shared_sandbox.kubeconfig),
            "--cache-dir",
            str(tmp_path),
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc.stdout

    assert "created" in run("create", "namespace", ns)
    assert "created" in run("-n", ns, "create", "configmap", "cm", "--from-literal=k=v")
    assert "created" in run("-n", ns, "create", "deployment", "d", "--image=nginx:1.25")
    cm = json.loads(run("-n", ns, "get", "configmap", "cm", "-o", "json"))
    assert cm["data"] == {"k": "v"}
    deploy = json.loads(run("-n", ns, "get", "deployment", "d", "-o", "json"))
    assert deploy["spec"]["selector"] == {"matchLabels": {"app": "d"}}
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    run("delete", "namespace", ns, "--wait=false")
